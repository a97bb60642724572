"""One round implementation: nodes stepped in this process and node daemons on anvil run the same
code (node/protocol/), so with the same seed they produce the same global models, and an attack
is a node behaviour that runs in either."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

from node.sim.federation import run_daemon_simulation
from node.sim.simulate import SimulationConfig, run_simulation
from node.taskspec import TaskSpec
from tests.conftest import run_cli


@pytest.mark.slow
@pytest.mark.parametrize(("malicious", "attack"), [(0, None), (2, "little-is-enough")])
def test_a_federation_gives_the_same_global_models_in_process_and_as_daemons(tmp_path, malicious, attack):
    """Committee = all nodes, so every round aggregates every node's update: the same seed must give
    the same CIDs round by round, and every node the same scores, in both modes. With colluders
    too: their shared estimate of the honest spread (each daemon recomputes its teammates'
    training from the data they share) is the same bits as in one process."""
    config = SimulationConfig(nodes=3 + malicious, malicious=malicious, attack=attack, rounds=3, seed=11,
                              chain="anvil", spec=TaskSpec(epochs=1))  # fmt: skip

    daemons = run_daemon_simulation(config, workdir=tmp_path / "daemons")
    in_process = run_simulation(replace(config, chain="embedded"), workdir=tmp_path / "in-process")

    cids = [r.global_model_cid for r in in_process.rounds]
    assert len(set(cids)) == 3
    assert [r.global_model_cid for r in daemons.rounds] == cids
    # Node i is a fresh key as a daemon and a dev account in-process, but it trains the same shard
    # with the same seeds: so the same scores and the same reputation, round by round.
    assert [n.scores_wad for n in daemons.nodes] == [n.scores_wad for n in in_process.nodes]
    assert [n.reputation_history_wad for n in daemons.nodes] == [n.reputation_history_wad for n in in_process.nodes]


@pytest.mark.slow
def test_attacks_run_against_daemons_and_report_like_the_in_process_run(tmp_path):
    """The issue's command: 6 daemons, 2 of them attacking, one flipping signs, one proposing a model of
    its own making when its turn comes."""
    args = ["simulate", "--nodes", "6", "--malicious", "2", "--attack", "sign-flip,bad-proposer",
            "--rounds", "3", "--epochs", "1", "--json"]  # fmt: skip

    proc = run_cli(*args, "--chain", "anvil", "--workdir", str(tmp_path / "work"), timeout=900)
    local = run_cli(*args, timeout=900)

    assert proc.returncode == 0, proc.stderr[-3000:]
    assert local.returncode == 0, local.stderr[-3000:]
    for summary in (json.loads(proc.stdout), json.loads(local.stdout)):
        nodes = summary["nodes"]
        assert [n["role"] for n in nodes] == ["honest"] * 4 + ["sign-flip", "bad-proposer"]
        flipper = nodes[4]
        # Its flipped updates score 0 every round it sits: 0.5 -> 0.3 -> 0.18, then no seat.
        assert flipper["scores_wad"][:2] == ["0", "0"] and flipper["scores_wad"][2] is None
        assert int(flipper["payout_wei"]) == 0
        assert all(int(n["payout_wei"]) + int(n["held_wei"]) > 0 for n in nodes[:4])  # paid, or held for probation
        assert len(summary["rounds"]) == 3


@pytest.mark.slow
def test_a_bad_proposer_daemon_is_rejected_and_slashed_by_honest_daemons(tmp_path):
    """3 daemons, one a bad proposer. The designated proposer of a round is its first drawn
    member (anvil's block hashes seed the draw), so which round is the cheat's turn varies, but in
    12 rounds it comes (missed with probability (2/3)^12 < 1%). Both honest voters
    disagree (a strict majority), the cheat is slashed, and every round finalizes the honest
    model. Two daemons are the fewest that go on after the slash: one proposes, one checks."""
    config = SimulationConfig(nodes=3, malicious=1, attack="bad-proposer", rounds=12, seed=5, chain="anvil",
                              spec=TaskSpec(epochs=1))  # fmt: skip
    lines: list[str] = []

    report = run_daemon_simulation(config, workdir=tmp_path / "daemons", progress=lines.append)

    *honest, cheat = report.nodes
    rejected = [line for line in lines if "rejected" in line]
    assert len(rejected) == 1 and cheat.address in rejected[0], lines
    r = int(re.match(r"round (\d+):", rejected[0]).group(1))
    assert cheat.scores_wad[r - 1] is not None  # it trained honestly in that round, and was scored
    assert all(s is None for s in cheat.scores_wad[r:])  # slashed: no seat afterwards
    assert all(s is not None for n in honest for s in n.scores_wad)
    assert len(report.rounds) == config.rounds
    assert cheat.payout_wei < min(n.payout_wei for n in honest)
