"""The embedded blockstore's put path: leaves shared with helper threads, its errors, fork safety."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
from pathlib import Path

import pytest

import node.storage.durable as durable
import node.storage.embedded as embedded
import node.storage.parallel as parallel
from node.storage import EmbeddedStorage, cid_of

C = 262144

# CIDs of pattern(175 * C + 1): a two-level tree (174 + 2 leaves under two internal nodes).
# v0 is kubo's (as in test_storage_unixfs.GOLDEN_V0), v1 this importer's regression value.
TWO_LEVEL = 175 * C + 1
TWO_LEVEL_CIDS = {
    0: "QmfSNfmSo1Gg885jm8qFWAEe14nkjYc7bXgXjuvKWjVoKw",
    1: "bafybeihzhgkxa5ea4r5cr73r73tsf3ppwpstcxnsuyqxio3vy7xpikkhmi",
}


def pattern(n: int, salt: int = 0) -> bytes:
    """Deterministic bytes; different salts give different chunks."""
    ramp = bytes((i + salt) % 256 for i in range(251))
    return (ramp * (n // 251 + 1))[:n]


_TWO_HELPERS: parallel.Helpers | None = None


@pytest.fixture
def helpers(monkeypatch: pytest.MonkeyPatch) -> parallel.Helpers:
    """Puts run with two helper threads whatever the CPU count (one shared set for this module)."""
    global _TWO_HELPERS
    monkeypatch.setattr(parallel, "_helper_count", lambda: 2)
    if _TWO_HELPERS is None or not all(t.is_alive() for t in _TWO_HELPERS.threads):
        _TWO_HELPERS = parallel.Helpers()
    monkeypatch.setattr(parallel, "HELPERS", _TWO_HELPERS)
    return _TWO_HELPERS


def leaf_threads(monkeypatch: pytest.MonkeyPatch, *, main_delay: float = 0.002) -> list[str]:
    """Record which thread makes each leaf; the calling thread is slowed so helpers surely claim some."""
    names: list[str] = []
    real = embedded.leaf_block

    def recording(view, offset, cid_version):  # type: ignore[no-untyped-def]
        thread = threading.current_thread()
        names.append(thread.name)
        if thread is threading.main_thread():
            threading.Event().wait(main_delay)
        return real(view, offset, cid_version)

    monkeypatch.setattr(embedded, "leaf_block", recording)
    return names


def blocks_match_their_names(store: EmbeddedStorage) -> bool:
    """Every block file on disk holds bytes that hash to its name (no torn or partial block)."""
    files = [p for p in store.blocks_dir.rglob("*") if p.is_file()]
    return all(hashlib.sha256(p.read_bytes()).hexdigest() == p.name for p in files)


@pytest.mark.parametrize("fsync", [False, True])
@pytest.mark.parametrize("version", [0, 1])
def test_a_shared_put_of_a_two_level_tree_gives_the_same_cids(
    tmp_path: Path, helpers: parallel.Helpers, version: int, fsync: bool
) -> None:
    # Prepare
    data = pattern(TWO_LEVEL)
    store = EmbeddedStorage(tmp_path / "s", fsync=fsync)

    # Execute
    cid = store.put(data, cid_version=version)

    # Assert
    assert cid == TWO_LEVEL_CIDS[version] == cid_of(data, version)
    assert store.get(cid) == data and store.pins() == [cid]
    assert list(store.root.rglob(".tmp-*")) == []


def test_helpers_really_take_leaves(tmp_path: Path, helpers: parallel.Helpers, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare
    names = leaf_threads(monkeypatch)
    data = pattern(24 * C + 3, salt=1)
    store = EmbeddedStorage(tmp_path / "s", fsync=False)

    # Execute
    cid = store.put(data)

    # Assert: every leaf made once, some by helpers, and the result is the same
    assert len(names) == 25
    assert any(name.startswith("blockstore-helper-") for name in names)
    assert cid == cid_of(data) and store.get(cid) == data


@pytest.mark.parametrize("fsync", [False, True])
@pytest.mark.parametrize("failing", ["helper", "caller"])
def test_a_failed_write_reaches_the_caller_and_leaves_no_partial_block(
    tmp_path: Path, helpers: parallel.Helpers, monkeypatch: pytest.MonkeyPatch, failing: str, fsync: bool
) -> None:
    # Prepare: a leaf written by the chosen thread (a helper's third, the caller's first) gets half
    # its bytes in, then the disk fills. The caller is slowed when helpers are to fail, so they work.
    leaf_threads(monkeypatch, main_delay=0.002 if failing == "helper" else 0.0)
    fail_at = 3 if failing == "helper" else 1
    store = EmbeddedStorage(tmp_path / "s", fsync=fsync)
    kept = store.put(pattern(2 * C + 5, salt=7))
    real_write = os.write
    calls = [0]

    def half_then_full(fd: int, data) -> int:  # type: ignore[no-untyped-def]
        on_helper = threading.current_thread() is not threading.main_thread()
        if on_helper == (failing == "helper") and len(data) == C:
            calls[0] += 1
            if calls[0] == fail_at:
                real_write(fd, memoryview(data)[: len(data) // 2])
                raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", half_then_full)
    data = pattern(24 * C, salt=8)

    # Execute
    with pytest.raises(OSError, match="No space left"):
        store.put(data)
    monkeypatch.setattr(os, "write", real_write)

    # Assert: nothing torn, nothing left over, nothing new pinned, and the store still works
    assert calls[0] >= fail_at  # the failure happened on the chosen thread
    assert list(store.root.rglob(".tmp-*")) == []
    assert blocks_match_their_names(store)
    assert store.pins() == [kept]
    cid = store.put(data)
    assert store.get(cid) == data and store.get(kept) == pattern(2 * C + 5, salt=7)


def test_an_interrupted_put_stops_the_helpers_and_pins_nothing(
    tmp_path: Path, helpers: parallel.Helpers, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: the calling thread is interrupted at its second leaf (as by Ctrl-C)
    real = embedded.leaf_block
    count = [0]

    def interrupted(view, offset, cid_version):  # type: ignore[no-untyped-def]
        if threading.current_thread() is threading.main_thread():
            count[0] += 1
            if count[0] == 2:
                raise KeyboardInterrupt
        return real(view, offset, cid_version)

    monkeypatch.setattr(embedded, "leaf_block", interrupted)
    store = EmbeddedStorage(tmp_path / "s", fsync=True)

    # Execute
    with pytest.raises(KeyboardInterrupt):
        store.put(pattern(40 * C, salt=9))

    # Assert: the helpers were waited for, so nothing they wrote is left as debris
    assert list(store.root.rglob(".tmp-*")) == []
    assert store.pins() == [] and blocks_match_their_names(store)


def test_put_holds_no_reference_to_the_callers_buffer(tmp_path: Path, helpers: parallel.Helpers) -> None:
    # A bytearray cannot be resized while any memoryview of it is alive (BufferError).
    store = EmbeddedStorage(tmp_path / "s", fsync=False)
    for salt in range(20):
        data = bytearray(pattern(5 * C + 1, salt=salt))
        cid = store.put(data)  # type: ignore[arg-type]
        data.extend(b"more")  # raises BufferError if a helper still holds a slice
        assert store.get(cid) == bytes(data[:-4])


def test_a_forked_child_starts_its_own_helpers(
    tmp_path: Path, helpers: parallel.Helpers, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: helpers running in the parent
    names = leaf_threads(monkeypatch)
    parent_store = EmbeddedStorage(tmp_path / "parent", fsync=False)
    parent_store.put(pattern(6 * C, salt=1))
    parent_threads = list(helpers.threads)
    parent_tag = durable._tmp_tag
    assert parent_threads and all(t.is_alive() for t in parent_threads)
    names.clear()

    # Execute: the child puts (its copies of the parent's threads are gone)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        code = 10
        try:
            signal.alarm(60)
            child = EmbeddedStorage(tmp_path / "child", fsync=False)
            data = pattern(8 * C, salt=2)
            cid = child.put(data)
            fresh = parallel.HELPERS.threads
            if child.get(cid) != data or cid != cid_of(data):
                code = 11
            elif not fresh or any(t in parent_threads for t in fresh) or not all(t.is_alive() for t in fresh):
                code = 12
            elif not any(n.startswith("blockstore-helper-") for n in names):
                code = 13
            elif durable._tmp_tag == parent_tag:
                code = 14
            else:
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)

    # Assert: the child succeeded, and the parent's helpers still serve the parent
    assert os.waitstatus_to_exitcode(status) == 0
    data = pattern(6 * C, salt=3)
    assert parent_store.get(parent_store.put(data)) == data
    assert helpers.threads == parent_threads


def test_no_helpers_on_one_cpu_means_an_inline_put(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare
    monkeypatch.setattr(parallel, "_helper_count", lambda: 0)
    monkeypatch.setattr(parallel, "HELPERS", parallel.Helpers())
    names = leaf_threads(monkeypatch, main_delay=0)
    data = pattern(5 * C + 2, salt=4)
    store = EmbeddedStorage(tmp_path / "s", fsync=False)

    # Execute
    cid = store.put(data)

    # Assert
    assert set(names) == {threading.main_thread().name} and len(names) == 6
    assert parallel.HELPERS.threads == [] and store.get(cid) == data


def test_a_removed_shard_directory_is_recreated(tmp_path: Path) -> None:
    # Prepare
    store = EmbeddedStorage(tmp_path / "s", fsync=True)
    data = pattern(C, salt=5)
    digest = hashlib.sha256(data).hexdigest()
    (store.blocks_dir / digest[:1]).rmdir()

    # Execute
    cid = store.put(data)

    # Assert
    assert store.get(cid) == data and (store.blocks_dir / digest[:1] / digest).is_file()


def test_reopening_creates_only_missing_shards_and_reads_old_stores(tmp_path: Path) -> None:
    # Prepare: a store, then one of its shard directories gone (as an older or partial layout)
    store = EmbeddedStorage(tmp_path / "s", fsync=False)
    cid = store.put(pattern(3 * C, salt=6))
    empty = next(d for d in sorted(store.blocks_dir.iterdir()) if not any(d.iterdir()))
    empty.rmdir()

    # Execute
    reopened = EmbeddedStorage(tmp_path / "s", fsync=False)

    # Assert
    assert empty.is_dir() and len(list(reopened.blocks_dir.iterdir())) == 16
    assert reopened.get(cid) == pattern(3 * C, salt=6)


def _old_layout(root: Path) -> tuple[str, str, list[str]]:
    """A store at `root` laid out as blocks/<2 hex>/<digest> (the layout before 16 shards): a pinned
    DAG and an unpinned block. Returns (pinned CID, unpinned CID, every block's digest)."""
    store = EmbeddedStorage(root, fsync=False)
    cid = store.put(pattern(5 * C + 3, salt=12))
    loose = store.put(pattern(100, salt=13))
    store.unpin(loose)
    digests = sorted(path.name for path in store.blocks_dir.rglob("*") if path.is_file())
    for name in digests:
        old_dir = store.blocks_dir / name[:2]
        old_dir.mkdir(exist_ok=True)
        (store.blocks_dir / name[:1] / name).rename(old_dir / name)
    for shard in store.blocks_dir.iterdir():
        if len(shard.name) == 1:
            shard.rmdir()
    return cid, loose, digests


def test_a_store_in_the_old_two_hex_layout_is_moved_into_the_sixteen_shards(tmp_path: Path) -> None:
    # Prepare: the old layout, with a stale and a young temporary file and a foreign file in it
    cid, loose, digests = _old_layout(tmp_path / "s")
    blocks_dir = tmp_path / "s" / "blocks"
    stale_dir, young_dir = blocks_dir / digests[0][:2], blocks_dir / digests[1][:2]
    (stale_dir / ".tmp-stale").write_bytes(b"half a block")
    os.utime(stale_dir / ".tmp-stale", (1, 1))
    (young_dir / ".tmp-young").write_bytes(b"being written")
    (young_dir / "notes.txt").write_bytes(b"not ours")

    # Execute
    reopened = EmbeddedStorage(tmp_path / "s", fsync=True)

    # Assert: every block in its new shard, the old directories gone but for the one still holding
    # files that are not blocks; pins and gc work as before
    assert sorted(path.name for path in reopened.blocks_dir.glob("?/*")) == digests
    left = sorted(path.name for path in reopened.blocks_dir.iterdir() if len(path.name) == 2)
    assert left == [young_dir.name] and (stale_dir == young_dir or not stale_dir.exists())
    assert not (stale_dir / ".tmp-stale").exists()
    assert sorted(path.name for path in young_dir.iterdir()) == [".tmp-young", "notes.txt"]
    assert reopened.get(cid) == pattern(5 * C + 3, salt=12) and reopened.pins() == [cid]
    assert reopened.gc() == 1 and not reopened.has(loose) and reopened.get(cid) == pattern(5 * C + 3, salt=12)
    assert EmbeddedStorage(tmp_path / "s").get(cid) == pattern(5 * C + 3, salt=12)


def test_opening_an_old_store_tolerates_another_opener_moving_its_blocks_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: the old layout, and a rename that lets another opener migrate the whole store just
    # before this one moves its first block (as two processes opening it at once could)
    cid, _, digests = _old_layout(tmp_path / "s")
    real_replace = os.replace
    raced: list[bool] = []

    def replace(src: str | Path, dst: str | Path) -> None:
        if not raced and "/blocks/" in str(src) and len(Path(src).parent.name) == 2:
            raced.append(True)
            EmbeddedStorage(tmp_path / "s", fsync=False)  # the other opener: moves every block
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)

    # Execute
    store = EmbeddedStorage(tmp_path / "s", fsync=True)

    # Assert: this open found every block gone from under it, and the store is whole
    assert raced == [True]
    assert sorted(path.name for path in store.blocks_dir.glob("?/*")) == digests
    assert [path.name for path in store.blocks_dir.iterdir() if len(path.name) == 2] == []
    assert store.get(cid) == pattern(5 * C + 3, salt=12)


