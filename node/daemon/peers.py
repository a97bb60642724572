"""The peer directory: who is registered, under which libp2p identity, where.

Built from the contract's NodeRegistered / PeerInfoUpdated events, scanned
incrementally (only blocks not seen yet: a full rescan on every poll is what
DEPENDENCIES.md warns against). The chain is the only rendezvous: there is no
bootstrap server.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.chain.client import FedLedgerClient


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
