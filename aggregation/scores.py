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

import math
from typing import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from aggregation.errors import FixedPointRangeError
from aggregation.fixedpoint import DOT_BOUND, exact_dot

WAD = 10**18


def flatten(tensors: Mapping[str, np.ndarray]) -> NDArray[np.int64]:
    """Concatenate fixed-point tensors in sorted key order into one int64 vector."""
    if not tensors:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.asarray(tensors[key], dtype=np.int64).reshape(-1) for key in sorted(tensors)])


def cosine_from_dots(dot: int, norm_u: int, norm_a: int) -> int:
    """``floor(WAD * max(0, dot / sqrt(norm_u * norm_a)))`` exactly; 0 when a norm is zero."""
    if dot <= 0 or norm_u == 0 or norm_a == 0:
        return 0
    # floor(WAD * dot / sqrt(nu * na)) = isqrt(floor(dot^2 * WAD^2 / (nu * na))),
    # since floor(sqrt(floor(z))) = floor(sqrt(z)) for z >= 0: no float anywhere.
    score = math.isqrt(dot * dot * WAD * WAD // (norm_u * norm_a))
    # Cauchy-Schwarz already bounds it by WAD; the min states the contract.
    return min(score, WAD)


def cosine_wad(u: np.ndarray, a: np.ndarray) -> int:
    """``floor(WAD * max(0, cos(u, a)))`` exactly; 0 when either vector is zero."""
    return cosine_from_dots(exact_dot(u, a), exact_dot(u, u), exact_dot(a, a))


def _same(x: Mapping[str, np.ndarray], y: Mapping[str, np.ndarray], keys: Sequence[str]) -> bool:
    return all(np.array_equal(x[key], y[key]) for key in keys)


def contribution_scores(
    deltas: Sequence[Mapping[str, np.ndarray] | None], aggregate: Mapping[str, np.ndarray]
) -> list[int]:
    """Score each fixed-point delta (None = rejected) against the aggregate delta, in WAD.

    A rejected update scores 0. A delta equal in value to an earlier accepted
    one (in the given, canonical order) scores 0 -- copying another
    participant's update earns nothing -- while the first copy keeps its score.
    Each delta's dot product with the aggregate and its squared norm are
    exact integers (`kernels.dots_with`); values must satisfy |q| < 2**40.
    """
    from aggregation.kernels import dots_with  # compiles (or loads) the kernels on first use

    keys = sorted(aggregate)
    scores = [0] * len(deltas)
    accepted = [i for i, delta in enumerate(deltas) if delta is not None]
    if not accepted:
        return scores
    rows = [[deltas[i][key] for key in keys] for i in accepted]  # type: ignore[index]
    per_row, aggregate_norm, in_range = dots_with(rows, [aggregate[key] for key in keys], DOT_BOUND)
    if not in_range:
        raise FixedPointRangeError(f"contribution_scores: fixed-point values must satisfy |q| < 2**{DOT_BOUND.bit_length() - 1}")
    # Equal deltas have equal (dot, norm): only deltas sharing that pair are
    # compared, and exactly, so a coincidence of the pair cannot zero a score.
    seen: dict[tuple[int, int], list[int]] = {}
    for i, (dot, norm) in zip(accepted, per_row):
        earlier = seen.setdefault((dot, norm), [])
        if any(_same(deltas[i], deltas[j], keys) for j in earlier):  # type: ignore[arg-type]
            continue
        earlier.append(i)
        scores[i] = cosine_from_dots(dot, norm, aggregate_norm)
    return scores
