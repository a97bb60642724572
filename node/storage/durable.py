"""Crash-safe file primitives for the embedded blockstore (`node/storage/embedded.py`).

Temporary files, named uniquely per process and per file, that are written, made durable
and then renamed into place; the flushes that make them durable: `syncfs(2)` for a whole
DAG at once (one flush instead of one fsync per block), an fsync per file or directory
where it is missing, and `sync_file_range(2)` to start writeback early. Leftover temporary
files (from a crash mid-write) are recognised by their prefix and swept once stale.
"""

from __future__ import annotations

import ctypes
import itertools
import os
from collections.abc import Callable
from pathlib import Path

# Temporary files start with a dot so no digest-named block can ever collide with one.
TMP_PREFIX = ".tmp-"
# gc only sweeps temporary files older than this, so it never races a write in another process.
STALE_TMP_SECONDS = 3600.0
# New files: created, never opened twice (O_EXCL), not inherited by child processes.
CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
# Owner-only, as tempfile.mkstemp made them before.
FILE_MODE = 0o600


def is_hex(name: str) -> bool:
    """Whether `name` is lowercase hex, as block file names and shard directories are."""
    return bool(name) and all(c in "0123456789abcdef" for c in name)


def entries(directory: Path) -> list[Path]:
    """The entries of `directory`; none if it is gone."""
    try:
        return list(directory.iterdir())
    except FileNotFoundError:
        return []


def sweep_if_stale(path: Path, now: float) -> None:
    """Delete the temporary file `path` if it is stale: debris of a crashed write. Young ones may
    belong to a writer in another process, and one already gone is fine."""
    try:
        if now - path.stat().st_mtime > STALE_TMP_SECONDS:
            path.unlink()
    except FileNotFoundError:
        pass


def discard(paths: list[str]) -> None:
    """Remove the temporary files `paths`, ignoring any already gone."""
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass


def fsync_dir(path: str | Path) -> None:
    """Make renames inside `path` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str) -> None:
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


def syncfs(path: Path) -> bool:
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


def start_writeback(fd: int) -> None:
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
    _tmp_tag = f"{TMP_PREFIX}{os.getpid()}-{os.urandom(3).hex()}-"


def tmp_name(directory: str) -> str:
    """A fresh temporary file name in `directory`, unique in this process (and very likely beyond)."""
    return f"{directory}/{_tmp_tag}{next(_tmp_counter)}"


_new_tmp_tag()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_tmp_tag)
