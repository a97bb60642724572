"""Misbehaving nodes for simulation and robustness experiments.

Every attack is a node `Behaviour` (node/protocol/behaviour.py): a wrapper on the node's
trainer (`poison_data`, applied once when its trainer is built), on the update
it publishes (`craft_update`, applied every round with what a colluding
attacker could know), or on its proposer/attester policy (`bad-proposer`).
So an attack runs the same in the in-process simulator and in a daemon
(`fedledger node run --behaviour FILE`). The crafting functions are pure
functions of their inputs and a seeded generator, so experiments replay exactly.

What an attacker knows is what the protocol lets it know (SPEC section 4):
commit-reveal hides every update of a round until all commitments are in,
so an attacker crafts its update from its own training, its colluders'
(`team`), the committee size, and the updates revealed in earlier rounds
(`revealed`) -- never from the honest updates of the round it attacks.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np
from eth_utils import is_checksum_address

from aggregation import encode_update
from node.abc import Trainer
from node.chain.types import RoundUpdate
from node.errors import ConfigError
from node.protocol import Behaviour, ProtocolNode, RoundResult, RoundView, train_seed
from node.sim.kinds import KNOWN_KINDS, MODEL_ATTACKS, PROTOCOL_ATTACKS
from node.storage.unixfs import cid_of
from node.taskspec import TaskSpec
from node.apps.native import Evaluation
from node.training.data import Dataset
from node.training.localdata import load_local_data
from node.training.trainer import trainer_for
from node.units import WAD

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


# How far a perturbed replay moves from what it replays: noise of this many times each tensor's
# own standard deviation. In ~17k dimensions that keeps a cosine of about 1/sqrt(1 + 0.1^2) =
# 0.995 with the original (docs/robustness-history.md measured 0.995), far above any honest
# node's cosine with its own previous update (at most 0.964 there), yet never bit-identical.
PERTURB_SCALE = 0.1


def free_rider_perturbed(ctx: AttackContext) -> Delta:
    """The stale free-rider dressed up: train once, then resend the previous update plus small
    Gaussian noise, so that no two of its updates are bit-identical and an exact-match replay
    check misses it. The noise comes from the round's seeded generator, so runs replay exactly."""
    if ctx.previous is None:
        return _map(ctx.own, np.array)
    return _map(ctx.previous, lambda v: v + ctx.rng.normal(0.0, PERTURB_SCALE * float(np.std(v)), v.shape))


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


# The sybil re-registration attacker poisons like sign-flip; what sets it apart is that when an
# identity of it is excluded (reputation under the task's threshold), it registers a fresh one
# with the normal stake and carries on with the same data and the same flipping. The comeback is
# the in-process simulator's business (node/sim/simulate.py: `SybilComebacks`), which gives each
# sybil attacker at most SYBIL_SPARE_IDENTITIES identities beyond its first; a daemon playing
# `sybil` only flips signs.
SYBIL = "sybil"
SYBIL_SPARE_IDENTITIES = 3

