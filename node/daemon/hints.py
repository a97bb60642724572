"""Gossip for the daemon: announce what a step did, wake on what peers did, fetch ahead.

Without gossip a daemon learns that a round moved on only at its next chain
poll, and each phase of a round waits for some node's poll. With it, the node
whose action moved the round announces it on the task's topic and every peer's
protocol loop wakes at once; the poll stays as the fallback, so a lost or
suppressed announcement costs latency, never correctness. Announcements are
hints: a woken loop reads the chain before it does anything, and content is
fetched ahead of need only once the chain confirms the announcer revealed or
proposed it (a registered peer may still lie; it then costs us one chain read).

What a daemon announces, read off the string its step returns:

- "proposed <cid>" / "took over proposing ... <cid>" -> a "proposal" (attesters
  wake; they fetch the aggregate, the next round's base model, ahead of need);
- "finalized <cid>" -> a "model" (peers wake and see the round closed);
- and, on the loop's next look after any of its own actions, "committing",
  "revealing" or "proposing" when the round has moved into that phase since:
  the committee draw, the last commit and the last reveal name no content
  worth announcing (a commitment's CID is secret until its reveal) but peers
  must act on them.

Several nodes may see the same phase change after their own actions (all the
committers whose commits landed together); a node announces a phase only if
no peer has announced it yet, and wakes only for the first announcement of
each (`Seen`), so a phase change costs each peer one look at the chain. A
rejected proposal's second attempt may thus go unannounced: the poll finds it.
A round moving to its draw is not announced at all: the node that finalized
draws the next committee itself, right away, and peers woken into a draw
would only race it.

Reveals are not announced one by one either: peers have nothing to do until
the last one ("proposing"), and py-libp2p's gossipsub is dear per message (16
daemons spent ~4 CPU-seconds a round, a third of the round, relaying 16
"update" announcements; measured with scripts/bench_round.py). Once a round
has a proposal, each daemon reads the round's reveals from the chain (one log
query) and fetches the updates from their senders, several at a time
(`Prefetcher`), while its step fetches them one by one. An "update" heard from
a peer is still taken as a hint for the same prefetch.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import trio

from node.chain.types import Phase
from node.errors import CIDError
from node.p2p.gossip import PHASE_KINDS, Announcement
from node.storage.cid import parse_cid

log = logging.getLogger("fedledger.hints")

#: A test seam: with this set in a daemon's environment it publishes nothing (it still listens),
#: so its peers see it act only at their next poll (tests/daemon/test_daemon_gossip.py).
NO_ANNOUNCE = "FEDLEDGER_TEST_NO_ANNOUNCE"

#: Announcements that wake a peer's protocol loop; an "update" only feeds the prefetcher.
WAKES = PHASE_KINDS | {"proposal", "model"}

# The phases a node announces having moved the round into (see the module docstring).
_PHASE_KIND = {Phase.COMMIT: "committing", Phase.REVEAL: "revealing", Phase.PROPOSE: "proposing"}
assert set(_PHASE_KIND.values()) == PHASE_KINDS

_DID = re.compile(r"^task (\d+) round (\d+): (proposed|took over proposing|finalized)\b.* (\S+)$")
_KIND = {"proposed": "proposal", "took over proposing": "proposal", "finalized": "model"}


def announcement_for(did: str) -> Announcement | None:
    """The announcement a step's report calls for ("task 1 round 2: revealed <cid>"), if any."""
    m = _DID.match(did)
    if m is None:
        return None
    try:
        cid = str(parse_cid(m.group(4)))
    except CIDError:
        return None
    return Announcement(int(m.group(1)), int(m.group(2)), _KIND[m.group(3)], cid)


@dataclass(frozen=True)
class RoundView:
    """Where a task stands, as far as waking up goes."""

    round: int
    phase: Phase
    attempt: int


