"""Norm clipping of updates before aggregation, in exact fixed point.

Bounding every update's L2 norm limits how far one participant can move the
model, the defence of "How To Backdoor Federated Learning" [Bagdasaryan et
al., AISTATS 2020] and "Can You Really Backdoor Federated Learning?" [Sun et
al., 2019], and the clipping step of DP-FedAvg [McMahan et al., ICLR 2018].
An update whose norm exceeds `clip` is scaled by clip / norm.

Exactly: the squared norm is an exact integer and is compared with clip**2
as exact rationals; the scale is the integer factor
``floor(2**40 * clip / norm)`` (an integer square root, no float), and every
coordinate is multiplied by factor / 2**40 and truncated toward zero. So the
clipped norm is never above `clip` nor above the original norm, and the
result is the same integers on every machine.
"""

from __future__ import annotations

import math
from fractions import Fraction

from aggregation.abc import FixedUpdate
from aggregation.fixedpoint import FRACTION_BITS, SCALE_BITS, exact_gram, scale_toward_zero


def squared_norm(update: FixedUpdate) -> int:
    """The exact squared L2 norm of an update's fixed-point values, over all its parameters (not its integer buffers)."""
    return exact_gram([[update.tensors[k] for k in update.parameter_keys()]])[0][0]


def clip_factor(norm_squared: int, clip: float) -> int | None:
    """The scale factor (over 2**SCALE_BITS) that clips a fixed-point norm to `clip`, or None if within it."""
    # clip in fixed-point units is c = clip * 2**32; an exact rational num / den.
    ratio = Fraction(clip)
    num = ratio.numerator << FRACTION_BITS
    den = ratio.denominator
    if norm_squared * den * den <= num * num:
        return None
    # floor(2**40 * c / sqrt(N)) = isqrt(floor(2**80 * c**2 / N)), since
    # floor(sqrt(floor(z))) = floor(sqrt(z)); and c**2 < N makes it < 2**40.
    return math.isqrt((num * num << (2 * SCALE_BITS)) // (den * den * norm_squared))


def clip_update(update: FixedUpdate, clip: float) -> FixedUpdate:
    """`update` scaled so its L2 norm is at most `clip` (itself when it already is)."""
    factor = clip_factor(squared_norm(update), clip)
    if factor is None:
        return update
    tensors = {key: q if key in update.integer_keys else scale_toward_zero(q, factor) for key, q in update.tensors.items()}
    return FixedUpdate(tensors=tensors, num_samples=update.num_samples, integer_keys=update.integer_keys)
