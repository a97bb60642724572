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

from node.daemon.peers import Peer, fetch_from_peers
from node.errors import StorageError
from node.p2p import P2PConfig, P2PNode
from node.storage import EmbeddedStorage
from tests.p2p.peers import PeerProcess

pytestmark = pytest.mark.slow
HOLDER = "0x00000000000000000000000000000000000000aa"


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
