"""Time a federated round: what the protocol costs on top of training, and FedLedger against Flower.

Runbook (from the repository root, after `bash scripts/setup.sh`, which installs flwr and anvil,
and `bash scripts/test.sh` once, which installs the dev extra with the pinned `ray` that
Flower's simulation needs):

    .venv/bin/python scripts/bench_round.py                        # both parts (~10 min on 2 cores)
    .venv/bin/python scripts/bench_round.py --daemons 4 --daemon-rounds 3 --skip-flower   # quick look
    .venv/bin/python scripts/bench_round.py --daemons 16 --modes gossip --workdir /tmp/fed --skip-flower  # keep the logs
    .venv/bin/python scripts/bench_round.py --daemons                # only part (b)
    .venv/bin/python scripts/bench_round.py --markdown >> docs/benchmarks.md   # record a run

Ray starts its workers with OMP_NUM_THREADS=1 (1 CPU per client); `TorchTrainer` trains on one
torch thread too (on a loaded 2-core machine torch's default of a thread per core made the same
80 trainings ~19x slower), so both sides train the same way.

Part (a), daemons on anvil. For each N in --daemons and each mode: anvil, the contract deployed,
N node directories (as `fedledger node init` makes them) with IID digits shards, and the task
(committee N, fedavg, 2 local epochs), all by `node.sim.federation.build_federation` (debug logs);
then N `fedledger node run` processes. This script polls the chain (directly, 10 Hz) and notes
when each round enters each phase and when it is finalized. Round 1 also pays for process
start-up (imports, libp2p, registration), so it is reported apart; the steady-state round time
is the median of rounds 2..R, and the phase columns are medians over the same rounds (draw: from
the previous round's finalize to the committee; attest: from the proposal to the finalize).

  Modes, run one after the other for each N, so that their ratio is measured in the same run
  under the same load: "poll", the daemons learn that a round moved on only by polling the chain
  every --poll s (0.2, the federations' default) and announce nothing (the daemons' test seam
  FEDLEDGER_TEST_NO_ANNOUNCE), which is how every daemon worked before gossip; "gossip", each
  daemon announces what it did on the task's gossipsub topic, so peers act at once and prefetch
  revealed updates, and polls the chain every --gossip-poll s only as the fallback.

  Training time is NOT read from the daemons' logs (they do not log it): it is the median of
  `TorchTrainer.train` timed in this process on a shard of the same size with the task's
  epochs/batch/lr, which is what one daemon trains each round. Overhead = round wall time minus
  that, i.e. everything on a round's critical path that is not one node's training: commit and
  reveal transactions, block exchange, every node re-running the aggregation, propose, attest,
  finalize, polling. "CPU s/round" is the CPU time (user + system, from /proc) that all the
  daemons together, and anvil, used from one round's finalize to the next (median of the steady
  rounds but the last, which the daemons leave as it ends): on 2 cores a round cannot be shorter
  than that sum over 2, so it tells a round short of CPU from one waiting on polls.

Part (b), `fedledger simulate --nodes 8 --rounds 10` (digits, IID, fedavg, 5 local epochs, batch
32, lr 0.05, embedded py-evm chain) called in-process through `node.sim.simulate.run_simulation`,
next to a Flower simulation of the same app (`digits-mlp`), the same shards (the app's
`load_data` with simulate's node configs), the same trainer (`trainer_for` the same spec: local
epochs, batch size, lr, momentum, seeds), the same 10 rounds with all 8 clients each round and
FedAvg weighted by sample counts, and the same evaluations per round as `simulate` reports
(every client on its held-out part, and the central test split). Flower runs in `flwr.simulation.run_simulation` with the Ray backend (1 CPU per client,
so 2 clients at a time here) in a child process of this script (Ray's logs stay out of the
table). Both times are from the call to its return; Flower's includes starting Ray. Training
time inside each is measured by wrapping `TorchTrainer.train` (FedLedger) and returned as a fit
metric (Flower), so the "rest" columns show where the other time goes.

Timings move with machine load; the header prints the load average at the start. Exit status 0
always: the numbers are for reading, not a test.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SEED = 7

from node.daemon.hints import NO_ANNOUNCE  # noqa: E402  (after the sys.path line above)

if TYPE_CHECKING:
    from node.taskspec import TaskSpec


# -- (a) daemons on anvil ----------------------------------------------------------------------


def train_seconds(n_nodes: int, epochs: int, repeat: int = 5) -> float:
    """Median time of one daemon's local training: a shard of the size build_federation deals."""
    from node.training import TorchTrainer, initial_weights, iid_partition, load_digits_split

    train, _ = load_digits_split(seed=3)
    shard = train.subset(iid_partition(len(train), n_nodes, seed=3)[0])
    trainer = TorchTrainer("digits-mlp", shard, epochs=epochs)  # the task spec's batch 32, lr 0.05
    weights = initial_weights("digits-mlp", 0)
    trainer.train(weights, seed=0)  # warm-up: the daemons' steady rounds are warm too
    times = []
    for i in range(repeat):
        t = time.perf_counter()
        trainer.train(weights, seed=i)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


