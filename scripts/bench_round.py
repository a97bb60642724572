"""Time a federated round: what the protocol costs on top of training, and FedLedger against Flower.

Runbook (from the repository root, after `bash scripts/setup.sh`, which installs the dev extra:
the pinned `flwr` and `ray`, and anvil through npm):

    .venv/bin/python scripts/bench_round.py                        # both parts (~10 min on 2 cores)
    .venv/bin/python scripts/bench_round.py --daemons 4 --daemon-rounds 3 --skip-flower   # quick look
    .venv/bin/python scripts/bench_round.py --daemons                # only part (b)
    .venv/bin/python scripts/bench_round.py --markdown >> docs/benchmarks.md   # record a run

Ray starts its workers with OMP_NUM_THREADS=1 (1 CPU per client); `TorchTrainer` trains on one
torch thread too (on a loaded 2-core machine torch's default of a thread per core made the same
80 trainings ~19x slower), so both sides train the same way.

Part (a), daemons on anvil. For each N in --daemons: anvil, the contract deployed, N node
directories (as `fedledger node init` makes them) with IID digits shards, and the task (committee
N, fedavg, 2 local epochs), all by `node.sim.federation.build_federation` (through the tests' wrapper,
tests/daemon/federation.py, with debug logs); then N `fedledger node run` processes. This
script polls the chain (directly, 10 Hz) and notes when each round is finalized. Round 1 also
pays for process start-up (imports, libp2p, registration), so it is reported apart; the
steady-state round time is the median of rounds 2..R.

  Training time is NOT read from the daemons' logs (they do not log it): it is the median of
  `TorchTrainer.train` timed in this process on a shard of the same size with the task's
  epochs/batch/lr, which is what one daemon trains each round. Overhead = round wall time minus
  that, i.e. everything on a round's critical path that is not one node's training: commit and
  reveal transactions, block exchange, every node re-running the aggregation, propose, attest,
  finalize, polling. On 2 cores the N daemons' training also contends for the CPU, so the
  "N x train / 2 cores" column is the floor that training alone would take if it were perfectly
  parallel; an overhead well above it is the protocol's.

Part (b), `fedledger simulate --nodes 8 --rounds 10` (digits, IID, fedavg, 5 local epochs, batch
32, lr 0.05, embedded py-evm chain) called in-process through `node.simulate.run_simulation`,
next to a Flower simulation of the same model (`digits-mlp`), the same split
(`iid_partition` on `load_digits_split`, same seed), the same `TorchTrainer` (so the same local
epochs, batch size, lr and momentum), the same 10 rounds with all 8 clients each round and
FedAvg weighted by sample counts, and a central test-set evaluation per round as `simulate`
reports. Flower runs in `flwr.simulation.run_simulation` with the Ray backend (1 CPU per client,
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
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SEED = 7


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


def bench_daemons(n_nodes: int, rounds: int, workdir: Path) -> dict[str, object]:
    from node.chain.anvil import Anvil
    from tests.daemon.federation import build_federation

    with Anvil(accounts=10) as anvil:
        t0 = time.monotonic()
        fed = build_federation(workdir, anvil.url, n_nodes=n_nodes, rounds=rounds)
        setup = time.monotonic() - t0
        client = fed.client
        try:
            started = time.monotonic()
            for n in fed.nodes:
                n.start()
            marks = [started]  # when each round was finalized (the task moved on or finished)
            seen = 1
            deadline = started + 120 + 60 * rounds * max(1, n_nodes // 4)
            while time.monotonic() < deadline:
                info = client.task_info(fed.task)
                done = rounds if info.finished else info.current_round - 1
                while seen <= done:
                    marks.append(time.monotonic())
                    seen += 1
                if info.finished:
                    break
                for n in fed.nodes:
                    if n.proc is not None and n.proc.poll() not in (None, 0):
                        raise RuntimeError(f"daemon {n.index} exited {n.proc.returncode}:\n{n.text()[-2000:]}")
                time.sleep(0.1)
            else:
                raise RuntimeError(f"{n_nodes} daemons did not finish {rounds} rounds in time")
        finally:
            fed.stop_all()
    per_round = [b - a for a, b in zip(marks, marks[1:])]
    return {"nodes": n_nodes, "setup_s": setup, "first_s": per_round[0], "steady": per_round[1:]}


# -- (b) simulate against Flower -----------------------------------------------------------------


def bench_simulate(nodes: int, rounds: int, epochs: int) -> dict[str, float]:
    from node.simulate import SimulationConfig, run_simulation
    from node.taskspec import spec_for_rule
    from node.training import TorchTrainer

    spent = [0.0]
    original = TorchTrainer.train

    def timed(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t

    config = SimulationConfig(nodes=nodes, rounds=rounds, seed=SEED, spec=spec_for_rule("fedavg", nodes, epochs=epochs))
    TorchTrainer.train = timed  # type: ignore[method-assign]
    try:
        t = time.perf_counter()
        report = run_simulation(config)
        total = time.perf_counter() - t
    finally:
        TorchTrainer.train = original  # type: ignore[method-assign]
    return {"total_s": total, "train_s": spent[0], "accuracy": report.rounds[-1].test_accuracy}


def flower_child(nodes: int, rounds: int, epochs: int) -> None:
    """Runs in a child process: a Flower simulation equivalent to `simulate`; prints one JSON line."""
    import logging

    from flwr.client import ClientApp, NumPyClient
    from flwr.common import Context, ndarrays_to_parameters
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation

    from node.training import TorchTrainer, accuracy, iid_partition, initial_weights, load_digits_split

    logging.getLogger("flwr").setLevel(logging.WARNING)
    train, test = load_digits_split(seed=SEED)
    shards = iid_partition(len(train), nodes, SEED)
    init = initial_weights("digits-mlp", SEED)
    keys = list(init)
    accs: list[float] = []
    train_s = [0.0]

    class DigitsClient(NumPyClient):
        def __init__(self, i: int) -> None:
            self.i = i
            self.trainer = TorchTrainer("digits-mlp", train.subset(shards[i]), epochs=epochs, batch_size=32, lr=0.05)

        def fit(self, parameters, config):
            base = dict(zip(keys, parameters))
            t = time.perf_counter()
            delta = self.trainer.train(base, seed=SEED * 1_000_003 + int(config["round"]) * 1009 + self.i)
            spent = time.perf_counter() - t
            return [base[k] + delta[k] for k in keys], self.trainer.num_samples, {"train_s": spent}

    def client_fn(context: Context):
        return DigitsClient(int(context.node_config["partition-id"])).to_client()

    def evaluate(server_round, parameters, config):
        accs.append(accuracy("digits-mlp", dict(zip(keys, parameters)), test))
        return 0.0, {}

    def fit_metrics(results):
        train_s[0] += sum(float(m["train_s"]) for _, m in results)
        return {}

    def server_fn(context: Context) -> ServerAppComponents:
        strategy = FedAvg(
            fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=nodes, min_available_clients=nodes,
            initial_parameters=ndarrays_to_parameters([init[k] for k in keys]), evaluate_fn=evaluate,
            on_fit_config_fn=lambda r: {"round": r}, fit_metrics_aggregation_fn=fit_metrics,
        )  # fmt: skip
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=rounds))

    t = time.perf_counter()
    run_simulation(
        ServerApp(server_fn=server_fn), ClientApp(client_fn=client_fn), num_supernodes=nodes,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )  # fmt: skip
    total = time.perf_counter() - t
    print(json.dumps({"total_s": total, "train_s": train_s[0], "accuracy": accs[-1] if accs else None}))


def bench_flower(nodes: int, rounds: int, epochs: int, log: Path) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--flower-child", str(nodes), str(rounds), str(epochs)]
    with open(log, "w") as out:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=out, text=True, cwd=REPO, timeout=1800)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"the Flower simulation failed ({proc.returncode}); see {log}")
    return json.loads(lines[-1])


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
        rows = []
        for n in args.daemons:
            say(f"(a) {n} daemons on anvil, {args.daemon_rounds} rounds ...")
            with tempfile.TemporaryDirectory(prefix=f"bench-round-{n}-") as tmp:
                r = bench_daemons(n, args.daemon_rounds, Path(tmp))
            t_train = train_seconds(n, epochs=2)
            steady = statistics.median(r["steady"])
            rows.append([
                str(n), f"{r['setup_s']:.1f}", f"{r['first_s']:.1f}", f"{steady:.1f}", f"{t_train:.2f}",
                f"{n * t_train / 2:.2f}", f"{steady - t_train:.1f}",
            ])  # fmt: skip
            say(f"    {rows[-1]}")
        out += ["", f"(a) daemons on anvil: digits-mlp, IID, fedavg, 2 local epochs, committee = all, "
                f"{args.daemon_rounds} rounds; round times in s"]  # fmt: skip
        out += table(rows, ["daemons", "setup", "round 1", "round (median 2..R)", "train 1 node",
                            "N x train / 2 cores", "overhead/round"])  # fmt: skip

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
