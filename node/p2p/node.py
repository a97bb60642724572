"""The node's libp2p service: host, per-task gossip and block exchange, run as one trio task.

    node = P2PNode(P2PConfig(data_dir), store, is_registered)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)          # listening once this returns
        await node.connect(addr_from_chain)    # peers dial each other from the on-chain registry
        updates = await node.subscribe(task_id)
        await node.announce(Announcement(task_id, round_, "update", cid))
        await node.fetch(cid, providers=[peer_id, ...])

`is_registered(peer_id)` is the allow-list (registered on-chain nodes) for
both gossip and the block server: an unregistered peer is neither heard nor
served. It is a plain callable so this module does not depend on the chain
client; `lambda peer: True` opens both to everyone (tests, simulations).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import multiaddr
import trio
from libp2p import new_host
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID as GOSSIPSUB_PROTOCOL_ID
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

from node.abc import BlockStore
from node.errors import ConfigError
from node.p2p.block_fetcher import BlockFetcher
from node.p2p.block_server import BlockServer
from node.p2p.blocks import BLOCKS_PROTOCOL, ProviderFault
from node.p2p.gossip import Announcement, accept, topic_for_task
from node.p2p.identity import load_or_create_identity, peer_id_of
from node.p2p.yamux import batch_window_updates
from node.storage.unixfs import DEFAULT_MAX_FETCH_BYTES

log = logging.getLogger(__name__)


@dataclass
class P2PConfig:
    """How a node joins the peer-to-peer network."""

    data_dir: Path  # the identity key lives in data_dir/p2p/
    listen: str = "/ip4/127.0.0.1/tcp/0"  # loopback by default; a public node sets its own address
    direct_transfer: bool = True  # serve and fetch bulk blocks over the direct AES-GCM channel (blocks.py)
    stall_timeout: float = 10.0  # seconds without data before a provider is abandoned
    min_rate: float = 64 * 1024  # bytes/s a provider must keep up (blocks.py); slower ones are dropped
    fetch_timeout: float = 600.0  # seconds for one fetch, every provider included
    max_fetch_bytes: int = DEFAULT_MAX_FETCH_BYTES  # a fetch's byte limit when its caller names none
    publish_interval: float = 0.005  # pacing between our publishes; gossipsub drops bursts (DEPENDENCIES.md)
    inbox_size: int = 4096  # announcements buffered per subscription before the oldest consumer blocks


class P2PNode:
    """One node's libp2p presence: persistent identity, gossip per task, verified block exchange."""

    def __init__(
        self,
        config: P2PConfig,
        store: BlockStore,
        is_registered: Callable[[str], bool],
        *,
        block_source: Callable[[str], bytes] | None = None,
        on_fault: Callable[[ProviderFault], None] | None = None,
    ) -> None:
        """Serve blocks from `store` and fetch into it (the embedded blockstore or a kubo daemon).

        `block_source` overrides what is served (default: the store's verified reads)."""
        batch_window_updates()  # one WINDOW_UPDATE per half window consumed, not per read (node/p2p/yamux.py)
        self.config = config
        self.store = store
        self.is_registered = is_registered
        self.key_pair = load_or_create_identity(config.data_dir)
        self.peer_id = peer_id_of(self.key_pair)
        try:
            self._listen = multiaddr.Multiaddr(config.listen)
        except Exception as exc:
            raise ConfigError(f"bad listen address {config.listen!r}: {exc}") from None
        self.host = new_host(key_pair=self.key_pair, listen_addrs=[self._listen])
        self.faults: list[ProviderFault] = []
        self._on_fault = on_fault
        self.server = BlockServer(
            block_source or store.get_block,
            direct_host=self._listen_ip() if config.direct_transfer else None,
            allow=is_registered,
        )
        self.fetcher = BlockFetcher(
            store,
            open_stream=self._open_block_stream,
            remote_ip=self._remote_ip,
            stall_timeout=config.stall_timeout,
            direct=config.direct_transfer,
            on_fault=self._record_fault,
            min_rate=config.min_rate,
            fetch_timeout=config.fetch_timeout,
            max_bytes=config.max_fetch_bytes,
        )
        self.gossipsub = GossipSub(
            protocols=[GOSSIPSUB_PROTOCOL_ID],
            degree=6,
            degree_low=4,
            degree_high=12,
            heartbeat_interval=1,
            # Only registered peers get through the validator, so rate limiting buys nothing
            # and silently dropped 90 of 100 announcements in a burst (DEPENDENCIES.md).
            spam_protection_enabled=False,
        )
        self.pubsub = Pubsub(self.host, self.gossipsub)
        self._publish_lock = trio.Lock()
        self._last_publish = -math.inf
        self._nursery: trio.Nursery | None = None

    def _listen_ip(self) -> str:
        for proto in ("ip4", "ip6"):
            try:
                return self._listen.value_for_protocol(proto)
            except Exception:
                continue
        raise ConfigError(f"listen address {self.config.listen!r} has no IP")

    def _record_fault(self, fault: ProviderFault) -> None:
        self.faults.append(fault)
        if self._on_fault is not None:
            self._on_fault(fault)

    @property
    def addrs(self) -> list[str]:
        """Full multiaddrs (with /p2p/<id>) to register on-chain."""
        return [str(a) for a in self.host.get_addrs()]

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
        """Run until cancelled; `nursery.start(node.run)` returns once the node listens."""
        self.host.set_stream_handler(BLOCKS_PROTOCOL, self.server.handle_stream)
        async with self.host.run(listen_addrs=[self._listen]):
            async with background_trio_service(self.pubsub), background_trio_service(self.gossipsub):
                await self.pubsub.wait_until_ready()
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    await nursery.start(self.server.serve_direct)
                    task_status.started()
                    await trio.sleep_forever()

    async def connect(self, addr: str) -> str:
        """Dial a peer at a full multiaddr (…/p2p/<id>, as registered on-chain); return its peer ID."""
        info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        if not self.host.get_network().connections.get(info.peer_id):
            # The registry is the truth about where a peer listens. py-libp2p dials only the first
            # TCP address it knows of a peer and, after a failure, refuses to dial it again for 60 s;
            # a peer restarted on a new port would stay unreachable. Forget both before dialling.
            self.host.get_peerstore().clear_addrs(info.peer_id)
            negative = getattr(self.host.get_network(), "_negative_peer_cache", None)
            if negative is not None:
                negative.evict(str(info.peer_id))
        await self.host.connect(info)
        return info.peer_id.to_base58()

    async def disconnect(self, peer_id: str) -> None:
        """Close every connection to a peer (none open is fine): the next dial starts afresh."""
        await self.host.disconnect(ID.from_base58(peer_id))

    async def subscribe(self, task_id: int) -> trio.MemoryReceiveChannel[Announcement]:
        """Join a task's topic; announcements from registered peers arrive on the returned channel."""
        assert self._nursery is not None, "run() first"
        topic = topic_for_task(task_id)

        def validator(forwarder: ID, msg) -> bool:  # type: ignore[no-untyped-def]
            return accept(self.is_registered, ID(msg.from_id).to_base58(), msg.data, task_id) is not None

        self.pubsub.set_topic_validator(topic, validator, False)
        subscription = await self.pubsub.subscribe(topic)
        send, receive = trio.open_memory_channel[Announcement](self.config.inbox_size)

        async def drain() -> None:
            # Always drain at once: py-libp2p drops past 32 undelivered messages per subscription.
            async with send:
                while True:
                    msg = await subscription.get()
                    sender = ID(msg.from_id).to_base58()
                    if sender == self.peer_id:
                        continue
                    ann = accept(self.is_registered, sender, msg.data, task_id)  # again: defence in depth
                    if ann is None:
                        continue
                    try:
                        send.send_nowait(ann)
                    except trio.WouldBlock:
                        log.warning("announcement inbox of task %d full; dropped %s (the chain still has it)", task_id, ann)

        self._nursery.start_soon(drain)
        return receive

    async def announce(self, ann: Announcement) -> None:
        """Publish on the task's topic, paced so gossipsub's outbound queue never overflows."""
        async with self._publish_lock:
            wait = self._last_publish + self.config.publish_interval - trio.current_time()
            if wait > 0:
                await trio.sleep(wait)
            await self.pubsub.publish(topic_for_task(ann.task), ann.encode())
            self._last_publish = trio.current_time()

    def gossip_peers(self, task_id: int) -> list[str]:
        """Peers known to be subscribed to a task's topic (mesh formation is what announce waits on)."""
        peers = self.pubsub.peer_topics.get(topic_for_task(task_id), set())
        return sorted(p.to_base58() for p in peers)

    def connected(self, peer_id: str) -> bool:
        """Whether a connection to `peer_id` is open: gossip reaches only peers we are connected to."""
        try:
            return bool(self.host.get_network().connections.get(ID.from_base58(peer_id)))
        except Exception:  # not a peer ID (the on-chain registry holds whatever a node registered)
            return False

    async def fetch(self, cid: str, providers: list[str], max_bytes: int | None = None) -> list[ProviderFault]:
        """Fetch and pin `cid` from the first provider that delivers it whole (FetchError if none
        does), at most `max_bytes` of it (default: the config's `max_fetch_bytes`)."""
        usable = [p for p in providers if p != self.peer_id]
        return await self.fetcher.fetch(cid, usable, max_bytes)

    async def _open_block_stream(self, peer: str):  # type: ignore[no-untyped-def]
        return await self.host.new_stream(ID.from_base58(peer), [BLOCKS_PROTOCOL])

    def _remote_ip(self, peer: str) -> str | None:
        for addr in self.host.get_peerstore().addrs(ID.from_base58(peer)):
            for proto in ("ip4", "ip6"):
                try:
                    return addr.value_for_protocol(proto)
                except Exception:
                    continue
        return None
