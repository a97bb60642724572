"""C1 (#14): a daemon acts only in the tasks its operator joined.

The exploit: an attacker makes a task in which only its own node is eligible, reveals, and stays
silent as the designated proposer. After the propose timeout any staked node may propose; a
daemon that works on every task takes over, the attacker (the only voter) disagrees, and the
honest proposer's stake is slashed into the attacker's pool. Real daemons on a real anvil; the
attacker is scripted here with the project's client, as a hostile operator would script it.
"""

from __future__ import annotations

import secrets
import threading
import time

import pytest

from node.chain.anvil import Anvil
from node.chain.client import FedLedgerClient
from node.chain.types import Phase, make_commitment
from node.chain import dev_account
from node.chain.providers import rpc_web3
from node.daemon.config import write_template
from node.taskspec import TaskParams
from node.units import ETHER, WAD
from tests.daemon.federation import build_federation

pytestmark = pytest.mark.slow

ATTACKER_PEER = "12D3KooWAttackerAttackerAttackerAttackerAttacker1"
TRAP_TRIES = 400  # draws a grinding gang may take (a miss with 1-in-28 odds: (27/28)**400 < 1e-6)


@pytest.fixture
def anvil():
    with Anvil(accounts=10) as chain:
        yield chain


def default_config(node, fed) -> None:
    """The node.toml `fedledger node init` writes, pointed at the federation's deployment: the
    operator changed nothing about which tasks to work on."""
    node.config.unlink()
    write_template(node.config, fed.rpc)
    text = node.config.read_text()
    text = text.replace('deployment = "deployment.json"', 'deployment = "../deployment.json"')
    node.config.write_text(text.replace("poll_interval = 1.0", "poll_interval = 0.2"))


def attackers_round(gang: list[FedLedgerClient], task: int, update_cid: str, propose: bool, drawn: bool = False) -> None:
    """The gang, alone on the committee: draw (unless `drawn`), commit, reveal; then, if `propose`,
    the designated proposer posts score 1 for everyone and the others agree (else the proposer
    stays silent)."""
    if not drawn:
        members, _ = gang[0].draw_committee(task)
        assert sorted(members) == sorted(c.account.address for c in gang), members
    salts = {}
    for c in gang:
        salt = secrets.token_bytes(32)
        c.commit(task, 1, make_commitment(update_cid, 1, salt, c.account.address))
        salts[c.account.address] = salt
    for c in gang:
        c.reveal(task, 1, update_cid, 1, salts[c.account.address])
    if not propose:
        return
    proposer = gang[0].designated_proposer(task, 1)
    scores = [WAD] * len(gang)
    by_address = {c.account.address: c for c in gang}
    by_address[proposer].propose(task, 1, update_cid, scores)
    for address, c in by_address.items():
        if address != proposer:
            c.attest(task, 1, True)
    assert gang[0].task_info(task).finished or gang[0].round_state(task, 1).phase == Phase.ATTEST
    if not gang[0].task_info(task).finished:
        gang[0].finalize(task, 1, update_cid, scores)