def test_an_unknown_cid_version_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    store = EmbeddedStorage(tmp_path / "s", fsync=False)

    with pytest.raises(ValueError, match="cid_version"):
        store.put(pattern(3 * C), cid_version=2)

    assert [p for p in store.blocks_dir.rglob("*") if p.is_file()] == [] and store.pins() == []


# --- the durable put: order of flushes ------------------------------------------------------


def test_a_durable_put_orders_data_flush_renames_name_flush_then_the_pin(
    tmp_path: Path, helpers: parallel.Helpers, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: record the flush, every rename and every directory fsync, from any thread
    events: list[tuple[str, str]] = []
    lock = threading.Lock()
    real_syncfs, real_fsync_dir, real_replace = durable.syncfs, durable.fsync_dir, os.replace
    written_back: list[int] = []
    real_writeback = durable.start_writeback

    def record(kind: str, what: str) -> None:
        with lock:
            events.append((kind, what))

    monkeypatch.setattr(durable, "syncfs", lambda path: (record("syncfs", str(path)), real_syncfs(path))[1])
    monkeypatch.setattr(durable, "fsync_dir", lambda path: (record("fsync_dir", str(path)), real_fsync_dir(path))[1])
    monkeypatch.setattr(os, "replace", lambda src, dst: (record("rename", str(dst)), real_replace(src, dst))[1])
    monkeypatch.setattr(durable, "start_writeback", lambda fd: (written_back.append(fd), real_writeback(fd))[1])
    store = EmbeddedStorage(tmp_path / "s", fsync=True)
    events.clear()
    data = pattern(12 * C + 1, salt=10)

    # Execute
    cid = store.put(data)

    # Assert: a flush first (the blocks' bytes), then the blocks' renames, then a second flush (their
    # names), then the pin's rename and its directory: no pin is durable before its blocks are
    kinds = [kind for kind, _ in events]
    pin_rename = events.index(("rename", str(store.pins_dir / cid)))
    block_renames = [i for i, (kind, what) in enumerate(events) if kind == "rename" and "/blocks/" in what]
    flushes = [i for i, kind in enumerate(kinds) if kind == "syncfs"]
    assert len(block_renames) == 14 and len(flushes) == 2
    assert flushes[0] == 0 and flushes[0] < min(block_renames) and max(block_renames) < flushes[1] < pin_rename
    assert "fsync_dir" not in kinds[:pin_rename]  # many shard directories: the second flush covers them
    assert events[pin_rename + 1 :] == [("fsync_dir", str(store.pins_dir))]
    assert len(written_back) == 14  # every block's writeback started before the flush
    assert EmbeddedStorage(tmp_path / "s").get(cid) == data


def test_a_durable_put_works_without_sync_file_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(durable, "_SYNC_FILE_RANGE", None)
    store = EmbeddedStorage(tmp_path / "s", fsync=True)

    cid = store.put(pattern(5 * C, salt=11))

    assert store.get(cid) == pattern(5 * C, salt=11) and store.pins() == [cid]
