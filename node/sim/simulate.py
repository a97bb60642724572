"""`fedledger simulate`: the whole protocol with many nodes in one process.

Real contracts on a real EVM (embedded py-evm, or anvil over JSON-RPC), real
content addressing (each node has its own blockstore; updates move between
stores block by block, each block verified against its CID), real torch
training. Each node is a `ProtocolNode` (node/protocol/node.py), the very code a
daemon runs; this module sets a federation up and steps its nodes in turn, in
one process, with no sockets. Every phase ends as soon as all members have
acted, so an honest run never waits on a timer.
"""

from __future__ import annotations

import ctypes
import os
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from web3 import Web3

from node.abc import Trainer
from node.chain import FedLedgerClient, deploy_fedledger, dev_account
from node.chain.anvil import Anvil
from node.chain.sends import send_ether
from node.chain.providers import embedded_web3, rpc_web3
from node.daemon.journal import Journal
from node.errors import ChainError, ConfigError, StorageError
from node.chain.types import Phase
from node.protocol import Behaviour, Observer, ProtocolNode, node_seed, seeded_salt
from node.protocol.behaviour import RoundView
from node.protocol.node import DREW, ZERO32
from node.report import SimulationReport
from node.sim.attacks import (
    SYBIL, SYBIL_SPARE_IDENTITIES, AttackBehaviour, Coalition, behaviour_for, parse_roles, protocol_colluders, training_attack,
)
from node.sim.record import ChainRecorder, describe
from node.storage import EmbeddedStorage
from node.storage.unixfs import DEFAULT_MAX_FETCH_BYTES, dag_blocks_bound, read_dag
from node.taskspec import MAX_COMMITTEE, RULE_IDS, TaskParams, TaskSpec
from node.apps.native import Dataset, FedApp
from node.apps.resolve import app_of, initial_model, model_file, node_trainer, pinned_spec
from node.sim.evaluation import Evaluator
from node.training.trainer import TorchTrainer, one_torch_thread
from aggregation.warmup import warm_in_background
from node.units import ETHER


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
    # The initial model (#15): a REF to a callable returning an nn.Module, or a .safetensors file;
    # neither: the app's own (node/apps/resolve.py:initial_model).
    model_ref: str | None = None
    initial_model: str | None = None

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
            "app": self.spec.app or self.spec.model,
        }


def node_roles(config: SimulationConfig) -> list[str]:
    """Each node's role: "honest", then the `--attack` roles taken in turn by the last `malicious` nodes."""
    roles = parse_roles(config.attack) if config.attack else ["honest"]
    return ["honest"] * (config.nodes - config.malicious) + [roles[j % len(roles)] for j in range(config.malicious)]


def identity_index(nodes: int, i: int, j: int) -> int:
    """The index of identity `j` of node `i` in a federation of `nodes` (j = 0: the node's own; a
    sybil attacker's comebacks are j = 1, 2, ...). Its dev account is this index + 1 (account 0
    owns the task), and its seed and directory derive from it, so node i's own identity keeps the
    index i that runs without sybils use."""
    return j * nodes + i


