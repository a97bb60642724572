"""The peer directory: who is registered, under which libp2p identity, where; and fetching from them.

Built from the contract's NodeRegistered / PeerInfoUpdated events, scanned
incrementally (only blocks not seen yet: a full rescan on every poll is what
DEPENDENCIES.md warns against). The chain is the only rendezvous: there is no
bootstrap server.

Registrations are chain data anyone writes, so nothing here trusts their size
(#14, H5): the directory keeps a few well-formed addresses per peer, the
`Dialer` dials them concurrently within a deadline and remembers the ones that
failed, and `fetch_from_peers` ends within its deadline and byte limit.
`release_old_rounds` unpins the updates of rounds a node no longer needs (H7).
"""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Sequence

import multiaddr
import trio

from node.chain.client import FedLedgerClient
from node.errors import StorageError
from node.p2p.blocks import ContentTooLarge, FetchError
from node.storage.unixfs import DEFAULT_MAX_FETCH_BYTES

if TYPE_CHECKING:
    from node.abc import BlockStore, Storage
    from node.p2p.node import P2PNode
    from node.protocol import Fetch

log = logging.getLogger("fedledger.peers")

# Finished rounds whose updates a daemon keeps before it unpins them (release_old_rounds): at
# least the previous round's (replay detection reads them), and a few more so that `fedledger
# verify` can re-run recent rounds from any node's blockstore. Global models are always kept.
KEEP_ROUNDS = 4


@dataclass(frozen=True)
class Peer:
    address: str
    peer_id: str
    multiaddrs: tuple[str, ...]


class PeerDirectory:
    def __init__(self, client: FedLedgerClient, from_block: int = 0) -> None:
        self.client = client
        self.next_block = from_block
        self.by_address: dict[str, Peer] = {}
        self.by_peer_id: dict[str, Peer] = {}
        self.dialer = Dialer()  # which addresses failed lately: shared by every fetch through this directory
        self._lock = threading.Lock()

    def refresh(self) -> int:
        """Read new registration events; returns how many peers changed. Thread-safe: the
        protocol loop and a fetch's retry may both call it."""
        with self._lock:
            return self._refresh()

    def _refresh(self) -> int:
        head = self.client.head_block()
        if head < self.next_block:
            return 0
        changed = 0
        # One eth_getLogs for both kinds, oldest first: this runs at every poll of every daemon.
        for entry in self.client.logs_of(("NodeRegistered", "PeerInfoUpdated"), self.next_block, head):
            args = entry.args
            peer = Peer(args["node"], args["peerId"], _kept_addrs(args["peerId"], args["multiaddrs"]))
            old = self.by_address.get(peer.address)
            if old is not None:
                self.by_peer_id.pop(old.peer_id, None)
            self.by_address[peer.address] = peer
            self.by_peer_id[peer.peer_id] = peer
            changed += 1
        self.next_block = head + 1
        return changed

    def is_registered(self, peer_id: str) -> bool:
        return peer_id in self.by_peer_id

    def peers_for(self, addresses: list[str]) -> list[Peer]:
        """The known peers among `addresses`, in that order, then every other known peer."""
        first = [self.by_address[a] for a in addresses if a in self.by_address]
        rest = [p for a, p in self.by_address.items() if a not in addresses]
        return first + rest


@dataclass(frozen=True)
class DialPolicy:
    """How hard a fetch tries to reach peers: bounded, whatever the registry says (#14, H5)."""

    max_addrs: int = 3  # addresses tried per peer, in registered order; the rest are ignored
    max_others: int = 8  # peers asked beyond the holders (connected ones first, then at random)
    dial_timeout: float = 3.0  # seconds per address
    dial_deadline: float = 10.0  # seconds for all the dials of one attempt, run concurrently
    # Seconds before an address that failed is dialled again, doubling per failure in a row. A
    # refused dial costs nothing, so it is retried soon (a peer restarting on the same port); one
    # that stayed silent for dial_timeout costs that much each time, so it waits much longer.
    backoff: float = 2.0
    silent_backoff: float = 60.0
    backoff_cap: float = 600.0
    max_addr_len: int = 256  # longer "multiaddrs" in the registry are not dialled
    remembered: int = 4096  # failing addresses remembered at most (the oldest are forgotten)


