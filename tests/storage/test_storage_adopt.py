"""The in-process network (node/sim/simulate.py `local_or_peers`): each block hashed once per
fetch, and a peer's verified block files hard-linked into the receiving store, not copied (#15)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from node.errors import IntegrityError, StorageError
from node.sim.simulate import local_or_peers
from node.storage import EmbeddedStorage, parse_cid


def pattern(n: int) -> bytes:
    return bytes((i * 131 + i // 251) % 256 for i in range(n))


def block_files(store: EmbeddedStorage) -> list[Path]:
    return sorted(p for p in store.blocks_dir.rglob("*") if p.is_file())


def test_a_fetch_links_the_peers_block_files_and_reads_back(tmp_path: Path) -> None:
    peer, local = EmbeddedStorage(tmp_path / "peer", fsync=False), EmbeddedStorage(tmp_path / "local", fsync=False)
    data = pattern(3 * 256 * 1024 + 17)  # several leaves and a root
    cid = peer.put(data)

    assert local_or_peers(cid, local, [local, peer]) == data

    ours, theirs = block_files(local), block_files(peer)
    assert [p.name for p in ours] == [p.name for p in theirs] and len(ours) > 1
    assert all(a.stat().st_ino == b.stat().st_ino for a, b in zip(ours, theirs))
    assert local.is_pinned(cid) and local.get(cid) == data


def test_a_corrupt_peer_block_is_refused_and_nothing_is_adopted(tmp_path: Path) -> None:
    peer, local = EmbeddedStorage(tmp_path / "peer", fsync=False), EmbeddedStorage(tmp_path / "local", fsync=False)
    cid = peer.put(pattern(2 * 256 * 1024))
    leaf = next(p for p in block_files(peer) if p.stat().st_size == 256 * 1024)
    os.replace(leaf, leaf.with_suffix(".bak"))  # never written in place: a new file under the name
    leaf.write_bytes(b"\x00" * (256 * 1024))

    with pytest.raises(IntegrityError):
        local_or_peers(cid, local, [local, peer])

    assert block_files(local) == []
    assert not local.is_pinned(cid)


def test_get_block_unverified_is_only_for_readers_that_hash(tmp_path: Path) -> None:
    store = EmbeddedStorage(tmp_path / "s", fsync=False)
    cid = store.put(b"hello")
    path = store._block_path(parse_cid(cid))
    os.replace(path, path.with_suffix(".bak"))
    path.write_bytes(b"hellp")

    assert store.get_block(cid, verify=False) == b"hellp"
    with pytest.raises(IntegrityError):
        store.get_block(cid)


def test_adopting_from_a_durable_store_copies(tmp_path: Path) -> None:
    peer, local = EmbeddedStorage(tmp_path / "peer", fsync=True), EmbeddedStorage(tmp_path / "local", fsync=True)
    data = pattern(300 * 1024)
    cid = peer.put(data)

    assert local_or_peers(cid, local, [peer]) == data

    assert all(a.stat().st_ino != b.stat().st_ino for a, b in zip(block_files(local), block_files(peer)))
    assert EmbeddedStorage(tmp_path / "local").get(cid) == data  # durable: there after reopening


def test_a_block_no_peer_holds_is_a_storage_error(tmp_path: Path) -> None:
    peer, local = EmbeddedStorage(tmp_path / "peer", fsync=False), EmbeddedStorage(tmp_path / "local", fsync=False)
    cid = peer.put(pattern(1000))

    with pytest.raises(StorageError, match="no peer holds"):
        local_or_peers(cid, local, [local])
