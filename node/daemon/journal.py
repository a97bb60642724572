"""The node's durable action journal (SQLite).

Every action that sends a transaction is written here *before* it is sent,
with everything needed to finish it (above all the commit salt). After a
crash, `kill -9` included, the daemon reads the journal back and resumes: an
action found as `intent` or `sent` is checked against the chain and completed
or re-sent with the *same* payload, never re-generated, so nothing is lost
and nothing is submitted twice with different contents.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

STATUSES = ("intent", "sent", "done", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS actions (
    task     INTEGER NOT NULL,
    round    INTEGER NOT NULL,
    kind     TEXT    NOT NULL,
    status   TEXT    NOT NULL CHECK (status IN ('intent', 'sent', 'done', 'failed')),
    payload  TEXT    NOT NULL,
    tx_hash  TEXT,
    detail   TEXT,
    updated  REAL    NOT NULL,
    PRIMARY KEY (task, round, kind)
);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Action:
    task: int
    round: int
    kind: str  # commit | reveal | propose | attest | finalize | ...
    status: str
    payload: dict[str, Any]
    tx_hash: str | None
    detail: str | None
    updated: float


class Journal:
    """One SQLite file; each write is its own durable transaction (WAL, synchronous=FULL)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _row(row: tuple[Any, ...]) -> Action:
        task, round_, kind, status, payload, tx_hash, detail, updated = row
        return Action(task, round_, kind, status, json.loads(payload), tx_hash, detail, updated)

    def get(self, task: int, round_: int, kind: str) -> Action | None:
        row = self._db.execute(
            "SELECT task, round, kind, status, payload, tx_hash, detail, updated FROM actions "
            "WHERE task = ? AND round = ? AND kind = ?",
            (task, round_, kind),
        ).fetchone()
        return self._row(row) if row else None

    def intend(self, task: int, round_: int, kind: str, payload: dict[str, Any]) -> Action:
        """Record the intent to act, durably, unless it is already recorded.

        Returns the recorded action: after a restart that is the *original*
        payload (the same salt), whatever `payload` is passed now."""
        self._db.execute(
            "INSERT OR IGNORE INTO actions (task, round, kind, status, payload, updated) VALUES (?, ?, ?, 'intent', ?, ?)",
            (task, round_, kind, json.dumps(payload, sort_keys=True), time.time()),
        )
        action = self.get(task, round_, kind)
        assert action is not None
        return action

    def _set(self, task: int, round_: int, kind: str, status: str, tx_hash: str | None, detail: str | None) -> Action:
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        cur = self._db.execute(
            "UPDATE actions SET status = ?, tx_hash = COALESCE(?, tx_hash), detail = ?, updated = ? "
            "WHERE task = ? AND round = ? AND kind = ?",
            (status, tx_hash, detail, time.time(), task, round_, kind),
        )
        if cur.rowcount != 1:
            raise KeyError(f"no journalled {kind} for task {task} round {round_}")
        action = self.get(task, round_, kind)
        assert action is not None
        return action

    def mark_sent(self, task: int, round_: int, kind: str, tx_hash: str) -> Action:
        return self._set(task, round_, kind, "sent", tx_hash, None)

    def mark_done(self, task: int, round_: int, kind: str, detail: str | None = None) -> Action:
        return self._set(task, round_, kind, "done", None, detail)

    def mark_failed(self, task: int, round_: int, kind: str, detail: str) -> Action:
        return self._set(task, round_, kind, "failed", None, detail)

    def pending(self) -> Iterator[Action]:
        """Actions begun but not known to have landed: what a restart must resolve first."""
        rows = self._db.execute(
            "SELECT task, round, kind, status, payload, tx_hash, detail, updated FROM actions "
            "WHERE status IN ('intent', 'sent') ORDER BY updated"
        ).fetchall()
        return (self._row(r) for r in rows)

    def recent(self, limit: int = 10) -> list[Action]:
        rows = self._db.execute(
            "SELECT task, round, kind, status, payload, tx_hash, detail, updated FROM actions "
            "ORDER BY updated DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [self._row(r) for r in rows]

    def setting(self, key: str, default: str | None = None) -> str | None:
        row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_setting(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, value))