class SybilComebacks:
    """The `sybil` attacker's re-registrations (node/sim/attacks.py: SYBIL). Between rounds, each
    sybil attacker whose acting identity's reputation is under the task's threshold comes back as
    a fresh identity, at most SYBIL_SPARE_IDENTITIES times. Not when no round is left that it could
    sit in: the round after the one just recorded has frozen its candidates when it opened (the
    contract's `drawCommittee`), so a newcomer sits from the round after that one."""

    def __init__(self, roles: Sequence[str], rounds: int, threshold_wad: int) -> None:
        self.rounds = rounds
        self.threshold_wad = threshold_wad
        self.slots = [i for i, role in enumerate(roles) if self.plays(role)]
        self.comebacks = {i: 0 for i in self.slots}  # node index -> identities registered after its first
        self.checked = 0  # rounds recorded when last checked: reputations change only at a round's end

    @staticmethod
    def plays(role: str) -> bool:
        return training_attack(role) == SYBIL

    def due(self, chain: FedLedgerClient, nodes: Sequence[ProtocolNode], done: int) -> list[tuple[int, int]]:
        """(node index, identity number) of every comeback due after `done` recorded rounds."""
        if done == self.checked:
            return []
        self.checked = done
        if done + 2 > self.rounds:
            return []
        due = []
        for i in self.slots:
            if self.comebacks[i] < SYBIL_SPARE_IDENTITIES and chain.reputation_of(nodes[i].me) < self.threshold_wad:
                self.comebacks[i] += 1
                due.append((i, self.comebacks[i]))
        return due

    @staticmethod
    def replaced(old: ProtocolNode, new: ProtocolNode, behaviours: Sequence[Behaviour]) -> None:
        """`new` acts for `old` from now on: in its coalition, and among the protocol colluders
        who vouch for `old` (a `sybil+bad-proposer` role)."""
        for b in behaviours:
            if isinstance(b, AttackBehaviour):
                b.coalition.members = [new if m is old else m for m in b.coalition.members]
                if old.me in b.colluders:
                    b.colluders = b.colluders | {new.me}


def attack_behaviours(roles: Sequence[str], addresses: Sequence[str]) -> list[Behaviour]:
    """Each node's behaviour: honest, or its attack role. Nodes of one role collude: they vouch
    for each other's proposals and share a coalition (whose members the caller fills in)."""
    coalitions = {role: Coalition() for role in set(roles) if role != "honest"}
    colluders = protocol_colluders(addresses, roles)
    return [behaviour_for(role, colluders, coalitions.get(role)) for role in roles]


def local_or_peers(
    cid: str, local: EmbeddedStorage, peers: Sequence[EmbeddedStorage], max_bytes: int | None = None
) -> bytes:
    """Get `cid` into `local`, pulling missing blocks from the other stores, each block verified on
    arrival: the in-process network. At most `max_bytes` (OverLimit past it, checked at the root's
    declared size and as blocks arrive; None: the daemon's default limit)."""
    limit = DEFAULT_MAX_FETCH_BYTES if max_bytes is None else max_bytes
    if local.has(cid):
        return local.get(cid, max_bytes=limit)
    sources: dict[int, tuple[EmbeddedStorage, list[str]]] = {}  # id(peer) -> (peer, its blocks we need)

    def get_block(block_cid: str) -> bytes:
        # Unverified: read_dag hashes every block it is given, once; none enters `local` before
        # the whole DAG has passed.
        for peer in peers:
            try:
                data = peer.get_block(block_cid, verify=False)
            except StorageError:
                continue
            if peer is not local:
                sources.setdefault(id(peer), (peer, []))[1].append(block_cid)
            return data
        raise StorageError(f"no peer holds block {block_cid}")

    data = read_dag(cid, get_block, max_size=limit, max_blocks=dag_blocks_bound(limit))
    for peer, blocks in sources.values():
        local.adopt_blocks(peer, blocks)  # verified above: linked (or copied), not hashed again
    local.pin(cid)
    return data


def federation_params(
    nodes: int, rounds: int, spec: TaskSpec, stake_wei: int, proposer_share_bps: int, attester_share_bps: int,
    **timeouts: int,
) -> TaskParams:
    """The task a simulated federation runs: committee = every node (up to the contract's largest).
    A round needs 2 eligible nodes (one proposes, one checks), so a federation whose attackers
    were slashed or fell under the threshold goes on with the honest nodes left."""
    committee = min(nodes, MAX_COMMITTEE)
    return TaskParams(
        rounds=rounds,
        committee_size=committee,
        min_committee=min(2, committee),
        rule=spec.rule,
        max_samples=spec.max_samples,
        min_stake_wei=stake_wei,
        proposer_share_bps=proposer_share_bps,
        attester_share_bps=attester_share_bps,
        **timeouts,
    )


