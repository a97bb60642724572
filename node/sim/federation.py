"""A federation of real node daemons on one machine: `fedledger simulate --chain anvil`.

Each node is what an operator runs (README, "Running nodes for real"): a directory made the
way `fedledger node init` makes one (node.toml, encrypted keystore, libp2p identity), a
private data shard, its own blockstore and journal, and its own `fedledger node run` process.
The daemons share nothing but the chain (an anvil child process) and libp2p on loopback.

This module sets such a federation up (deploy, node directories, funding, registration, the
task), starts and stops the daemons without ever leaving one behind, and reads the run back
from the chain into the report the in-process simulation writes (node/sim/record.py). The
multi-process tests and scripts/bench_round.py build their federations here too.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property, partial
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import requests
from web3 import Web3
from web3.exceptions import Web3Exception

from node.chain import Deployment, FedLedgerClient, deploy_fedledger, dev_account
from node.chain.anvil import Anvil
from node.chain.sends import send_ether
from node.chain.providers import rpc_web3
from node.children import parent_death_signal
from node.daemon.init import init_node_dir
from node.daemon.policy import TaskPolicy
from node.errors import ChainError, ConfigError, FedLedgerError, StorageError
from node.keys import load_keystore
from node.report import SimulationReport
from node.protocol import node_seed
from node.reproducible import PINNED_KERNELS
from node.sim.attacks import protocol_colluders, write_behaviour_file
from node.sim.record import ChainRecorder, rounds_done
from node.sim.evaluation import Evaluator
from node.sim.simulate import (
    SimulationConfig, central_test, federation_params, node_roles, partition_config, publish_task, sim_node_config,
)  # fmt: skip
from node.apps.native import Dataset, FedApp
from node.apps.refs import split_ref
from node.apps.resolve import app_of, initial_model, node_trainer
from node.sim.record import describe
from node.storage import EmbeddedStorage
from node.taskspec import TaskSpec
from node.units import ETHER

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # holds the `node` package the daemons run



class DaemonError(FedLedgerError):
    """Raised when a node daemon exits before its task is finished, or a round outlasts its timeout."""


Progress = Callable[[str], None]


def _quiet(line: str) -> None:
    pass


@dataclass(frozen=True)
class FederationConfig:
    nodes: int
    rounds: int
    spec: TaskSpec = field(default_factory=lambda: TaskSpec(epochs=2))  # model, rule, local training
    data_seed: int = 3  # the digits train/test split and the shards dealt from it
    alpha: float | None = None  # Dirichlet label skew of the shards; None = IID
    model_seed: int = 0  # the initial model's weights
    reward_wei: int = 10 * ETHER
    stake_wei: int = ETHER
    funding_wei: int = 10 * ETHER  # sent to every fresh node key: its stake plus gas
    commit_timeout: int = 3600  # seconds a round waits for a seated member that never commits
    reveal_timeout: int = 3600
    propose_timeout: int = 3600  # seconds before anyone may take over a silent proposer
    attest_timeout: int = 3600
    proposer_share_bps: int = 500
    attester_share_bps: int = 500
    # The nodes' keystore password; it reaches the daemons in FEDLEDGER_PASSWORD, never a file.
    password: str = field(default_factory=lambda: secrets.token_hex(16), repr=False)
    log_level: str = "info"  # the daemons' --log-level
    poll_interval: float = 0.2  # the daemons' chain polling when idle; a local chain answers fast
    # Node i's training seed is node_seed(run_seed, i), as in the in-process simulation; None: random.
    run_seed: int | None = None
    roles: tuple[str, ...] = ()  # node i plays roles[i] (node/sim/attacks.py); missing: honest
    # The round-0 model (simulate's --model REF or --initial-model); None: the app's own under model_seed.
    initial: Mapping[str, np.ndarray] | None = field(default=None, repr=False)


@dataclass
class NodeDaemon:
    """One node's directory and, once started, its `fedledger node run` process."""

    index: int
    directory: Path
    address: str
    log: Path  # the daemon's stdout and stderr, appended across restarts
    password: str = field(repr=False)
    log_level: str = "info"
    num_samples: int = 0
    role: str = "honest"
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    killed: bool = False  # the last process was SIGKILLed on purpose (kill9)
    # Runs the daemon under this command, e.g. ("ip", "netns", "exec", NAME) (node/sim/netns.py).
    prefix: tuple[str, ...] = ()

    @property
    def config(self) -> Path:
        return self.directory / "node.toml"

    @property
    def behaviour(self) -> Path:
        """The attack this node plays, for `node run --behaviour` (written only for attackers)."""
        return self.directory / "behaviour.json"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def command(self) -> list[str]:
        return [
            *self.prefix, sys.executable, "-m", "node.cli", "node", "run", "--config", str(self.config),
            "--exit-when-done", "--log-level", self.log_level,
            *(["--behaviour", str(self.behaviour)] if self.role != "honest" else []),
        ]  # fmt: skip

    def start(self, extra_env: dict[str, str] | None = None) -> None:
        self.starts += 1
        # The simulation's training kernels (node/reproducible.py), so daemons train as in-process nodes do.
        env = {**os.environ, **PINNED_KERNELS, "FEDLEDGER_PASSWORD": self.password, **(extra_env or {})}
        if (PROJECT_ROOT / "pyproject.toml").is_file():  # a source checkout, maybe not installed
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
        with open(self.log, "a") as log:
            log.write(f"--- start {self.starts}\n")
            self.killed = False
            log.flush()
            self.proc = subprocess.Popen(
                self.command(), env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=parent_death_signal(),
            )  # fmt: skip

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self) -> None:
        """Ask the daemon to stop (SIGTERM: it finishes its current step and exits cleanly)."""
        if self.running():
            assert self.proc is not None
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass

    def kill9(self) -> None:
        """SIGKILL, as a crash would; a federation's `wait` does not count this death as a failure."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.killed = True

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout` s; returns the exit status (None: never started)."""
        if self.proc is None:
            return None
        self.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 20) -> list[str]:
        return [line for line in self.text().splitlines() if line.strip()][-lines:]


