"""What `fedledger node run` checks before it registers or spends gas (#17).

Each check that fails is one line naming what is wrong and what to do, and the daemon exits
with status 1: the chain answers and holds the deployment's contract, the node's training
data reads and fits the model of every joined task whose spec its own store holds, and the
account holds its stake (if it still has to register) plus gas. A fresh node cannot fetch a
spec from its peers before it registers (a block server answers registered peers only), so
otherwise its data is checked against a task's model when the daemon first judges the task
(loop.py), before it acts in it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from eth_account.signers.local import LocalAccount

from node.chain.accounts import TESTNET_CHAIN_ID
from node.chain.client import FedLedgerClient
from node.chain.deployment import Deployment
from node.chain.providers import deployed_contract
from node.daemon.config import NodeConfig
from node.errors import ChainError, ConfigError, FedLedgerError
from node.taskspec import TaskSpec
from node.training.data import Dataset
from node.training.localdata import load_local_data
from node.units import ETHER

log = logging.getLogger("fedledger.daemon")

# Gas a node keeps ETH for beyond its stake: registering (~0.3 M gas) and its first rounds'
# commits, reveals, votes and proposals, at the chain's current gas price.
GAS_RESERVE = 3_000_000


class DataMismatch(FedLedgerError):
    """Raised when the node's training data does not fit the model of a task it joined."""


@dataclass(frozen=True)
class Chain:
    client: FedLedgerClient
    deployment: Deployment
    deployed_at: int  # block of the deployment: log scans start there


def connect(rpc: str, deployment_path: Path, account: LocalAccount | None) -> Chain:
    """The deployment's contract on the chain at `rpc`: reachable, the same chain, code there."""
    deployment = Deployment.load(deployment_path)
    w3, address = deployed_contract(rpc, deployment, deployment_path)
    # web3 validates every call and transaction against the chain ID, which it asks the node
    # for each time: a third of a view's CPU here, and of the protocol loop's (measured). The
    # ID was just checked and does not change under a running daemon, so keep it.
    w3.provider.cacheable_requests = {"eth_chainId"}
    w3.provider.cache_allowed_requests = True
    return Chain(FedLedgerClient(w3, address, account), deployment, deployment.block_number or 0)


