"""The kubo backend against a real IPFS RPC daemon: same bytes -> same CID as the embedded store, at every size;
single blocks from peers verified before the daemon stores them."""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.abc import BlockStore, Storage
from node.errors import IntegrityError, StorageError
from node.storage import EmbeddedStorage, build_dag, cid_of, parse_cid
from node.storage.kubo import KuboStorage

from tests.storage.jsipfs_daemon import jsipfs_daemon

pytestmark = pytest.mark.slow

C = 262144
# Empty, 1 byte, exactly one chunk, one byte more, a few chunks, and past 174
# chunks (a second level of the balanced DAG; plus a partial last chunk).
SIZES = [0, 1, C, C + 1, 5 * C + 17, 175 * C + 1, 349 * C + 7]
REFERENCE_V0 = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
REFERENCE_V1 = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"


def payload(n: int) -> bytes:
    # Random, so no two chunks coincide and a layout error cannot hide behind deduplication.
    return os.urandom(n)


@pytest.fixture(scope="module")
def kubo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KuboStorage]:
    with jsipfs_daemon(tmp_path_factory.mktemp("jsipfs")) as api:
        store = KuboStorage(api)
        try:
            yield store
        finally:
            store.close()


def test_is_a_block_store(kubo: KuboStorage) -> None:
    assert isinstance(kubo, Storage) and isinstance(kubo, BlockStore)


def test_reference_vectors(kubo: KuboStorage) -> None:
    # Prepare / Execute
    v1 = kubo.put(b"hello world\n")
    v0 = kubo.put(b"hello world\n", cid_version=0)
    # Assert: the CIDs kubo, js-ipfs and ipfs_cid agree on (DEPENDENCIES.md)
    assert (v0, v1) == (REFERENCE_V0, REFERENCE_V1)


@pytest.mark.parametrize("version", [1, 0])
@pytest.mark.parametrize("size", SIZES)
def test_same_cid_as_embedded_and_round_trip(kubo: KuboStorage, tmp_path: Path, size: int, version: int) -> None:
    # Prepare
    data = payload(size)
    embedded = EmbeddedStorage(tmp_path / "e", fsync=False)
    # Execute
    via_daemon = kubo.put(data, cid_version=version)
    via_embedded = embedded.put(data, cid_version=version)
    # Assert: one CID for the same bytes, and the daemon's blocks are exactly ours
    assert via_daemon == via_embedded == cid_of(data, version)
    root, blocks = build_dag(data, version)
    for cid in list(blocks)[:3] + [root]:
        assert kubo.get_block(cid) == blocks[cid]
    assert kubo.get(via_daemon) == data
    assert kubo.has(via_daemon)


