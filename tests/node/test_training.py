"""Data partitions, the model registry and the torch trainer."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.training import (
    TorchTrainer,
    accuracy,
    dirichlet_partition,
    iid_partition,
    initial_weights,
    load_digits_split,
)
from node.training.model import build_model


@pytest.fixture(scope="module")
def digits():
    return load_digits_split(seed=7)


@given(n=st.integers(10, 2000), parts=st.integers(1, 10), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=50, deadline=None)
def test_iid_partition_is_a_disjoint_cover(n, parts, seed):
    shards = iid_partition(n, parts, seed)

    joined = np.concatenate(shards)
    assert len(shards) == parts
    assert sorted(joined.tolist()) == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_dirichlet_partition_covers_and_skews(digits):
    train, _ = digits

    shards = dirichlet_partition(train.y, 5, alpha=0.1, seed=3)

    assert sorted(np.concatenate(shards).tolist()) == list(range(len(train)))
    assert min(map(len, shards)) >= 10
    # Strong skew: on average a shard is dominated by few classes.
    top_share = [np.bincount(train.y[s], minlength=10).max() / len(s) for s in shards]
    assert np.mean(top_share) > 0.3
    assert all(np.array_equal(a, b) for a, b in zip(shards, dirichlet_partition(train.y, 5, alpha=0.1, seed=3)))


def test_dirichlet_rejects_bad_alpha(digits):
    with pytest.raises(ValueError, match="alpha"):
        dirichlet_partition(digits[0].y, 3, alpha=0.0, seed=1)


def test_digits_split_is_stratified_and_disjoint(digits):
    train, test = digits

    assert len(train) + len(test) == 1797
    assert set(np.unique(test.y)) == set(range(10))
    assert 0.0 <= train.x.min() and train.x.max() <= 1.0


def test_initial_weights_are_seeded_and_leave_global_rng_alone():
    import torch

    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = initial_weights("digits-mlp", 5)
    after = torch.rand(1)
    b = initial_weights("digits-mlp", 5)
    c = initial_weights("digits-mlp", 6)

    assert before.item() == after.item()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a)
    assert sum(v.size for v in a.values()) == 17226


def test_training_improves_accuracy_and_is_reproducible(digits):
    train, test = digits
    w0 = initial_weights("digits-mlp", 1)
    trainer = TorchTrainer("digits-mlp", train.subset(iid_partition(len(train), 4, 1)[0]), test, epochs=5)

    delta = trainer.train(w0, seed=9)
    again = trainer.train(w0, seed=9)
    w1 = {k: w0[k] + delta[k] for k in w0}

    assert set(delta) == set(w0) and all(delta[k].dtype == np.float32 for k in delta)
    assert all(np.array_equal(delta[k], again[k]) for k in delta)
    assert accuracy("digits-mlp", w1, test) > accuracy("digits-mlp", w0, test) + 0.3


def test_unknown_model_is_named():
    from node.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown model 'resnet'; known: digits-mlp, mnist-cnn, resnet18"):
        build_model("resnet")


_TRAIN_ONCE = """
import hashlib, sys
from node.reproducible import pin_cpu_kernels
pin_cpu_kernels()
import torch
from node.training import TorchTrainer, initial_weights, load_digits_split, partition
train, _ = load_digits_split(seed=7)
shard = train.subset(partition(train, 4, None, 7)[0])
delta = TorchTrainer("digits-mlp", shard, epochs=2).train(initial_weights("digits-mlp", 7), seed=1)
print(torch.backends.cpu.get_cpu_capability(), hashlib.sha256(b"".join(delta[k].tobytes() for k in sorted(delta))).hexdigest())
"""


@pytest.mark.parametrize("machine", [
    {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"},
    {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AVX512"},
])  # fmt: skip
def test_pinned_kernels_train_the_same_whatever_kernels_the_machine_would_pick(machine):
    """A process that pins its kernels (as simulations do) ignores what the CPU, or the environment,
    would choose: AVX2 and AVX-512 paths asked for here give the portable kernels' exact bits."""
    import os
    import subprocess
    import sys

    def run(env: dict[str, str]) -> str:
        full = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR")}
        out = subprocess.run([sys.executable, "-c", _TRAIN_ONCE], env={**full, **env}, capture_output=True, text=True,
                             check=True, timeout=300)  # fmt: skip
        return out.stdout.split()[-2:]

    capability, digest = run(machine)
    assert capability == "DEFAULT"
    assert [capability, digest] == run({})


def test_this_test_process_trains_with_the_pinned_kernels():
    """tests/conftest.py pins them before anything imports torch: committed numbers hold on any x86-64."""
    import torch

    from node.reproducible import kernels_pinned

    assert kernels_pinned() and torch.backends.cpu.get_cpu_capability() == "DEFAULT"
