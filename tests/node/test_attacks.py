"""Attacks: each one does what its paper says, and the mechanism reacts in the right direction."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from node.attacks import ATTACKS, AttackContext, craft_update, poison_data
from node.simulate import SimulationConfig, run_simulation
from node.taskspec import TaskSpec
from node.training.data import Dataset


def _ctx(rng_seed: int = 0, **kw) -> AttackContext:
    rng = np.random.default_rng(rng_seed)
    honest = [{"w": rng.normal(1.0, 0.1, size=(50,)).astype(np.float32)} for _ in range(6)]
    own = {"w": rng.normal(1.0, 0.1, size=(50,)).astype(np.float32)}
    return AttackContext(own=own, honest=honest, rng=np.random.default_rng(1), **kw)


def test_sign_flip_points_the_other_way():
    ctx = _ctx()
    out = craft_update("sign-flip", ctx)["w"]
    assert out.dtype == np.float32
    assert float(out @ ctx.own["w"]) < 0


def test_free_riders_publish_nothing_new():
    ctx = _ctx(previous={"w": np.full(50, 0.5, np.float32)})
    assert not craft_update("free-rider-zero", ctx)["w"].any()
    assert np.array_equal(craft_update("free-rider-stale", ctx)["w"], ctx.previous["w"])
    assert np.array_equal(craft_update("free-rider-stale", _ctx())["w"], _ctx().own["w"])  # first round: trains once
    assert np.array_equal(craft_update("free-rider-copy", ctx)["w"], ctx.honest[0]["w"])


def test_scaling_boosts_by_the_federation_size():
    ctx = _ctx(colluders=2)
    assert np.allclose(craft_update("scaling", ctx)["w"], 8 * ctx.own["w"])


def test_little_is_enough_stays_inside_the_honest_spread():
    ctx = _ctx(colluders=3)
    stack = np.stack([h["w"] for h in ctx.honest])

    out = craft_update("little-is-enough", ctx)["w"]

    assert np.all(out < stack.mean(axis=0))  # shifted against the mean...
    assert np.all(out > stack.mean(axis=0) - 2 * stack.std(axis=0))  # ...by less than two std


def test_label_flip_poisons_labels_only():
    data = Dataset(np.zeros((10, 64), np.float32), np.arange(10, dtype=np.int64))

    flipped = poison_data("label-flip", data, np.random.default_rng(0))

    assert flipped.y.tolist() == list(range(9, -1, -1))
    assert flipped.x is data.x
    assert poison_data("sign-flip", data, np.random.default_rng(0)) is data


@functools.lru_cache(maxsize=None)
def _run(attack: str, rule: str = "fedavg"):
    config = SimulationConfig(nodes=4, malicious=1, attack=attack, rounds=3, seed=21, rule=rule, spec=TaskSpec(epochs=2, rule=rule))
    report = run_simulation(config)
    honest = [n for n in report.nodes if n.role == "honest"]
    attacker = next(n for n in report.nodes if n.role == attack)
    return report, honest, attacker


@pytest.mark.parametrize(
    "attack", ["sign-flip", "gaussian", "label-flip", "free-rider-zero", "free-rider-stale", "free-rider-copy"]
)
def test_attackers_lose_reputation_and_pay(attack):
    _, honest, attacker = _run(attack)

    assert attacker.reputation_wad < min(n.reputation_wad for n in honest)
    assert attacker.payout_wei < min(n.payout_wei for n in honest)


@pytest.mark.parametrize("attack", ["sign-flip", "free-rider-zero", "free-rider-copy"])
def test_attackers_that_never_help_end_under_the_threshold_and_earn_nothing_late(attack):
    _, _, attacker = _run(attack)

    # From 0.5, three rounds of score ~0 with alpha 0.3 leave 0.5 * 0.7**3 = 0.17 < 0.2.
    assert attacker.reputation_wad < 2 * 10**17
    assert attacker.payout_wei <= 10**16  # at most dust from a near-zero cosine


def test_gaussian_noise_keeps_some_cosine_under_fedavg():
    """Noise is part of the FedAvg aggregate it is compared with, so its cosine
    is well above 0: it ends below every honest node but above the threshold
    after three rounds. A robust aggregate (median) removes that self-credit."""
    _, honest, attacker = _run("gaussian")

    assert 2 * 10**17 < attacker.reputation_wad < min(n.reputation_wad for n in honest)


def test_scaling_captures_fedavg():
    """Model replacement is what plain FedAvg cannot resist: the boosted, poisoned
    update dominates the average, so accuracy collapses and the attacker, being
    most aligned with the aggregate it dominates, is not penalised. Robust rules
    are what answer it (issue 5/6)."""
    report, honest, attacker = _run("scaling")
    baseline = run_simulation(SimulationConfig(nodes=4, rounds=3, seed=21, spec=TaskSpec(epochs=2)))

    assert report.rounds[-1].test_accuracy < baseline.rounds[-1].test_accuracy - 0.3
    assert attacker.reputation_wad > min(n.reputation_wad for n in honest)


def test_little_is_enough_evades_cosine_reputation():
    """The colluder's update sits inside the honest spread, so its cosine with
    the aggregate is high: reputation alone does not catch it (Baruch et al.)."""
    _, honest, attacker = _run("little-is-enough")

    assert attacker.reputation_wad > 4 * 10**17
    assert attacker.payout_wei > 0


def test_every_attack_is_known_to_the_cli_parser():
    assert set(ATTACKS) >= {
        "sign-flip", "gaussian", "scaling", "label-flip", "free-rider-zero",
        "free-rider-stale", "free-rider-copy", "little-is-enough",
    }


def test_simulate_tells_colluders_how_many_they_are(monkeypatch):
    """little-is-enough and scaling size their update by the number of colluders; with one
    attacker assumed, three little-is-enough colluders published the plain honest mean."""
    import node.simulate as simulate

    seen: list[tuple[str, int]] = []

    def spy(kind, ctx):
        seen.append((kind, ctx.colluders))
        return craft_update(kind, ctx)

    monkeypatch.setattr(simulate, "craft_update", spy)
    config = SimulationConfig(nodes=6, malicious=3, attack="little-is-enough", rounds=1, seed=21, spec=TaskSpec(epochs=1))
    run_simulation(config)

    assert seen == [("little-is-enough", 3)] * 3