class StepFilter:
    """Which tasks an iteration of the protocol loop steps, and which phase changes it announces.

    An iteration woken by a hint (not by the poll timer, nor right after one of our own actions)
    steps a task only if the task moved since its step last found nothing to do, and never into a
    draw. Everything else steps every task, as before gossip: deadlines and lost races are the
    poll's to catch."""

    def __init__(self) -> None:
        self._idle: dict[int, RoundView] = {}  # task -> where it stood when its step last did nothing
        self._acted: dict[int, RoundView] = {}  # task -> where it stood when we last acted on it

    def moved(self, task: int, view: RoundView) -> Announcement | None:
        """Called with each fresh look at `task`: the phase announcement to make if our last action
        on it was followed by the round moving into a phase peers must act in. (Into the attest
        phase only a proposal moves it, and the proposer announces that.)"""
        acted = self._acted.pop(task, None)
        if acted is None or acted == view or view.phase not in _PHASE_KIND:
            return None
        return Announcement(task, view.round, _PHASE_KIND[view.phase], "")

    def should_step(self, task: int, view: RoundView, hinted: bool) -> bool:
        if not hinted:
            return True
        return view.phase != Phase.DRAW and self._idle.get(task) != view

    def stepped(self, task: int, view: RoundView, did: str | None) -> None:
        if did:
            self._idle.pop(task, None)
            self._acted[task] = view
        else:
            self._idle[task] = view

    def forget(self) -> None:
        """After a failed iteration: the next one steps every task again."""
        self._idle.clear()
        self._acted.clear()


class Seen:
    """Announcements already heard or made, by (task, round, kind, CID): the first one wakes us and
    makes repeating it pointless. Bounded: past `limit` keys it starts afresh, which at worst
    costs one more look at the chain per key."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._keys: set[tuple[int, int, str, str]] = set()

    def first(self, ann: Announcement) -> bool:
        """Record `ann`; True if nothing like it was seen before."""
        key = (ann.task, ann.round, ann.kind, ann.cid)
        if key in self._keys:
            return False
        if len(self._keys) >= self.limit:
            self._keys.clear()
        self._keys.add(key)
        return True


class Wakeup:
    """The protocol loop's idle wait: the poll interval, cut short by a hint from a peer.

    Hints that arrive while the loop is busy are kept: the next wait returns at once. Hint-driven
    wake-ups are at least `min_gap` s apart, so a peer flooding the topic costs us at most one
    chain look per `min_gap`."""

    def __init__(self, min_gap: float = 0.05) -> None:
        self.min_gap = min_gap
        self._event = trio.Event()
        self._last = -math.inf

    def hint(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` s; True if a hint ended the wait (or was pending), False on timeout."""
        with trio.move_on_after(timeout):
            await self._event.wait()
        hinted = self._event.is_set()
        self._event = trio.Event()
        if hinted:
            gap = self._last + self.min_gap - trio.current_time()
            if gap > 0:
                await trio.sleep(gap)
            self._last = trio.current_time()
        return hinted


def ring_neighbours(me: str, peers: Iterable[str], k: int) -> list[str]:
    """The `k` peers after `me` in peer-ID order, wrapping around: whom to keep a connection to.

    Every node dialling its successors makes one connected graph with at least `k` neighbours a
    node, which is what the gossip mesh needs, with O(k) connections a node however many join."""
    ring = sorted(set(peers) | {me})
    i = ring.index(me)
    return [p for p in (ring[(i + j) % len(ring)] for j in range(1, min(k, len(ring) - 1) + 1))]


