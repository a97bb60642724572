"""The daemon's part in its tasks' gossip (node/daemon/hints.py says what and why).

`DaemonGossip` joins each task's topic, wakes the protocol loop on a peer's announcement,
announces what the loop's steps did, keeps the node connected to its ring neighbours so the mesh
reaches it, and fetches announced updates and proposals ahead of need, once the chain backs them.
Everything here is an optimisation: a failure costs peers latency, never correctness.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Sequence

import trio

from node.chain.client import FedLedgerClient
from node.chain.types import Phase
from node.daemon.hints import NO_ANNOUNCE, WAKES, Prefetcher, Seen, Wakeup, ring_neighbours
from node.daemon.observability import Metrics
from node.daemon.peers import PeerDirectory
from node.p2p.gossip import Announcement
from node.p2p.node import P2PNode

log = logging.getLogger("fedledger.daemon")


class DaemonGossip:
    """Announcements in and out for one daemon; `start` it in the daemon's nursery."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.wakeup = Wakeup()  # announcements from peers cut the protocol loop's idle wait short
        self._seen = Seen()  # announcements heard or made: only the first of each wakes us or is worth making
        self.opened: dict[int, tuple[int, int]] = {}  # task -> (round, its opening block), as the loop last read it
        self.p2p: P2PNode | None = None
        self.peers: PeerDirectory | None = None
        self._nursery: trio.Nursery | None = None
        self._client: FedLedgerClient | None = None
        self._prefetcher: Prefetcher | None = None
        self._deployed_at = 0
        self._subscribed: set[int] = set()  # tasks whose topic we joined
        self._dialled: dict[str, float] = {}  # "peer-ID addresses" -> when we last dialled them for the mesh
        self._released: dict[int, int] = {}  # task -> the last round whose updates we fetch ahead

    def start(
        self, nursery: trio.Nursery, client: FedLedgerClient, p2p: P2PNode, peers: PeerDirectory, deployed_at: int
    ) -> None:
        """Start prefetching; from now on the node can subscribe, announce and dial."""
        self._nursery, self._client, self.p2p, self.peers, self._deployed_at = nursery, client, p2p, peers, deployed_at
        self._prefetcher = Prefetcher(lambda anns: self._confirm(client, anns), self._prefetch)
        nursery.start_soon(self._prefetcher.run)

    async def subscribe(self, task: int) -> None:
        """Join a task's topic (once): its announcements wake the protocol loop and feed the prefetcher."""
        if task in self._subscribed:
            return
        assert self.p2p is not None and self._nursery is not None
        try:
            inbox = await self.p2p.subscribe(task)
        except Exception as exc:  # gossip is an optimisation: poll on, try again next iteration
            log.warning("cannot subscribe to task %d's announcements: %s: %s", task, type(exc).__name__, exc)
            return
        self._subscribed.add(task)
        self._nursery.start_soon(self._take_announcements, inbox)

    async def _take_announcements(self, inbox: trio.MemoryReceiveChannel[Announcement]) -> None:
        async for ann in inbox:  # validated by P2PNode: well-formed, this task, a registered sender
            self.metrics.inc("announcements_total", labels={"direction": "received", "kind": ann.kind})
            known = self.opened.get(ann.task)
            if known is not None and not known[0] <= ann.round <= known[0] + 1:
                continue  # not the round we are in or the next: nothing to act on, nothing to fetch ahead
            if ann.kind in WAKES and self._seen.first(ann):
                log.debug("woken by %s of task %d round %d from %s", ann.kind, ann.task, ann.round, ann.sender)
                self.wakeup.hint()
            if self._prefetcher is not None:
                self._prefetcher.offer(ann)
            if ann.kind == "proposal":
                self.release_updates(ann.task, ann.round)  # attesters need the updates now

    def announce(self, ann: Announcement) -> None:
        """Publish in the background: the loop never waits on gossip, and a failure only costs peers latency."""
        if not self._seen.first(ann):
            return  # a peer said it already (a phase change that several nodes saw after their actions)
        if os.environ.get(NO_ANNOUNCE):
            log.debug("not announcing %s (%s is set)", ann, NO_ANNOUNCE)
            return
        assert self._nursery is not None and self.p2p is not None
        p2p = self.p2p

        async def publish() -> None:
            try:
                await p2p.announce(ann)
                self.metrics.inc("announcements_total", labels={"direction": "sent", "kind": ann.kind})
            except Exception as exc:
                log.debug("announcing %s failed: %s: %s", ann, type(exc).__name__, exc)

        self._nursery.start_soon(publish)

    def keep_connected(self, k: int = 6, redial_after: float = 10.0) -> None:
        """Dial our `k` ring neighbours among the registered peers that we are not connected to, in
        the background: the gossip mesh reaches only connected peers. A peer that would not answer is
        dialled again after `redial_after` s, or as soon as it registers a new address."""
        assert self.p2p is not None and self.peers is not None and self._nursery is not None
        p2p, now = self.p2p, trio.current_time()
        reachable = {p.peer_id: p for p in self.peers.by_address.values() if p.multiaddrs}
        for peer_id in ring_neighbours(p2p.peer_id, reachable, k):
            peer = reachable[peer_id]
            key = f"{peer_id} {peer.multiaddrs}"
            if peer_id == p2p.peer_id or p2p.connected(peer_id) or now - self._dialled.get(key, -math.inf) < redial_after:
                continue
            self._dialled[key] = now
            self._nursery.start_soon(self._dial, peer.multiaddrs)

    async def _dial(self, addrs: Sequence[str]) -> bool:
        """Connect at the first of a peer's registered addresses that answers within 5 s."""
        assert self.p2p is not None
        for addr in addrs:
            with trio.move_on_after(5):
                try:
                    await self.p2p.connect(addr)
                    return True
                except Exception as exc:  # unreachable for now: latency for gossip, nothing more
                    log.debug("cannot dial %s: %s: %s", addr, type(exc).__name__, exc)
        return False

    def release_updates(self, task: int, round_: int) -> None:
        """The round has a proposal: fetch its updates ahead, from the senders the chain names."""
        if self._prefetcher is None or self._released.get(task, -1) >= round_:
            return
        self._released[task] = round_
        assert self._nursery is not None
        self._nursery.start_soon(self._offer_revealed, task, round_)

    async def _offer_revealed(self, task: int, round_: int) -> None:
        assert self._client is not None and self.p2p is not None and self.peers is not None
        assert self._prefetcher is not None
        client = self._client
        try:
            updates = await trio.to_thread.run_sync(client.round_updates, task, round_)
        except Exception as exc:  # the step fetches them itself
            log.debug("cannot read the reveals of task %d round %d: %s: %s", task, round_, type(exc).__name__, exc)
            updates = []
        for u in updates:  # in reveal order; the prefetcher takes them from the last
            peer = self.peers.by_address.get(u.sender)
            if peer is not None and peer.peer_id != self.p2p.peer_id:
                self._prefetcher.offer(Announcement(task, round_, "update", u.cid, peer.peer_id))
        self._prefetcher.release(task, round_)
        # Rounds before round_ - 1 are done with: unpin their updates, keep the global models (#14, H7).
        from node.daemon.peers import release_old_rounds

        store, since = self.p2p.store, self._deployed_at
        try:
            await trio.to_thread.run_sync(lambda: release_old_rounds(store, client, task, round_, from_block=since))
        except Exception as exc:  # only disk is reclaimed later; nothing else waits on it
            log.warning("cannot release old rounds of task %d: %s: %s", task, type(exc).__name__, exc)

    def _confirm(self, client: FedLedgerClient, anns: list[Announcement]) -> list[Announcement]:
        """Of announcements sharing task, round and kind, those the chain backs (runs in a thread)."""
        assert self.peers is not None
        task, round_, kind = anns[0].task, anns[0].round, anns[0].kind
        senders = {a: self.peers.by_peer_id.get(a.sender) for a in anns}
        if kind == "update":  # the round's reveals so far (the client keeps the CIDs it has read)
            revealed = {(u.sender, u.cid) for u in client.round_updates(task, round_)}
            return [a for a, p in senders.items() if p is not None and (p.address, a.cid) in revealed]
        state = client.round_state(task, round_)  # a proposal: fetch the aggregate from the round's proposer
        if state.phase != Phase.ATTEST:
            return []
        return [a for a, p in senders.items() if p is not None and p.address == state.proposer]

    async def _prefetch(self, ann: Announcement) -> None:
        assert self.p2p is not None and self.peers is not None
        peer = self.peers.by_peer_id.get(ann.sender)
        if peer is None:
            return
        if not self.p2p.connected(ann.sender) and not await self._dial(peer.multiaddrs):
            return
        await self.p2p.fetch(ann.cid, [ann.sender])
        self.metrics.inc("prefetched_total", labels={"kind": ann.kind})
        log.debug("prefetched %s %s of task %d round %d from %s", ann.kind, ann.cid, ann.task, ann.round, ann.sender)
