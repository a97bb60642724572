"""Coordinate-wise median [Yin et al., 2018], in exact fixed point.

"Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates",
ICML 2018: every coordinate of the new delta is the median of that
coordinate over the clients' deltas, so a minority of arbitrary (Byzantine)
updates cannot drag any coordinate outside the honest values' range.

Sample counts are ignored, as in Flower's `aggregate_median`. For an even
number of updates the median is the mean of the two middle values, rounded
half to even on the 2**-32 grid: exact, so the same on every machine.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from numpy.typing import NDArray

from aggregation.abc import FixedUpdate, RuleOptions
from aggregation.errors import AggregationError
from aggregation.fixedpoint import div_round_half_even, sorted_columns


def coordinate_median(qs: Sequence[np.ndarray]) -> NDArray[np.int64]:
    """The coordinate-wise median of int64 arrays of one shape, exact."""
    n = len(qs)
    shape = np.shape(qs[0])
    out = np.empty(int(np.prod(shape, dtype=np.int64)), dtype=np.int64)
    middle = n // 2
    for coords, block in sorted_columns(qs):
        if n % 2:
            out[coords] = block[:, middle]
        else:
            # |q| < 2**39, so the sum of two fits int64 with room to spare.
            out[coords] = div_round_half_even(block[:, middle - 1] + block[:, middle], 2)
    return out.reshape(shape)


def aggregate(updates: Sequence[FixedUpdate], options: RuleOptions, /) -> dict[str, NDArray[np.int64]]:
    """Coordinate-wise median of the fixed-point deltas, per state-dict key."""
    if not updates:
        raise AggregationError("median needs at least one update")
    keys = sorted(updates[0].tensors)
    return {key: coordinate_median([u.tensors[key] for u in updates]) for key in keys}
