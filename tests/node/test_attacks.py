"""Attacks: each one does what its paper says, and the mechanism reacts in the right direction."""

from __future__ import annotations

import functools

from dataclasses import fields

import numpy as np
import pytest

from node.sim.attacks import ATTACKS, AttackContext, craft_update, parse_roles, poison_data
from node.chain import FedLedgerClient
from proposer_turns import rejected_rounds, run_until_rejected
from node.errors import ConfigError
from node.protocol import Observer
from node.sim.simulate import SimulationConfig, node_roles, run_simulation
from node.taskspec import TaskSpec
from node.training.data import Dataset


def _ctx(rng_seed: int = 0, **kw) -> AttackContext:
    rng = np.random.default_rng(rng_seed)
    revealed = [{"w": rng.normal(1.0, 0.1, size=(50,)).astype(np.float32)} for _ in range(6)]
    own = kw.pop("own", {"w": rng.normal(1.0, 0.1, size=(50,)).astype(np.float32)})
    kw.setdefault("revealed", revealed)
    return AttackContext(own=own, rng=np.random.default_rng(1), **kw)


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
    assert np.array_equal(craft_update("free-rider-copy", ctx)["w"], ctx.revealed[0]["w"])  # last round's
    assert not craft_update("free-rider-copy", _ctx(revealed=()))["w"].any()  # round 1: nothing revealed yet


def _perturbed(seed: int, previous: dict) -> np.ndarray:
    ctx = AttackContext(own={"w": np.zeros(4000, np.float32)}, rng=np.random.default_rng(seed), previous=previous)
    return craft_update("free-rider-perturbed", ctx)["w"]


def test_a_perturbed_replay_is_seeded_close_to_its_original_and_never_identical():
    # Prepare: an earlier update of the size of a layer, and the cosine a check would compare.
    previous = {"w": np.random.default_rng(3).normal(0.0, 0.02, size=4000).astype(np.float32)}
    cos = lambda u, v: float(u @ v) / float(np.linalg.norm(u) * np.linalg.norm(v))  # noqa: E731

    # Execute
    out, again, other = _perturbed(1, previous), _perturbed(1, previous), _perturbed(2, previous)

    # Assert: not the exact replay the stale free-rider sends; the round's seed fixes the noise...
    stale = craft_update("free-rider-stale", AttackContext(own={"w": out}, rng=np.random.default_rng(1), previous=previous))
    assert not np.array_equal(out, stale["w"])
    assert out.dtype == np.float32 and np.array_equal(out, again)
    assert not np.array_equal(out, other)
    # ...no coordinate survives bit for bit, so an exact-match replay check misses it...
    assert not np.any(out == previous["w"])
    # ...yet it stays as close as noise of 0.1 of the tensor's std keeps it: cosine 1/sqrt(1.01) = 0.995,
    # above the 0.964 an honest node's own consecutive updates reached (docs/robustness-history.md).
    assert cos(out, previous["w"]) == pytest.approx(1 / np.sqrt(1.01), abs=2e-3)
    assert np.linalg.norm(out - previous["w"]) / np.linalg.norm(previous["w"]) == pytest.approx(0.1, rel=0.05)


def test_a_perturbed_free_rider_trains_honestly_in_its_first_round():
    own = {"w": np.arange(5, dtype=np.float32)}

    out = craft_update("free-rider-perturbed", AttackContext(own=own, rng=np.random.default_rng(0)))

    assert np.array_equal(out["w"], own["w"])


class _Published(Observer):
    def __init__(self) -> None:
        self.by_round: dict[tuple[str, int], tuple[dict, dict]] = {}

    def published(self, node, role, task, round_, trained, published) -> None:
        if role != "honest":
            self.by_round[(role, round_)] = (trained, published)


