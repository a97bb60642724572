"""Every seam of the node, in one place.

The daemon and the simulator only talk to these protocols; the embedded and
the real backends sit behind them side by side (the embedded blockstore and
kubo behind `Storage` and `BlockStore`, eth-tester and anvil behind the chain
client, the torch trainer behind `Trainer`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from node.apps.native import Evaluation


@runtime_checkable
class Storage(Protocol):
    """Content-addressed bytes: put returns the CID `ipfs add` would print."""

    def put(self, data: bytes) -> str:
        """Store `data`, pin it, and return its CID."""

    def get(self, cid: str, max_bytes: int | None = None) -> bytes:
        """Return the bytes under `cid`, verified block by block; raise StorageError if absent,
        or if the content is larger than `max_bytes` (None: the backend's safe default), found
        out from the root's declared size before the rest is read."""

    def has(self, cid: str) -> bool:
        """Whether every block of `cid` is held locally."""

    def pin(self, cid: str) -> None:
        """Keep `cid` and every block below it through garbage collection."""

    def unpin(self, cid: str) -> None:
        """Let garbage collection remove `cid`'s blocks (unless pinned by another root)."""


@runtime_checkable
class BlockStore(Storage, Protocol):
    """A `Storage` that also moves single blocks: what the block exchange with peers needs.

    Peers send and ask for blocks, not files (node/p2p/blocks.py): a provider
    reads each block of a DAG with `get_block`, a fetcher stores each block it
    receives with `put_block` and, once the whole DAG is in, pins the root
    (`has` and `pin` come from `Storage`). The embedded blockstore and kubo
    both implement it, so a federation may mix backends (SPEC §6).
    """

    def get_block(self, cid: str) -> bytes:
        """One block held locally, verified against `cid` before it is returned (a block rotten
        in the store is never served); StorageError if it is not held (no network search),
        IntegrityError if its bytes do not hash to `cid`."""

    def put_block(self, cid: str, data: bytes, source: str | None = None) -> None:
        """Store one block received from `source` (e.g. a peer ID) after checking that `data`
        hashes to `cid`: IntegrityError naming `cid` and `source` otherwise, and nothing stored.

        The block is not pinned, and it may stay invisible to `has` and `get` until the next
        `pin`: pin the root once the whole DAG is in."""


class Trainer(Protocol):
    """Local training on private data: from a global model to a weight delta."""

    num_samples: int

    def train(self, global_weights: Mapping[str, np.ndarray], seed: int, round: int = 0) -> dict[str, np.ndarray]:
        """Train from `global_weights` in round `round` with the seed `seed`, and return the delta
        per state-dict key (`aggregation.model_delta`)."""

    def evaluate(self, weights: Mapping[str, np.ndarray]) -> "Evaluation":
        """The app's metrics of `weights` on this node's held-out data (node/apps/native.py)."""
