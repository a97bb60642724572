"""FedLedgerClient owns the chain: typed reverts, and the reads callers used to take from web3."""

from __future__ import annotations

import threading
import time

import pytest
from eth_utils import keccak
from web3 import Web3

from node.chain import ChainLog, ContractRevert, MemberInfo, Phase, deploy_fedledger, dev_account
from node.chain.anvil import Anvil
from node.chain.reverts import decode_revert
from node.chain.sends import EMBEDDED_GAS_LIMIT, send_ether
from node.chain.types import make_commitment
from node.chain.embedded_calls import EmbeddedCaller
from node.chain.providers import embedded_web3
from node.errors import ChainError
from node.taskspec import TaskParams

STAKE = 10**18
HALF_WAD = 5 * 10**17  # a newly registered node's reputation


def salt(i: int) -> bytes:
    return bytes([i + 1]) * 32


@pytest.fixture(scope="module")
def ledger():
    """Two registered nodes on task 1's committee, both committed (round 1 is in its reveal
    phase); a third node registered late; task 2 created and still undrawn. `round_txs` are the
    receipts of task 1's round transactions so far, `blocks` the range they lie in."""
    w3 = embedded_web3(num_accounts=5)
    owner = dev_account(0)
    chain, _ = deploy_fedledger(w3, owner, STAKE)
    nodes = [chain.as_account(dev_account(i)) for i in (1, 2)]
    for i, node in enumerate(nodes):
        node.register(f"peer{i}", [f"/ip4/127.0.0.1/tcp/{4000 + i}"], STAKE)
    task, _ = chain.create_task("bafk-initial", "bafk-spec", TaskParams(rounds=2, committee_size=2, rule="fedavg"), 5 * STAKE)
    first = chain.head_block() + 1
    round_txs = []
    members, receipt = chain.draw_committee(task)
    assert sorted(members) == sorted(n.account.address for n in nodes)
    round_txs.append(receipt)
    before_late = chain.head_block()
    late = chain.as_account(dev_account(3))
    late.register("peer-late", [], STAKE)  # not a round transaction
    send_ether(w3, owner, dev_account(4).address, 1)  # not to the contract
    for i, node in enumerate(nodes):
        round_txs.append(node.commit(task, 1, make_commitment(f"bafk-{i}", 10 + i, salt(i), node.account.address)))
    # A round transaction that is mined and fails (sent with its own gas limit, so nothing checks it
    # first): its gas is spent all the same.
    call = late.contract.functions.commit(task, 1, b"\x07" * 32)
    tx = call.build_transaction({"from": late.account.address, "gas": 300_000,
                                 "nonce": w3.eth.get_transaction_count(late.account.address)})  # fmt: skip
    sent = w3.eth.send_raw_transaction(late.account.sign_transaction(tx).raw_transaction)
    failed = dict(w3.eth.wait_for_transaction_receipt(sent))
    assert failed["status"] == 0
    round_txs.append(failed)
    last = chain.head_block()
    params2 = TaskParams(rounds=1, committee_size=2, rule="fedavg")
    task2, _ = chain.create_task("bafk-initial", "bafk-spec", params2, STAKE)
    return {
        "w3": w3, "chain": chain, "nodes": nodes, "late": late, "task": task, "task2": task2,
        "round_txs": round_txs, "blocks": (first, last), "before_late": before_late, "failed": failed, "call": call,
    }  # fmt: skip


def test_a_revert_is_typed_with_the_custom_error_and_its_arguments(ledger):
    node, task2 = ledger["nodes"][0], ledger["task2"]
    w3 = ledger["w3"]
    nonce = w3.eth.get_transaction_count(node.account.address)
    with pytest.raises(ContractRevert) as info:
        node.commit(task2, 1, b"\x01" * 32)  # task 2's committee is not drawn yet
    exc = info.value
    assert isinstance(exc, ChainError)
    assert (exc.function, exc.error) == ("commit", "FedLedgerWrongPhase")
    assert exc.arguments == (task2, 1, Phase.COMMIT, Phase.DRAW)
    assert str(exc) == f"commit reverted: FedLedgerWrongPhase({task2}, 1, 1, 0)"
    assert w3.eth.get_transaction_count(node.account.address) == nonce  # caught before sending


