"""Contribution scores: cosine similarity with the aggregate, relative to the round, exact, in WAD.

SPEC section 5: a participant's score measures the cosine similarity of its
delta with the round's aggregate delta, clipped to [0, 1] and expressed in WAD
(1e18, the fixed-point unit of the reward contracts). It is computed on the
fixed-point integers with exact integer arithmetic, so every verifier derives
the same score and the chain can compare them for equality. The cosine
measure follows RFFL (Xu & Lyu) and FLTrust [Cao et al., NDSS 2021], which
weights clients by ReLU-clipped cosine similarity; here it is taken relative
to the round's median cosine (see `contribution_scores` for why). Identical or
replayed updates, and updates of a norm far above the round's, score 0 and are
not aggregated (`screen`).
"""

from __future__ import annotations

import math
from typing import Collection, Mapping, Sequence

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


PROBE = 64
"""How many leading values of an update's first tensor pick the candidates an exact comparison checks."""


def _values(delta: Mapping[str, np.ndarray], key: str) -> np.ndarray:
    """`delta[key]`, or its float32 values when the delta keeps them (`abc.Float32Backed`): the
    kernels convert those as they read them, so no int64 copy of the update is made."""
    floats = getattr(delta, "floats", None)
    if floats is not None and key in floats:
        return floats[key]
    return delta[key]


def _probe(delta: Mapping[str, np.ndarray], key: str) -> bytes:
    """The fixed-point values of the first PROBE coordinates of `delta[key]`, as bytes.

    Equal deltas have equal probes. A float-backed delta converts only these
    coordinates, so probing an earlier round's update costs no full pass.
    """
    values = np.asarray(_values(delta, key)).reshape(-1)[:PROBE]
    if values.dtype == np.float32:
        from aggregation.fixedpoint import to_fixed

        return to_fixed(values).tobytes()
    return np.ascontiguousarray(values, dtype=np.int64).tobytes()


def _same(x: Mapping[str, np.ndarray], y: Mapping[str, np.ndarray], keys: Sequence[str]) -> bool:
    """Whether two deltas have the same fixed-point values. Equal float32 values convert to
    equal integers; unequal ones may too (rint takes tiny values to 0), so only they are converted."""
    return all(_same_floats(_values(x, key), _values(y, key)) or np.array_equal(x[key], y[key]) for key in keys)


