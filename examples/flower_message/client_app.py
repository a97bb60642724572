"""A Flower ClientApp in the Message API (`@app.train()`, `@app.evaluate()`), written as for
`flwr run`, that FedLedger runs unchanged (node/apps/flower.py).

A Message-API app has no call for its initial model, so the task names one (`Net`):

    .venv/bin/python -c "
    from node.sim.simulate import SimulationConfig, run_simulation
    from node.taskspec import TaskSpec
    spec = TaskSpec(app='examples/flower_message/client_app.py:app', epochs=1)
    config = SimulationConfig(nodes=3, rounds=2, spec=spec, model_ref='examples/flower_message/client_app.py:Net')
    print(run_simulation(config).rounds)"

Each node trains on its `partition-id` of `num-partitions` shards of scikit-learn's digits,
with FedLedger's SGD step seeded by the round's `seed`.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch import nn

from node.apps.builtin import partition_of
from node.apps.native import RoundConfig, classify, sgd_train
from node.training.data import Dataset, load_digits_split


class Net(nn.Module):
    """8x8 digits -> 10 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(64, 32)
        self.out = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x)))


@lru_cache(maxsize=2)
def _digits(seed: int) -> tuple[Dataset, Dataset]:
    return load_digits_split(seed=seed)


def load_data(context: Context) -> tuple[Dataset, Dataset]:
    return partition_of(*_digits(int(context.node_config.get("partition-seed", 0))), context.node_config)


app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    model = Net()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    data, _ = load_data(context)
    config = msg.content["config"]
    step = RoundConfig(round=int(config["server-round"]), seed=int(config["seed"]),
                       epochs=int(context.run_config["local-epochs"]),
                       batch_size=int(context.run_config["batch-size"]), lr=float(config["lr"]))  # fmt: skip
    sgd_train(model, data, step)
    metrics = MetricRecord({"num-examples": len(data)})
    return Message(RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    model = Net()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    _, test = load_data(context)
    result = classify(model, test)
    metrics = MetricRecord({"accuracy": result["accuracy"], "loss": result["loss"], "num-examples": len(test)})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
