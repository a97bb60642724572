"""A Flower app's tensors against the task's pin before any round (#15, "Tensors beyond float32"):
a node's NumPyClient app is asked for its parameters (as Flower's server asks one client for the
initial ones) and refused with one line naming the first mismatch; a Message-API app cannot be
asked without training, so it is judged by its first reply. `simulate` and `task create` do the
same when the model comes from --model or --initial-model rather than from the app."""

from __future__ import annotations

import pytest

from node.apps.resolve import initial_model
from node.cli import main
from node.daemon.config import load_config
from node.daemon.startup import data_misfit
from node.errors import ConfigError
from node.taskspec import TaskSpec

APPS = '''
import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp
from torch import nn


class Net(nn.Module):  # the task's model: w F32[3, 2], b F32[2], steps I64[]
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3, 2))
        self.b = nn.Parameter(torch.zeros(2))
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))


class Wide(nn.Module):  # w is [4, 2]: not the task's
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(4, 2))
        self.b = nn.Parameter(torch.zeros(2))
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))


def client(arrays):
    class Client(NumPyClient):
        def get_parameters(self, config):
            return arrays

        def fit(self, parameters, config):
            return parameters, 1, {}

        def evaluate(self, parameters, config):
            return 0.0, 1, {"accuracy": 0.5}

    return ClientApp(client_fn=lambda context: Client().to_client())


class Silent(NumPyClient):  # no get_parameters: nothing to compare before it trains
    def fit(self, parameters, config):
        return parameters, 1, {}


fits = client([np.zeros((3, 2), np.float32), np.zeros(2, np.float32), np.zeros((), np.int64)])
float64 = client([np.zeros((3, 2)), np.zeros(2), np.zeros((), np.int64)])  # rounded to float32 when sent
too_wide = client([np.zeros((4, 2), np.float32), np.zeros(2, np.float32), np.zeros((), np.int64)])
float_steps = client([np.zeros((3, 2), np.float32), np.zeros(2, np.float32), np.zeros((), np.float32)])
two = client([np.zeros((3, 2), np.float32), np.zeros(2, np.float32)])
silent = ClientApp(client_fn=lambda context: Silent().to_client())
messages = ClientApp()


@messages.train()
def train(msg: Message, context: Context) -> Message:
    return Message(RecordDict({"arrays": msg.content["arrays"], "m": MetricRecord({"num-examples": 1})}), reply_to=msg)
'''

PIN = [["w", [3, 2], "F32"], ["b", [2], "F32"], ["steps", [], "I64"]]


@pytest.fixture
def node_dir(tmp_path):
    (tmp_path / "apps.py").write_text(APPS)
    return tmp_path


def node_with(node_dir, attr: str):
    (node_dir / "node.toml").write_text(f'[chain]\nrpc = "http://127.0.0.1:1"\n[app]\nref = "apps.py:{attr}"\n'
                                        '[app.node_config]\npartition-id = 0\n')  # fmt: skip
    return load_config(node_dir / "node.toml")


@pytest.mark.parametrize(
    "attr, expected",
    [
        ("fits", None),
        ("float64", None),
        ("too_wide", "the app's model does not fit the task: tensor w is F32[4, 2], the task pins F32[3, 2]"),
        ("float_steps", "the app's model does not fit the task: tensor steps is F32[], the task pins I64[]"),
        ("two", "app apps.py:two: get_parameters returned 2 arrays, the task pins 3"),
        ("silent", None),  # a NumPyClient without get_parameters: its first fit reply is checked
        ("messages", None),  # a Message-API app: likewise
    ],
)
def test_a_node_refuses_a_task_its_flower_apps_parameters_do_not_fit(node_dir, attr, expected):
    # Prepare
    config = node_with(node_dir, attr)
    spec = TaskSpec(app=f"apps.py:{attr}", params=PIN)
    # Execute
    why = data_misfit(config, spec)
    # Assert
    assert why == expected


def test_an_initial_model_from_elsewhere_than_the_flower_app_must_fit_it(node_dir, monkeypatch):
    monkeypatch.chdir(node_dir)
    # The app's parameters are the model's: the model is the task's.
    assert list(initial_model(TaskSpec(app="apps.py:fits"), 0, model_ref="apps.py:Net")) == ["w", "b", "steps"]
    # A Message-API app cannot be asked: its model is taken as given.
    assert list(initial_model(TaskSpec(app="apps.py:messages"), 0, model_ref="apps.py:Wide"))[0] == "w"
    with pytest.raises(ConfigError) as err:
        initial_model(TaskSpec(app="apps.py:fits"), 0, model_ref="apps.py:Wide")
    assert str(err.value) == ("--model apps.py:Wide does not fit app apps.py:fits: the app's model does not fit "
                              "the task: tensor w is F32[3, 2], the task pins F32[4, 2]")  # fmt: skip


def test_simulate_with_a_model_the_flower_app_does_not_train_is_one_line(node_dir, monkeypatch, capsys):
    monkeypatch.chdir(node_dir)

    code = main(["simulate", "--app", "apps.py:too_wide", "--model", "apps.py:Net", "--nodes", "2", "--rounds", "1"])

    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert err.strip() == ("fedledger: error: --model apps.py:Net does not fit app apps.py:too_wide: the app's model "
                           "does not fit the task: tensor w is F32[4, 2], the task pins F32[3, 2]")  # fmt: skip
