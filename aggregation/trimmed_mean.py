"""Coordinate-wise trimmed mean [Yin et al., 2018], in exact fixed point.

"Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates",
ICML 2018: for every coordinate, drop the largest and smallest values and
average the rest. With trim fraction BETA, floor(BETA * n) values go from
each end (computed as ``int(BETA * n)`` on the IEEE double BETA, exactly as
`scipy.stats.trim_mean` and Flower's `aggregate_trimmed_avg` do, so the same
count on every machine); the mean of the remaining integers is exact, rounded
half to even. Sample counts are ignored, as in Flower.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from numpy.typing import NDArray

from aggregation.abc import FixedUpdate, RuleOptions
from aggregation.errors import AggregationError
from aggregation.fixedpoint import MAX_UPDATES, div_round_half_even, sorted_columns


def trim_count(n: int, trim: float) -> int:
    """How many values to drop from each end of a coordinate's n values."""
    # trim < 0.5 already keeps one value; the min guards the float product.
    return min(int(trim * n), (n - 1) // 2)


def coordinate_trimmed_mean(qs: Sequence[np.ndarray], trim: float) -> NDArray[np.int64]:
    """The coordinate-wise trimmed mean of int64 arrays of one shape, exact."""
    n = len(qs)
    if not 0 < n <= MAX_UPDATES:
        raise AggregationError(f"trimmed mean needs 1 to 2**20 arrays, got {n}")
    cut = trim_count(n, trim)
    kept = n - 2 * cut
    shape = np.shape(qs[0])
    if cut == 0:
        # Nothing to drop: no sort needed. |q| < 2**39 and n <= 2**20 keep
        # the sum below 2**59.
        total = np.zeros(shape, dtype=np.int64)
        for q in qs:
            total += q
        return div_round_half_even(total, kept)
    out = np.empty(int(np.prod(shape, dtype=np.int64)), dtype=np.int64)
    for coords, block in sorted_columns(qs):
        out[coords] = div_round_half_even(block[:, cut : n - cut].sum(axis=1), kept)
    return out.reshape(shape)


def aggregate(updates: Sequence[FixedUpdate], options: RuleOptions, /) -> dict[str, NDArray[np.int64]]:
    """Coordinate-wise trimmed mean of the fixed-point deltas (trim = `options.trim`), per key."""
    if not updates:
        raise AggregationError("trimmed-mean needs at least one update")
    if options.trim is None:
        raise AggregationError("trimmed-mean needs the trim fraction (trim)")
    keys = sorted(updates[0].tensors)
    return {key: coordinate_trimmed_mean([u.tensors[key] for u in updates], options.trim) for key in keys}
