"""Multi-Krum [Blanchard et al., 2017], with exact distances.

"Machine Learning with Adversaries: Byzantine Tolerant Gradient Descent",
NeurIPS 2017. With n updates of which at most f are Byzantine, the Krum
score of update i is the sum of its squared Euclidean distances to its
n - f - 2 nearest other updates; Multi-Krum keeps the m updates with the
lowest scores and averages them. As in Flower's `aggregate_krum`, the
neighbour count is max(1, n - f - 2) and the kept updates are averaged
weighted by their sample counts, capped as in FedAvg (`fedavg.sample_weights`:
the median is over all the updates of the round, not only the kept ones, so a
selection cannot be steered to raise the cap).

The squared distances are exact integers (from `fixedpoint.exact_gram`), so
the selection is the same on every machine; equal scores are broken by the
canonical (on-chain) index, lower first. m larger than the number of valid
updates keeps them all: a round with rejected updates goes on.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from numpy.typing import NDArray

from aggregation.abc import FixedUpdate, RuleOptions
from aggregation.errors import AggregationError
from aggregation.fedavg import sample_weights
from aggregation.fixedpoint import exact_gram, weighted_mean


def squared_distances(updates: Sequence[FixedUpdate]) -> list[list[int]]:
    """Exact pairwise squared Euclidean distances between the updates (all parameters together; integer buffers do not count)."""
    keys = updates[0].parameter_keys()
    gram = exact_gram([[u.tensors[key] for key in keys] for u in updates])
    n = len(updates)
    return [[gram[i][i] + gram[j][j] - 2 * gram[i][j] for j in range(n)] for i in range(n)]


def krum_scores(updates: Sequence[FixedUpdate], f: int) -> list[int]:
    """Each update's Krum score: the sum of its max(1, n - f - 2) smallest squared distances to the others."""
    n = len(updates)
    if n == 0:
        raise AggregationError("multi-krum needs at least one update")
    distances = squared_distances(updates)
    neighbours = max(1, n - f - 2)
    scores = []
    for i, row in enumerate(distances):
        others = sorted(d for j, d in enumerate(row) if j != i)
        scores.append(sum(others[:neighbours]))
    return scores


def select(updates: Sequence[FixedUpdate], f: int, m: int) -> list[int]:
    """Canonical indices of the min(m, n) updates with the lowest Krum scores, best first."""
    scores = krum_scores(updates, f)
    ranked = sorted(range(len(updates)), key=lambda i: (scores[i], i))
    return ranked[: min(m, len(updates))]


def aggregate(updates: Sequence[FixedUpdate], options: RuleOptions, /) -> dict[str, NDArray[np.int64]]:
    """Sample-weighted mean of the m updates Multi-Krum selects (f = `options.f`, m = `options.m`)."""
    if not updates:
        raise AggregationError("multi-krum needs at least one update")
    if options.f is None or options.m is None:
        raise AggregationError("multi-krum needs the number of Byzantine updates (f) and of updates to keep (m)")
    chosen = sorted(select(updates, options.f, options.m))
    kept = [updates[i] for i in chosen]
    weights = sample_weights(kept, options.max_samples, updates)
    keys = sorted(updates[0].tensors)
    return {key: weighted_mean([u.tensors[key] for u in kept], weights) for key in keys}