def test_address_arguments_come_back_checksummed(ledger):
    node = ledger["nodes"][1]
    with pytest.raises(ContractRevert) as info:
        node.withdraw()
    address = node.account.address
    assert info.value.error == "FedLedgerNothingToWithdraw"
    assert info.value.arguments == (address,)
    # the message is as it always was: the address as the ABI decoder gives it
    assert str(info.value) == f"withdraw reverted: FedLedgerNothingToWithdraw({address.lower()})"


def test_revert_data_that_is_no_contract_error_is_not_named(ledger):
    abi = ledger["chain"].abi
    # Error(string) "no": a plain require message, which FedLedger never uses
    require = "0x08c379a0" + (32).to_bytes(32, "big").hex() + (2).to_bytes(32, "big").hex() + b"no".ljust(32, b"\0").hex()
    assert decode_revert(abi, require) is None
    assert decode_revert(abi, "0x") is None and decode_revert(abi, None) is None
    address = dev_account(1).address
    named = decode_revert(abi, keccak(b"FedLedgerNothingToWithdraw(address)")[:4] + bytes(12) + bytes.fromhex(address[2:]))
    assert named is not None and (named.name, named.arguments) == ("FedLedgerNothingToWithdraw", (address,))


def test_a_mined_failure_is_replayed_for_its_error(ledger):
    """The failed commit in the fixture was mined in the reveal phase; re-running it on its
    block's parent state recovers the error its receipt does not carry."""
    w3, chain, late, failed = ledger["w3"], ledger["chain"], ledger["late"], ledger["failed"]
    caller = EmbeddedCaller(w3, EMBEDDED_GAS_LIMIT)
    with pytest.raises(Exception) as info:
        caller.replay(ledger["call"], late.account.address, 0, int(failed["blockNumber"]))
    decoded = decode_revert(chain.abi, info.value.data)
    assert decoded is not None and decoded.name == "FedLedgerWrongPhase"
    assert decoded.arguments == (ledger["task"], 1, Phase.COMMIT, Phase.REVEAL)


def test_member_info_after_a_commit(ledger):
    node, task, chain = ledger["nodes"][0], ledger["task"], ledger["chain"]
    mine = node.member_info(task, 1)  # defaults to the client's own account
    assert mine == MemberInfo(
        member=True,
        commitment=make_commitment("bafk-0", 10, salt(0), node.account.address),
        revealed=False,
        vote=0,
        attempt=0,
    )
    assert chain.member_info(task, 1, node.account.address) == mine
    outsider = chain.member_info(task, 1, ledger["late"].account.address)
    assert not outsider.member and outsider.commitment == bytes(32)
    with pytest.raises(ChainError):
        chain.as_account(None).member_info(task, 1)  # a read-only client has no address of its own


def test_logs_are_filtered_by_indexed_arguments_and_ordered(ledger):
    chain, nodes, task = ledger["chain"], ledger["nodes"], ledger["task"]
    committed = chain.logs("UpdateCommitted", taskId=task, round=1)
    assert [log.args["node"] for log in committed] == [n.account.address for n in nodes]  # commit order
    assert all(isinstance(log, ChainLog) and log.event == "UpdateCommitted" for log in committed)
    keys = [(log.block, log.log_index) for log in committed]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert committed[1].tx_hash == "0x" + bytes(ledger["round_txs"][2]["transactionHash"]).hex()
    assert committed[1].block == ledger["round_txs"][2]["blockNumber"]

    only = chain.logs("UpdateCommitted", taskId=task, round=1, node=nodes[1].account.address)
    assert [log.args["commitment"] for log in only] == [
        make_commitment("bafk-1", 11, salt(1), nodes[1].account.address)
    ]
    assert chain.logs("UpdateCommitted", taskId=task, round=2) == []
    assert chain.logs("UpdateCommitted", taskId=ledger["task2"]) == []

    registered = chain.logs("NodeRegistered")
    assert [log.args["peerId"] for log in registered] == ["peer0", "peer1", "peer-late"]
    first, _ = ledger["blocks"]
    assert [log.args["peerId"] for log in chain.logs("NodeRegistered", from_block=first)] == ["peer-late"]
    assert [log.args["peerId"] for log in chain.logs("NodeRegistered", to_block=first - 1)] == ["peer0", "peer1"]
    with pytest.raises(ValueError):
        chain.logs("NoSuchEvent")


