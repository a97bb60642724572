"""fetch_from_peers against a real provider process that restarts on a new port.

The directory here is a seam: it plays the chain's registry (stale until refreshed). The real
PeerDirectory, fed by the contract's events, is exercised by the anvil daemon tests, among them a
daemon killed with SIGKILL and restarted mid-round.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
import trio

from node.daemon.peers import Dialer, DialPolicy, Peer, _kept_addrs, fetch_from_peers, libp2p_fetch
from node.errors import StorageError
from node.p2p import P2PConfig, P2PNode, load_or_create_identity, peer_id_of
from node.storage import EmbeddedStorage
from node.storage.unixfs import OverLimit
from tests.p2p.peers import PeerProcess

pytestmark = pytest.mark.slow
HOLDER = "0x00000000000000000000000000000000000000aa"
SYBIL = "0x00000000000000000000000000000000000000bb"


class StaleDirectory:
    """Knows the provider at `before` until refresh() is called, then at `after`."""

    def __init__(self, peer_id: str, before: str, after: str | None) -> None:
        self.peer = Peer(HOLDER, peer_id, (before,))
        self.after = after
        self.refreshes = 0

    def refresh(self) -> int:
        self.refreshes += 1
        if self.after is not None:
            self.peer = Peer(HOLDER, self.peer.peer_id, (self.after,))
        return 1

    def peers_for(self, addresses: list[str]) -> list[Peer]:
        return [self.peer]


def fetch_in_process(data_dir: Path, directory: StaleDirectory, cid: str, attempts: int) -> EmbeddedStorage:
    store = EmbeddedStorage(data_dir / "ipfs")
    node = P2PNode(P2PConfig(data_dir, stall_timeout=3.0), store, lambda peer: True)
    errors: list[Exception] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            try:
                await fetch_from_peers(node, directory, cid, [HOLDER], attempts=attempts, backoff=0.2)
            except StorageError as exc:
                errors.append(exc)
            finally:
                nursery.cancel_scope.cancel()

    trio.run(main)
    if errors:
        raise errors[0]
    return store


def test_a_restarted_provider_is_found_at_its_new_address(tmp_path: Path) -> None:
    # Prepare: the provider holds an update, we hold a connection to it, then it dies and comes
    # back (same identity and store) on another port. The directory still has the old address.
    (tmp_path / "provider").mkdir()
    provider = PeerProcess(tmp_path / "provider")
    cid = provider.call("put", size=300_000, seed=3)["cid"]
    old_addr = provider.addr
    try:
        provider.stop()
        provider = PeerProcess(tmp_path / "provider")
        assert provider.addr != old_addr and provider.peer_id in old_addr
        directory = StaleDirectory(provider.peer_id, old_addr, provider.addr)
        # Execute
        store = fetch_in_process(tmp_path / "me", directory, cid, attempts=3)
    finally:
        provider.stop()
    # Assert: the first attempt failed on the stale address, a refresh found the new one
    assert directory.refreshes >= 1
    assert hashlib.sha256(store.get(cid)).digest() == hashlib.sha256(random.Random(3).randbytes(300_000)).digest()


def test_a_stale_connection_is_dropped_and_redialled(tmp_path: Path) -> None:
    # Prepare: we are connected to the provider when it is killed; it restarts on a new port
    (tmp_path / "provider").mkdir()
    provider = PeerProcess(tmp_path / "provider")
    cid = provider.call("put", size=200_000, seed=4)["cid"]
    first = provider
    directory = StaleDirectory(provider.peer_id, provider.addr, None)
    store = EmbeddedStorage(tmp_path / "me" / "ipfs")
    node = P2PNode(P2PConfig(tmp_path / "me", stall_timeout=3.0), store, lambda peer: True)
    restarted: list[PeerProcess] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            await node.connect(first.addr)
            first.stop()
            again = await trio.to_thread.run_sync(PeerProcess, tmp_path / "provider")
            restarted.append(again)
            directory.after = again.addr  # what the chain says once it has re-registered
            try:
                await fetch_from_peers(node, directory, cid, [HOLDER], attempts=3, backoff=0.2)
            finally:
                nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        for p in restarted:
            p.stop()
    assert directory.refreshes >= 1
    assert len(store.get(cid)) == 200_000


def test_no_provider_at_all_is_one_storage_error_after_the_retries(tmp_path: Path) -> None:
    (tmp_path / "provider").mkdir()
    provider = PeerProcess(tmp_path / "provider")
    cid = provider.call("put", size=1000, seed=5)["cid"]
    dead = provider.addr
    provider.stop()
    directory = StaleDirectory(provider.peer_id, dead, None)
    with pytest.raises(StorageError, match="no reachable peer"):
        fetch_in_process(tmp_path / "me", directory, cid, attempts=2)
    assert directory.refreshes == 1


class Registry:
    """The chain's registry as a seam: a fixed list of peers, holders first; carries the
    directory's memory of failing addresses, as PeerDirectory does."""

    def __init__(self, peers: list[Peer]) -> None:
        self.peers = peers
        self.dialer = Dialer()

    def refresh(self) -> int:
        return 0

    def peers_for(self, addresses: list[str]) -> list[Peer]:
        return sorted(self.peers, key=lambda p: (p.address not in addresses, addresses.index(p.address) if p.address in addresses else 0))


