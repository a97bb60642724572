"""The `fedledger` argument parser: every command, its options and its help (SPEC §9)."""

from __future__ import annotations

import argparse

import importlib
from typing import Callable, NoReturn

from node.cli.args import _eth_to_wei, _fraction_to_wad, _non_negative_int, _percent_to_bps, _positive_int
from node.units import WAD


def _lazy(ref: str) -> Callable[[argparse.Namespace], int]:
    """The command handler `module:function`, imported only when that command runs.

    Building the parser must stay cheap (`fedledger --help` in well under a second), so it
    names handlers instead of importing them: torch, web3 and libp2p load only in the
    commands that use them.
    """
    module, _, name = ref.partition(":")

    def run(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(module), name)(args)

    run.__qualname__ = run.__name__ = name
    return run


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other failure of the CLI:
    the error and where to read more, exit status 2. The usage synopsis stays in `--help`."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _add_rule_options(p: argparse.ArgumentParser) -> None:
    """Rule options that go into a task spec (defaults: trim 0.2; Krum f = (K-3)//2, m = K-f)."""
    p.add_argument("--trim", type=float, metavar="BETA", help="trimmed-mean: fraction cut from each end")
    p.add_argument("--f", type=int, metavar="F", help="multi-krum: assumed Byzantine updates")
    p.add_argument("--m", type=int, metavar="M", help="multi-krum: updates averaged")
    p.add_argument("--clip", type=float, metavar="NORM", help="clip every update to this L2 norm first")


def _add_app_options(p: argparse.ArgumentParser, required_model: bool = False) -> None:
    """What the task trains (#15): the app, its initial model, its run config, local training."""
    p.add_argument("--app", metavar="REF", help="the app: a built-in one (digits-mlp, mnist-cnn, resnet18) or your "
                   "code, path/to/file.py:attr or package.module:attr, holding a Flower ClientApp or a FedApp "
                   "(default digits-mlp)")  # fmt: skip
    p.add_argument("--model", metavar="REF", help="the initial model: a built-in app's name, or REF to a callable "
                   "that returns an nn.Module, built under --seed (default: the app's own model)")  # fmt: skip
    p.add_argument("--initial-model", metavar="FILE", help="the initial model as a .safetensors file, tensors named as "
                   "the state dict")  # fmt: skip
    p.add_argument("--run-config", metavar="'KEY=VALUE ...'", help="the app's context.run_config, as `flwr run` takes it")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="local minibatch size (task spec, default 32)")
    p.add_argument("--lr", type=float, default=0.05, help="local learning rate (task spec, default 0.05)")
    p.add_argument("--max-update-bytes", type=_positive_int, metavar="N",
                   help="largest update or model file the task accepts (task spec, default 64 MiB)")  # fmt: skip