def eth(wei: int) -> str:
    """Wei as ETH, exact, without trailing zeros."""
    text = format(Decimal(wei) / ETHER, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def required_balance(client: FedLedgerClient, address: str) -> tuple[int, int]:
    """(stake still to put up, gas reserve) in wei for the node at `address` to run."""
    registered = client.node_info(address)[0]
    stake = 0 if registered else client.min_stake()
    # At what a transaction may pay per gas, rounded up to 0.0001 ETH: an estimate, said in a
    # readable number.
    gas = GAS_RESERVE * client.gas_price_cap()
    return stake, -(-gas // 10**14) * 10**14


def check_balance(client: FedLedgerClient, address: str, config_path: Path) -> None:
    """ChainError unless `address` holds its stake (when unregistered) plus the gas reserve."""
    stake, gas = required_balance(client, address)
    balance = client.balance_of(address)
    if balance >= stake + gas:
        return
    missing = stake + gas - balance
    what = f"{eth(stake)} ETH of stake to register and ~{eth(gas)} ETH of gas" if stake else f"~{eth(gas)} ETH of gas"
    if client.chain_id() == TESTNET_CHAIN_ID:
        how = f"on this testnet: fedledger node fund --config {config_path} --dev-account 0"
    else:
        how = f"send at least {eth(missing)} ETH to {address}"
    raise ChainError(f"{address} holds {eth(balance)} ETH but needs {what}: {eth(missing)} ETH missing; {how}")


def load_data(config: NodeConfig) -> Dataset | None:
    """The node's [data] file, read in full now: a bad file stops the daemon at start-up, not
    hours later when the node is first drawn (each task's app then fits it to its model)."""
    if config.data_path is None:
        return None
    return load_local_data(config.data_path, config.data_format)


def describe_data(data: Dataset | None, config: NodeConfig) -> str:
    if data is None:
        return f"loaded by the app {config.app_ref} from [app.node_config]"
    shape = "x".join(map(str, data.x.shape[1:]))
    return f"{config.data_path}, {len(data)} samples of {shape} values, labels {int(data.y.min())}-{int(data.y.max())}"


def check_joined(client: FedLedgerClient, config: NodeConfig) -> None:
    """Joined tasks as far as they can be seen before registering: one that does not exist yet
    is waited for (a warning); one whose spec this node's own store holds must fit its app and data."""
    count = client.task_count()
    for task in config.policy.join:
        if task > count:
            log.warning("task %d is in [tasks] join but does not exist yet (%d tasks); waiting for it", task, count)
            continue
        try:
            info = client.task_info(task)
        except (FedLedgerError, ValueError, TypeError, KeyError):  # a hostile task's record: judged, with one
            continue  # line, by the protocol loop, which skips it and goes on with the other tasks
        spec = None if info.finished else local_spec(config, info.spec_cid)
        if spec is None:
            continue
        if app_problem(config, spec) is None and (why := data_misfit(config, spec)) is not None:
            raise DataMismatch(f"task {task} cannot use this node's data: {why}")


def check_app(config: NodeConfig) -> None:
    """The node's own [app] ref imports and names an app: a typo or a broken module stops the
    daemon at start-up with one line, not at the first task that needs it."""
    if config.app_ref is None:
        return
    from node.apps.resolve import app_at

    try:
        app_at(config.app_ref, config.path.parent)
    except ConfigError as exc:
        raise ConfigError(f"{config.path} [app] ref: {exc}") from None


def app_problem(config: NodeConfig, spec: TaskSpec) -> str | None:
    """Why this node has no app for `spec` (the task's fault or a missing [app] ref: the task is
    refused, the daemon goes on); None: it has one."""
    from node.apps.resolve import app_of

    try:
        app_of(spec, config.app_ref, config.path.parent, trust_spec=False)
    except ConfigError as exc:
        return str(exc)
    return None


def data_misfit(config: NodeConfig, spec: TaskSpec) -> str | None:
    """Why this node's app and data cannot train `spec`'s task: the data does not fit the app's
    model, or the app's model is not the tensors the task pins (None: they can). A task whose
    app the node lacks is judged by `app_problem` first."""
    from node.apps.native import FedApp, users_code
    from node.apps.resolve import app_misfit, app_of

    try:
        app = app_of(spec, config.app_ref, config.path.parent, trust_spec=False)
        if isinstance(app, FedApp):
            with users_code(f"app {config.app_ref or spec.app or spec.model}", "load_data"):
                app.load_data(config.node_config())
        # A Flower NumPyClient is asked for its parameters; a Message-API app cannot be asked
        # without training, so its first round's reply is checked (a mismatch: a logged refusal).
        return app_misfit(app, spec, config.node_config(), config.app_ref)
    except ConfigError as exc:
        return str(exc)


def cause(group: BaseExceptionGroup) -> BaseException:
    """The error that stopped the daemon: the first expected one (FedLedgerError: a one-line
    message), else the first Ctrl-C, else the group itself (a bug keeps its traceback)."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    for kind in (FedLedgerError, KeyboardInterrupt):
        for leaf in leaves:
            if isinstance(leaf, kind):
                return leaf
    return group


def unserved(owner: str, owner_is_node: bool, exc: Exception) -> str:
    """What to do about a task whose spec or initial model no registered node serves."""
    who = "a registered node that does not serve them" if owner_is_node else "not a registered node"
    return (
        f"waits: no registered node serves its spec or initial model; its creator {owner} is {who}, so the "
        f"task was created from a store no running node serves. Create tasks with `fedledger task create "
        f"--repo NODE_DIR/ipfs` (a running node's store), or run a node on the store this one was created "
        f"from [{str(exc)[:160]}]"
    )


def local_spec(config: NodeConfig, cid: str) -> TaskSpec | None:
    """The task's spec if this node's own blockstore holds it (a node learns it from peers only
    once registered); None otherwise, or if it does not parse (the daemon will skip the task)."""
    if config.storage_backend != "embedded" or not (config.data_dir / "ipfs").is_dir():
        return None
    from node.storage import EmbeddedStorage
    from node.taskspec import SPEC_MAX_BYTES

    try:
        store = EmbeddedStorage(config.data_dir / "ipfs")
        return TaskSpec.from_bytes(store.get(cid, max_bytes=SPEC_MAX_BYTES)) if store.has(cid) else None
    except (FedLedgerError, ValueError):
        return None
