"""An app that calls sys.exit (#15, "Bad input"): whichever of its functions does it (model,
load_data, train, evaluate; a Flower client_fn, fit, evaluate, train handler; the module's import),
it is one ConfigError line `app REF: WHAT raised SystemExit(CODE)` a node sits the round out on and
`simulate` prints before exit 1, never an exit of the node. Ctrl-C (KeyboardInterrupt) stays the
operator's: it is not turned into a line."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from flwr.app import Context, Message
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp
from torch import nn

from node.apps import FedApp
from node.apps.flower import FlowerTrainer
from node.apps.refs import load_ref
from node.apps.resolve import initial_model, node_trainer
from node.cli import main
from node.errors import ConfigError
from node.taskspec import TaskSpec
from node.training.data import Dataset
from node.training.trainer import TorchTrainer

NODE = {"partition-id": 0, "num-partitions": 2}
DATA = Dataset(np.zeros((8, 4), np.float32), np.zeros(8, np.int64))
WEIGHTS = {"w": np.zeros((2, 3), np.float32)}


def exits(code):
    def call(*args, **kwargs):
        sys.exit(code)

    return call


def fedapp(**overrides) -> FedApp:
    fields = {"model": lambda: nn.Linear(4, 2), "load_data": lambda node_config: (DATA, DATA), **overrides}
    return FedApp(**fields)


@pytest.mark.parametrize(
    "what, app, expected",
    [
        ("train", fedapp(train=exits(3)), "app mine.py:app: train raised SystemExit(3)"),
        ("train", fedapp(model=exits("no model")), "app mine.py:app: train raised SystemExit('no model')"),
        ("evaluate", fedapp(evaluate=exits(None)), "app mine.py:app: evaluate raised SystemExit(None)"),
    ],
)
def test_a_fedapp_that_calls_sys_exit_is_one_config_error_line(what, app, expected):
    # Prepare
    trainer = TorchTrainer(app, DATA)
    trainer.name = "app mine.py:app"
    weights = {k: v.detach().numpy() for k, v in nn.Linear(4, 2).state_dict().items()}
    # Execute
    with pytest.raises(ConfigError) as err:
        trainer.train(weights, seed=1) if what == "train" else trainer.evaluate(weights)
    # Assert
    assert str(err.value) == expected


def test_a_fedapp_whose_load_data_or_model_calls_sys_exit_at_start_up_is_one_line(monkeypatch):
    # Prepare: the app is a REF's attribute, as `--app` names it.
    import node.apps.resolve as resolve

    apps = {"loads.py:app": fedapp(load_data=exits(2)), "builds.py:app": fedapp(model=exits(4))}
    monkeypatch.setattr(resolve, "load_ref", lambda ref, base_dir=None: apps[ref])
    # Execute / Assert
    with pytest.raises(ConfigError, match=r"^app loads.py:app: load_data raised SystemExit\(2\)$"):
        node_trainer(TaskSpec(app="loads.py:app"), NODE)
    with pytest.raises(ConfigError, match=r"^app builds.py:app: model raised SystemExit\(4\)$"):
        initial_model(TaskSpec(app="builds.py:app"), 0)


def numpy_app(client_fn=None, fit=None, evaluate=None) -> ClientApp:
    class Client(NumPyClient):
        def fit(self, parameters, config):
            return fit(parameters) if fit else (parameters, 1, {})

        def evaluate(self, parameters, config):
            return evaluate(parameters) if evaluate else (0.0, 1, {})

    return ClientApp(client_fn=client_fn or (lambda context: Client().to_client()))


def message_app() -> ClientApp:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        sys.exit(5)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        sys.exit(6)

    return app


def exiting_client_fn(context):
    sys.exit(3)


FLOWER_EXITS = {
    "client_fn": (numpy_app(client_fn=exiting_client_fn), "train", "fit raised SystemExit(3)"),
    "fit": (numpy_app(fit=exits(7)), "train", "fit raised SystemExit(7)"),
    "evaluate": (numpy_app(evaluate=exits("bye")), "evaluate", "evaluate raised SystemExit('bye')"),
    "train handler": (message_app(), "train", "train raised SystemExit(5)"),
    "evaluate handler": (message_app(), "evaluate", "evaluate raised SystemExit(6)"),
}


@pytest.mark.parametrize("case", list(FLOWER_EXITS))
def test_a_flower_app_that_calls_sys_exit_is_one_config_error_line(case):
    # Prepare
    app, call, expected = FLOWER_EXITS[case]
    trainer = FlowerTrainer(app, TaskSpec(app="exits.py:app"), NODE)
    # Execute
    with pytest.raises(ConfigError) as err:
        trainer.train(WEIGHTS, seed=1, round=1) if call == "train" else trainer.evaluate(WEIGHTS)
    # Assert
    assert str(err.value) == f"app exits.py:app: {expected}"


def test_ctrl_c_in_an_app_is_left_to_the_operator():
    def interrupted(parameters):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        FlowerTrainer(numpy_app(fit=interrupted), TaskSpec(app="i.py:app"), NODE).train(WEIGHTS, seed=1)
    with pytest.raises(KeyboardInterrupt):
        TorchTrainer(fedapp(train=lambda *a: (_ for _ in ()).throw(KeyboardInterrupt())), DATA).train(
            {k: v.detach().numpy() for k, v in nn.Linear(4, 2).state_dict().items()}, seed=1
        )


def test_a_module_that_calls_sys_exit_on_import_is_one_line(tmp_path):
    (tmp_path / "quits.py").write_text("import sys\nsys.exit(9)\n")
    with pytest.raises(ConfigError, match=r"^app quits.py:app does not import: SystemExit\(9\)$"):
        load_ref("quits.py:app", tmp_path)


EXITING_APP = '''
import sys

import numpy as np
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp


class Client(NumPyClient):
    def get_parameters(self, config):
        return [np.zeros((3, 2), np.float32)]

    def fit(self, parameters, config):
        sys.exit(3)

    def evaluate(self, parameters, config):
        return 0.5, 4, {"accuracy": 0.5}


def exit_at_start(context):
    sys.exit(4)


app = ClientApp(client_fn=lambda context: Client().to_client())
starts = ClientApp(client_fn=exit_at_start)
'''


@pytest.mark.parametrize(
    "ref, expected",
    [
        ("exiting.py:app", "app exiting.py:app: fit raised SystemExit(3)"),
        ("exiting.py:starts", "app exiting.py:starts: get_parameters raised SystemExit(4)"),
    ],
)
def test_simulate_with_an_app_that_calls_sys_exit_prints_one_line_and_exits_1(tmp_path, monkeypatch, capsys, ref, expected):
    # Prepare
    (tmp_path / "exiting.py").write_text(EXITING_APP)
    monkeypatch.chdir(tmp_path)
    # Execute: in-process, so a SystemExit that escaped would end this test as a SystemExit.
    code = main(["simulate", "--app", ref, "--nodes", "2", "--rounds", "1", "--epochs", "1", "--json"])
    # Assert
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("fedledger: error: ") and expected in err, err


def test_a_node_sits_the_round_out_when_its_app_calls_sys_exit(tmp_path, caplog):
    # Prepare: a task on an embedded chain, one node whose app exits in fit, the daemon's round
    # code (ProtocolNode, sitting app failures out as a daemon does).
    from functools import partial

    from node.chain import deploy_fedledger, dev_account
    from node.chain.providers import embedded_web3
    from node.daemon.journal import Journal
    from node.protocol import ProtocolNode
    from node.sim.simulate import _fetch_for, federation_params, publish_task
    from node.storage import EmbeddedStorage
    from node.units import ETHER

    w3 = embedded_web3(num_accounts=3)
    owner, _ = deploy_fedledger(w3, dev_account(0), ETHER)
    store = EmbeddedStorage(tmp_path / "store", fsync=False)
    spec = TaskSpec(app="exits.py:app", epochs=1)
    task, _, _ = publish_task(owner, store, spec, federation_params(2, 1, spec, ETHER, 0, 0), 0, 10 * ETHER, WEIGHTS)
    clients = [owner.as_account(dev_account(i)) for i in (1, 2)]
    for i, client in enumerate(clients):
        client.register(f"n{i}", [], ETHER)
    app = numpy_app(fit=exits(3))
    node = ProtocolNode(clients[0], Journal(tmp_path / "journal.db"), store, trainer=lambda s: FlowerTrainer(app, s, NODE, "exits.py:app"),
                        fetch=partial(_fetch_for, store, [store]), seed=1)  # fmt: skip
    # Execute: step until the node has had its chance to commit in round 1.
    with caplog.at_level("WARNING", logger="fedledger"):
        done = [node.step(task) for _ in range(4)]
    # Assert: one line, no commit, and the node is still stepping.
    lines = [r.getMessage() for r in caplog.records if "the app failed" in r.getMessage()]
    assert lines == [f"task {task} round 1: the app failed: app exits.py:app: fit raised SystemExit(3); not committing this round"]
    assert not any(d and "committed" in d for d in done)
    assert len(owner.round_updates(task, 1)) == 0


NODE_APP = '''
import sys

from flwr.clientapp import ClientApp
from node.apps import FedApp
from torch import nn


def no_data(node_config):
    sys.exit("no data here")


def client_fn(context):
    sys.exit(2)


fedapp = FedApp(model=lambda: nn.Linear(2, 2), load_data=no_data)
flower = ClientApp(client_fn=client_fn)
'''


@pytest.mark.parametrize(
    "attr, expected",
    [
        ("fedapp", "app node_app.py:fedapp: load_data raised SystemExit('no data here')"),
        ("flower", "app node_app.py:flower: get_parameters raised SystemExit(2)"),
    ],
)
def test_a_node_whose_app_exits_while_loading_is_told_in_one_line_at_start_up(tmp_path, attr, expected):
    # Prepare: a node's own app, checked against a joined task's pin before it registers.
    from node.daemon.config import load_config
    from node.daemon.startup import data_misfit

    (tmp_path / "node_app.py").write_text(NODE_APP)
    (tmp_path / "node.toml").write_text(f'[chain]\nrpc = "http://127.0.0.1:1"\n[app]\nref = "node_app.py:{attr}"\n')
    spec = TaskSpec(app=f"node_app.py:{attr}", params=[["weight", [2, 2], "F32"], ["bias", [2], "F32"]])
    # Execute
    why = data_misfit(load_config(tmp_path / "node.toml"), spec)
    # Assert
    assert why == expected
