"""The embedded blockstore: the default `node.abc.Storage` backend, a directory of verified blocks.

Layout under `root_dir`:

    blocks/<1 hex>/<sha2-256 hex>   one file per block, named by its digest, in one of 16 shards
    pins/<CID text>                 one file per pinned root (content: the CID)

Sixteen shards, not kubo flatfs's 1024 or the 256 this store used to have: on
ext4 a put pays for every directory it touches, and a 64 MB put (256 leaves)
spread over 256 directories took about twice as long as over 16
(`scripts/bench_storage.py`; 4 or 8 shards were slower again, as the two
writing threads then queue on one directory's lock more often). A store in
the old `blocks/<2 hex>/` layout is moved into the new one when it is opened.

Blocks are keyed by digest, not by CID text, because the same bytes are one
block whatever CID version or codec names them (kubo's blockstore does the
same with multihashes).

Crash safety: every file is written to a temporary file in its final
directory, made durable, then `os.replace`d into place, so a block file either
does not exist or holds exactly the bytes its name promises, and a pin file is
written only after every block below it is durable. Leftover temporary files
(from a crash mid-write) are ignored by readers and swept by `gc`.

Durability is paid once per DAG, not once per block: the blocks of a `put`, or
the blocks `put_block` received for the next `pin`, wait as temporary files
(a `put`'s pin file too); then one `syncfs(2)` makes all of them durable
(per-file fsyncs where syncfs is missing), they are renamed into place, a
second syncfs makes the renames durable (an fsync per directory where syncfs
is missing, or for a single directory), and only then is the pin renamed into
place and its directory fsynced. A 256-block update costs three flushes, not
256 fsyncs plus one per shard directory; on this machine's ext4 disk the one
syncfs for the renames made a durable 16 or 64 MB put 15-20% faster than
fsyncing each of its shard directories. Blocks from `put_block` become visible
to readers when the next `pin` commits them.

Speed of a `put`: the leaves are independent, so the caller's thread and idle
helper threads each take the next chunk, hash it and write it while it is
still in cache (hashlib and file writes release the GIL); the internal nodes
and the pin follow once every leaf is in. The helpers are daemon threads, one
fewer than the CPUs the process may use (at most 3), started at the first put
of more than one chunk and started afresh in a forked child; the caller never
waits for a helper that has not started, so a busy machine costs no more than
writing inline. A block costs a stat, an open(O_EXCL), a write, a close and a
rename: no per-block mkdir, fsync or temporary-name retries.

Concurrency: readers (`get`, `get_block`, `has`) take no lock, since a block
file is never modified in place. Writers and `gc` share one lock per
instance, so `gc` cannot delete blocks of a `put` that has not pinned its root
yet. Two processes must not run `gc` on one directory while the other writes.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

from node.errors import StorageError
from node.storage.cid import CODEC_RAW, Cid, parse_cid, verify_block
from node.storage.dagpb import decode_node
from node.storage.unixfs import (
    CHUNK_SIZE,
    DEFAULT_MAX_FETCH_BYTES,
    MAX_DEPTH,
    LevelEntry,
    check_cid_version,
    dag_blocks_bound,
    iter_blocks,
    leaf_block,
    parent_blocks,
    received_block,
    read_dag,
)

# Temporary files start with a dot so no digest-named block can ever collide with one.
_TMP_PREFIX = ".tmp-"
# Shard directories under blocks/, named by the first hex digit of the digest (see the module doc).
_SHARDS = 16
# Helper threads for puts: at most this many, and one fewer than the CPUs the process may use.
_MAX_HELPERS = 3
# gc only sweeps temporary files older than this, so it never races a write in another process.
_STALE_TMP_SECONDS = 3600.0
# New files: created, never opened twice (O_EXCL), not inherited by child processes.
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
# Owner-only, as tempfile.mkstemp made them before.
_FILE_MODE = 0o600


def _is_hex(name: str) -> bool:
    return bool(name) and all(c in "0123456789abcdef" for c in name)


def _entries(directory: Path) -> list[Path]:
    """The entries of `directory`; none if it is gone."""
    try:
        return list(directory.iterdir())
    except FileNotFoundError:
        return []


def _sweep_if_stale(path: Path, now: float) -> None:
    """Delete the temporary file `path` if it is stale: debris of a crashed write. Young ones may
    belong to a writer in another process, and one already gone is fine."""
    try:
        if now - path.stat().st_mtime > _STALE_TMP_SECONDS:
            path.unlink()
    except FileNotFoundError:
        pass


def _discard(paths: list[str]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass


def _fsync_dir(path: str | Path) -> None:
    """Make renames inside `path` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_LIBC: ctypes.CDLL | None | bool = False  # False: not looked up yet; None: no libc to call here
