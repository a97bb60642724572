"""The `fedledger` command line (SPEC §9).

Every command has --help, every query --json; an expected failure is one line
on stderr and exit status 1 (argparse's usage errors exit 2).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Sequence

from node.errors import ChainError, ConfigError, FedLedgerError
from node.units import WAD


def _scaled_decimal(text: str, what: str, low: Decimal, high: Decimal | None, scale: int) -> int:
    """Parse a decimal in [low, high] exactly (no float) and return it times `scale`, truncated."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
    if not value.is_finite() or value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise argparse.ArgumentTypeError(f"must be {bound}: {text!r}")
    return int(value * scale)


def _eth_to_wei(text: str) -> int:
    return _scaled_decimal(text, "an amount of ETH", Decimal(0), None, WAD)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _ipfs_dir(args: argparse.Namespace) -> Path:
    if args.repo:
        return Path(args.repo)
    home = Path(os.environ.get("FEDLEDGER_HOME", Path.home() / ".fedledger"))
    return home / "ipfs"


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


# -- commands ---------------------------------------------------------------------


def cmd_simulate(args: argparse.Namespace) -> int:
    from node.sim.simulate import SimulationConfig, run_simulation
    from node.taskspec import spec_for_rule

    if args.rpc and args.chain == "anvil":
        raise ConfigError("--rpc and --chain anvil exclude each other: --rpc uses an existing chain")
    if args.in_process and args.chain != "anvil":
        raise ConfigError("--in-process only applies to --chain anvil: the embedded chain and --rpc always run in-process")
    daemons = args.chain == "anvil" and not args.in_process
    config = SimulationConfig(
        nodes=args.nodes,
        malicious=args.malicious,
        attack=args.attack,
        rounds=args.rounds,
        rule=args.rule,
        seed=args.seed,
        chain="rpc" if args.rpc else args.chain,
        rpc=args.rpc,
        alpha=args.alpha,
        spec=spec_for_rule(args.rule, args.nodes, trim=args.trim, f=args.f, m=args.m, clip=args.clip, epochs=args.epochs),
    )
    quiet = args.json
    progress = (lambda line: None) if quiet else (lambda line: print(line, flush=True))
    workdir = Path(args.workdir) if args.workdir else None
    if daemons:
        from node.sim.federation import run_daemon_simulation

        report = run_daemon_simulation(config, workdir=workdir, progress=progress, round_timeout=args.round_timeout)
    else:
        report = run_simulation(config, workdir=workdir, progress=progress)
    if args.report:
        files = report.write(args.report)
        if not quiet:
            print(f"report written: {', '.join(str(f) for f in files)}")
    if quiet:
        _print_json(report.summary())
    else:
        print(report.table(), end="")
    return 0


def cmd_testnet(args: argparse.Namespace) -> int:
    import signal

    from node.chain.accounts import dev_account
    from node.chain.anvil import Anvil

    anvil = Anvil(port=args.port, accounts=args.accounts, host=args.host)
    # SIGTERM (a service manager, `kill`) stops the chain as cleanly as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        anvil.start()
        print(f"anvil testnet listening on {anvil.url} (chain id 31337); Ctrl-C stops it", flush=True)
        for i in range(min(args.accounts, 10)):
            print(f"  dev account {i}: {dev_account(i).address}", flush=True)
        return anvil.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        anvil.stop()


def _rpc_for(args: argparse.Namespace, deployment: Any) -> str:
    url = getattr(args, "rpc", None) or deployment.rpc
    if not url:
        raise ConfigError("the deployment has no RPC URL (it was on the embedded chain); give --rpc URL")
    return url


def _client(args: argparse.Namespace, sending: bool = False):
    from node.chain import Deployment, FedLedgerClient
    from node.chain.providers import rpc_web3
    from node.keys import signer

    deployment = Deployment.load(args.deployment)
    w3 = rpc_web3(_rpc_for(args, deployment))
    if w3.eth.chain_id != deployment.chain_id:
        raise ConfigError(f"the chain answers with chain id {w3.eth.chain_id}, the deployment says {deployment.chain_id}")
    address = deployment.contracts["FedLedger"]
    if not w3.eth.get_code(address):
        raise ChainError(f"no contract at {address} on this chain; was it restarted since the deploy?")
    account = signer(args.keystore, args.password_file, args.dev_account, deployment.chain_id) if sending else None
    return FedLedgerClient(w3, address, account)