def publish_task(
    chain: FedLedgerClient, store: EmbeddedStorage, spec: TaskSpec, params: TaskParams, model_seed: int, reward_wei: int,
    initial: Mapping[str, np.ndarray] | None = None,
) -> tuple[int, str, dict]:
    """Content-address the initial model (`initial`, or the app's built under `model_seed`) and
    the spec, pinned to the model's tensors, in `store`, then create the task on-chain.
    Returns (task id, initial model CID, receipt)."""
    weights = dict(initial) if initial is not None else initial_model(spec, model_seed)
    spec = pinned_spec(spec, weights)
    model_cid = store.put(model_file(spec, weights))
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
    observer: Observer | None = None,
) -> SimulationReport:
    """Run a whole federation in this process; returns the report (nothing is printed except
    through `progress`).

    Every node is a `ProtocolNode`, the daemon's round code, with its own blockstore and
    journal; this function only steps them in turn, node order, until the task is finished.
    `w3`, when given, is the chain to use instead of the one `config.chain` names; tests pass
    an embedded chain to inspect it after the run. `observer` sees what every node publishes.
    """
    config.validate()
    spec = config.spec
    # The app imports and gives a model before any chain or store is touched.
    initial = initial_model(spec, config.seed, model_ref=config.model_ref, initial_file=config.initial_model,
                            node_config=sim_node_config(config, 0))  # fmt: skip
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

        # A simulation's stores are scratch space: content addressing and per-block verification
        # are real, durability across power loss (fsync) is not what is being simulated.
        owner_store = EmbeddedStorage(workdir / "owner", fsync=False)
        everyone = [owner_store]  # and every node's store, as it joins

        params = federation_params(config.nodes, config.rounds, spec, config.stake_wei,
                                   config.proposer_share_bps, config.attester_share_bps)  # fmt: skip
        task_id, model_cid, receipt = publish_task(chain, owner_store, spec, params, config.seed, config.reward_wei, initial)
        task_block = int(receipt["blockNumber"])
        progress(f"task {task_id}: {config.nodes} nodes x {config.rounds} rounds, rule {config.rule}")

        behaviours = attack_behaviours(roles, [a.address for a in accounts])
        results: dict = {}  # one recomputation per proposal checked, shared by the nodes (ProtocolNode)

        def join(i: int, j: int, behaviour: Behaviour) -> ProtocolNode:
            """Identity `j` of node `i` registers (its account funded already) and becomes a
            ProtocolNode with node i's data shard and `behaviour`, and its own store, journal,
            seed and salt (all from `identity_index`, so a run stays a function of its seed)."""
            k = identity_index(config.nodes, i, j)
            client = chain.as_account(dev_account(k + 1))
            client.register(f"sim-node-{k}", [], config.stake_wei)
            store = EmbeddedStorage(workdir / f"node{k}", fsync=False)
            everyone.append(store)  # the in-process network: every store is every node's peer
            journal = stack.enter_context(Journal(workdir / f"node{k}" / "journal.db"))
            return ProtocolNode(
                client,
                journal,
                store,
                trainer=partial(node_trainer, node_config=sim_node_config(config, i)),
                fetch=partial(_fetch_for, store, everyone),
                seed=node_seed(config.seed, k),
                salt=seeded_salt(node_seed(config.seed, k)),
                behaviour=behaviour,
                observer=observer,
                sit_out_app_failures=False,  # nothing times a round out here: the app's error ends the run
                results=results,
            )

        # `nodes` holds each data shard's acting identity (node order); `identities` every identity
        # that ever registered, in registration order, for the report.
        nodes: list[ProtocolNode] = [join(i, 0, behaviours[i]) for i in range(config.nodes)]
        for behaviour in behaviours:
            if isinstance(behaviour, AttackBehaviour):  # colluders share their data: see Coalition
                behaviour.coalition.members = [n for n, b in zip(nodes, behaviours) if b.role == behaviour.role]
        identities = list(zip(nodes, roles))

        # Training and evaluation run on every core: one torch thread per call, as many calls at
        # once as there are cores. Chain and store access stay in this thread (web3 and py-evm
        # are not thread-safe); the pool runs only the pure training and evaluation calls.
        stack.enter_context(one_torch_thread())
        warm_in_background()  # the proposer's first aggregation then finds the kernels compiled
        pool = stack.enter_context(ThreadPoolExecutor(_workers(), thread_name_prefix="fedledger-sim"))

        # The reports' evaluations run beside the rounds, in threads of the lowest priority: they
        # take the cores that training and the protocol leave idle (the proposer's single-threaded
        # checks, the chain) instead of holding up the next round. Each round's progress line is
        # printed once its evaluation is done.
        reports = stack.enter_context(ThreadPoolExecutor(_workers(), thread_name_prefix="fedledger-eval", initializer=_lowest_priority))

        def shared() -> bool:  # whether every node's app can share the process
            return all(_thread_safe(n.trainer(task_id)) for n in nodes)

        evaluate = Evaluator(lambda: [n.trainer(task_id).evaluate for n in nodes], central_test(spec, sim_node_config(config, 0)),
                             map=lambda fn, jobs: pool.map(fn, jobs) if shared() else map(fn, jobs),
                             background=lambda: reports if shared() else None)  # fmt: skip
        recorder = ChainRecorder(
            chain, task_id, [a.address for a in accounts], spec, evaluate,
            model_bytes=partial(_fetch_for, owner_store, everyone), start_block=task_block,
            total_rounds=config.rounds, progress=progress,
        )  # fmt: skip
        sybils = SybilComebacks(roles, config.rounds, params.reputation_threshold_wad)
        for node, role in identities:
            if sybils.plays(role):
                recorder.track(node.me, identity_of=node.me)
        initial_evaluation = recorder.evaluate_later(model_cid, lambda e: progress(f"round 0: initial model {model_cid}, {describe(e)}"))
        while (done := recorder.catch_up()) < config.rounds:
            _return_free_memory()  # every pass of the nodes' steps, a few a round: ~0.1 s in a ResNet-size run
            for i, j in sybils.due(chain, nodes, done):
                old = nodes[i]
                _fund(w3, owner, [dev_account(identity_index(config.nodes, i, j) + 1).address], config.stake_wei + ETHER)
                nodes[i] = join(i, j, old.behaviour)
                sybils.replaced(old, nodes[i], behaviours)
                identities.append((nodes[i], roles[i]))
                recorder.track(nodes[i].me, identity_of=recorder.identity_of[old.me])
                progress(f"round {done}: sybil {old.me} is under the threshold; it comes back as {nodes[i].me}")
            # One pass: every node takes the actions open to it, in node order (so the reveal
            # order, hence the proposer rotation, does not depend on the committee's seed).
            acted = False
            for node in nodes:
                while action := node.step(task_id):
                    acted = True
                    if observer is not None:
                        observer.acted(node, task_id, action)
                    if f": {DREW} " in action:  # the commit phase opens: train its members at once
                        train_ahead(chain, task_id, nodes, pool)
            if not acted:
                state = chain.round_state(task_id, chain.task_info(task_id).current_round)
                raise ChainError(f"round {len(recorder.records) + 1}: no node can act in phase {state.phase.name}")

        recorder.finish()
        initial = initial_evaluation.result()
        return SimulationReport(
            config=config.to_json(),
            initial_accuracy=initial.accuracy,
            initial_metrics=initial.metrics,
            rounds=recorder.records,
            nodes=recorder.node_records([r for _, r in identities], [n.trainer(task_id).num_samples for n, _ in identities]),
            chain_id=chain.chain_id(),
            rpc=rpc_url if config.chain == "rpc" else None,
            contracts={"FedLedger": chain.address},
            block_number=deployed_at,
            task_id=task_id,
            owner=owner.address,
        )




