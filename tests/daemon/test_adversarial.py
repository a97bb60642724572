"""#14, end to end: real daemons on a real anvil against a hostile task owner and a colluding
minority at once. Every honest stake is kept, and only correctly recomputed models are finalized.

- The federation: 6 daemons on task 1, 2 of them colluders that train honestly (so they keep
  their seats) but propose models of their own when their turn comes and vote against every
  honest proposal (`bad-proposer+slander`, node/sim/attacks.py).
- The hostile owner: two more accounts pump their reputation to 1.0 in a task of their own and
  open a trap task only they can sit on, whose proposer stays silent so that any staked node may
  take over, while they vote against whoever does (tests/daemon/test_task_policy.py explains it).
"""

from __future__ import annotations

import threading

import pytest

from node.chain import dev_account
from node.chain.anvil import Anvil
from node.chain.client import FedLedgerClient
from node.chain.providers import rpc_web3
from node.sim.federation import FederationConfig, build_federation
from node.sim.simulate import local_or_peers
from node.storage import EmbeddedStorage
from node.taskspec import TaskSpec
from node.units import ETHER
from node.verify import verify_round
from tests.daemon.test_task_policy import ATTACKER_PEER, disagree_with_everyone, hostile_task

pytestmark = pytest.mark.slow

ROUNDS = 3


@pytest.fixture
def anvil():
    with Anvil(accounts=10) as chain:
        yield chain


def test_honest_daemons_keep_their_stakes_and_only_verified_models_are_final(anvil, tmp_path):
    config = FederationConfig(
        nodes=6, rounds=ROUNDS, spec=TaskSpec(epochs=1), run_seed=8, funding_wei=5 * ETHER,
        roles=("honest",) * 4 + ("bad-proposer+slander",) * 2,
        # The gang's accounts are staked, reputable and eligible for task 1 from round 2 on; they
        # run no daemon, so a round they are seated in waits out the commit timeout without them.
        commit_timeout=20, reveal_timeout=20, propose_timeout=20, attest_timeout=20,
    )  # fmt: skip
    fed = build_federation(tmp_path, anvil.url, config)
    honest = [n for n in fed.nodes if n.role == "honest"]
    colluders = [n for n in fed.nodes if n.role != "honest"]
    gang = [FedLedgerClient(rpc_web3(anvil.url), fed.client.address, dev_account(i)) for i in (8, 9)]
    for i, c in enumerate(gang):
        c.register(f"{ATTACKER_PEER[:-1]}{i}", [], 2 * ETHER)
    model_cid, _ = fed.client.global_model(fed.task)
    trap = hostile_task(gang, model_cid, fed.client.task_info(fed.task).spec_cid)

    stop = threading.Event()
    voter = threading.Thread(target=disagree_with_everyone, args=(gang, trap, stop), daemon=True)
    voter.start()
    try:
        fed.start()
        fed.wait(lambda: fed.client.task_info(fed.task).finished, timeout=900, what=f"task {fed.task} to finish")
    finally:
        stop.set()
        fed.stop_all()
        voter.join(5)

    client = fed.client
    # Every honest stake is kept: in the federation's task and in the trap.
    for n in honest:
        assert client.node_info(n.address)[1] == config.stake_wei, f"honest node {n.index} was slashed"
    assert client.logs("ProposalSubmitted", taskId=trap) == []
    slashed = {e.args["node"] for e in client.logs("Slashed")}
    assert slashed <= {n.address for n in colluders}, slashed
    # Every finalized round of the task is what an independent verifier recomputes.
    stores = [EmbeddedStorage(n.directory / "ipfs") for n in fed.nodes]
    finalized = [e.args["round"] for e in client.logs("RoundFinalized", taskId=fed.task)]
    voided = [e.args["round"] for e in client.logs("RoundVoided", taskId=fed.task)]
    assert sorted(finalized + voided) == list(range(1, ROUNDS + 1)) and finalized
    # A round may be void: when few members reveal (the gang's seats stay silent), one colluder
    # among the voters can keep every honest proposal short of a strict majority. That costs the
    # round, never a stake (docs/security.md, "liveness").
    for r in finalized:
        verdict = verify_round(client, lambda cid, holders=(), max_bytes=None: local_or_peers(cid, stores[0], stores, max_bytes), fed.task, r)
        assert verdict.ok, (r, verdict.differences)
    # Whatever the colluders proposed was turned down: no finalized round is theirs.
    turned_down = {(e.args["round"], e.args["attempt"]) for ev in ("ProposalRejected", "ProposalUndecided")
                   for e in client.logs(ev, taskId=fed.task)}  # fmt: skip
    for e in client.logs("ProposalSubmitted", taskId=fed.task):
        if e.args["proposer"] in {n.address for n in colluders}:
            assert (e.args["round"], e.args["attempt"]) in turned_down, e.args
