"""A task spec is written by whoever created the task, and its app REF names code: a daemon never
imports it (importing a module runs it). It runs its own `[app] ref`, or a built-in app."""

from __future__ import annotations

import pytest

from node.apps.resolve import app_of, node_trainer
from node.errors import ConfigError
from node.taskspec import TaskSpec

EVIL = """
from pathlib import Path
Path(__file__).with_name("ran").write_text("the task owner's code ran on this node")
app = None
"""


def test_a_daemon_never_imports_the_app_a_task_spec_names(tmp_path):
    (tmp_path / "evil.py").write_text(EVIL)
    spec = TaskSpec(app=f"{tmp_path}/evil.py:app")

    with pytest.raises(ConfigError, match=r"set \[app\] ref in node.toml"):
        app_of(spec, trust_spec=False)
    with pytest.raises(ConfigError, match=r"set \[app\] ref in node.toml"):
        node_trainer(spec, {}, trust_spec=False)
    assert not (tmp_path / "ran").exists()


def test_a_daemon_runs_its_own_app_or_a_builtin_one(tmp_path):
    (tmp_path / "mine.py").write_text("from node.apps.builtin import DIGITS_MLP as app\n")
    spec = TaskSpec(app="elsewhere/their_copy.py:app")

    own = app_of(spec, "mine.py:app", tmp_path, trust_spec=False)  # relative to the node's directory
    builtin = app_of(TaskSpec(model="mnist-cnn"), trust_spec=False)

    from node.apps.builtin import BUILTIN_APPS

    assert own is BUILTIN_APPS["digits-mlp"] and builtin is BUILTIN_APPS["mnist-cnn"]


def test_a_fedapps_failures_are_one_configerror_line():
    """A FedLedger app's exception, or NaN left by its training, is a ConfigError naming the app:
    a daemon sits the round out on it (node/protocol/node.py), the CLI prints it as one line."""
    import numpy as np
    import torch

    from node.apps import FedApp
    from node.apps.builtin import DIGITS_MLP
    from node.training.model import seeded_state
    from node.training.trainer import trainer_for

    def exploding(model, data, config):
        raise RuntimeError("CUDA out of memory")

    def poisoning(model, data, config):
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))

    train, test = DIGITS_MLP.load_data({"partition-id": 0, "num-partitions": 4})
    base = seeded_state(DIGITS_MLP.model, 0)
    spec = TaskSpec(app="mine.py:app", epochs=1)
    for step, expected in ((exploding, "app mine.py:app: train raised RuntimeError: CUDA out of memory"),
                           (poisoning, "app mine.py:app: training left NaN or infinity in 0.weight")):  # fmt: skip
        app = FedApp(DIGITS_MLP.model, DIGITS_MLP.load_data, train=step)
        with pytest.raises(ConfigError) as caught:
            trainer_for(spec, train, test, app=app).train(base, seed=1)
        assert str(caught.value) == expected
    broken_eval = FedApp(DIGITS_MLP.model, DIGITS_MLP.load_data, evaluate=lambda model, data: {"accuracy": "high"})
    with pytest.raises(ConfigError, match="evaluate must return a dict of metric names to numbers"):
        trainer_for(spec, train, test, app=broken_eval).evaluate(base)
    assert np.isfinite(trainer_for(spec, train, test, app=DIGITS_MLP).train(base, seed=1)["0.weight"]).all()
