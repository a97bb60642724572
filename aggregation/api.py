"""One aggregation round, from bytes to bytes: what the node and the CLI call.

`aggregate_round` is a pure function of (rule, base model bytes, update bytes
in canonical on-chain order, options): every verifier that runs it gets the
same model bytes -- hence the same CID -- and the same scores (SPEC section 5).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from aggregation.abc import Float32Backed, FixedUpdate, RuleOptions
from aggregation.dtypes import FLOATS, fixed_of, from_fixed, layout
from aggregation.errors import AggregationError, InvalidUpdateError
from aggregation.rules import apply_rule, check_options
from aggregation.scores import contribution_scores, screen
from aggregation.update import Update, check_integer_deltas, check_layout, decode_model, decode_update, encode_model

DEFAULT_MAX_UPDATE_BYTES = 64 * 2**20


@dataclass(frozen=True)
class AggregateResult:
    """The outcome of one round; the lists follow the input (canonical) order."""

    model: bytes  # canonical safetensors of the new global model: base + aggregate delta
    scores_wad: list[int]  # contribution score per update, in WAD (1e18 = 1.0)
    accepted: list[bool]  # whether each update passed validation (and is scored); `earned` says which are aggregated
    errors: list[str | None]  # why each rejected update was rejected, None if accepted
    # Each update as decoded and validated (None if rejected): a later round's `previous` can be
    # these instead of the bytes, which it would only decode again.
    decoded: tuple[Update | None, ...] = field(default=(), compare=False, repr=False)


def aggregate_round(
    rule: str,
    base_model: bytes,
    updates: Sequence[bytes],
    *,
    options: RuleOptions | None = None,
    max_samples: int | None = None,
    max_update_bytes: int = DEFAULT_MAX_UPDATE_BYTES,
    metadata: Mapping[str, str] | None = None,
    previous: Sequence[bytes | Update] = (),
    claims: Sequence[Mapping[str, str]] | None = None,
    earned: Sequence[bool] | None = None,
) -> AggregateResult:
    """Aggregate `updates` onto `base_model` with `rule` and score each update.

    `options` holds the rule's options (trim, f, m, clip, max_samples);
    `max_samples` alone is a shorthand for ``RuleOptions(max_samples=...)``.
    Options that do not fit the rule raise AggregationError before any
    update is read.

    The base model is trusted but validated (InvalidModelError) and defines the
    expected keys, shapes and dtypes (`aggregation.dtypes`: float32 deltas for
    float parameters, int64 ones for integer buffers; each new value is cast
    back to its tensor's own dtype). Each update that fails validation is rejected on
    its own (score 0, reason in `errors`). The rule aggregates the valid updates that
    `scores.screen` lets through: copies of one another, replays of `previous` and updates
    of a norm far above the round's score 0 and move nothing (when every valid update is
    screened, all valid ones are aggregated). With no valid update the new model is the
    base, re-encoded canonically.
    `metadata` is written into the new model file.

    `previous` are the update files of the task's previous round (canonical
    order; invalid or unavailable ones, e.g. ``b""``, are skipped): an update
    whose delta equals one of them, or is within `scores.REPLAY_COSINE` of one, is a replay
    (`scores.screen`). An entry may be the `Update` that round's
    aggregation decoded from the file (`AggregateResult.decoded`) instead of
    the bytes; it is checked against this model's names, shapes and dtypes.

    `claims`, one per update, is what the round says each file must state about itself: its
    metadata values by key (the protocol gives task, round, base and the num_samples its
    sender revealed on-chain). A file whose metadata differs, or lacks a claimed key, is
    rejected like any invalid update: it was made for another round, or says more than its
    sender claimed where everyone could see it.

    `earned`, one per update, says whether its sender had earned influence before this round
    (the chain records it at reveal: a score above 0, or training in a founding round).
    Reputation before influence: the rule aggregates the screened-in updates of senders that
    earned, and every valid update is scored against that aggregate, so an identity that joins an
    established federation is judged before it can move the model. When no such update's
    sender has earned (a new federation's first round), all of them are aggregated.
    None: all earned.
    """
    options = _options(options, max_samples)
    check_options(rule, options)
    # The base is ours, not a peer's: its own length is the only size bound.
    base_weights, _ = decode_model(base_model, max_bytes=len(base_model))
    expected = {name: array.shape for name, array in base_weights.items()}
    dtypes = layout(base_weights)
    base_fixed = {name: fixed_of(array, dtypes[name]) for name, array in base_weights.items()}
    parameters = frozenset(name for name, code in dtypes.items() if code in FLOATS)

    fixed_updates: list[FixedUpdate | None] = []
    decoded: list[Update | None] = []
    errors: list[str | None] = []
    if claims is not None and len(claims) != len(updates):
        raise AggregationError(f"{len(claims)} claims for {len(updates)} updates")
    if earned is not None and len(earned) != len(updates):
        raise AggregationError(f"{len(earned)} earned flags for {len(updates)} updates")
    for i, data in enumerate(updates):
        try:
            update = decode_update(data, expected=expected, max_bytes=max_update_bytes, dtypes=dtypes)
            check_integer_deltas(update.tensors, base_fixed, dtypes)
            if claims is not None:
                _check_claims(update, claims[i])
        except InvalidUpdateError as exc:
            fixed_updates.append(None)
            decoded.append(None)
            errors.append(str(exc))
            continue
        # Validated float32, converted to fixed point by each rule as it reads
        # them (FedAvg never makes the int64 copy).
        fixed_updates.append(FixedUpdate.from_float32(update.tensors, update.num_samples))
        decoded.append(update)
        errors.append(None)

    earlier = []
    for data in previous:
        try:
            if isinstance(data, Update):  # decoded and validated in its own round (`decoded`)
                check_layout(data, expected=expected, dtypes=dtypes)
                old = data
            else:
                old = decode_update(data, expected=expected, max_bytes=max_update_bytes, dtypes=dtypes)
        except InvalidUpdateError:
            continue
        earlier.append(_parameters(FixedUpdate.from_float32(old.tensors, old.num_samples).tensors, parameters))
    # Scores and the screen measure the parameters: integer buffers (a batch counter) say
    # nothing about a contribution, and leaving them out means two updates that differ only
    # there are still caught as copies.
    measured = [None if u is None else _parameters(u.tensors, parameters) for u in fixed_updates]
    screened = screen(measured, earlier)
    # The rule aggregates fresh updates of senders that earned; failing those, fresh ones;
    # failing those (every update a copy or a replay), what passed validation, as before.
    valid = [i for i, u in enumerate(fixed_updates) if u is not None]
    fresh = [i for i in valid if i not in screened]
    chosen = [i for i in fresh if earned is None or earned[i]] or fresh
    if not chosen:
        chosen = [i for i in valid if earned is None or earned[i]] or valid
    inputs = [fixed_updates[i] for i in chosen]
    if inputs:
        delta = apply_rule(rule, inputs, options)  # type: ignore[arg-type]
    else:
        delta = {name: np.zeros_like(q) for name, q in base_fixed.items()}
    # Scores compare each participant's own (unclipped) delta with the
    # aggregate; cosine ignores scale, so clipping alone changes no score.
    # Adding in fixed point and converting once keeps the model exact:
    # |base| + |delta| < 2**40, far inside int64 and float64's exact range.
    new_fixed: dict[str, NDArray[np.int64]] = {name: base_fixed[name] + delta[name] for name in sorted(base_fixed)}
    model = encode_model({name: from_fixed(q, dtypes[name]) for name, q in new_fixed.items()}, metadata)
    scores = contribution_scores(measured, _parameters(delta, parameters), screened=screened)
    return AggregateResult(
        model=model,
        scores_wad=scores,
        accepted=[u is not None for u in fixed_updates],
        errors=errors,
        decoded=tuple(decoded),
    )


def _parameters(tensors: Mapping[str, NDArray[np.int64]], keys: frozenset[str]) -> Mapping[str, NDArray[np.int64]]:
    if len(keys) == len(tensors):
        return tensors
    if isinstance(tensors, Float32Backed):
        return tensors.subset(keys)
    return {k: v for k, v in tensors.items() if k in keys}


def _check_claims(update: Update, claims: Mapping[str, str]) -> None:
    for key, want in sorted(claims.items()):
        got = str(update.num_samples) if key == "num_samples" else update.metadata.get(key)
        if got != want:
            shown = "nothing" if got is None else repr(got[:80])
            raise InvalidUpdateError(f"update claims {key} {shown}, but the round says {want!r}")


def _options(options: RuleOptions | None, max_samples: int | None) -> RuleOptions:
    if options is None:
        return RuleOptions(max_samples=max_samples)
    if max_samples is not None:
        raise AggregationError("give max_samples in options or on its own, not both")
    return options


def _read_bounded(path: str | os.PathLike[str], limit: int) -> bytes:
    # Read one byte past the limit: enough for the reader to reject an
    # oversized file, without loading an arbitrarily large one into memory.
    with open(path, "rb") as f:
        return f.read(limit + 1)


def aggregate_files(
    rule: str,
    base_path: str | os.PathLike[str],
    update_paths: Sequence[str | os.PathLike[str]],
    out_path: str | os.PathLike[str],
    max_samples: int | None = None,
    *,
    options: RuleOptions | None = None,
    max_update_bytes: int = DEFAULT_MAX_UPDATE_BYTES,
    metadata: Mapping[str, str] | None = None,
) -> AggregateResult:
    """The offline `aggregate` command: files in, the new model file out.

    Updates are taken in the order given. The output is written atomically
    (temporary file, then rename), so a crash never leaves a partial model.
    """
    options = _options(options, max_samples)
    check_options(rule, options)
    base = Path(base_path).read_bytes()
    updates = [_read_bounded(p, max_update_bytes) for p in update_paths]
    result = aggregate_round(
        rule, base, updates, options=options, max_update_bytes=max_update_bytes, metadata=metadata
    )
    out = Path(out_path)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(result.model)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return result
