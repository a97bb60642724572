"""Readable daemon logs: one line per event, one format for every line, repeats coalesced.

Every logger writes through one handler on the root logger: the daemon's own
(`fedledger.*`, `node.*`), py-libp2p's (which on import cuts itself off from the root and
would otherwise print bare messages through Python's last-resort handler), trio's and
Python's warnings. Libraries speak at warning level and above; the daemon at the level the
operator chose.

A daemon that retries something every few seconds would say the same thing dozens of times
a minute. The handler prints a message the first time, swallows identical ones (same logger,
level and text) for `window` seconds, then says once how many it swallowed:
"... (repeated 23 times in 50 s)".
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
from typing import IO

FORMAT = "%(asctime)sZ %(levelname)-7s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
# Our loggers; anything else (libp2p, trio, multiaddr, web3, py.warnings) is a library's.
OWN = ("fedledger", "node.")
COALESCE_WINDOW = 60.0  # seconds an identical message stays swallowed after it was printed


class _UTCFormatter(logging.Formatter):
    converter = time.gmtime


class CoalescingHandler(logging.StreamHandler):
    """A stream handler that prints each distinct message at most once per `window` seconds.

    Repeats are counted, not printed. The count comes out as the message followed by
    "(repeated N times in T s)" just before the next line that is printed (so it stays next to
    what it counts, before whatever happened next), when the window has passed, or at close.
    Memory is bounded by the number of distinct messages per window."""

    def __init__(self, stream: IO[str] | None = None, window: float = COALESCE_WINDOW, clock=time.time) -> None:
        super().__init__(stream)
        self.window = window
        self.clock = clock
        # (logger, level, text) -> [printed at, repeats not yet told, counted since, last repeat at, the record]
        self._recent: dict[tuple[str, int, str], list] = {}

    def emit(self, record: logging.LogRecord) -> None:
        now = self.clock()
        try:
            key = (record.name, record.levelno, record.getMessage())
        except Exception:  # a bad format string: let the base class report it as usual
            super().emit(record)
            return
        for old in [k for k, seen in self._recent.items() if now - seen[0] >= self.window]:
            self._tell(old, now)
            del self._recent[old]
        seen = self._recent.get(key)
        if seen is not None:
            seen[1] += 1
            seen[3] = now
            return
        for old in self._recent:
            self._tell(old, now)
        self._recent[key] = [now, 0, now, now, record]
        super().emit(record)

    def _tell(self, key: tuple[str, int, str], now: float) -> None:
        """Print how many repeats of `key` were swallowed since it was printed or last told."""
        seen = self._recent[key]
        count, since, last, record = seen[1], seen[2], seen[3], seen[4]
        if not count:
            return
        summary = logging.makeLogRecord(record.__dict__)
        times = f"{count} time{'s' if count > 1 else ''}"
        summary.msg, summary.args, summary.exc_info, summary.exc_text = (
            f"{key[2]} (repeated {times} in {last - since:.0f} s)", None, None, None
        )
        summary.created = now
        super().emit(summary)
        seen[1], seen[2] = 0, now

    def close(self) -> None:
        self.acquire()
        try:
            now = self.clock()
            for key in list(self._recent):
                self._tell(key, now)
            self._recent.clear()
        finally:
            self.release()
        super().close()


class _LibraryLevel(logging.Filter):
    """Library records below warning are dropped, whatever the daemon's own level: py-libp2p
    at debug prints thousands of lines a round, and some of its loggers set their own level."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name.startswith(OWN)


def setup_logging(level: str = "info", stream: IO[str] | None = None, window: float = COALESCE_WINDOW) -> CoalescingHandler:
    """Route every logger of the process through one coalescing handler in one format."""
    own_libp2p = bool(os.environ.get("LIBP2P_DEBUG"))  # py-libp2p's own debug logging, to its own file
    if not own_libp2p:
        try:  # py-libp2p configures its loggers on import: let it do so first, then undo it
            importlib.import_module("libp2p")
        except ImportError:
            pass
    handler = CoalescingHandler(stream or sys.stderr, window=window)
    handler.setFormatter(_UTCFormatter(FORMAT, DATE_FORMAT))
    handler.addFilter(_LibraryLevel())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    ours = logging.getLevelName(level.upper())
    # Libraries inherit the root's level: warning at least, so their debug records are not even made.
    root.setLevel(max(ours, logging.WARNING))
    for name in ("fedledger", "node") + (() if own_libp2p else ("libp2p",)):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
        lg.setLevel(ours if name != "libp2p" else logging.NOTSET)
    logging.captureWarnings(True)  # Python's warnings as log lines too, in the same format
    return handler
