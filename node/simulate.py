"""`fedledger simulate`: the whole protocol with many nodes in one process.

Real contracts on a real EVM (embedded py-evm, or anvil over JSON-RPC), real
content addressing (each node has its own blockstore; updates move between
stores block by block, each block verified against its CID), real torch
training. One round follows SPEC §4: the committee is drawn on-chain; each
member trains from the on-chain global model, pins its update, commits to it
and then reveals it; the designated proposer fetches the revealed updates in
reveal order, aggregates them, pins the new model and proposes its CID with the
scores; every other participant re-runs the aggregation on the same inputs and
attests agree iff the CID and every score match; then anyone finalizes, and the
contract updates reputations and credits rewards. Every phase ends as soon as
all members have acted, so an honest run never waits on a timer.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from web3 import Web3

from aggregation import aggregate_round, decode_model, encode_model, encode_update
from node.attacks import AttackContext, craft_update, parse_roles, poison_data, role_kinds, training_attack
from node.chain import FedLedgerClient, Phase, deploy_fedledger, dev_account, make_commitment
from node.chain.client import send_ether
from node.chain.anvil import Anvil
from node.chain.providers import embedded_web3, rpc_web3
from node.errors import ChainError, ConfigError, StorageError
from node.report import NodeRecord, RoundRecord, SimulationReport
from node.storage import EmbeddedStorage
from node.storage.unixfs import cid_of, read_dag
from node.taskspec import MAX_COMMITTEE, RULE_IDS, TaskParams, TaskSpec
from node.training import TorchTrainer, accuracy, initial_weights, load_digits_split, partition

ETHER = 10**18


@dataclass(frozen=True)
class SimulationConfig:
    nodes: int = 4
    malicious: int = 0  # the last `malicious` nodes run `attack`
    attack: str | None = None  # roles separated by commas, taken in turn; kinds of one role joined by "+"
    rounds: int = 3
    rule: str = "fedavg"
    seed: int = 7
    chain: str = "embedded"  # embedded | anvil | rpc
    rpc: str | None = None  # with chain == "rpc": an existing JSON-RPC endpoint
    alpha: float | None = None  # Dirichlet label skew; None = IID
    spec: TaskSpec = field(default_factory=TaskSpec)
    reward_wei: int = 10 * ETHER
    stake_wei: int = 1 * ETHER
    # Shares of each round's payout for protocol work (proposing, agreeing attestations). Off by
    # default so a node's payout measures its training contribution alone, which is what the
    # attack experiments compare; the contract tests and `task create` exercise the split.
    proposer_share_bps: int = 0
    attester_share_bps: int = 0

    def validate(self) -> None:
        if self.nodes < 1:
            raise ConfigError(f"--nodes must be at least 1, got {self.nodes}")
        if self.rounds < 1:
            raise ConfigError(f"--rounds must be at least 1, got {self.rounds}")
        if not 0 <= self.malicious <= self.nodes:
            raise ConfigError(f"--malicious must be between 0 and --nodes ({self.nodes}), got {self.malicious}")
        if self.malicious and self.attack is None:
            raise ConfigError("--malicious needs --attack KIND")
        if self.attack is not None:
            try:
                roles = parse_roles(self.attack)
            except ValueError as e:
                raise ConfigError(f"--attack: {e}") from None
            if not self.malicious:
                raise ConfigError("--attack needs --malicious M, the number of nodes that attack")
            if len(roles) > self.malicious:
                raise ConfigError(f"--attack names {len(roles)} roles for {self.malicious} malicious nodes; each role needs a node")
        if self.rule not in RULE_IDS:
            raise ConfigError(f"unknown rule {self.rule!r}; known: {', '.join(RULE_IDS)}")
        if self.spec.rule != self.rule:
            raise ConfigError(f"the task spec's rule {self.spec.rule!r} is not the simulation's {self.rule!r}")
        self.spec.check()
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


def node_roles(config: SimulationConfig) -> list[str]:
    """Each node's role: "honest", then the `--attack` roles taken in turn by the last `malicious` nodes."""
    roles = parse_roles(config.attack) if config.attack else ["honest"]
    return ["honest"] * (config.nodes - config.malicious) + [roles[j % len(roles)] for j in range(config.malicious)]


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