def cmd_deploy(args: argparse.Namespace) -> int:
    from node.chain import Deployment, deploy_fedledger
    from node.chain.providers import rpc_web3
    from node.keys import signer

    w3 = rpc_web3(args.rpc)
    chain_id = int(w3.eth.chain_id)
    account = signer(args.keystore, args.password_file, args.dev_account, chain_id)
    client, receipt = deploy_fedledger(w3, account, args.min_stake)
    Deployment(chain_id, args.rpc, {"FedLedger": client.address}, int(receipt["blockNumber"])).save(args.out)
    print(f"FedLedger deployed at {client.address} (block {receipt['blockNumber']}); wrote {args.out}")
    return 0


def cmd_reputation(args: argparse.Namespace) -> int:
    from eth_utils import is_address, to_checksum_address

    for address in args.addresses:
        if not is_address(address):
            raise ConfigError(f"not an Ethereum address: {address!r}")
    client = _client(args)
    rows = [(to_checksum_address(a), client.reputation_of(a)) for a in args.addresses]
    if args.json:
        _print_json([{"address": a, "reputation": r / WAD, "reputation_wad": str(r)} for a, r in rows])
    else:
        for a, r in rows:
            print(f"{a}  {r / WAD:.6f}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    client = _client(args)
    if not 1 <= args.task <= client.task_count():
        raise ConfigError(f"unknown task {args.task}")
    info = client.task_info(args.task)
    cid, round_ = client.global_model(args.task)
    status: dict[str, Any] = {
        "task": args.task,
        "owner": info.owner,
        "rounds": info.rounds,
        "round": info.current_round,
        "phase": "finished",
        "global_model_cid": cid,
        "global_model_round": round_,
        "committee_size": info.committee_size,
        "reward_remaining_wei": str(info.reward_remaining),
    }
    if not info.finished:
        state = client.round_state(args.task, info.current_round)
        status["phase"] = state.phase.name.lower()
        status["committee"] = client.committee(args.task, info.current_round)
        status["commits"] = state.commit_count
        status["reveals"] = state.reveal_count
        status["proposal_attempt"] = state.attempt
        status["phase_deadline"] = state.deadline
        from node.rewards import predicted_credits

        credits = predicted_credits(client, args.task)
        if credits is not None:  # a proposal is pending: what finalizing it now would pay
            status["predicted_credits_wei"] = {a: str(w) for a, w in credits.items()}
    if args.json:
        _print_json(status)
    else:
        for key, value in status.items():
            if isinstance(value, dict):
                value = ", ".join(f"{k} {int(v) / WAD:.6f} ETH" for k, v in value.items())
            print(f"{key:<20} {', '.join(value) if isinstance(value, list) else value}")
    return 0


def _fraction_to_wad(text: str) -> int:
    return _scaled_decimal(text, "a number", Decimal(0), Decimal(1), WAD)


def _percent_to_bps(text: str) -> int:
    return _scaled_decimal(text, "a percentage", Decimal(0), Decimal(100), 100)


def cmd_task_create(args: argparse.Namespace) -> int:
    from aggregation import encode_model
    from node.storage import EmbeddedStorage
    from node.taskspec import RULE_IDS, TaskParams, spec_for_rule
    from node.training import MODELS, initial_weights

    if args.rule not in RULE_IDS:
        raise ConfigError(f"unknown rule {args.rule!r}; known: {', '.join(RULE_IDS)}")
    if args.model not in MODELS:
        raise ConfigError(f"unknown model {args.model!r}; known: {', '.join(sorted(MODELS))}")
    if args.reward <= 0:
        raise ConfigError("--reward must be more than 0 ETH: the pool is what the task pays")
    client = _client(args, sending=True)
    params = TaskParams(
        rounds=args.rounds,
        committee_size=args.committee,
        rule=args.rule,
        max_samples=args.max_samples,
        commit_timeout=args.commit_timeout,
        reveal_timeout=args.reveal_timeout,
        propose_timeout=args.propose_timeout,
        attest_timeout=args.attest_timeout,
        min_stake_wei=args.min_stake if args.min_stake is not None else client.min_stake(),
        reputation_threshold_wad=args.threshold,
        alpha_wad=args.alpha,
        proposer_share_bps=args.proposer_share,
        attester_share_bps=args.attester_share,
    )
    params.validate()
    # The initial model and the spec are content-addressed into the local blockstore, from which
    # the node serves them to its peers.
    store = EmbeddedStorage(_ipfs_dir(args))
    spec = spec_for_rule(
        args.rule, args.committee, trim=args.trim, f=args.f, m=args.m, clip=args.clip,
        model=args.model, epochs=args.epochs, max_samples=args.max_samples,
    )  # fmt: skip
    model_cid = store.put(encode_model(initial_weights(args.model, args.seed)))
    spec_cid = store.put(spec.to_bytes())
    task_id, receipt = client.create_task(model_cid, spec_cid, params, args.reward)
    if args.json:
        _print_json({"task": task_id, "model_cid": model_cid, "spec_cid": spec_cid, "block": receipt["blockNumber"]})
    else:
        print(task_id)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    import trio

    from node.daemon.peers import PeerDirectory, libp2p_fetch
    from node.p2p.node import P2PConfig, P2PNode
    from node.storage import EmbeddedStorage
    from node.verify import verify_round

    client = _client(args)
    store = EmbeddedStorage(_ipfs_dir(args))
    directory = PeerDirectory(client)

    async def main() -> object:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="fedledger-verify-") as identity_dir:
            # A throwaway identity: verifying needs no registration, only the peers' content.
            p2p = P2PNode(P2PConfig(Path(identity_dir)), store, directory.is_registered)
            async with trio.open_nursery() as nursery:
                await nursery.start(p2p.run)

                fetch = libp2p_fetch(store, p2p, directory)
                try:
                    return await trio.to_thread.run_sync(verify_round, client, fetch, args.task, args.round)
                finally:
                    nursery.cancel_scope.cancel()

    verdict = trio.run(main)
    if args.json:
        _print_json(verdict.to_json())
    elif verdict.ok:
        print(f"task {args.task} round {args.round}: OK, recomputed {verdict.computed_cid} and "
              f"{len(verdict.computed_scores)} scores match the chain")  # fmt: skip
    if not verdict.ok:
        for line in verdict.differences:
            print(f"fedledger: mismatch: {line}", file=sys.stderr)
        return 1
    return 0