class Dialer:
    """Dials peers for fetches: a few of each peer's addresses, every peer at once, within one
    deadline, and remembers the addresses that failed so they are left alone for a while.

    A registration is chain data anyone can write: 100 unreachable addresses, or addresses that
    accept a connection and then say nothing, must cost one fetch seconds, not minutes, and must
    not cost every later fetch the same again."""

    def __init__(self, policy: DialPolicy | None = None) -> None:
        self.policy = policy or DialPolicy()
        self._failed: dict[str, tuple[int, float]] = {}  # address -> (failures in a row, retry after)

    def usable_addrs(self, peer: Peer, now: float) -> list[str]:
        """The addresses of `peer` worth dialling now: of its first `max_addrs` well-formed ones
        (naming the registered peer ID, duplicates once), those not failing recently. Never any
        further down the list: 100 registered addresses cost what 3 do, this time and every time."""
        out: list[str] = []
        for addr in dict.fromkeys(peer.multiaddrs):
            if not isinstance(addr, str) or len(addr) > self.policy.max_addr_len or not _names_peer(addr, peer.peer_id):
                continue
            out.append(addr)
            if len(out) >= self.policy.max_addrs:
                break
        return [a for a in out if a not in self._failed or now >= self._failed[a][1]]

    def failed(self, addr: str, now: float, silent: bool = False) -> None:
        """Remember that dialling `addr` failed (`silent`: no answer within dial_timeout)."""
        count = self._failed.pop(addr, (0, 0.0))[0] + 1
        base = self.policy.silent_backoff if silent else self.policy.backoff
        wait = min(base * 2 ** min(count - 1, 30), self.policy.backoff_cap)
        self._failed[addr] = (count, now + wait)
        while len(self._failed) > self.policy.remembered:
            del self._failed[next(iter(self._failed))]

    def succeeded(self, addr: str) -> None:
        self._failed.pop(addr, None)

    def choose(self, p2p: "P2PNode", candidates: list[Peer], holders: list[str]) -> list[Peer]:
        """The holders (in their order), then at most `max_others` other peers, the connected first."""
        wanted = set(holders)
        first = [p for p in candidates if p.address in wanted]
        rest = [p for p in candidates if p.address not in wanted]
        random.shuffle(rest)
        rest.sort(key=lambda p: not p2p.connected(p.peer_id))  # stable: connected first, else random
        chosen: dict[str, Peer] = {}
        for peer in first + rest[: self.policy.max_others]:
            chosen.setdefault(peer.peer_id, peer)
        return list(chosen.values())

    async def dial(
        self, p2p: "P2PNode", peers: list[Peer], suspects: set[str], holders: Sequence[str] = ()
    ) -> list[str]:
        """Connect to `peers` and return the IDs of those reached, in the order given. A suspect
        peer (it failed us last time) is dialled afresh.

        The holders (addresses) are dialled first, concurrently, within `dial_deadline`; the
        other peers only when no holder was reached, since they are fallbacks. Else those already
        connected come along, undialled. Each dial costs a handshake on both sides, and while the
        fallbacks were dialled alongside and cancelled halfway once a holder answered, fetches of
        8 and 16 daemons stalled for the stall timeout, 65-261 times a run (most likely streams
        on connections left registered on one side only), against none since
        (scripts/bench_round.py, docs/benchmarks.md part (a))."""
        wanted = set(holders)
        first = [p for p in peers if p.address in wanted]
        rest = [p for p in peers if p.address not in wanted]
        reached = await self._dial_all(p2p, first, suspects) if first else set()
        if reached:
            reached |= {p.peer_id for p in rest if p.peer_id not in suspects and p2p.connected(p.peer_id)}
        else:
            reached = await self._dial_all(p2p, rest, suspects)
        return [p.peer_id for p in peers if p.peer_id in reached]

    async def _dial_all(self, p2p: "P2PNode", peers: list[Peer], suspects: set[str]) -> set[str]:
        """Dial `peers` concurrently, each through its usable addresses in turn, until all are
        settled or `dial_deadline` passes; the IDs of those reached."""
        reached: set[str] = set()

        async def dial_peer(peer: Peer) -> None:
            if peer.peer_id in suspects:
                try:
                    await p2p.disconnect(peer.peer_id)
                except Exception as exc:
                    log.debug("cannot disconnect %s: %s", peer.address, exc)
            elif p2p.connected(peer.peer_id):
                reached.add(peer.peer_id)
                return
            for addr in self.usable_addrs(peer, trio.current_time()):
                started = trio.current_time()
                with trio.move_on_after(self.policy.dial_timeout):
                    try:
                        await p2p.connect(addr)
                    except Exception as exc:  # an unreachable peer is skipped, not fatal
                        log.debug("cannot dial %s at %s: %s", peer.address, addr, exc)
                    else:
                        self.succeeded(addr)
                        reached.add(peer.peer_id)
                        return
                # Judged by the clock: py-libp2p may turn our timeout's cancellation into its own error.
                now = trio.current_time()
                self.failed(addr, now, silent=now - started >= 0.9 * self.policy.dial_timeout)

        with trio.move_on_after(self.policy.dial_deadline):
            async with trio.open_nursery() as nursery:
                for peer in peers:
                    nursery.start_soon(dial_peer, peer)
        return reached


