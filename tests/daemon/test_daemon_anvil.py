"""Daemons as an operator runs them: separate processes sharing only anvil and libp2p."""

from __future__ import annotations

import json
import urllib.request

import pytest

import numpy as np

from aggregation import decode_model, encode_update
from node.chain.anvil import Anvil
from node.chain.types import Phase, make_commitment
from node.protocol import HOLD_BEFORE_PROPOSE
from node.storage import EmbeddedStorage
from tests.conftest import run_cli
from tests.daemon.federation import build_federation, committed_count, node_account

pytestmark = pytest.mark.slow


@pytest.fixture
def anvil():
    with Anvil(accounts=10) as chain:
        yield chain


def test_five_daemons_run_three_rounds(anvil, tmp_path):
    fed = build_federation(tmp_path, anvil.url, n_nodes=5, rounds=3)
    try:
        for n in fed.nodes:
            n.start()
        client = fed.client
        fed.wait(lambda: client.task_info(fed.task).finished, timeout=400, what="task 1 to finish")
        for n in fed.nodes:
            assert n.proc.wait(timeout=60) == 0, n.text()[-2000:]
    finally:
        fed.stop_all()

    cid, round_ = client.global_model(fed.task)
    assert round_ == 3 and cid.startswith("bafk")
    for n in fed.nodes:
        assert committed_count(fed, n.address) == 3  # once per round, never twice
        assert client.reputation_of(n.address) > 5 * 10**17  # honest work raised it from 0.5
        assert client.pending_rewards(n.address) > 0
    logs = "".join(n.text() for n in fed.nodes)
    assert "took over proposing" not in logs  # nobody had to wait for a timeout
    reputation = json.loads(run_cli("reputation", fed.nodes[0].address, "--deployment", str(fed.deployment), "--json").stdout)
    assert reputation[0]["reputation_wad"] == str(client.reputation_of(fed.nodes[0].address))
    # Any node re-runs any round from the on-chain CIDs and gets the same bytes. Node 0's
    # blockstore holds every update it attested to; the verifier reads it directly.
    for r in (1, 2, 3):
        proc = run_cli("verify", "--deployment", str(fed.deployment), "--task", "1", "--round", str(r),
                       "--repo", str(fed.nodes[0].directory / "ipfs"), "--json")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        verdict = json.loads(proc.stdout)
        assert verdict["match"] and len(verdict["participants"]) == 5


def test_a_trainer_killed_between_commit_and_reveal_resumes(anvil, tmp_path):
    fed = build_federation(tmp_path, anvil.url, n_nodes=3, rounds=1)
    victim = fed.nodes[1]
    try:
        # Node 2 stays off at first: every node is registered, so the committee has all three and
        # the commit phase waits for node 2, which catches the victim between commit and reveal.
        # Node 0 runs too: it serves the initial model.
        fed.nodes[0].start()
        victim.start()
        client = fed.client
        fed.wait(lambda: committed_count(fed, victim.address) == 1, timeout=180, what="the victim's commit")
        victim.kill9()
        assert client.round_state(fed.task, 1).phase == Phase.COMMIT
        fed.nodes[2].start()
        victim.start()
        fed.wait(lambda: client.task_info(fed.task).finished, timeout=300, what="the round to finish")
    finally:
        fed.stop_all()

    assert committed_count(fed, victim.address) == 1  # the restart did not commit again
    assert "revealed" in victim.text().split("--- start 2")[1]
    assert client.reputation_of(victim.address) > 5 * 10**17