def cmd_rewards_withdraw(args: argparse.Namespace) -> int:
    client = _client(args, sending=True)
    assert client.account is not None
    amount = client.pending_rewards(client.account.address)
    client.withdraw()
    print(f"withdrew {Decimal(amount) / WAD} ETH to {client.account.address}")
    return 0


def _ipfs_store(args: argparse.Namespace):
    """The storage backend `--backend` names: the embedded blockstore or a kubo daemon at `--api`."""
    if args.backend == "kubo":
        from node.storage import KuboStorage

        return KuboStorage(args.api) if args.api else KuboStorage()
    if args.api:
        raise ConfigError("--api is for --backend kubo")
    from node.storage import EmbeddedStorage

    return EmbeddedStorage(_ipfs_dir(args))


def cmd_ipfs_add(args: argparse.Namespace) -> int:
    from node.storage import cid_of

    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {args.file}: {exc.strerror}") from None
    if args.only_hash:
        print(cid_of(data, cid_version=args.cid_version))
    else:
        print(_ipfs_store(args).put(data, cid_version=args.cid_version))
    return 0


def cmd_ipfs_get(args: argparse.Namespace) -> int:
    from node.storage import parse_cid

    parse_cid(args.cid)
    data = _ipfs_store(args).get(args.cid)
    out = Path(args.out)
    tmp = out.with_name(f".{out.name}.part")
    tmp.write_bytes(data)
    os.replace(tmp, out)
    return 0


def cmd_aggregate(args: argparse.Namespace) -> int:
    from aggregation import RuleOptions, aggregate_files, check_options
    from node.storage import cid_of

    # RuleOptions and check_options raise AggregationError (one line, exit 1)
    # for a bad value or an option the rule does not take, before any file is read.
    options = RuleOptions(max_samples=args.max_samples, trim=args.trim, f=args.f, m=args.m, clip=args.clip)
    check_options(args.rule, options)
    result = aggregate_files(args.rule, args.base, args.updates, args.out, options=options)
    cid = cid_of(result.model)
    scores = [s / WAD for s in result.scores_wad]
    if args.json:
        _print_json({"cid": cid, "scores": scores, "scores_wad": [str(s) for s in result.scores_wad]})
    else:
        print(cid)
        for path, score, err in zip(args.updates, scores, result.errors):
            print(f"{score:.6f}  {path}" + (f"  (rejected: {err})" if err else ""))
    return 0


