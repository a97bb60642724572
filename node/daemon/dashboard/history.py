"""What the dashboard shows beyond the daemon's live state: a bounded history of this node and
of its joined tasks, read from the chain's events, and the recent actions and errors of its log.

`History.run` is one of the daemon's services: it asks the chain for its head block and, only
when a block was mined, for the events since the last one it read (RoundFinalized, RoundVoided,
and this node's ReputationUpdated, RewardCredited, Withdrawn), its stake, reputation and pending
rewards, and each running task's committee. It reads once a second only while someone watches
(a /status request in the last WATCHED_FOR s: the page polls it); otherwise only when one of its
tasks ends a round (the new model is evaluated then, for /metrics) or every IDLE_EVERY s. With
16 daemons on 2 cores, the per-second reads nobody looked at were ~11 % of a daemon's CPU. Every series
keeps its last `keep` entries, so a daemon that runs for months holds as much as one that ran
for an hour. Everything read here is shown, never trusted: the page renders it as text.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import trio

from aggregation import decode_model
from node.daemon.peers import _cid_text

if TYPE_CHECKING:
    from node.apps.native import Evaluation
    from node.chain.client import FedLedgerClient
    from node.chain.types import ChainLog
    from node.daemon.peers import PeerDirectory
    from node.p2p.node import P2PNode
    from node.protocol import ProtocolNode

log = logging.getLogger("fedledger.dashboard")

KEEP = 256  # entries per series: rounds per task, reputation points, actions, errors
SCAN_BLOCKS = 5000  # blocks per eth_getLogs: public RPC endpoints refuse wide ranges
# Events read each block: the rounds' ends (and this node's reward for them), then those that
# change this node's account, which is read again only after one of them (or every ACCOUNT_EVERY s).
ROUND_EVENTS = ("RoundFinalized", "RoundVoided", "RewardCredited")
MINE = ("ReputationUpdated", "Withdrawn", "NodeRegistered", "StakeAdded", "Slashed", "UnstakeRequested", "StakeWithdrawn")
ACCOUNT_EVERY = 30.0
WATCHED_FOR = 30.0  # s after a /status request during which the chain is read every second
IDLE_EVERY = 30.0  # s between reads when nobody watches and no round ends
EVALUATE_PER_PASS = 4  # models whose accuracy is computed per second at most
TEXT_CAP = 500  # characters kept of a log message (peer and chain data end up in some)


class _LogTap(logging.Handler):
    """Keeps the protocol's actions (its INFO lines) and every warning or error of the daemon."""

    def __init__(self, history: "History") -> None:
        super().__init__(logging.INFO)
        self.history = history

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()[:TEXT_CAP]
        except Exception:  # a bad format string in someone's log call: not ours to crash on
            return
        entry = {"t": round(record.created, 3), "level": record.levelname.lower(), "source": record.name, "text": text}
        with self.history.lock:
            if record.levelno >= logging.WARNING:
                self.history.errors.append(entry)
            elif record.name == "fedledger.protocol":
                self.history.actions.append(entry)


