"""`fedledger simulate`: the whole protocol with many nodes in one process.

Real contracts on a real EVM (embedded py-evm, or anvil over JSON-RPC), real
content addressing (each node has its own blockstore; updates move between
stores block by block, each block verified against its CID), real torch
training. One round: every node trains from the on-chain global model, pins
its update and submits the CID; the aggregator fetches the updates in on-chain
order, aggregates, pins the new model and finalizes with the scores; the
contract updates reputation and credits rewards.

In this cut the task owner aggregates and finalizes; committees, commit-reveal
and peer attestation replace that trust in the on-chain protocol issue.
"""

from __future__ import annotations

import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from web3 import Web3

from aggregation import aggregate_round, decode_model, encode_model, encode_update
from node.attacks import ATTACKS, AttackContext, craft_update, poison_data
from node.chain import FedLedgerClient, deploy_fedledger, dev_account
from node.chain.anvil import Anvil
from node.chain.providers import embedded_web3, rpc_web3
from node.errors import ConfigError, StorageError
from node.report import NodeRecord, RoundRecord, SimulationReport
from node.storage import EmbeddedStorage
from node.storage.unixfs import read_dag
from node.taskspec import RULE_IDS, TaskSpec
from node.training import TorchTrainer, accuracy, dirichlet_partition, initial_weights, iid_partition, load_digits_split

ETHER = 10**18


@dataclass(frozen=True)
class SimulationConfig:
    nodes: int = 4
    malicious: int = 0  # the last `malicious` nodes run `attack`
    attack: str | None = None
    rounds: int = 3
    rule: str = "fedavg"
    seed: int = 7
    chain: str = "embedded"  # embedded | anvil | rpc
    rpc: str | None = None  # with chain == "rpc": an existing JSON-RPC endpoint
    alpha: float | None = None  # Dirichlet label skew; None = IID
    spec: TaskSpec = field(default_factory=TaskSpec)
    reward_wei: int = 10 * ETHER
    stake_wei: int = 1 * ETHER

    def validate(self) -> None:
        if self.nodes < 1:
            raise ConfigError(f"--nodes must be at least 1, got {self.nodes}")
        if self.rounds < 1:
            raise ConfigError(f"--rounds must be at least 1, got {self.rounds}")
        if not 0 <= self.malicious <= self.nodes:
            raise ConfigError(f"--malicious must be between 0 and --nodes ({self.nodes}), got {self.malicious}")
        if self.malicious and self.attack is None:
            raise ConfigError("--malicious needs --attack KIND")
        if self.attack is not None and self.attack not in ATTACKS:
            raise ConfigError(f"unknown attack {self.attack!r}; known: {', '.join(sorted(ATTACKS))}")
        if self.rule not in RULE_IDS:
            raise ConfigError(f"unknown rule {self.rule!r}; known: {', '.join(RULE_IDS)}")
        if self.rule != "fedavg":
            raise ConfigError(f"rule {self.rule!r} is not implemented yet; use fedavg")
        if self.chain not in ("embedded", "anvil", "rpc"):
            raise ConfigError(f"unknown chain {self.chain!r}")
        if self.chain == "rpc" and not self.rpc:
            raise ConfigError("--rpc URL is needed to simulate on an existing chain")

    def to_json(self) -> dict[str, object]:
        return {
            "nodes": self.nodes,
            "malicious": self.malicious,
            "attack": self.attack,
            "rounds": self.rounds,
            "rule": self.rule,
            "seed": self.seed,
            "chain": self.chain,
            "alpha": self.alpha,
        }


def fetch(cid: str, local: EmbeddedStorage, peers: list[EmbeddedStorage]) -> bytes:
    """Get `cid` into `local`, pulling missing blocks from peers, each block verified on arrival."""
    if local.has(cid):
        return local.get(cid)

    def get_block(block_cid: str) -> bytes:
        for peer in peers:
            try:
                data = peer.get_block(block_cid)
            except StorageError:
                continue
            local.put_block(block_cid, data)  # verifies the block against its CID
            return data
        raise StorageError(f"no peer holds block {block_cid}")

    data = read_dag(cid, get_block)
    local.pin(cid)
    return data


def _connect(config: SimulationConfig, stack: ExitStack) -> tuple[Web3, str | None]:
    if config.chain == "embedded":
        return embedded_web3(num_accounts=config.nodes + 1), None
    if config.chain == "anvil":
        anvil = stack.enter_context(Anvil(accounts=config.nodes + 1))
        return rpc_web3(anvil.url), anvil.url
    assert config.rpc is not None
    return rpc_web3(config.rpc), config.rpc


def _fund(w3: Web3, funder, addresses: list[str], minimum: int) -> None:
    """Top up accounts that the chain did not fund (e.g. more nodes than anvil's accounts)."""
    for address in addresses:
        balance = w3.eth.get_balance(address)
        if balance >= minimum:
            continue
        tx = {
            "to": address,
            "value": minimum - balance,
            "nonce": w3.eth.get_transaction_count(funder.address, "pending"),
            "gas": 21000,
            "gasPrice": w3.eth.gas_price * 2,
            "chainId": w3.eth.chain_id,
        }
        w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(funder.sign_transaction(tx).raw_transaction))


