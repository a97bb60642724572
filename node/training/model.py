"""Models a task can name. The task spec says which; every node builds the same one."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from aggregation.torch_state import arrays_from_state_dict, state_dict_from_arrays


def _digits_mlp() -> nn.Module:
    # 64 -> 128 -> 64 -> 10: about 17k parameters, ~93% on digits in a few epochs.
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))


MODELS: dict[str, Callable[[], nn.Module]] = {"digits-mlp": _digits_mlp}


def build_model(name: str) -> nn.Module:
    try:
        return MODELS[name]()
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}") from None


def state_to_numpy(model: nn.Module) -> dict[str, np.ndarray]:
    """The model's state dict as arrays, each tensor keeping its dtype (float32, float16, bfloat16,
    and integer buffers such as BatchNorm's num_batches_tracked): see docs/formats.md."""
    return arrays_from_state_dict(model.state_dict())


def load_numpy(model: nn.Module, weights: dict[str, np.ndarray]) -> None:
    model.load_state_dict(state_dict_from_arrays(weights))


def initial_weights(name: str, seed: int) -> dict[str, np.ndarray]:
    """The task's round-0 model: torch's default init under a fixed seed."""
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return state_to_numpy(build_model(name))
    finally:
        torch.random.set_rng_state(gen_state)
