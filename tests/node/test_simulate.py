"""End to end: a small federation on the embedded chain, checked against the chain itself."""

from __future__ import annotations

import json

import pytest

from incentives.reputation import PROBATION_ROUNDS
from node.chain import FedLedgerClient, dev_account
from node.chain.providers import embedded_web3
from proposer_turns import rejected_rounds, run_until_rejected
from node.errors import ConfigError
from node.storage import EmbeddedStorage
from node.sim.simulate import SimulationConfig, run_simulation
from node.taskspec import TaskSpec

# Three rounds: a newcomer's rewards are held for its first PROBATION_ROUNDS scored rounds (#16),
# so the last round is where the honest nodes' pay vests and becomes withdrawable.
SMALL = SimulationConfig(nodes=3, rounds=PROBATION_ROUNDS, seed=11, spec=TaskSpec(epochs=3))


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    """One run of the small federation; the chain and the nodes' stores stay open for inspection."""
    w3 = embedded_web3(num_accounts=SMALL.nodes + 1)
    lines: list[str] = []
    workdir = tmp_path_factory.mktemp("federation")
    report = run_simulation(SMALL, workdir=workdir, progress=lines.append, w3=w3)
    client = FedLedgerClient(w3, report.contracts["FedLedger"])
    report.workdir = workdir  # type: ignore[attr-defined]
    return w3, client, report, lines


def test_the_federation_learns(federation):
    _, _, report, lines = federation

    assert len(report.rounds) == SMALL.rounds
    assert report.rounds[-1].test_accuracy > report.initial_accuracy + 0.3
    assert any(line.startswith(f"round {SMALL.rounds}/{SMALL.rounds}") for line in lines)


def test_report_matches_the_chain(federation):
    _, client, report, _ = federation

    cid, round_ = client.global_model(report.task_id)
    assert (cid, round_) == (report.rounds[-1].global_model_cid, SMALL.rounds)
    for node in report.nodes:
        assert client.reputation_of(node.address) == node.reputation_wad
        assert client.pending_rewards(node.address) == node.payout_wei
        assert node.payout_wei > 0  # vested at the end of the probation
        assert client.probation_of(node.address) == (False, PROBATION_ROUNDS, 0) and node.held_wei == 0
    # The whole pool went out: to the trainers, and any rounding dust to the owner.
    paid = sum(n.payout_wei for n in report.nodes) + client.pending_rewards(report.owner)
    assert paid == SMALL.reward_wei
    assert client.task_info(report.task_id).finished


def test_the_global_model_is_stored_under_its_cid(federation, tmp_path):
    _, client, report, _ = federation
    summary = report.summary()

    assert [r["global_model_cid"] for r in summary["rounds"]] == [r.global_model_cid for r in report.rounds]
    assert all(isinstance(n["payout_wei"], str) for n in summary["nodes"])
    assert summary["config"]["nodes"] == 3 and summary["deployment"]["contracts"]["FedLedger"] == client.address
    json.dumps(summary)  # serializable as is


def test_every_node_that_agreed_holds_and_pins_each_global_model(federation):
    """Not only the proposer: every node that recomputed a round and agreed keeps its model, so a
    model stays available (to train the next round, to download) while its proposer is down."""
    w3, client, report, _ = federation
    for rec in report.rounds:
        agreed = {e.args["node"] for e in client.logs("Attested", taskId=report.task_id, round=rec.round) if e.args["agree"]}
        assert agreed, f"round {rec.round}: nobody attested"
        for i, node in enumerate(report.nodes):
            if node.address not in agreed:
                continue
            store = EmbeddedStorage(report.workdir / f"node{i}", fsync=False)
            assert store.has(rec.global_model_cid), f"node {i} agreed in round {rec.round} but does not hold its model"
            assert store.is_pinned(rec.global_model_cid)


def test_withdraw_moves_the_eth(federation):
    w3, client, report, _ = federation
    node = report.nodes[0]
    account = dev_account(1)
    assert account.address == node.address
    before = w3.eth.get_balance(node.address)

    receipt = client.as_account(account).withdraw()

    fee = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert w3.eth.get_balance(node.address) == before + node.payout_wei - fee
    assert client.pending_rewards(node.address) == 0


def test_same_seed_gives_the_same_global_models(federation):
    _, _, report, _ = federation

    again = run_simulation(SMALL)
    other = run_simulation(SimulationConfig(nodes=3, rounds=1, seed=12, spec=TaskSpec(epochs=3)))

    assert [r.global_model_cid for r in again.rounds] == [r.global_model_cid for r in report.rounds]
    assert other.rounds[0].global_model_cid != report.rounds[0].global_model_cid


def test_a_free_rider_earns_nothing_and_loses_reputation():
    config = SimulationConfig(nodes=3, malicious=1, attack="free-rider-zero", rounds=2, seed=5, spec=TaskSpec(epochs=2))

    report = run_simulation(config)

    honest = [n for n in report.nodes if n.role == "honest"]
    rider = next(n for n in report.nodes if n.role == "free-rider-zero")
    assert rider.payout_wei == 0
    assert rider.reputation_wad < min(n.reputation_wad for n in honest)
    assert rider.reputation_history_wad == sorted(rider.reputation_history_wad, reverse=True)