#: How the daemons of each mode learn that a round moved on: (poll interval argument, environment).
MODES = {"poll": ("poll", {NO_ANNOUNCE: "1"}), "gossip": ("gossip_poll", {})}
PHASES = ("draw", "commit", "reveal", "propose", "attest")


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) a live process has used so far; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_daemons(n_nodes: int, rounds: int, workdir: Path, poll_interval: float, env: dict[str, str]) -> dict[str, object]:
    from node.chain.anvil import Anvil
    from node.chain.types import Phase
    from node.sim.federation import FederationConfig, build_federation
    from node.taskspec import TaskSpec

    with Anvil(accounts=10) as anvil:
        t0 = time.monotonic()
        config = FederationConfig(nodes=n_nodes, rounds=rounds, spec=TaskSpec(epochs=2), funding_wei=50 * 10**18,
                                  log_level="debug", poll_interval=poll_interval)  # fmt: skip
        fed = build_federation(workdir, anvil.url, config)
        setup = time.monotonic() - t0
        client = fed.client
        try:
            started = time.monotonic()
            fed.start(extra_env=env)
            marks = [started]  # when each round was finalized (the task moved on or finished)
            pids = [n.proc.pid for n in fed.nodes if n.proc is not None]
            assert anvil.process is not None
            cpu = [(0.0, 0.0)]  # CPU s the daemons, and anvil, had used at each mark (mark 0: not counted)
            entered: dict[tuple[int, Phase], float] = {}  # (round, phase) -> when first seen
            seen = 1
            deadline = started + 120 + 60 * rounds * max(1, n_nodes // 4)
            while time.monotonic() < deadline:
                info = client.task_info(fed.task)
                now = time.monotonic()
                done = rounds if info.finished else info.current_round - 1
                while seen <= done:
                    marks.append(now)
                    used = [cpu_seconds(p) for p in pids]  # a daemon that already left counts as None
                    cpu.append((sum(u for u in used if u is not None), cpu_seconds(anvil.process.pid) or 0.0))
                    seen += 1
                if info.finished:
                    break
                phase = client.round_state(fed.task, info.current_round).phase
                entered.setdefault((info.current_round, phase), time.monotonic())
                for n in fed.nodes:
                    if n.proc is not None and n.proc.poll() not in (None, 0):
                        raise RuntimeError(f"daemon {n.index} exited {n.proc.returncode}:\n{n.text()[-2000:]}")
                time.sleep(0.1)
            else:
                raise RuntimeError(f"{n_nodes} daemons did not finish {rounds} rounds in time")
        finally:
            fed.stop_all()
    per_round = [b - a for a, b in zip(marks, marks[1:])]
    phases: dict[str, list[float]] = {p: [] for p in PHASES}
    order = (Phase.COMMIT, Phase.REVEAL, Phase.PROPOSE, Phase.ATTEST)
    for r in range(2, rounds + 1):
        times = [marks[r - 1], *(entered.get((r, p)) for p in order), marks[r]]
        if all(t is not None for t in times):  # a phase shorter than a poll of this script went unseen
            for name, a, b in zip(PHASES, times, times[1:]):
                phases[name].append(b - a)  # type: ignore[operator]
    # CPU per steady round, from mark to mark; the last round is left out (daemons leave as it ends).
    spent = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(cpu[1:-1], cpu[2:-1])]
    return {"nodes": n_nodes, "setup_s": setup, "first_s": per_round[0], "steady": per_round[1:], "phases": phases,
            "cpu": spent}  # fmt: skip


