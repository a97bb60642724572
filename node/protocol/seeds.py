"""Seeds and salts: how a node's randomness derives from one number, the same in every mode.

The in-process simulator and the daemons derive per-node training seeds with these functions,
which is why an honest federation gives the same global models either way.
"""

from __future__ import annotations

import hashlib
from typing import Callable


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from `parts`, the same on every machine and in every mode."""
    text = "/".join(str(p) for p in ("fedledger", *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") >> 1


def node_seed(run_seed: int, index: int) -> int:
    """The training seed of node `index` of a federation started from `run_seed` (simulations)."""
    return derive_seed("node", run_seed, index)


def seeded_salt(seed: int) -> Callable[[int, int], bytes]:
    """Commitment salts derived from a node's seed: for simulations only, where a run must be a
    function of its seed. A real node's salts are secret random bytes (ProtocolNode's default)."""
    return lambda task, round_: hashlib.sha256(f"fedledger/salt/{seed}/{task}/{round_}".encode()).digest()


def train_seed(seed: int, task: int, round_: int) -> int:
    """The seed a node with `seed` trains round `round_` of `task` with."""
    return derive_seed("train", seed, task, round_)