def _kept_addrs(peer_id: str, addrs: Sequence[str]) -> tuple[str, ...]:
    """What the directory keeps of a registration's addresses: its first few well-formed ones
    naming the registered peer (anything can be registered; nothing else is ever dialled)."""
    policy = DialPolicy()
    kept: list[str] = []
    for addr in addrs:
        if len(kept) >= policy.max_addrs:
            break
        if isinstance(addr, str) and len(addr) <= policy.max_addr_len and addr not in kept and _names_peer(addr, peer_id):
            kept.append(addr)
    return tuple(kept)


def _names_peer(addr: str, peer_id: str) -> bool:
    """Whether `addr` parses as a multiaddr ending in /p2p/`peer_id`: dialling it reaches that peer."""
    try:
        return multiaddr.Multiaddr(addr).value_for_protocol("p2p") == peer_id
    except Exception:
        return False


async def fetch_from_peers(
    p2p: "P2PNode",
    directory: PeerDirectory,
    cid: str,
    holders: list[str],
    *,
    attempts: int = 4,
    backoff: float = 1.0,
    max_bytes: int | None = None,
    deadline: float = 900.0,
    dialer: Dialer | None = None,
) -> None:
    """Fetch `cid` into p2p's store: dial the holders (then a few other registered peers) at their
    on-chain addresses, and take the content, verified block by block, from whoever delivers it,
    at most `max_bytes` of it (None: the node's default limit).

    Bounded (#14, H5): the dials of an attempt run concurrently within one deadline and skip
    addresses that failed recently (`Dialer`, by default the directory's, so the memory outlives
    one fetch); each transfer has its own deadline and minimum throughput (node/p2p/blocks.py);
    the whole call ends within `deadline` seconds, retries included.

    A failed attempt is retried after `backoff`, doubling, up to `attempts` tries in all. Before
    each retry the directory is re-read from the chain, and a peer that could not be dialled or
    went silent is re-dialled on a fresh connection: a peer that restarted listens on a new port
    and has re-registered it, while our old connection to its dead process may still look open.
    Content over the limit is not retried.
    """
    dialer = dialer or getattr(directory, "dialer", None) or Dialer()
    last: StorageError | None = None
    suspects: set[str] = set()  # peers that failed us last attempt: their connection may be stale
    with trio.move_on_after(deadline) as scope:
        for attempt in range(attempts):
            if attempt:
                await trio.sleep(backoff * 2 ** (attempt - 1))
                await trio.to_thread.run_sync(directory.refresh)
            candidates = [p for p in directory.peers_for(holders) if p.peer_id != p2p.peer_id]
            chosen = dialer.choose(p2p, candidates, holders)
            providers = await dialer.dial(p2p, chosen, suspects, holders)
            suspects = {p.peer_id for p in chosen} - set(providers)
            if not providers:
                last = StorageError(f"no reachable peer to fetch {cid} from")
                continue
            try:
                await p2p.fetch(cid, providers, max_bytes)
                return
            except ContentTooLarge:
                raise
            except FetchError as exc:
                last = exc
                suspects |= {f.peer for f in exc.faults if f.kind in ("unavailable", "timeout", "slow")}
                # Debug: the caller says once what the failure means (a task waiting for its spec,
                # an update unavailable); one line per attempt was most of a waiting node's log (#17).
                log.debug("fetch of %s failed (attempt %d of %d): %s", cid, attempt + 1, attempts, exc)
    if scope.cancelled_caught:
        raise StorageError(f"could not fetch {cid} within {deadline:g} s" + (f": {last}" if last else ""))
    assert last is not None
    raise last


