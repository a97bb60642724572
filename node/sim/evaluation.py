"""How a simulation reports a model: every node evaluates it with the app's evaluate on its own
held-out data, and each metric is averaged weighted by the nodes' `num_examples`, as Flower's
strategies aggregate evaluation metrics. A built-in app also has a central test split (the union
of the nodes' held-out parts), whose accuracy the robustness experiment judges."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

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
    when given, is the app and the test split whose accuracy is the report's test accuracy."""

    def __init__(
        self,
        evaluators: Callable[[], Sequence[Callable[[Mapping[str, np.ndarray]], Evaluation]]],
        central: tuple[FedApp, Dataset] | None = None,
    ) -> None:
        self.evaluators = evaluators
        self.central = central

    def __call__(self, weights: Mapping[str, np.ndarray]) -> ModelEvaluation:
        from node.training.trainer import accuracy

        evaluations = [evaluate(weights) for evaluate in self.evaluators()]
        metrics = weighted_metrics(evaluations)
        if self.central is not None:
            central: float | None = accuracy(self.central[0], weights, self.central[1])
        else:
            central = metrics.get("accuracy")
        return ModelEvaluation(central, metrics, sum(e.num_examples for e in evaluations))
