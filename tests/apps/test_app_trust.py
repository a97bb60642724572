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
