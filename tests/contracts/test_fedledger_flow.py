"""FedLedger happy paths: registration, tasks, a finalized round, withdrawal, events."""

from __future__ import annotations

from ledger_harness import MIN_STAKE, MODEL_CID, REWARD, SPEC_CID, WAD, Chain
from web3.contract import Contract
from web3.logs import DISCARD


def test_constants_match_the_protocol(ledger: Contract) -> None:
    # Prepare / Execute
    f = ledger.functions
    # Assert
    assert f.WAD().call() == WAD
    assert f.INITIAL_REPUTATION().call() == WAD // 2
    assert f.REPUTATION_ALPHA().call() == 3 * WAD // 10
    assert f.REPUTATION_THRESHOLD().call() == 2 * WAD // 10
    assert f.minStake().call() == MIN_STAKE
    assert f.taskCount().call() == 0


def test_register_stores_peer_record_and_initial_reputation(chain: Chain, ledger: Contract) -> None:
    # Prepare
    node, stranger = chain.accounts[1], chain.accounts[7]
    addrs = ["/ip4/10.0.0.1/tcp/4001", "/ip6/::1/udp/4001/quic-v1"]
    # Execute
    receipt = chain.send(ledger.functions.register("12D3KooWpeer", addrs), node, MIN_STAKE + 5)
    # Assert
    assert ledger.functions.nodeInfo(node).call() == [True, MIN_STAKE + 5, "12D3KooWpeer", addrs]
    assert ledger.functions.reputationOf(node).call() == WAD // 2
    assert ledger.functions.reputationOf(stranger).call() == 0
    assert ledger.functions.nodeInfo(stranger).call() == [False, 0, "", []]
    (event,) = ledger.events.NodeRegistered().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["node"] == node
    assert event["args"]["multiaddrs"] == addrs


def test_create_task_ids_start_at_one(chain: Chain, ledger: Contract, owner: str) -> None:
    # Execute
    r1 = chain.send(ledger.functions.createTask(MODEL_CID, SPEC_CID, 3, 5, 2, 640), owner, REWARD)
    chain.send(ledger.functions.createTask(b"m2", b"s2", 1, 1, 0, 0), owner, 7)
    # Assert
    assert ledger.functions.taskCount().call() == 2
    assert ledger.functions.taskInfo(1).call() == [owner, 3, 5, 2, 640, 1, REWARD, SPEC_CID]
    assert ledger.functions.taskInfo(2).call() == [owner, 1, 1, 0, 0, 1, 7, b"s2"]
    assert ledger.functions.globalModel(1).call() == [MODEL_CID, 0]
    (event,) = ledger.events.TaskCreated().process_receipt(r1, errors=DISCARD)
    assert (event["args"]["taskId"], event["args"]["owner"], event["args"]["rewardPool"]) == (1, owner, REWARD)


