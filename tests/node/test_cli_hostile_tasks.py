"""A task owner writes what it likes into a task's CIDs: the task views show such a task
(with replacement characters) and keep listing the others; commands that must use the CID
refuse it in one line."""

from __future__ import annotations

import json

import pytest
from web3 import Web3

from node.chain import Deployment, deploy_fedledger, dev_account
from node.chain.anvil import Anvil
from node.taskspec import TaskParams
from tests.conftest import run_cli
from tests.node.test_cli_errors import assert_one_line
from tests.node.test_cli_tasks import STATUS_KEYS

pytestmark = pytest.mark.slow

GOOD_CID = "bafkreiajxo57ywm6xl2zbiumsqlklabqzfjfet6g4avro2nl26qt2s4hzy"


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Task 1 is ordinary; task 2's model and spec CIDs are bytes that are not UTF-8."""
    tmp = tmp_path_factory.mktemp("hostile")
    with Anvil(accounts=2) as anvil:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        owner = dev_account(0)
        client, receipt = deploy_fedledger(w3, owner, 10**18)
        Deployment(31337, anvil.url, {"FedLedger": client.address}, int(receipt["blockNumber"])).save(tmp / "dep.json")
        params = TaskParams(rounds=2, committee_size=3)
        client.create_task(GOOD_CID, GOOD_CID, params, 10**18)
        hostile = list(params.contract_args(GOOD_CID, GOOD_CID))
        hostile[0], hostile[1] = b"\xff\xfe<script>", b"\xc3("
        client._transact(client.contract.functions.createTask(tuple(hostile)), value=10**18)
        yield tmp / "dep.json", tmp


def test_task_list_shows_a_task_whose_cids_are_not_text(chain):
    dep, _ = chain

    proc = run_cli("task", "list", "--deployment", str(dep), "--json")

    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["task"] for r in rows] == [1, 2]
    assert rows[0]["global_model_cid"] == GOOD_CID
    assert "\ufffd" in rows[1]["global_model_cid"] and "<script>" in rows[1]["global_model_cid"]


def test_status_and_task_show_keep_their_schema(chain):
    dep, tmp = chain

    status = run_cli("status", "--deployment", str(dep), "--task", "2", "--json")
    shown = run_cli("task", "show", "--deployment", str(dep), "--task", "2", "--repo", str(tmp / "repo"), "--json")

    assert status.returncode == 0 and shown.returncode == 0, (status.stderr, shown.stderr)
    assert list(json.loads(status.stdout)) == STATUS_KEYS
    details = json.loads(shown.stdout)
    assert details["spec"] is None and details["spec_error"]
    assert details["global_models"][0]["cid"].startswith("\ufffd")


def test_model_get_refuses_the_cid_in_one_line(chain):
    dep, tmp = chain

    err = assert_one_line(run_cli("model", "get", "--deployment", str(dep), "--task", "2", "--out", str(tmp / "m"),
                                  "--repo", str(tmp / "repo")))  # fmt: skip

    assert err.startswith("fedledger: error: ") and not (tmp / "m").exists()
