"""A model's state as the arrays that travel, and the task's initial model."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from aggregation.torch_state import arrays_from_state_dict, state_dict_from_arrays


def build_model(name: str) -> nn.Module:
    """A fresh model of the built-in app `name`."""
    from node.apps.builtin import builtin_app

    return builtin_app(name).model()


def state_to_numpy(model: nn.Module) -> dict[str, np.ndarray]:
    """The model's state dict as arrays, each tensor keeping its dtype (float32, float16, bfloat16,
    and integer buffers such as BatchNorm's num_batches_tracked): see docs/formats.md."""
    return arrays_from_state_dict(model.state_dict())


def load_numpy(model: nn.Module, weights: dict[str, np.ndarray]) -> None:
    model.load_state_dict(state_dict_from_arrays(weights))


def initial_weights(name: str, seed: int) -> dict[str, np.ndarray]:
    """The round-0 model of built-in app `name`: torch's default init under a fixed seed."""
    return seeded_state(lambda: build_model(name), seed)


def seeded_state(make, seed: int) -> dict[str, np.ndarray]:
    """The state of the module `make()` builds with torch's generator seeded with `seed` (and the
    caller's generator state restored after)."""
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return state_to_numpy(make())
    finally:
        torch.random.set_rng_state(gen_state)
