"""Local SGD on a node's private data, producing the weight delta it publishes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import numpy as np
import torch
from torch import nn

from aggregation import model_delta
from node.training.data import Dataset
from node.training.model import build_model, load_numpy, state_to_numpy

if TYPE_CHECKING:
    from node.taskspec import TaskSpec


def accuracy(model_name: str, weights: Mapping[str, np.ndarray], data: Dataset) -> float:
    model = build_model(model_name)
    load_numpy(model, dict(weights))
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(data.x)).argmax(dim=1).numpy()
    return float((pred == data.y).mean())


def trainer_for(spec: "TaskSpec", data: Dataset, test: Dataset | None = None) -> "TorchTrainer":
    """The trainer a node uses for a task: the spec's model and local training on `data`."""
    return TorchTrainer(spec.model, data, test, epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr)


class TorchTrainer:
    """Implements `node.abc.Trainer` with plain minibatch SGD (with momentum)."""

    def __init__(
        self,
        model_name: str,
        train: Dataset,
        test: Dataset | None = None,
        epochs: int = 2,
        batch_size: int = 32,
        lr: float = 0.05,
    ) -> None:
        self.model_name = model_name
        self.data = train
        self.test = test if test is not None else train
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr

    @property
    def num_samples(self) -> int:
        return len(self.data)

    def train(self, global_weights: Mapping[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
        """Train from `global_weights`; the delta is trained minus global (`aggregation.model_delta`:
        float32 for float parameters, int64 for integer buffers)."""
        threads = torch.get_num_threads()
        # One thread: for models this small it is the fastest (no fork-join per tiny matmul, no
        # fight over 2 cores between nodes), and a machine's core count then cannot change the
        # float sums, so the same seed trains the same delta on any machine with the same kernels.
        torch.set_num_threads(1)
        try:
            return self._train(global_weights, seed)
        finally:
            torch.set_num_threads(threads)

    def _train(self, global_weights: Mapping[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
        model = build_model(self.model_name)
        load_numpy(model, dict(global_weights))
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.SGD(model.parameters(), lr=self.lr, momentum=0.9)
        loss_fn = nn.CrossEntropyLoss()
        x = torch.from_numpy(self.data.x)
        y = torch.from_numpy(self.data.y)
        model.train()
        for _ in range(self.epochs):
            order = torch.randperm(len(y), generator=gen)
            for start in range(0, len(y), self.batch_size):
                batch = order[start : start + self.batch_size]
                opt.zero_grad()
                loss_fn(model(x[batch]), y[batch]).backward()
                opt.step()
        trained = state_to_numpy(model)
        delta = model_delta(trained, global_weights)
        return {k: delta[k] for k in trained}  # in the state dict's order, which attacks' draws follow

    def evaluate(self, weights: Mapping[str, np.ndarray]) -> float:
        return accuracy(self.model_name, weights, self.test)