_SYNC_FILE_RANGE: Callable[[int, int, int, int], int] | None | bool = False  # False: not looked up yet
_SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>: start writeback of the range's dirty pages, do not wait


def _libc() -> ctypes.CDLL | None:
    global _LIBC
    if _LIBC is False:
        try:
            _LIBC = ctypes.CDLL(None, use_errno=True)
        except OSError:
            _LIBC = None
    return _LIBC  # type: ignore[return-value]


def _syncfs(path: Path) -> bool:
    """Flush every dirty page and inode of the filesystem holding `path` (Linux syncfs(2)).

    Returns False where syncfs is not available or fails; the caller then fsyncs file by file.
    """
    libc = _libc()
    if libc is None or not hasattr(libc, "syncfs"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        return libc.syncfs(fd) == 0
    finally:
        os.close(fd)


def _start_writeback(fd: int) -> None:
    """Have the kernel start writing `fd`'s dirty pages to disk now, without waiting (Linux
    sync_file_range(2)): the disk then works while the next chunks are hashed, and the one
    syncfs at the end finds most of the data already written. Durability still comes from that
    syncfs; this is only a head start, and a no-op where the call is missing."""
    global _SYNC_FILE_RANGE
    if _SYNC_FILE_RANGE is False:
        libc = _libc()
        function = getattr(libc, "sync_file_range", None) if libc is not None else None
        if function is not None:
            function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
            function.restype = ctypes.c_int
        _SYNC_FILE_RANGE = function
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)  # type: ignore[operator]


# --- temporary file names ----------------------------------------------------------------------

# Unique per process (pid + random tag, renewed in a forked child) and per file (a counter), so
# creating one is a single open(O_EXCL); a clash (debris of a dead process) just takes the next.
_tmp_counter = itertools.count()
_tmp_tag = ""


def _new_tmp_tag() -> None:
    global _tmp_tag
    _tmp_tag = f"{_TMP_PREFIX}{os.getpid()}-{os.urandom(3).hex()}-"


_new_tmp_tag()


# --- helper threads ----------------------------------------------------------------------------


class _Shared:
    """The leaves of one put, claimed one at a time by the putting thread and any idle helper.

    Helpers are an optimisation only: the putting thread works through the leaves itself and
    then waits just for helpers that did claim one, so a helper that wakes late (or never, on a
    busy machine) costs nothing. After the first error nothing more is claimed.
    """

    __slots__ = ("_active", "_fn", "_idle", "_lock", "_next", "_total", "error")

    def __init__(self, total: int, fn: Callable[[int], None]) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._fn: Callable[[int], None] | None = fn
        self._next = 0
        self._total = total
        self._active = 0
        self.error: BaseException | None = None

    def _work(self, fn: Callable[[int], None]) -> None:
        while True:
            with self._lock:
                if self.error is not None or self._next >= self._total:
                    return
                index = self._next
                self._next += 1
            try:
                fn(index)
            except BaseException as exc:  # re-raised by the putting thread
                with self._lock:
                    if self.error is None:
                        self.error = exc
                return

    def help(self) -> None:
        """Run by a helper thread: work alongside the putting thread, if anything is left."""
        with self._lock:
            fn = self._fn
            if fn is None or self.error is not None or self._next >= self._total:
                return
            self._active += 1
        try:
            self._work(fn)
        finally:
            del fn  # before the putting thread may return: no reference to its bytes outlives the put
            with self._lock:
                self._active -= 1
                if not self._active:
                    self._idle.notify_all()

    def run(self) -> None:
        """Run by the putting thread: do the work, wait for helpers still busy, raise the first error."""
        fn = self._fn
        assert fn is not None
        try:
            self._work(fn)
        finally:
            with self._lock:
                # An error (or an interrupt) also stops the helpers at their next claim.
                if self.error is None and self._next < self._total:
                    self.error = StorageError("put interrupted")
                while self._active:
                    self._idle.wait()
                # Helpers that wake up later find nothing, and hold no reference to the caller's bytes.
                self._fn = None
        if self.error is not None:
            raise self.error


def _run_helper(jobs: queue.SimpleQueue) -> None:
    while True:
        shared = jobs.get()
        shared.help()
        del shared  # no reference to a finished put while waiting


