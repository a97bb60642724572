"""FedLedger gas: a round's cost depends on its submissions, never on how many nodes are registered."""

from __future__ import annotations

from ledger_harness import MIN_STAKE, MODEL_CID, REWARD, SPEC_CID, WAD, Chain

FINALIZE_4_BUDGET = 250_000  # measured ~203k with cancun, optimizer 200; leaves headroom for the committee cut


def _finalize_gas(extra_nodes: int) -> int:
    """Gas of finalizing a round with 4 submissions after registering `extra_nodes` bystanders."""
    chain = Chain()
    ledger = chain.deploy("FedLedger", MIN_STAKE)
    owner, trainers = chain.accounts[0], chain.accounts[1:5]
    bystanders = [chain.w3.eth.account.create() for _ in range(extra_nodes)]
    for i, node in enumerate(trainers):
        chain.send(ledger.functions.register(f"peer{i}", [f"/ip4/127.0.0.1/tcp/{4000 + i}"]), node, MIN_STAKE)
    for i, acct in enumerate(bystanders):
        chain.w3.eth.send_transaction({"from": owner, "to": acct.address, "value": 10**18})
        tx = ledger.functions.register(f"idle{i}", []).build_transaction(
            {"from": acct.address, "value": MIN_STAKE, "nonce": 0, "gas": 300_000}
        )
        chain.w3.eth.send_raw_transaction(acct.sign_transaction(tx).raw_transaction)
    assert all(ledger.functions.nodeInfo(a.address).call()[0] for a in bystanders)
    chain.send(ledger.functions.createTask(MODEL_CID, SPEC_CID, 2, 4, 0, 0), owner, REWARD)
    for i, node in enumerate(trainers):
        chain.send(ledger.functions.submitUpdate(1, 1, f"bafk-update-{i}".encode(), 100), node)
    scores = [WAD, 9 * WAD // 10, WAD // 2, WAD // 10]
    receipt = chain.send(ledger.functions.finalizeRound(1, 1, b"bafk-global-1", scores), owner)
    assert ledger.functions.reputationOf(trainers[0]).call() > WAD // 2
    return receipt["gasUsed"]


def test_finalize_gas_does_not_grow_with_registered_nodes() -> None:
    # Execute
    few, many = _finalize_gas(0), _finalize_gas(12)
    # Assert
    print(f"finalizeRound gas, 4 submissions: {few}")
    assert few == many
    assert few < FINALIZE_4_BUDGET