def test_a_perturbed_free_rider_in_a_simulation_resends_its_last_update_with_noise():
    # Prepare
    seen = _Published()
    config = SimulationConfig(nodes=4, malicious=1, attack="free-rider-perturbed", rounds=3, seed=21, spec=TaskSpec(epochs=1))

    # Execute
    run_simulation(config, observer=seen)

    # Assert: round 1 is its honest training; rounds 2 and 3 are the round before's update, moved a little.
    flat = {r: np.concatenate([v.ravel() for _, v in sorted(seen.by_round[("free-rider-perturbed", r)][1].items())]) for r in (1, 2, 3)}
    trained_1 = seen.by_round[("free-rider-perturbed", 1)][0]
    assert all(np.array_equal(trained_1[k], seen.by_round[("free-rider-perturbed", 1)][1][k]) for k in trained_1)
    for r in (2, 3):
        cos = float(flat[r] @ flat[r - 1]) / float(np.linalg.norm(flat[r]) * np.linalg.norm(flat[r - 1]))
        assert not np.array_equal(flat[r], flat[r - 1])
        assert cos > 0.99, (r, cos)


def test_scaling_boosts_by_the_federation_size():
    ctx = _ctx(committee=8)
    assert np.allclose(craft_update("scaling", ctx)["w"], 8 * ctx.own["w"])


def test_little_is_enough_stays_inside_the_colluders_estimate_of_the_spread():
    rng = np.random.default_rng(5)
    team = [{"w": rng.normal(1.0, 0.1, size=(50,)).astype(np.float32)} for _ in range(3)]
    ctx = _ctx(committee=12, team=team, own=team[0])
    stack = np.stack([t["w"] for t in team])

    out = craft_update("little-is-enough", ctx)["w"]

    # z = Phi^-1(8/12) = 0.43 for 3 colluders among 12: mean - 0.43 std of the colluders' own updates.
    assert np.allclose(out, stack.mean(axis=0) - 0.4307 * stack.std(axis=0), atol=1e-4)
    assert np.array_equal(craft_update("little-is-enough", _ctx(committee=12, team=team, own=team[1]))["w"], out)


def test_an_attack_context_holds_nothing_of_the_rounds_honest_updates():
    """Commit-reveal hides them, so an attack is given only what a colluder can know."""
    assert {f.name for f in fields(AttackContext)} == {"own", "rng", "committee", "team", "revealed", "previous", "round"}


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


@pytest.mark.parametrize("attack", ["sign-flip", "gaussian", "label-flip", "free-rider-zero", "free-rider-copy"])
def test_attackers_that_never_help_end_under_the_threshold_and_earn_nothing_late(attack):
    """Even under FedAvg, which aggregates them: each scores under half the round's median
    cosine, so 0, though noise or flipped labels keep some cosine with an aggregate they are part of."""
    _, _, attacker = _run(attack)

    # From 0.5, three rounds of score ~0 with alpha 0.4 leave 0.5 * 0.6**3 = 0.108 < 0.2.
    assert attacker.reputation_wad < 2 * 10**17
    assert attacker.payout_wei <= 10**16  # at most dust from a near-zero cosine


def test_the_norm_bound_stops_scaling_under_fedavg():
    """Model replacement used to capture plain FedAvg: the boosted, poisoned update dominated
    the average, accuracy collapsed and the attacker, most aligned with the aggregate it
    dominated, kept its reputation. An update over NORM_BOUND times the round's median norm
    is now scored 0 and not aggregated (aggregation/scores.py `screen`), so FedAvg learns as
    without it and the attacker is excluded."""
    report, honest, attacker = _run("scaling")
    baseline = run_simulation(SimulationConfig(nodes=4, rounds=3, seed=21, spec=TaskSpec(epochs=2)))

    assert report.rounds[-1].test_accuracy > baseline.rounds[-1].test_accuracy - 0.05
    assert attacker.reputation_wad < 2 * 10**17 < min(n.reputation_wad for n in honest)
    assert attacker.payout_wei == 0


def test_a_lone_little_is_enough_attacker_can_only_send_its_own_update():
    """Without colluders it has no spread to estimate (commit-reveal hides the honest updates),
    so z * std is 0 and it publishes its own trained update: it is scored like an honest node."""
    _, honest, attacker = _run("little-is-enough")

    assert attacker.reputation_wad > 4 * 10**17
    assert attacker.payout_wei > 0


def test_little_is_enough_colluders_share_one_update_and_all_score_zero():
    config = SimulationConfig(nodes=6, malicious=3, attack="little-is-enough", rounds=3, seed=21, spec=TaskSpec(epochs=1))
    report = run_simulation(config)
    attackers = [n for n in report.nodes if n.role != "honest"]

    assert len(attackers) == 3
    for node in attackers:
        # Score 0 from 0.5 with alpha 0.4: 0.3, then 0.18 < 0.2, so no seat in round 3.
        assert node.reputation_history_wad == [5 * 10**17, 3 * 10**17, 18 * 10**16, 18 * 10**16]
        assert node.payout_wei == 0


