"""The embedded blockstore: round trips, verification of what is on disk, pins and gc, atomic writes, threads."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.abc import BlockStore, Storage
from node.errors import IntegrityError, StorageError
from node.storage import EmbeddedStorage, build_dag, cid_of, parse_cid
from node.storage.unixfs import OverLimit

C = 262144


def pattern(n: int, salt: int = 0) -> bytes:
    """Deterministic bytes; different salts give different chunks."""
    ramp = bytes((i + salt) % 256 for i in range(251))
    return (ramp * (n // 251 + 1))[:n]


@pytest.fixture
def store(tmp_path: Path) -> EmbeddedStorage:
    # fsync off: these tests check atomicity and content, not power-loss durability.
    return EmbeddedStorage(tmp_path / "store", fsync=False)


def block_files(store: EmbeddedStorage) -> list[Path]:
    return [p for p in store.blocks_dir.rglob("*") if p.is_file()]


def test_satisfies_the_storage_protocol(store: EmbeddedStorage) -> None:
    # Assert: files for the node, single blocks for the exchange with peers
    assert isinstance(store, Storage) and isinstance(store, BlockStore)


@pytest.mark.parametrize("version", [0, 1])
@pytest.mark.parametrize("size", [0, 12, C, 3 * C + 7])
def test_put_returns_ipfs_add_cid_and_get_returns_the_bytes(store: EmbeddedStorage, size: int, version: int) -> None:
    # Prepare
    data = pattern(size)

    # Execute
    cid = store.put(data, cid_version=version)

    # Assert
    assert cid == cid_of(data, cid_version=version)
    assert store.get(cid) == data
    assert store.has(cid)
    assert store.is_pinned(cid)


def test_default_put_is_cidv1_and_hello_world_matches_kubo(store: EmbeddedStorage) -> None:
    # Execute
    cid = store.put(b"hello world\n")

    # Assert
    assert cid == "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"


def test_content_survives_reopening_the_directory(tmp_path: Path) -> None:
    # Prepare
    cid = EmbeddedStorage(tmp_path, fsync=True).put(pattern(2 * C + 1))

    # Execute
    reopened = EmbeddedStorage(tmp_path)

    # Assert
    assert reopened.get(cid) == pattern(2 * C + 1)
    assert reopened.pins() == [cid]


def test_corrupted_block_on_disk_raises_integrity_error_naming_its_cid(store: EmbeddedStorage) -> None:
    # Prepare
    data = pattern(3 * C)
    root, blocks = build_dag(data)
    store.put(data)
    victim = next(cid for cid in blocks if cid != root)
    path = store._block_path(parse_cid(victim))
    path.write_bytes(b"X" + path.read_bytes()[1:])

    # Execute
    with pytest.raises(IntegrityError) as via_get:
        store.get(root)
    with pytest.raises(IntegrityError) as via_block:
        store.get_block(victim)

    # Assert
    assert victim in str(via_get.value)
    assert victim in str(via_block.value)


def test_absent_content_raises_storage_error_and_has_is_false(store: EmbeddedStorage) -> None:
    # Prepare
    cid = cid_of(b"never stored")

    # Execute
    with pytest.raises(StorageError) as err:
        store.get(cid)

    # Assert
    assert cid in str(err.value)
    assert not store.has(cid)


def test_has_is_false_when_one_leaf_is_missing(store: EmbeddedStorage) -> None:
    # Prepare
    data = pattern(2 * C + 3)
    root, blocks = build_dag(data)
    store.put(data)
    store._block_path(parse_cid(next(c for c in blocks if c != root))).unlink()

    # Execute
    held = store.has(root)

    # Assert
    assert not held
    assert store.has_block(root)


def test_put_block_stores_verified_blocks_and_rejects_forgeries(store: EmbeddedStorage) -> None:
    # Prepare
    data = pattern(2 * C + 9, salt=3)
    root, blocks = build_dag(data)
    leaf = next(c for c in blocks if c != root)

    # Execute
    with pytest.raises(IntegrityError) as err:
        store.put_block(leaf, b"forged" + blocks[leaf][6:], source="peer-12D3KooWevil")
    forged_stored = store.has_block(leaf)
    for cid, block in blocks.items():
        store.put_block(cid, block, source="peer-12D3KooWgood")
    store.pin(root)

    # Assert
    assert leaf in str(err.value) and "peer-12D3KooWevil" in str(err.value)
    assert not forged_stored
    assert store.get(root) == data
    assert store.get_block(leaf) == blocks[leaf]
    assert store.gc() == 0


def test_pin_refuses_content_that_is_not_all_held(store: EmbeddedStorage) -> None:
    # Prepare
    root, blocks = build_dag(pattern(2 * C + 1))
    store.put_block(root, blocks[root])

    # Execute
    with pytest.raises(StorageError) as err:
        store.pin(root)

    # Assert
    assert "not held locally" in str(err.value)
    assert not store.is_pinned(root)


def test_malformed_cid_is_rejected_by_every_entry_point(store: EmbeddedStorage) -> None:
    # Prepare
    from node.errors import CIDError

    calls = [store.get, store.has, store.pin, store.unpin, store.get_block, store.has_block]

    # Execute / Assert
    for call in calls:
        with pytest.raises(CIDError, match="../etc"):
            call("../etc/passwd")


def test_gc_keeps_pinned_and_shared_blocks_and_removes_the_rest(store: EmbeddedStorage) -> None:
    # Prepare: two files sharing their first chunk; only `kept` stays pinned.
    shared = pattern(C, salt=1)
    kept_data = shared + pattern(C, salt=2)
    gone_data = shared + pattern(C + 5, salt=3)
    kept = store.put(kept_data)
    gone = store.put(gone_data)
    store.unpin(gone)
    before = len(block_files(store))

    # Execute
    removed = store.gc()

    # Assert: gone's root and its two own leaves go; the shared leaf stays.
    assert removed == 3
    assert len(block_files(store)) == before - 3
    assert store.get(kept) == kept_data
    assert not store.has(gone)
    assert store.gc() == 0


def test_unpin_twice_is_harmless_and_gc_then_empties_the_store(store: EmbeddedStorage) -> None:
    # Prepare
    cid = store.put(pattern(2 * C, salt=4), cid_version=0)

    # Execute
    store.unpin(cid)
    store.unpin(cid)
    removed = store.gc()

    # Assert
    assert removed == 3
    assert block_files(store) == []
    assert store.pins() == []


def test_gc_refuses_to_guess_when_a_pinned_node_is_unreadable(store: EmbeddedStorage) -> None:
    # Prepare
    cid = store.put(pattern(2 * C, salt=5))
    store.put(b"unpinned")
    store.unpin(cid_of(b"unpinned"))
    store._block_path(parse_cid(cid)).write_bytes(b"\x12\xff")
    count = len(block_files(store))

    # Execute
    with pytest.raises(StorageError) as err:
        store.gc()

    # Assert
    assert cid in str(err.value)
    assert len(block_files(store)) == count


def test_writes_leave_no_temporary_files(store: EmbeddedStorage) -> None:
    # Prepare
    data = pattern(5 * C + 1)

    # Execute
    cid = store.put(data)
    store.put(data)  # rewriting is a no-op

    # Assert
    leftovers = [p for p in store.root.rglob(".tmp-*")]
    assert leftovers == []
    assert len(block_files(store)) == 7
    assert (store.pins_dir / cid).read_text() == cid


def test_a_crash_mid_write_leaves_neither_a_partial_block_nor_a_temp_file(
    store: EmbeddedStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: os.replace fails as if the process died between write and rename.
    def crash(src: str, dst: str) -> None:
        raise OSError("simulated crash")

    monkeypatch.setattr(os, "replace", crash)
    data = pattern(2 * C)

    # Execute
    with pytest.raises(OSError, match="simulated crash"):
        store.put(data)

    # Assert
    assert list(store.root.rglob(".tmp-*")) == []
    assert block_files(store) == []
    assert store.pins() == []


def test_gc_sweeps_stale_temporary_files_only(store: EmbeddedStorage) -> None:
    # Prepare
    shard = store.blocks_dir / "a"
    stale, fresh = shard / ".tmp-stale", shard / ".tmp-fresh"
    stale.write_bytes(b"half a block")
    fresh.write_bytes(b"being written")
    os.utime(stale, (1, 1))

    # Execute
    removed = store.gc()

    # Assert: debris is not counted as a block
    assert removed == 0
    assert not stale.exists()
    assert fresh.exists()


def test_concurrent_readers_get_the_same_bytes(store: EmbeddedStorage) -> None:
    # Prepare
    data = pattern(4 * C + 11, salt=6)
    cid = store.put(data)
    results: list[bytes] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def reader() -> None:
        try:
            for _ in range(5):
                got = store.get(cid)
                with lock:
                    results.append(got)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(8)]

    # Execute
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # Assert
    assert errors == []
    assert len(results) == 40
    assert all(r == data for r in results)


def test_concurrent_puts_and_gc_never_lose_pinned_content(store: EmbeddedStorage) -> None:
    # Prepare
    payloads = [pattern(C + i, salt=i) for i in range(6)]
    cids: list[str] = []
    lock = threading.Lock()

    def writer(data: bytes) -> None:
        cid = store.put(data)
        with lock:
            cids.append(cid)

    threads = [threading.Thread(target=writer, args=(p,)) for p in payloads]
    threads.append(threading.Thread(target=store.gc))

    # Execute
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.gc()

    # Assert
    assert sorted(store.get(c) for c in cids) == sorted(payloads)


@settings(max_examples=25, deadline=None)
@given(st.binary(max_size=2 * C + 50), st.sampled_from([0, 1]))
def test_put_get_round_trips_random_bytes(data: bytes, version: int) -> None:
    # Prepare (a fresh directory per example: hypothesis reruns the body)
    with tempfile.TemporaryDirectory() as tmp:
        store = EmbeddedStorage(tmp, fsync=False)

        # Execute
        cid = store.put(data, cid_version=version)

        # Assert
        assert store.get(cid) == data
        assert cid == cid_of(data, version)


# --- durability, paid once per DAG ------------------------------------------------------


@pytest.fixture
def flushes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts the filesystem flushes of durable stores (the real syncfs still runs)."""
    import node.storage.durable as durable

    calls: list[str] = []
    real = durable.syncfs

    def counting(path: Path) -> bool:
        calls.append(str(path))
        return real(path)

    monkeypatch.setattr(durable, "syncfs", counting)
    return calls


