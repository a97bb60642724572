"""An operator's path on a real anvil: init -> fund -> join -> run, and every start-up check
failing as one line on stderr, exit status 1, before the node registers or spends gas (#17)."""

from __future__ import annotations

import subprocess
import time

import numpy as np
import pytest

from node.chain import Deployment, FedLedgerClient, deploy_fedledger, dev_account
from node.chain.anvil import Anvil, anvil_binary, free_port
from node.chain.providers import rpc_web3
from node.daemon.config import TEMPLATE
from node.errors import ChainError
from node.sim.simulate import federation_params, publish_task
from node.storage import EmbeddedStorage
from node.taskspec import TaskSpec
from node.training import load_digits_split
from tests.conftest import run_cli
from tests.daemon.federation import PASSWORD, build_federation, committed_count

slow = pytest.mark.slow  # anvil, and CLI processes that load torch

ENV = {"FEDLEDGER_PASSWORD": PASSWORD}


@pytest.fixture
def anvil():
    with Anvil(accounts=2) as chain:
        yield chain


def one_line(proc) -> str:
    """The one line a failed command printed, after checking it failed that way."""
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("fedledger: error: "), proc.stderr[-3000:]
    return proc.stderr.strip()


def new_node(root, anvil, name="node1", samples=200):
    """`node init --deployment`, then a digits shard as the node's data, as the README says."""
    proc = run_cli("node", "init", "--dir", str(root / name), "--deployment", str(root / "deployment.json"), env=ENV)
    assert proc.returncode == 0, proc.stderr
    address = proc.stdout.split()[2]
    train, _ = load_digits_split(seed=1)
    np.savez(root / name / "data.npz", x=train.x[:samples], y=train.y[:samples])
    return root / name / "node.toml", address


def deploy(root, url) -> FedLedgerClient:
    w3 = rpc_web3(url)
    client, receipt = deploy_fedledger(w3, dev_account(0), 10**18)
    Deployment(31337, url, {"FedLedger": client.address}, int(receipt["blockNumber"])).save(root / "deployment.json")
    return client


def create_task(client: FedLedgerClient, store_dir, rounds=2) -> int:
    spec = TaskSpec(epochs=1)
    params = federation_params(3, rounds, spec, 10**18, 500, 500)
    task, _cid, _ = publish_task(client.as_account(dev_account(0)), EmbeddedStorage(store_dir), spec, params, 0, 10**18)
    return task