def run_simulation(
    config: SimulationConfig,
    workdir: Path | None = None,
    progress: Callable[[str], None] = lambda line: None,
    w3: Web3 | None = None,
) -> SimulationReport:
    """Run a whole federation; returns the report (nothing is printed except through `progress`).

    `w3`, when given, is the chain to use instead of the one `config.chain`
    names; tests pass an embedded chain to inspect it after the run.
    """
    config.validate()
    spec = config.spec
    with ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fedledger-sim-")))
        if w3 is None:
            w3, rpc_url = _connect(config, stack)
        else:
            rpc_url = None
        owner = dev_account(0)
        accounts = [dev_account(i + 1) for i in range(config.nodes)]
        _fund(w3, owner, [a.address for a in accounts], config.stake_wei + ETHER)
        roles = ["honest"] * (config.nodes - config.malicious) + [config.attack or "honest"] * config.malicious

        progress(f"deploying FedLedger on the {config.chain} chain")
        chain, receipt = deploy_fedledger(w3, owner, config.stake_wei)
        deployed_at = int(receipt["blockNumber"])

        # Data: a shared test split for reporting, private shards for training.
        train, test = load_digits_split(seed=config.seed)
        if config.alpha is None:
            shards = iid_partition(len(train), config.nodes, config.seed)
        else:
            shards = dirichlet_partition(train.y, config.nodes, config.alpha, config.seed)
        rng = np.random.default_rng(config.seed)
        trainers = [
            TorchTrainer(
                spec.model,
                poison_data(role, train.subset(idx), rng),
                test,
                epochs=spec.epochs,
                batch_size=spec.batch_size,
                lr=spec.lr,
            )
            for idx, role in zip(shards, roles)
        ]
        stores = [EmbeddedStorage(workdir / f"node{i}") for i in range(config.nodes)]
        owner_store = EmbeddedStorage(workdir / "owner")
        everyone = [owner_store, *stores]

        # The task: the initial model and the spec are content-addressed first.
        model_cid = owner_store.put(encode_model(initial_weights(spec.model, config.seed)))
        spec_cid = owner_store.put(spec.to_bytes())
        task_id, _ = chain.create_task(
            model_cid, spec_cid, config.rounds, config.nodes, RULE_IDS[config.rule], spec.max_samples, config.reward_wei
        )
        progress(f"task {task_id}: {config.nodes} nodes x {config.rounds} rounds, rule {config.rule}")

        nodes = [chain.as_account(acct) for acct in accounts]
        for i, node in enumerate(nodes):
            node.register(f"sim-node-{i}", [], config.stake_wei)

        payouts = {a.address: 0 for a in accounts}
        reputation_history: dict[str, list[int]] = {a.address: [chain.reputation_of(a.address)] for a in accounts}
        initial_acc = accuracy(spec.model, decode_model(owner_store.get(model_cid), spec.max_update_bytes)[0], test)
        progress(f"round 0: initial model {model_cid}, test accuracy {initial_acc:.3f}")
        rounds: list[RoundRecord] = []
        published: list[dict[str, np.ndarray] | None] = [None] * config.nodes
        for r in range(1, config.rounds + 1):
            started = time.monotonic()
            gas = 0
            base_cid, _ = chain.global_model(task_id)
            base_bytes = fetch(base_cid, owner_store, everyone)
            base, _meta = decode_model(base_bytes, spec.max_update_bytes)
            trained = [
                trainers[i].train(base, seed=config.seed * 1_000_003 + r * 1009 + i) for i in range(config.nodes)
            ]
            for i, node in enumerate(nodes):
                fetch(base_cid, stores[i], everyone)  # each node pulls the global model into its own store
                delta = trained[i]
                if roles[i] != "honest":
                    others = [d for j, d in enumerate(trained) if j != i and roles[j] == "honest"]
                    ctx = AttackContext(own=delta, honest=others, rng=rng, previous=published[i], round=r)
                    delta = craft_update(roles[i], ctx)
                published[i] = delta
                update = encode_update(
                    delta, num_samples=trainers[i].num_samples, task=task_id, round=r, base=base_cid
                )
                cid = stores[i].put(update)
                gas += node.submit_update(task_id, r, cid, trainers[i].num_samples)["gasUsed"]

            # Aggregate in the canonical (on-chain) order, fetching every update by its CID.
            submitted = chain.round_updates(task_id, r)
            updates = [fetch(u.cid, owner_store, everyone) for u in submitted]
            result = aggregate_round(
                config.rule,
                base_bytes,
                updates,
                max_samples=spec.max_samples,
                max_update_bytes=spec.max_update_bytes,
            )
            new_cid = owner_store.put(result.model)
            fin = chain.finalize_round(task_id, r, new_cid, result.scores_wad)
            gas += fin["gasUsed"]
            for ev in chain.events(fin, "RewardCredited"):
                if ev["args"]["account"] in payouts:
                    payouts[ev["args"]["account"]] += int(ev["args"]["amount"])
            for a in accounts:
                reputation_history[a.address].append(chain.reputation_of(a.address))
            acc = accuracy(spec.model, decode_model(result.model, spec.max_update_bytes)[0], test)
            rounds.append(RoundRecord(round=r, global_model_cid=new_cid, test_accuracy=acc, gas_used=int(gas)))
            progress(
                f"round {r}/{config.rounds}: {len(submitted)} updates, test accuracy {acc:.3f}, "
                f"gas {gas:,}, {time.monotonic() - started:.1f} s"
            )

        node_records = [
            NodeRecord(
                address=a.address,
                role=roles[i],
                reputation_wad=chain.reputation_of(a.address),
                payout_wei=payouts[a.address],
                pending_wei=chain.pending_rewards(a.address),
                reputation_history_wad=reputation_history[a.address],
                num_samples=trainers[i].num_samples,
            )
            for i, a in enumerate(accounts)
        ]
        return SimulationReport(
            config=config.to_json(),
            initial_accuracy=initial_acc,
            rounds=rounds,
            nodes=node_records,
            chain_id=int(w3.eth.chain_id),
            rpc=rpc_url if config.chain == "rpc" else None,
            contracts={"FedLedger": chain.address},
            block_number=deployed_at,
            task_id=task_id,
            owner=owner.address,
        )
