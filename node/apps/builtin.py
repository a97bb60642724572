"""The apps a task can name without code of its own (`--app digits-mlp`).

Each is a `FedApp` whose data, without a `data-path` in the node config, is a bundled dataset
split across the federation: `partition-id` of `num-partitions` shards, IID or, with
`partition-alpha`, Dirichlet label skew (node/training/data.py), dealt from `partition-seed`.
With a `data-path` (a daemon's `[data]`), it is the operator's own file, shaped to the model.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

from torch import nn

from node.apps.mnist import load_mnist_split, mnist_cnn
from node.apps.native import FedApp, NodeConfig
from node.apps.resnet import resnet18
from node.errors import ConfigError
from node.training.data import Dataset, load_digits_split, partition


def config_int(config: NodeConfig, key: str, default: int | None = None) -> int:
    value = config.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"node config {key} must be an integer, not {str(value)[:40]!r}")
    return value


def partition_of(train: Dataset, test: Dataset, config: NodeConfig) -> tuple[Dataset, Dataset]:
    """This node's shard of a bundled dataset: shard `partition-id` of `num-partitions` of the
    training split (IID, or Dirichlet(`partition-alpha`)), and the same-numbered IID part of the
    test split as its held-out data, so the parts of all nodes make up the whole test split."""
    part, parts, seed, alpha = partition_keys(config)
    key = (id(train), id(test), parts, alpha, seed)
    cached = _SHARDS.get(key)
    # The entry holds the datasets themselves: while it lives their ids cannot be reused by other
    # data (a caller that loads its data afresh for each node gets a new split, not a stale one).
    if cached is None or cached[0] is not train or cached[1] is not test:
        if len(_SHARDS) >= 8:
            _SHARDS.clear()
        cached = (train, test, partition(train, parts, alpha, seed), partition(test, min(parts, len(test)), None, seed))
        _SHARDS[key] = cached
    _train, _test, shards, tests = cached
    return train.subset(shards[part]), test.subset(tests[part % len(tests)])


# A simulation's nodes share one split: (train, test, train shards, test parts) by the datasets' ids.
_SHARDS: dict[tuple, tuple[Dataset, Dataset, list, list]] = {}


def partition_keys(config: NodeConfig) -> tuple[int, int, int, float | None]:
    """(partition-id, num-partitions, partition-seed, partition-alpha) of a node config, checked."""
    part, parts = config_int(config, "partition-id", 0), config_int(config, "num-partitions", 1)
    seed = config_int(config, "partition-seed", 0)
    alpha = config.get("partition-alpha")
    if alpha is not None and (not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not alpha > 0):
        raise ConfigError(f"node config partition-alpha must be a positive number, not {str(alpha)[:40]!r}")
    if not 0 <= part < parts:
        raise ConfigError(f"node config partition-id must be in [0, num-partitions={parts}), not {part}")
    return part, parts, seed, None if alpha is None else float(alpha)


class BundledData:
    """A `load_data` that reads `data-path` (with `data-format`; held-out data from `test-path`,
    else the training data itself) when the node config names one, and else deals this node's
    partition of `bundled(partition-seed)`."""

    def __init__(self, bundled: Callable[[int], tuple[Dataset, Dataset]], app: Callable[[], FedApp]) -> None:
        self.bundled, self.app = bundled, app

    def __call__(self, config: NodeConfig) -> tuple[Dataset, Dataset]:
        path = config.get("data-path")
        if path is not None:
            from node.training.localdata import load_for_app

            fmt = str(config.get("data-format", "auto"))
            data = load_for_app(str(path), fmt, self.app())
            test = config.get("test-path")
            return data, data if test is None else load_for_app(str(test), fmt, self.app())
        train, test = self.bundled(config_int(config, "partition-seed", 0))
        return partition_of(train, test, config)

    def central(self, config: NodeConfig) -> Dataset:
        """The whole test split the nodes' held-out parts come from, which simulations report on."""
        return self.bundled(config_int(config, "partition-seed", 0))[1]


@lru_cache(maxsize=4)
def _digits(seed: int) -> tuple[Dataset, Dataset]:
    return load_digits_split(seed=seed)


def _digits_mlp() -> nn.Module:
    # 64 -> 128 -> 64 -> 10: about 17k parameters, ~93% on digits in a few epochs.
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))


DIGITS_MLP = FedApp(
    model=_digits_mlp,
    load_data=BundledData(_digits, lambda: DIGITS_MLP),
    input_shape=(64,),
    num_classes=10,
)

MNIST_CNN = FedApp(
    model=mnist_cnn,
    load_data=BundledData(load_mnist_split, lambda: MNIST_CNN),
    input_shape=(1, 28, 28),
    num_classes=10,
)

# ResNet-18 on the same MNIST split: ~11.2M parameters, for scale tests.
RESNET18 = FedApp(
    model=resnet18,
    load_data=BundledData(load_mnist_split, lambda: RESNET18),
    input_shape=(1, 28, 28),
    num_classes=10,
)

BUILTIN_APPS: dict[str, FedApp] = {"digits-mlp": DIGITS_MLP, "mnist-cnn": MNIST_CNN, "resnet18": RESNET18}


def builtin_app(name: str) -> FedApp:
    try:
        return BUILTIN_APPS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(sorted(BUILTIN_APPS))}, or an app REF (file.py:attr, package.module:attr)") from None
