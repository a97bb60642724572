"""Every seam of the node, in one place.

The daemon and the simulator only talk to these protocols; the embedded and
the real backends sit behind them side by side (the embedded blockstore and
kubo behind `Storage`, eth-tester and anvil behind the chain client, the torch
trainer behind `Trainer`).
"""

from __future__ import annotations

from typing import Mapping, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Storage(Protocol):
    """Content-addressed bytes: put returns the CID `ipfs add` would print."""

    def put(self, data: bytes) -> str:
        """Store `data`, pin it, and return its CID."""

    def get(self, cid: str) -> bytes:
        """Return the bytes under `cid`, verified block by block; raise StorageError if absent."""

    def has(self, cid: str) -> bool:
        """Whether every block of `cid` is held locally."""

    def pin(self, cid: str) -> None:
        """Keep `cid` and every block below it through garbage collection."""

    def unpin(self, cid: str) -> None:
        """Let garbage collection remove `cid`'s blocks (unless pinned by another root)."""


class Trainer(Protocol):
    """Local training on private data: from a global model to a weight delta."""

    num_samples: int

    def train(self, global_weights: Mapping[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
        """Train from `global_weights` and return the float32 delta per state-dict key."""

    def evaluate(self, weights: Mapping[str, np.ndarray]) -> float:
        """Accuracy of `weights` on this trainer's evaluation data, in [0, 1]."""
