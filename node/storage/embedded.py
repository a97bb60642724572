"""The embedded blockstore: the default `node.abc.Storage` backend, a directory of verified blocks.

Layout under `root_dir`:

    blocks/<1 hex>/<sha2-256 hex>   one file per block, named by its digest, in one of 16 shards
    pins/<CID text>                 one file per pinned root (content: the CID)

Sixteen shards, not kubo flatfs's 1024 or the 256 this store used to have: on
ext4 a put pays for every directory it touches, and a 64 MB put (256 leaves)
spread over 256 directories took about twice as long as over 16
(`scripts/bench_storage.py`; 4 or 8 shards were slower again, as the two
writing threads then queue on one directory's lock more often). A store in
the old `blocks/<2 hex>/` layout is moved into the new one when it is opened
(`node/storage/legacy.py`).

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

Speed of a `put`: the leaves are hashed and written by the caller's thread and idle helper
threads (`node/storage/parallel.py`) while still in cache; the internal nodes and the pin
follow once every leaf is in. A block costs a stat, an open(O_EXCL), a write, a close and a
rename: no per-block mkdir, fsync or temporary-name retries (`node/storage/durable.py`).

Concurrency: readers (`get`, `get_block`, `has`) take no lock, since a block
file is never modified in place. Writers and `gc` share one lock per
instance, so `gc` cannot delete blocks of a `put` that has not pinned its root
yet. Two processes must not run `gc` on one directory while the other writes.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Iterable

from node.errors import StorageError
from node.storage import durable, parallel
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
from node.storage.legacy import move_legacy_shards

# Shard directories under blocks/, named by the first hex digit of the digest (see the module doc).
_SHARDS = 16


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
                durable.fsync_dir(directory)
        move_legacy_shards(self.blocks_dir, present, self._shard_dirs, self._sync_dirs, fsync=fsync)

    # --- paths and raw file I/O ------------------------------------------------------------

    def _block_path(self, cid: Cid) -> Path:
        name = cid.digest.hex()
        return self.blocks_dir / name[:1] / name

    def _pin_path(self, cid: Cid) -> Path:
        # Canonical CID text is [a-z2-7] or base58: safe as a file name, no path traversal.
        return self.pins_dir / str(cid)

    def _write_tmp(self, directory: str, data: bytes | memoryview, *, fsync: bool, writeback: bool = False) -> str:
        """Write `data` to a new temporary file in `directory` and return its path.

        `fsync`: durable before this returns; `writeback`: written to disk from now on, durable at
        the next flush (`_commit`)."""
        for attempt in range(100):
            tmp = durable.tmp_name(directory)
            try:
                fd = os.open(tmp, durable.CREATE_FLAGS, durable.FILE_MODE)
                break
            except FileExistsError:
                continue
            except FileNotFoundError:
                if attempt:
                    raise
                os.makedirs(directory, exist_ok=True)  # a shard directory removed behind our back
                if self._fsync:
                    durable.fsync_dir(os.path.dirname(directory))
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
                    durable.start_writeback(fd)
            finally:
                os.close(fd)
        except BaseException:
            durable.discard([tmp])
            raise
        return tmp

    def _write_atomic(self, path: str, data: bytes | memoryview) -> None:
        tmp = self._write_tmp(os.path.dirname(path), data, fsync=self._fsync)
        try:
            os.replace(tmp, path)
        except BaseException:
            durable.discard([tmp])
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
        if tmps and not durable.syncfs(self.root):
            for tmp in tmps:
                durable.fsync_file(tmp)

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
            durable.discard([tmp for tmp, _ in pending[renamed:]])
            pending.clear()
            raise
        pending.clear()

    def _sync_dirs(self, dirs: set[str]) -> None:
        """Make the renames inside `dirs` durable: one syncfs for several directories (one journal
        commit instead of one per directory), else an fsync each (the helpers take some)."""
        if not self._fsync or not dirs:
            return
        if len(dirs) > 1 and durable.syncfs(self.root):
            return
        ordered = sorted(dirs)
        shared = parallel.Shared(len(ordered), lambda index: durable.fsync_dir(ordered[index]))
        parallel.HELPERS.share(shared, len(ordered) - 1)
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
        shared = parallel.Shared(count, store_leaf)
        parallel.HELPERS.share(shared, count - 1)
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
                    durable.fsync_dir(self._pins)
            except BaseException:
                durable.discard([tmp for tmp, _ in pending] + pin_tmp)
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

    def get_block(self, cid: str, *, verify: bool = True) -> bytes:
        """One block's bytes, verified against `cid` (for serving peers). `verify=False` is for a
        reader that hashes every block itself (`read_dag`): hashing here too would do it twice."""
        parsed = parse_cid(cid)
        data = self._read_raw(parsed)
        if verify:
            verify_block(parsed, data)
        return data

    def adopt_blocks(self, peer: "EmbeddedStorage", cids: Iterable[str]) -> None:
        """Hold `cids`, blocks of `peer` that the caller read from it and verified (the in-process
        network of node/sim/simulate.py). Each is a hard link to the peer's file where both stores
        share a filesystem and neither fsyncs: no copy to write, and one file's data to delete at
        the end. Sharing the file is safe because a block file is never written in place, only
        created (a temporary file renamed over the name) or unlinked. Otherwise a copy."""
        link = not self._fsync and not peer._fsync
        with self._lock:
            for cid in cids:
                parsed = parse_cid(cid)
                digest = parsed.digest
                directory = self._shard_dirs[digest[0] >> 4]
                path = f"{directory}/{digest.hex()}"
                if link:
                    try:
                        os.link(peer._block_path(parsed), path)
                        continue
                    except FileExistsError:
                        continue  # held already (a corrupt copy is caught on read, as in `_store_block`)
                    except FileNotFoundError:
                        raise StorageError(f"block {parsed} is not held by the peer") from None
                    except OSError:
                        link = False  # another filesystem, or no hard links: copy from here on
                self._store_block(digest, peer._read_raw(parsed), self._unsynced_dirs, self._pending)

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
                    if path.name.startswith(durable.TMP_PREFIX):
                        durable.sweep_if_stale(path, now)
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