class History:
    """The dashboard's memory; `snapshot()` is what /status serves under "dashboard"."""

    def __init__(self, address: str, keep: int = KEEP, from_block: int = 0) -> None:
        self.address = address
        self.keep = keep
        self.lock = threading.Lock()  # snapshot() runs in trio's thread, refresh() and the log tap in others
        self.account: dict[str, str | None] = {
            "stake_wei": None, "reputation_wad": None, "pending_wei": None, "held_wei": None, "paid_wei": "0",
            "earned_wei": "0",
        }  # fmt: skip
        self.reputation: deque[dict[str, Any]] = deque(maxlen=keep)  # {block, task, round, wad}
        # task -> {round, cid, block, voided, accuracy, metrics, num_examples, reward_wei}
        self.rounds: dict[int, deque[dict[str, Any]]] = {}
        self.committees: dict[int, dict[str, Any]] = {}  # task -> {round, members}
        self.actions: deque[dict[str, Any]] = deque(maxlen=keep)
        self.errors: deque[dict[str, Any]] = deque(maxlen=keep)
        self.peers: list[dict[str, Any]] = []
        self.updated: float | None = None  # when the chain was last read
        self._paid = self._earned = 0
        self._from_block = from_block  # the deployment's block: nothing of ours is older
        self._scanned = from_block - 1  # the last block whose events were read
        self._known: set[int] = set()  # joined tasks whose ended rounds are being recorded
        self._account_stale, self._account_read = True, 0.0  # read at once, then on this node's events
        self._head = -1
        self._evaluated: set[tuple[int, int]] = set()  # (task, round) whose accuracy was tried
        # Called with (task, round, Evaluation) after each evaluation: the daemon's /metrics gauges.
        self.on_evaluated: Callable[[int, int, "Evaluation"], None] | None = None
        self._asked = -math.inf  # time.monotonic() of the last /status request
        self._lot = trio.lowlevel.ParkingLot()  # run() waits here for a move or a request

    # -- what wakes the service (both called in trio's thread) --------------------------

    def asked(self) -> None:
        """Someone reads /status: follow the chain every second for the next WATCHED_FOR s."""
        was = self.watched()
        self._asked = time.monotonic()
        if not was:
            self._lot.unpark_all()

    def moved(self) -> None:
        """The protocol loop saw a task's round, phase or end change."""
        self._lot.unpark_all()

    def watched(self) -> bool:
        return time.monotonic() - self._asked < WATCHED_FOR

    # -- what the page gets ----------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "account": dict(self.account),
                "reputation": list(self.reputation),
                "tasks": {
                    str(t): {"rounds": list(self.rounds.get(t, ())), "committee": self.committees.get(t)}
                    for t in sorted(set(self.rounds) | set(self.committees))
                },
                "actions": list(self.actions),
                "errors": list(self.errors),
                "peers": list(self.peers),
                "updated": self.updated,
            }

    # -- the service -------------------------------------------------------------------

    async def run(
        self,
        client: "FedLedgerClient",
        worker: "ProtocolNode",
        tasks: Mapping[int, Mapping[str, Any]],
        peers: "PeerDirectory",
        p2p: "P2PNode",
        from_block: int = 0,
        interval: float = 1.0,
    ) -> None:
        """Follow the chain until cancelled. `tasks` is the daemon's view of its joined tasks
        (id -> round, phase...), read here in trio's thread and never written."""
        self._from_block = from_block
        self._scanned = max(self._scanned, from_block - 1)
        failing = False
        with self.listening():
            while True:
                joined = {t: dict(v) for t, v in list(tasks.items())}
                watched = self.watched()
                if watched:
                    self._read_peers(peers, p2p)
                try:
                    await trio.to_thread.run_sync(self._update, client, joined, worker)  # one hand-off, not two
                    failing = False
                except Exception as exc:  # an outage or a bug: one line per spell, the page goes on with what it has
                    if not failing:
                        log.warning("dashboard history not updated: %s: %s", type(exc).__name__, exc)
                    failing = True
                # Watched: sooner when the protocol loop sees a task move, so the page shows the new
                # round with its committee and the last round's model, not a second later.
                # Unwatched: only when a round ends (its model is evaluated for /metrics).
                with trio.move_on_after(interval if watched else IDLE_EVERY):
                    while True:
                        await self._lot.park()
                        if self.watched():
                            if not watched or _moves(tasks) != _moves(joined):
                                break
                        elif _ends(tasks) != _ends(joined):
                            break

    def _update(self, client: "FedLedgerClient", joined: Mapping[int, Mapping[str, Any]], worker: "ProtocolNode") -> None:
        self.refresh(client, joined)
        self.evaluate(worker)

    @contextmanager
    def listening(self) -> Iterator[None]:
        """Keep the daemon's log lines meanwhile: the protocol's actions (its info lines) and
        every warning and error."""
        tap, root = _LogTap(self), logging.getLogger("fedledger")
        root.addHandler(tap)
        try:
            yield
        finally:
            root.removeHandler(tap)

    def _read_peers(self, peers: "PeerDirectory", p2p: "P2PNode") -> None:
        listed = []
        for peer in list(peers.by_address.values())[: self.keep]:
            if peer.address == self.address:
                continue
            connected = p2p.connected(peer.peer_id)  # False for a registered ID that does not parse
            listed.append({"address": peer.address, "peer_id": peer.peer_id[:100], "connected": connected})
        with self.lock:
            self.peers = listed

    def refresh(self, client: "FedLedgerClient", joined: Mapping[int, Mapping[str, Any]]) -> None:
        """Read what changed on the chain since the last call (runs in a worker thread): on an
        idle chain one request (the head); per new block one more, plus this node's account when
        an event names it and a task's committee when its round moved or was still undrawn."""
        head = client.head_block()
        if head == self._head and set(joined) <= self._known:
            return
        for task in sorted(set(joined) - self._known):
            self._backfill(client, task)
            self._known.add(task)
        for first, last in _spans(self._scanned + 1, head):
            self._account_stale |= self._read_events(client, first, last)
            self._scanned = last
        account = None
        if self._account_stale or time.monotonic() - self._account_read > ACCOUNT_EVERY:
            registered, stake, _peer_id, _addrs = client.node_info(self.address)
            account = {
                "stake_wei": str(stake) if registered else "0",
                "reputation_wad": str(client.reputation_of(self.address)),
                "pending_wei": str(client.pending_rewards(self.address)),
                "held_wei": str(client.probation_of(self.address)[2]),  # a newcomer's, until its probation ends
            }
            self._account_stale, self._account_read = False, time.monotonic()
        committees = {}
        for task, view in joined.items():
            r, known = view.get("round"), self.committees.get(task)
            if not isinstance(r, int) or view.get("finished"):
                continue
            if known is None or known["round"] != r or not known["members"]:  # fixed once drawn
                known = {"round": r, "members": [str(m) for m in client.committee(task, r)][: self.keep]}
            committees[task] = known
        with self.lock:
            if account is not None:
                if not self.reputation:  # no change on record yet: the series starts at today's value
                    self.reputation.append({"block": head, "task": None, "round": None, "wad": account["reputation_wad"]})
                self.account.update(account)
            self.committees = committees
            self.updated = time.time()
        self._head = head

    def _logs(self, client: "FedLedgerClient", first: int, last: int, task: int | None = None) -> list["ChainLog"]:
        """The span's events that matter here, in chain order: the ended rounds (of `task` only,
        if given) and the events naming this node."""
        me = self.address.lower()
        found = client.logs_of(ROUND_EVENTS if task is not None else ROUND_EVENTS + MINE, first, last)
        return [
            e for e in found
            if (e.event in ("RoundFinalized", "RoundVoided") and task in (None, int(e.args["taskId"])))
            or (str(e.args.get("node", e.args.get("account", ""))).lower() == me
                and (task is None or int(e.args.get("taskId", -1)) == task))
        ]  # fmt: skip

    def _apply_rounds(self, logs: list["ChainLog"], tasks: set[int]) -> None:
        """Record the rounds of `tasks` that `logs` end, with this node's reward (holding the lock)."""
        for e in logs:
            if e.event not in ROUND_EVENTS or int(e.args["taskId"]) not in tasks:
                continue
            task = int(e.args["taskId"])
            if e.event == "RewardCredited":  # after its round's end, in the same transaction
                for entry in self.rounds.get(task, ()):
                    if entry["round"] == int(e.args["round"]):
                        entry["reward_wei"] = str(int(entry["reward_wei"] or 0) + int(e.args["amount"]))
            else:
                self._round(task, e)

    def _backfill(self, client: "FedLedgerClient", task: int) -> None:
        """The rounds of a task that joined after the scan passed them (a restart, a late join)."""
        with self.lock:
            self.rounds.pop(task, None)  # what an interrupted try left
        for first, last in _spans(self._from_block, self._scanned):
            logs = self._logs(client, first, last, task)
            with self.lock:
                self._apply_rounds(logs, {task})

    def _read_events(self, client: "FedLedgerClient", first: int, last: int) -> bool:
        """Everything new in [first, last]: ended rounds of the known tasks, and this node's
        reputation changes, credits and withdrawals; whether any event named this node. All is
        read before anything is recorded, so a failed read leaves the span to be read again whole."""
        logs = self._logs(client, first, last)
        by_tx = {e.tx_hash: e for e in logs if e.event == "RoundFinalized"}
        with self.lock:
            self._apply_rounds(logs, self._known)
            for e in logs:
                if e.event == "ReputationUpdated":
                    if not self.reputation:  # where the first change started from
                        self.reputation.append({"block": e.block, "task": None, "round": None, "wad": str(e.args["oldRep"])})
                    ended = by_tx.get(e.tx_hash)
                    self.reputation.append({
                        "block": e.block,
                        "task": int(ended.args["taskId"]) if ended else None,
                        "round": int(ended.args["round"]) if ended else None,
                        "wad": str(e.args["newRep"]),
                    })  # fmt: skip
                elif e.event == "RewardCredited":
                    self._earned += int(e.args["amount"])
                elif e.event == "Withdrawn":
                    self._paid += int(e.args["amount"])
            self.account["paid_wei"], self.account["earned_wei"] = str(self._paid), str(self._earned)
        return any(e.event not in ("RoundFinalized", "RoundVoided") for e in logs)

    def _round(self, task: int, e: "ChainLog") -> None:
        rounds = self.rounds.setdefault(task, deque(maxlen=self.keep))
        voided = e.event == "RoundVoided"
        rounds.append({
            "round": int(e.args["round"]),
            "block": e.block,
            "cid": None if voided else _cid_text(e.args["cid"])[:200],
            "voided": voided,
            "accuracy": None,
            "metrics": None,
            "num_examples": None,
            "reward_wei": None,
        })  # fmt: skip

    def evaluate(self, worker: "ProtocolNode") -> None:
        """The app's evaluation of each newly finalized global model on this node's held-out data,
        when this node holds the model (it proposed or checked it): no fetch is made for it.
        Tried once per round; runs in a worker thread."""
        with self.lock:
            todo = [
                (entry["block"], task, entry) for task, rounds in self.rounds.items() for entry in rounds
                if entry["cid"] and (task, entry["round"]) not in self._evaluated
            ]  # fmt: skip
        # Newest first, a few per pass: a restart with a long history must not hold up training.
        for _block, task, entry in sorted(todo, key=lambda x: x[0], reverse=True)[:EVALUATE_PER_PASS]:
            self._evaluated.add((task, entry["round"]))
            evaluation = _evaluation(worker, task, entry["cid"])
            if evaluation is None:
                continue
            accuracy = evaluation.accuracy
            with self.lock:
                entry["accuracy"] = round(accuracy, 4) if accuracy is not None and 0.0 <= accuracy <= 1.0 else None
                entry["metrics"] = {k: round(v, 6) for k, v in evaluation.metrics.items() if math.isfinite(v)}
                entry["num_examples"] = evaluation.num_examples
            if self.on_evaluated is not None:
                self.on_evaluated(task, entry["round"], evaluation)
        if len(self._evaluated) > 4 * self.keep:  # forget rounds that left every series
            with self.lock:
                kept = {(t, e["round"]) for t, rounds in self.rounds.items() for e in rounds}
            self._evaluated &= kept


