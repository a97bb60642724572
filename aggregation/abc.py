"""The one seam of aggregation: a `Rule` turns fixed-point deltas into one.

Adding a rule is one file with one function matching `Rule`, plus its
line in `rules.RULES` and `rules.OPTIONS`. Rules see only
validated fixed-point values, so every rule is exact integer arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Iterator, Mapping, Protocol, Sequence

import numpy as np
from numpy.typing import NDArray

from aggregation.errors import AggregationError


class Float32Backed(Mapping[str, NDArray[np.int64]]):
    """Fixed-point tensors kept as their float32 values and converted on first use.

    ``backed[key]`` is ``fixedpoint.to_fixed(floats[key])`` (cached), so a
    rule sees int64 as usual; a rule that can work from the float32 values
    (FedAvg, see `fixedpoint.weighted_mean_float32`) reads `floats` instead and
    never makes the int64 copy. A value out of the fixed-point range raises
    FixedPointRangeError when it is converted or read. Integer buffers'
    deltas (`integers`) are int64 already and are served as they are.
    """

    def __init__(self, floats: Mapping[str, NDArray[np.float32]], integers: Mapping[str, NDArray[np.int64]] | None = None) -> None:
        for key, array in floats.items():
            if np.asarray(array).dtype != np.float32:
                raise AggregationError(f"tensor {key!r} must be float32, got {np.asarray(array).dtype}")
        self.floats: Mapping[str, NDArray[np.float32]] = dict(floats)
        # Integer buffers' deltas are already on their own (integer) grid.
        self._fixed: dict[str, NDArray[np.int64]] = dict(integers or {})
        self._keys = sorted({*self.floats, *self._fixed})

    def subset(self, keys: frozenset[str] | set[str]) -> Float32Backed:
        """The float32 tensors among `keys`, sharing this mapping's conversions."""
        part = Float32Backed({k: v for k, v in self.floats.items() if k in keys})
        part._fixed = self._fixed
        part._keys = sorted(part.floats)
        return part

    def __getitem__(self, key: str) -> NDArray[np.int64]:
        fixed = self._fixed.get(key)
        if fixed is None:
            from aggregation.fixedpoint import to_fixed

            fixed = self._fixed[key] = to_fixed(self.floats[key])
        return fixed

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


@dataclass(frozen=True)
class FixedUpdate:
    """A validated update in fixed point (see fixedpoint.to_fixed)."""

    tensors: Mapping[str, NDArray[np.int64]]  # int64 delta per state-dict key
    num_samples: int  # the sender's claim, >= 1; rules cap it themselves
    # Integer buffers (see aggregation.dtypes): aggregated by the rule like the
    # rest, but left out of whatever measures the parameters (Multi-Krum's
    # distances, clipping norms, contribution scores).
    integer_keys: frozenset[str] = frozenset()

    @classmethod
    def from_float32(cls, tensors: Mapping[str, NDArray[np.float32] | NDArray[np.int64]], num_samples: int) -> FixedUpdate:
        """An update whose fixed-point tensors are its float32 ones, converted when first read; int64 ones are integer buffers."""
        integers = {k: v for k, v in tensors.items() if np.asarray(v).dtype == np.int64}
        floats = {k: v for k, v in tensors.items() if k not in integers}
        return cls(tensors=Float32Backed(floats, integers), num_samples=num_samples, integer_keys=frozenset(integers))

    def parameter_keys(self) -> list[str]:
        """The sorted keys of the float parameters: what distances, norms and scores measure."""
        return [k for k in sorted(self.tensors) if k not in self.integer_keys]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class RuleOptions:
    """Options of the rules; each rule reads the ones it needs (see rules.OPTIONS)."""

    # FedAvg and Multi-Krum weights are min(num_samples, max_samples, SAMPLE_CAP_FACTOR x the
    # round's median claim) (fedavg.sample_weights); None = no cap but the median one.
    max_samples: int | None = None
    # trimmed-mean: the fraction BETA in [0, 0.5); int(BETA * n) values are
    # dropped from each end of every coordinate.
    trim: float | None = None
    # multi-krum: the assumed number of Byzantine updates (>= 0); each score
    # sums the distances to the max(1, n - f - 2) nearest other updates.
    f: int | None = None
    # multi-krum: how many of the best-scored updates are averaged (>= 1).
    m: int | None = None
    # Any rule: every update is first scaled to an L2 norm of at most clip
    # (> 0, in the model's own units); None = no clipping.
    clip: float | None = None

    def __post_init__(self) -> None:
        if self.max_samples is not None and not (_is_int(self.max_samples) and self.max_samples > 0):
            raise AggregationError(f"max_samples must be a positive integer, got {self.max_samples!r}")
        if self.trim is not None and not (_is_real(self.trim) and 0 <= self.trim < 0.5):
            raise AggregationError(f"trim must be a fraction in [0, 0.5), got {self.trim!r}")
        if self.f is not None and not (_is_int(self.f) and self.f >= 0):
            raise AggregationError(f"f must be a non-negative integer, got {self.f!r}")
        if self.m is not None and not (_is_int(self.m) and self.m >= 1):
            raise AggregationError(f"m must be a positive integer, got {self.m!r}")
        if self.clip is not None and not (_is_real(self.clip) and self.clip > 0):
            raise AggregationError(f"clip must be a positive finite number, got {self.clip!r}")

    def given(self) -> set[str]:
        """The names of the options that are set (not None)."""
        return {f.name for f in fields(self) if getattr(self, f.name) is not None}


class Rule(Protocol):
    """An aggregation rule: deltas in canonical order -> aggregate delta per key."""

    def __call__(self, updates: Sequence[FixedUpdate], options: RuleOptions, /) -> dict[str, NDArray[np.int64]]:
        """Aggregate at least one update with identical keys and shapes.

        Must be a pure function of its inputs, and exact: the same inputs give
        the same integers on every machine.
        """
        ...
