"""A model with BatchNorm federates (#15, "Tensors beyond float32"): its integer buffer
(`num_batches_tracked`, int64) travels as an int64 delta and is aggregated exactly, next to the
float32 parameters and running statistics. In-process federation on py-evm, real torch training."""

from __future__ import annotations

import numpy as np
from torch import nn

from aggregation import decode_model
from node.chain import FedLedgerClient
from node.chain.providers import embedded_web3
from node.sim.simulate import SimulationConfig, local_or_peers, run_simulation
from node.storage import EmbeddedStorage
from node.taskspec import TaskSpec
from node.apps import FedApp
from node.apps import builtin


def _digits_bn() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))


def test_a_batchnorm_model_federates_with_its_integer_counter(monkeypatch, tmp_path) -> None:
    # Prepare: a model with BatchNorm, known to every node of an in-process federation
    monkeypatch.setitem(builtin.BUILTIN_APPS, "digits-bn", FedApp(_digits_bn, builtin.DIGITS_MLP.load_data))
    w3 = embedded_web3(num_accounts=4)
    config = SimulationConfig(nodes=3, rounds=2, seed=3, spec=TaskSpec(model="digits-bn", epochs=1))

    # Execute
    report = run_simulation(config, workdir=tmp_path, w3=w3)

    # Assert: both rounds finalized; the counter is an int64 that moved by a whole number of
    # batches each round, and the accuracy is well above chance
    assert len(report.rounds) == 2
    client = FedLedgerClient(w3, report.contracts["FedLedger"])
    cid, round_ = client.global_model(report.task_id)
    assert round_ == 2
    stores = [EmbeddedStorage(p, fsync=False) for p in sorted(tmp_path.iterdir()) if p.is_dir()]
    model, _ = decode_model(local_or_peers(cid, stores[0], stores), 2**26)
    counter = model["1.num_batches_tracked"]
    assert counter.dtype == np.int64 and counter.shape == () and int(counter) > 0
    assert model["1.running_mean"].dtype == np.float32
    assert report.rounds[-1].test_accuracy > 0.5
