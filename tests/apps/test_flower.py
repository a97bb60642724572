"""Flower ClientApps run unchanged on FedLedger (node/apps/flower.py, #15): both app styles train
through FlowerTrainer, federate in-process, see Flower's context and config, and every bad app
is one ConfigError line."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp

from node.apps.builtin import partition_of
from node.apps.flower import FlowerTrainer
from node.apps.resolve import app_of, initial_model, node_trainer
from node.errors import ConfigError
from node.sim.simulate import SimulationConfig, run_simulation
from node.taskspec import TaskSpec
from node.training.data import load_digits_split

NUMPY_APP = "examples/flower_numpy/client_app.py:app"
MESSAGE_APP = "examples/flower_message/client_app.py:app"
MESSAGE_NET = "examples/flower_message/client_app.py:Net"
NODE = {"partition-id": 1, "num-partitions": 3, "partition-seed": 7}
WEIGHTS = {"w": np.zeros((2, 3), np.float32), "b": np.zeros(3, np.float32), "steps": np.zeros((), np.int64)}


def app_and_model(ref: str) -> tuple[TaskSpec, dict[str, np.ndarray]]:
    spec = TaskSpec(app=ref, epochs=1)
    return spec, initial_model(spec, 3, model_ref=MESSAGE_NET if ref == MESSAGE_APP else None)


@pytest.mark.parametrize("ref", [NUMPY_APP, MESSAGE_APP])
def test_both_styles_train_the_same_nonzero_delta_from_the_same_seed(ref):
    # Prepare
    spec, weights = app_and_model(ref)
    trainer = node_trainer(spec, NODE)
    before = trainer.evaluate(weights)
    # Execute
    first = trainer.train(weights, seed=11, round=1)
    second = trainer.train(weights, seed=11, round=1)
    other = trainer.train(weights, seed=12, round=1)
    after = trainer.evaluate({k: weights[k] + first[k] for k in weights})
    # Assert
    assert list(first) == list(weights)
    assert all(first[k].shape == weights[k].shape and first[k].dtype == np.float32 for k in weights)
    assert all(np.array_equal(first[k], second[k]) for k in weights)
    assert any(not np.array_equal(first[k], other[k]) for k in weights)
    assert any(np.abs(d).sum() > 0 for d in first.values())
    assert trainer.num_samples == len(partition_of(*load_digits_split(seed=7), NODE)[0]) == 479
    assert after.num_examples == before.num_examples > 0
    assert after.metrics["accuracy"] > before.metrics["accuracy"] and after.metrics["loss"] < before.metrics["loss"]


def test_numpy_app_names_its_initial_parameters_by_the_pin_or_by_position():
    spec, weights = app_and_model(NUMPY_APP)
    assert list(weights) == ["param_0000", "param_0001", "param_0002", "param_0003"]
    assert np.array_equal(initial_model(spec, 3)["param_0000"], weights["param_0000"])  # seeded
    assert not np.array_equal(initial_model(spec, 4)["param_0000"], weights["param_0000"])
    pinned = TaskSpec(app=NUMPY_APP, params=[[f"layer{i}", list(a.shape), "F32"] for i, a in enumerate(weights.values())])
    assert list(initial_model(pinned, 3)) == ["layer0", "layer1", "layer2", "layer3"]


@pytest.mark.parametrize("ref", [NUMPY_APP, MESSAGE_APP])
def test_a_flower_app_federates_in_process_and_its_accuracy_improves(ref):
    # Prepare: the NumPyClient app gives its own initial model, the Message-API app gets Net.
    model_ref = MESSAGE_NET if ref == MESSAGE_APP else None
    config = SimulationConfig(nodes=3, rounds=2, spec=TaskSpec(app=ref, epochs=1), model_ref=model_ref)
    # Execute
    report = run_simulation(config)
    # Assert
    assert [r.round for r in report.rounds] == [1, 2]
    assert report.initial_accuracy < 0.3 < report.rounds[0].test_accuracy < report.rounds[1].test_accuracy
    assert [n.num_samples for n in report.nodes] == [480, 479, 479]  # digits' 1,438 training samples, dealt


class Recorder:
    """What an app saw, call by call."""

    def __init__(self) -> None:
        self.seen: list[dict] = []


def recording_numpy_app(recorder: Recorder) -> ClientApp:
    class Client(NumPyClient):
        def __init__(self, context: Context) -> None:
            self.context = context

        def fit(self, parameters, config):
            recorder.seen.append({"node": dict(self.context.node_config), "run": dict(self.context.run_config),
                                  "config": dict(config), "torch": torch.rand(1).item()})  # fmt: skip
            return [p + 1 for p in parameters], 5, {}

    return ClientApp(client_fn=lambda context: Client(context).to_client())


def recording_message_app(recorder: Recorder) -> ClientApp:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        recorder.seen.append({"node": dict(context.node_config), "run": dict(context.run_config),
                              "config": dict(msg.content["config"]), "torch": torch.rand(1).item()})  # fmt: skip
        arrays = {k: Array(np.asarray(v.numpy() + 1)) for k, v in msg.content["arrays"].items()}
        return Message(RecordDict({"arrays": ArrayRecord(arrays), "m": MetricRecord({"num-examples": 5})}), reply_to=msg)

    return app


@pytest.mark.parametrize("make", [recording_numpy_app, recording_message_app])
def test_the_app_sees_flower_context_run_config_and_a_config_with_round_and_seed(make):
    # Prepare
    recorder = Recorder()
    spec = TaskSpec(app="recording.py:app", epochs=2, batch_size=16, lr=0.1, run_config={"local-epochs": 4, "mode": "x"})
    trainer = FlowerTrainer(make(recorder), spec, NODE)
    # Execute
    delta = trainer.train(WEIGHTS, seed=99, round=3)
    trainer.train(WEIGHTS, seed=99, round=3)
    trainer.train(WEIGHTS, seed=100, round=4)
    # Assert
    first = recorder.seen[0]
    assert first["node"]["partition-id"] == 1 and first["node"]["num-partitions"] == 3
    assert first["run"] == {"local-epochs": 4, "batch-size": 16, "lr": 0.1, "mode": "x"}
    assert first["config"] == {"server-round": 3, "seed": 99, "local-epochs": 4, "batch-size": 16, "lr": 0.1}
    assert recorder.seen[2]["config"]["server-round"] == 4 and recorder.seen[2]["config"]["seed"] == 100
    assert recorder.seen[1]["torch"] == first["torch"] != recorder.seen[2]["torch"]  # global RNG seeded per call
    assert trainer.num_samples == 5
    assert {k: v.dtype for k, v in delta.items()} == {"w": np.float32, "b": np.float32, "steps": np.int64}
    assert all(np.all(delta[k] == 1) for k in WEIGHTS)


def test_the_node_keeps_its_threads_and_generators_whatever_the_app_draws():
    recorder = Recorder()
    torch.set_num_threads(2)
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    expected = torch.rand(1).item(), np.random.rand(), random.random()
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    FlowerTrainer(recording_numpy_app(recorder), TaskSpec(app="r.py:app"), NODE).train(WEIGHTS, seed=5)
    assert (torch.rand(1).item(), np.random.rand(), random.random()) == expected
    assert torch.get_num_threads() == 2


def numpy_app(fit) -> ClientApp:
    class Client(NumPyClient):
        def fit(self, parameters, config):
            return fit(parameters)

    return ClientApp(client_fn=lambda context: Client().to_client())


def message_app(reply) -> ClientApp:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return reply(msg)

    return app


def nan_first(parameters):
    parameters[0][0, 0] = np.nan
    return parameters, 5, {}


def raising_client_fn(context):
    raise RuntimeError("no data\nhere")


def message_reply(records):
    return lambda msg: Message(RecordDict(records(msg)), reply_to=msg)


ARRAYS = lambda msg: ArrayRecord({k: Array(v.numpy()) for k, v in msg.content["arrays"].items()})  # noqa: E731
BAD_APPS = {
    "client_fn raises": (ClientApp(client_fn=raising_client_fn), "fit raised RuntimeError: no data here"),
    "too few arrays": (numpy_app(lambda p: (p[:2], 5, {})), "fit returned 2 arrays for the model's 3"),
    "wrong shape": (numpy_app(lambda p: ([p[0].T, p[1], p[2]], 5, {})), "tensor w came back with shape [3, 2], not [2, 3]"),
    "NaN": (numpy_app(nan_first), "tensor w holds NaN or infinite values"),
    "infinite in float16": (numpy_app(lambda p: ([p[0].astype(np.float32) + 1e6, p[1], p[2]], 5, {})), "tensor w holds NaN"),
    "integer for float": (numpy_app(lambda p: ([p[0].astype(np.int64), p[1], p[2]], 5, {})), "tensor w came back as int64, not float16"),
    "fit returns a pair": (numpy_app(lambda p: (p, 5)), "fit raised TypeError"),
    "no examples": (numpy_app(lambda p: (p, 0, {})), "num-examples of the train reply must be an integer in [1,"),
    "not a Message": (message_app(lambda msg: msg.content), "train returned a RecordDict, not a Flower Message"),
    "no train handler": (ClientApp(), "train raised ValueError: No train function registered"),
    "missing array": (message_app(message_reply(lambda m: {"a": ArrayRecord({"w": m.content["arrays"]["w"]}), "m": MetricRecord({"num-examples": 1})})),
                      "arrays are not the model's (missing ['b', 'steps'], unexpected [])"),
    "no num-examples": (message_app(message_reply(lambda m: {"a": ARRAYS(m), "m": MetricRecord({"loss": 1.0})})),
                        "num-examples of the train reply must be an integer"),
    "two ArrayRecords": (message_app(message_reply(lambda m: {"a": ARRAYS(m), "b": ARRAYS(m), "m": MetricRecord({"num-examples": 1})})),
                         "must hold one ArrayRecord, not 2"),
    "config for arrays": (message_app(message_reply(lambda m: {"a": ConfigRecord({"x": 1}), "m": MetricRecord({"num-examples": 1})})),
                          "must hold one ArrayRecord, not 0"),
}


@pytest.mark.parametrize("case", list(BAD_APPS))
def test_a_bad_app_is_one_config_error_line(case):
    # Prepare: float16 weights, so that a large float32 turns infinite when rounded to them.
    app, expected = BAD_APPS[case]
    weights = {"w": np.zeros((2, 3), np.float16), "b": np.zeros(3, np.float32), "steps": np.zeros((), np.int64)}
    trainer = FlowerTrainer(app, TaskSpec(app="bad.py:app"), NODE)
    # Execute
    with pytest.raises(ConfigError) as err:
        trainer.train(weights, seed=1, round=1)
    # Assert
    assert str(err.value).startswith("app bad.py:app: ") and "\n" not in str(err.value)
    assert expected in str(err.value)


def test_a_float64_numpy_app_is_rounded_to_the_model_dtypes():
    trainer = FlowerTrainer(numpy_app(lambda p: ([a.astype(np.float64) + 0.5 for a in p[:2]] + [p[2] + 2], 5, {})), TaskSpec(), NODE)
    delta = trainer.train(WEIGHTS, seed=1)
    assert delta["w"].dtype == np.float32 and np.all(delta["w"] == 0.5) and int(delta["steps"]) == 2


def test_what_is_not_a_flower_app_or_gives_no_initial_model_is_one_config_error_line():
    with pytest.raises(ConfigError, match="is a dict, not a Flower ClientApp"):
        FlowerTrainer({}, TaskSpec(), NODE)
    with pytest.raises(ConfigError, match="is a type, not a FedLedger FedApp or a Flower ClientApp"):
        app_of(TaskSpec(app=MESSAGE_NET))
    with pytest.raises(ConfigError, match="give the initial model with --model REF or --initial-model FILE"):
        initial_model(TaskSpec(app=MESSAGE_APP), 1)
    with pytest.raises(ConfigError, match="get_parameters failed .*--initial-model FILE"):
        FlowerTrainer(numpy_app(lambda p: (p, 1, {})), TaskSpec(app="a.py:app"), NODE).initial_weights(1)
