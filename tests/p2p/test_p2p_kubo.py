"""A node whose blocks live in a real IPFS daemon (js-ipfs, through KuboStorage) exchanging DAGs over
libp2p with a node on the embedded blockstore, both ways, every block verified (SPEC §6: mixed backends).

Both nodes run in this process, each with its own libp2p host; the bytes go over loopback TCP.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio

from node.p2p import FetchError, P2PConfig, P2PNode
from node.storage import EmbeddedStorage, KuboStorage, build_dag, cid_of, parse_cid

from tests.storage.jsipfs_daemon import jsipfs_daemon

pytestmark = pytest.mark.slow
MB = 1024 * 1024


@pytest.fixture(scope="module")
def kubo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KuboStorage]:
    with jsipfs_daemon(tmp_path_factory.mktemp("jsipfs")) as api:
        store = KuboStorage(api, local_timeout=2)
        try:
            yield store
        finally:
            store.close()


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def run_pair(
    tmp_path: Path,
    kubo: KuboStorage,
    embedded: EmbeddedStorage,
    body: Callable[[P2PNode, P2PNode], object],
    *,
    direct: bool = True,
    embedded_source: Callable[[str], bytes] | None = None,
) -> object:
    """Start a kubo-backed and an embedded node, connect them, run `await body(k, e)`, stop both."""

    async def main() -> object:
        config = dict(direct_transfer=direct, stall_timeout=5.0)
        k = P2PNode(P2PConfig(tmp_path / "k", **config), kubo, lambda peer: True)
        e = P2PNode(P2PConfig(tmp_path / "e", **config), embedded, lambda peer: True, block_source=embedded_source)
        async with trio.open_nursery() as nursery:
            await nursery.start(k.run)
            await nursery.start(e.run)
            await k.connect(e.addrs[0])
            try:
                return await body(k, e)
            finally:
                nursery.cancel_scope.cancel()

    return trio.run(main)


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "inline"])
def test_kubo_node_serves_and_fetches(tmp_path: Path, kubo: KuboStorage, direct: bool) -> None:
    # Prepare: each side holds an update the other lacks (3 MB + 5: 13 leaves and a root)
    embedded = EmbeddedStorage(tmp_path / "ipfs", fsync=False)
    from_kubo, from_embedded = payload(3 * MB + 5, 1 + direct), payload(3 * MB + 5, 3 + direct)
    in_kubo, in_embedded = kubo.put(from_kubo), embedded.put(from_embedded)

    async def exchange(k: P2PNode, e: P2PNode) -> tuple[list, list]:
        return await e.fetch(in_kubo, [k.peer_id]), await k.fetch(in_embedded, [e.peer_id])

    # Execute
    faults = run_pair(tmp_path, kubo, embedded, exchange, direct=direct)
    # Assert: no faults; each side now holds (and has pinned) the other's bytes
    assert faults == ([], [])
    assert embedded.get(in_kubo) == from_kubo and embedded.is_pinned(in_kubo)
    assert kubo.has(in_embedded) and kubo.get(in_embedded) == from_embedded
    pinned = kubo._call("pin ls", kubo._client.pin.ls, type="recursive")["Keys"]
    assert in_embedded in {str(parse_cid(text)) for text in pinned}


def test_corrupt_blocks_from_a_peer_never_reach_the_daemon(tmp_path: Path, kubo: KuboStorage) -> None:
    # Prepare: the embedded node flips one bit in every leaf it serves
    embedded = EmbeddedStorage(tmp_path / "ipfs", fsync=False)
    data = payload(2 * MB + 7, 5)
    cid = embedded.put(data)

    def corrupting(block_cid: str) -> bytes:
        block = embedded.get_block(block_cid)
        return block[:-1] + bytes([block[-1] ^ 1]) if block_cid.startswith("bafkrei") else block

    async def fetch(k: P2PNode, e: P2PNode) -> FetchError:
        with pytest.raises(FetchError) as err:
            await k.fetch(cid, [e.peer_id])
        return err.value

    # Execute
    error = run_pair(tmp_path, kubo, embedded, fetch, embedded_source=corrupting)
    # Assert: a corrupt fault (the block was refused before the daemon saw it), and the daemon holds
    # no forged block and no leaf: at most the root, which came through intact
    assert [f.kind for f in error.faults] == ["corrupt"] and "does not match its CID" in error.faults[0].error
    _, blocks = build_dag(data)
    leaves = [c for c in blocks if c.startswith("bafkrei")]
    forged = {hashlib.sha256(corrupting(c)).digest() for c in leaves}
    held = kubo._local_digests()
    assert not held & forged and not any(parse_cid(c).digest in held for c in leaves)
    assert not kubo.has(cid)


def test_kubo_node_refuses_what_it_does_not_hold_promptly(tmp_path: Path, kubo: KuboStorage) -> None:
    # Prepare: a CID nobody holds (js-ipfs would wait for the network; the local timeout ends the wait)
    embedded = EmbeddedStorage(tmp_path / "ipfs", fsync=False)
    absent = cid_of(b"held by nobody " + payload(16, 9))

    async def fetch(k: P2PNode, e: P2PNode) -> tuple[FetchError, float]:
        start = time.monotonic()
        with pytest.raises(FetchError) as err:
            await e.fetch(absent, [k.peer_id])
        return err.value, time.monotonic() - start

    # Execute
    error, waited = run_pair(tmp_path, kubo, embedded, fetch)
    # Assert: the provider said so (a protocol fault), well within the fetcher's stall timeout
    assert [f.kind for f in error.faults] == ["protocol"] and "refused" in error.faults[0].error
    assert waited < 5
