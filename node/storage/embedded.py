"""The embedded blockstore: the default `node.abc.Storage` backend, a directory of verified blocks.

Layout under `root_dir`:

    blocks/<2 hex>/<sha2-256 hex>   one file per block, named by its digest
    pins/<CID text>                 one file per pinned root (content: the CID)

Blocks are keyed by digest, not by CID text, because the same bytes are one
block whatever CID version or codec names them (kubo's blockstore does the
same with multihashes).

Crash safety: every file is written to a temporary file in its final
directory, made durable, then `os.replace`d into place, so a block file either
does not exist or holds exactly the bytes its name promises, and a pin file is
written only after every block below it is durable. Leftover temporary files
(from a crash mid-write) are ignored by readers and swept by `gc`.

Durability is paid once per DAG, not once per block: the blocks of a `put`, or
the blocks `put_block` received for the next `pin`, wait as temporary files;
then one `syncfs(2)` makes all of them durable (per-file fsyncs where syncfs is
missing), they are renamed into place, their directories are fsynced, and only
then is the pin written. A 256-block update costs one disk flush, not 256.
Blocks from `put_block` become visible to readers when the next `pin` commits
them.

Concurrency: readers (`get`, `get_block`, `has`) take no lock, since a block
file is never modified in place. Writers and `gc` share one lock per
instance, so `gc` cannot delete blocks of a `put` that has not pinned its root
yet. Two processes must not run `gc` on one directory while the other writes.
"""

from __future__ import annotations

import ctypes
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
import tempfile
import threading
import time
from pathlib import Path

from node.errors import IntegrityError, StorageError
from node.storage.cid import CODEC_RAW, Cid, parse_cid, verify_block
from node.storage.dagpb import decode_node
from node.storage.unixfs import MAX_BLOCK_SIZE, MAX_DEPTH, iter_blocks, read_dag

# Temporary files start with a dot so no digest-named block can ever collide with one.
_TMP_PREFIX = ".tmp-"
# Blocks a put may have hashed ahead of its writer thread (bounds the memory held for writing).
_WRITE_AHEAD = 8
# gc only sweeps temporary files older than this, so it never races a write in another process.
_STALE_TMP_SECONDS = 3600.0