def _same_floats(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype == np.float32 and np.array_equal(a, b)


REPLAY_COSINE = (49, 50)
"""A delta whose cosine with an earlier round's delta is at least 49/50 = 0.98 is a replay. An
honest node's update is most like its own last one, and that reached 0.964 in the robustness
grid's honest runs (IID and label skew, docs/robustness-history.md); an old update resent with
Gaussian noise of a tenth of its norm keeps 0.995, and two such noisy copies 0.990. Noise of
about 0.2 of the norm gets past it, and costs the sender alignment with the round too."""


def _near_replays(
    deltas: Sequence[Mapping[str, np.ndarray] | None],
    fresh: Collection[int],
    earlier: Sequence[Mapping[str, np.ndarray]],
    keys: Sequence[str],
) -> set[int]:
    """The fresh deltas whose cosine with one of `earlier` is at least REPLAY_COSINE, exactly:
    dot > 0 and dot^2 * 50^2 >= 49^2 * |u|^2 * |v|^2, on the int64 values (no float). An earlier
    delta outside the kernels' range is not compared (it was never scored either)."""
    from aggregation.kernels import dots_with

    if not fresh or not earlier:
        return set()
    order = sorted(fresh)
    rows = [[_values(deltas[i], key) for key in keys] for i in order]  # type: ignore[arg-type]
    num, den = REPLAY_COSINE
    found: set[int] = set()
    for old in earlier:
        per_row, old_norm, in_range = dots_with(rows, [_values(old, key) for key in keys], DOT_BOUND)
        if not in_range:
            continue
        for i, (dot, norm) in zip(order, per_row):
            if dot > 0 and dot * dot * den * den >= num * num * norm * old_norm:
                found.add(i)
    return found


def relative_score(cosine: int, median: int) -> int:
    """``clip(2 * cosine / median - 1, 0, 1)`` in WAD, floored: WAD at or above the round's
    median cosine, falling linearly to 0 at half of it; 0 when the median is 0."""
    if median <= 0:
        return 0
    return max(0, min(WAD, (2 * cosine - median) * WAD // median))


NORM_BOUND = 3
"""A delta whose norm is more than NORM_BOUND times the round's (upper) median norm is not
aggregated and scores 0. Honest norms spread with the data: in the robustness grid's honest runs
(12 nodes, 5 rounds; docs/robustness-history.md) they stayed within 0.87-1.13x the round's
median under IID shards, 0.35-2.23x under Dirichlet(0.5) label skew (whose largest shard holds
3.2x the median one) and 0.57-1.45x under Dirichlet(0.1). Model replacement boosts an update by about the federation's
size: 12x there, which put even the smallest attacker's shard at 3.8x the median (4 let it
through in round 1 and its reputation came down a round late). An attacker that boosts by less
than the bound is, under FedAvg, worth at most NORM_BOUND honest updates of its sample count."""


def screen(
    deltas: Sequence[Mapping[str, np.ndarray] | None],
    previous: Sequence[Mapping[str, np.ndarray] | None] = (),
) -> set[int]:
    """The valid deltas (None = rejected) that are not fresh work, or that no honest spread explains.

    - a delta equal in value to another of the same round: commit-reveal means no node sees
      another's update before committing, so identical updates can only come from nodes acting
      together, and all of them are screened;
    - a delta equal in value to one in `previous` (the earlier round's accepted updates), or
      within `REPLAY_COSINE` of one (resent with a little noise added): a resent or copied old
      update is not new work;
    - of the rest, a delta whose norm exceeds NORM_BOUND times their upper median norm.

    None of this depends on the aggregate, so the rule aggregates the rest
    (`api.aggregate_round`), and the screened deltas score 0 (`contribution_scores`). Every
    test is on the exact fixed-point values (squared norms are exact integers).
    """
    keys = sorted(next((d for d in deltas if d is not None), {}))
    accepted = [i for i, delta in enumerate(deltas) if delta is not None]
    if not accepted or not keys:
        return set()
    norms = _norms([[_values(deltas[i], key) for key in keys] for i in accepted])  # type: ignore[index]
    # Equal deltas have equal norms and probes: only deltas sharing both are compared, and
    # exactly, so a coincidence of the pair cannot screen an update.
    groups: dict[tuple[int, bytes], list[list[int]]] = {}
    for i, norm in zip(accepted, norms):
        for group in groups.setdefault((norm, _probe(deltas[i], keys[0])), []):  # type: ignore[arg-type]
            if _same(deltas[i], deltas[group[0]], keys):  # type: ignore[arg-type]
                group.append(i)
                break
        else:
            groups[(norm, _probe(deltas[i], keys[0]))].append([i])  # type: ignore[arg-type]
    fresh = {group[0]: pair[0] for pair, found in groups.items() for group in found if len(group) == 1}
    if previous:
        earlier: dict[bytes, list[Mapping[str, np.ndarray]]] = {}
        for old in previous:
            if old is not None and sorted(old) == keys:
                earlier.setdefault(_probe(old, keys[0]), []).append(old)
        for i in list(fresh):
            if any(_same(deltas[i], old, keys) for old in earlier.get(_probe(deltas[i], keys[0]), ())):  # type: ignore[arg-type]
                del fresh[i]
        for i in _near_replays(deltas, fresh, [old for group in earlier.values() for old in group], keys):
            del fresh[i]
    if fresh:
        median = sorted(fresh.values())[len(fresh) // 2]  # squared norms: the bound squared
        for i, norm in list(fresh.items()):
            if median > 0 and norm > NORM_BOUND * NORM_BOUND * median:
                del fresh[i]
    return set(accepted) - set(fresh)


def _norms(rows: Sequence[Sequence[np.ndarray]]) -> list[int]:
    """Each row's exact squared norm (its dot product with itself, `kernels.dots_with`)."""
    from aggregation.kernels import dots_of_self

    norms, in_range = dots_of_self(rows, DOT_BOUND)
    if not in_range:
        raise FixedPointRangeError(f"screen: fixed-point values must satisfy |q| < 2**{DOT_BOUND.bit_length() - 1}")
    return norms


def contribution_scores(
    deltas: Sequence[Mapping[str, np.ndarray] | None],
    aggregate: Mapping[str, np.ndarray],
    previous: Sequence[Mapping[str, np.ndarray] | None] = (),
    *,
    screened: set[int] | None = None,
) -> list[int]:
    """Score each fixed-point delta (None = rejected) against the aggregate delta, in WAD.

    The raw measure is the clipped cosine of a delta with the aggregate
    (`cosine_from_dots`). The score is that cosine relative to the round's
    (upper) median one (`relative_score`): an update as aligned as the typical update
    of its round scores 1, one at half the typical alignment or less scores 0.
    How aligned honest updates are depends on how heterogeneous the data is
    (about 0.75 on IID shards, 0.3 under label skew), so an absolute cosine
    cannot be held to one threshold; a relative one can, as long as honest
    updates are the majority.

    Scored 0, and left out of the median: a rejected update, and every delta
    `screen(deltas, previous)` names (copies, replays, norms out of bound);
    `screened` passes that set when the caller already has it.
    Each delta's dot product with the aggregate and its squared norm are
    exact integers (`kernels.dots_with`); values must satisfy |q| < 2**40.
    """
    from aggregation.kernels import dots_with  # compiles (or loads) the kernels on first use

    keys = sorted(aggregate)
    scores = [0] * len(deltas)
    if screened is None:
        screened = screen(deltas, previous)
    fresh = [i for i, delta in enumerate(deltas) if delta is not None and i not in screened]
    if not fresh:
        return scores
    rows = [[_values(deltas[i], key) for key in keys] for i in fresh]  # type: ignore[arg-type]
    per_row, aggregate_norm, in_range = dots_with(rows, [aggregate[key] for key in keys], DOT_BOUND)
    if not in_range:
        raise FixedPointRangeError(f"contribution_scores: fixed-point values must satisfy |q| < 2**{DOT_BOUND.bit_length() - 1}")
    cosines = {i: cosine_from_dots(dot, norm, aggregate_norm) for i, (dot, norm) in zip(fresh, per_row)}
    median = sorted(cosines.values())[len(cosines) // 2]  # the upper median: of two, the better
    for i, cosine in cosines.items():
        scores[i] = relative_score(cosine, median)
    return scores
