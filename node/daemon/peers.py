"""The peer directory: who is registered, under which libp2p identity, where.

Built from the contract's NodeRegistered / PeerInfoUpdated events, scanned
incrementally (only blocks not seen yet: a full rescan on every poll is what
DEPENDENCIES.md warns against). The chain is the only rendezvous: there is no
bootstrap server.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from node.chain.client import FedLedgerClient
from node.errors import StorageError

if TYPE_CHECKING:
    from node.p2p.node import P2PNode

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

    def refresh(self) -> int:
        """Read new registration events; returns how many peers changed."""
        head = int(self.client.w3.eth.block_number)
        if head < self.next_block:
            return 0
        changed = 0
        events = []
        for name in ("NodeRegistered", "PeerInfoUpdated"):
            events += getattr(self.client.contract.events, name)().get_logs(from_block=self.next_block, to_block=head)
        for ev in sorted(events, key=lambda e: (e["blockNumber"], e["logIndex"])):
            args = ev["args"]
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


async def fetch_from_peers(p2p: "P2PNode", directory: PeerDirectory, cid: str, holders: list[str]) -> None:
    """Fetch `cid` into p2p's store: dial the holders first (then every other registered peer)
    at their on-chain addresses, and take the content, verified block by block, from whoever
    delivers it."""
    candidates = [p for p in directory.peers_for(holders) if p.peer_id != p2p.peer_id]
    providers = []
    for peer in candidates:
        for addr in peer.multiaddrs:
            with trio.move_on_after(5):
                try:
                    await p2p.connect(addr)
                    providers.append(peer.peer_id)
                    break
                except Exception as exc:  # an unreachable peer is skipped, not fatal
                    log.debug("cannot dial %s at %s: %s", peer.address, addr, exc)
    if not providers:
        raise StorageError(f"no reachable peer to fetch {cid} from")
    await p2p.fetch(cid, providers)