def cmd_node_init(args: argparse.Namespace) -> int:
    from node.daemon.init import init_node_dir
    from node.keys import read_password

    password = read_password(args.password_file, confirm=True)
    result = init_node_dir(args.dir, password, rpc=args.rpc)
    print(f"node address {result.address}")
    print(f"peer id {result.peer_id}")
    print(f"wrote {result.config} and {result.keystore}; edit the config, then: fedledger node run --config {result.config}")
    return 0


def cmd_node_run(args: argparse.Namespace) -> int:
    from node.daemon.config import load_config
    from node.daemon.logs import setup_logging
    from node.daemon.service import run_daemon
    from node.keys import load_keystore, read_password

    config = load_config(args.config)
    password_file = args.password_file or (str(config.password_file) if config.password_file else None)
    account = load_keystore(str(config.keystore), read_password(password_file))
    behaviour = None
    if args.behaviour:
        from node.sim.attacks import load_behaviour_file

        behaviour = load_behaviour_file(args.behaviour)
    setup_logging(args.log_level or config.log_level)
    run_daemon(config, account, exit_when_done=args.exit_when_done, behaviour=behaviour)
    return 0


# -- parser -----------------------------------------------------------------------


def _add_rule_options(p: argparse.ArgumentParser) -> None:
    """Rule options that go into a task spec (defaults: trim 0.2; Krum f = (K-3)//2, m = K-f)."""
    p.add_argument("--trim", type=float, metavar="BETA", help="trimmed-mean: fraction cut from each end")
    p.add_argument("--f", type=int, metavar="F", help="multi-krum: assumed Byzantine updates")
    p.add_argument("--m", type=int, metavar="M", help="multi-krum: updates averaged")
    p.add_argument("--clip", type=float, metavar="NORM", help="clip every update to this L2 norm first")


