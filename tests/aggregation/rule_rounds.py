"""Fixed rounds for every rule, built without any RNG whose stream could change.

The inputs come from SHA-256 (not numpy's generators, whose streams numpy
does not promise to keep across versions), so the golden vectors in
test_rule_determinism.py pin the aggregation code alone. Run as a script to
print each round's digest; the determinism tests run it in subprocesses under
other thread counts, SIMD levels and BLAS kernels:

    .venv/bin/python tests/aggregation/rule_rounds.py [TORCH_THREADS]
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

if __name__ == "__main__":  # run as a script from anywhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from aggregation.abc import RuleOptions  # noqa: E402
from aggregation.api import aggregate_round  # noqa: E402
from aggregation.update import encode_model, encode_update  # noqa: E402

SHAPES = {"conv.weight": (4, 3, 3, 3), "fc.bias": (10,), "fc.weight": (10, 36)}

# name -> (rule, options): every rule, and clipping in front of two of them.
ROUNDS: dict[str, tuple[str, RuleOptions]] = {
    "fedavg": ("fedavg", RuleOptions(max_samples=300)),
    "median": ("median", RuleOptions()),
    "trimmed-mean": ("trimmed-mean", RuleOptions(trim=0.2)),
    "multi-krum": ("multi-krum", RuleOptions(f=2, m=4, max_samples=300)),
    "fedavg+clip": ("fedavg", RuleOptions(clip=0.05)),
    "median+clip": ("median", RuleOptions(clip=0.05)),
}


def hashed_floats(label: str, shape: tuple[int, ...], scale: float) -> np.ndarray:
    """float32 values in [-scale/2, scale/2) derived from SHA-256 of `label` (exact arithmetic)."""
    count = int(np.prod(shape))
    stream = b"".join(hashlib.sha256(f"{label}/{i}".encode()).digest() for i in range((count * 4 + 31) // 32))
    words = np.frombuffer(stream[: count * 4], dtype="<u4").astype(np.float64)
    # words / 2**32 is exact; the product and the cast to float32 are IEEE-rounded.
    return ((words / 2.0**32 - 0.5) * scale).astype(np.float32).reshape(shape)


def round_inputs() -> tuple[bytes, list[bytes]]:
    """The base model and 7 updates (canonical order): 5 honest, 1 attacker, 1 duplicate."""
    base = encode_model({k: hashed_floats(f"base/{k}", s, 2.0) for k, s in SHAPES.items()})
    common = {k: hashed_floats(f"common/{k}", s, 0.02) for k, s in SHAPES.items()}
    updates = []
    for i in range(5):
        delta = {k: common[k] + hashed_floats(f"noise/{i}/{k}", s, 0.01) for k, s in SHAPES.items()}
        updates.append(encode_update(delta, num_samples=100 * (i + 1), task=1, round=1, base="bafkbase"))
    attack = {k: -3.0 * common[k] for k in SHAPES}  # 2.7x the median norm: inside scores.NORM_BOUND (3)
    updates.append(encode_update(attack, num_samples=10**6, task=1, round=1, base="bafkbase"))
    updates.append(updates[1])  # a copy of participant 1's update
    return base, updates


def run_round(name: str, updates: list[bytes] | None = None) -> tuple[bytes, list[int]]:
    """The new model bytes and scores of round `name` (default: the canonical inputs)."""
    base, canonical = round_inputs()
    rule, options = ROUNDS[name]
    result = aggregate_round(rule, base, canonical if updates is None else updates, options=options)
    return result.model, result.scores_wad


def digests() -> dict[str, dict[str, object]]:
    out = {}
    for name in ROUNDS:
        model, scores = run_round(name)
        out[name] = {"sha256": hashlib.sha256(model).hexdigest(), "scores": [str(s) for s in scores]}
    return out


if __name__ == "__main__":
    if len(sys.argv) > 1:
        import torch

        torch.set_num_threads(int(sys.argv[1]))
    print(json.dumps(digests(), sort_keys=True))
