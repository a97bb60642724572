"""Peer-to-peer networking on libp2p (SPEC §7): identity, per-task announcements, block exchange.

`P2PNode` is the service a node runs: a libp2p host with a persistent Ed25519
identity, a gossipsub topic per task for announcements from registered peers
only, and the `/fedledger/blocks/1.0.0` block exchange that fetches a DAG from
whichever peer holds it, verifying every block against its CID.
"""

from node.p2p.blocks import BLOCKS_PROTOCOL, ContentTooLarge, FetchError, ProviderFault
from node.p2p.gossip import Announcement, topic_for_task
from node.p2p.identity import load_or_create_identity, peer_id_of
from node.p2p.node import P2PConfig, P2PNode

__all__ = [
    "BLOCKS_PROTOCOL",
    "Announcement",
    "ContentTooLarge",
    "FetchError",
    "P2PConfig",
    "P2PNode",
    "ProviderFault",
    "load_or_create_identity",
    "peer_id_of",
    "topic_for_task",
]
