"""Misbehaving nodes for simulation and robustness experiments.

An attacker may poison its training data (`poison_data`, applied once when
its trainer is built) and may replace the update it publishes
(`craft_update`, applied every round with what a colluding attacker could
know). Both are pure functions of their inputs and a seeded generator, so
experiments replay exactly.

What an attacker knows is what the protocol lets it know (SPEC section 4):
commit-reveal hides every update of a round until all commitments are in,
so an attacker crafts its update from its own training, its colluders'
(`team`), the committee size, and the updates revealed in earlier rounds
(`revealed`) -- never from the honest updates of the round it attacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist
from typing import Callable, Mapping, Sequence

import numpy as np

from node.training.data import Dataset

Delta = dict[str, np.ndarray]


@dataclass(frozen=True)
class AttackContext:
    own: Mapping[str, np.ndarray]  # the delta the node's (possibly poisoned) training produced
    rng: np.random.Generator
    committee: int = 1  # how many updates the round aggregates (this one included)
    team: Sequence[Mapping[str, np.ndarray]] = ()  # this round's trained deltas of its colluders, its own included
    revealed: Sequence[Mapping[str, np.ndarray]] = ()  # the other nodes' updates revealed last round
    previous: Mapping[str, np.ndarray] | None = None  # what this node published last round
    round: int = 1
    # This round's honest deltas, for experiments that describe what an attacker published
    # (scripts/robustness.py). No attack reads them: commit-reveal keeps them from it.
    honest_for_report: Sequence[Mapping[str, np.ndarray]] = ()


def _map(delta: Mapping[str, np.ndarray], fn: Callable[[np.ndarray], np.ndarray]) -> Delta:
    return {k: np.asarray(fn(v), dtype=np.float32) for k, v in delta.items()}


def sign_flip(ctx: AttackContext) -> Delta:
    """Push the model the opposite way (Byzantine sign flipping); an amplified
    push is the `scaling` attack's business."""
    return _map(ctx.own, np.negative)


def gaussian(ctx: AttackContext) -> Delta:
    """Replace the update with noise of a similar scale to an honest one."""
    return _map(ctx.own, lambda v: ctx.rng.normal(0.0, float(np.std(v)) + 1e-3, v.shape))


def free_rider_zero(ctx: AttackContext) -> Delta:
    """Claim a share of the reward without training: an all-zero update."""
    return _map(ctx.own, np.zeros_like)


def free_rider_stale(ctx: AttackContext) -> Delta:
    """Train once, then resend that first update every round instead of training again."""
    return _map(ctx.previous if ctx.previous is not None else ctx.own, np.array)


def free_rider_copy(ctx: AttackContext) -> Delta:
    """Republish another node's update as one's own. Commit-reveal hides this round's
    updates, so the newest it can copy is one revealed last round (scored 0 as a
    replay); in the first round there is none yet and it sends zeros."""
    return _map(ctx.revealed[0], np.array) if ctx.revealed else free_rider_zero(ctx)


def scaling(ctx: AttackContext) -> Delta:
    """Model replacement (Bagdasaryan et al., 2020): a poisoned update boosted by
    the federation size so that averaging does not dilute it. The poisoning is
    the label flip applied to this node's data (see DATA_ATTACKS)."""
    boost = float(ctx.committee)
    return _map(ctx.own, lambda v: boost * v)


def little_is_enough(ctx: AttackContext) -> Delta:
    """"A Little Is Enough" (Baruch et al., 2019): colluders publish mean - z*std
    of the benign updates, per coordinate, with z chosen so the fake update stays
    within the spread of honest ones and evades robust rules. Commit-reveal hides
    the honest updates of the round, so the colluders estimate the mean and std
    from their own honestly trained deltas (`team`), and all publish the same fake.

    z = Phi^-1((n - s) / n) with s = floor(n/2 + 1) - m, for n nodes of which m
    collude: the largest shift that still leaves the fake closer to the centre
    than s honest updates."""
    team = list(ctx.team) or [ctx.own]
    n, m = ctx.committee, len(team)
    s = n // 2 + 1 - m
    z = NormalDist().inv_cdf((n - s) / n) if 0 < s < n else 1.0
    out: Delta = {}
    for k in ctx.own:
        stack = np.stack([np.asarray(t[k], dtype=np.float64) for t in team])
        out[k] = (stack.mean(axis=0) - z * stack.std(axis=0)).astype(np.float32)
    return out


