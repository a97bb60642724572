"""The one seam of aggregation: a `Rule` turns fixed-point deltas into one.

Adding a rule (median, trimmed mean, multi-krum) is one file with one
function matching `Rule`, plus one line in `rules.RULES`. Rules see only
validated fixed-point values, so every rule is exact integer arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
from numpy.typing import NDArray

from aggregation.errors import AggregationError


@dataclass(frozen=True)
class FixedUpdate:
    """A validated update in fixed point (see fixedpoint.to_fixed)."""

    tensors: dict[str, NDArray[np.int64]]  # int64 delta per state-dict key
    num_samples: int  # the sender's claim, >= 1; rules cap it themselves


@dataclass(frozen=True)
class RuleOptions:
    """Options shared by the rules; each rule reads the ones it needs."""

    # FedAvg weights are min(num_samples, max_samples); None = uncapped.
    max_samples: int | None = None
    # Future rules add their fields here (trim, f, m, clip), all defaulted.

    def __post_init__(self) -> None:
        m = self.max_samples
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m <= 0):
            raise AggregationError(f"max_samples must be a positive integer, got {m!r}")


class Rule(Protocol):
    """An aggregation rule: deltas in canonical order -> aggregate delta per key."""

    def __call__(self, updates: Sequence[FixedUpdate], options: RuleOptions, /) -> dict[str, NDArray[np.int64]]:
        """Aggregate at least one update with identical keys and shapes.

        Must be a pure function of its inputs, and exact: the same inputs give
        the same integers on every machine.
        """
        ...