# -- (b) simulate against Flower -----------------------------------------------------------------


def bench_spec(nodes: int, epochs: int, model: str = "digits-mlp") -> "TaskSpec":
    """The task both sides run: fedavg, the spec's batch 32 and lr 0.05, `epochs` local epochs."""
    from node.taskspec import spec_for_rule

    return spec_for_rule("fedavg", nodes, epochs=epochs, model=model)


@contextmanager
def timing(owner: object, name: str, spent: list[float]):
    """Add the time spent in `owner.name` (a method or function, patched for the block) to spent[0]."""
    original = getattr(owner, name)

    def timed(*args, **kwargs):
        t = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t

    setattr(owner, name, timed)
    try:
        yield
    finally:
        setattr(owner, name, original)


def bench_simulate(nodes: int, rounds: int, epochs: int, model: str = "digits-mlp") -> dict[str, float]:
    """`simulate` in this process: total, training (TorchTrainer.train) and evaluation (every
    model's report: the nodes' evaluations and the central test split) seconds."""
    from node.sim.evaluation import Evaluator
    from node.sim.simulate import SimulationConfig, run_simulation
    from node.training import TorchTrainer

    train_s, eval_s = [0.0], [0.0]
    config = SimulationConfig(nodes=nodes, rounds=rounds, seed=SEED, spec=bench_spec(nodes, epochs, model))
    with timing(TorchTrainer, "train", train_s), timing(Evaluator, "__call__", eval_s):
        t = time.perf_counter()
        report = run_simulation(config)
        total = time.perf_counter() - t
    return {"total_s": total, "train_s": train_s[0], "eval_s": eval_s[0], "accuracy": report.rounds[-1].test_accuracy}


def flower_child(nodes: int, rounds: int, epochs: int, model: str = "digits-mlp") -> None:
    """Runs in a child process: a Flower simulation equivalent to `simulate`; prints one JSON line.

    Each client is simulate's node of the same index: the app's shard for the same node config
    (`partition_config`), the trainer `node_trainer` builds for the same spec, the same seeds.
    Like simulate's report, every round's model is evaluated by every client on its held-out
    part (federated evaluation) and on the central test split (the server's evaluate_fn)."""
    import logging

    import numpy as np
    from flwr.client import ClientApp, NumPyClient
    from flwr.common import Context, ndarrays_to_parameters
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation

    from node.apps.resolve import app_of, initial_model
    from node.protocol import node_seed, train_seed
    from node.sim.simulate import central_test, partition_config
    from node.training import accuracy
    from node.training.trainer import trainer_for

    logging.getLogger("flwr").setLevel(logging.WARNING)
    spec = bench_spec(nodes, epochs, model)
    app = app_of(spec)
    central = central_test(spec, partition_config(nodes, 0, SEED, None))
    init = initial_model(spec, SEED)
    keys = list(init)
    accs: list[float] = []
    spent = {"train_s": 0.0, "eval_s": 0.0}

    def weights_of(parameters) -> dict[str, np.ndarray]:
        # FedAvg averages in floating point; integer buffers (BatchNorm's counters) go back to their dtype.
        return {k: np.asarray(p, dtype=init[k].dtype) for k, p in zip(keys, parameters)}

    class AppClient(NumPyClient):
        def __init__(self, i: int) -> None:
            self.i = i
            train, test = app.load_data(partition_config(nodes, i, SEED, None))
            self.trainer = trainer_for(spec, train, test, app=app)

        def fit(self, parameters, config):
            base = weights_of(parameters)
            t = time.perf_counter()
            # The seed simulate's node i trains round r of its task (id 1) with: the same work.
            delta = self.trainer.train(base, seed=train_seed(node_seed(SEED, self.i), 1, int(config["round"])))
            spent = time.perf_counter() - t
            return [base[k] + delta[k] for k in keys], self.trainer.num_samples, {"train_s": spent}

        def evaluate(self, parameters, config):
            t = time.perf_counter()
            result = self.trainer.evaluate(weights_of(parameters))
            metrics = {**result.metrics, "eval_s": time.perf_counter() - t}
            return float(result.metrics.get("loss", 0.0)), result.num_examples, metrics

    def client_fn(context: Context):
        return AppClient(int(context.node_config["partition-id"])).to_client()

    def evaluate(server_round, parameters, config):
        t = time.perf_counter()
        if central is not None:
            accs.append(accuracy(central[0], weights_of(parameters), central[1]))
        spent["eval_s"] += time.perf_counter() - t
        return 0.0, {}

    def add(name: str):
        def aggregate(results):
            spent[name] += sum(float(m[name]) for _, m in results)
            return {}

        return aggregate

    def server_fn(context: Context) -> ServerAppComponents:
        strategy = FedAvg(
            fraction_fit=1.0, fraction_evaluate=1.0, min_fit_clients=nodes, min_evaluate_clients=nodes,
            min_available_clients=nodes, initial_parameters=ndarrays_to_parameters([init[k] for k in keys]),
            evaluate_fn=evaluate, on_fit_config_fn=lambda r: {"round": r},
            fit_metrics_aggregation_fn=add("train_s"), evaluate_metrics_aggregation_fn=add("eval_s"),
        )  # fmt: skip
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=rounds))

    t = time.perf_counter()
    run_simulation(
        ServerApp(server_fn=server_fn), ClientApp(client_fn=client_fn), num_supernodes=nodes,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )  # fmt: skip
    total = time.perf_counter() - t
    print(json.dumps({"total_s": total, **spent, "accuracy": accs[-1] if accs else None}))