def publish_task(
    chain: FedLedgerClient, store: EmbeddedStorage, spec: TaskSpec, params: TaskParams, model_seed: int, reward_wei: int
) -> tuple[int, str, dict]:
    """Content-address the initial model and the spec in `store`, then create the task on-chain.
    Returns (task id, initial model CID, receipt)."""
    model_cid = store.put(encode_model(initial_weights(spec.model, model_seed)))
    spec_cid = store.put(spec.to_bytes())
    task_id, receipt = chain.create_task(model_cid, spec_cid, params, reward_wei)
    return task_id, model_cid, receipt


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
        if balance < minimum:
            send_ether(w3, funder, address, minimum - balance)


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
        roles = node_roles(config)

        progress(f"deploying FedLedger on the {config.chain} chain")
        chain, receipt = deploy_fedledger(w3, owner, config.stake_wei)
        deployed_at = int(receipt["blockNumber"])

        # Data: a shared test split for reporting, private shards for training.
        train, test = load_digits_split(seed=config.seed)
        shards = partition(train, config.nodes, config.alpha, config.seed)
        rng = np.random.default_rng(config.seed)
        trainers = [
            TorchTrainer(
                spec.model,
                poison_data(training_attack(role) or "", train.subset(idx), rng),
                test,
                epochs=spec.epochs,
                batch_size=spec.batch_size,
                lr=spec.lr,
            )
            for idx, role in zip(shards, roles)
        ]
        # A simulation's stores are scratch space: content addressing and per-block verification
        # are real, durability across power loss (fsync) is not what is being simulated.
        stores = [EmbeddedStorage(workdir / f"node{i}", fsync=False) for i in range(config.nodes)]
        owner_store = EmbeddedStorage(workdir / "owner", fsync=False)
        everyone = [owner_store, *stores]

        params = TaskParams(
            rounds=config.rounds,
            committee_size=min(config.nodes, MAX_COMMITTEE),
            rule=config.rule,
            max_samples=spec.max_samples,
            min_stake_wei=config.stake_wei,
            proposer_share_bps=config.proposer_share_bps,
            attester_share_bps=config.attester_share_bps,
        )
        task_id, model_cid, _ = publish_task(chain, owner_store, spec, params, config.seed, config.reward_wei)
        progress(f"task {task_id}: {config.nodes} nodes x {config.rounds} rounds, rule {config.rule}")

        nodes = [chain.as_account(acct) for acct in accounts]
        for i, node in enumerate(nodes):
            node.register(f"sim-node-{i}", [], config.stake_wei)
        index_of = {a.address: i for i, a in enumerate(accounts)}

        payouts = {a.address: 0 for a in accounts}
        reputation_history: dict[str, list[int]] = {a.address: [chain.reputation_of(a.address)] for a in accounts}
        initial_acc = accuracy(spec.model, decode_model(owner_store.get(model_cid), spec.max_update_bytes)[0], test)
        progress(f"round 0: initial model {model_cid}, test accuracy {initial_acc:.3f}")
        rounds: list[RoundRecord] = []
        published: list[dict[str, np.ndarray] | None] = [None] * config.nodes

        last_round: dict[int, dict[str, np.ndarray]] = {}  # node -> what it published in the previous round
        earlier_updates: list = []  # the previous round's on-chain updates

        def aggregate(local: EmbeddedStorage, base_bytes: bytes, updates: list) -> tuple[str, list[int], bytes]:
            """What a node computes from the revealed updates: (model CID, scores, model bytes)."""
            blobs = [fetch(u.cid, local, everyone) for u in updates]
            previous = [fetch(u.cid, local, everyone) for u in earlier_updates]
            result = aggregate_round(
                config.rule,
                base_bytes,
                blobs,
                options=spec.rule_options(),
                max_update_bytes=spec.max_update_bytes,
                previous=previous,
            )
            return cid_of(result.model), list(result.scores_wad), result.model

        for r in range(1, config.rounds + 1):
            started = time.monotonic()
            gas = 0
            base_cid, _ = chain.global_model(task_id)
            base_bytes = fetch(base_cid, owner_store, everyone)
            base, _meta = decode_model(base_bytes, spec.max_update_bytes)

            # Committee: drawn on-chain by anyone (here the owner) from the block after the round opened.
            members: list[str] = []
            for _ in range(3):  # a draw only comes back empty on a stale seed (reseeded) or a void round
                members, receipt = chain.draw_committee(task_id)
                gas += receipt["gasUsed"]
                if members or chain.round_state(task_id, r).phase != Phase.DRAW:
                    break
            if not members:
                acc = accuracy(spec.model, base, test)
                rounds.append(RoundRecord(round=r, global_model_cid=base_cid, test_accuracy=acc, gas_used=int(gas)))
                progress(f"round {r}/{config.rounds}: void (no eligible node), test accuracy {acc:.3f}")
                last_round, earlier_updates = {}, []
                continue
            # Members act in node order, so the reveal order (hence the proposer rotation) of a run
            # does not depend on the committee seed, which the block hash makes different every run.
            seats = sorted(index_of[m] for m in members)

            # Train, pin, commit; then reveal. Nobody's update is visible before every commit is in.
            trained = {i: trainers[i].train(base, seed=config.seed * 1_000_003 + r * 1009 + i) for i in seats}
            revealed: dict[int, tuple[str, int, bytes]] = {}
            this_round: dict[int, dict[str, np.ndarray]] = {}
            for i in seats:
                fetch(base_cid, stores[i], everyone)  # each member pulls the global model into its own store
                delta = trained[i]
                if roles[i] != "honest":
                    # What the protocol lets it know: its colluders' training, the committee size
                    # and last round's revealed updates -- not this round's honest ones.
                    ctx = AttackContext(
                        own=delta,
                        rng=rng,
                        committee=len(seats),
                        team=[trained[j] for j in seats if roles[j] == roles[i]],
                        revealed=[d for j, d in last_round.items() if j != i],
                        previous=published[i],
                        round=r,
                        honest_for_report=[d for j, d in trained.items() if roles[j] == "honest"],
                    )
                    delta = craft_update(training_attack(roles[i]) or "", ctx)
                published[i] = delta
                this_round[i] = delta
                n = trainers[i].num_samples
                cid = stores[i].put(encode_update(delta, num_samples=n, task=task_id, round=r, base=base_cid))
                salt = secrets.token_bytes(32)
                revealed[i] = (cid, n, salt)
                gas += nodes[i].commit(task_id, r, make_commitment(cid, n, salt, accounts[i].address))["gasUsed"]
            for i in seats:
                cid, n, salt = revealed[i]
                gas += nodes[i].reveal(task_id, r, cid, n, salt)["gasUsed"]

            # Propose -> attest -> finalize; a rejected proposal hands the turn to the next proposer.
            updates = chain.round_updates(task_id, r)
            accepted: tuple[str, list[int], bytes] | None = None
            for _attempt in range(len(updates) + 1):
                proposer = chain.designated_proposer(task_id, r)
                p = index_of[proposer]
                cid, scores, model = aggregate(stores[p], base_bytes, updates)
                if "bad-proposer" in role_kinds(roles[p]):  # its own model and scores: all the credit to itself
                    model = encode_update(trained[p], num_samples=1, task=task_id, round=r, base=base_cid)
                    cid = cid_of(model)
                    scores = [10**18 if u.sender == proposer else 0 for u in updates]
                stores[p].put(model)
                gas += nodes[p].propose(task_id, r, cid, scores)["gasUsed"]
                for u in updates:
                    if u.sender == proposer:
                        continue
                    v = index_of[u.sender]
                    if "bad-proposer" in role_kinds(roles[v]) and "bad-proposer" in role_kinds(roles[p]):
                        agree = True  # colluders vouch for each other
                    else:
                        mine_cid, mine_scores, _ = aggregate(stores[v], base_bytes, updates)
                        agree = (mine_cid, mine_scores) == (cid, scores)
                    gas += nodes[v].attest(task_id, r, agree)["gasUsed"]
                    if chain.round_state(task_id, r).phase != Phase.ATTEST:
                        break  # rejected by a majority: proposing reopened
                if chain.round_state(task_id, r).phase == Phase.ATTEST:
                    accepted = (cid, scores, model)
                    break
                progress(f"round {r}: proposal by {proposer} rejected; proposer slashed")
            if accepted is None:
                raise ChainError(f"round {r}: no proposal was accepted")
            new_cid, scores, model = accepted
            last_round, earlier_updates = this_round, updates
            fin = chain.finalize(task_id, r, new_cid, scores)
            gas += fin["gasUsed"]
            for ev in chain.events(fin, "RewardCredited"):
                if ev["args"]["account"] in payouts:
                    payouts[ev["args"]["account"]] += int(ev["args"]["amount"])
            for a in accounts:
                reputation_history[a.address].append(chain.reputation_of(a.address))
            acc = accuracy(spec.model, decode_model(model, spec.max_update_bytes)[0], test)
            rounds.append(RoundRecord(round=r, global_model_cid=new_cid, test_accuracy=acc, gas_used=int(gas)))
            progress(
                f"round {r}/{config.rounds}: {len(updates)} updates, test accuracy {acc:.3f}, "
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
