"""How similar an honest node's update is to its own earlier ones, against a perturbed replay (#16).

A check that compares an update with its sender's history can only catch a "perturbed replay"
(an earlier update of one's own plus small noise) if honest self-similarity stays clearly below
a replay's similarity with its original. This measures both, in the robustness grid's setting
(node/sim/robustness.py: same specs, seed and observer hook), without changing any mechanism:

- self lag 1 / lag 2: cos(u_i^r, u_i^{r-1}) and cos(u_i^r, u_i^{r-2}) for every honest node i;
- cross: cos(u_i^r, u_j^r) for honest i != j in the same round;
- replay: cos(u_i^{r-k} + e, u_i^{r-k}), e Gaussian with ||e|| = level x ||u_i^{r-k}||, k = 1, 2;
- norm: ||u_i^r|| over the round's upper median honest norm, what `aggregation.scores.NORM_BOUND`
  must stay above.

scripts/measure_update_history.py runs `main`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
from datetime import date
from pathlib import Path

import numpy as np

from node.sim.robustness import PublishedLog, _cos, _flat, parser as grid_parser, simulation_config
from node.sim.simulate import run_simulation

SPLITS = {"iid": None, "dirichlet-0.5": 0.5, "dirichlet-0.1": 0.1}
LEVELS = (1e-3, 1e-2, 1e-1)
LAGS = (1, 2)


def honest_updates(split: str, rule: str, nodes: int, rounds: int, epochs: int, seed: int) -> dict[str, dict[int, np.ndarray]]:
    """Every honest node's published update per round, flattened (parameters in key order)."""
    args = grid_parser().parse_args(["--nodes", str(nodes), "--rounds", str(rounds), "--epochs", str(epochs), "--seed", str(seed)])
    # The grid's own configuration for an honest-only run, with this split's Dirichlet alpha.
    config = dataclasses.replace(simulation_config("iid", rule, None, args), alpha=SPLITS[split])
    log = PublishedLog()
    run_simulation(config, observer=log)
    out: dict[str, dict[int, np.ndarray]] = {}
    for node, role, round_, _trained, published in log.entries:
        if role == "honest":
            out.setdefault(node, {})[round_] = _flat(published, sorted(published))
    return out


def measure_cell(updates: dict[str, dict[int, np.ndarray]], seed: int, levels: tuple[float, ...] = LEVELS) -> dict[str, list[float]]:
    """All cosines of one run, by kind ("self-1", "self-2", "cross", "replay-k-level")."""
    rng = np.random.default_rng(seed)
    found: dict[str, list[float]] = {"self-1": [], "self-2": [], "cross": [], "norm": []}
    nodes = sorted(updates)
    for r in sorted({r for own in updates.values() for r in own}):
        norms = sorted(float(np.linalg.norm(own[r])) for own in updates.values() if r in own)
        median = norms[len(norms) // 2]  # the upper median, as scores.screen takes it
        found["norm"] += [n / median for n in norms] if median > 0 else []
    for i, node in enumerate(nodes):
        own = updates[node]
        for r in sorted(own):
            for lag in LAGS:
                if r - lag in own:
                    found[f"self-{lag}"].append(_cos(own[r], own[r - lag]))
                    original = own[r - lag]
                    for level in levels:
                        noise = rng.standard_normal(original.shape)
                        noise *= level * float(np.linalg.norm(original)) / float(np.linalg.norm(noise))
                        found.setdefault(f"replay-{lag}-{level:g}", []).append(_cos(original + noise, original))
            for other in nodes[i + 1 :]:
                if r in updates[other]:
                    found["cross"].append(_cos(own[r], updates[other][r]))
    return found


def render(cells: dict[tuple[str, str], dict[str, list[float]]], command: str, load: str) -> str:
    """The report: per split and rule, min / median / max of each kind, and the threshold margin."""
    lines = [
        "# Update history: honest self-similarity against perturbed replays (#16)",
        "",
        f"Measured {date.today().isoformat()} with `{command}` (load average before the run: {load}).",
        "Cosines between flattened parameter deltas; min / median / max over every honest node and round.",
        "",
        "| split | rule | self lag 1 | self lag 2 | cross (same round) | replay 1e-3 | replay 1e-2 | replay 1e-1 | margin at 1e-1 | norm / round median |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (split, rule), found in cells.items():
        def stat(kind: str) -> str:
            v = found.get(kind, [])
            return f"{min(v):.3f} / {statistics.median(v):.3f} / {max(v):.3f}" if v else "-"

        replay = {lv: [x for lag in LAGS for x in found.get(f"replay-{lag}-{lv:g}", [])] for lv in LEVELS}
        honest = found["self-1"] + found["self-2"]
        cols = [f"{min(replay[lv]):.6f}" if replay[lv] else "-" for lv in LEVELS]
        margin = f"{min(replay[0.1]) - max(honest):+.3f}" if replay[0.1] and honest else "-"
        lines.append(f"| {split} | {rule} | {stat('self-1')} | {stat('self-2')} | {stat('cross')} | " + " | ".join(cols) + f" | {margin} | {stat('norm')} |")
    lines.append("")
    lines.append("Replay columns: the lowest cosine of a replay (own update of r-1 or r-2 plus noise) with its original. "
                 "Margin: that lowest cosine at noise 1e-1 minus the highest honest self-cosine (lag 1 or 2). "
                 "Norm: an honest update's norm over the upper median of its round's honest norms (the norm bound's reference).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--splits", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    cli.add_argument("--rules", nargs="+", default=["fedavg", "median"])
    cli.add_argument("--nodes", type=int, default=12)
    cli.add_argument("--rounds", type=int, default=5)
    cli.add_argument("--epochs", type=int, default=grid_parser().parse_args([]).epochs)
    cli.add_argument("--seed", type=int, default=7)
    cli.add_argument("--out", help="also write the table to this file")
    args = cli.parse_args(argv)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    cells = {}
    for split in args.splits:
        for rule in args.rules:
            found = measure_cell(honest_updates(split, rule, args.nodes, args.rounds, args.epochs, args.seed), args.seed)
            cells[(split, rule)] = found
            print(split, rule, {k: (round(min(v), 4), round(max(v), 4)) for k, v in found.items() if v}, flush=True)
    words = ["flock /tmp/bench.lock .venv/bin/python scripts/measure_update_history.py", *(sys.argv[1:] if argv is None else argv)]
    table = render(cells, " ".join(words), load)
    print(table)
    if args.out:
        Path(args.out).write_text(table)
    return 0
