"""Federations of real daemon processes on a real anvil for the multi-process tests: the
product's (node/sim/federation.py), with a known password, debug logs, and helpers that look
inside a running federation."""

from __future__ import annotations

import json
import re
from pathlib import Path

from eth_account import Account

from node.sim.federation import Federation, FederationConfig, NodeDaemon
from node.sim.federation import build_federation as _build_federation
from node.taskspec import TaskSpec

PASSWORD = "daemon-test-pass"

NodeProc = NodeDaemon  # one node's directory and daemon process


def build_federation(
    root: Path, rpc: str, n_nodes: int, rounds: int, propose_timeout: int = 3600, attest_timeout: int = 3600
) -> Federation:
    """Deploy, init `n_nodes` node directories with IID digits shards and register them all (so a
    committee can include nodes whose daemon is not running yet), then create task 1 (committee
    of every node, fedavg, 2 local epochs) whose initial model node 0 serves. Starts nothing."""
    config = FederationConfig(
        nodes=n_nodes,
        rounds=rounds,
        spec=TaskSpec(epochs=2),
        propose_timeout=propose_timeout,
        attest_timeout=attest_timeout,
        funding_wei=50 * 10**18,
        password=PASSWORD,
        log_level="debug",
    )
    fed = _build_federation(root, rpc, config)
    assert fed.task == 1
    return fed


def node_account(node: NodeProc):
    keystore = json.loads((node.directory / "keystore.json").read_text())
    return Account.from_key(Account.decrypt(keystore, PASSWORD))


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