def test_a_durable_put_flushes_once_for_the_whole_dag(tmp_path: Path, flushes: list[str]) -> None:
    store = EmbeddedStorage(tmp_path / "durable", fsync=True)
    cid = store.put(pattern(9 * C + 5))

    assert len(flushes) == 2  # eleven blocks: one flush for their bytes, one for their names
    assert list(store.root.rglob(".tmp-*")) == []
    assert len(block_files(store)) == 11 and store.pins() == [cid]
    assert EmbeddedStorage(tmp_path / "durable").get(cid) == pattern(9 * C + 5)


def test_a_one_block_durable_put_fsyncs_its_one_directory_instead_of_the_filesystem(
    tmp_path: Path, flushes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import node.storage.durable as durable

    dirs: list[str] = []
    real_fsync_dir = durable.fsync_dir
    monkeypatch.setattr(durable, "fsync_dir", lambda path: (dirs.append(str(path)), real_fsync_dir(path))[1])
    store = EmbeddedStorage(tmp_path / "durable", fsync=True)
    dirs.clear()

    cid = store.put(pattern(100, salt=4))

    (block,) = block_files(store)
    assert len(flushes) == 1  # the bytes; the one rename is made durable by its directory's fsync
    assert dirs == [str(block.parent), str(store.pins_dir)]
    assert EmbeddedStorage(tmp_path / "durable").get(cid) == pattern(100, salt=4)


def test_received_blocks_become_visible_and_durable_at_the_pin(tmp_path: Path, flushes: list[str]) -> None:
    # Prepare: the blocks of a DAG, as a peer would send them
    data = pattern(3 * C + 7, salt=3)
    root, blocks = build_dag(data)
    store = EmbeddedStorage(tmp_path / "durable", fsync=True)

    # Execute: receive every block, then pin the root
    for cid, block in blocks.items():
        store.put_block(cid, block, source="peer")
    visible_before_pin = [store.has_block(cid) for cid in blocks]
    store.pin(root)

    # Assert: nothing was visible (or flushed) before the pin; everything is afterwards
    assert visible_before_pin == [False] * len(blocks) and len(flushes) == 2  # bytes, then names
    assert store.get(root) == data and store.pins() == [root]
    assert list(store.root.rglob(".tmp-*")) == []


def test_without_syncfs_every_block_is_fsynced_instead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import node.storage.durable as durable

    monkeypatch.setattr(durable, "syncfs", lambda path: False)
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    dirs: list[str] = []
    real_fsync_dir = durable.fsync_dir
    monkeypatch.setattr(durable, "fsync_dir", lambda path: (dirs.append(str(path)), real_fsync_dir(path))[1])
    store = EmbeddedStorage(tmp_path / "durable", fsync=True)
    dirs.clear()

    cid = store.put(pattern(4 * C, salt=5))

    # four distinct leaves and the root, each fsynced before its rename; then every block's
    # directory, one by one, and the pin's
    assert len(synced) >= 5
    assert {str(path.parent) for path in block_files(store)} | {str(store.pins_dir)} == set(dirs)
    assert store.get(cid) == pattern(4 * C, salt=5)


def test_a_crash_before_the_renames_of_a_durable_put_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = EmbeddedStorage(tmp_path / "durable", fsync=True)
    kept = store.put(pattern(C + 1, salt=9))

    def crash(src: str, dst: str) -> None:
        raise OSError("simulated crash")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        store.put(pattern(3 * C, salt=11))
    monkeypatch.undo()

    assert list(store.root.rglob(".tmp-*")) == []
    assert store.pins() == [kept] and store.get(kept) == pattern(C + 1, salt=9)
    assert len(block_files(store)) == 3  # only the first put's blocks


@pytest.mark.parametrize("fsync", [False, True])
def test_a_failing_write_in_a_large_put_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsync: bool) -> None:
    # Large enough that the blocks are written by the put's writer thread while it hashes on.
    store = EmbeddedStorage(tmp_path / "s", fsync=fsync)
    calls = [0]
    real_replace = os.replace

    def fail_on_the_fifth(src: str, dst: str) -> None:
        calls[0] += 1
        if calls[0] == 5:
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_on_the_fifth)
    with pytest.raises(OSError, match="disk full"):
        store.put(pattern(12 * C, salt=13))
    monkeypatch.undo()

    assert store.pins() == [] and list(store.root.rglob(".tmp-*")) == []
    cid = store.put(pattern(12 * C, salt=13))  # and the store still works
    assert store.get(cid) == pattern(12 * C, salt=13)


def test_get_refuses_content_over_the_callers_limit_before_reading_it(store: EmbeddedStorage) -> None:
    # Prepare: 3 MB held; the caller (a task with max_update_bytes = 1 MB) may take 1 MB.
    # Before #14 (H7) get had no limit but a 4 GiB default, so the whole file was assembled.
    data = os.urandom(3 * 1024 * 1024)
    cid = store.put(data)
    _, blocks = build_dag(data)
    store._block_path(parse_cid(next(iter(blocks)))).unlink()  # the first leaf  # were any leaf read, this one would be missed
    # Execute / Assert: refused on the root's declared size, before any leaf is read
    with pytest.raises(OverLimit, match="over the 1048576-byte limit"):  # a StorageError
        store.get(cid, max_bytes=1024 * 1024)
    # and a limit the content fits under reads as before
    small = os.urandom(1000)
    assert store.get(store.put(small), max_bytes=1000) == small
