"""The peer directory: who is registered, under which libp2p identity, where.

Built from the contract's NodeRegistered / PeerInfoUpdated events, scanned
incrementally (only blocks not seen yet: a full rescan on every poll is what
DEPENDENCIES.md warns against). The chain is the only rendezvous: there is no
bootstrap server.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import trio

from node.chain.client import FedLedgerClient
from node.errors import StorageError
from node.p2p.blocks import FetchError

if TYPE_CHECKING:
    from node.abc import BlockStore
    from node.p2p.node import P2PNode
    from node.protocol import Fetch

log = logging.getLogger("fedledger.peers")


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
        entries = []
        for name in ("NodeRegistered", "PeerInfoUpdated"):
            entries += self.client.logs(name, from_block=self.next_block, to_block=head)
        for entry in sorted(entries, key=lambda e: (e.block, e.log_index)):
            args = entry.args
            peer = Peer(args["node"], args["peerId"], tuple(args["multiaddrs"]))
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


async def fetch_from_peers(
    p2p: "P2PNode", directory: PeerDirectory, cid: str, holders: list[str], *, attempts: int = 4, backoff: float = 1.0
) -> None:
    """Fetch `cid` into p2p's store: dial the holders first (then every other registered peer)
    at their on-chain addresses, and take the content, verified block by block, from whoever
    delivers it.

    A failed attempt is retried after `backoff`, doubling, up to `attempts` tries in all. Before
    each retry the directory is re-read from the chain, and a peer that could not be dialled or
    went silent is re-dialled on a fresh connection: a peer that restarted listens on a new port
    and has re-registered it, while our old connection to its dead process may still look open.
    """
    last: StorageError | None = None
    suspects: set[str] = set()  # peers that failed us last attempt: their connection may be stale
    for attempt in range(attempts):
        if attempt:
            await trio.sleep(backoff * 2 ** (attempt - 1))
            await trio.to_thread.run_sync(directory.refresh)
        candidates = [p for p in directory.peers_for(holders) if p.peer_id != p2p.peer_id]
        providers: list[str] = []
        dialled: set[str] = set()
        for peer in candidates:
            if peer.peer_id in suspects:
                await p2p.disconnect(peer.peer_id)
            for addr in peer.multiaddrs:
                with trio.move_on_after(5):
                    try:
                        await p2p.connect(addr)
                        providers.append(peer.peer_id)
                        dialled.add(peer.peer_id)
                        break
                    except Exception as exc:  # an unreachable peer is skipped, not fatal
                        log.debug("cannot dial %s at %s: %s", peer.address, addr, exc)
        suspects = {p.peer_id for p in candidates} - dialled
        if not providers:
            last = StorageError(f"no reachable peer to fetch {cid} from")
            continue
        try:
            await p2p.fetch(cid, providers)
            return
        except FetchError as exc:
            last = exc
            suspects |= {f.peer for f in exc.faults if f.kind in ("unavailable", "timeout")}
            log.info("fetch of %s failed (attempt %d of %d): %s", cid, attempt + 1, attempts, exc)
    assert last is not None
    raise last


def libp2p_fetch(store: "BlockStore", p2p: "P2PNode", directory: PeerDirectory) -> "Fetch":
    """The `Fetch` of a node on libp2p, for worker threads of its trio program: the local copy,
    else the content from the holders (then any registered peer), verified block by block."""

    def fetch(cid: str, holders: Sequence[str]) -> bytes:
        if not store.has(cid):
            if not directory.by_address:
                directory.refresh()
            trio.from_thread.run(fetch_from_peers, p2p, directory, cid, list(holders))
        return store.get(cid)

    return fetch
