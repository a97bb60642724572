"""Misbehaving nodes for simulation and robustness experiments.

An attacker may poison its training data (`poison_data`, applied once when
its trainer is built) and may replace the update it publishes
(`craft_update`, applied every round with what a colluding attacker could
know). Both are pure functions of their inputs and a seeded generator, so
experiments replay exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from node.training.data import Dataset

Delta = dict[str, np.ndarray]


@dataclass(frozen=True)
class AttackContext:
    own: Mapping[str, np.ndarray]  # the delta the node's (possibly poisoned) training produced
    honest: Sequence[Mapping[str, np.ndarray]]  # this round's deltas of the other nodes, before any attack
    rng: np.random.Generator
    previous: Mapping[str, np.ndarray] | None = None  # what this node published last round
    round: int = 1
    extra: dict[str, object] = field(default_factory=dict)


def _map(delta: Mapping[str, np.ndarray], fn: Callable[[np.ndarray], np.ndarray]) -> Delta:
    return {k: np.asarray(fn(v), dtype=np.float32) for k, v in delta.items()}


def sign_flip(ctx: AttackContext) -> Delta:
    """Push the model the opposite way, amplified (Byzantine sign flipping)."""
    return _map(ctx.own, lambda v: -4.0 * v)


def gaussian(ctx: AttackContext) -> Delta:
    """Replace the update with noise of a similar scale to an honest one."""
    return _map(ctx.own, lambda v: ctx.rng.normal(0.0, float(np.std(v)) + 1e-3, v.shape))


def free_rider_zero(ctx: AttackContext) -> Delta:
    """Claim a share of the reward without training: an all-zero update."""
    return _map(ctx.own, np.zeros_like)


UPDATE_ATTACKS: dict[str, Callable[[AttackContext], Delta]] = {
    "sign-flip": sign_flip,
    "gaussian": gaussian,
    "free-rider-zero": free_rider_zero,
}
DATA_ATTACKS: dict[str, Callable[[Dataset, np.random.Generator], Dataset]] = {}
ATTACKS: frozenset[str] = frozenset(UPDATE_ATTACKS) | frozenset(DATA_ATTACKS)


def poison_data(kind: str, data: Dataset, rng: np.random.Generator) -> Dataset:
    """The training data an attacker of `kind` uses (its own, unless the attack poisons it)."""
    attack = DATA_ATTACKS.get(kind)
    return attack(data, rng) if attack else data


def craft_update(kind: str, ctx: AttackContext) -> Delta:
    """The delta an attacker of `kind` publishes this round."""
    attack = UPDATE_ATTACKS.get(kind)
    return attack(ctx) if attack else {k: np.asarray(v, dtype=np.float32) for k, v in ctx.own.items()}