class Prefetcher:
    """Fetches announced updates and proposals before the protocol step needs them.

    A round's updates are held until `release(task, round)`, which the daemon calls once the
    round has a proposal: until then only the proposer needs them, and fetching them all at once
    everywhere (N x (N - 1) fetches on shared cores) made the proposer, who fetches its own,
    wait for everyone's (measured: the propose phase of 16 daemons grew from 1.8 s to 3.4-5.8 s).
    Released, they are fetched several at a time, last revealed first: each attester's step
    fetches them one by one in reveal order, so the two meet in the middle instead of fetching
    the same updates twice. A proposal (the next round's base model, held by its proposer) is
    fetched at once.

    `confirm(anns)` (blocking, run in a thread; `anns` share task, round and kind) returns those
    the chain backs: the sender revealed that update, or is the round's proposer. Announcements
    arriving within `linger` s of each other, or while a confirmation is under way, are confirmed
    together, with one read (a released round's updates are one batch).
    `fetch(ann)` fetches the content into the local store. Each (task, round, kind, sender) is
    tried once, and anything that fails is dropped: the step fetches what it lacks anyway."""

    def __init__(
        self,
        confirm: Callable[[list[Announcement]], list[Announcement]],
        fetch: Callable[[Announcement], Awaitable[object]],
        *,
        kinds: Iterable[str] = ("update", "proposal"),
        linger: float = 0.05,
        concurrency: int = 4,
        queue: int = 512,
    ) -> None:
        self.kinds = frozenset(kinds)
        self.linger = linger
        self._confirm = confirm
        self._fetch = fetch
        self._limiter = trio.CapacityLimiter(concurrency)
        self._send, self._receive = trio.open_memory_channel[Announcement](queue)
        self._seen: set[tuple[int, int, str, str]] = set()
        self._held: dict[tuple[int, int], list[Announcement]] = {}  # (task, round) -> its updates, until released
        self._released: dict[int, int] = {}  # task -> the latest round released
        self.fetched = 0  # prefetches that completed

    def offer(self, ann: Announcement) -> None:
        key = (ann.task, ann.round, ann.kind, ann.sender)
        if ann.kind not in self.kinds or key in self._seen:
            return
        if len(self._seen) > 65536:  # a long-running node: forget old rounds wholesale
            self._seen.clear()
        self._seen.add(key)
        if ann.kind == "update" and self._released.get(ann.task, -1) < ann.round:
            self._held.setdefault((ann.task, ann.round), []).append(ann)  # one per sender: bounded
            return
        self._queue(ann)

    def release(self, task: int, round_: int) -> None:
        """Round `round_` of `task` has a proposal: fetch its updates (and any announced later)."""
        if self._released.get(task, -1) >= round_:
            return
        self._released[task] = round_
        for key in [k for k in self._held if k[0] == task and k[1] <= round_]:
            held = self._held.pop(key)
            if key[1] == round_:  # an earlier round's updates are of no use any more
                for ann in reversed(held):
                    self._queue(ann)

    def _queue(self, ann: Announcement) -> None:
        try:
            self._send.send_nowait(ann)
        except trio.WouldBlock:
            log.debug("prefetch queue full; dropped %s", ann)

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            async for first in self._receive:
                await trio.sleep(self.linger)
                batch = [first]
                while True:
                    try:
                        batch.append(self._receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                groups: dict[tuple[int, int, str], list[Announcement]] = {}
                for ann in batch:
                    groups.setdefault((ann.task, ann.round, ann.kind), []).append(ann)
                for group in groups.values():
                    try:
                        backed = await trio.to_thread.run_sync(self._confirm, group)
                    except Exception as exc:  # the chain is unreachable: the step will fetch later
                        log.debug("prefetch: cannot confirm %s: %s: %s", group[0], type(exc).__name__, exc)
                        continue
                    for ann in group:
                        if ann not in backed:
                            log.debug("prefetch: the chain does not back %s", ann)
                    for ann in backed:
                        token = object()
                        await self._limiter.acquire_on_behalf_of(token)
                        nursery.start_soon(self._one, ann, token)

    async def _one(self, ann: Announcement, token: object) -> None:
        try:
            await self._fetch(ann)
            self.fetched += 1
        except Exception as exc:  # a hint gone wrong: the step will fetch it itself
            log.debug("prefetch of %s failed: %s: %s", ann, type(exc).__name__, exc)
        finally:
            self._limiter.release_on_behalf_of(token)
