"""Hostile providers and hostile fetchers, over real libp2p and TCP on loopback (#14: H5, H7, M1).

Each test is an exploit that worked before the fix: a provider trickling bytes held a fetch for
as long as it liked, a DAG of any size went onto disk whatever the caller's limit, and any
libp2p peer, registered or not, was served and could grow the server's offer table at will.
"""

from __future__ import annotations

import hashlib
import random
import time
from pathlib import Path

import pytest
import trio

from node.p2p import P2PConfig, P2PNode
from node.p2p.blocks import control_message, libp2p_reader
from node.storage import EmbeddedStorage
from node.storage.cid import CODEC_DAG_PB, CODEC_RAW, Cid
from node.storage.dagpb import encode_link, encode_node, encode_unixfs_file
from tests.p2p.peers import peer_processes

pytestmark = pytest.mark.slow
MB = 1024 * 1024


def digest(size: int, seed: int) -> str:
    return hashlib.sha256(random.Random(seed).randbytes(size)).hexdigest()


def stored_bytes(data_dir: Path) -> int:
    """Bytes of every block file (temporary ones included) in a peer process's blockstore."""
    return sum(p.stat().st_size for p in (data_dir / "ipfs" / "blocks").rglob("*") if p.is_file())


def test_unregistered_peer_is_not_served(tmp_path: Path) -> None:
    # Prepare: A serves only B (its registered peer); C is a stranger that dialled A
    with peer_processes(tmp_path, (), (), ()) as (a, b, c):
        cid = a.call("put", size=MB, seed=1)["cid"]
        a.call("allow", peers=[b.peer_id])
        for peer in (b, c):
            peer.call("connect", addr=a.addr)
        # Execute
        stranger = c.call("fetch", cid=cid, providers=[a.peer_id])
        member = b.call("fetch", cid=cid, providers=[a.peer_id])
        # Assert: one clear refusal for the stranger, nothing it can pin; the member is served
        assert "error" in stranger and "not a registered peer" in stranger["error"], stranger
        assert "error" in c.call("get", cid=cid)
        assert member["faults"] == [] and b.call("get", cid=cid)["sha256"] == digest(MB, 1)


def test_direct_offers_stay_bounded(tmp_path: Path) -> None:
    # Prepare: A holds content (of several blocks: one small block is sent inline); we ask for it
    # over the direct channel again and again, never connecting
    asks = 40
    with peer_processes(tmp_path, ()) as (a,):
        cid = a.call("put", size=MB, seed=2)["cid"]
        node = P2PNode(P2PConfig(tmp_path / "me"), EmbeddedStorage(tmp_path / "me" / "ipfs"), lambda peer: True)
        offers: list[int] = []

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                await nursery.start(node.run)
                await node.connect(a.addr)
                # Execute
                for _ in range(asks):
                    stream = await node._open_block_stream(a.peer_id)
                    await stream.write(control_message({"root": cid, "direct": True}))
                    await libp2p_reader(stream).read_frame(4096)
                    await stream.close()
                offers.append((await trio.to_thread.run_sync(a.call, "offers"))["offers"])
                nursery.cancel_scope.cancel()

        trio.run(main)
    # Assert: a peer holds a handful of offers at most, however often it asks
    assert 1 <= offers[0] <= 4, offers


def test_trickling_provider_is_dropped_for_the_next(tmp_path: Path) -> None:
    # Prepare: A sends 512-byte pieces at ~40 KB/s: every 256 KB block arrives well within C's
    # 10 s stall timeout, so only a minimum throughput can tell it from a working link. B is honest.
    with peer_processes(tmp_path, ("--trickle", "40000"), (), ("--stall-timeout", "10")) as (a, b, c):
        cid = a.call("put", size=4 * MB, seed=3)["cid"]
        assert b.call("put", size=4 * MB, seed=3)["cid"] == cid
        c.call("connect", addr=a.addr)
        c.call("connect", addr=b.addr)
        # Execute: at A's pace the fetch would take about two minutes
        start = time.monotonic()
        result = c.call("fetch", cid=cid, providers=[a.peer_id, b.peer_id], timeout=45)
        elapsed = time.monotonic() - start
        # Assert: A is dropped as too slow after a rate window (5 s of waiting), and B delivers
        assert [(f[0], f[1]) for f in result["faults"]] == [(a.peer_id, "slow")], result
        assert elapsed < 25
        assert c.call("get", cid=cid)["sha256"] == digest(4 * MB, 3)


def test_a_fetch_ends_by_its_deadline(tmp_path: Path) -> None:
    # Prepare: A trickles; C's stall timeout and minimum rate are lowered far enough that only
    # the fetch's own deadline (4 s here) can end it
    flags = ("--stall-timeout", "30", "--min-rate", "100", "--fetch-timeout", "4")
    with peer_processes(tmp_path, ("--trickle", "20000"), flags) as (a, c):
        cid = a.call("put", size=2 * MB, seed=4)["cid"]
        c.call("connect", addr=a.addr)
        # Execute: at A's pace, over 100 s
        start = time.monotonic()
        result = c.call("fetch", cid=cid, providers=[a.peer_id], timeout=45)
        elapsed = time.monotonic() - start
        # Assert: a FetchError naming the deadline, after about 4 s, and nothing pinned
        assert "error" in result and "deadline" in result["error"], result
        assert elapsed < 15
        assert "error" in c.call("get", cid=cid)


def test_content_over_the_limit_is_refused_at_its_root(tmp_path: Path) -> None:
    # Prepare: A holds 3 MB; C may take 1 MB (the task's max_update_bytes, say)
    with peer_processes(tmp_path, (), ()) as (a, c):
        cid = a.call("put", size=3 * MB, seed=5)["cid"]
        c.call("connect", addr=a.addr)
        # Execute
        result = c.call("fetch", cid=cid, providers=[a.peer_id], max_bytes=MB)
        # Assert: refused on the root's declared size: no leaf written, nothing pinned
        assert "error" in result and f"over the {MB}-byte limit" in result["error"], result
        assert stored_bytes(tmp_path / "node1") < 64 * 1024
        assert "error" in c.call("get", cid=cid)


def test_a_dag_lying_about_its_size_stops_within_the_limit(tmp_path: Path) -> None:
    # Prepare: a root that declares 800 bytes over eight leaves of 1 MB each, in A's blockstore
    (tmp_path / "node0").mkdir()
    hostile = EmbeddedStorage(tmp_path / "node0" / "ipfs", fsync=False)
    leaves = [random.Random(i).randbytes(MB) for i in range(8)]
    links = []
    for leaf in leaves:
        leaf_cid = Cid(1, CODEC_RAW, hashlib.sha256(leaf).digest())
        hostile.put_block(str(leaf_cid), leaf)
        links.append(encode_link(leaf_cid.to_bytes(), len(leaf)))
    root_block = encode_node(links, encode_unixfs_file(800, [100] * 8))
    root = str(Cid(1, CODEC_DAG_PB, hashlib.sha256(root_block).digest()))
    hostile.put_block(root, root_block)
    hostile.pin(root)
    with peer_processes(tmp_path, (), ()) as (a, c):
        c.call("connect", addr=a.addr)
        # Execute: C may take 512 KB
        result = c.call("fetch", cid=root, providers=[a.peer_id], max_bytes=512 * 1024)
        # Assert: stopped at the first leaf that broke the budget; not one leaf written
        assert "error" in result and "over the 524288-byte limit" in result["error"], result
        assert stored_bytes(tmp_path / "node1") < 64 * 1024
        assert "error" in c.call("get", cid=root)
