"""A global model read back from its file lists its tensors sorted by name, not in the state
dict's order: a NumPyClient app must still get its lists in the state dict's order (the order
the spec pins), and the daemon's check of the global model against the pin must go by name.
Both failed for `--model REF` with a legacy app: evaluate raised a size mismatch in
load_state_dict, and every daemon refused the Message-API example's task."""

from __future__ import annotations

from aggregation import decode_model, encode_model
from node.apps.resolve import initial_model, misfit, node_trainer, pinned_spec
from node.taskspec import TaskSpec
from tests.conftest import REPO

NUMPY_APP = REPO / "examples" / "flower_numpy" / "client_app.py"
NODE = {"partition-id": 0, "num-partitions": 3, "partition-seed": 7}


def test_a_numpy_app_gets_its_lists_in_the_pinned_order_from_a_decoded_model():
    # Prepare: the task as `--model REF` pins it, and its model as a node reads it from a file.
    spec = TaskSpec(app=f"{NUMPY_APP}:app", epochs=1)
    weights = initial_model(spec, 0, model_ref=f"{NUMPY_APP}:Net")
    spec = pinned_spec(spec, weights)
    decoded, _ = decode_model(encode_model(weights), spec.max_update_bytes)
    assert list(decoded) != list(weights)  # sorted: fc1.bias before fc1.weight

    # Execute
    trainer = node_trainer(spec, NODE)
    delta = trainer.train(decoded, seed=1, round=1)
    evaluation = trainer.evaluate(decoded)

    # Assert: every tensor trained under its own name and shape; the model evaluates.
    assert misfit(decoded, spec) is None
    assert {k: v.shape for k, v in delta.items()} == {k: v.shape for k, v in weights.items()}
    assert all(abs(v).sum() > 0 for v in delta.values())
    assert evaluation.num_examples > 0 and 0 <= evaluation.metrics["accuracy"] <= 1