def _add_signing(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keystore", metavar="FILE", help="encrypted eth-account keystore to sign with")
    p.add_argument("--password-file", metavar="FILE", help="file holding the keystore password")
    p.add_argument("--dev-account", type=int, metavar="N", help="account N of the testnet mnemonic (chain id 31337 only)")


def build_parser() -> argparse.ArgumentParser:
    from node import __version__
    from node.sim.kinds import KNOWN_KINDS
    from node.taskspec import TaskParams

    TASK_DEFAULTS = TaskParams()

    parser = _Parser(
        prog="fedledger", description="Blockchain-backed, decentralized federated learning node."
    )
    parser.add_argument("--version", action="version", version=f"fedledger {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "simulate",
        help="run a whole federation and report: in one process, or as one daemon per node (--chain anvil)",
        description="Run the whole protocol with many nodes on one machine and report. On the embedded chain "
        "(default) or an existing one (--rpc), every node runs inside this process. --chain anvil starts anvil "
        "and runs each node as its own `fedledger node run` daemon (own directory, keystore, libp2p host), "
        "then stops them all and reports from the chain.",
    )
    p.add_argument("--nodes", type=_positive_int, default=4, help="number of nodes (default 4)")
    p.add_argument("--malicious", type=int, default=0, help="how many of the nodes attack (default 0)")
    p.add_argument("--attack", metavar="KIND", help="what the malicious nodes do: " + ", ".join(sorted(KNOWN_KINDS))
                   + "; several run side by side with commas (sign-flip,gaussian: the malicious nodes take them in turn), "
                   "and one node runs a training attack with bad-proposer joined by + (label-flip+bad-proposer); "
                   "in-process and as daemons alike")  # fmt: skip
    p.add_argument("--rounds", type=_positive_int, default=3, help="training rounds (default 3)")
    p.add_argument("--rule", default="fedavg", help="aggregation rule (default fedavg)")
    p.add_argument("--chain", choices=["embedded", "anvil"], default="embedded",
                   help="embedded: py-evm in this process (default); anvil: a fresh anvil and one daemon process per node")  # fmt: skip
    p.add_argument("--in-process", action="store_true", help="with --chain anvil: run the nodes inside this process, not as daemons")
    p.add_argument("--rpc", metavar="URL", help="use an existing chain, e.g. one from `fedledger testnet` (nodes in-process)")
    p.add_argument("--seed", type=int, default=7, help="seed for data split, init and training (default 7)")
    p.add_argument("--alpha", type=float, help="Dirichlet label skew across nodes (default: IID)")
    p.add_argument("--epochs", type=_positive_int, default=5, help="local epochs per round (default 5)")
    _add_app_options(p)
    _add_rule_options(p)
    p.add_argument("--workdir", metavar="DIR", help="keep the nodes' directories (blockstores; with daemons also "
                   "node.toml, keystore, data shard and log) in DIR (default: a temporary directory)")  # fmt: skip
    p.add_argument("--round-timeout", type=_positive_int, default=600, metavar="SECONDS",
                   help="daemons: give up when a round takes longer than this (default 600)")  # fmt: skip
    p.add_argument("--report", metavar="DIR", help="write summary.json and PNG plots to DIR")
    p.add_argument("--json", action="store_true", help="print summary.json instead of tables")
    p.set_defaults(func=_lazy("node.cli.local:cmd_simulate"))

    p = sub.add_parser("testnet", help="run a local anvil chain on loopback")
    p.add_argument("--port", type=int, default=8545)
    p.add_argument("--accounts", type=_positive_int, default=10)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    p.set_defaults(func=_lazy("node.cli.chain:cmd_testnet"))

    p = sub.add_parser("deploy", help="deploy the contracts and write deployment.json")
    p.add_argument("--rpc", required=True, metavar="URL")
    p.add_argument("--out", default="deployment.json", metavar="FILE")
    p.add_argument("--min-stake", type=_eth_to_wei, default=WAD, metavar="ETH", help="minimum node stake (default 1)")
    _add_signing(p)
    p.set_defaults(func=_lazy("node.cli.chain:cmd_deploy"))

    p = sub.add_parser("task", help="create and inspect tasks")
    tsub = p.add_subparsers(dest="task_command", metavar="ACTION", required=True)
    c = tsub.add_parser("create", help="create a task and deposit its reward pool; prints the task id")
    c.add_argument("--deployment", required=True, metavar="FILE")
    c.add_argument("--rpc", metavar="URL", help="override the deployment's RPC URL")
    c.add_argument("--rounds", required=True, type=_positive_int)
    c.add_argument("--committee", required=True, type=_positive_int, metavar="K", help="committee size per round (<= 64)")
    c.add_argument("--rule", required=True, help="aggregation rule: fedavg, median, trimmed-mean, multi-krum")
    c.add_argument("--reward", required=True, type=_eth_to_wei, metavar="ETH", help="reward pool deposited now")
    c.add_argument("--epochs", type=_positive_int, default=5, help="local epochs per round (task spec)")
    c.add_argument("--max-samples", type=_positive_int, default=2**20, help="per-update sample cap (task spec)")
    _add_app_options(c)
    _add_rule_options(c)
    c.add_argument("--seed", type=int, default=0, help="seed of the initial model's weights")
    c.add_argument("--min-stake", type=_eth_to_wei, metavar="ETH", help="stake for a committee seat (default: the deployment's minimum)")
    c.add_argument("--threshold", type=_fraction_to_wad, default=TASK_DEFAULTS.reputation_threshold_wad, metavar="X",
                   help=f"reputation threshold in [0, 1] (default {TASK_DEFAULTS.reputation_threshold_wad / WAD:g})")
    c.add_argument("--alpha", type=_fraction_to_wad, default=TASK_DEFAULTS.alpha_wad, metavar="X",
                   help=f"reputation EMA weight in [0, 1] (default {TASK_DEFAULTS.alpha_wad / WAD:g})")
    c.add_argument("--proposer-share", type=_percent_to_bps, default=500, metavar="PCT", help="percent of each round to the proposer (default 5)")
    c.add_argument("--attester-share", type=_percent_to_bps, default=500, metavar="PCT", help="percent of each round to agreeing attesters (default 5)")
    for phase in ("commit", "reveal", "propose", "attest"):
        c.add_argument(f"--{phase}-timeout", type=_positive_int, default=3600, metavar="SECONDS", help=f"{phase} phase timeout (default 3600)")
    c.add_argument("--repo", metavar="DIR", help="blockstore for the initial model and spec (default $FEDLEDGER_HOME/ipfs)")
    c.add_argument("--json", action="store_true", help="print the task id, CIDs and block as JSON")
    _add_signing(c)
    c.set_defaults(func=_lazy("node.cli.chain:cmd_task_create"))
    c = tsub.add_parser("list", help="every task: owner, rule, round, phase, committee size, reward pool, global model")
    c.add_argument("--deployment", required=True, metavar="FILE")
    c.add_argument("--rpc", metavar="URL", help="override the deployment's RPC URL")
    c.add_argument("--json", action="store_true", help="print a JSON list, one object per task (schema: docs/cli.md)")
    c.set_defaults(func=_lazy("node.cli.tasks:cmd_task_list"))
    c = tsub.add_parser("show", help="one task: its parameters, spec, progress and every round's global model")
    c.add_argument("--task", required=True, type=_positive_int)
    c.add_argument("--deployment", required=True, metavar="FILE")
    c.add_argument("--rpc", metavar="URL", help="override the deployment's RPC URL")
    c.add_argument("--repo", metavar="DIR", help="blockstore to read the spec from (default $FEDLEDGER_HOME/ipfs); "
                   "else the task owner's node supplies it")  # fmt: skip
    c.add_argument("--node", metavar="DIR", help="your registered node's data directory: its libp2p identity asks the "
                   "peers (they serve registered nodes only) and its blockstore is read and filled")  # fmt: skip
    c.add_argument("--json", action="store_true", help="print JSON (schema: docs/cli.md)")
    c.set_defaults(func=_lazy("node.cli.tasks:cmd_task_show"))

    p = sub.add_parser("reputation", help="read nodes' on-chain reputation")
    p.add_argument("addresses", nargs="+", metavar="ADDRESS")
    p.add_argument("--deployment", required=True, metavar="FILE")
    p.add_argument("--rpc", metavar="URL", help="override the deployment's RPC URL")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_lazy("node.cli.chain:cmd_reputation"))

    p = sub.add_parser("status", help="a task's round, phase and global model")
    p.add_argument("--deployment", required=True, metavar="FILE")
    p.add_argument("--task", required=True, type=_positive_int)
    p.add_argument("--rpc", metavar="URL")
    p.add_argument("--node", metavar="DIR", help="also evaluate the newest global model with the app of the node in DIR "
                   "(its node.toml) on its held-out data; the model comes from its blockstore or its peers")  # fmt: skip
    p.add_argument("--repo", metavar="DIR", help="with --node: another blockstore to read the model from")
    p.add_argument("--json", action="store_true", help="print JSON with the same keys in every phase (schema: docs/cli.md)")
    p.set_defaults(func=_lazy("node.cli.tasks:cmd_status"))

    p = sub.add_parser("verify", help="re-run a finalized round from its on-chain inputs and compare")
    p.add_argument("--deployment", required=True, metavar="FILE")
    p.add_argument("--task", required=True, type=_positive_int)
    p.add_argument("--round", required=True, type=_positive_int)
    p.add_argument("--rpc", metavar="URL")
    p.add_argument("--repo", metavar="DIR", help="blockstore to read and fill (default $FEDLEDGER_HOME/ipfs); peers supply the rest")
    p.add_argument("--node", metavar="DIR", help="your registered node's data directory: its libp2p identity asks the "
                   "peers (they serve registered nodes only) and its blockstore is read and filled")  # fmt: skip
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_lazy("node.cli.chain:cmd_verify"))

    p = sub.add_parser("model", help="a task's global models")
    msub = p.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    g = msub.add_parser("get", help="download a task's global model by its on-chain CID, verified, from any node that holds it")
    g.add_argument("--task", required=True, type=_positive_int)
    g.add_argument("--round", type=_non_negative_int, help="a finalized round (default: the latest; 0: the initial model)")
    g.add_argument("--out", required=True, metavar="FILE", help="where to write the model (safetensors)")
    g.add_argument("--deployment", required=True, metavar="FILE")
    g.add_argument("--rpc", metavar="URL")
    g.add_argument("--repo", metavar="DIR", help="blockstore to read and fill (default $FEDLEDGER_HOME/ipfs); peers supply the rest")
    g.add_argument("--max-bytes", type=_positive_int, metavar="N", help="refuse a model larger than N bytes (default 256 MiB)")
    g.add_argument("--node", metavar="DIR", help="your registered node's data directory: its libp2p identity asks the "
                   "peers (they serve registered nodes only) and its blockstore is read and filled")  # fmt: skip
    g.set_defaults(func=_lazy("node.cli.tasks:cmd_model_get"))

    p = sub.add_parser("rewards", help="rewards credited to an account")
    rsub = p.add_subparsers(dest="rewards_command", metavar="ACTION", required=True)
    w = rsub.add_parser("withdraw", help="withdraw pending rewards to the signing account")
    w.add_argument("--deployment", required=True, metavar="FILE")
    w.add_argument("--rpc", metavar="URL")
    _add_signing(w)
    w.set_defaults(func=_lazy("node.cli.chain:cmd_rewards_withdraw"))

    p = sub.add_parser("ipfs", help="content-addressed storage (the embedded blockstore or a kubo daemon)")
    isub = p.add_subparsers(dest="ipfs_command", metavar="ACTION", required=True)

    def _add_backend(q: argparse.ArgumentParser) -> None:
        q.add_argument("--backend", choices=["embedded", "kubo"], default="embedded", help="storage backend (default embedded)")
        q.add_argument("--api", metavar="MULTIADDR", help="kubo RPC API, e.g. /ip4/127.0.0.1/tcp/5001/http (--backend kubo)")

    a = isub.add_parser("add", help="add a file; prints its CID like `ipfs add -Q`")
    a.add_argument("file", metavar="FILE")
    a.add_argument("--cid-version", type=int, choices=[0, 1], default=1)
    a.add_argument("--only-hash", action="store_true", help="print the CID without storing anything")
    a.add_argument("--repo", metavar="DIR", help="blockstore directory (default $FEDLEDGER_HOME/ipfs)")
    _add_backend(a)
    a.set_defaults(func=_lazy("node.cli.local:cmd_ipfs_add"))
    g = isub.add_parser("get", help="write the bytes of a CID to a file")
    g.add_argument("cid", metavar="CID")
    g.add_argument("--out", required=True, metavar="FILE")
    g.add_argument("--repo", metavar="DIR")
    _add_backend(g)
    g.set_defaults(func=_lazy("node.cli.local:cmd_ipfs_get"))

    p = sub.add_parser("node", help="the node daemon: init a node directory, fund it (testnet), join tasks, run it, unstake")
    nsub = p.add_subparsers(dest="node_command", metavar="ACTION", required=True)
    n = nsub.add_parser("init", help="create a node directory: node.toml, an encrypted keystore")
    n.add_argument("--dir", required=True, metavar="DIR")
    n.add_argument("--rpc", metavar="URL", help="the chain the node will use (default: the deployment's, else http://127.0.0.1:8545)")
    n.add_argument("--password-file", metavar="FILE", help="keystore password (else FEDLEDGER_PASSWORD or a prompt)")
    n.add_argument("--deployment", metavar="FILE", help="deployment.json to point node.toml at (its RPC URL too, unless --rpc)")
    n.set_defaults(func=_lazy("node.cli.local:cmd_node_init"))
    n = nsub.add_parser("fund", help="testnet only: send ETH to the node's address from a development account")
    n.add_argument("--config", required=True, metavar="FILE", help="the node's node.toml (its keystore names the address)")
    n.add_argument("--dev-account", required=True, type=int, metavar="N", help="account N of the testnet mnemonic pays")
    n.add_argument("--amount", type=_eth_to_wei, metavar="ETH",
                   help="ETH to send (default: the stake and gas the daemon checks for at start-up, plus 1)")  # fmt: skip
    n.set_defaults(func=_lazy("node.cli.operator:cmd_node_fund"))
    n = nsub.add_parser("join", help="add a task to node.toml's [tasks] join, once it is checked against the node's limits")
    n.add_argument("--config", required=True, metavar="FILE", help="the node's node.toml (edited in place, comments kept)")
    n.add_argument("--task", required=True, type=_positive_int, metavar="T", help="the task id")
    n.set_defaults(func=_lazy("node.cli.operator:cmd_node_join"))
    n = nsub.add_parser("run", help="run the node daemon until stopped (SIGINT/SIGTERM)")
    n.add_argument("--config", required=True, metavar="FILE", help="node.toml (see `fedledger node init`)")
    n.add_argument("--password-file", metavar="FILE", help="keystore password (else the config's, FEDLEDGER_PASSWORD, or a prompt)")
    n.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="override the config's log level")
    n.add_argument("--exit-when-done", action="store_true", help="stop once every task in the config is finished")
    n.add_argument("--behaviour", metavar="FILE",
                   help="research only: play an attack described in FILE (what `simulate --chain anvil --attack` writes)")  # fmt: skip
    n.set_defaults(func=_lazy("node.cli.local:cmd_node_run"))
    n = nsub.add_parser("unstake", help="leave the active set and start the unstaking delay; --withdraw takes the stake back after it")
    n.add_argument("--deployment", required=True, metavar="FILE")
    n.add_argument("--rpc", metavar="URL", help="override the deployment's RPC URL")
    n.add_argument("--withdraw", action="store_true",
                   help="withdraw the stake (once the delay has passed and no slash can still land)")  # fmt: skip
    _add_signing(n)
    n.set_defaults(func=_lazy("node.cli.stake:cmd_node_unstake"))

    p = sub.add_parser("aggregate", help="aggregate update files offline; prints the CID and scores")
    p.add_argument("updates", nargs="+", metavar="UPDATE.safetensors")
    p.add_argument("--rule", required=True, help="fedavg, median, trimmed-mean or multi-krum")
    p.add_argument("--base", required=True, metavar="BASE.safetensors")
    p.add_argument("--out", required=True, metavar="OUT.safetensors")
    p.add_argument("--max-samples", type=_positive_int, help="cap each update's weight (fedavg, multi-krum)")
    _add_rule_options(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_lazy("node.cli.local:cmd_aggregate"))
    _name_leaves(parser)
    return parser


def commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every runnable command under `parser`, as its words: [("simulate",), ("task", "create"), ...]."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        return [prefix]
    return [leaf for name, sub in subparsers[0].choices.items() for leaf in commands(sub, prefix + (name,))]


def _name_leaves(parser: argparse.ArgumentParser) -> None:
    """Give every command its own parser as `args.command_parser`, so an unknown option is
    reported by the command it was given to (`fedledger task list: error: ...`), whose --help
    lists the options, and not by `fedledger`."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        parser.set_defaults(command_parser=parser)
    for action in subparsers:
        for sub in action.choices.values():
            _name_leaves(sub)
