"""How a simulation reports a model: every node evaluates it with the app's evaluate on its own
held-out data, and each metric is averaged weighted by the nodes' `num_examples`, as Flower's
strategies aggregate evaluation metrics. A built-in app also has a central test split (the union
of the nodes' held-out parts), whose accuracy the robustness experiment judges."""

from __future__ import annotations

import math
from concurrent.futures import Executor, Future
from functools import partial
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from node.apps.native import Dataset, Evaluation, FedApp


@dataclass(frozen=True)
class ModelEvaluation:
    accuracy: float | None  # on the central test split if there is one, else the nodes' weighted accuracy
    metrics: dict[str, float] = field(default_factory=dict)  # the nodes' weighted means
    examples: int = 0  # held-out samples the nodes evaluated on


def weighted_metrics(evaluations: Sequence[Evaluation]) -> dict[str, float]:
    """Each metric's mean over `evaluations`, weighted by num_examples (metrics some nodes lack
    are averaged over the nodes that report them)."""
    names = [name for name in dict.fromkeys(k for e in evaluations for k in e.metrics)]
    out: dict[str, float] = {}
    for name in names:
        pairs = [(e.num_examples, float(e.metrics[name])) for e in evaluations if name in e.metrics and e.num_examples > 0]
        total = sum(n for n, _ in pairs)
        if total and all(math.isfinite(v) for _, v in pairs):
            out[name] = math.fsum(n * v for n, v in pairs) / total
    return out


class Evaluator:
    """Evaluates models for a report: `evaluators()` gives each node's `evaluate`; `central`,
    when given, is the app and the test split whose accuracy is the report's test accuracy.
    `map(f, items)` runs the evaluations (the central one, then the nodes'; results in order):
    a thread pool's map runs them at once, the simulator's choice when its apps are thread-safe.
    `background`, when given, is an executor that `submit` hands the evaluations to instead,
    so the caller goes on (the simulator's low-priority threads: see `submit`)."""

    def __init__(
        self,
        evaluators: Callable[[], Sequence[Callable[[Mapping[str, np.ndarray]], Evaluation]]],
        central: tuple[FedApp, Dataset] | None = None,
        map: Callable[[Callable[[Any], Any], Sequence[Any]], Iterable[Any]] | None = None,
        background: Callable[[], Executor | None] | None = None,
    ) -> None:
        self.evaluators = evaluators
        self.central = central
        self.map = map
        self.background = background

    def __call__(self, weights: Mapping[str, np.ndarray]) -> ModelEvaluation:
        jobs = self._jobs(weights)
        return self._gather([job() for job in jobs] if self.map is None else list(self.map(_call, jobs)))

    def submit(self, weights: Mapping[str, np.ndarray]) -> PendingEvaluation:
        """The evaluation of `weights`, running: on `background()` when it gives an executor
        (the simulator's, whose threads take only what training and the protocol leave of the
        cores), else done here before it returns."""
        executor = None if self.background is None else self.background()
        if executor is None:
            return PendingEvaluation.finished(self(weights))
        return PendingEvaluation([executor.submit(job) for job in self._jobs(weights)], self._gather)

    def _jobs(self, weights: Mapping[str, np.ndarray]) -> list[Callable[[], Any]]:
        from node.training.trainer import accuracy

        evaluators = list(self.evaluators())  # here, in the caller's thread: may build trainers
        jobs: list[Callable[[], Any]] = [partial(evaluate, weights) for evaluate in evaluators]
        if self.central is not None:
            # First: the whole test split is as much work as all the nodes' parts together, so in a
            # pool it runs beside them instead of alone after them.
            jobs.insert(0, partial(accuracy, self.central[0], weights, self.central[1]))
        return jobs

    def _gather(self, results: list[Any]) -> ModelEvaluation:
        if self.central is not None:
            central_accuracy, *results = results
        evaluations: list[Evaluation] = results
        metrics = weighted_metrics(evaluations)
        central: float | None = central_accuracy if self.central is not None else metrics.get("accuracy")
        return ModelEvaluation(central, metrics, sum(e.num_examples for e in evaluations))


class PendingEvaluation:
    """A model's evaluation jobs, submitted: `done()` once all have run; `result()` waits for
    them and gathers their results (an error of one is raised there)."""

    def __init__(self, parts: list[Future[Any]], gather: Callable[[list[Any]], ModelEvaluation]) -> None:
        self._parts, self._gather = parts, gather
        self._value: ModelEvaluation | None = None

    @classmethod
    def finished(cls, value: ModelEvaluation) -> PendingEvaluation:
        pending = cls([], lambda _: value)
        pending._value = value
        return pending

    def done(self) -> bool:
        return all(part.done() for part in self._parts)

    def result(self) -> ModelEvaluation:
        if self._value is None:
            self._value = self._gather([part.result() for part in self._parts])
        return self._value


def _call(job: Callable[[], Any]) -> Any:
    return job()
