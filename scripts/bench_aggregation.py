"""Time each aggregation rule against Flower's implementation of the same rule.

Runbook (from the repository root, after `bash scripts/setup.sh`, which
installs the dev extra with the pinned `flwr`):

    .venv/bin/python scripts/bench_aggregation.py                    # 32 updates x 1M params
    .venv/bin/python scripts/bench_aggregation.py --updates 8 --params 100000 --repeat 2   # quick
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python scripts/bench_aggregation.py  # one thread

Both sides run in this process on the same float32 updates (3 tensors, 1M
parameters in total by default): Flower's `aggregate`, `aggregate_median`,
`aggregate_trimmed_avg` and `aggregate_krum` from
`flwr.server.strategy.aggregate`, and ours through `aggregation.rules`.
Each timing is the best of --repeat runs. Two ratios are printed per rule:

* `exact rule / flwr`: our rule on int64 fixed-point inputs converted
  beforehand (untimed) with `to_fixed`, against Flower's float rule.
* `end-to-end / flwr`: float32 in -> rule -> `to_float32` out, with the
  updates given as `FixedUpdate.from_float32` (what `aggregate_round` does
  after decoding), so the conversion to fixed point is included: FedAvg does
  it on the fly, the other rules with `to_fixed`. This is the fair one.

The exact kernels use $FEDLEDGER_THREADS threads (default: the CPUs this
process may use); Flower's rules are single-threaded numpy. Run with
FEDLEDGER_THREADS=1 for the one-thread comparison.

A last table times what a verifier really runs, `aggregate_round` (update
bytes in: decode and validate, rule, exact scores, canonical model bytes
out), which has no Flower counterpart.

The last column says whether our result agrees with Flower's (float64 on the
same inputs) within one fixed-point quantum (2**-32), and for multi-krum
whether both selected the same updates. Exit status 0 always: the numbers
are for reading, not a test.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aggregation.abc import FixedUpdate, RuleOptions  # noqa: E402
from aggregation.api import aggregate_round  # noqa: E402
from aggregation.fixedpoint import to_fixed, to_float32  # noqa: E402
from aggregation.kernels import available_threads  # noqa: E402
from aggregation.rules import apply_rule  # noqa: E402
from aggregation.update import encode_model, encode_update  # noqa: E402


def shapes_for(params: int) -> dict[str, tuple[int, ...]]:
    """Three tensors (a big matrix, a bias, a second matrix) holding `params` values in total."""
    rows = max(1, params // 1000)
    big = (rows, max(1, int(params * 0.8) // rows))
    bias = (min(rows, params - big[0] * big[1]),)
    rest = params - big[0] * big[1] - bias[0]
    return {"fc1.bias": bias, "fc1.weight": big, "fc2.weight": (max(rest, 1),)}


def best_of(repeat: int, fn: Callable[[], object]) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=32)
    parser.add_argument("--params", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--trim", type=float, default=0.2)
    parser.add_argument("--f", type=int, default=4)
    parser.add_argument("--m", type=int, default=None, help="default: updates - f")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        from flwr.server.strategy import aggregate as flwr
    except ImportError:
        print("bench_aggregation: flwr is not installed; run bash scripts/setup.sh", file=sys.stderr)
        return 1
    m = args.m if args.m is not None else max(1, args.updates - args.f)

    rng = np.random.default_rng(args.seed)
    shapes = shapes_for(args.params)
    keys = sorted(shapes)
    floats = [{k: (rng.standard_normal(shapes[k]) * 0.01).astype(np.float32) for k in keys} for _ in range(args.updates)]
    samples = [int(rng.integers(1, 1000)) for _ in range(args.updates)]
    results = [([u[k] for k in keys], s) for u, s in zip(floats, samples)]
    fixed = [FixedUpdate(tensors={k: to_fixed(u[k]) for k in keys}, num_samples=s) for u, s in zip(floats, samples)]

    cases = [
        ("fedavg", RuleOptions(), lambda r: flwr.aggregate(r)),
        ("median", RuleOptions(), lambda r: flwr.aggregate_median(r)),
        ("trimmed-mean", RuleOptions(trim=args.trim), lambda r: flwr.aggregate_trimmed_avg(r, args.trim)),
        ("multi-krum", RuleOptions(f=args.f, m=m), lambda r: flwr.aggregate_krum(r, args.f, m)),
    ]

    def end_to_end(rule: str, options: RuleOptions) -> dict[str, np.ndarray]:
        ups = [FixedUpdate.from_float32(u, s) for u, s in zip(floats, samples)]
        return {k: to_float32(q) for k, q in apply_rule(rule, ups, options).items()}

    threads = {v: os.environ.get(v, "-") for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    threads["kernel threads"] = str(available_threads())
    print(
        f"{args.updates} updates x {sum(int(np.prod(s)) for s in shapes.values()):,} float32 params, "
        f"best of {args.repeat}; numpy {np.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, {threads}"
    )
    print(f"trimmed-mean trim={args.trim}; multi-krum f={args.f} m={m}")
    # numba loads (or, on a fresh checkout, compiles) the kernels on their first
    # call in a process: a one-off cost, timed here and kept out of the table.
    start = time.perf_counter()
    apply_rule("fedavg", fixed[:1], RuleOptions())
    end_to_end("fedavg", RuleOptions())
    print(f"first use of the compiled kernels in this process: {(time.perf_counter() - start) * 1e3:.0f} ms (not in the timings)")
    header = f"{'rule':<14}{'flwr ms':>10}{'exact rule ms':>15}{'end-to-end ms':>15}{'rule/flwr':>11}{'e2e/flwr':>10}  parity"
    print(header)
    print("-" * len(header))
    for rule, options, flower in cases:
        t_flwr, _ = best_of(args.repeat, lambda: flower(results))
        t_rule, ours = best_of(args.repeat, lambda: apply_rule(rule, fixed, options))
        t_e2e, _ = best_of(args.repeat, lambda: end_to_end(rule, options))
        # Parity against Flower in float64 on the same inputs: in quanta of 2**-32.
        reference = flower([([a.astype(np.float64) for a in arrays], s) for arrays, s in results])
        gap = max(float(np.max(np.abs(ours[k] - ref * 2.0**32))) for k, ref in zip(keys, reference))
        parity = f"max |ours - flwr| = {gap:.3f} quantum"
        print(
            f"{rule:<14}{t_flwr * 1e3:>10.1f}{t_rule * 1e3:>15.1f}{t_e2e * 1e3:>15.1f}"
            f"{t_rule / t_flwr:>10.2f}x{t_e2e / t_flwr:>9.2f}x  {parity}"
        )
    t_clip, _ = best_of(args.repeat, lambda: apply_rule("fedavg", fixed, RuleOptions(clip=0.5)))
    t_avg, _ = best_of(args.repeat, lambda: apply_rule("fedavg", fixed, RuleOptions()))
    print(f"clip=0.5 before fedavg adds {(t_clip - t_avg) * 1e3:.1f} ms (no Flower counterpart in aggregate.py)")

    base = encode_model({k: np.zeros(shapes[k], np.float32) for k in keys})
    blobs = [encode_update(u, num_samples=s, task=1, round=1, base="bafk") for u, s in zip(floats, samples)]
    print("\naggregate_round, bytes in -> model bytes + scores out (best of 2):")
    for rule, options, _ in cases:
        t_round, _ = best_of(min(2, args.repeat), lambda: aggregate_round(rule, base, blobs, options=options))
        print(f"  {rule:<14}{t_round * 1e3:>8.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