def test_a_stale_free_rider_scores_zero_from_its_first_replay():
    _, _, attacker = _run("free-rider-stale")
    reps = attacker.reputation_history_wad

    assert reps[1] > reps[0]  # round 1: trained honestly
    assert reps[2:] == [reps[1] * 6 // 10, reps[1] * 6 // 10 * 6 // 10]  # then score 0 each round


def test_every_attack_is_known_to_the_cli_parser():
    assert set(ATTACKS) >= {
        "sign-flip", "gaussian", "scaling", "label-flip", "free-rider-zero",
        "free-rider-stale", "free-rider-copy", "free-rider-perturbed", "little-is-enough",
    }


@pytest.mark.parametrize("kind", ["little-is-enough", "free-rider-copy"])
def test_simulate_gives_attackers_what_commit_reveal_lets_them_know(monkeypatch, kind):
    """The committee size, the colluders' own training and last round's reveals; never the
    round's honest updates."""
    import node.sim.attacks as attacks

    seen: list[tuple[int, int, int, int]] = []

    def spy(kind, ctx):
        seen.append((ctx.round, ctx.committee, len(ctx.team), len(ctx.revealed)))
        return craft_update(kind, ctx)

    monkeypatch.setattr(attacks, "craft_update", spy)
    config = SimulationConfig(nodes=6, malicious=3, attack=kind, rounds=2, seed=21, spec=TaskSpec(epochs=1))
    run_simulation(config)

    team = 3 if kind == "little-is-enough" else 0  # each attack is handed only what it reads
    revealed = 5 if kind == "free-rider-copy" else 0
    assert seen == [(1, 6, team, 0)] * 3 + [(2, 6, team, revealed)] * 3


# --- Several attacks in one run -------------------------------------------------------------------


def test_attack_roles_are_separated_by_commas_and_one_nodes_kinds_joined_by_plus():
    assert parse_roles("sign-flip,free-rider-zero") == ["sign-flip", "free-rider-zero"]
    assert parse_roles("bad-proposer+label-flip") == ["label-flip+bad-proposer"]  # one spelling per role
    config = SimulationConfig(nodes=6, malicious=3, attack="sign-flip,gaussian")
    assert node_roles(config) == ["honest"] * 3 + ["sign-flip", "gaussian", "sign-flip"]  # taken in turn


@pytest.mark.parametrize(
    ("attack", "malicious", "message"),
    [
        ("sign-flip+gaussian", 1, "at most one training attack"),
        ("teleport,sign-flip", 2, "unknown attack 'teleport'"),
        ("sign-flip,,gaussian", 2, "empty name"),
        ("bad-proposer+bad-proposer", 1, "names a kind twice"),
        ("sign-flip,gaussian,label-flip", 2, "3 roles for 2 malicious nodes"),
        ("sign-flip", 0, "--attack needs --malicious"),
    ],
)
def test_a_bad_attack_mix_is_refused_with_what_is_wrong(attack, malicious, message):
    with pytest.raises(ConfigError, match=message):
        run_simulation(SimulationConfig(nodes=4, malicious=malicious, attack=attack))


def test_two_attacks_side_by_side_each_attacker_is_caught_for_its_own():
    config = SimulationConfig(nodes=6, malicious=2, attack="sign-flip,free-rider-zero", rounds=3, seed=21, spec=TaskSpec(epochs=1))
    report = run_simulation(config)

    assert [n.role for n in report.nodes] == ["honest"] * 4 + ["sign-flip", "free-rider-zero"]
    honest = [n for n in report.nodes if n.role == "honest"]
    for attacker in report.nodes[4:]:
        # Each scores 0 for its own attack: 0.5 -> 0.3 -> 0.18, under the threshold, no seat in round 3.
        assert attacker.reputation_history_wad == [5 * 10**17, 3 * 10**17, 18 * 10**16, 18 * 10**16]
        assert attacker.payout_wei == 0 < min(n.payout_wei for n in honest)


def test_one_node_replays_its_update_and_proposes_a_model_of_its_own():
    """free-rider-stale+bad-proposer: the replays from round 2 score 0, and when its turn to propose
    comes its proposal is rejected and it is slashed, which takes its seat for the rounds after."""
    def config(seed: int) -> SimulationConfig:
        return SimulationConfig(nodes=4, malicious=1, attack="free-rider-stale+bad-proposer", rounds=4, seed=seed,
                                spec=TaskSpec(epochs=1))  # fmt: skip

    # its turn must come in round 2 or later, so that a replay is scored before the slash
    report, lines, w3, _ = run_until_rejected(config, seeds=[3, 1, 5, 7, 2], accounts=5, first_round=2)

    cheat = report.nodes[-1]
    assert cheat.role == "free-rider-stale+bad-proposer"
    (line,) = [line for line in lines if "rejected" in line]
    assert cheat.address in line
    (rejected,) = rejected_rounds(lines)
    reps = cheat.reputation_history_wad
    assert reps[1] > reps[0]  # round 1: an honest update
    for r in range(2, rejected + 1):
        assert reps[r] == reps[r - 1] * 6 // 10, r  # replays score 0
    assert all(rep == reps[rejected] for rep in reps[rejected:])  # slashed: no seat afterwards
    assert FedLedgerClient(w3, report.contracts["FedLedger"]).node_info(cheat.address)[1] == 0  # slashed
    assert cheat.payout_wei < min(n.payout_wei for n in report.nodes if n.role == "honest")


def test_a_colluding_minority_that_slanders_and_cheats_gets_nowhere(tmp_path):
    """2 of 6 nodes train honestly (so they keep their seats), but propose models of their own
    when their turn comes and vote against every honest proposal. Below the committee's capture threshold (3 of the 5 voters),
    they cannot reject an honest proposal nor pass their own: every honest stake is kept, and every
    finalized round is exactly what an independent verifier recomputes."""
    from node.sim.simulate import local_or_peers
    from node.storage import EmbeddedStorage
    from node.verify import verify_round

    def config_for(seed: int) -> SimulationConfig:
        return SimulationConfig(nodes=6, malicious=2, attack="bad-proposer+slander", rounds=3, seed=seed,
                                spec=TaskSpec(epochs=1))  # fmt: skip

    # the first seed whose run gives a colluder its turn to propose (see proposer_turns)
    report, lines, w3, seed = run_until_rejected(config_for, seeds=[1, 4, 3, 7, 2], accounts=7, workdir=tmp_path)
    config = config_for(seed)

    client = FedLedgerClient(w3, report.contracts["FedLedger"])
    honest = [n for n in report.nodes if n.role == "honest"]
    colluders = [n for n in report.nodes if n.role != "honest"]
    assert len(honest) == 4 and len(colluders) == 2
    assert all(client.node_info(n.address)[1] == config.stake_wei for n in honest)  # no honest slash
    for line in (line for line in lines if "rejected" in line):
        assert any(c.address in line for c in colluders), line
    assert any("rejected" in line for line in lines)  # their turn to propose came, and failed
    # (In-process, nodes act in node order and the honest majority's votes decide a proposal
    # before the colluders vote; the daemon test in tests/daemon/test_adversarial.py races them.)
    assert len(report.rounds) == config.rounds
    stores = [EmbeddedStorage(p, fsync=False) for p in sorted((tmp_path / f"seed{seed}").iterdir()) if p.is_dir()]
    for r in range(1, config.rounds + 1):
        verdict = verify_round(client, lambda cid, holders=(), max_bytes=None: local_or_peers(cid, stores[0], stores, max_bytes), report.task_id, r)
        assert verdict.ok, verdict.differences
    # A colluder whose turn came ends the task poorer than every honest node, rewards and stake
    # counted (it trained honestly, so its rewards alone can match an honest node's; its stake is
    # gone), and no colluder ends richer than the richest honest node
    def worth(n) -> int:
        return n.payout_wei + client.node_info(n.address)[1]

    caught = [c for c in colluders if any(c.address in line for line in lines if "rejected" in line)]
    assert caught and all(n.payout_wei > 0 for n in honest)
    assert all(worth(c) < min(worth(n) for n in honest) for c in caught)
    assert all(worth(c) <= max(worth(n) for n in honest) for c in colluders)
