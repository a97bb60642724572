"""`fedledger` commands that run on this machine: simulate, ipfs, aggregate, node init/run."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from node.cli.args import _ipfs_dir, _print_json, app_fields
from node.errors import ConfigError
from node.units import WAD


def cmd_simulate(args: argparse.Namespace) -> int:
    from node.sim.simulate import SimulationConfig, run_simulation
    from node.taskspec import spec_for_rule

    if args.rpc and args.chain == "anvil":
        raise ConfigError("--rpc and --chain anvil exclude each other: --rpc uses an existing chain")
    if args.in_process and args.chain != "anvil":
        raise ConfigError("--in-process only applies to --chain anvil: the embedded chain and --rpc always run in-process")
    daemons = args.chain == "anvil" and not args.in_process
    fields, model_ref = app_fields(args)
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
        spec=spec_for_rule(args.rule, args.nodes, trim=args.trim, f=args.f, m=args.m, clip=args.clip,
                           epochs=args.epochs, **fields),
        model_ref=model_ref,
        initial_model=args.initial_model,
    )  # fmt: skip
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
    result = init_node_dir(args.dir, password, rpc=args.rpc, deployment=args.deployment)
    print(f"node address {result.address}")
    print(f"peer id {result.peer_id}")
    print(f"wrote {result.config} and {result.keystore}; set [data] path in it, then: fedledger node fund, "
          f"fedledger node join, fedledger node run --config {result.config}")  # fmt: skip
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
