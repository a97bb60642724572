"""Upgrading an embedded blockstore from the old `blocks/<2 hex>/` layout to `blocks/<1 hex>/`.

The store used to shard blocks over 256 directories; it now uses 16 (why: the module doc of
`node/storage/embedded.py`). A store in the old layout is moved into the new one when it is
opened.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from node.storage import durable


def move_legacy_shards(
    blocks_dir: Path,
    present: Iterable[str],
    shard_dirs: list[str],
    sync_dirs: Callable[[set[str]], None],
    *,
    fsync: bool,
) -> None:
    """Move the blocks of the old `blocks/<2 hex>/` layout (among the names `present` in
    `blocks_dir`) into their new shards `shard_dirs`, then drop the old directories.

    Each block is renamed (never copied), so a crash midway leaves every block in one of the
    two places, and the next open finishes the move. `sync_dirs` makes the renames inside a set
    of directories durable; `fsync` says whether the store is durable at all."""
    legacy = sorted(
        n for n in present if len(n) == 2 and durable.is_hex(n) and os.path.isdir(blocks_dir / n)
    )
    if not legacy:
        return
    moved: set[str] = set()
    for name in legacy:
        for path in durable.entries(blocks_dir / name):
            if len(path.name) != 64 or not durable.is_hex(path.name):
                continue  # a temporary file (swept below once stale), or not ours (kept)
            directory = shard_dirs[int(path.name[0], 16)]
            try:
                os.replace(path, f"{directory}/{path.name}")
            except FileNotFoundError:
                continue  # another process opening the store moved it first
            moved.add(directory)
    sync_dirs(moved)  # the blocks' new names are durable before the old ones can go
    now = time.time()
    for name in legacy:
        old_dir = blocks_dir / name
        for path in durable.entries(old_dir):
            if path.name.startswith(durable.TMP_PREFIX):
                durable.sweep_if_stale(path, now)
        try:
            old_dir.rmdir()
        except OSError:
            pass  # gone already, or a foreign or a young temporary file keeps it (gc still sweeps it)
    if fsync:
        durable.fsync_dir(blocks_dir)