def label_flip(data: Dataset, rng: np.random.Generator) -> Dataset:
    """Train on wrong labels: class c becomes (classes - 1 - c)."""
    top = int(data.y.max()) if len(data) else 0
    classes = max(top + 1, 10)
    return Dataset(data.x, (classes - 1 - data.y).astype(data.y.dtype))


UPDATE_ATTACKS: dict[str, Callable[[AttackContext], Delta]] = {
    "sign-flip": sign_flip,
    "gaussian": gaussian,
    "scaling": scaling,
    "free-rider-zero": free_rider_zero,
    "free-rider-stale": free_rider_stale,
    "free-rider-copy": free_rider_copy,
    "little-is-enough": little_is_enough,
}
DATA_ATTACKS: dict[str, Callable[[Dataset, np.random.Generator], Dataset]] = {
    "label-flip": label_flip,
    "scaling": label_flip,
}
ATTACKS: frozenset[str] = frozenset(UPDATE_ATTACKS) | frozenset(DATA_ATTACKS)


def poison_data(kind: str, data: Dataset, rng: np.random.Generator) -> Dataset:
    """The training data an attacker of `kind` uses (its own, unless the attack poisons it)."""
    attack = DATA_ATTACKS.get(kind)
    return attack(data, rng) if attack else data


def craft_update(kind: str, ctx: AttackContext) -> Delta:
    """The delta an attacker of `kind` publishes this round."""
    attack = UPDATE_ATTACKS.get(kind)
    return attack(ctx) if attack else {k: np.asarray(v, dtype=np.float32) for k, v in ctx.own.items()}

# Attacks on the protocol rather than on the model: the node trains honestly but misbehaves in
# its on-chain role. "bad-proposer": when designated, it proposes a model and scores of its own
# making; its colluders attest for it. The simulator plays these roles (node/simulate.py).
PROTOCOL_ATTACKS: frozenset[str] = frozenset({"bad-proposer"})
KNOWN_KINDS: frozenset[str] = ATTACKS | PROTOCOL_ATTACKS


def parse_roles(text: str) -> list[str]:
    """The attacker roles of `--attack TEXT`, which the malicious nodes take in turn.

    Roles are separated by commas, so several attacks run side by side
    (``sign-flip,free-rider-zero``: every other malicious node flips, the rest
    send zeros). Kinds one node runs together are joined with ``+``: at most one
    attack on training (data or update) and the protocol attack
    (``label-flip+bad-proposer``). Raises ValueError naming what is wrong.
    """
    roles = []
    for role in text.split(","):
        kinds = [k.strip() for k in role.split("+")]
        unknown = [k for k in kinds if k not in KNOWN_KINDS]
        if unknown or not all(kinds):
            what = ", ".join(repr(k) for k in unknown) if unknown and all(kinds) else f"an empty name in {text!r}"
            raise ValueError(f"unknown attack {what}; known: {', '.join(sorted(KNOWN_KINDS))}")
        if len(set(kinds)) < len(kinds):
            raise ValueError(f"attack {role.strip()!r} names a kind twice")
        training = [k for k in kinds if k in ATTACKS]
        if len(training) > 1:
            raise ValueError(
                f"attack {role.strip()!r}: a node runs at most one training attack ({' and '.join(training)}); "
                f"give them to different nodes with a comma: {','.join(training)}"
            )
        # Canonical: the training attack first, so one role has one spelling.
        roles.append("+".join(training + sorted(k for k in kinds if k not in ATTACKS)))
    return roles


def role_kinds(role: str) -> tuple[str, ...]:
    """The attack kinds a node of `role` runs ("honest": none)."""
    return () if role == "honest" else tuple(role.split("+"))


def training_attack(role: str) -> str | None:
    """The attack on training (data or update) a node of `role` runs, if any."""
    return next((k for k in role_kinds(role) if k in ATTACKS), None)