def libp2p_fetch(
    store: "BlockStore", p2p: "P2PNode", directory: PeerDirectory, max_bytes: int | None = None
) -> "Fetch":
    """The `Fetch` of a node on libp2p, for worker threads of its trio program: the local copy,
    else the content from the holders (then a few other registered peers), verified block by
    block.

    At most `max_bytes` per call (a call may pass its own, e.g. the task's `max_update_bytes`;
    None: DEFAULT_MAX_FETCH_BYTES), enforced while the blocks arrive and again when the local
    copy is read, so nothing larger is written to disk or assembled in memory. Content over
    the limit raises `node.storage.unixfs.OverLimit` either way: the same answer on every node,
    unlike an unreachable holder."""

    def fetch(cid: str, holders: Sequence[str], max_bytes: int | None = max_bytes) -> bytes:
        limit = DEFAULT_MAX_FETCH_BYTES if max_bytes is None else max_bytes
        if not store.has(cid):
            if not directory.by_address:
                directory.refresh()
            trio.from_thread.run(partial(fetch_from_peers, p2p, directory, cid, list(holders), max_bytes=limit))
        return store.get(cid, max_bytes=limit)

    return fetch


def release_old_rounds(
    store: "Storage",
    client: FedLedgerClient,
    task: int,
    round_: int,
    *,
    from_block: int = 0,
    keep_rounds: int = KEEP_ROUNDS,
    window: int = 4,
) -> int:
    """Round `round_` of `task` has a proposal: unpin the updates of the rounds more than
    `keep_rounds` before it (the last `window` of those; earlier ones were released when their
    time came) and collect garbage. Kept whatever else: every global model of the task (its
    initial model and each finalized round's, from the chain's TaskCreated and RoundFinalized
    events), its spec, and the updates of every round still kept. Returns the blocks removed.
    Runs in a worker thread; the chain is read, never written."""
    from node.storage.retention import release  # storage policy, kept beside the stores

    keep_rounds = max(1, keep_rounds)  # the previous round's updates: replay detection needs them
    newest = round_ - 1 - keep_rounds
    oldest = max(1, newest - window + 1)
    if newest < oldest:
        return 0
    keep: set[str] = set()
    for entry in client.logs("TaskCreated", from_block=from_block, taskId=task):
        keep |= {_cid_text(entry.args["modelCid"]), _cid_text(entry.args["specCid"])}
    for entry in client.logs("RoundFinalized", from_block=from_block, taskId=task):
        keep.add(_cid_text(entry.args["cid"]))
    keep.add(client.global_model(task)[0])
    for r in range(newest + 1, round_ + 1):
        keep |= {u.cid for u in client.round_updates(task, r)}
    drop = [u.cid for r in range(oldest, newest + 1) for u in client.round_updates(task, r)]
    return release(store, drop, keep)


def _cid_text(raw: bytes | str) -> str:
    # CIDs are on-chain bytes anyone may have written: undecodable ones name nothing we pinned.
    return raw if isinstance(raw, str) else bytes(raw).decode("utf-8", "replace")
