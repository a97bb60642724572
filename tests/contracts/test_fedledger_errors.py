"""Every FedLedger custom error: provoke it and check the revert carries its selector and arguments."""

from __future__ import annotations

from ledger_harness import MIN_STAKE, MODEL_CID, REWARD, SPEC_CID, WAD, Chain
from web3.contract import Contract

TESTED = {
    "FedLedgerInsufficientStake",
    "FedLedgerAlreadyRegistered",
    "FedLedgerNotRegistered",
    "FedLedgerUnknownTask",
    "FedLedgerWrongRound",
    "FedLedgerDuplicateSubmission",
    "FedLedgerRoundFull",
    "FedLedgerNotTaskOwner",
    "FedLedgerTaskFinished",
    "FedLedgerScoresLength",
    "FedLedgerScoreOutOfRange",
    "FedLedgerNothingToWithdraw",
    "FedLedgerTransferFailed",  # in test_fedledger_payments.py (needs a hostile recipient)
    "FedLedgerInvalidTask",
    "FedLedgerEmptyCid",
    "FedLedgerZeroSamples",
}


def test_every_custom_error_in_the_abi_has_a_test(ledger: Contract) -> None:
    # Prepare / Execute
    declared = {e["name"] for e in ledger.abi if e["type"] == "error"}
    # Assert: a new error without a test (or a stale name here) fails
    assert declared == TESTED


def test_insufficient_stake(chain: Chain, ledger: Contract) -> None:
    node = chain.accounts[1]
    with chain.reverts(ledger, "FedLedgerInsufficientStake", MIN_STAKE - 1, MIN_STAKE):
        ledger.functions.register("p", []).transact({"from": node, "value": MIN_STAKE - 1})
    assert ledger.functions.reputationOf(node).call() == 0


def test_already_registered(chain: Chain, ledger: Contract, nodes: list[str]) -> None:
    with chain.reverts(ledger, "FedLedgerAlreadyRegistered", nodes[0]):
        ledger.functions.register("again", []).transact({"from": nodes[0], "value": MIN_STAKE})


def test_not_registered(chain: Chain, ledger: Contract, task: int) -> None:
    stranger = chain.accounts[8]
    with chain.reverts(ledger, "FedLedgerNotRegistered", stranger):
        ledger.functions.submitUpdate(task, 1, b"cid", 1).transact({"from": stranger})


def test_unknown_task(chain: Chain, ledger: Contract, nodes: list[str], task: int) -> None:
    with chain.reverts(ledger, "FedLedgerUnknownTask", 2):
        ledger.functions.submitUpdate(2, 1, b"cid", 1).transact({"from": nodes[0]})
    with chain.reverts(ledger, "FedLedgerUnknownTask", 0):
        ledger.functions.taskInfo(0).call()
    with chain.reverts(ledger, "FedLedgerUnknownTask", 9):
        ledger.functions.globalModel(9).call()


def test_wrong_round(chain: Chain, ledger: Contract, nodes: list[str], task: int, owner: str) -> None:
    with chain.reverts(ledger, "FedLedgerWrongRound", task, 1, 2):
        ledger.functions.submitUpdate(task, 2, b"cid", 1).transact({"from": nodes[0]})
    with chain.reverts(ledger, "FedLedgerWrongRound", task, 1, 0):
        ledger.functions.finalizeRound(task, 0, b"g", []).transact({"from": owner})


def test_duplicate_submission(chain: Chain, ledger: Contract, nodes: list[str], task: int) -> None:
    chain.send(ledger.functions.submitUpdate(task, 1, b"cid", 1), nodes[0])
    with chain.reverts(ledger, "FedLedgerDuplicateSubmission", nodes[0], 1):
        ledger.functions.submitUpdate(task, 1, b"other", 2).transact({"from": nodes[0]})


def test_round_full(chain: Chain, ledger: Contract, nodes: list[str], task: int) -> None:
    for node in nodes[:3]:  # committeeSize is 3
        chain.send(ledger.functions.submitUpdate(task, 1, b"cid", 1), node)
    with chain.reverts(ledger, "FedLedgerRoundFull", task, 1):
        ledger.functions.submitUpdate(task, 1, b"cid", 1).transact({"from": nodes[3]})


