"""The built-in apps beyond digits-mlp (#15): `mnist-cnn` on real MNIST digits and `resnet18`
at real size, federated in-process on py-evm with real torch training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from aggregation import decode_model
from node.apps import FedApp
from node.apps import builtin
from node.apps.builtin import MNIST_CNN, RESNET18
from node.apps.mnist import load_mnist_split
from node.apps.resnet import resnet18
from node.chain import FedLedgerClient
from node.chain.providers import embedded_web3
from node.sim.simulate import SimulationConfig, local_or_peers, run_simulation
from node.storage import EmbeddedStorage
from node.taskspec import TaskSpec
from node.training.model import seeded_state
from node.training.trainer import TorchTrainer, accuracy


def _global_model(report, w3, workdir) -> dict[str, np.ndarray]:
    """The task's final global model, read from the chain and the nodes' stores."""
    client = FedLedgerClient(w3, report.contracts["FedLedger"])
    cid, _round = client.global_model(report.task_id)
    stores = [EmbeddedStorage(p, fsync=False) for p in sorted(workdir.iterdir()) if p.is_dir()]
    model, _meta = decode_model(local_or_peers(cid, stores[0], stores), 2**27)
    return model


def test_the_mnist_split_is_real_stratified_and_shaped_for_a_cnn():
    train, test = load_mnist_split(0)

    assert train.x.shape == (4000, 1, 28, 28) and test.x.shape == (1000, 1, 28, 28)
    assert train.x.dtype == np.float32 and train.y.dtype == np.int64
    assert 0.0 == train.x.min() and train.x.max() == 1.0
    assert np.bincount(test.y).tolist() == [100] * 10  # 20% of each class's 500
    assert not np.array_equal(load_mnist_split(1)[1].x, test.x)  # the seed draws the split


def test_mnist_cnn_federates_to_over_85_percent_in_3_rounds(tmp_path):
    # Prepare: 4 nodes, IID shards of the MNIST training split, 1 epoch a round
    w3 = embedded_web3(num_accounts=5)
    config = SimulationConfig(nodes=4, rounds=3, spec=TaskSpec(model="mnist-cnn", epochs=1))

    # Execute
    report = run_simulation(config, workdir=tmp_path, w3=w3)

    # Assert: the chain's final model classifies the held-out MNIST digits, and the report says so
    assert [r.round for r in report.rounds] == [1, 2, 3]
    _train, test = load_mnist_split(config.seed)
    final = accuracy(MNIST_CNN, _global_model(report, w3, tmp_path), test)
    assert final > 0.85
    assert report.rounds[-1].test_accuracy == pytest.approx(final)


def test_resnet18_has_resnet18_size_and_federates_batchnorm():
    model = resnet18()

    params = sum(p.numel() for p in model.parameters())
    state = seeded_state(resnet18, 0)

    assert params == 11_172_810  # ResNet-18 (11.18M with a 10-class head), 1-channel 3x3 stem
    assert sum(1 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)) == 20
    assert state["layer4.1.bn2.num_batches_tracked"].dtype == np.int64
    assert state["layer4.1.bn2.running_var"].dtype == np.float32


def test_one_resnet18_training_step_on_a_few_samples_gives_a_full_delta():
    # Prepare: 3 MNIST digits, one batch (a last batch of one sample still works: the last
    # stage's maps are 2x2, so BatchNorm sees 4 values per channel)
    train, test = load_mnist_split(0)
    trainer = TorchTrainer(RESNET18, train.subset(np.arange(3)), test.subset(np.arange(4)), epochs=1, batch_size=2, lr=0.01)
    start = seeded_state(resnet18, 0)

    # Execute
    delta = trainer.train(start, seed=1)

    # Assert: every tensor moved as the state dict orders them; each BatchNorm counted 2 batches
    assert list(delta) == list(start)
    assert int(delta["bn1.num_batches_tracked"]) == 2 and delta["bn1.num_batches_tracked"].dtype == np.int64
    assert np.abs(delta["fc.weight"]).max() > 0 and np.abs(delta["layer1.0.bn1.running_mean"]).max() > 0
    assert all(np.all(np.isfinite(d)) for d in delta.values())
    assert trainer.evaluate(start).num_examples == 4


def test_resnet18_federates_a_round_on_small_shards(monkeypatch, tmp_path):
    # Prepare: resnet18 on 40 training and 20 held-out digits a node (its real loader, cut short
    # so that a round takes seconds), 2 nodes, 1 round
    def small_shards(node_config):
        train, test = RESNET18.load_data(node_config)
        return train.subset(np.arange(40)), test.subset(np.arange(20))

    app = FedApp(resnet18, small_shards, input_shape=RESNET18.input_shape, num_classes=RESNET18.num_classes)
    monkeypatch.setitem(builtin.BUILTIN_APPS, "resnet18-small", app)
    w3 = embedded_web3(num_accounts=3)
    config = SimulationConfig(nodes=2, rounds=1, spec=TaskSpec(model="resnet18-small", epochs=1, lr=0.01))

    # Execute
    report = run_simulation(config, workdir=tmp_path, w3=w3)

    # Assert: the ~45 MB model went round the chain; BatchNorm's counters and statistics travelled
    # (40 samples in batches of 32: 2 batches, on every node, so the average is exactly 2)
    assert len(report.rounds) == 1
    model = _global_model(report, w3, tmp_path)
    initial = seeded_state(resnet18, config.seed)
    assert sorted(model) == sorted(initial)  # a model file keeps its tensors sorted by name
    assert sum(a.size for a in model.values() if a.dtype == np.float32) > 11_000_000
    assert model["layer4.1.bn2.num_batches_tracked"].dtype == np.int64
    assert int(model["layer4.1.bn2.num_batches_tracked"]) == 2
    assert not np.array_equal(model["bn1.running_mean"], initial["bn1.running_mean"])
    assert not np.array_equal(model["fc.weight"], initial["fc.weight"])


def test_a_node_with_its_own_image_folder_trains_mnist_cnn(tmp_path):
    # Prepare: an operator's folder of 28x28 PNGs, named in the node config
    for label in range(3):
        (tmp_path / "imgs" / str(label)).mkdir(parents=True)
        for i in range(4):
            pixels = np.zeros((28, 28), np.uint8)
            pixels[4 * label : 4 * label + 6, 3 + i : 20 + i] = 255
            Image.fromarray(pixels).save(tmp_path / "imgs" / str(label) / f"{i}.png")

    # Execute
    train, test = MNIST_CNN.load_data({"data-path": str(tmp_path / "imgs")})
    trainer = TorchTrainer(MNIST_CNN, train, test, epochs=1, batch_size=4)
    delta = trainer.train(seeded_state(MNIST_CNN.model, 0), seed=0)

    # Assert
    assert train.x.shape == (12, 1, 28, 28)
    assert delta["0.weight"].shape == (8, 1, 3, 3) and np.abs(delta["0.weight"]).max() > 0
