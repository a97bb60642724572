"""H2, H3, M7 (#14): what a hostile task owner puts on-chain cannot stop or drain a daemon.

Real daemons on a real anvil. A bad task (a CID that is not UTF-8, a spec that does not parse, a
base model that is not a model, a spec with batch_size 0 or out of the node's limits) is logged
once and skipped, and the daemon finishes its good task; a task that voids on every draw costs
the daemon no gas.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from node.chain.anvil import Anvil
from node.chain import dev_account
from node.errors import ConfigError
from node.storage import EmbeddedStorage
from node.taskspec import TaskParams, TaskSpec
from node.units import ETHER, WAD
from tests.daemon.federation import build_federation

slow = pytest.mark.slow


@pytest.fixture
def anvil():
    with Anvil(accounts=10) as chain:
        yield chain


def join(node, tasks: list[int], **limits: int) -> None:
    """Make the node work on exactly `tasks` (its operator's explicit choice), with `limits`
    instead of the template's defaults in its [tasks] policy."""
    text = node.config.read_text()
    for key, value in {"join": tasks, **limits}.items():
        text, n = re.subn(rf"(?m)^{key} = [^#\n]*", f"{key} = {value} ", text)
        assert n == 1, (key, text)
    node.config.write_text(text)


def create_raw_task(fed, model_cid: bytes, spec_cid: bytes, params: TaskParams) -> int:
    """createTask with CID bytes as given: the contract takes any bytes."""
    owner = fed.client.as_account(dev_account(0))
    args = list(params.contract_args("x", "x"))
    args[0], args[1] = model_cid, spec_cid
    receipt = owner._transact(owner.contract.functions.createTask(tuple(args)), value=ETHER)
    return int(owner.events(receipt, "TaskCreated")[0]["args"]["taskId"])


@slow
def test_bad_tasks_are_skipped_with_one_line_each_and_the_good_task_finishes(anvil, tmp_path):
    fed = build_federation(tmp_path, anvil.url, n_nodes=2, rounds=1)
    store = EmbeddedStorage(fed.nodes[0].directory / "ipfs")  # node 0 serves what the owner published
    model = fed.initial_model_cid.encode()
    good_spec = fed.client.task_info(fed.task).spec_cid.encode()
    params = TaskParams(rounds=1, committee_size=2, min_stake_wei=ETHER)
    bad = {
        "spec CID not UTF-8": create_raw_task(fed, model, b"\xff", params),
        "model CID not UTF-8": create_raw_task(fed, b"\xfe\xff", good_spec, params),
        "spec not JSON": create_raw_task(fed, model, store.put(b"{not json").encode(), params),
        "unknown rule": create_raw_task(fed, model, store.put(b'{"rule":"nope"}').encode(), params),
        "base model not a model": create_raw_task(fed, store.put(b"not a model").encode(), good_spec, params),
        "batch_size 0": create_raw_task(fed, model, store.put(TaskSpec(batch_size=0).to_bytes()).encode(), params),
        "epochs 1e9": create_raw_task(fed, model, store.put(TaskSpec(epochs=10**9).to_bytes()).encode(), params),
        "1 TiB updates": create_raw_task(
            fed, model, store.put(TaskSpec(max_update_bytes=2**40).to_bytes()).encode(), params
        ),
        "unknown model": create_raw_task(fed, model, store.put(TaskSpec(model="no-such-net").to_bytes()).encode(), params),
        # Valid, but over this node's limits ([tasks] in node.toml, defaults).
        "epochs over max_epochs": create_raw_task(fed, model, store.put(TaskSpec(epochs=101).to_bytes()).encode(), params),
        "updates over max_update_bytes": create_raw_task(
            fed, model, store.put(TaskSpec(max_update_bytes=2**30).to_bytes()).encode(), params
        ),
        "rounds over max_rounds": create_raw_task(fed, model, good_spec, TaskParams(rounds=1001, committee_size=2)),
        "stake over max_stake_at_risk": create_raw_task(
            fed, model, good_spec, TaskParams(rounds=1, committee_size=2, min_stake_wei=ETHER + 1)
        ),
    }
    for n in fed.nodes:
        join(n, [fed.task, *bad.values()])
    try:
        fed.start()
        client = fed.client
        fed.wait(lambda: client.task_info(fed.task).finished, timeout=240, what="the good task to finish")
        for n in fed.nodes:  # --exit-when-done: every joined task is finished or skipped
            assert n.proc.wait(timeout=60) == 0, n.text()[-3000:]
    finally:
        fed.stop_all()
    for n in fed.nodes:
        text = n.text()
        for what, task in bad.items():
            lines = [line for line in text.splitlines() if re.search(rf"task {task}\b.*(skipp|refus)", line)]
            assert len(lines) == 1, (what, lines, text[-3000:])
        assert "Traceback" not in text


@slow
def test_a_task_that_voids_on_every_draw_costs_a_joined_daemon_no_gas(anvil, tmp_path):
    fed = build_federation(tmp_path, anvil.url, n_nodes=1, rounds=1)
    node = fed.nodes[0]
    owner = fed.client.as_account(dev_account(0))
    # Nobody has reputation 1.0, so nobody is eligible: every draw voids a round, 2^32 - 2 of them (on
    # the contract before e8e37fe; since, it reverts, which a daemon must not pay for either).
    void, _ = owner.create_task(fed.initial_model_cid, fed.client.task_info(fed.task).spec_cid, TaskParams(
        rounds=2**32 - 2, committee_size=2, min_stake_wei=ETHER, reputation_threshold_wad=WAD), ETHER)  # fmt: skip
    join(node, [void], max_rounds=2**32)
    w3 = fed.client.w3
    try:
        node.start()
        fed.wait(lambda: "up: peer" in node.text(), timeout=60, what="the daemon to start")
        before = w3.eth.get_balance(node.address)
        start = w3.eth.block_number
        time.sleep(15)  # 75 polls
        assert node.running(), node.tail()
        spent = before - w3.eth.get_balance(node.address)
        voided = fed.client.logs("RoundVoided", from_block=start, taskId=void)
    finally:
        fed.stop_all()
    assert (spent, len(voided)) == (0, 0)
    text = node.text()
    assert f"task {void} joined" in text  # it was the draw check, not the policy, that kept the gas
    # Seen, and backed off: checked again after 0.4, 0.8, 1.6, 3.2, 6.4 s..., not at each of the 75 polls.
    checks = re.findall(rf"task {void}: a draw now would (?:seat nobody|revert)", text)
    assert 1 <= len(checks) <= 8, text[-3000:]
    assert "protocol loop:" not in text, text[-3000:]
    assert fed.client.task_info(void).current_round == 1


# -- M7: the spec parser reads a stranger's JSON ------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"epochs": 10**9}, {"epochs": 0}, {"epochs": True}, {"epochs": 2.0}, {"epochs": "5"},
        {"batch_size": 0}, {"batch_size": -1}, {"batch_size": 2**40},
        {"max_update_bytes": 2**40}, {"max_update_bytes": 0},
        {"max_samples": 0}, {"max_samples": 2**96},
        {"lr": 0}, {"lr": -1}, {"lr": 1e9}, {"lr": "0.1"}, {"lr": None},
        {"model": ""}, {"model": 7}, {"model": "x" * 1000},
        {"rule": ["fedavg"]}, {"trim": 0.9, "rule": "trimmed-mean"},
    ],
)  # fmt: skip
def test_a_spec_out_of_range_or_of_the_wrong_type_is_refused(fields):
    data = json.dumps({**json.loads(TaskSpec().to_bytes()), **fields}).encode()
    with pytest.raises(ConfigError):
        TaskSpec.from_bytes(data)


@pytest.mark.parametrize(
    "data",
    [b"NaN", b'{"lr": NaN}', b'{"lr": Infinity}', b"[]", b"null", b"[" * 50_000, b"{" + b" " * 70_000 + b"}", b"\xff"],
)
def test_a_spec_that_is_not_a_json_object_of_finite_numbers_is_refused(data):
    with pytest.raises(ConfigError, match="task spec"):
        TaskSpec.from_bytes(data)


def test_a_valid_spec_still_parses_to_the_same_bytes():
    spec = TaskSpec(epochs=10_000, batch_size=2**20, max_update_bytes=2**32, lr=1000.0, rule="median", clip=2.5)
    assert TaskSpec.from_bytes(spec.to_bytes()) == spec