@dataclass
class Federation:
    root: Path
    rpc: str
    deployment: Path
    nodes: list[NodeDaemon] = field(default_factory=list)
    task: int = 0
    owner: str = ""  # the task owner (dev account 0), which also deployed and funded
    deployed_at: int = 0  # block of the deployment
    task_block: int = 0  # block of the task's creation: round 1 starts after it
    initial_model_cid: str = ""  # in node 0's blockstore, which serves it to the others

    @cached_property
    def client(self) -> FedLedgerClient:
        return FedLedgerClient(Web3(Web3.HTTPProvider(self.rpc)), Deployment.load(self.deployment).contracts["FedLedger"])

    def start(self, extra_env: dict[str, str] | None = None) -> None:
        for n in self.nodes:
            n.start(extra_env)

    def dead(self) -> NodeDaemon | None:
        """The first daemon that exited with a failure status, if any (one killed on purpose is not)."""
        for n in self.nodes:
            if n.proc is not None and not n.killed and n.proc.poll() not in (None, 0):
                return n
        return None

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.5) -> None:
        """Poll `predicate` until true; DaemonError (with the logs' tails as notes) when a daemon
        fails, when every started daemon has exited without it, or after `timeout` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return
            except (requests.Timeout, requests.ConnectionError):
                pass  # the chain did not answer this poll: ask again until the deadline
            node = self.dead()
            if node is not None:
                assert node.proc is not None
                last, rc = node.tail(1), node.proc.returncode
                how = f"exited with status {rc}" if rc > 0 else f"was killed by {signal.Signals(-rc).name}"
                exc = DaemonError(
                    f"node {node.index} (pid {node.pid}) {how} while waiting for {what}: "
                    f"{last[0] if last else 'no output'}"
                )
                exc.add_note("\n".join([f"last lines of node {node.index}'s log:", *node.tail()]))
                raise exc
            started = [n for n in self.nodes if n.proc is not None]
            if started and not any(n.running() for n in started) and not predicate():
                raise DaemonError(f"every daemon exited while waiting for {what}")
            time.sleep(interval)
        exc = DaemonError(f"timed out after {timeout:.0f} s waiting for {what}")
        exc.add_note("\n".join(f"== node {n.index} ({n.log})\n" + "\n".join(n.tail()) for n in self.nodes))
        raise exc

    def stop_all(self, timeout: float = 20.0) -> None:
        """Stop every daemon: SIGTERM to all at once (they shut down in parallel), then wait."""
        for n in self.nodes:
            n.terminate()
        for n in self.nodes:
            n.stop(timeout)


_STAKE_LINE = 'max_stake_at_risk = "1"'


def _edit(text: str, old: str, new: str, path: Path) -> str:
    if old not in text:
        raise ConfigError(f"{path}: expected {old!r} in the node.toml template")
    return text.replace(old, new, 1)


def _data_of(app: FedApp, node_config: dict[str, Any]) -> tuple[Dataset, Dataset]:
    try:
        return app.load_data(node_config)
    except ValueError as exc:
        raise ConfigError(f"cannot deal the data to {node_config['num-partitions']} nodes: {exc}") from None


def _app_table(text: str, spec: TaskSpec, node_config: dict[str, Any], path: Path) -> str:
    """node.toml with [app] ref (the spec's, made absolute) and the node's [app.node_config],
    in place of [data]."""
    assert spec.app is not None
    where, attr = split_ref(spec.app)
    ref = f"{Path(where).resolve()}:{attr}" if where.endswith(".py") else spec.app
    values = "\n".join(f"{k} = {json.dumps(v)}" for k, v in node_config.items())
    start = text.index("[data]")
    end = text.index("[status]")
    return text[:start] + f"[app]\nref = {json.dumps(ref)}\n\n[app.node_config]\n{values}\n\n" + text[end:]


def build_federation(root: str | Path, rpc: str, config: FederationConfig, progress: Progress = _quiet) -> Federation:
    """Deploy FedLedger on the chain at `rpc`, make `config.nodes` node directories under `root`
    (each with a shard of the digits training split as data.npz), fund and register every node,
    then create the task (node 0 holds its initial model and spec). Starts nothing.

    Nodes are registered before the task exists and before any daemon runs, with their real
    peer ids, so the first committee can seat every one of them; each daemon adds its listen
    addresses when it starts."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    spec = config.spec
    w3 = rpc_web3(rpc)
    owner = dev_account(0)
    progress(f"deploying FedLedger on {rpc}")
    ledger, receipt = deploy_fedledger(w3, owner, config.stake_wei)
    deployment = Deployment(int(w3.eth.chain_id), rpc, {"FedLedger": ledger.address}, int(receipt["blockNumber"]))
    dep_path = root / "deployment.json"
    deployment.save(dep_path)
    fed = Federation(root, rpc, dep_path, owner=owner.address, deployed_at=int(receipt["blockNumber"]))

    app = app_of(spec)
    for i in range(config.nodes):
        made = init_node_dir(root / f"node{i}", config.password, rpc=rpc)
        node_config = partition_config(config.nodes, i, config.data_seed, config.alpha)
        if isinstance(app, FedApp):  # the node's shard and held-out part, as an operator's files
            shard, held_out = _data_of(app, node_config)
            np.savez(made.directory / "data.npz", x=shard.x, y=shard.y)
            np.savez(made.directory / "test.npz", x=held_out.x, y=held_out.y)
            text = _edit(made.config.read_text(), '# test = "test.npz"', 'test = "test.npz"', made.config)
        else:  # a Flower app reads its partition from the node config, as under Flower's simulation
            shard, text = None, _app_table(made.config.read_text(), spec, node_config, made.config)
        made.config.write_text(text)
        send_ether(w3, owner, made.address, config.funding_wei)
        account = load_keystore(str(made.keystore), config.password)
        ledger.as_account(account).register(made.peer_id, [], config.stake_wei)
        role = config.roles[i] if i < len(config.roles) else "honest"
        node = NodeDaemon(i, made.directory, made.address, root / f"node{i}.log", config.password,
                          config.log_level, num_samples=0 if shard is None else len(shard), role=role)  # fmt: skip
        fed.nodes.append(node)
        progress(f"node {i}: {made.address}, {node.num_samples or 'its app'}'s samples, directory {made.directory}")

    params = federation_params(
        config.nodes, config.rounds, spec, config.stake_wei, config.proposer_share_bps, config.attester_share_bps,
        commit_timeout=config.commit_timeout, reveal_timeout=config.reveal_timeout,
        propose_timeout=config.propose_timeout, attest_timeout=config.attest_timeout,
    )  # fmt: skip
    store = EmbeddedStorage(root / "node0" / "ipfs")  # node 0 serves the initial model and the spec
    fed.task, fed.initial_model_cid, receipt = publish_task(
        ledger, store, spec, params, config.model_seed, config.reward_wei, config.initial
    )
    fed.task_block = int(receipt["blockNumber"])
    for node in fed.nodes:
        text = node.config.read_text()
        text = _edit(text, 'deployment = "deployment.json"', 'deployment = "../deployment.json"', node.config)
        text = _edit(text, "join = []", f"join = [{fed.task}]", node.config)  # the operator joins its task
        text = _edit(text, _STAKE_LINE, f'max_stake_at_risk = "{Decimal(config.stake_wei) / ETHER}"', node.config)
        for key, value in (("max_epochs", spec.epochs), ("max_batch_size", spec.batch_size),
                           ("max_update_bytes", spec.max_update_bytes)):  # fmt: skip
            default = getattr(TaskPolicy(), key)
            if value > default:
                text = _edit(text, f"{key} = {default}", f"{key} = {value}", node.config)
        text = _edit(text, "poll_interval = 1.0", f"poll_interval = {config.poll_interval}", node.config)
        if config.run_seed is not None:
            text = _edit(text, "# seed = 1234", f"seed = {node_seed(config.run_seed, node.index)}", node.config)
        node.config.write_text(text)
    _write_behaviours(fed, config)
    return fed


def _write_behaviours(fed: Federation, config: FederationConfig) -> None:
    """Each attacker's behaviour file: its role, the protocol colluders it vouches for, and its coalition
    (the other nodes of its role, whose data and seeds it shares)."""
    colluders = protocol_colluders([n.address for n in fed.nodes], [n.role for n in fed.nodes])
    for node in fed.nodes:
        if node.role == "honest":
            continue
        team = [
            {"address": m.address, "data": f"../node{m.index}/data.npz", "seed": node_seed(config.run_seed, m.index)}
            for m in fed.nodes
            if m.role == node.role and m is not node and config.run_seed is not None
        ]
        write_behaviour_file(node.behaviour, node.role, colluders, team)


def _evaluator(fed: Federation, spec: TaskSpec, config: SimulationConfig) -> Evaluator:
    """The report's evaluation of a model: each node's app on that node's held-out data, as its
    daemon evaluates it (read here from the node's directory), and the app's central test split."""
    from node.daemon.config import load_config

    trainers: list[Any] = []

    def evaluators() -> list[Any]:
        if not trainers:
            for n in fed.nodes:
                cfg = load_config(n.config)
                trainers.append(node_trainer(spec, cfg.node_config(), cfg.app_ref, cfg.path.parent))
        return [t.evaluate for t in trainers]

    return Evaluator(evaluators, central_test(spec, partition_config(config.nodes, 0, config.seed, config.alpha)))


# -- `simulate --chain anvil` ------------------------------------------------------------------


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM (`kill`, a service manager) unwinds like Ctrl-C, so the children are stopped on
    the way out instead of orphaned by Python's default of dying on the spot."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


APP_FAILED = "the app failed: "  # ProtocolNode's line when a node sits a round out (node/protocol/node.py)


def _app_failed(fed: Federation) -> bool:
    """ConfigError with a daemon's line if its app failed to train a round: the simulation's nodes
    run one app, and the round would wait out its commit timeout (an hour) for the node."""
    for n in fed.nodes:
        text = n.text()
        if APP_FAILED in text:
            line = next(line for line in text.splitlines() if APP_FAILED in line)
            raise ConfigError(f"node {n.index}: {line.split(': ', 1)[-1].strip()}")
    return False


def _model_bytes(stores: list[EmbeddedStorage], cid: str) -> bytes:
    """The global model from whichever daemon's blockstore holds it (its proposer always does)."""
    for store in stores:
        try:
            if store.has(cid):
                return store.get(cid)
        except StorageError:
            continue
    raise DaemonError(f"no node's blockstore holds the global model {cid}")


def run_daemon_simulation(
    config: SimulationConfig,
    workdir: str | Path | None = None,
    progress: Progress = _quiet,
    round_timeout: float = 600.0,
) -> SimulationReport:
    """`simulate --chain anvil`: anvil, a deployment and `config.nodes` daemon processes; waits
    for the task to finish, stops everything and reports from the chain.

    Every node's directory and log go under `workdir` (default: a temporary directory removed
    at the end). DaemonError when a daemon dies (its log's last lines go to `progress` first)
    or a round takes longer than `round_timeout` s. Whatever happens, Ctrl-C and SIGTERM
    included, no daemon and no anvil outlives the call."""
    config.validate()
    if config.chain != "anvil":
        raise ConfigError(f"daemons run on their own anvil (--chain anvil), not on the {config.chain} chain")
    spec = config.spec
    # The app imports and gives a model before anvil starts, as in the in-process simulation.
    initial = initial_model(spec, config.seed, model_ref=config.model_ref, initial_file=config.initial_model,
                            node_config=sim_node_config(config, 0))  # fmt: skip
    with ExitStack() as stack:
        stack.enter_context(_sigterm_unwinds())
        if workdir is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fedledger-sim-")))
        else:
            root = Path(workdir)
            if (root / "node0").exists() or (root / "deployment.json").exists():
                raise ConfigError(f"{root} already holds a federation; give an empty or new --workdir")
        anvil = stack.enter_context(Anvil(accounts=1))
        assert anvil.process is not None
        progress(f"anvil on {anvil.url} (pid {anvil.process.pid})")
        fed_config = FederationConfig(
            nodes=config.nodes,
            rounds=config.rounds,
            spec=spec,
            data_seed=config.seed,
            alpha=config.alpha,
            model_seed=config.seed,
            reward_wei=config.reward_wei,
            stake_wei=config.stake_wei,
            proposer_share_bps=config.proposer_share_bps,
            attester_share_bps=config.attester_share_bps,
            run_seed=config.seed,
            roles=tuple(node_roles(config)),
            initial=initial,
        )
        fed = build_federation(root, anvil.url, fed_config, progress)
        stack.callback(fed.stop_all)  # runs before anvil stops: the daemons leave while their chain is up
        stores = [EmbeddedStorage(n.directory / "ipfs", fsync=False) for n in fed.nodes]
        recorder = ChainRecorder(
            fed.client, fed.task, [n.address for n in fed.nodes], spec, _evaluator(fed, spec, config),
            model_bytes=partial(_model_bytes, stores), start_block=fed.task_block,
            total_rounds=config.rounds, progress=progress,
        )  # fmt: skip
        initial = recorder.evaluation_of(fed.initial_model_cid)
        progress(f"task {fed.task}: {config.nodes} daemons x {config.rounds} rounds, rule {spec.rule}")
        progress(f"round 0: initial model {fed.initial_model_cid}, {describe(initial)}")

        fed.start()
        for n in fed.nodes:
            progress(f"node {n.index}: daemon pid {n.pid}, log {n.log}")
        try:
            while recorder.catch_up() < config.rounds:
                done = len(recorder.records)
                fed.wait(lambda: _app_failed(fed) or rounds_done(fed.client, fed.task) > done, round_timeout,
                         f"round {done + 1} to finish", 0.25)  # fmt: skip
            nodes = recorder.node_records([n.role for n in fed.nodes], [n.num_samples for n in fed.nodes])
            chain_id = fed.client.chain_id()
        except DaemonError as exc:
            for note in getattr(exc, "__notes__", []):
                progress(note)
            raise
        except (requests.RequestException, Web3Exception) as exc:
            raise ChainError(f"anvil at {anvil.url} stopped answering: {type(exc).__name__}") from None
        # With --exit-when-done the daemons leave on their own once they see the task finished.
        deadline = time.monotonic() + 30
        while any(n.running() for n in fed.nodes) and time.monotonic() < deadline:
            time.sleep(0.1)
        return SimulationReport(
            config={**config.to_json(), "daemons": True},
            initial_accuracy=initial.accuracy,
            initial_metrics=initial.metrics,
            rounds=recorder.records,
            nodes=nodes,
            chain_id=chain_id,
            rpc=None,  # the chain stops with the simulation
            contracts={"FedLedger": fed.client.address},
            block_number=fed.deployed_at,
            task_id=fed.task,
            owner=fed.owner,
        )