def hostile_task(gang: list[FedLedgerClient], model_cid: str, spec_cid: str) -> int:
    """The attackers' trap: a task only they can sit on, whose silent proposer any staked node may
    replace after 3 s, and whose slash is a whole minimum stake."""
    owner = gang[0]
    # 1. Reputation 1.0, from a task of their own (alpha = 1) that only their bigger stake can sit.
    pump, _ = owner.create_task(model_cid, spec_cid, TaskParams(
        rounds=1, committee_size=len(gang), min_stake_wei=2 * ETHER, reputation_threshold_wad=0, alpha_wad=WAD,
        attest_timeout=1), ETHER)  # fmt: skip
    attackers_round(gang, pump, model_cid, propose=True)
    assert all(owner.reputation_of(c.account.address) == WAD for c in gang)
    # 2. The trap: the honest nodes' stake is enough to propose. A newcomer not yet scored may sit
    # whatever the threshold (#16's probation), so the gang grinds: it makes traps until a draw
    # seats its members alone (1 in 6 with 2 honest nodes, 1 in 28 with 6), and leaves the others.
    gang_addresses = sorted(c.account.address for c in gang)
    for _ in range(TRAP_TRIES):
        trap, _ = owner.create_task(model_cid, spec_cid, TaskParams(
            rounds=1, committee_size=len(gang), min_stake_wei=ETHER, reputation_threshold_wad=9 * WAD // 10,
            propose_timeout=3), ETHER)  # fmt: skip
        members, _ = owner.draw_committee(trap)
        if sorted(members) == gang_addresses:
            break
    else:
        raise AssertionError(f"no draw of {TRAP_TRIES} seated the gang alone")
    attackers_round(gang, trap, model_cid, propose=False, drawn=True)
    assert owner.round_state(trap, 1).phase == Phase.PROPOSE
    return trap


def disagree_with_everyone(gang: list[FedLedgerClient], task: int, stop: threading.Event) -> None:
    while not stop.is_set():
        for c in gang:
            try:
                state = c.round_state(task, 1)
                me = c.member_info(task, 1)
                if state.phase == Phase.ATTEST and not (me.vote and me.attempt == state.attempt):
                    c.attest(task, 1, False)
            except Exception:  # a race with the chain: look again
                pass
        stop.wait(0.3)


@pytest.mark.parametrize("joined", [False, True], ids=["default-config", "joined-task-1"])
def test_a_hostile_task_owner_cannot_slash_daemons_that_did_not_join_its_task(anvil, tmp_path, joined):
    """With the config `node init` writes, the daemons do nothing at all; with task 1 joined, they
    finish task 1 and leave the trap alone, although it waits for a proposer all along."""
    fed = build_federation(tmp_path, anvil.url, n_nodes=2, rounds=1)
    gang = [FedLedgerClient(rpc_web3(anvil.url), fed.client.address, dev_account(i)) for i in (3, 4)]
    for i, c in enumerate(gang):
        c.register(f"{ATTACKER_PEER[:-1]}{i}", [], 2 * ETHER)
    info = fed.client.task_info(fed.task)
    model_cid, _ = fed.client.global_model(fed.task)
    trap = hostile_task(gang, model_cid, info.spec_cid)
    deadline = fed.client.round_state(trap, 1).deadline

    if not joined:
        for n in fed.nodes:
            default_config(n, fed)
    stop = threading.Event()
    voter = threading.Thread(target=disagree_with_everyone, args=(gang, trap, stop), daemon=True)
    voter.start()
    try:
        fed.start()

        def slashed() -> bool:
            return any(fed.client.node_info(n.address)[1] < ETHER for n in fed.nodes)

        # Daemons are up in ~10 s; the trap's proposer has been silent since `deadline`.
        end = time.time() + 60
        while time.time() < end and not slashed():
            assert fed.dead() is None, [n.tail() for n in fed.nodes]
            time.sleep(0.5)
        if not slashed():  # the daemons had every chance to take the bait
            assert time.time() > deadline + 30
        logs = [n.text() for n in fed.nodes]
        finished = fed.client.task_info(fed.task).finished
    finally:
        stop.set()
        fed.stop_all()
        voter.join(5)

    for n in fed.nodes:
        assert fed.client.node_info(n.address)[1] == ETHER, f"node {n.index} was slashed"
    proposals = fed.client.logs("ProposalSubmitted", taskId=trap)
    assert [p.args["proposer"] for p in proposals] == []
    if joined:
        assert finished  # the task the operator chose ran as before
        for text in logs:
            assert "task 1 joined" in text and f"task {trap} " not in text and "joined no task" not in text
    else:
        assert not finished
        for text in logs:  # the operator is told why the daemon does nothing
            assert text.count("joined no task") == 1, text[-2000:]
