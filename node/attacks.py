"""Misbehaving trainers for simulation: what a malicious node publishes instead
of its honest delta. The full attack suite grows here; each entry is a pure
function of the honest delta so experiments stay reproducible.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

Delta = dict[str, np.ndarray]


def sign_flip(delta: Mapping[str, np.ndarray], rng: np.random.Generator) -> Delta:
    """Push the model the opposite way, amplified (Byzantine sign flipping)."""
    return {k: (-4.0 * v).astype(np.float32) for k, v in delta.items()}


def gaussian(delta: Mapping[str, np.ndarray], rng: np.random.Generator) -> Delta:
    """Replace the update with noise of a similar scale to an honest one."""
    return {k: rng.normal(0.0, float(np.std(v)) + 1e-3, v.shape).astype(np.float32) for k, v in delta.items()}


def free_rider_zero(delta: Mapping[str, np.ndarray], rng: np.random.Generator) -> Delta:
    """Claim a share of the reward without training: an all-zero update."""
    return {k: np.zeros_like(v, dtype=np.float32) for k, v in delta.items()}


ATTACKS: dict[str, Callable[[Mapping[str, np.ndarray], np.random.Generator], Delta]] = {
    "sign-flip": sign_flip,
    "gaussian": gaussian,
    "free-rider-zero": free_rider_zero,
}
