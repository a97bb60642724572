"""The FedLedger-native app: what a task trains, for users who do not write Flower apps.

An app is four plain functions, bundled in `FedApp`:

- `model()`: a fresh `nn.Module` (the caller seeds torch, so every node builds the same one);
- `load_data(node_config)`: the node's (train, test) `Dataset`s, from the node's config
  (`[app.node_config]` in node.toml; `partition-id` and `num-partitions` in a simulation, as
  Flower's simulation sets them);
- `train(model, data, config)`: local training, in place, from `config.seed` only;
- `evaluate(model, data)`: metrics of the model on held-out data (classification accuracy and
  loss by default).

`train` and `evaluate` default to minibatch SGD with momentum and cross-entropy, so a classifier
needs only a model and its data:

    from node.apps import FedApp
    app = FedApp(model=lambda: MyNet(), load_data=my_loader, input_shape=(1, 28, 28), num_classes=10)

A node runs it through `TorchTrainer` (node/training/trainer.py), which turns global weights
into the weight delta the node publishes.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Union

import numpy as np
import torch
from torch import nn

from node.errors import ConfigError


Scalar = Union[int, float, str, bool]
NodeConfig = Mapping[str, Scalar]

# What an app's code (FedApp or Flower) may raise that the node turns into one line: its
# exceptions, and SystemExit, so that an app's sys.exit neither ends a daemon nor ends
# `simulate` silently. Other BaseExceptions pass: KeyboardInterrupt is the operator's Ctrl-C,
# and GeneratorExit and the event loops' cancellations (trio.Cancelled, asyncio's) are the
# host's control flow, which a node must not swallow.
USER_ERRORS = (Exception, SystemExit)


def error_line(exc: BaseException) -> str:
    """What user code raised, on one line: `Kind: message`, or a SystemExit by its code, `SystemExit(3)`."""
    if isinstance(exc, SystemExit):
        return f"SystemExit({repr(exc.code)[:200]})"
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


@contextmanager
def users_code(name: str, what: str) -> Iterator[None]:
    """An error from the app's code is one ConfigError line `{name}: {what} raised ...`: a node
    sits the round out, a CLI prints the line. A ConfigError (the node's own helpers, called by
    the app) keeps its line."""
    try:
        yield
    except ConfigError:
        raise
    except USER_ERRORS as exc:
        raise ConfigError(f"{name}: {what} raised {error_line(exc)}") from None


@dataclass(frozen=True)
class Dataset:
    """Samples and their labels: x float32 of shape (n, *input_shape), y int64 class labels (n,)."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, idx: np.ndarray) -> "Dataset":
        return Dataset(self.x[idx], self.y[idx])


@dataclass(frozen=True)
class RoundConfig:
    """What a node's training gets for one round: the task spec's hyper-parameters, the round,
    this node's seed for it (node/protocol/seeds.py), and the task's run config."""

    round: int
    seed: int
    epochs: int
    batch_size: int
    lr: float
    run_config: Mapping[str, Scalar] = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluation:
    """An app's evaluation of one model on one node's held-out data. Federations report the mean
    of each metric weighted by `num_examples`, as Flower's strategies aggregate them."""

    num_examples: int
    metrics: Mapping[str, float]

    @property
    def accuracy(self) -> float | None:
        value = self.metrics.get("accuracy")
        return None if value is None else float(value)


def sgd_train(model: nn.Module, data: Dataset, config: RoundConfig) -> None:
    """Minibatch SGD (momentum 0.9) on cross-entropy, `config.epochs` passes over `data` in an
    order drawn from `config.seed`."""
    gen = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.from_numpy(data.x)
    y = torch.from_numpy(data.y)
    model.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), config.batch_size):
            batch = order[start : start + config.batch_size]
            opt.zero_grad()
            loss_fn(model(x[batch]), y[batch]).backward()
            opt.step()


def classify(model: nn.Module, data: Dataset, batch_size: int = 512) -> dict[str, float]:
    """Accuracy and mean cross-entropy of a classifier on `data`."""
    model.eval()
    correct, loss = 0, 0.0
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            x = torch.from_numpy(data.x[start : start + batch_size])
            y = torch.from_numpy(data.y[start : start + batch_size])
            out = model(x)
            correct += int((out.argmax(dim=1) == y).sum())
            loss += float(loss_fn(out, y))
    n = max(len(data), 1)
    return {"accuracy": correct / n, "loss": loss / n}


@dataclass(frozen=True)
class FedApp:
    """A FedLedger-native app (see the module's docstring). `input_shape` (one sample, without
    the batch dimension) and `num_classes` let a node check its data against the model before
    it registers: operators' files are reshaped to `input_shape`, images resized to it, and
    labels must lie in [0, num_classes)."""

    model: Callable[[], nn.Module]
    load_data: Callable[[NodeConfig], tuple[Dataset, Dataset]]
    train: Callable[[nn.Module, Dataset, RoundConfig], None] = sgd_train
    evaluate: Callable[[nn.Module, Dataset], Mapping[str, float]] = classify
    input_shape: tuple[int, ...] | None = None
    num_classes: int | None = None