def run_child(args: list[str], log: Path, timeout: float = 3600) -> tuple[dict[str, float], int]:
    """Run `python ARGS` from the repository root; its last JSON line of stdout and the peak
    resident memory (bytes) of it and all its descendants (Ray's processes, for Flower),
    sampled every 50 ms. stderr goes to `log`."""
    import psutil

    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO)
        peak = [0]
        done = threading.Event()

        def sample() -> None:
            root = psutil.Process(proc.pid)
            while not done.is_set():
                try:
                    tree = [root, *root.children(recursive=True)]
                except psutil.Error:
                    break
                rss = 0
                for p in tree:
                    try:
                        rss += p.memory_info().rss
                    except psutil.Error:
                        pass  # it left between the listing and the read
                peak[0] = max(peak[0], rss)
                done.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            out, _ = proc.communicate(timeout=timeout)
        finally:
            done.set()
            sampler.join()
            if proc.poll() is None:
                proc.kill()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(args[:2])} failed ({proc.returncode}); see {log}")
    return json.loads(lines[-1]), peak[0]


def bench_flower(nodes: int, rounds: int, epochs: int, log: Path) -> dict[str, float]:
    result, _peak = run_child([__file__, "--flower-child", str(nodes), str(rounds), str(epochs)], log, timeout=1800)
    return result


# -- output ----------------------------------------------------------------------------------------