def test_a_silent_proposer_is_taken_over_and_a_round_without_a_majority_ends_void_unslashed(anvil, tmp_path):
    """Node 1 has no daemon: the test plays it by hand, committing and revealing, then it goes
    silent, as a killed proposer would. The two revealed members take the proposer's turn in
    draw order, attempt after attempt, so the silent node is the designated proposer of attempt
    0 or 1. The live node takes over on its turns, but its only voter is the silent node: no
    proposal can gather a strict majority, so after 4 attempts the round is void, and nobody is
    slashed for it (#14 C2)."""
    fed = build_federation(tmp_path, anvil.url, n_nodes=2, rounds=1, propose_timeout=15, attest_timeout=15)
    live, silent = fed.nodes
    client = fed.client
    me = client.as_account(node_account(silent))
    # Its update must be fetchable while it is silent: the live node holds a copy.
    base_cid, _ = client.global_model(fed.task)
    base, _ = decode_model(EmbeddedStorage(live.directory / "ipfs").get(base_cid), 2**26)
    delta = {k: np.full(v.shape, 1e-3, np.float32) for k, v in base.items()}
    update = encode_update(delta, num_samples=10, task=fed.task, round=1, base=base_cid)
    cid = EmbeddedStorage(live.directory / "ipfs").put(update)
    salt = b"\x01" * 32
    try:
        live.start()
        fed.wait(lambda: committed_count(fed, live.address) == 1, timeout=120, what="the live node's commit")
        me.commit(fed.task, 1, make_commitment(cid, 10, salt, silent.address))
        fed.wait(lambda: client.round_state(fed.task, 1).reveal_count == 1, timeout=60, what="the live node's reveal")
        me.reveal(fed.task, 1, cid, 10, salt)
        first_drawn = client.committee(fed.task, 1)[0]
        assert client.designated_proposer(fed.task, 1) == first_drawn  # attempt 0
        fed.wait(lambda: client.task_info(fed.task).finished, timeout=500, what="the round to end")
        assert live.proc.wait(timeout=60) == 0
    finally:
        fed.stop_all()

    assert "took over proposing" in live.text()
    assert client.global_model(fed.task)[1] == 0  # void: no model was accepted
    assert [e.args["round"] for e in client.logs("RoundVoided", taskId=fed.task)] == [1]
    assert client.node_info(live.address)[1] == client.node_info(silent.address)[1] > 0  # nobody slashed


def test_a_killed_designated_proposer_is_replaced_after_the_timeout(anvil, tmp_path):
    """Four daemons; whichever is the designated proposer of round 1 is stopped by a test seam
    just before it proposes and killed with SIGKILL there. Another daemon takes over once the
    propose timeout has passed, and the round (the task) completes without the dead node: the
    two other survivors are a strict majority of the takeover's 3 voters (the dead one counts)."""
    fed = build_federation(tmp_path, anvil.url, n_nodes=4, rounds=1, propose_timeout=20, attest_timeout=20)
    client = fed.client
    holding = "holding before proposing"
    try:
        for n in fed.nodes:
            n.start(extra_env={HOLD_BEFORE_PROPOSE: "1"})
        fed.wait(lambda: any(holding in n.text() for n in fed.nodes), timeout=240, what="the designated proposer")
        victim = next(n for n in fed.nodes if holding in n.text())
        assert client.designated_proposer(fed.task, 1) == victim.address
        victim.kill9()
        fed.wait(lambda: client.task_info(fed.task).finished, timeout=240, what="a takeover proposal")
        survivors = [n for n in fed.nodes if n is not victim]
        for n in survivors:
            assert n.proc.wait(timeout=60) == 0, n.text()[-2000:]
    finally:
        fed.stop_all()

    assert any("took over proposing" in n.text() for n in survivors)
    assert "proposed" not in victim.text() and "took over" not in victim.text()
    assert client.global_model(fed.task)[1] == 1
    for n in survivors:
        assert client.reputation_of(n.address) > 5 * 10**17  # honest work paid off for the living


def test_status_endpoint_and_bad_startups(anvil, tmp_path):
    fed = build_federation(tmp_path, anvil.url, n_nodes=1, rounds=1)
    node = fed.nodes[0]
    text = node.config.read_text().replace('listen = "127.0.0.1:0"', 'listen = "127.0.0.1:18999"')
    node.config.write_text(text)

    wrong = run_cli("node", "run", "--config", str(node.config), env={"FEDLEDGER_PASSWORD": "not-the-password"})
    assert wrong.returncode == 1 and "wrong password" in wrong.stderr and wrong.stderr.count("\n") == 1
    missing = run_cli("node", "run", "--config", str(tmp_path / "nope.toml"), env={"FEDLEDGER_PASSWORD": "x"})
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    bad_rpc = node.directory / "bad.toml"
    bad_rpc.write_text(text.replace(anvil.url, "http://127.0.0.1:9"))
    unreachable = run_cli("node", "run", "--config", str(bad_rpc), env={"FEDLEDGER_PASSWORD": "daemon-test-pass"})
    assert unreachable.returncode == 1 and "cannot reach the chain" in unreachable.stderr

    try:
        node.start()
        fed.wait(lambda: "status on http://127.0.0.1:18999" in node.text(), timeout=60, what="the status endpoint")
        status = json.loads(urllib.request.urlopen("http://127.0.0.1:18999/status", timeout=5).read())
        metrics = urllib.request.urlopen("http://127.0.0.1:18999/metrics", timeout=5).read().decode()
        assert status["node"] == node.address and status["peer_id"].startswith("12D3KooW")
        assert "fedledger_up 1.0" in metrics
        assert node.stop() == 0  # SIGTERM: a clean exit
        assert "shutting down" in node.text()
    finally:
        fed.stop_all()