def test_logs_of_several_events_are_one_read_in_chain_order(ledger):
    chain = ledger["chain"]
    first, last = ledger["blocks"]

    both = chain.logs_of(["NodeRegistered", "UpdateCommitted"], from_block=0)

    expected = chain.logs("NodeRegistered") + chain.logs("UpdateCommitted")
    assert both == sorted(expected, key=lambda log: (log.block, log.log_index))
    assert [log.args["peerId"] for log in chain.logs_of(["NodeRegistered"], first, last)] == ["peer-late"]
    with pytest.raises(ValueError):
        chain.logs_of(["NoSuchEvent"], 0)


def test_reputation_at_an_older_block(ledger):
    chain, late, before = ledger["chain"], ledger["late"], ledger["before_late"]
    address = late.account.address
    assert chain.reputation_of(address, before) == 0
    assert chain.reputation_of(address) == HALF_WAD
    assert chain.reputation_of(address, chain.head_block()) == HALF_WAD


def test_protocol_gas_is_the_round_transactions_gas(ledger):
    chain = ledger["chain"]
    first, last = ledger["blocks"]
    expected = sum(int(r["gasUsed"]) for r in ledger["round_txs"])
    assert len(ledger["round_txs"]) == 4 and expected > 0
    assert chain.protocol_gas(first, last) == expected  # the late registration and the transfer are left out
    draw = ledger["round_txs"][0]
    assert chain.protocol_gas(first, int(draw["blockNumber"])) == int(draw["gasUsed"])
    assert chain.protocol_gas(last + 1, chain.head_block()) == 0  # createTask is not a round function


def test_head_and_chain_id(ledger):
    w3, chain = ledger["w3"], ledger["chain"]
    latest = w3.eth.get_block("latest")
    assert chain.head_block() == latest["number"]
    assert chain.head_timestamp() == latest["timestamp"]
    assert chain.chain_id() == w3.eth.chain_id


def test_member_info_after_a_reveal(ledger):
    node, task = ledger["nodes"][0], ledger["task"]
    node.reveal(task, 1, "bafk-0", 10, salt(0))
    info = node.member_info(task, 1)
    assert info.revealed and info.member
    assert info.commitment == keccak(b"bafk-0")  # the commitment is replaced by the CID's hash


@pytest.mark.slow
def test_anvil_reverts_are_typed_at_estimation_and_once_mined():
    with Anvil(accounts=3) as anvil:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        chain, _ = deploy_fedledger(w3, dev_account(0), STAKE)
        node = chain.as_account(dev_account(1))
        address = node.account.address

        with pytest.raises(ContractRevert) as info:
            node.withdraw()
        assert (info.value.function, info.value.error, info.value.arguments) == (
            "withdraw", "FedLedgerNothingToWithdraw", (address,)
        )

        # A transaction that passes its gas estimate and fails once mined: with automine off, a
        # second registration is estimated against the latest block, where the first (pending)
        # one is not yet; both land in one block and the second reverts.
        assert w3.provider.make_request("evm_setAutomine", [False]).get("error") is None
        nonce = w3.eth.get_transaction_count(address)
        tx = chain.contract.functions.register("peer-a", []).build_transaction(
            {"from": address, "value": STAKE, "nonce": nonce, "gas": 500_000}
        )
        first = w3.eth.send_raw_transaction(node.account.sign_transaction(tx).raw_transaction)
        raised: list[BaseException] = []

        def second() -> None:
            try:
                node.register("peer-b", [], STAKE)
            except BaseException as exc:  # handed to the test thread
                raised.append(exc)

        thread = threading.Thread(target=second)
        thread.start()
        deadline = time.monotonic() + 30
        while w3.eth.get_transaction_count(address, "pending") < nonce + 2 and thread.is_alive():
            assert time.monotonic() < deadline, "the second registration was never sent"
            time.sleep(0.05)
        w3.provider.make_request("evm_mine", [])
        thread.join(60)

        assert w3.eth.get_transaction_count(address) == nonce + 2  # both were mined...
        assert w3.eth.get_transaction_receipt(first)["status"] == 1
        assert len(raised) == 1 and isinstance(raised[0], ContractRevert), raised  # ...the second failed
        assert (raised[0].function, raised[0].error, raised[0].arguments) == (
            "register", "FedLedgerAlreadyRegistered", (address,)
        )
        assert str(raised[0]) == f"register reverted: FedLedgerAlreadyRegistered({address.lower()})"