def _helper_count() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(0, min(cpus - 1, _MAX_HELPERS))


class _Helpers:
    """Daemon threads (one fewer than the CPUs, at most _MAX_HELPERS) that help puts hash and write
    leaves. Started at the first put that can use them; a forked child starts its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue | None = None
        self.threads: list[threading.Thread] = []

    def _queue(self) -> queue.SimpleQueue | None:
        jobs = self._jobs
        if jobs is None:
            with self._lock:
                if self._jobs is None:
                    fresh: queue.SimpleQueue = queue.SimpleQueue()
                    for number in range(_helper_count()):
                        thread = threading.Thread(
                            target=_run_helper, args=(fresh,), name=f"blockstore-helper-{number}", daemon=True
                        )
                        try:
                            thread.start()
                        except RuntimeError:  # out of threads: puts work without (more) helpers
                            break
                        self.threads.append(thread)
                    self._jobs = fresh
                jobs = self._jobs
        return jobs if self.threads else None

    def share(self, shared: _Shared, extra: int) -> None:
        """Offer `shared` to at most `extra` helpers."""
        jobs = self._queue()
        if jobs is not None:
            for _ in range(min(extra, len(self.threads))):
                jobs.put(shared)

    def after_fork_in_child(self) -> None:
        # The threads did not survive the fork, and the queue or lock may be in any state: start over.
        self._lock = threading.Lock()
        self._jobs = None
        self.threads = []


_HELPERS = _Helpers()


def _after_fork_in_child() -> None:
    _HELPERS.after_fork_in_child()
    _new_tmp_tag()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# --- the store ---------------------------------------------------------------------------------


class EmbeddedStorage:
    """A content-addressed blockstore with pins and garbage collection, in one directory."""

    def __init__(self, root_dir: str | os.PathLike[str], *, fsync: bool = True) -> None:
        """Open (creating if needed) the store at `root_dir`.

        `fsync=False` skips fsync for throwaway stores (tests, simulations);
        writes stay atomic but may be lost, never torn, on power failure.
        """
        self.root = Path(root_dir)
        self.blocks_dir = self.root / "blocks"
        self.pins_dir = self.root / "pins"
        self._fsync = fsync
        self._lock = threading.Lock()
        # Directories holding blocks from put_block whose entries are not fsynced yet: each block's
        # bytes are durable before its rename, the renames become durable in one pass before the
        # next pin is written (one directory fsync per directory, not per block).
        self._unsynced_dirs: set[str] = set()
        # Blocks from put_block waiting for the next pin: (temporary file, final path), not yet durable.
        self._pending: list[tuple[str, str]] = []
        # All shard directories up front: a one-time cost at first open instead of a mkdir (and a
        # directory fsync) inside the first puts. One listdir finds those that already exist.
        created = not (self.blocks_dir.is_dir() and self.pins_dir.is_dir())
        self.blocks_dir.mkdir(parents=True, exist_ok=True)
        self.pins_dir.mkdir(parents=True, exist_ok=True)
        blocks = str(self.blocks_dir)
        self._pins = str(self.pins_dir)
        self._shard_dirs = [f"{blocks}/{shard:x}" for shard in range(_SHARDS)]
        present = set(os.listdir(blocks))
        for shard, directory in enumerate(self._shard_dirs):
            if f"{shard:x}" not in present:
                os.makedirs(directory, exist_ok=True)
                created = True
        if fsync and created:
            # The new directories' own names durable too, so a durable block never sits in a lost one.
            for directory in (self.root.parent, self.root, self.blocks_dir):
                _fsync_dir(directory)
        legacy = sorted(n for n in present if len(n) == 2 and _is_hex(n) and os.path.isdir(f"{blocks}/{n}"))
        if legacy:
            self._move_legacy_shards(legacy)

    # --- paths and raw file I/O ------------------------------------------------------------

    def _block_path(self, cid: Cid) -> Path:
        name = cid.digest.hex()
        return self.blocks_dir / name[:1] / name

    def _move_legacy_shards(self, legacy: list[str]) -> None:
        """Move the blocks of the old `blocks/<2 hex>/` layout into their new shards, then drop the
        old directories. Each block is renamed (never copied), so a crash midway leaves every block
        in one of the two places, and the next open finishes the move."""
        moved: set[str] = set()
        for name in legacy:
            for path in _entries(self.blocks_dir / name):
                if len(path.name) != 64 or not _is_hex(path.name):
                    continue  # a temporary file (swept below once stale), or not ours (kept)
                directory = self._shard_dirs[int(path.name[0], 16)]
                try:
                    os.replace(path, f"{directory}/{path.name}")
                except FileNotFoundError:
                    continue  # another process opening the store moved it first
                moved.add(directory)
        self._sync_dirs(moved)  # the blocks' new names are durable before the old ones can go
        now = time.time()
        for name in legacy:
            old_dir = self.blocks_dir / name
            for path in _entries(old_dir):
                if path.name.startswith(_TMP_PREFIX):
                    _sweep_if_stale(path, now)
            try:
                old_dir.rmdir()
            except OSError:
                pass  # gone already, or a foreign or a young temporary file keeps it (gc still sweeps it)
        if self._fsync:
            _fsync_dir(self.blocks_dir)

    def _pin_path(self, cid: Cid) -> Path:
        # Canonical CID text is [a-z2-7] or base58: safe as a file name, no path traversal.
        return self.pins_dir / str(cid)

    def _write_tmp(self, directory: str, data: bytes | memoryview, *, fsync: bool, writeback: bool = False) -> str:
        """Write `data` to a new temporary file in `directory` and return its path.

        `fsync`: durable before this returns; `writeback`: written to disk from now on, durable at
        the next flush (`_commit`)."""
        for attempt in range(100):
            tmp = f"{directory}/{_tmp_tag}{next(_tmp_counter)}"
            try:
                fd = os.open(tmp, _CREATE_FLAGS, _FILE_MODE)
                break
            except FileExistsError:
                continue
            except FileNotFoundError:
                if attempt:
                    raise
                os.makedirs(directory, exist_ok=True)  # a shard directory removed behind our back
                if self._fsync:
                    _fsync_dir(os.path.dirname(directory))
        else:
            raise StorageError(f"cannot create a temporary file in {directory}")
        try:
            try:
                written = os.write(fd, data)
                if written < len(data):  # a short write (a signal, a nearly full disk): go on
                    view = memoryview(data)
                    while written < len(view):
                        written += os.write(fd, view[written:])
                if fsync:
                    os.fsync(fd)
                elif writeback:
                    _start_writeback(fd)
            finally:
                os.close(fd)
        except BaseException:
            _discard([tmp])
            raise
        return tmp

    def _write_atomic(self, path: str, data: bytes | memoryview) -> None:
        tmp = self._write_tmp(os.path.dirname(path), data, fsync=self._fsync)
        try:
            os.replace(tmp, path)
        except BaseException:
            _discard([tmp])
            raise

    def _store_block(
        self, digest: bytes, data: bytes | memoryview, touched: set[str], pending: list[tuple[str, str]] | None = None
    ) -> None:
        """Write a block whose bytes are already known to hash to `digest`, unless an intact-sized copy exists.

        With fsync on and a `pending` list, the block waits there as a temporary file for `_commit`.
        """
        directory = self._shard_dirs[digest[0] >> 4]
        path = f"{directory}/{digest.hex()}"
        try:
            if os.stat(path).st_size == len(data):
                return  # same digest, same size: the same block (a corrupt one is caught on read)
        except FileNotFoundError:
            pass
        if self._fsync and pending is not None:
            pending.append((self._write_tmp(directory, data, fsync=False, writeback=True), path))
        else:
            self._write_atomic(path, data)
        touched.add(directory)

    def _flush(self, tmps: list[str]) -> None:
        """Make the temporary files `tmps` durable: one syncfs, or one fsync each where it is missing."""
        if tmps and not _syncfs(self.root):
            for tmp in tmps:
                _fsync_file(tmp)

    def _commit(self, pending: list[tuple[str, str]], extra: list[str] | None = None) -> None:
        """Make pending blocks (and the temporary files `extra`) durable in one flush, then rename the
        blocks into place (directories are fsynced by the caller, before it writes a pin).

        On failure every pending temporary file is removed and `pending` is emptied.
        """
        if not pending and not extra:
            return
        renamed = 0
        try:
            self._flush([tmp for tmp, _ in pending] + (extra or []))
            for tmp, path in pending:
                os.replace(tmp, path)
                renamed += 1
        except BaseException:
            _discard([tmp for tmp, _ in pending[renamed:]])
            pending.clear()
            raise
        pending.clear()

    def _sync_dirs(self, dirs: set[str]) -> None:
        """Make the renames inside `dirs` durable: one syncfs for several directories (one journal
        commit instead of one per directory), else an fsync each (the helpers take some)."""
        if not self._fsync or not dirs:
            return
        if len(dirs) > 1 and _syncfs(self.root):
            return
        ordered = sorted(dirs)
        shared = _Shared(len(ordered), lambda index: _fsync_dir(ordered[index]))
        _HELPERS.share(shared, len(ordered) - 1)
        shared.run()

    def _read_raw(self, cid: Cid) -> bytes:
        try:
            return self._block_path(cid).read_bytes()
        except FileNotFoundError:
            raise StorageError(f"block {cid} is not held locally") from None

    def _read_unverified(self, cid_text: str) -> bytes:
        # For read_dag, which hashes every block itself: verifying here too would hash twice.
        return self._read_raw(parse_cid(cid_text))

    def _store_dag(
        self, data: bytes, cid_version: int, touched: set[str], pending: list[tuple[str, str]]
    ) -> Cid:
        """Chunk, hash and store every block of `data`'s DAG; return the root. Caller holds the lock."""
        root: Cid | None = None
        if len(data) <= CHUNK_SIZE:
            # One block: nothing to share.
            for root, block in iter_blocks(data, cid_version):
                self._store_block(root.digest, block, touched, pending)
            assert root is not None  # iter_blocks always yields the root
            return root
        check_cid_version(cid_version)
        view = memoryview(data).cast("B")
        count = -(-len(view) // CHUNK_SIZE)
        level: list[LevelEntry | None] = [None] * count

        def store_leaf(index: int) -> None:
            cid, block, entry = leaf_block(view, index * CHUNK_SIZE, cid_version)
            self._store_block(cid.digest, block, touched, pending)
            level[index] = entry

        # Each thread hashes a chunk and writes it while it is still in cache; hashlib and file
        # writes release the GIL, so with a free core two chunks are in flight at once.
        shared = _Shared(count, store_leaf)
        _HELPERS.share(shared, count - 1)
        shared.run()
        for root, node in parent_blocks(level, cid_version):  # type: ignore[arg-type]  # all filled
            self._store_block(root.digest, node, touched, pending)
        assert root is not None  # more than one leaf: at least one parent
        return root

    # --- the Storage protocol --------------------------------------------------------------

    def put(self, data: bytes, cid_version: int = 1) -> str:
        """Store `data` as `ipfs add` would chunk it, pin its root, and return the root CID."""
        touched: set[str] = set()
        pending: list[tuple[str, str]] = []
        pin_tmp: list[str] = []
        with self._lock:
            try:
                root = self._store_dag(data, cid_version, touched, pending)
                pin_path = f"{self._pins}/{root}"
                if not self._fsync:
                    if not os.path.exists(pin_path):
                        self._write_atomic(pin_path, str(root).encode("ascii"))
                    return str(root)
                # Durable: the pin's bytes are flushed with the blocks' (one syncfs); its name goes in
                # only after the blocks' names are durable, so a crash never leaves a pin over missing blocks.
                if not os.path.exists(pin_path):
                    pin_tmp.append(self._write_tmp(self._pins, str(root).encode("ascii"), fsync=False))
                self._commit(pending, pin_tmp)
                self._sync_dirs(touched)
                if pin_tmp:
                    os.replace(pin_tmp[0], pin_path)
                    pin_tmp.clear()
                    _fsync_dir(self._pins)
            except BaseException:
                _discard([tmp for tmp, _ in pending] + pin_tmp)
                raise
        return str(root)

    def get(self, cid: str, max_bytes: int | None = None) -> bytes:
        """Return the file under `cid`, every block re-hashed from disk; IntegrityError names a corrupt block.

        At most `max_bytes` (default DEFAULT_MAX_FETCH_BYTES): a larger file is a StorageError
        once its root's declared size is read, before anything else is."""
        limit = DEFAULT_MAX_FETCH_BYTES if max_bytes is None else max_bytes
        return read_dag(cid, self._read_unverified, max_size=limit, max_blocks=dag_blocks_bound(limit))

    def has(self, cid: str) -> bool:
        """Whether every block of the DAG under `cid` is on disk (structure only; `get` verifies bytes)."""
        missing: list[Cid] = []
        self._walk(parse_cid(cid), missing)
        return not missing

    def pin(self, cid: str) -> None:
        """Keep `cid`'s DAG through gc; the whole DAG must already be held (StorageError otherwise)."""
        parsed = parse_cid(cid)
        with self._lock:
            self._commit(self._pending)  # blocks received since the last pin: durable, then visible
            missing: list[Cid] = []
            self._walk(parsed, missing)
            if missing:
                raise StorageError(f"cannot pin {parsed}: block {missing[0]} is not held locally")
            self._sync_dirs(self._unsynced_dirs)  # the blocks' names are durable before the pin is
            self._unsynced_dirs.clear()
            self._write_pin(parsed)

    def unpin(self, cid: str) -> None:
        """Drop the pin on `cid` (a no-op if it is not pinned); its blocks go at the next gc."""
        parsed = parse_cid(cid)
        with self._lock:
            try:
                self._pin_path(parsed).unlink()
            except FileNotFoundError:
                return
            self._sync_dirs({self._pins})

    # --- beyond the protocol: pins, gc, single blocks for peers ----------------------------

    def pins(self) -> list[str]:
        """The pinned root CIDs, sorted."""
        return sorted(p.name for p in self.pins_dir.iterdir() if not p.name.startswith("."))

    def is_pinned(self, cid: str) -> bool:
        """Whether `cid` itself is a pinned root."""
        return self._pin_path(parse_cid(cid)).exists()

    def put_block(self, cid: str, data: bytes, source: str | None = None) -> None:
        """Store one block received from elsewhere after checking it hashes to `cid`.

        `source` (e.g. a peer ID) is named in the IntegrityError on a mismatch.
        The block is not pinned, and with fsync on it is not visible either until the next
        `pin` makes every block received since the last one durable at once: pin the root once
        the whole DAG is in.
        """
        parsed = received_block(cid, data, source)
        with self._lock:
            self._store_block(parsed.digest, data, self._unsynced_dirs, self._pending)

    def get_block(self, cid: str) -> bytes:
        """One block's bytes, verified against `cid` (for serving peers)."""
        parsed = parse_cid(cid)
        data = self._read_raw(parsed)
        verify_block(parsed, data)
        return data

    def has_block(self, cid: str) -> bool:
        """Whether the single block `cid` is on disk."""
        return self._block_path(parse_cid(cid)).exists()

    def gc(self) -> int:
        """Delete every block not reachable from a pin; return how many were deleted.

        Raises StorageError, deleting nothing, if a pinned DAG cannot be parsed:
        guessing reachability wrong would destroy pinned data.
        """
        with self._lock:
            keep: set[bytes] = set()
            for name in self.pins():
                missing: list[Cid] = []
                keep |= self._walk(parse_cid(name), missing, verify=True)
            removed = 0
            now = time.time()
            for shard in self.blocks_dir.iterdir():
                if not shard.is_dir():
                    continue
                for path in shard.iterdir():
                    if path.name.startswith(_TMP_PREFIX):
                        _sweep_if_stale(path, now)
                        continue
                    try:
                        digest = bytes.fromhex(path.name)
                    except ValueError:
                        continue  # not ours; leave foreign files alone
                    if digest not in keep:
                        path.unlink(missing_ok=True)
                        removed += 1
            return removed

    def _walk(self, root: Cid, missing: list[Cid], *, verify: bool = False) -> set[bytes]:
        """Digests of every block reachable from `root` that is held; absent ones go to `missing`.

        Iterative, each block visited once, depth-bounded: pinned DAGs may have
        come from peers. With `verify` every interior block is hashed before its
        links are trusted (gc must not follow a corrupt node's links).
        """
        seen: set[bytes] = set()
        stack: list[tuple[Cid, int]] = [(root, 0)]
        while stack:
            cid, depth = stack.pop()
            if cid.digest in seen:
                continue
            if depth > MAX_DEPTH:
                raise StorageError(f"DAG {root} is deeper than {MAX_DEPTH} levels at block {cid}")
            path = self._block_path(cid)
            if cid.codec == CODEC_RAW:
                if path.exists():
                    seen.add(cid.digest)
                else:
                    missing.append(cid)
                continue
            try:
                block = path.read_bytes()
            except FileNotFoundError:
                missing.append(cid)
                continue
            if verify:
                verify_block(cid, block)
            seen.add(cid.digest)
            for link in decode_node(block, cid).links:
                stack.append((link.cid, depth + 1))
        return seen

    def _write_pin(self, cid: Cid) -> None:
        path = f"{self._pins}/{cid}"
        if not os.path.exists(path):
            self._write_atomic(path, str(cid).encode("ascii"))
            self._sync_dirs({self._pins})
