"""Federated Averaging (FedAvg) [McMahan et al., 2017], in exact fixed point.

"Communication-Efficient Learning of Deep Networks from Decentralized Data",
AISTATS 2017: the new delta is the mean of the clients' deltas weighted by
their sample counts. Here the counts are capped (`RuleOptions.max_samples`) so
that no participant can buy weight by claiming a huge dataset, and the mean is
`fixedpoint.weighted_mean`: exact, so permutation invariant and bit-identical
on every machine.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from numpy.typing import NDArray

from aggregation.abc import Float32Backed, FixedUpdate, RuleOptions
from aggregation.errors import AggregationError
from aggregation.fixedpoint import weighted_mean, weighted_mean_float32


def sample_weights(updates: Sequence[FixedUpdate], max_samples: int | None) -> list[int]:
    """Each update's FedAvg weight: its num_samples, capped by `max_samples` when given."""
    if max_samples is None:
        return [u.num_samples for u in updates]
    return [min(u.num_samples, max_samples) for u in updates]


def aggregate(updates: Sequence[FixedUpdate], options: RuleOptions, /) -> dict[str, NDArray[np.int64]]:
    """Sample-weighted mean of the fixed-point deltas, per state-dict key."""
    if not updates:
        raise AggregationError("fedavg needs at least one update")
    weights = sample_weights(updates, options.max_samples)
    keys = sorted(updates[0].tensors)
    sources = [u.tensors for u in updates]
    if all(isinstance(t, Float32Backed) for t in sources):
        # Straight from the float32 values: the same integers, without an
        # int64 copy of every update.
        floats = [t.floats for t in sources if isinstance(t, Float32Backed)]
        return {
            key: weighted_mean_float32([f[key] for f in floats], weights)
            if key in floats[0]
            else weighted_mean([t[key] for t in sources], weights)
            for key in keys
        }
    return {key: weighted_mean([t[key] for t in sources], weights) for key in keys}
