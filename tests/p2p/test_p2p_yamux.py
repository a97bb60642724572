"""Yamux credit in batches (node/p2p/yamux.py) and small DAGs sent inline (block_server.py),
between two real libp2p nodes in one process.

What must hold: bulk data over yamux (an inline block transfer, several windows long) and a
burst of gossip still arrive whole, while the receiver sends a WINDOW_UPDATE per half window
consumed instead of one per read. The count comes from the library's own `send_window_update`,
wrapped to count its calls.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
from libp2p.stream_muxer.yamux.yamux import DEFAULT_WINDOW_SIZE, YamuxStream

from node.p2p.gossip import Announcement
from node.p2p.node import P2PConfig, P2PNode
from node.p2p.yamux import batch_window_updates
from node.storage import EmbeddedStorage

MB = 1024 * 1024


@pytest.fixture
def updates(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The increments of every WINDOW_UPDATE sent in this test, in order."""
    sent: list[int] = []
    original = YamuxStream.send_window_update

    async def counted(self, increment: int, skip_lock: bool = False) -> None:  # type: ignore[no-untyped-def]
        if increment > 0:
            sent.append(increment)
        await original(self, increment, skip_lock)

    monkeypatch.setattr(YamuxStream, "send_window_update", counted)
    yield sent
    batch_window_updates()  # what every P2PNode installs; a test that removed it puts it back


def _pair(tmp_path: Path, body, direct: bool = False):  # type: ignore[no-untyped-def]
    """Two connected nodes, blocks inline over yamux unless `direct`; returns `await body(a, b)`."""

    async def main():  # type: ignore[no-untyped-def]
        config = dict(direct_transfer=direct, stall_timeout=10.0)
        a = P2PNode(P2PConfig(tmp_path / "a", **config), EmbeddedStorage(tmp_path / "a" / "ipfs", fsync=False), lambda p: True)
        b = P2PNode(P2PConfig(tmp_path / "b", **config), EmbeddedStorage(tmp_path / "b" / "ipfs", fsync=False), lambda p: True)
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            await nursery.start(b.run)
            await b.connect(a.addrs[0])
            try:
                with trio.fail_after(60):
                    return await body(a, b)
            finally:
                nursery.cancel_scope.cancel()

    return trio.run(main)


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "library"])
def test_an_inline_transfer_of_many_windows_arrives_whole(tmp_path: Path, updates: list[int], batched: bool) -> None:
    # Prepare: 3 MiB (12 yamux windows) held by a, fetched inline by b; with and without the batching
    data = os.urandom(3 * MB + 11)

    async def body(a: P2PNode, b: P2PNode) -> bytes:
        batch_window_updates(batched)  # after the nodes started: they install it
        cid = await trio.to_thread.run_sync(a.store.put, data)
        faults = await b.fetch(cid, [a.peer_id])
        assert faults == []
        return await trio.to_thread.run_sync(b.store.get, cid)

    # Execute
    got = _pair(tmp_path, body)

    # Assert: every byte arrived; batched, each update credits half a window or more, so there
    # are at most ~2 per window moved (the library's own sends far more, per read)
    assert got == data
    if batched:
        assert updates and min(updates) >= DEFAULT_WINDOW_SIZE // 2
        assert len(updates) <= 2 * len(data) // DEFAULT_WINDOW_SIZE + 4
    else:
        assert len(updates) > 2 * len(data) // DEFAULT_WINDOW_SIZE + 4  # what the batching removes


def test_a_burst_of_gossip_arrives_whole_with_few_window_updates(tmp_path: Path, updates: list[int]) -> None:
    # Prepare: both nodes on task 7's topic; a announces 200 updates
    count = 200

    async def body(a: P2PNode, b: P2PNode) -> list[Announcement]:
        inbox_b = await b.subscribe(7)
        await a.subscribe(7)
        while a.peer_id not in b.gossip_peers(7) or b.peer_id not in a.gossip_peers(7):
            await trio.sleep(0.05)
        await trio.sleep(1.5)  # a heartbeat: the mesh is formed
        cid = await trio.to_thread.run_sync(a.store.put, b"a model")
        before = len(updates)
        sent = [Announcement(7, r, "update", cid) for r in range(1, count + 1)]
        for ann in sent:
            await a.announce(ann)
        got = [await inbox_b.receive() for _ in range(count)]
        assert len(updates) - before < count // 10, updates[before:]  # unbatched: 2-3 per message
        return got

    # Execute
    got = _pair(tmp_path, body)

    # Assert: all 200 arrived, in order
    assert [ann.round for ann in got] == list(range(1, count + 1))


def test_one_small_block_is_sent_inline_and_larger_dags_directly(tmp_path: Path) -> None:
    # Prepare: a holds a model-sized DAG of one block and a 1 MiB DAG; b asks for both over the
    # direct channel (the daemon's setting)
    small, large = os.urandom(69 * 1024), os.urandom(MB)

    async def body(a: P2PNode, b: P2PNode) -> tuple[bytes, bytes, list[int]]:
        cids = [await trio.to_thread.run_sync(a.store.put, data) for data in (small, large)]
        offered: list[str] = []  # the roots a offered the direct channel for
        add_offer = a.server._add_offer
        a.server._add_offer = lambda token, offer: (offered.append(str(offer.root)), add_offer(token, offer))[1]
        for cid in cids:
            assert await b.fetch(cid, [a.peer_id]) == []
        got = [await trio.to_thread.run_sync(b.store.get, cid) for cid in cids]
        return got[0], got[1], [cids.index(c) for c in offered]

    # Execute
    got_small, got_large, offers = _pair(tmp_path, body, direct=True)

    # Assert: both arrived whole; only the large one was offered the direct channel
    assert got_small == small and got_large == large
    assert offers == [1], offers
