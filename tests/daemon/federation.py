"""A federation of real daemon processes on a real anvil, for the multi-process tests."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from eth_account import Account
from web3 import Web3

from node.chain import FedLedgerClient, dev_account
from node.chain.client import send_ether
from node.daemon.init import init_node_dir
from node.training import iid_partition, load_digits_split
from tests.conftest import FEDLEDGER, run_cli

PASSWORD = "daemon-test-pass"


@dataclass
class NodeProc:
    index: int
    directory: Path
    address: str
    log: Path
    proc: subprocess.Popen | None = None
    starts: int = 0

    @property
    def config(self) -> Path:
        return self.directory / "node.toml"

    def start(self, extra_env: dict[str, str] | None = None) -> None:
        self.starts += 1
        log = open(self.log, "a")
        log.write(f"--- start {self.starts}\n")
        log.flush()
        self.proc = subprocess.Popen(
            [str(FEDLEDGER), "node", "run", "--config", str(self.config), "--exit-when-done", "--log-level", "debug"],
            env={**os.environ, "FEDLEDGER_PASSWORD": PASSWORD, **(extra_env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


@dataclass
class Federation:
    root: Path
    rpc: str
    deployment: Path
    nodes: list[NodeProc] = field(default_factory=list)
    task: int = 0

    @property
    def client(self) -> FedLedgerClient:
        dep = json.loads(self.deployment.read_text())
        return FedLedgerClient(Web3(Web3.HTTPProvider(self.rpc)), dep["contracts"]["FedLedger"])

    def wait(self, predicate, timeout: float, what: str, interval: float = 0.5) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            for n in self.nodes:
                if n.proc is not None and n.proc.poll() not in (None, 0):
                    raise AssertionError(f"node {n.index} exited {n.proc.returncode} while waiting for {what}:\n{n.text()[-3000:]}")
            time.sleep(interval)
        logs = "\n".join(f"== node {n.index}\n{n.text()[-2000:]}" for n in self.nodes)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{logs}")

    def stop_all(self) -> None:
        for n in self.nodes:
            n.stop()


def node_account(node: NodeProc):
    keystore = json.loads((node.directory / "keystore.json").read_text())
    return Account.from_key(Account.decrypt(keystore, PASSWORD))


def build_federation(
    root: Path, rpc: str, n_nodes: int, rounds: int, propose_timeout: int = 3600, attest_timeout: int = 3600
) -> Federation:
    """Deploy, init `n_nodes` node directories with digits shards and register them all (so a
    committee can include nodes whose daemon is not running yet), then create a task whose
    initial model node 0 serves."""
    dep = root / "deployment.json"
    proc = run_cli("deploy", "--rpc", rpc, "--dev-account", "0", "--out", str(dep))
    assert proc.returncode == 0, proc.stderr
    fed = Federation(root, rpc, dep)
    w3 = Web3(Web3.HTTPProvider(rpc))
    train, _ = load_digits_split(seed=3)
    shards = iid_partition(len(train), n_nodes, seed=3)
    funder = dev_account(0)
    for i in range(n_nodes):
        directory = root / f"node{i}"
        result = init_node_dir(directory, PASSWORD, rpc=rpc)
        shard = train.subset(shards[i])
        np.savez(directory / "data.npz", x=shard.x, y=shard.y)
        text = result.config.read_text()
        text = text.replace('deployment = "deployment.json"', f'deployment = "{dep}"')
        text = text.replace("tasks = []", "tasks = [1]").replace("poll_interval = 1.0", "poll_interval = 0.2")
        result.config.write_text(text)
        send_ether(w3, funder, result.address, 50 * 10**18)
        node = NodeProc(i, directory, result.address, root / f"node{i}.log")
        fed.nodes.append(node)
        # Registered up front with its real peer id; the daemon adds its listen addresses at start.
        fed.client.as_account(node_account(node)).register(result.peer_id, [], 10**18)
    proc = run_cli(
        "task", "create", "--deployment", str(dep), "--dev-account", "0", "--model", "digits-mlp",
        "--rounds", str(rounds), "--committee", str(n_nodes), "--rule", "fedavg", "--reward", "10",
        "--epochs", "2", "--propose-timeout", str(propose_timeout), "--attest-timeout", str(attest_timeout),
        "--repo", str(root / "node0" / "ipfs"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    fed.task = int(proc.stdout.strip())
    assert fed.task == 1
    return fed


def committed_count(fed: Federation, address: str) -> int:
    c = fed.client
    return len(c.contract.events.UpdateCommitted().get_logs(from_block=0, argument_filters={"node": address}))


def journal_kinds(node: NodeProc) -> list[str]:
    return re.findall(r"(committed to update|revealed|proposed|attested|finalized)", node.text())


def point_nodes_at(fed: Federation, rpc: str) -> None:
    """Make every node's daemon reach the chain at `rpc` (e.g. through a proxy) while the test
    and the federation helpers keep talking to the chain directly at `fed.rpc`."""
    for n in fed.nodes:
        text = n.config.read_text()
        assert f'rpc = "{fed.rpc}"' in text, f"node {n.index}'s config does not name {fed.rpc}"
        n.config.write_text(text.replace(f'rpc = "{fed.rpc}"', f'rpc = "{rpc}"'))