def test_not_task_owner(chain: Chain, ledger: Contract, nodes: list[str], task: int, owner: str) -> None:
    with chain.reverts(ledger, "FedLedgerNotTaskOwner", nodes[0], owner):
        ledger.functions.finalizeRound(task, 1, b"g", []).transact({"from": nodes[0]})


def test_task_finished(chain: Chain, ledger: Contract, nodes: list[str], task: int, owner: str) -> None:
    chain.send(ledger.functions.finalizeRound(task, 1, b"g1", []), owner)
    chain.send(ledger.functions.finalizeRound(task, 2, b"g2", []), owner)
    with chain.reverts(ledger, "FedLedgerTaskFinished", task):
        ledger.functions.submitUpdate(task, 3, b"cid", 1).transact({"from": nodes[0]})
    with chain.reverts(ledger, "FedLedgerTaskFinished", task):
        ledger.functions.finalizeRound(task, 3, b"g3", []).transact({"from": owner})


def test_scores_length(chain: Chain, ledger: Contract, nodes: list[str], task: int, owner: str) -> None:
    chain.send(ledger.functions.submitUpdate(task, 1, b"cid", 1), nodes[0])
    chain.send(ledger.functions.submitUpdate(task, 1, b"cid", 1), nodes[1])
    with chain.reverts(ledger, "FedLedgerScoresLength", 2, 1):
        ledger.functions.finalizeRound(task, 1, b"g", [WAD]).transact({"from": owner})


def test_score_out_of_range(chain: Chain, ledger: Contract, nodes: list[str], task: int, owner: str) -> None:
    chain.send(ledger.functions.submitUpdate(task, 1, b"cid", 1), nodes[0])
    chain.send(ledger.functions.submitUpdate(task, 1, b"cid", 1), nodes[1])
    with chain.reverts(ledger, "FedLedgerScoreOutOfRange", 1, WAD + 1):
        ledger.functions.finalizeRound(task, 1, b"g", [WAD, WAD + 1]).transact({"from": owner})
    # the revert undid the first node's reputation update too
    assert ledger.functions.reputationOf(nodes[0]).call() == WAD // 2


def test_nothing_to_withdraw(chain: Chain, ledger: Contract, nodes: list[str]) -> None:
    with chain.reverts(ledger, "FedLedgerNothingToWithdraw", nodes[0]):
        ledger.functions.withdraw().transact({"from": nodes[0]})


def test_invalid_task(chain: Chain, ledger: Contract, owner: str) -> None:
    create = ledger.functions.createTask
    with chain.reverts(ledger, "FedLedgerInvalidTask", 0, 1, 1):
        create(MODEL_CID, SPEC_CID, 1, 1, 0, 0).transact({"from": owner, "value": 0})
    with chain.reverts(ledger, "FedLedgerInvalidTask", REWARD, 0, 1):
        create(MODEL_CID, SPEC_CID, 0, 1, 0, 0).transact({"from": owner, "value": REWARD})
    with chain.reverts(ledger, "FedLedgerInvalidTask", REWARD, 2**32 - 1, 1):
        create(MODEL_CID, SPEC_CID, 2**32 - 1, 1, 0, 0).transact({"from": owner, "value": REWARD})
    with chain.reverts(ledger, "FedLedgerInvalidTask", REWARD, 1, 0):
        create(MODEL_CID, SPEC_CID, 1, 0, 0, 0).transact({"from": owner, "value": REWARD})
    assert ledger.functions.taskCount().call() == 0


def test_empty_cid(chain: Chain, ledger: Contract, nodes: list[str], task: int, owner: str) -> None:
    with chain.reverts(ledger, "FedLedgerEmptyCid"):
        ledger.functions.createTask(b"", SPEC_CID, 1, 1, 0, 0).transact({"from": owner, "value": 1})
    with chain.reverts(ledger, "FedLedgerEmptyCid"):
        ledger.functions.submitUpdate(task, 1, b"", 1).transact({"from": nodes[0]})
    with chain.reverts(ledger, "FedLedgerEmptyCid"):
        ledger.functions.finalizeRound(task, 1, b"", []).transact({"from": owner})


def test_zero_samples(chain: Chain, ledger: Contract, nodes: list[str], task: int) -> None:
    with chain.reverts(ledger, "FedLedgerZeroSamples"):
        ledger.functions.submitUpdate(task, 1, b"cid", 0).transact({"from": nodes[0]})