def _discard(paths: list[str]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass


def _fsync_dir(path: Path) -> None:
    """Make renames inside `path` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_LIBC: ctypes.CDLL | None | bool = False  # False: not looked up yet; None: no syncfs here


def _syncfs(path: Path) -> bool:
    """Flush every dirty page and inode of the filesystem holding `path` (Linux syncfs(2)).

    Returns False where syncfs is not available or fails; the caller then fsyncs file by file.
    """
    global _LIBC
    if _LIBC is False:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            _LIBC = libc if hasattr(libc, "syncfs") else None
        except OSError:
            _LIBC = None
    if _LIBC is None:
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        return _LIBC.syncfs(fd) == 0  # type: ignore[union-attr]
    finally:
        os.close(fd)


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
        self.blocks_dir.mkdir(parents=True, exist_ok=True)
        self.pins_dir.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._lock = threading.Lock()
        # Directories holding blocks from put_block whose entries are not fsynced yet: each block's
        # bytes are durable before its rename, the renames become durable in one pass before the
        # next pin is written (one directory fsync per directory, not per block).
        self._unsynced_dirs: set[Path] = set()
        # Blocks from put_block waiting for the next pin: (temporary file, final path), not yet durable.
        self._pending: list[tuple[str, Path]] = []
        # All 256 shard directories up front: a one-time cost at first open instead of
        # a mkdir (and a directory fsync) inside the first puts.
        for shard in range(256):
            (self.blocks_dir / f"{shard:02x}").mkdir(exist_ok=True)
        self._known_dirs: set[Path] = {self.blocks_dir / f"{shard:02x}" for shard in range(256)}
        self._known_dirs.add(self.pins_dir)

    # --- paths and raw file I/O ------------------------------------------------------------

    def _block_path(self, cid: Cid) -> Path:
        name = cid.digest.hex()
        return self.blocks_dir / name[:2] / name

    def _pin_path(self, cid: Cid) -> Path:
        # Canonical CID text is [a-z2-7] or base58: safe as a file name, no path traversal.
        return self.pins_dir / str(cid)

    def _write_tmp(self, path: Path, data: bytes | memoryview, *, fsync: bool) -> str:
        """Write `data` to a new temporary file next to `path` and return its name."""
        directory = path.parent
        if directory not in self._known_dirs:
            directory.mkdir(parents=True, exist_ok=True)
            self._known_dirs.add(directory)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=_TMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                if fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
        except BaseException:
            _discard([tmp])
            raise
        return tmp

    def _write_atomic(self, path: Path, data: bytes | memoryview) -> None:
        tmp = self._write_tmp(path, data, fsync=self._fsync)
        try:
            os.replace(tmp, path)
        except BaseException:
            _discard([tmp])
            raise

    def _store_block(
        self, cid: Cid, data: bytes | memoryview, touched: set[Path], pending: list[tuple[str, Path]] | None = None
    ) -> None:
        """Write a block whose bytes are already known to match `cid`, unless an intact-sized copy exists.

        With fsync on and a `pending` list, the block waits there as a temporary file for `_commit`.
        """
        path = self._block_path(cid)
        try:
            if path.stat().st_size == len(data):
                return  # same digest, same size: the same block (a corrupt one is caught on read)
        except FileNotFoundError:
            pass
        if self._fsync and pending is not None:
            pending.append((self._write_tmp(path, data, fsync=False), path))
        else:
            self._write_atomic(path, data)
        touched.add(path.parent)

    def _commit(self, pending: list[tuple[str, Path]]) -> None:
        """Make pending blocks durable in one flush, then rename them into place (directories are
        fsynced by the caller, before it writes a pin)."""
        if not pending:
            return
        try:
            if not _syncfs(self.root):
                for tmp, _ in pending:
                    fd = os.open(tmp, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
            while pending:
                tmp, path = pending[0]
                os.replace(tmp, path)
                pending.pop(0)
        except BaseException:
            _discard([tmp for tmp, _ in pending])
            pending.clear()
            raise

    def _sync_dirs(self, dirs: set[Path]) -> None:
        if self._fsync:
            for directory in dirs:
                _fsync_dir(directory)

    def _read_raw(self, cid: Cid) -> bytes:
        try:
            return self._block_path(cid).read_bytes()
        except FileNotFoundError:
            raise StorageError(f"block {cid} is not held locally") from None

    def _read_unverified(self, cid_text: str) -> bytes:
        # For read_dag, which hashes every block itself: verifying here too would hash twice.
        return self._read_raw(parse_cid(cid_text))

    # --- the Storage protocol --------------------------------------------------------------

    def put(self, data: bytes, cid_version: int = 1) -> str:
        """Store `data` as `ipfs add` would chunk it, pin its root, and return the root CID."""
        touched: set[Path] = set()
        with self._lock:
            root: Cid | None = None
            pending: list[tuple[str, Path]] = []
            try:
                if len(data) <= MAX_BLOCK_SIZE:
                    for root, block in iter_blocks(data, cid_version):
                        self._store_block(root, block, touched, pending)
                else:
                    # Hash the next chunk while one writer thread stores the last: hashlib and
                    # file writes both release the GIL, so an add costs ~max(hash, write), not the sum.
                    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="blockstore-put") as writer:
                        inflight: deque[Future[None]] = deque()
                        for root, block in iter_blocks(data, cid_version):
                            inflight.append(writer.submit(self._store_block, root, block, touched, pending))
                            if len(inflight) > _WRITE_AHEAD:
                                inflight.popleft().result()
                        while inflight:
                            inflight.popleft().result()
            except BaseException:
                _discard([tmp for tmp, _ in pending])  # the writer has stopped: the pool was joined
                raise
            assert root is not None  # iter_blocks always yields the root
            # Blocks first, durably, then the pin: a crash never leaves a pin over missing blocks.
            self._commit(pending)
            self._sync_dirs(touched)
            self._write_pin(root)
        return str(root)

    def get(self, cid: str) -> bytes:
        """Return the file under `cid`, every block re-hashed from disk; IntegrityError names a corrupt block."""
        return read_dag(cid, self._read_unverified)

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
            self._sync_dirs({self.pins_dir})

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
        parsed = parse_cid(cid)
        origin = f" from {source}" if source else ""
        if len(data) > MAX_BLOCK_SIZE:
            raise StorageError(f"block {parsed}{origin} is {len(data)} bytes, over the {MAX_BLOCK_SIZE}-byte limit")
        try:
            verify_block(parsed, data)
        except IntegrityError as exc:
            raise IntegrityError(f"{exc}{origin}") from None
        with self._lock:
            self._store_block(parsed, data, self._unsynced_dirs, self._pending)

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
                        # Debris of a crashed write; young ones may belong to a writer in another process.
                        if now - path.stat().st_mtime > _STALE_TMP_SECONDS:
                            path.unlink(missing_ok=True)
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
        path = self._pin_path(cid)
        if not path.exists():
            self._write_atomic(path, str(cid).encode("ascii"))
            self._sync_dirs({self.pins_dir})
