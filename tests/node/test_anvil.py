"""The CLI against a real anvil testnet that the tests start on loopback."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from web3 import Web3

from node.chain import FedLedgerClient, dev_account
from node.chain.anvil import REPO_ROOT, Anvil, free_port
from node.keys import write_keystore
from tests.conftest import FEDLEDGER, default_sigint

pytestmark = pytest.mark.slow


def cast_call(rpc: str, to: str, signature: str, *args: str) -> list[str]:
    """`cast call` from the pinned foundry npm package; one decoded value per line (no annotations)."""
    proc = subprocess.run([str(REPO_ROOT / "node_modules" / ".bin" / "cast"), "call", to, signature, *args, "--rpc-url", rpc],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return [line.split(" [")[0] for line in proc.stdout.splitlines() if line]


@pytest.fixture(scope="module")
def anvil():
    with Anvil(accounts=10) as chain:
        yield chain


@pytest.fixture
def keystore(tmp_path):
    path, password = tmp_path / "owner.json", tmp_path / "password"
    password.write_text("correct horse\n")
    write_keystore(path, dev_account(0), "correct horse")
    return path, password


def test_deploy_with_a_keystore_then_read_reputation(cli, anvil, keystore, tmp_path):
    ks, pw = keystore
    dep = tmp_path / "deployment.json"

    proc = cli("deploy", "--rpc", anvil.url, "--keystore", str(ks), "--password-file", str(pw), "--out", str(dep))

    assert proc.returncode == 0, proc.stderr
    deployment = json.loads(dep.read_text())
    assert deployment["chain_id"] == 31337 and deployment["rpc"] == anvil.url
    assert deployment["block_number"] >= 1
    address = deployment["contracts"]["FedLedger"]
    node = dev_account(3).address

    before = json.loads(cli("reputation", node, "--deployment", str(dep), "--json").stdout)
    FedLedgerClient(Web3(Web3.HTTPProvider(anvil.url)), address, dev_account(3)).register("peer-3", [], 10**18)
    after = cli("reputation", node, "--deployment", str(dep), "--json")

    assert before == [{"address": node, "reputation": 0.0, "reputation_wad": "0"}]
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout) == [{"address": node, "reputation": 0.5, "reputation_wad": str(5 * 10**17)}]


def test_wrong_password_is_one_line_and_deploys_nothing(cli, anvil, keystore, tmp_path):
    ks, _ = keystore
    wrong = tmp_path / "wrong"
    wrong.write_text("battery staple")
    dep = tmp_path / "deployment.json"

    proc = cli("deploy", "--rpc", anvil.url, "--keystore", str(ks), "--password-file", str(wrong), "--out", str(dep))

    assert proc.returncode == 1
    assert proc.stderr.strip() == f"fedledger: error: wrong password for keystore {ks}"
    assert not dep.exists()


def test_dev_account_is_refused_off_the_testnet_chain_id(cli, tmp_path):
    # The embedded chain id is not 31337, but deploy needs RPC: fake a non-testnet chain with anvil.
    with Anvil(accounts=1) as other:
        w3 = Web3(Web3.HTTPProvider(other.url))
        w3.provider.make_request("anvil_setChainId", [1])
        proc = cli("deploy", "--rpc", other.url, "--dev-account", "0", "--out", str(tmp_path / "d.json"))

    assert proc.returncode == 1 and "--dev-account is only allowed on a local testnet" in proc.stderr


def test_simulate_on_an_existing_chain_leaves_inspectable_state(cli, anvil, tmp_path):
    out = tmp_path / "report"

    # three rounds: the nodes' probation (#16) ends and their rewards vest, so there is ether to withdraw
    proc = cli("simulate", "--rpc", anvil.url, "--nodes", "3", "--rounds", "3", "--epochs", "2", "--report", str(out))

    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["deployment"]["rpc"] == anvil.url and summary["deployment"]["chain_id"] == 31337
    dep = tmp_path / "deployment.json"
    dep.write_text(json.dumps(summary["deployment"]))
    addresses = [n["address"] for n in summary["nodes"]]

    rep = json.loads(cli("reputation", *addresses, "--deployment", str(dep), "--json").stdout)
    status = json.loads(cli("status", "--deployment", str(dep), "--task", str(summary["task_id"]), "--json").stdout)

    assert [r["reputation_wad"] for r in rep] == [n["reputation_wad"] for n in summary["nodes"]]
    assert status["phase"] == "finished" and status["global_model_cid"] == summary["rounds"][-1]["global_model_cid"]

    # The SPEC's public views answer foundry's cast, as a user would ask them.
    ledger = summary["deployment"]["contracts"]["FedLedger"]
    node0 = summary["nodes"][0]
    assert cast_call(anvil.url, ledger, "reputationOf(address)(uint256)", node0["address"]) == [node0["reputation_wad"]]
    assert cast_call(anvil.url, ledger, "pendingRewards(address)(uint256)", node0["address"]) == [node0["payout_wei"]]
    cid_hex, round_ = cast_call(anvil.url, ledger, "globalModel(uint256)(bytes,uint256)", str(summary["task_id"]))
    assert bytes.fromhex(cid_hex.removeprefix("0x")).decode() == status["global_model_cid"] and round_ == "3"

    w3 = Web3(Web3.HTTPProvider(anvil.url))
    before = w3.eth.get_balance(addresses[0])
    proc = cli("rewards", "withdraw", "--deployment", str(dep), "--dev-account", "1")
    assert proc.returncode == 0, proc.stderr
    gained = w3.eth.get_balance(addresses[0]) - before
    payout = int(summary["nodes"][0]["payout_wei"])
    assert payout - 10**16 < gained < payout  # the payout, less a gas fee
    again = cli("rewards", "withdraw", "--deployment", str(dep), "--dev-account", "1")
    assert again.returncode == 1 and "FedLedgerNothingToWithdraw" in again.stderr
    assert "unknown task 99" in cli("status", "--deployment", str(dep), "--task", "99").stderr


def test_simulate_starts_and_stops_its_own_anvil(cli, tmp_path):
    proc = cli("simulate", "--chain", "anvil", "--nodes", "2", "--rounds", "1", "--epochs", "1", "--json")

    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["config"]["chain"] == "anvil" and summary["deployment"]["chain_id"] == 31337
    assert summary["deployment"]["rpc"] is None  # that chain is gone


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_testnet_command_serves_until_stopped(stop):
    port = free_port()
    proc = subprocess.Popen([str(FEDLEDGER), "testnet", "--port", str(port)], stdout=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint)  # fmt: skip
    try:
        w3 = Web3(Web3.HTTPProvider(f"http://127.0.0.1:{port}"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not w3.is_connected():
            time.sleep(0.1)
        assert w3.eth.chain_id == 31337
        assert w3.eth.accounts[0] == dev_account(0).address
    finally:
        proc.send_signal(stop)
        code = proc.wait(timeout=20)
    assert code == 0
    assert not Web3(Web3.HTTPProvider(f"http://127.0.0.1:{port}")).is_connected()


def test_task_create_then_status_on_anvil(cli, anvil, keystore, tmp_path):
    ks, pw = keystore
    dep = tmp_path / "deployment.json"
    assert cli("deploy", "--rpc", anvil.url, "--dev-account", "0", "--out", str(dep), "--min-stake", "0.5").returncode == 0
    home = {"FEDLEDGER_HOME": str(tmp_path / "home")}

    proc = cli(
        "task", "create", "--deployment", str(dep), "--keystore", str(ks), "--password-file", str(pw),
        "--model", "digits-mlp", "--rounds", "3", "--committee", "2", "--rule", "fedavg", "--reward", "1.5",
        "--threshold", "0.25", "--alpha", "0.4", "--proposer-share", "2.5", "--attest-timeout", "120", env=home,
    )  # fmt: skip

    assert proc.returncode == 0, proc.stderr
    task = int(proc.stdout.strip())
    # $FEDLEDGER_HOME/ipfs is no node's store: said at once, not found out by waiting daemons
    assert proc.stderr.count("\n") == 1 and "which no node serves" in proc.stderr
    status = json.loads(cli("status", "--deployment", str(dep), "--task", str(task), "--json").stdout)
    assert status["phase"] == "draw" and status["round"] == 1 and status["committee_size"] == 2
    assert status["reward_remaining_wei"] == str(15 * 10**17) and status["global_model_round"] == 0
    client = FedLedgerClient(Web3(Web3.HTTPProvider(anvil.url)), json.loads(dep.read_text())["contracts"]["FedLedger"])
    timeouts, min_stake, threshold, alpha, proposer_bps, attester_bps, _ = client.contract.functions.taskParams(task).call()
    assert timeouts == [3600, 3600, 3600, 120] and min_stake == 5 * 10**17
    assert (threshold, alpha, proposer_bps, attester_bps) == (25 * 10**16, 4 * 10**17, 250, 500)
    # the initial model went into the local blockstore under the CID the chain now holds
    assert (tmp_path / "home" / "ipfs").is_dir() and status["global_model_cid"].startswith("bafk")

    bad = cli("task", "create", "--deployment", str(dep), "--dev-account", "0", "--model", "digits-mlp",
              "--rounds", "1", "--committee", "65", "--rule", "fedavg", "--reward", "1", env=home)  # fmt: skip
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "committee size" in bad.stderr


def test_anvil_does_not_outlive_a_killed_parent(tmp_path):
    """A `simulate` killed with SIGKILL cannot stop its children; the kernel does it for them."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import sys, time\n"
        f"sys.path.insert(0, {str(REPO_ROOT)!r})\n"
        "from node.chain.anvil import Anvil\n"
        "print(Anvil(accounts=1).start().process.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        assert _alive(pid)
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 15
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pid), f"anvil {pid} outlived its parent"
    finally:
        parent.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False