def _add_signing(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keystore", metavar="FILE", help="encrypted eth-account keystore to sign with")
    p.add_argument("--password-file", metavar="FILE", help="file holding the keystore password")
    p.add_argument("--dev-account", type=int, metavar="N", help="account N of the testnet mnemonic (chain id 31337 only)")


def build_parser() -> argparse.ArgumentParser:
    from node import __version__
    from node.sim.attacks import KNOWN_KINDS
    from node.taskspec import TaskParams

    TASK_DEFAULTS = TaskParams()

    parser = argparse.ArgumentParser(
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
    _add_rule_options(p)
    p.add_argument("--workdir", metavar="DIR", help="keep the nodes' directories (blockstores; with daemons also "
                   "node.toml, keystore, data shard and log) in DIR (default: a temporary directory)")  # fmt: skip
    p.add_argument("--round-timeout", type=_positive_int, default=600, metavar="SECONDS",
                   help="daemons: give up when a round takes longer than this (default 600)")  # fmt: skip
    p.add_argument("--report", metavar="DIR", help="write summary.json and PNG plots to DIR")
    p.add_argument("--json", action="store_true", help="print summary.json instead of tables")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("testnet", help="run a local anvil chain on loopback")
    p.add_argument("--port", type=int, default=8545)
    p.add_argument("--accounts", type=_positive_int, default=10)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    p.set_defaults(func=cmd_testnet)

    p = sub.add_parser("deploy", help="deploy the contracts and write deployment.json")
    p.add_argument("--rpc", required=True, metavar="URL")
    p.add_argument("--out", default="deployment.json", metavar="FILE")
    p.add_argument("--min-stake", type=_eth_to_wei, default=WAD, metavar="ETH", help="minimum node stake (default 1)")
    _add_signing(p)
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("task", help="create and inspect tasks")
    tsub = p.add_subparsers(dest="task_command", metavar="ACTION", required=True)
    c = tsub.add_parser("create", help="create a task and deposit its reward pool; prints the task id")
    c.add_argument("--deployment", required=True, metavar="FILE")
    c.add_argument("--rpc", metavar="URL", help="override the deployment's RPC URL")
    c.add_argument("--model", required=True, metavar="NAME", help="model architecture, e.g. digits-mlp")
    c.add_argument("--rounds", required=True, type=_positive_int)
    c.add_argument("--committee", required=True, type=_positive_int, metavar="K", help="committee size per round (<= 64)")
    c.add_argument("--rule", required=True, help="aggregation rule: fedavg, median, trimmed-mean, multi-krum")
    c.add_argument("--reward", required=True, type=_eth_to_wei, metavar="ETH", help="reward pool deposited now")
    c.add_argument("--epochs", type=_positive_int, default=5, help="local epochs per round (task spec)")
    c.add_argument("--max-samples", type=_positive_int, default=2**20, help="per-update sample cap (task spec)")
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
    c.set_defaults(func=cmd_task_create)

    p = sub.add_parser("reputation", help="read nodes' on-chain reputation")
    p.add_argument("addresses", nargs="+", metavar="ADDRESS")
    p.add_argument("--deployment", required=True, metavar="FILE")
    p.add_argument("--rpc", metavar="URL", help="override the deployment's RPC URL")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_reputation)

    p = sub.add_parser("status", help="a task's round, phase and global model")
    p.add_argument("--deployment", required=True, metavar="FILE")
    p.add_argument("--task", required=True, type=_positive_int)
    p.add_argument("--rpc", metavar="URL")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("verify", help="re-run a finalized round from its on-chain inputs and compare")
    p.add_argument("--deployment", required=True, metavar="FILE")
    p.add_argument("--task", required=True, type=_positive_int)
    p.add_argument("--round", required=True, type=_positive_int)
    p.add_argument("--rpc", metavar="URL")
    p.add_argument("--repo", metavar="DIR", help="blockstore to read and fill (default $FEDLEDGER_HOME/ipfs); peers supply the rest")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("rewards", help="rewards credited to an account")
    rsub = p.add_subparsers(dest="rewards_command", metavar="ACTION", required=True)
    w = rsub.add_parser("withdraw", help="withdraw pending rewards to the signing account")
    w.add_argument("--deployment", required=True, metavar="FILE")
    w.add_argument("--rpc", metavar="URL")
    _add_signing(w)
    w.set_defaults(func=cmd_rewards_withdraw)

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
    a.set_defaults(func=cmd_ipfs_add)
    g = isub.add_parser("get", help="write the bytes of a CID to a file")
    g.add_argument("cid", metavar="CID")
    g.add_argument("--out", required=True, metavar="FILE")
    g.add_argument("--repo", metavar="DIR")
    _add_backend(g)
    g.set_defaults(func=cmd_ipfs_get)

    p = sub.add_parser("node", help="the node daemon: init a node directory, run it")
    nsub = p.add_subparsers(dest="node_command", metavar="ACTION", required=True)
    n = nsub.add_parser("init", help="create a node directory: node.toml, an encrypted keystore")
    n.add_argument("--dir", required=True, metavar="DIR")
    n.add_argument("--rpc", default="http://127.0.0.1:8545", metavar="URL", help="the chain the node will use")
    n.add_argument("--password-file", metavar="FILE", help="keystore password (else FEDLEDGER_PASSWORD or a prompt)")
    n.set_defaults(func=cmd_node_init)
    n = nsub.add_parser("run", help="run the node daemon until stopped (SIGINT/SIGTERM)")
    n.add_argument("--config", required=True, metavar="FILE", help="node.toml (see `fedledger node init`)")
    n.add_argument("--password-file", metavar="FILE", help="keystore password (else the config's, FEDLEDGER_PASSWORD, or a prompt)")
    n.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="override the config's log level")
    n.add_argument("--exit-when-done", action="store_true", help="stop once every task in the config is finished")
    n.add_argument("--behaviour", metavar="FILE",
                   help="research only: play an attack described in FILE (what `simulate --chain anvil --attack` writes)")  # fmt: skip
    n.set_defaults(func=cmd_node_run)

    p = sub.add_parser("aggregate", help="aggregate update files offline; prints the CID and scores")
    p.add_argument("updates", nargs="+", metavar="UPDATE.safetensors")
    p.add_argument("--rule", required=True, help="fedavg, median, trimmed-mean or multi-krum")
    p.add_argument("--base", required=True, metavar="BASE.safetensors")
    p.add_argument("--out", required=True, metavar="OUT.safetensors")
    p.add_argument("--max-samples", type=_positive_int, help="cap each update's weight (fedavg, multi-krum)")
    _add_rule_options(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_aggregate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["simulate"]:
        from node.reproducible import pin_cpu_kernels

        pin_cpu_kernels()  # before torch loads: the same seed trains the same on any x86-64 CPU
    from aggregation import AggregationError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (FedLedgerError, AggregationError) as exc:
        print(f"fedledger: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a file the user named: unreadable, missing, or a full disk
        where = f" {exc.filename}" if exc.filename else ""
        print(f"fedledger: error:{where} {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fedledger: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