def test_daemon_with_other_layout_is_refused(kubo: KuboStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: a daemon that ignores raw-leaves (CIDv1 over dag-pb leaves is not `ipfs add --cid-version=1`)
    data = payload(3 * C)
    real_add = kubo._client.add_bytes

    def add_without_raw_leaves(body: bytes, opts: dict[str, str]) -> object:
        return real_add(body, opts={**opts, "raw-leaves": "false"})

    monkeypatch.setattr(kubo._client, "add_bytes", add_without_raw_leaves)
    # Execute / Assert
    with pytest.raises(StorageError, match="chunker or DAG layout differs"):
        kubo.put(data)


def test_corrupt_block_from_daemon_is_refused(kubo: KuboStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: a daemon that flips one byte of every block it returns
    data = payload(2 * C + 5)
    cid = kubo.put(data)
    real = kubo._get_block

    def corrupting(c: str, *, offline: bool) -> bytes:
        block = bytearray(real(c, offline=offline))
        block[-1] ^= 1
        return bytes(block)

    monkeypatch.setattr(kubo, "_get_block", corrupting)
    # Execute / Assert: the mismatch is an error naming a CID, never silent
    with pytest.raises(StorageError, match="does not match its CID"):
        kubo.get(cid)


def test_pin_unpin_and_missing(kubo: KuboStorage) -> None:
    data = payload(1000)
    cid = kubo.put(data)
    kubo.unpin(cid)
    kubo.unpin(cid)  # a second unpin is a no-op
    kubo.pin(cid)
    assert kubo.has(cid)
    absent_leaf = cid_of(b"never added " + os.urandom(16))
    assert not kubo.has(absent_leaf)
    # A root the daemon holds whose child it does not: has() must follow links, not stop at the root
    root, blocks = build_dag(payload(2 * C))
    kubo._call("block put", kubo._client.block.put, io.BytesIO(blocks[root]), opts={"format": "dag-pb", "mhtype": "sha2-256"})
    assert not kubo.has(root)


def test_unreachable_daemon_is_a_storage_error() -> None:
    store = KuboStorage("/ip4/127.0.0.1/tcp/1/http", timeout=5)
    with pytest.raises(StorageError, match="IPFS daemon at"):
        store.put(b"x")


def test_cli_add_and_get_through_kubo(kubo: KuboStorage, tmp_path: Path) -> None:
    from tests.conftest import run_cli

    # Prepare
    src = tmp_path / "in.bin"
    src.write_bytes(payload(C + 3))
    # Execute
    added = run_cli("ipfs", "add", str(src), "--backend", "kubo", "--api", kubo.api_addr)
    got = run_cli("ipfs", "get", added.stdout.strip(), "--out", str(tmp_path / "out.bin"), "--backend", "kubo", "--api", kubo.api_addr)
    wrong = run_cli("ipfs", "add", str(src), "--api", kubo.api_addr)
    # Assert
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == cid_of(src.read_bytes())
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "out.bin").read_bytes() == src.read_bytes()
    assert wrong.returncode == 1 and "--api is for --backend kubo" in wrong.stderr


# --- single blocks (node.abc.BlockStore): what the block exchange with peers uses ------------


@pytest.mark.parametrize("version", [1, 0])
def test_blocks_put_one_by_one_make_the_file(kubo: KuboStorage, version: int) -> None:
    # Prepare: a DAG the daemon has never seen, as a fetch from a peer delivers it (root first)
    data = payload(3 * C + 11)
    root, blocks = build_dag(data, version)
    # Execute
    for cid, block in blocks.items():
        kubo.put_block(cid, block, source="peer-12D3KooWgood")
    kubo.pin(root)
    # Assert: every block is held under the CID it was sent for, and the file reads back whole
    assert all(kubo.get_block(cid) == block for cid, block in blocks.items())
    assert kubo.has(root) and kubo.get(root) == data


def test_forged_block_is_refused_before_the_daemon_sees_it(kubo: KuboStorage) -> None:
    # Prepare
    root, blocks = build_dag(payload(2 * C + 3))
    leaf = next(c for c in blocks if c != root)
    forged = b"forged" + blocks[leaf][6:]
    # Execute
    with pytest.raises(IntegrityError) as err:
        kubo.put_block(leaf, forged, source="peer-12D3KooWevil")
    # Assert: the error names the block and the peer; the daemon holds neither the leaf nor the forgery
    assert leaf in str(err.value) and "peer-12D3KooWevil" in str(err.value)
    held = kubo._local_digests()
    assert parse_cid(leaf).digest not in held and hashlib.sha256(forged).digest() not in held


def test_block_stored_under_another_cid_is_refused(kubo: KuboStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: a daemon that files every block as dag-pb, whatever it is asked for (seam on the RPC call)
    root, blocks = build_dag(payload(2 * C))
    leaf = next(c for c in blocks if c != root)
    real_put = kubo._client.block.put

    def put_as_dag_pb(body: io.BytesIO, opts: dict[str, str]) -> object:
        return real_put(body, opts={**opts, "format": "dag-pb"})

    monkeypatch.setattr(kubo._client.block, "put", put_as_dag_pb)
    # Execute / Assert: same digest, other codec: not the block the peer sent
    with pytest.raises(StorageError, match="not the raw sha2-256 block"):
        kubo.put_block(leaf, blocks[leaf])


def test_absent_block_is_an_error_within_the_local_timeout(kubo: KuboStorage) -> None:
    # Prepare: js-ipfs waits for the network for a block it lacks, offline or not
    store = KuboStorage(kubo.api_addr, local_timeout=1)
    absent = cid_of(b"never added " + os.urandom(16))
    # Execute
    start = time.monotonic()
    with pytest.raises(StorageError, match="block get"):
        store.get_block(absent)
    waited = time.monotonic() - start
    # Assert: the RPC's timeout ended it, not the 120 s of the HTTP client
    assert waited < 10


def test_get_block_verifies_what_the_daemon_returns(kubo: KuboStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: a daemon that flips one byte of every block it returns
    cid = kubo.put(payload(100))
    real = kubo._get_block

    def corrupting(c: str, *, offline: bool) -> bytes:
        block = bytearray(real(c, offline=offline))
        block[0] ^= 1
        return bytes(block)

    monkeypatch.setattr(kubo, "_get_block", corrupting)
    # Execute / Assert: a block rotten on the daemon is never handed to a peer
    with pytest.raises(IntegrityError, match="does not match its CID"):
        kubo.get_block(cid)
