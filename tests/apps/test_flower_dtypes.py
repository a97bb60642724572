"""float16 and bfloat16 tensors with Flower apps (#15, "Tensors beyond float32"; docs/formats.md):
a float16 tensor reaches the app as float16; a bfloat16 one (numpy has none, and Flower's Array
is built through numpy) as its exact float32 values; what the app sends back is rounded once, to
nearest, ties to even, to the tensor's dtype, so the global model keeps the dtypes the task pins."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp

from aggregation import decode_model
from aggregation.dtypes import bfloat16_bits, bfloat16_from_bits, layout
from node.apps.flower import FlowerTrainer, bfloat16_nearest
from node.cli import main
from node.storage import EmbeddedStorage
from node.taskspec import TaskSpec

NODE = {"partition-id": 0, "num-partitions": 2}


def torch_bits(values: np.ndarray) -> np.ndarray:
    return torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


def test_bfloat16_nearest_rounds_float32_as_torch_does():
    # Prepare: every kind of float32 bit pattern (normal, subnormal, ties, both signs), finite.
    rng = np.random.default_rng(0)
    values = rng.integers(0, 2**32, 100_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    values = np.concatenate([values[np.isfinite(values)], np.float32([1 + 2**-8, 1 + 3 * 2**-8, -(2**-133), 3.4e38])])
    # Execute
    ours = bfloat16_bits(bfloat16_nearest(values))
    # Assert
    assert np.array_equal(ours, torch_bits(values))


def test_bfloat16_nearest_rounds_a_float64_once():
    # 1 + 2**-8 + 2**-40 lies just above the tie between 1 and 1 + 2**-7: through float32 it would
    # become the tie, then round to even (1.0); rounded once it is 1 + 2**-7.
    values = np.array([1 + 2**-8 + 2**-40, -(1 + 2**-8 + 2**-40), 1 + 2**-8, 1e300, -1e300, np.nan, 2.0**-140], np.float64)

    bits = bfloat16_bits(bfloat16_nearest(values))

    assert [hex(b) for b in bits] == ["0x3f81", "0xbf81", "0x3f80", "0x7f80", "0xff80", "0x7fc0", "0x0"]
    assert bfloat16_nearest(np.float64(1.5)).shape == ()


def bf16(values) -> np.ndarray:
    return bfloat16_from_bits(torch_bits(np.asarray(values, np.float32)))


WEIGHTS = {"w": bf16([[1.0, 2.0], [3.0, 0.5]]), "b": np.float16([0.25, -1]), "steps": np.int64(3)}


def test_a_numpy_client_gets_bfloat16_as_float32_and_its_float64_reply_is_rounded_once():
    # Prepare
    seen = {}

    class Client(NumPyClient):
        def fit(self, parameters, config):
            seen.update(dtypes=[p.dtype for p in parameters], w=parameters[0].copy())
            w, b, steps = parameters
            return [w.astype(np.float64) + (2**-8 + 2**-40), b.astype(np.float64) + 1, steps + 1], 4, {}

    trainer = FlowerTrainer(ClientApp(client_fn=lambda context: Client().to_client()), TaskSpec(), NODE)
    # Execute
    delta = trainer.train(WEIGHTS, seed=1)
    # Assert: w's float32 values were exact; 1 + 2**-8 + 2**-40 came back as 1 + 2**-7.
    assert seen["dtypes"] == [np.float32, np.float16, np.int64]
    assert np.array_equal(seen["w"], [[1.0, 2.0], [3.0, 0.5]])
    assert delta["w"][0, 0] == 2**-7 and delta["b"].tolist() == [1, 1] and int(delta["steps"]) == 1
    assert {k: v.dtype for k, v in delta.items()} == {"w": np.float32, "b": np.float32, "steps": np.int64}


def test_a_message_api_app_gets_bfloat16_as_float32_and_float16_as_float16():
    # Prepare
    app, seen = ClientApp(), {}

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        arrays = msg.content["arrays"]
        seen.update({k: arrays[k].dtype for k in arrays})
        state = arrays.to_torch_state_dict()
        state["w"] = state["w"].to(torch.bfloat16) * 2  # the app computes in bfloat16, sends float32
        reply = ArrayRecord({"w": Array(state["w"].float()), "b": Array(state["b"].numpy()), "steps": arrays["steps"]})
        return Message(RecordDict({"arrays": reply, "m": MetricRecord({"num-examples": 3})}), reply_to=msg)

    trainer = FlowerTrainer(app, TaskSpec(), NODE)
    # Execute
    delta = trainer.train(WEIGHTS, seed=1)
    # Assert
    assert seen == {"w": "float32", "b": "float16", "steps": "int64"}
    assert delta["w"].tolist() == [[1.0, 2.0], [3.0, 0.5]] and not delta["b"].any()


APP = '''
"""Two parameters, one bfloat16 and one float16, trained with torch on digits."""

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp
from torch import nn

from node.apps.builtin import partition_of
from node.training.data import load_digits_split


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter((torch.randn(64, 10) * 0.05).to(torch.bfloat16))
        self.b = nn.Parameter(torch.zeros(10, dtype=torch.float16))

    def forward(self, x):
        return x @ self.w.float() + self.b.float()


def data(context):
    train, test = partition_of(*load_digits_split(seed=0), context.node_config)
    return (torch.from_numpy(train.x), torch.from_numpy(train.y)), (torch.from_numpy(test.x), torch.from_numpy(test.y))


def fit(net, train, lr):
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    x, y = train
    for start in range(0, len(y), 64):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x[start:start + 64]), y[start:start + 64]).backward()
        opt.step()


def accuracy(net, test):
    with torch.no_grad():
        return float((net(test[0]).argmax(1) == test[1]).float().mean())


def expect(dtypes):
    if dtypes != ["float32", "float16"]:  # the rule of docs/formats.md
        raise TypeError(f"the app was sent {dtypes}")


class Client(NumPyClient):
    def __init__(self, context):
        self.net, (self.train, self.test) = Net(), data(context)

    def load(self, parameters):
        expect([str(p.dtype) for p in parameters])
        self.net.load_state_dict({k: torch.from_numpy(p) for k, p in zip(("w", "b"), parameters)})

    def get_parameters(self, config):
        return [self.net.w.detach().float().numpy(), self.net.b.detach().numpy()]

    def fit(self, parameters, config):
        self.load(parameters)
        fit(self.net, self.train, float(config["lr"]))
        w, b = self.get_parameters(config)
        return [w.astype(np.float64), b], len(self.train[1]), {}

    def evaluate(self, parameters, config):
        self.load(parameters)
        return 0.0, len(self.test[1]), {"accuracy": accuracy(self.net, self.test)}


numpy_app = ClientApp(client_fn=lambda context: Client(context).to_client())
message_app = ClientApp()


def received(msg):
    arrays = msg.content["arrays"]
    expect([arrays[k].dtype for k in ("w", "b")])
    net = Net()
    net.load_state_dict(arrays.to_torch_state_dict())
    return net


@message_app.train()
def train(msg: Message, context: Context) -> Message:
    net, (train, _) = received(msg), data(context)
    fit(net, train, float(msg.content["config"]["lr"]))
    arrays = ArrayRecord({"w": net.w.detach().float(), "b": net.b.detach()})
    return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": len(train[1])})}), reply_to=msg)


@message_app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    net, (_, test) = received(msg), data(context)
    metrics = MetricRecord({"num-examples": len(test[1]), "accuracy": accuracy(net, test)})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
'''


@pytest.mark.parametrize("attr", ["numpy_app", "message_app"])
def test_a_flower_app_on_a_bfloat16_and_float16_model_keeps_the_pinned_dtypes_for_two_rounds(tmp_path, monkeypatch, capsys, attr):
    # Prepare
    (tmp_path / "mixed.py").write_text(APP)
    monkeypatch.chdir(tmp_path)
    # Execute
    code = main(["simulate", "--app", f"mixed.py:{attr}", "--model", "mixed.py:Net", "--nodes", "2", "--rounds", "2",
                 "--epochs", "1", "--lr", "0.1", "--json", "--workdir", "work"])  # fmt: skip
    # Assert: both rounds finalized, each global model as pinned, trained, and more accurate.
    out = capsys.readouterr()
    assert code == 0, out.err
    summary = json.loads(out.out)
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    store = EmbeddedStorage(tmp_path / "work" / "node0")
    models = [decode_model(store.get(r["global_model_cid"], max_bytes=1 << 20), 1 << 20)[0] for r in summary["rounds"]]
    assert all(layout(m) == {"w": "BF16", "b": "F16"} for m in models)
    assert not np.array_equal(bfloat16_bits(models[0]["w"]), bfloat16_bits(models[1]["w"]))
    assert summary["initial_metrics"]["accuracy"] < summary["rounds"][1]["metrics"]["accuracy"]
