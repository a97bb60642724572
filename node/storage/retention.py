"""What a node keeps: unpin content a finished round no longer needs, then collect garbage (#14, H7).

Every update a node fetched or trained is pinned, and before this nothing was ever unpinned:
a node ran out of disk at the pace of its federation. A round's updates are needed while the
round runs and, for replay detection, during the next one (node/protocol/recompute.py `recompute_round`
reads the previous round's updates); after that only the global models matter, and they are
kept for good (anyone may ask any node for any round's model, SPEC §9 `model get`).

This module knows nothing of the chain: the daemon reads which CIDs belong to which round and
which are global models, and passes them in (node/daemon/peers.py `release_old_rounds`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from node.abc import Storage
from node.errors import StorageError

log = logging.getLogger(__name__)


def release(store: Storage, drop: Iterable[str], keep: Iterable[str]) -> int:
    """Unpin every CID of `drop` that is not in `keep`, then collect garbage where the backend
    can (the embedded blockstore; a kubo daemon runs its own GC over what is unpinned).

    `keep` wins over `drop`: a CID revealed as an old update may well be a global model or a
    current update too (a replay), and must not lose its pin for that. Returns the blocks
    removed (0 when the backend collects by itself)."""
    kept = set(keep)
    unpinned = 0
    for cid in dict.fromkeys(drop):
        if cid in kept:
            continue
        try:
            store.unpin(cid)
        except StorageError as exc:  # a CID from the chain that does not even parse: nothing pinned under it
            log.debug("not unpinning %r: %s", cid, exc)
            continue
        unpinned += 1
    gc = getattr(store, "gc", None)
    if not unpinned or gc is None:
        return 0
    removed = int(gc())
    log.info("released %d old round contents, %d blocks removed", unpinned, removed)
    return removed
