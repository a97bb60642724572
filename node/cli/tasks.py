"""`fedledger` commands that read tasks: status, task list, task show, model get.

`status --json` has one schema in every phase, documented in docs/cli.md: the same keys
whether the round is drawing, attesting or the task is finished (then `round` is the last
round, `phase` is "finished" and the committee and counts are the last round's). Everything
read from the chain is a task owner's or a peer's data, so it is shown, never trusted: CIDs
that do not decode are shown with replacement characters, and fetched files are checked
against their CIDs.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from dataclasses import asdict
from decimal import Decimal
from pathlib import Path
from typing import Any

from node.cli.args import _print_json
from node.cli.chain import _client
from node.cli.fetching import fetch_one
from node.errors import ConfigError, StorageError
from node.units import WAD


def _text(raw: bytes) -> str:
    return bytes(raw).decode("utf-8", "replace")


def _known_task(client, task: int) -> Any:
    count = client.task_count()
    if not 1 <= task <= count:
        raise ConfigError(f"unknown task {task} (tasks on this deployment: {count})")
    return client.task_info(task, errors="replace")


def task_summary(client, task: int, known: bool = False) -> dict[str, Any]:
    """A task's row of `task list`, and the first keys of `status` and `task show`; `known`: the
    caller has the id from the chain's task count."""
    from node.chain.types import Phase
    from node.taskspec import RULE_NAMES

    info = client.task_info(task, errors="replace") if known else _known_task(client, task)
    last = min(info.current_round, info.rounds)  # the contract says rounds + 1 once finished
    phase = "finished" if info.finished else Phase(client.round_state(task, last).phase).name.lower()
    cid, model_round = client.global_model(task, errors="replace")
    return {
        "task": task,
        "owner": info.owner,
        "rule": RULE_NAMES.get(info.rule, str(info.rule)),
        "rounds": info.rounds,
        "round": last,
        "phase": phase,
        "finished": info.finished,
        "committee_size": info.committee_size,
        "reward_remaining_wei": str(info.reward_remaining),
        "global_model_cid": cid,
        "global_model_round": model_round,
    }


def task_status(client, task: int) -> dict[str, Any]:
    """`status --json`: the summary, then the current (or last) round's committee and progress."""
    status = task_summary(client, task)
    round_ = status["round"]
    state = client.round_state(task, round_)
    credits: dict[str, int] | None = None
    if not status["finished"] and status["phase"] == "attest":
        from node.rewards import predicted_credits  # the incentives mirror: only when a proposal is pending

        credits = predicted_credits(client, task)
    status.update(
        committee=client.committee(task, round_),
        commits=state.commit_count,
        reveals=state.reveal_count,
        proposal_attempt=state.attempt,
        phase_deadline=state.deadline if state.deadline and not status["finished"] else None,
        predicted_credits_wei={a: str(w) for a, w in (credits or {}).items()},
    )
    return status


def cmd_status(args: argparse.Namespace) -> int:
    client = _client(args)
    status = task_status(client, args.task)
    status["evaluation"] = evaluate_latest(args, client, args.task) if args.node else None
    if args.json:
        _print_json(status)
        return 0
    for key, value in status.items():
        if key == "predicted_credits_wei":
            value = ", ".join(f"{a} {int(w) / WAD:.6f} ETH" for a, w in value.items()) or "-"
        elif isinstance(value, list):
            value = ", ".join(value) or "-"
        elif key == "evaluation" and value is not None:
            metrics = ", ".join(f"{k} {v:.4f}" for k, v in value["metrics"].items())
            value = f"round {value['round']}: {metrics or 'no metrics'} on {value['num_examples']} held-out samples"
        elif value is None:
            value = "-"
        print(f"{key:<22} {value}")
    return 0


def evaluate_latest(args: argparse.Namespace, client, task: int) -> dict[str, Any]:
    """The task's newest global model evaluated by the app of the node in `--node DIR` on that
    node's held-out data ([data] test, else its training data), as its daemon evaluates it."""
    from aggregation import AggregationError, decode_model
    from node.apps.resolve import node_trainer
    from node.daemon.config import load_config
    from node.taskspec import SPEC_MAX_BYTES, TaskSpec

    config = load_config(Path(args.node) / "node.toml")
    info = client.task_info(task)
    spec = TaskSpec.from_bytes(fetch_one(args, client, info.spec_cid, [info.owner], max_bytes=SPEC_MAX_BYTES))
    cid, round_ = client.global_model(task, errors="replace")
    holders = [info.owner] + (client.committee(task, round_) if round_ else [])
    try:
        weights, _meta = decode_model(fetch_one(args, client, cid, holders, max_bytes=spec.max_update_bytes), spec.max_update_bytes)
    except AggregationError as exc:
        raise ConfigError(f"task {task} round {round_}: the global model {cid} is not a model file: {exc}") from None
    trainer = node_trainer(spec, config.node_config(), config.app_ref, config.path.parent, trust_spec=False)
    evaluation = trainer.evaluate(weights)
    return {"round": round_, "cid": cid, "num_examples": evaluation.num_examples, "metrics": dict(evaluation.metrics)}