def header() -> list[str]:
    load = os.getloadavg()
    return [
        f"date {datetime.date.today().isoformat()}; {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; load average at start {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    ]


def table(rows: list[list[str]], titles: list[str]) -> list[str]:
    widths = [max(len(t), *(len(r[i]) for r in rows)) for i, t in enumerate(titles)]
    fmt = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return [fmt(titles), "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|", *(fmt(r) for r in rows)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--daemons", type=int, nargs="*", default=[4, 8, 16], help="federation sizes for part (a)")
    ap.add_argument("--daemon-rounds", type=int, default=3, help="rounds per daemon federation (>= 2)")
    ap.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES),
                    help="part (a): how the daemons learn that a round moved on (default: both, for their ratio)")
    ap.add_argument("--poll", type=float, default=0.2, help="part (a): the poll interval of mode poll (s)")
    ap.add_argument("--gossip-poll", type=float, default=2.0,
                    help="part (a): the poll interval of mode gossip, the fallback when an announcement is lost (s)")
    ap.add_argument("--workdir", type=Path, help="part (a): keep each federation (node directories, logs) under this")
    ap.add_argument("--nodes", type=int, default=8, help="part (b): nodes")
    ap.add_argument("--rounds", type=int, default=10, help="part (b): rounds")
    ap.add_argument("--epochs", type=int, default=5, help="part (b): local epochs (simulate's default)")
    ap.add_argument("--skip-flower", action="store_true", help="skip part (b)")
    ap.add_argument("--markdown", action="store_true", help="print the tables only, no progress lines")
    ap.add_argument("--flower-child", type=int, nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.flower_child:
        flower_child(*args.flower_child)
        return 0
    say = (lambda s: None) if args.markdown else (lambda s: print(s, file=sys.stderr, flush=True))
    out = header()

    if args.daemons:
        rows, ratios = [], []
        for n in args.daemons:
            t_train = train_seconds(n, epochs=2)
            steady: dict[str, float] = {}
            for mode in args.modes:
                poll_arg, env = MODES[mode]
                poll = getattr(args, poll_arg)
                say(f"(a) {n} daemons on anvil, {args.daemon_rounds} rounds, mode {mode} (poll {poll} s) ...")
                with tempfile.TemporaryDirectory(prefix=f"bench-round-{n}-") as tmp:
                    where = args.workdir / f"{mode}-{n}" if args.workdir else Path(tmp)
                    r = bench_daemons(n, args.daemon_rounds, where, poll, env)
                steady[mode] = statistics.median(r["steady"])
                phases = [f"{statistics.median(v):.1f}" if v else "-" for v in r["phases"].values()]
                cpu = "/".join(f"{statistics.median(c):.1f}" for c in zip(*r["cpu"])) if r["cpu"] else "-"
                rows.append([
                    str(n), mode, f"{poll:g}", f"{r['setup_s']:.1f}", f"{r['first_s']:.1f}", f"{steady[mode]:.1f}",
                    *phases, cpu, f"{t_train:.2f}", f"{steady[mode] - t_train:.1f}",
                ])  # fmt: skip
                say(f"    {rows[-1]}; rounds 2..R: {', '.join(f'{t:.1f}' for t in r['steady'])}")
            if "poll" in steady and "gossip" in steady:
                ratios.append(f"{n} daemons: steady round {steady['poll']:.1f} s polling, {steady['gossip']:.1f} s "
                              f"with gossip; gossip / poll = {steady['gossip'] / steady['poll']:.2f}")  # fmt: skip
        out += ["", f"(a) daemons on anvil: digits-mlp, IID, fedavg, 2 local epochs, committee = all, "
                f"{args.daemon_rounds} rounds; round and phase times in s (phases: medians of rounds 2..R)"]  # fmt: skip
        out += table(rows, ["daemons", "mode", "poll", "setup", "round 1", "round (median 2..R)", *PHASES,
                            "CPU s/round daemons/anvil", "train 1 node", "overhead/round"])  # fmt: skip
        out += ratios

    if not args.skip_flower:
        say(f"(b) simulate --nodes {args.nodes} --rounds {args.rounds} (embedded chain) ...")
        ours = bench_simulate(args.nodes, args.rounds, args.epochs)
        say(f"    {ours}")
        say("(b) Flower simulation (Ray), same model, split, trainer and rounds ...")
        theirs = bench_flower(args.nodes, args.rounds, args.epochs, Path(tempfile.gettempdir()) / "bench_round_flower.log")
        say(f"    {theirs}")
        rows = [
            [name, f"{r['total_s']:.1f}", f"{r['train_s']:.1f}", f"{r['total_s'] - r['train_s']:.1f}", f"{r['accuracy']:.3f}"]
            for name, r in (("fedledger simulate (py-evm)", ours), ("Flower run_simulation (Ray)", theirs))
        ]
        out += ["", f"(b) {args.nodes} nodes x {args.rounds} rounds, digits-mlp, IID, {args.epochs} local epochs, "
                f"batch 32, lr 0.05; times in s"]  # fmt: skip
        out += table(rows, ["run", "total", "training", "rest", "final test acc"])
        out += [f"ratio fedledger / flower = {ours['total_s'] / theirs['total_s']:.2f}x (target <= 1.0x)"]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
