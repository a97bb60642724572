"""A Flower ClientApp in the classic style (`client_fn` returning a `NumPyClient`), written as
for `flwr run`, that FedLedger runs unchanged (node/apps/flower.py).

Three nodes, two rounds, in one process; the initial model is the app's own (get_parameters):

    .venv/bin/python -c "
    from node.sim.simulate import SimulationConfig, run_simulation
    from node.taskspec import TaskSpec
    spec = TaskSpec(app='examples/flower_numpy/client_app.py:app', epochs=1)
    print(run_simulation(SimulationConfig(nodes=3, rounds=2, spec=spec)).rounds)"

Each node trains on its `partition-id` of `num-partitions` shards of scikit-learn's digits.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import lru_cache

import numpy as np
import torch
from flwr.app import Context
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from node.apps.builtin import partition_of
from node.training.data import load_digits_split


class Net(nn.Module):
    """8x8 digits -> 10 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


@lru_cache(maxsize=2)
def _digits(seed: int):
    return load_digits_split(seed=seed)


def load_data(context: Context, batch_size: int) -> tuple[DataLoader, DataLoader]:
    train, test = partition_of(*_digits(int(context.node_config.get("partition-seed", 0))), context.node_config)
    to_set = lambda d: TensorDataset(torch.from_numpy(d.x), torch.from_numpy(d.y))  # noqa: E731
    return DataLoader(to_set(train), batch_size=batch_size, shuffle=True), DataLoader(to_set(test), batch_size=256)


def get_weights(net: nn.Module) -> list[np.ndarray]:
    return [v.cpu().numpy() for v in net.state_dict().values()]


def set_weights(net: nn.Module, parameters: list[np.ndarray]) -> None:
    state = OrderedDict((k, torch.tensor(v)) for k, v in zip(net.state_dict().keys(), parameters))
    net.load_state_dict(state, strict=True)


def train(net: nn.Module, loader: DataLoader, epochs: int, lr: float) -> float:
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    net.train()
    total = 0.0
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            loss = loss_fn(net(x), y)
            loss.backward()
            opt.step()
            total += loss.item()
    return total / max(len(loader) * epochs, 1)


def test(net: nn.Module, loader: DataLoader) -> tuple[float, float]:
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    net.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for x, y in loader:
            out = net(x)
            loss += float(loss_fn(out, y))
            correct += int((out.argmax(1) == y).sum())
    n = len(loader.dataset)
    return loss / n, correct / n


class FlowerClient(NumPyClient):
    def __init__(self, net: nn.Module, trainloader: DataLoader, testloader: DataLoader, local_epochs: int) -> None:
        self.net, self.trainloader, self.testloader, self.local_epochs = net, trainloader, testloader, local_epochs

    def get_parameters(self, config):
        return get_weights(self.net)

    def fit(self, parameters, config):
        set_weights(self.net, parameters)
        loss = train(self.net, self.trainloader, self.local_epochs, float(config["lr"]))
        return get_weights(self.net), len(self.trainloader.dataset), {"train_loss": loss}

    def evaluate(self, parameters, config):
        set_weights(self.net, parameters)
        loss, accuracy = test(self.net, self.testloader)
        return loss, len(self.testloader.dataset), {"accuracy": accuracy}


def client_fn(context: Context):
    trainloader, testloader = load_data(context, int(context.run_config["batch-size"]))
    return FlowerClient(Net(), trainloader, testloader, int(context.run_config["local-epochs"])).to_client()


app = ClientApp(client_fn=client_fn)