def cmd_task_list(args: argparse.Namespace) -> int:
    client = _client(args)
    rows = [task_summary(client, t, known=True) for t in range(1, client.task_count() + 1)]
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no tasks")
        return 0
    print(f"{'task':>4}  {'owner':<42}  {'rule':<12}  {'round':>9}  {'phase':<9}  {'K':>3}  {'pool (ETH)':>12}  global model")
    for r in rows:
        progress = f"{r['round']}/{r['rounds']}"
        pool = f"{Decimal(r['reward_remaining_wei']) / WAD:.6f}"
        print(f"{r['task']:>4}  {r['owner']:<42}  {r['rule']:<12}  {progress:>9}  {r['phase']:<9}  "
              f"{r['committee_size']:>3}  {pool:>12}  {r['global_model_cid']}")  # fmt: skip
    return 0


def _global_models(client, task: int, config: dict[str, Any]) -> dict[int, str]:
    """Round -> global model CID, round 0 being the initial model."""
    return {0: _text(config["modelCid"]), **client.finalized_cids(task)}


def task_details(client, args: argparse.Namespace, task: int) -> dict[str, Any]:
    """`task show --json`: the summary, the parameters the task was created with, its spec (from
    the local store or the task owner's node; null with the reason when unavailable), and the
    global model of every finalized round."""
    from node.taskspec import SPEC_MAX_BYTES, TaskSpec

    details = task_summary(client, task)
    config = client.task_config(task)
    spec_cid = _text(config["specCid"])
    details["params"] = {
        "initial_model_cid": _text(config["modelCid"]),
        "spec_cid": spec_cid,
        "min_committee": int(config["minCommittee"]),
        "max_samples": int(config["maxSamples"]),
        "min_stake_wei": str(config["minStake"]),
        "reputation_threshold_wad": str(config["reputationThreshold"]),
        "alpha_wad": str(config["alpha"]),
        "proposer_share_bps": int(config["proposerShareBps"]),
        "attester_share_bps": int(config["attesterShareBps"]),
        "timeouts_s": {p: int(config[f"{p}Timeout"]) for p in ("commit", "reveal", "propose", "attest")},
    }
    details["spec"], details["spec_error"] = None, None
    try:
        spec = TaskSpec.from_bytes(fetch_one(args, client, spec_cid, [details["owner"]], max_bytes=SPEC_MAX_BYTES))
        details["spec"] = asdict(spec)
    except (StorageError, ConfigError) as exc:
        details["spec_error"] = str(exc)
    details["global_models"] = [{"round": r, "cid": c} for r, c in sorted(_global_models(client, task, config).items())]
    return details


def cmd_task_show(args: argparse.Namespace) -> int:
    client = _client(args)
    details = task_details(client, args, args.task)
    if args.json:
        _print_json(details)
        return 0
    params, spec = details.pop("params"), details.pop("spec")
    models, error = details.pop("global_models"), details.pop("spec_error")
    for key, value in details.items():
        print(f"{key:<22} {value}")
    for key, value in params.items():
        if key == "timeouts_s":
            value = ", ".join(f"{p} {s} s" for p, s in value.items())
        elif key.endswith("_wei"):
            value = f"{Decimal(value) / WAD} ETH"
        elif key.endswith("_wad"):
            value = f"{Decimal(value) / WAD}"
        print(f"{key.removesuffix('_wei').removesuffix('_wad'):<22} {value}")
    if spec is None:
        print(f"{'spec':<22} unavailable: {error}")
    else:
        if spec.get("params") is not None:  # a model's every tensor would be pages: its size instead
            sizes = [math.prod(shape) for _name, shape, _dtype in spec["params"]]
            spec["params"] = f"{len(sizes)} tensors, {sum(sizes):,} values"
        print(f"{'spec':<22} " + ", ".join(f"{k} {v}" for k, v in spec.items() if v is not None))
    for m in models:
        print(f"{'round ' + str(m['round']) + ' model':<22} {m['cid']}")
    return 0


def cmd_model_get(args: argparse.Namespace) -> int:
    client = _client(args)
    info = _known_task(client, args.task)
    if args.round is None:
        cid, round_ = client.global_model(args.task, errors="replace")  # the latest finalized (0: the initial model)
    else:
        models = _global_models(client, args.task, client.task_config(args.task))
        if args.round not in models:
            done = sorted(r for r in models if r) or "none"  # worded as verify words it
            raise ConfigError(f"round {args.round} of task {args.task} is not finalized (finalized: {done})")
        cid, round_ = models[args.round], args.round
    # Who should hold it: the owner serves the initial model; the round's committee (whoever
    # proposed or agreed) each finalized one. The fetch then asks a few other registered nodes.
    holders = [info.owner] + (client.committee(args.task, round_) if round_ else [])
    # Every block is checked against the CID's DAG as it arrives and again as it is read.
    data = fetch_one(args, client, cid, holders, max_bytes=args.max_bytes)
    out = Path(args.out)
    fd, tmp = tempfile.mkstemp(dir=out.parent if str(out.parent) else ".", prefix=f".{out.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    print(f"task {args.task} round {round_}: {cid} ({len(data):,} bytes) written to {out}")
    return 0