def _moves(tasks: Mapping[int, Mapping[str, Any]]) -> dict[int, tuple[Any, ...]]:
    return {t: (v.get("round"), v.get("phase"), v.get("finished")) for t, v in list(tasks.items())}


def _ends(tasks: Mapping[int, Mapping[str, Any]]) -> dict[int, tuple[Any, ...]]:
    return {t: (v.get("round"), v.get("finished")) for t, v in list(tasks.items())}


def _spans(first: int, last: int) -> list[tuple[int, int]]:
    """[first, last] in ranges of at most SCAN_BLOCKS blocks."""
    return [(a, min(a + SCAN_BLOCKS - 1, last)) for a in range(first, last + 1, SCAN_BLOCKS)]


def _evaluation(worker: "ProtocolNode", task: int, cid: str) -> "Evaluation | None":
    if not worker.storage.has(cid):
        return None
    try:
        spec = worker.spec(task)
        weights, _meta = decode_model(worker.storage.get(cid, max_bytes=spec.max_update_bytes), spec.max_update_bytes)
        return worker.trainer(task).evaluate(weights)
    except Exception as exc:  # bad data (hostile or ours) or an app's failure costs the plot a point, nothing more
        log.debug("no evaluation for task %d model %s: %s: %s", task, cid, type(exc).__name__, exc)
        return None