@slow
def test_init_fund_join_run(anvil, tmp_path):
    client = deploy(tmp_path, anvil.url)
    config, address = new_node(tmp_path, anvil)
    text = config.read_text()
    assert 'deployment = "../deployment.json"' in text and f'rpc = "{anvil.url}"' in text

    # Unfunded: one line saying how much is missing and the command that funds it; nothing registered.
    line = one_line(run_cli("node", "run", "--config", str(config), env=ENV, timeout=120))  # not even a log line
    assert "1 ETH of stake" in line and "ETH missing" in line and "fedledger node fund --config" in line, line
    assert not client.node_info(address)[0]

    proc = run_cli("node", "fund", "--config", str(config), "--dev-account", "1")
    assert proc.returncode == 0, proc.stderr
    assert client.w3.eth.get_balance(address) > 10**18 and f"to {address}" in proc.stdout

    # Nothing joined and --exit-when-done: said at once, and the node exits without registering.
    proc = run_cli("node", "run", "--config", str(config), "--exit-when-done", env=ENV, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "joined no task" in proc.stderr and "nothing to do" in proc.stderr
    assert not client.node_info(address)[0]

    task = create_task(client, config.parent / "ipfs")  # `task create --repo node1/ipfs`
    proc = run_cli("node", "join", "--config", str(config), "--task", str(task))
    assert proc.returncode == 0 and proc.stdout.startswith(f"joined task {task}"), proc.stderr
    assert "its spec (model digits-mlp, 1 epochs) fits this node" in proc.stdout
    after = config.read_text()
    changed = [(a, b) for a, b in zip(text.splitlines(), after.splitlines()) if a != b]
    assert changed == [("join = []                      # task ids to work on, e.g. [1, 4]",
                        f"join = [{task}]                     # task ids to work on, e.g. [1, 4]")]  # fmt: skip
    assert "already" in run_cli("node", "join", "--config", str(config), "--task", str(task)).stdout
    assert "does not exist" in one_line(run_cli("node", "join", "--config", str(config), "--task", "9"))
    stricter = after.replace("max_rounds = 1000", "max_rounds = 1")
    config.write_text(stricter)
    assert "max_rounds" in one_line(run_cli("node", "join", "--config", str(config), "--task", str(task)))
    assert config.read_text() == stricter  # a refused join leaves the file alone

    # The joined task's spec is in the node's own store: data that does not fit its model stops
    # the daemon before it registers.
    config.write_text(after)
    np.savez(config.parent / "data.npz", x=np.zeros((20, 30), np.float32), y=np.arange(20) % 10)
    line = one_line(run_cli("node", "run", "--config", str(config), env=ENV, timeout=120))
    assert f"task {task} cannot use this node's data" in line and "30 features" in line and "takes 64" in line, line
    assert not client.node_info(address)[0]


@slow
def test_bad_data_stops_the_daemon_before_it_registers(anvil, tmp_path):
    client = deploy(tmp_path, anvil.url)
    config, address = new_node(tmp_path, anvil)
    run_cli("node", "fund", "--config", str(config), "--dev-account", "1")
    (config.parent / "data.npz").write_bytes(b"PK\x03\x04 not really a zip")

    line = one_line(run_cli("node", "run", "--config", str(config), env=ENV, timeout=120))

    assert "not a readable .npz" in line and "allow_pickle" not in line, line
    assert not client.node_info(address)[0]


@slow
def test_misspelt_key_and_dead_chain_are_one_line(anvil, tmp_path):
    deploy(tmp_path, anvil.url)
    config, _ = new_node(tmp_path, anvil)
    good = config.read_text()
    config.write_text(good.replace('deployment = "../', 'deplyment = "../'))
    assert "did you mean deployment?" in one_line(run_cli("node", "run", "--config", str(config), env=ENV))

    config.write_text(good.replace(anvil.url, f"http://127.0.0.1:{free_port()}"))
    assert "cannot reach the chain" in one_line(run_cli("node", "run", "--config", str(config), env=ENV))


@slow
def test_fund_is_refused_off_the_testnet(tmp_path):
    port = free_port()
    proc = subprocess.Popen([str(anvil_binary()), "--port", str(port), "--chain-id", "1337"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                rpc_web3(f"http://127.0.0.1:{port}")
                break
            except ChainError:
                assert time.monotonic() < deadline, "anvil did not start"
                time.sleep(0.2)
        config = tmp_path / "node.toml"
        config.write_text(TEMPLATE.format(rpc=f"http://127.0.0.1:{port}", deployment="deployment.json"))
        (tmp_path / "keystore.json").write_text('{"address": "70997970c51812dc3a010c7d01b50e0d17dc79c8"}')

        line = one_line(run_cli("node", "fund", "--config", str(config), "--dev-account", "0"))

        assert "chain id 31337" in line and "is chain 1337" in line and "0x70997970C51812dc3A010C7d01b50e0d17dc79C8" in line
    finally:
        proc.kill()
        proc.wait()


@slow
def test_data_that_does_not_fit_the_joined_task_stops_the_daemon_before_it_acts(anvil, tmp_path):
    fed = build_federation(tmp_path, anvil.url, n_nodes=2, rounds=1)
    node = fed.nodes[1]  # registered, but the task's spec is only in node 0's store: checked once fetched
    np.savez(node.directory / "data.npz", x=np.zeros((20, 30), np.float32), y=np.arange(20) % 10)
    try:
        fed.nodes[0].start()
        node.start()
        node.proc.wait(timeout=90)
    finally:
        fed.stop_all()

    assert node.proc.returncode == 1, node.text()[-3000:]
    last = node.tail(1)[0]
    assert last.startswith("fedledger: error: task 1 cannot use this node's data"), node.text()[-3000:]
    assert "30 features" in last and "takes 64" in last
    assert "Traceback" not in node.text()
    assert committed_count(fed, node.address) == 0


@slow
def test_a_task_nobody_serves_is_one_clear_line(anvil, tmp_path):
    fed = build_federation(tmp_path, anvil.url, n_nodes=2, rounds=1)
    orphan = create_task(fed.client, tmp_path / "creator-ipfs")  # created without a node's --repo
    node = fed.nodes[1]
    node.log_level = "info"
    node.config.write_text(node.config.read_text().replace("join = [1]", f"join = [{orphan}]"))
    try:
        fed.nodes[0].start()  # a registered peer that answers "not found"
        node.start()
        fed.wait(lambda: "no registered node serves" in node.text(), timeout=60, what="the waiting task's line")
        time.sleep(12)  # more tries of the fetch, backing off
    finally:
        fed.stop_all()

    log = node.text()
    assert log.count("no registered node serves its spec or initial model") == 1, log[-3000:]
    assert "--repo NODE_DIR/ipfs" in log and f"its creator {fed.owner} is not a registered node" in log
    spec_cid = fed.client.task_info(orphan).spec_cid
    noisy = [line for line in log.splitlines() if spec_cid in line and "no registered node serves" not in line]
    assert len(noisy) <= 2, noisy  # at most a coalesced count, not a line per attempt


@pytest.mark.parametrize(
    "features, top_label, message",
    [
        (64, 9, None),
        (30, 9, "d.npz: samples have 30 features, the app's model takes 64 (input shape (64,))"),
        (64, 10, "d.npz: labels go up to 10, the app's model has 10 classes (labels 0-9)"),
    ],
)
def test_data_misfit_names_features_and_classes(tmp_path, features, top_label, message):
    from dataclasses import replace

    from node.daemon.config import load_config
    from node.daemon.startup import app_problem, data_misfit
    from node.taskspec import TaskSpec

    np.savez(tmp_path / "d.npz", x=np.zeros((top_label + 1, features), np.float32), y=np.arange(top_label + 1))
    (tmp_path / "node.toml").write_text('[chain]\nrpc = "http://127.0.0.1:1"\n[data]\npath = "d.npz"\n')
    config = load_config(tmp_path / "node.toml")
    spec = TaskSpec(model="digits-mlp")

    why = data_misfit(config, spec)

    assert why == (None if message is None else f"{tmp_path}/{message}")
    # A task whose app this node does not have is the task's fault: refused, not a stopped node.
    assert "unknown model 'no-such-net'" in app_problem(config, TaskSpec(model="no-such-net"))
    assert "set [app] ref" in app_problem(config, replace(spec, app="evil.py:app"))
