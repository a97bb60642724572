"""`fedledger simulate` with users' apps: what works (a FedApp REF, a model REF, a safetensors
initial model, a run config) and what is refused with one line (#15, "Bad input")."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from tests.conftest import run_cli
from tests.node.test_cli_errors import assert_one_line

pytestmark = pytest.mark.slow  # a process per case (~5 s each: torch's import)

APP = '''
from torch import nn
from node.apps import FedApp
from node.apps.builtin import partition_of
from node.training.data import load_digits_split

SEEN = []

def load_data(node_config):
    SEEN.append(dict(node_config))
    return partition_of(*load_digits_split(seed=0), node_config)

def model():
    return nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))

app = FedApp(model=model, load_data=load_data, input_shape=(64,), num_classes=10)
not_an_app = 42

def broken():
    raise RuntimeError("no GPU here")
'''


@pytest.fixture
def app_file(tmp_path):
    path = tmp_path / "my_app.py"
    path.write_text(APP)
    return path


def simulate(*args: str, cwd) -> object:
    return run_cli("simulate", "--nodes", "2", "--rounds", "1", "--epochs", "1", *args, cwd=cwd)


def test_a_fedapp_ref_federates_and_its_initial_model_can_come_from_a_file(app_file, tmp_path):
    # Prepare: an initial model of the app's shapes with other weights, saved as safetensors
    from node.apps.refs import load_ref

    net = load_ref(f"{app_file}:model")()
    rng = np.random.default_rng(1)
    weights = {k: rng.normal(0, 0.1, v.shape).astype(np.float32) for k, v in net.state_dict().items()}
    save_file(weights, str(tmp_path / "init.safetensors"))

    # Execute
    own = simulate("--app", "my_app.py:app", "--report", "own", "--json", cwd=tmp_path)
    filed = simulate("--app", "my_app.py:app", "--initial-model", "init.safetensors", "--json", cwd=tmp_path)

    # Assert: both finalize their round and learn; the file's model is a different round 0
    assert own.returncode == 0 and filed.returncode == 0, (own.stderr, filed.stderr)
    a, b = json.loads(own.stdout), json.loads(filed.stdout)
    assert a["config"]["app"] == "my_app.py:app"
    for summary in (a, b):
        assert len(summary["rounds"]) == 1 and summary["rounds"][0]["metrics"]["accuracy"] > 0.3
        assert summary["rounds"][0]["test_accuracy"] == summary["rounds"][0]["metrics"]["accuracy"]  # no central split
    assert a["initial_metrics"] != b["initial_metrics"]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--app", "missing.py:app"], "no file"),
        (["--app", "my_app.py:not_an_app"], "is a int, not a FedLedger FedApp or a Flower ClientApp"),
        (["--app", "my_app.py:nothing"], "has no attribute 'nothing'"),
        (["--app", "my_app"], "is not an app REF"),
        (["--app", "my_app.py:app", "--model", "my_app.py:broken"], "--model my_app.py:broken raised RuntimeError: no GPU here"),
        (["--app", "my_app.py:app", "--model", "my_app.py:not_an_app"], "not a callable that returns an nn.Module"),
        (["--app", "my_app.py:app", "--initial-model", "garbage.safetensors"], "not a model file"),
        (["--app", "resnet18", "--max-update-bytes", "1000000"], "more than the task's max_update_bytes 1,000,000"),
        (["--run-config", "lr=0.1 oops"], "'oops' is not KEY=VALUE"),
        (["--model", "my_app.py:model", "--initial-model", "garbage.safetensors"], "give one"),
    ],
)
def test_bad_apps_and_models_are_one_line(app_file, tmp_path, args, expected):
    (tmp_path / "garbage.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")

    proc = simulate(*args, cwd=tmp_path)

    line = assert_one_line(proc)
    assert expected in line, line