def train_ahead(chain: FedLedgerClient, task: int, nodes: Sequence[ProtocolNode], pool: ThreadPoolExecutor) -> None:
    """In a commit phase, train every seated node that has yet to commit, at once in `pool`, into
    the node's own per-round cache (`ProtocolNode.train`): its commit step then finds the delta
    made. The same call with the same base and seed as the step would make, so the same bytes.

    Bases are read here (chain and stores: this thread only); only the training runs in the pool.
    Apps that are not thread-safe (a Flower app seeds the process's generators) train in turn, in
    their steps. A failed training is left for the step, which repeats it and reports its error."""
    info = chain.task_info(task)
    if info.finished:
        return
    r = info.current_round
    if chain.round_state(task, r).phase != Phase.COMMIT:
        return
    jobs: list[tuple[ProtocolNode, Mapping[str, np.ndarray]]] = []
    bases: dict[str, Mapping[str, np.ndarray]] = {}  # one decoded copy per base model, shared read-only
    for node in nodes:
        if node.has_trained(task, r) or node.journal.get(task, r, "commit") is not None:
            continue
        me = node.client.member_info(task, r)
        if not me.member or me.commitment != ZERO32:
            continue
        if not _thread_safe(node.trainer(task)):
            return
        view = RoundView(node, task, r)
        if view.base_cid not in bases:
            bases[view.base_cid] = view.base
        jobs.append((node, bases[view.base_cid]))
    if len(jobs) < 2:
        return
    for future in [pool.submit(node.train, task, r, base) for node, base in jobs]:
        future.exception()  # wait; an error is raised again by the node's own step


