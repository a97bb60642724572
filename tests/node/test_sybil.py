"""The sybil re-registration attacker (#16): it flips signs, and when an identity of it falls under
the reputation threshold it registers a fresh one, which carries on from the same data shard.
Asserted on the chain's own records (registrations, commitments, reputations, rewards), then on
the report and the robustness metrics read from it."""

from __future__ import annotations

import pytest

from aggregation import aggregate_round
from node.chain import FedLedgerClient, dev_account
from node.chain.providers import embedded_web3
from node.sim import robustness
from node.sim.attacks import SYBIL
from node.sim.simulate import SimulationConfig, identity_index, run_simulation
from node.storage.embedded import EmbeddedStorage
from node.storage.unixfs import cid_of
from node.taskspec import TaskParams, TaskSpec

# Sign-flipping scores 0: 0.5 -> 0.3 -> 0.18 puts the first identity under the threshold after
# round 2; round 3 opened before that was read, so the comeback sits from round 4.
CONFIG = SimulationConfig(nodes=4, malicious=1, attack=SYBIL, rounds=5, seed=21, spec=TaskSpec(epochs=1))
THRESHOLD = TaskParams().reputation_threshold_wad


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One run; its chain and the nodes' stores (under `workdir`) stay open for inspection."""
    w3 = embedded_web3(num_accounts=CONFIG.nodes + 1)
    lines: list[str] = []
    workdir = tmp_path_factory.mktemp("sybil")
    report = run_simulation(CONFIG, workdir=workdir, progress=lines.append, w3=w3)
    return FedLedgerClient(w3, report.contracts["FedLedger"]), report, lines, workdir


def test_an_excluded_sybil_registers_a_fresh_identity_that_carries_on(run):
    client, report, _, _ = run
    first = dev_account(CONFIG.nodes).address  # the last node attacks
    second = dev_account(identity_index(CONFIG.nodes, CONFIG.nodes - 1, 1) + 1).address

    registered = [ev.args["node"] for ev in client.logs("NodeRegistered", from_block=report.block_number)]
    finalized = {ev.args["round"]: ev.block for ev in client.logs("RoundFinalized", taskId=report.task_id)}
    comeback = next(ev for ev in client.logs("NodeRegistered", from_block=report.block_number) if ev.args["node"] == second)
    commits = {}
    for ev in client.logs("UpdateCommitted", taskId=report.task_id):
        commits.setdefault(ev.args["node"], []).append(ev.args["round"])

    # One more identity than nodes, registered right after the round that excluded the first.
    assert registered == [dev_account(i + 1).address for i in range(CONFIG.nodes)] + [second]
    assert finalized[2] < comeback.block < finalized[3]
    assert client.reputation_of(first, block=finalized[2]) < THRESHOLD <= client.reputation_of(first, block=finalized[1])
    # The excluded identity stops; the new one attacks from the first round whose draw it was in.
    assert commits[first] == [1, 2]
    assert commits[second] == [4, 5]
    assert client.reputation_of(second) < THRESHOLD  # and is caught in turn


def test_a_comeback_is_scored_but_does_not_move_the_model(run):
    """Reputation before influence: the fresh identity's negated update in its first rounds is
    scored (0) but left out of the aggregate, so the round's model is the honest nodes' alone.
    Before, it was aggregated: each comeback cost the model as much as the first identity did."""
    client, report, _, workdir = run
    spec = TaskSpec(epochs=1)
    second = dev_account(identity_index(CONFIG.nodes, CONFIG.nodes - 1, 1) + 1).address
    stores = [EmbeddedStorage(path, fsync=False) for path in sorted(workdir.glob("node*")) + [workdir / "owner"]]

    def content(cid: str) -> bytes:
        return next(s.get(cid) for s in stores if s.has(cid))

    for r in (4, 5):
        updates = client.round_updates(report.task_id, r)
        assert second in [u.sender for u in updates]
        base = content(report.rounds[r - 2].global_model_cid)
        honest = [content(u.cid) for u in updates if u.sender != second]
        alone = aggregate_round(spec.rule, base, honest, options=spec.rule_options(), max_update_bytes=spec.max_update_bytes)

        assert cid_of(alone.model) == report.rounds[r - 1].global_model_cid
        assert [u.sender for u in updates if not u.earned] == [second]  # as the chain recorded at reveal
    assert next(n for n in report.nodes if n.address == second).scores_wad[3:] == [0, 0]


def test_the_report_has_one_record_per_identity_and_counts_both_as_the_attacker(run):
    client, report, lines, _ = run
    sybils = [n for n in report.nodes if n.role == SYBIL]
    first, second = sybils

    assert len(report.nodes) == CONFIG.nodes + 1
    assert (first.identity_of, second.identity_of) == (first.address, first.address)
    assert (first.joined_after_round, second.joined_after_round) == (0, 2)
    assert second.scores_wad == [None, None, None, 0, 0]
    for node in sybils:
        assert node.reputation_wad == client.reputation_of(node.address)
        credited = client.logs("RewardCredited", account=node.address, taskId=report.task_id)
        assert node.payout_wei == sum(ev.args["amount"] for ev in credited)
    # The history starts at registration (0.5, still 0.5 after round 3, in which it had no seat).
    assert second.reputation_history_wad == [5 * 10**17, 5 * 10**17, 3 * 10**17, 18 * 10**16]
    assert {"identity_of", "joined_after_round"} <= set(report.summary()["nodes"][-1])
    assert "identity_of" not in report.summary()["nodes"][0]
    assert any(f"it comes back as {second.address}" in line for line in lines)


def test_the_robustness_metrics_count_every_identity(run, monkeypatch):
    _, report, _, _ = run
    monkeypatch.setattr(robustness, "run_simulation", lambda config, observer: report)
    args = robustness.parser().parse_args(["--nodes", "4", "--malicious", "1", "--rounds", "5"])

    outcome = robustness.run_one("iid", "fedavg", SYBIL, args)

    # Each identity is under the threshold 2 rounds after its own first attack (rounds 1 and 4).
    assert outcome.rounds_to_exclusion == [2, 2]
    assert outcome.attacker_reputation[1] == [None, None, 0.5, 0.5, 0.3, 0.18]
    total = sum(n.payout_wei for n in report.nodes)
    assert outcome.attacker_payout_share == sum(n.payout_wei for n in report.nodes if n.role == SYBIL) / total


def test_a_sybil_run_replays_exactly(run):
    _, report, _, _ = run

    again = run_simulation(CONFIG)

    assert [r.global_model_cid for r in again.rounds] == [r.global_model_cid for r in report.rounds]
    assert again.summary()["nodes"] == report.summary()["nodes"]
