"""Apps at start-up (#15): a node whose [app] ref does not import, or whose app's model is not
the tensors a joined task pins, stops with one line and status 1 before it registers; `task
create` with an app that does not import, or an initial model over --max-update-bytes, is one
line too, before anything is stored or sent."""

from __future__ import annotations

import numpy as np
import pytest

from aggregation import encode_model
from node.chain.anvil import Anvil
from tests.conftest import run_cli
from tests.daemon.test_startup import ENV, create_task, deploy, new_node, one_line

pytestmark = pytest.mark.slow  # anvil, and CLI processes that load torch

# The digits app's data and train step with mnist-cnn's model: its tensors are not digits-mlp's.
CNN_SHAPED = """
from dataclasses import replace

from node.apps.builtin import BUILTIN_APPS
from node.apps.mnist import mnist_cnn

app = replace(BUILTIN_APPS["digits-mlp"], model=mnist_cnn)
"""


@pytest.fixture
def anvil():
    with Anvil(accounts=2) as chain:
        yield chain


def with_app(config, ref: str) -> None:
    config.write_text(config.read_text() + f'\n[app]\nref = "{ref}"\n')


BROKEN_APPS = [
    ("import a_module_nobody_installed\n", "does not import: ModuleNotFoundError: No module named 'a_module_nobody_installed'"),
    ("raise RuntimeError('no GPU here')\n", "does not import: RuntimeError: no GPU here"),
    ("app = 42\n", "is a int, not a FedLedger FedApp or a Flower ClientApp"),
    (None, "no file"),
]


def test_an_app_ref_that_does_not_import_stops_the_node_before_it_registers(anvil, tmp_path):
    # Prepare: a funded node whose [app] ref is broken in each way in turn (or names no file).
    client = deploy(tmp_path, anvil.url)
    config, address = new_node(tmp_path, anvil)
    assert run_cli("node", "fund", "--config", str(config), "--dev-account", "1").returncode == 0
    with_app(config, "my_app.py:app")
    for source, expected in BROKEN_APPS:
        app_file = config.parent / "my_app.py"
        if source is None:
            app_file.unlink()
        else:
            app_file.write_text(source)

        # Execute
        line = one_line(run_cli("node", "run", "--config", str(config), env=ENV, timeout=120))

        # Assert: one line naming the file, the key and the cause; nothing registered.
        assert f"{config} [app] ref: app my_app.py:app" in line and expected in line, line
        assert not client.node_info(address)[0]


def test_an_app_whose_model_is_not_the_joined_tasks_stops_the_node_before_it_registers(anvil, tmp_path):
    # Prepare: a digits-mlp task in the node's own store, joined, and an app of mnist-cnn's shape.
    client = deploy(tmp_path, anvil.url)
    config, address = new_node(tmp_path, anvil)
    assert run_cli("node", "fund", "--config", str(config), "--dev-account", "1").returncode == 0
    task = create_task(client, config.parent / "ipfs")
    (config.parent / "cnn_app.py").write_text(CNN_SHAPED)
    with_app(config, "cnn_app.py:app")

    # Execute: `node join` refuses it; joined by hand, `node run` stops.
    refused = one_line(run_cli("node", "join", "--config", str(config), "--task", str(task)))
    config.write_text(config.read_text().replace("join = []", f"join = [{task}]"))
    line = one_line(run_cli("node", "run", "--config", str(config), env=ENV, timeout=120))

    # Assert
    for said in (refused, line):
        assert "the app's model does not fit the task" in said and "the model's tensors are not the task's" in said, said
    assert line.startswith(f"fedledger: error: task {task} cannot use this node's data"), line
    assert not client.node_info(address)[0]


def test_task_create_with_a_bad_app_or_an_oversized_model_is_one_line(anvil, tmp_path):
    # Prepare
    client = deploy(tmp_path, anvil.url)
    big = tmp_path / "big.safetensors"
    big.write_bytes(encode_model({"w": np.zeros(300_000, np.float32)}))  # 1.2 MB
    create = ("task", "create", "--deployment", str(tmp_path / "deployment.json"), "--dev-account", "0",
              "--rule", "fedavg", "--reward", "1",
              "--rounds", "1", "--committee", "1", "--repo", str(tmp_path / "ipfs"))  # fmt: skip

    # Execute
    missing = one_line(run_cli(*create, "--app", "does_not_exist.py:app", cwd=tmp_path))
    oversized = one_line(run_cli(*create, "--initial-model", str(big), "--max-update-bytes", "1000000", cwd=tmp_path))

    # Assert: both said before any task exists.
    assert "app does_not_exist.py:app: no file" in missing, missing
    assert f"--initial-model {big} is" in oversized and "more than the task's max_update_bytes" in oversized, oversized
    assert client.task_count() == 0
