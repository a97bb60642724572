"""Contribution scores: cosine similarity with the aggregate, exact, in WAD.

SPEC section 5: a participant's score is the cosine similarity of its delta
with the round's aggregate delta, clipped to [0, 1] and expressed in WAD
(1e18, the fixed-point unit of the reward contracts). It is computed on the
fixed-point integers with exact integer arithmetic, so every verifier derives
the same score and the chain can compare them for equality. The cosine
measure follows contribution scoring in FL incentive work such as
FLTrust [Cao et al., NDSS 2021], which weights clients by ReLU-clipped
cosine similarity.
"""

from __future__ import annotations

import hashlib
import math
from typing import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from aggregation.fixedpoint import exact_dot

WAD = 10**18


def flatten(tensors: Mapping[str, np.ndarray]) -> NDArray[np.int64]:
    """Concatenate fixed-point tensors in sorted key order into one int64 vector."""
    if not tensors:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.asarray(tensors[key], dtype=np.int64).reshape(-1) for key in sorted(tensors)])


def cosine_wad(u: np.ndarray, a: np.ndarray) -> int:
    """``floor(WAD * max(0, cos(u, a)))`` exactly; 0 when either vector is zero."""
    dot = exact_dot(u, a)
    norm_u = exact_dot(u, u)
    norm_a = exact_dot(a, a)
    if dot <= 0 or norm_u == 0 or norm_a == 0:
        return 0
    # floor(WAD * dot / sqrt(nu * na)) = isqrt(floor(dot^2 * WAD^2 / (nu * na))),
    # since floor(sqrt(floor(z))) = floor(sqrt(z)) for z >= 0: no float anywhere.
    score = math.isqrt(dot * dot * WAD * WAD // (norm_u * norm_a))
    # Cauchy-Schwarz already bounds it by WAD; the min states the contract.
    return min(score, WAD)


def contribution_scores(
    deltas: Sequence[Mapping[str, np.ndarray] | None], aggregate: Mapping[str, np.ndarray]
) -> list[int]:
    """Score each fixed-point delta (None = rejected) against the aggregate delta, in WAD.

    A rejected update scores 0. A delta equal in value to an earlier accepted
    one (in the given, canonical order) scores 0 -- copying another
    participant's update earns nothing -- while the first copy keeps its score.
    """
    target = flatten(aggregate)
    scores: list[int] = []
    # Digest -> earlier vectors with that digest; equality is then checked
    # exactly, so a hash collision cannot zero an honest score.
    seen: dict[bytes, list[NDArray[np.int64]]] = {}
    for delta in deltas:
        if delta is None:
            scores.append(0)
            continue
        vector = flatten(delta)
        digest = hashlib.sha256(vector.astype("<i8").tobytes()).digest()
        earlier = seen.setdefault(digest, [])
        if any(np.array_equal(vector, other) for other in earlier):
            scores.append(0)
            continue
        earlier.append(vector)
        scores.append(cosine_wad(vector, target))
    return scores