def test_full_round_updates_reputations_rewards_and_model(
    chain: Chain, ledger: Contract, nodes: list[str], task: int, owner: str
) -> None:
    # Prepare: three updates in round 1 of a 2-round task
    a, b, c = nodes[:3]
    for i, node in enumerate((a, b, c)):
        chain.send(ledger.functions.submitUpdate(task, 1, f"bafk-update-{i}".encode(), 100 + i), node)
    scores = [WAD, WAD // 2, 0]

    # Execute
    receipt = chain.send(ledger.functions.finalizeRound(task, 1, b"bafk-global-1", scores), owner)

    # Assert: EMA with alpha 0.3 from 0.5
    rep_a = (WAD // 2 * 7 * WAD // 10 + WAD * 3 * WAD // 10) // WAD  # 0.65
    rep_b = (WAD // 2 * 7 * WAD // 10 + WAD // 2 * 3 * WAD // 10) // WAD  # 0.5
    rep_c = (WAD // 2 * 7 * WAD // 10) // WAD  # 0.35
    assert [ledger.functions.reputationOf(n).call() for n in (a, b, c)] == [rep_a, rep_b, rep_c]
    # half the pool this round, split by score * newRep
    share = REWARD // 2
    w_a, w_b = WAD * rep_a // WAD, WAD // 2 * rep_b // WAD
    pay_a, pay_b = share * w_a // (w_a + w_b), share * w_b // (w_a + w_b)
    assert pay_a == 361_111_111_111_111_111 and pay_b == 138_888_888_888_888_888
    assert [ledger.functions.pendingRewards(n).call() for n in (a, b, c)] == [pay_a, pay_b, 0]
    assert ledger.functions.globalModel(task).call() == [b"bafk-global-1", 1]
    info = ledger.functions.taskInfo(task).call()
    assert info[5] == 2  # currentRound
    assert info[6] == REWARD - pay_a - pay_b
    assert ledger.functions.roundUpdates(task, 1).call() == [
        [a, b, c],
        [b"bafk-update-0", b"bafk-update-1", b"bafk-update-2"],
        [100, 101, 102],
    ]
    reps = ledger.events.ReputationUpdated().process_receipt(receipt, errors=DISCARD)
    assert [(e["args"]["node"], e["args"]["oldRep"], e["args"]["newRep"]) for e in reps] == [
        (a, WAD // 2, rep_a),
        (b, WAD // 2, rep_b),
        (c, WAD // 2, rep_c),
    ]
    credits = ledger.events.RewardCredited().process_receipt(receipt, errors=DISCARD)
    assert [(e["args"]["account"], e["args"]["taskId"], e["args"]["amount"]) for e in credits] == [
        (a, task, pay_a),
        (b, task, pay_b),
    ]
    (final,) = ledger.events.RoundFinalized().process_receipt(receipt, errors=DISCARD)
    assert (final["args"]["taskId"], final["args"]["round"], final["args"]["cid"]) == (task, 1, b"bafk-global-1")

    # Execute: withdraw
    before = chain.balance(a)
    w = chain.send(ledger.functions.withdraw(), a)
    # Assert: ETH moved, balance cleared
    assert chain.balance(a) == before + pay_a - chain.fee(w)
    assert ledger.functions.pendingRewards(a).call() == 0
    (event,) = ledger.events.Withdrawn().process_receipt(w, errors=DISCARD)
    assert (event["args"]["account"], event["args"]["amount"]) == (a, pay_a)


def test_submission_order_is_canonical_and_logged(
    chain: Chain, ledger: Contract, nodes: list[str], task: int
) -> None:
    # Execute: submit in reverse account order
    receipts = [
        chain.send(ledger.functions.submitUpdate(task, 1, f"cid-{n[-4:]}".encode(), 10), n) for n in nodes[2::-1]
    ]
    # Assert
    senders, _, _ = ledger.functions.roundUpdates(task, 1).call()
    assert senders == list(nodes[2::-1])
    for index, (node, receipt) in enumerate(zip(nodes[2::-1], receipts)):
        (event,) = ledger.events.UpdateSubmitted().process_receipt(receipt, errors=DISCARD)
        assert (event["args"]["node"], event["args"]["round"], event["args"]["index"]) == (node, 1, index)
    assert ledger.functions.roundUpdates(task, 2).call() == [[], [], []]


def test_last_round_returns_leftover_to_owner(
    chain: Chain, ledger: Contract, nodes: list[str], task: int, owner: str
) -> None:
    # Prepare: round 1 nobody submits (its share rolls over), round 2 one weak node
    chain.send(ledger.functions.finalizeRound(task, 1, b"g1", []), owner)
    assert ledger.functions.taskInfo(task).call()[6] == REWARD
    chain.send(ledger.functions.submitUpdate(task, 2, b"u", 1), nodes[0])
    # Execute: score 0.1 keeps the node above the threshold (0.38) with a small weight
    chain.send(ledger.functions.finalizeRound(task, 2, b"g2", [WAD // 10]), owner)
    # Assert: the lone earner takes the whole last share; the owner gets only floor dust (none here)
    paid = ledger.functions.pendingRewards(nodes[0]).call()
    assert paid == REWARD
    assert ledger.functions.taskInfo(task).call()[5:7] == [3, 0]
    assert ledger.functions.globalModel(task).call() == [b"g2", 2]


def test_below_threshold_earns_nothing_and_leftover_goes_to_owner(
    chain: Chain, ledger: Contract, nodes: list[str], owner: str
) -> None:
    # Prepare: a one-round task; a node with score 0 falls to 0.35 (still above 0.2) but weighs 0
    chain.send(ledger.functions.createTask(MODEL_CID, SPEC_CID, 1, 2, 0, 0), owner, REWARD)
    chain.send(ledger.functions.submitUpdate(1, 1, b"u0", 1), nodes[0])
    # Execute
    receipt = chain.send(ledger.functions.finalizeRound(1, 1, b"g", [0]), owner)
    # Assert: nobody weighs anything, so the whole pool returns to the owner
    assert ledger.functions.pendingRewards(nodes[0]).call() == 0
    assert ledger.functions.pendingRewards(owner).call() == REWARD
    (credit,) = ledger.events.RewardCredited().process_receipt(receipt, errors=DISCARD)
    assert (credit["args"]["account"], credit["args"]["amount"]) == (owner, REWARD)