def test_a_registration_of_silent_addresses_does_not_stall_fetches(tmp_path: Path) -> None:
    # Prepare: a sybil registered 100 addresses that accept a TCP connection and then say nothing
    # (a libp2p dial to one hangs until its timeout), and it is named first among the holders.
    # The real provider is the second holder.
    sybil_id = peer_id_of(load_or_create_identity(tmp_path / "sybil"))
    (tmp_path / "provider").mkdir()
    provider = PeerProcess(tmp_path / "provider")
    cids = [provider.call("put", size=300_000, seed=s)["cid"] for s in (6, 7)]
    store = EmbeddedStorage(tmp_path / "me" / "ipfs")
    node = P2PNode(P2PConfig(tmp_path / "me", stall_timeout=3.0), store, lambda peer: True)
    accepted: list[int] = [0]
    took: list[float] = []

    async def silent(stream: trio.SocketStream) -> None:
        accepted[0] += 1
        await trio.sleep_forever()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            listeners = [(await trio.open_tcp_listeners(0, host="127.0.0.1"))[0] for _ in range(100)]
            nursery.start_soon(trio.serve_listeners, silent, listeners)
            ports = [listener.socket.getsockname()[1] for listener in listeners]
            sybil = Peer(SYBIL, sybil_id, tuple(f"/ip4/127.0.0.1/tcp/{port}/p2p/{sybil_id}" for port in ports))
            registry = Registry([sybil, Peer(HOLDER, provider.peer_id, (provider.addr,))])
            # Execute: two fetches, each with the sybil named first
            for cid in cids:
                start = trio.current_time()
                with trio.fail_after(60):  # before the fix: 100 addresses x 5 s, one after another
                    await fetch_from_peers(node, registry, cid, [SYBIL, HOLDER], attempts=1)
                took.append(trio.current_time() - start)
                accepted.append(accepted[0])
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        provider.stop()
    # Assert: the first fetch dialled at most 3 of the sybil's addresses, all at once, within the
    # dial deadline; the second remembered them as dead and went straight to the provider
    assert took[0] < 15 and accepted[1] <= 3, (took, accepted)
    assert took[1] < 3 and accepted[2] == accepted[1], (took, accepted)
    assert all(len(store.get(cid)) == 300_000 for cid in cids)


def test_the_dialer_keeps_only_few_well_formed_addresses_of_a_peer(tmp_path: Path) -> None:
    # Prepare: a registration with junk, another peer's address, a duplicate and 50 good ones
    me = peer_id_of(load_or_create_identity(tmp_path / "me"))
    other = peer_id_of(load_or_create_identity(tmp_path / "other"))
    good = [f"/ip4/10.0.0.{i}/tcp/4001/p2p/{me}" for i in range(50)]
    junk = ["not a multiaddr", f"/ip4/10.0.0.1/tcp/4001/p2p/{other}", "/ip4/10.0.0.1/tcp/4001", "/" + "x" * 10_000]
    peer = Peer(HOLDER, me, tuple(junk + [good[0], good[0]] + good[1:]))
    dialer = Dialer()
    backoff = DialPolicy().backoff
    # Execute / Assert: only the first three good ones, each once, are dialled or even kept
    assert dialer.usable_addrs(peer, now=0.0) == good[:3]
    assert _kept_addrs(me, peer.multiaddrs) == tuple(good[:3])
    # a failing address waits out its backoff, and is dialled again afterwards
    dialer.failed(good[0], now=0.0)
    assert dialer.usable_addrs(peer, now=1.0) == good[1:3]  # and no other one in its place
    assert dialer.usable_addrs(peer, now=backoff + 1) == good[:3]
    # a second failure in a row doubles the wait; a success forgets the failures
    dialer.failed(good[0], now=10.0)
    assert good[0] not in dialer.usable_addrs(peer, now=10.0 + backoff + 1)
    assert good[0] in dialer.usable_addrs(peer, now=10.0 + 2 * backoff + 1)
    dialer.succeeded(good[0])
    assert dialer.usable_addrs(peer, now=10.0) == good[:3]
    # an address that stayed silent (each try costs a dial timeout) waits far longer
    dialer.failed(good[1], now=0.0, silent=True)
    assert good[1] not in dialer.usable_addrs(peer, now=10 * backoff)
    assert good[1] in dialer.usable_addrs(peer, now=DialPolicy().silent_backoff + 1)


def test_the_daemons_fetch_holds_to_its_byte_limit(tmp_path: Path) -> None:
    # Prepare: the provider holds 1 MB; the daemon's fetch is made with a 100 kB default limit
    (tmp_path / "provider").mkdir()
    provider = PeerProcess(tmp_path / "provider")
    cid = provider.call("put", size=1_000_000, seed=8)["cid"]
    registry = Registry([Peer(HOLDER, provider.peer_id, (provider.addr,))])
    registry.by_address = {HOLDER: registry.peers[0]}
    store = EmbeddedStorage(tmp_path / "me" / "ipfs")
    node = P2PNode(P2PConfig(tmp_path / "me", stall_timeout=3.0), store, lambda peer: True)
    fetch = libp2p_fetch(store, node, registry, max_bytes=100_000)  # type: ignore[arg-type]
    outcomes: list[object] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            # Execute: as the protocol's worker threads call it, with the default, then a larger limit
            for limit in ({}, {"max_bytes": 2_000_000}):
                start = trio.current_time()
                try:
                    outcomes.append(len(await trio.to_thread.run_sync(lambda: fetch(cid, [HOLDER], **limit))))
                except StorageError as exc:
                    outcomes.append(exc)
                outcomes.append(trio.current_time() - start)
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        provider.stop()
    # Assert: refused at once (content over the limit is not retried), then fetched whole
    refused, took, fetched, _ = outcomes
    assert isinstance(refused, OverLimit) and "over the 100000-byte limit" in str(refused), refused
    assert took < 5
    assert fetched == 1_000_000
