"""Time the `fedledger` command line against its targets: every help screen in 0.5 s or less, and
the chain queries `status`, `reputation` and `task list` against anvil in 1.5 s or less.

Runbook (from the repository root, after `bash scripts/setup.sh`):

    .venv/bin/python scripts/bench_cli.py              # median of 5 runs each; exit status 1 if a target is missed
    .venv/bin/python scripts/bench_cli.py --runs 9 --markdown >> docs/cli.md   # record a run

Each command runs as a user runs it: a fresh `.venv/bin/fedledger` process, wall time from
spawn to exit, median of --runs runs (one unmeasured run first warms the OS's file cache and
Python's bytecode cache). The chain is a fresh anvil on loopback with the contract deployed and
three tasks created by the CLI itself (`fedledger deploy`, `fedledger task create`), so the
queries read real state. What a chain query costs is mostly imports: web3 alone takes about
0.7 s to import (it loads eth-account, whose keyfile module loads py_ecc's BLS tables), and is
the floor of any command that reads the chain; `python -X importtime -m node.cli status ...`
shows the rest.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from node.chain.anvil import Anvil  # noqa: E402
from node.chain.accounts import dev_account  # noqa: E402
from node.cli.parser import build_parser, commands  # noqa: E402

FEDLEDGER = Path(sys.executable).with_name("fedledger")
HELP_TARGET = 0.5  # seconds
QUERY_TARGET = 1.5


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one `fedledger ARGS` process."""
    cpu, start = _children_cpu(), time.perf_counter()
    proc = subprocess.run([str(FEDLEDGER), *args], env=env, capture_output=True, text=True, timeout=120)
    elapsed, cpu = time.perf_counter() - start, _children_cpu() - cpu
    if proc.returncode != 0:
        raise SystemExit(f"bench_cli: `fedledger {' '.join(args)}` failed: {proc.stderr.strip()}")
    return elapsed, cpu


def median_time(args: list[str], env: dict[str, str], runs: int) -> tuple[float, float]:
    """Median wall and median CPU seconds over `runs` runs. The target is on wall time; CPU time
    says how much of it is the command's own work when other processes share the cores."""
    run(args, env)  # warm the caches
    times = [run(args, env) for _ in range(runs)]
    return statistics.median(t for t, _ in times), statistics.median(c for _, c in times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="measured runs per command (default 5)")
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    opts = ap.parse_args()

    rows: list[tuple[str, tuple[float, float], float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp, Anvil(accounts=4) as anvil:
        env = {**os.environ, "FEDLEDGER_HOME": str(Path(tmp) / "home")}
        dep = str(Path(tmp) / "deployment.json")
        run(["deploy", "--rpc", anvil.url, "--dev-account", "0", "--out", dep], env)
        for rounds in (3, 5, 10):
            run(["task", "create", "--deployment", dep, "--dev-account", "0", "--model", "digits-mlp",
                 "--rounds", str(rounds), "--committee", "3", "--rule", "median", "--reward", "1"], env)  # fmt: skip

        helps = [[]] + [list(c) for c in commands(build_parser())]
        for words in helps:
            rows.append((f"fedledger {' '.join(words + ['--help'])}".replace("  ", " "),
                         median_time([*words, "--help"], env, opts.runs), HELP_TARGET))  # fmt: skip
        queries = [
            ["status", "--deployment", dep, "--task", "2", "--json"],
            ["reputation", dev_account(1).address, "--deployment", dep],
            ["task", "list", "--deployment", dep],
        ]
        for args in queries:
            shown = " ".join(a if a != dep else "deployment.json" for a in args)
            rows.append((f"fedledger {shown}", median_time(args, env, opts.runs), QUERY_TARGET))

    missed = [r for r in rows if r[1][0] > r[2]]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    if opts.markdown:
        print(f"Median of {opts.runs} runs; load average at the end {load} on {os.cpu_count()} CPUs.\n")
        print("| command | wall (s) | CPU (s) | target (s) | wall / target |\n|---|---|---|---|---|")
        for name, (seconds, cpu), target in rows:
            print(f"| `{name}` | {seconds:.2f} | {cpu:.2f} | {target} | {seconds / target:.2f} |")
    else:
        width = max(len(r[0]) for r in rows)
        print(f"{'command':<{width}}  {'wall s':>6}  {'CPU s':>5}  {'target':>6}  {'ratio':>5}")
        for name, (seconds, cpu), target in rows:
            flag = "  MISSED" if seconds > target else ""
            print(f"{name:<{width}}  {seconds:>6.2f}  {cpu:>5.2f}  {target:>6.1f}  {seconds / target:>5.2f}{flag}")
        print(f"median of {opts.runs} runs; load average {load} on {os.cpu_count()} CPUs")
    if missed:
        print(f"bench_cli: {len(missed)} of {len(rows)} commands missed their target", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