def test_a_free_riders_pay_for_protocol_work_is_held_then_forfeited():
    # Prepare: 5% of each round to the proposer, 5% to the agreeing attesters
    config = SimulationConfig(
        nodes=3, malicious=1, attack="free-rider-zero", rounds=2, seed=5, spec=TaskSpec(epochs=2),
        proposer_share_bps=500, attester_share_bps=500,
    )  # fmt: skip
    w3 = embedded_web3(num_accounts=config.nodes + 1)

    report = run_simulation(config, w3=w3)

    client = FedLedgerClient(w3, report.contracts["FedLedger"])
    honest = [n for n in report.nodes if n.role == "honest"]
    rider = next(n for n in report.nodes if n.role == "free-rider-zero")
    # It attested honestly, so it was paid for that, and for nothing else: at most the 10% of the
    # pool, held for its probation (#16), then forfeited when its reputation fell under the threshold
    held = sum(int(e.args["amount"]) for e in client.logs("RewardHeld", taskId=report.task_id)
               if e.args["account"] == rider.address)  # fmt: skip
    forfeited = [int(e.args["forfeited"]) for e in client.logs("ProbationEnded", taskId=report.task_id)
                 if e.args["account"] == rider.address]  # fmt: skip
    assert 0 < held <= config.reward_wei // 10 and forfeited == [held]
    assert rider.payout_wei == rider.held_wei == 0 < min(n.held_wei for n in honest)
    assert rider.reputation_wad < min(n.reputation_wad for n in honest)
    assert rider.reputation_history_wad == sorted(rider.reputation_history_wad, reverse=True)


def test_a_bad_proposer_is_rejected_slashed_and_every_round_still_finalizes_correctly():
    # Prepare: a round's first drawn member proposes; the first seed whose run gives the cheat
    # its turn in round 2 or 3 is used (see proposer_turns): honest rounds before, one after
    def bad(seed: int) -> SimulationConfig:
        return SimulationConfig(nodes=4, malicious=1, attack="bad-proposer", rounds=4, seed=seed, spec=TaskSpec(epochs=1))

    # Execute
    report, lines, w3, seed = run_until_rejected(bad, seeds=[3, 1, 5, 7, 2, 4, 6], accounts=5, first_round=2, last_round=3)
    reference = run_simulation(SimulationConfig(nodes=4, rounds=4, seed=seed, spec=TaskSpec(epochs=1)))

    # Assert: the cheat's proposal was rejected and its stake slashed ...
    client = FedLedgerClient(w3, report.contracts["FedLedger"])
    cheat = next(n for n in report.nodes if n.role == "bad-proposer")
    (line,) = [line for line in lines if "rejected" in line]
    assert cheat.address in line
    assert client.node_info(cheat.address)[1] == 0  # slashed by the task's minimum stake (= its stake)
    # ... and up to that round the models are exactly those of an all-honest run (it trains
    # honestly); after it, with no stake left, it no longer sits on committees.
    (rejected_in,) = rejected_rounds(lines)
    got = [r.global_model_cid for r in report.rounds]
    assert got[:rejected_in] == [r.global_model_cid for r in reference.rounds][:rejected_in]
    assert cheat.address not in client.committee(report.task_id, 4)


def test_an_in_process_run_is_a_function_of_its_seed():
    """Block hashes seed the committee draws and with them the proposers (and their pay): the
    in-process chain and the simulated nodes' commitment salts are derived, not random, so two
    runs of one seed build the same chain, block for block."""
    config = SimulationConfig(nodes=3, rounds=2, seed=11, spec=TaskSpec(epochs=1))
    heads = []
    for _ in range(2):
        w3 = embedded_web3(num_accounts=4)
        run_simulation(config, w3=w3)
        heads.append(w3.eth.get_block("latest")["hash"])
    assert heads[0] == heads[1]


@pytest.mark.parametrize(
    "config, message",
    [
        (SimulationConfig(nodes=0), "--nodes"),
        (SimulationConfig(malicious=5), "--malicious"),
        (SimulationConfig(malicious=1), "--attack"),
        (SimulationConfig(malicious=1, attack="teleport"), "unknown attack"),
        (SimulationConfig(rule="bogus"), "unknown rule"),
        (SimulationConfig(chain="rpc"), "--rpc"),
    ],
)
def test_bad_configs_are_refused_before_anything_runs(config, message):
    with pytest.raises(ConfigError, match=message):
        run_simulation(config)


def test_cli_simulate_writes_the_report(cli, tmp_path):
    out = tmp_path / "report"

    proc = cli("simulate", "--nodes", "3", "--rounds", "2", "--epochs", "2", "--report", str(out))

    assert proc.returncode == 0, proc.stderr
    assert "round 2/2" in proc.stdout and "payout (ETH)" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) >= {"config", "rounds", "nodes", "deployment"}
    assert summary["config"] == {
        "nodes": 3, "malicious": 0, "attack": None, "rounds": 2, "rule": "fedavg", "seed": 7,
        "chain": "embedded", "alpha": None, "app": "digits-mlp",
    }
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    for r in summary["rounds"]:
        assert r["global_model_cid"].startswith("bafk") and 0 <= r["test_accuracy"] <= 1 and r["gas_used"] > 0
    for n in summary["nodes"]:
        assert n["role"] == "honest" and 0 <= n["reputation"] <= 1 and int(n["held_wei"]) > 0  # 2 rounds: on probation
    for name in ("accuracy.png", "reputation.png", "payouts.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_simulate_bad_flag_is_one_line(cli):
    proc = cli("simulate", "--malicious", "2")

    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "--attack" in proc.stderr
