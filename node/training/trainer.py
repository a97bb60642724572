"""A node's local training for a task: from global weights to the weight delta it publishes,
through the task's app (node/apps/native.py), and the app's evaluation of a model."""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Iterator, Mapping

import numpy as np
import torch

from aggregation import model_delta
from node.apps.native import Evaluation, FedApp, RoundConfig, Scalar, users_code
from node.errors import ConfigError
from node.training.data import Dataset
from node.training.model import load_numpy, state_to_numpy

if TYPE_CHECKING:
    from node.taskspec import TaskSpec


_threads_lock = threading.Lock()
_threads_users = 0  # callers inside `one_torch_thread`, in any thread
_threads_saved = 0  # torch's thread count before the first of them came in


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch on one thread while any caller, in any thread, is inside; the count from before the
    first caller is restored when the last one leaves. torch's count is process-wide (and OpenMP's
    per calling thread, so each caller sets it in its own thread): a plain save-set-restore in two
    threads at once could restore the wrong count, or leave another thread's training on two."""
    global _threads_users, _threads_saved
    with _threads_lock:
        if _threads_users == 0:
            _threads_saved = torch.get_num_threads()
        _threads_users += 1
        torch.set_num_threads(1)
    try:
        yield
    finally:
        with _threads_lock:
            _threads_users -= 1
            if _threads_users == 0:
                torch.set_num_threads(_threads_saved)


def _app(app: FedApp | str) -> FedApp:
    if isinstance(app, str):
        from node.apps.builtin import builtin_app

        return builtin_app(app)
    return app


def accuracy(app: FedApp | str, weights: Mapping[str, np.ndarray], data: Dataset) -> float:
    """The app's accuracy of `weights` on `data` (its evaluate's "accuracy" metric)."""
    name = f"app {app}" if isinstance(app, str) else "the task's app"
    app = _app(app)
    with users_code(name, "evaluate"), torch.no_grad():
        model = app.model()
        load_numpy(model, dict(weights))
        return float(app.evaluate(model, data)["accuracy"])


def trainer_for(spec: "TaskSpec", data: Dataset, test: Dataset | None = None, app: FedApp | None = None) -> "TorchTrainer":
    """The trainer a node uses for a task: the spec's app (`app`, when the caller resolved it
    already) and local training on `data`."""
    trainer = TorchTrainer(app or spec.model, data, test, epochs=spec.epochs, batch_size=spec.batch_size,
                           lr=spec.lr, run_config=spec.run_config or {})  # fmt: skip
    trainer.name = f"app {spec.app or spec.model}"
    return trainer


class TorchTrainer:
    """Implements `node.abc.Trainer` for a `FedApp`: its model, its training step, its evaluation."""

    def __init__(
        self,
        app: FedApp | str,
        train: Dataset,
        test: Dataset | None = None,
        epochs: int = 2,
        batch_size: int = 32,
        lr: float = 0.05,
        run_config: Mapping[str, Scalar] | None = None,
    ) -> None:
        self.name = f"app {app}" if isinstance(app, str) else "the task's app"
        self.app = _app(app)
        self.data = train
        self.test = test if test is not None else train
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.run_config = dict(run_config or {})

    @property
    def num_samples(self) -> int:
        return len(self.data)

    def train(self, global_weights: Mapping[str, np.ndarray], seed: int, round: int = 0) -> dict[str, np.ndarray]:
        """Train from `global_weights`; the delta is trained minus global (`aggregation.model_delta`:
        float32 for float parameters, int64 for integer buffers)."""
        # One thread: for small models the fastest (no fork-join per tiny matmul, no fight over
        # 2 cores between nodes), and a machine's core count then cannot change the float sums,
        # so the same seed trains the same delta on any machine with the same kernels.
        with one_torch_thread():
            return self._train(global_weights, seed, round)

    def _train(self, global_weights: Mapping[str, np.ndarray], seed: int, round: int) -> dict[str, np.ndarray]:
        config = RoundConfig(round=round, seed=seed, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                             run_config=self.run_config)  # fmt: skip
        with self._users_code("train"):
            model = self.app.model()
            load_numpy(model, dict(global_weights))
            self.app.train(model, self.data, config)
            trained = state_to_numpy(model)
        if sorted(trained) != sorted(global_weights):
            raise ConfigError(f"{self.name}: training changed the model's tensors (now {len(trained)}, "
                              f"the global model has {len(global_weights)})")  # fmt: skip
        bad = next((k for k, v in trained.items() if v.dtype.kind == "f" and not np.all(np.isfinite(v))), None)
        if bad is not None:
            raise ConfigError(f"{self.name}: training left NaN or infinity in {bad}")
        delta = model_delta(trained, global_weights)
        return {k: delta[k] for k in trained}  # in the state dict's order, which attacks' draws follow

    def evaluate(self, weights: Mapping[str, np.ndarray]) -> Evaluation:
        """The app's metrics of `weights` on this node's held-out data."""
        with self._users_code("evaluate"), torch.no_grad():
            model = self.app.model()
            load_numpy(model, dict(weights))
            metrics = dict(self.app.evaluate(model, self.test))
        if not all(isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) for k, v in metrics.items()):
            raise ConfigError(f"{self.name}: evaluate must return a dict of metric names to numbers")
        return Evaluation(len(self.test), {k: float(v) for k, v in metrics.items()})

    def _users_code(self, what: str) -> AbstractContextManager[None]:
        """An error from the app's code (model, train, evaluate, loading the weights into its
        model), SystemExit included, is one ConfigError line (node/apps/native.py `users_code`)."""
        return users_code(self.name, what)