UPDATE_ATTACKS: dict[str, Callable[[AttackContext], Delta]] = {
    "sign-flip": sign_flip,
    SYBIL: sign_flip,
    "gaussian": gaussian,
    "scaling": scaling,
    "free-rider-zero": free_rider_zero,
    "free-rider-stale": free_rider_stale,
    "free-rider-copy": free_rider_copy,
    "free-rider-perturbed": free_rider_perturbed,
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
# making; its colluders attest for it (`AttackBehaviour.propose` and `.vote`). "slander": it votes
# against every proposal but its colluders', to get honest proposers rejected and slashed.
if ATTACKS != MODEL_ATTACKS:  # the names `fedledger --help` lists without importing this module
    raise ImportError(f"node.sim.kinds.MODEL_ATTACKS is out of step: {sorted(ATTACKS ^ MODEL_ATTACKS)}")


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


# -- attacks as node behaviours ---------------------------------------------------------


class Colluder(Protocol):
    """A member of an attackers' coalition: its address and its honest training of a round."""

    me: str

    def train(self, task: int, r: int, base: Mapping[str, np.ndarray]) -> Delta: ...


class Coalition:
    """Colluders who share their data: each can compute any member's honest training of a round
    (`little-is-enough` estimates the honest spread from them). In-process the members are the
    colluding nodes themselves; a daemon builds them from the team in its behaviour file."""

    def __init__(self, members: Sequence[Colluder] = ()) -> None:
        self.members = list(members)

    def team(self, view: RoundView) -> list[Delta]:
        seated = set(view.committee)
        return [m.train(view.task, view.round, view.base) for m in self.members if m.me in seated]


class PoisonedTrainer:
    """A trainer whose data an attack changed once, when it was built."""

    def __init__(self, inner: Trainer, kind: str, rng: np.random.Generator) -> None:
        data = getattr(inner, "data", None)
        if not isinstance(data, Dataset):
            raise ConfigError(f"attack {kind!r} poisons training data, which this node's trainer does not expose")
        self.inner = copy.copy(inner)
        self.inner.data = poison_data(kind, data, rng)  # type: ignore[attr-defined]

    @property
    def num_samples(self) -> int:
        return self.inner.num_samples

    def train(self, global_weights: Mapping[str, np.ndarray], seed: int, round: int = 0) -> dict[str, np.ndarray]:
        return self.inner.train(global_weights, seed, round)

    def evaluate(self, weights: Mapping[str, np.ndarray]) -> Evaluation:
        return self.inner.evaluate(weights)


class AttackBehaviour(Behaviour):
    """A node playing `role` (see `parse_roles`): at most one attack on training, and optionally
    the bad proposer, whose `colluders` (addresses) vouch for each other's proposals."""

    def __init__(self, role: str, colluders: Sequence[str] = (), coalition: Coalition | None = None) -> None:
        self.role = role
        self.kind = training_attack(role)
        self.bad_proposer = "bad-proposer" in role_kinds(role)
        self.slander = "slander" in role_kinds(role)
        self.colluders = frozenset(colluders)
        self.coalition = coalition or Coalition()

    def trainer(self, trainer: Trainer) -> Trainer:
        if self.kind in DATA_ATTACKS:
            return PoisonedTrainer(trainer, self.kind, np.random.default_rng(0))
        return trainer

    def publish(self, trained: Delta, view: RoundView) -> Delta:
        if self.kind not in UPDATE_ATTACKS:
            return trained
        ctx = AttackContext(
            own=trained,
            rng=view.rng,
            committee=len(view.committee),
            team=self.coalition.team(view) if self.kind == "little-is-enough" else (),
            revealed=view.revealed_last_round if self.kind == "free-rider-copy" else (),
            previous=view.own_previous if self.kind in ("free-rider-stale", "free-rider-perturbed") else None,
            round=view.round,
        )
        return craft_update(self.kind, ctx)

    def propose(self, honest: RoundResult, view: RoundView, updates: Sequence[RoundUpdate]) -> RoundResult:
        if not self.bad_proposer:
            return honest
        # Its own training as the new model, and all the credit to itself.
        model = encode_update(view.trained, num_samples=1, task=view.task, round=view.round, base=view.base_cid)
        scores = [WAD if u.sender == view.address else 0 for u in updates]
        return RoundResult(cid_of(model), scores, model)

    def vote(self, agree: bool, proposer: str, view: RoundView) -> bool:
        if (self.bad_proposer or self.slander) and proposer in self.colluders:
            return True  # colluders vouch for each other
        return False if self.slander else agree


def protocol_colluders(addresses: Sequence[str], roles: Sequence[str]) -> list[str]:
    """The nodes that attack the protocol (propose or vote dishonestly): they vouch for each other."""
    return [a for a, r in zip(addresses, roles) if any(k in PROTOCOL_ATTACKS for k in role_kinds(r))]


def behaviour_for(role: str, colluders: Sequence[str] = (), coalition: Coalition | None = None) -> Behaviour:
    """The behaviour of a node of `role` ("honest" or an `--attack` role)."""
    return Behaviour() if role == "honest" else AttackBehaviour(role, colluders, coalition)


class TeamMember:
    """A colluder in another process, as a daemon's coalition sees it: its address, its data (the
    coalition shares data) and its training seed, so its honest training can be recomputed here."""

    def __init__(self, address: str, data: Dataset, seed: int) -> None:
        self.me = address
        self.data = data
        self.seed = seed
        self._spec_of: Callable[[int], TaskSpec] | None = None
        self._trainers: dict[int, Trainer] = {}

    def train(self, task: int, r: int, base: Mapping[str, np.ndarray]) -> Delta:
        assert self._spec_of is not None, "the coalition's node has not joined yet"
        if task not in self._trainers:
            self._trainers[task] = trainer_for(self._spec_of(task), self.data)
        return self._trainers[task].train(base, seed=train_seed(self.seed, task, r), round=r)


class DaemonAttack(AttackBehaviour):
    """An attack role played by a daemon (`fedledger node run --behaviour FILE`)."""

    def __init__(self, role: str, colluders: Sequence[str], team: Sequence[TeamMember]) -> None:
        super().__init__(role, colluders, Coalition())
        self.team_members = list(team)

    def joined(self, node: ProtocolNode) -> None:
        for member in self.team_members:
            member._spec_of = node.spec
        self.coalition.members = [node, *(m for m in self.team_members if m.me != node.me)]


def write_behaviour_file(path: str | Path, role: str, colluders: Sequence[str], team: Sequence[dict[str, Any]]) -> None:
    """The file `node run --behaviour` reads: `team` entries are {address, data (a path), seed}."""
    body = {"role": role, "colluders": list(colluders), "team": [dict(t, data=str(t["data"])) for t in team]}
    Path(path).write_text(json.dumps(body, indent=2) + "\n")


def load_behaviour_file(path: str | Path) -> Behaviour:
    """Read a behaviour file; ConfigError (one line) for anything malformed."""
    path = Path(path)
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read behaviour file {path}: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("role"), str):
        raise ConfigError(f"{path}: a behaviour file is a JSON object with a role")
    try:
        roles = parse_roles(body["role"])
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if len(roles) != 1:
        raise ConfigError(f"{path}: one node plays one role, not {len(roles)}")
    colluders = body.get("colluders", [])
    team = body.get("team", [])
    if not isinstance(colluders, list) or not all(isinstance(a, str) and is_checksum_address(a) for a in colluders):
        raise ConfigError(f"{path}: colluders must be a list of checksummed addresses")
    members = []
    for t in team if isinstance(team, list) else [None]:
        if not (isinstance(t, dict) and isinstance(t.get("address"), str) and is_checksum_address(t["address"])
                and isinstance(t.get("data"), str) and isinstance(t.get("seed"), int)):  # fmt: skip
            raise ConfigError(f"{path}: each team member needs address, data and seed")
        members.append(TeamMember(t["address"], load_local_data((path.parent / t["data"]).resolve(), "auto"), t["seed"]))
    return DaemonAttack(roles[0], colluders, members)