def _thread_safe(trainer: Trainer) -> bool:
    """Whether `trainer` may train beside others in this process: a native app's trainer (its
    training draws from its round seed only, its evaluation from nothing), poisoned data or not."""
    return isinstance(getattr(trainer, "inner", trainer), TorchTrainer)


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc
    except (AttributeError, OSError):
        return None


def _return_free_memory() -> None:
    # A round frees gigabytes (updates, models, training buffers) that glibc's per-thread heaps
    # keep for reuse: without this, a ResNet-size run's resident memory grows round by round.
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _lowest_priority() -> None:
    # Linux gives each thread its own nice value; elsewhere the reports run at normal priority.
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):
        pass


def _workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def central_test(spec: TaskSpec, node_config: Mapping[str, object]) -> tuple[FedApp, Dataset] | None:
    """A built-in app's whole test split, which a simulation reports its test accuracy on (None
    for an app that has none: the nodes' weighted accuracy is reported instead)."""
    app = app_of(spec)
    central = getattr(app.load_data, "central", None) if isinstance(app, FedApp) else None
    return None if central is None else (app, central(node_config))


def sim_node_config(config: SimulationConfig, i: int) -> dict[str, int | float | str | bool]:
    return partition_config(config.nodes, i, config.seed, config.alpha)


def partition_config(nodes: int, i: int, seed: int, alpha: float | None) -> dict[str, int | float | str | bool]:
    """Node `i`'s node config, as Flower's simulation sets it (partition-id, num-partitions),
    with the split FedLedger's bundled datasets deal (IID or Dirichlet(alpha), from the seed)."""
    node_config: dict[str, int | float | str | bool] = {"partition-id": i, "num-partitions": nodes, "partition-seed": seed}
    if alpha is not None:
        node_config["partition-alpha"] = alpha
    return node_config


def _fetch_for(
    local: EmbeddedStorage, everyone: list[EmbeddedStorage], cid: str, holders: Sequence[str] = (),
    max_bytes: int | None = None,
) -> bytes:
    return local_or_peers(cid, local, everyone, max_bytes)
