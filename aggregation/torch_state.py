"""A torch state dict to and from the arrays this package reads and writes.

The one place where torch tensors meet the file format's dtypes
(`aggregation.dtypes`): float32/float16/bfloat16 parameters and integer or
bool buffers keep their dtype both ways, bfloat16 through its bit patterns
(numpy has no bfloat16). torch is imported only when these are called: the
aggregation itself never needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import numpy as np

from aggregation.dtypes import BFLOAT16, bfloat16_bits, bfloat16_from_bits, code_of
from aggregation.errors import EncodeError

if TYPE_CHECKING:
    import torch


def arrays_from_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Copies of a state dict's tensors as numpy arrays of the format's dtypes; EncodeError for any other dtype."""
    import torch

    arrays: dict[str, np.ndarray] = {}
    for name, tensor in state.items():
        value = tensor.detach().cpu()
        if value.dtype == torch.bfloat16:
            arrays[name] = bfloat16_from_bits(value.view(torch.int16).numpy().view(np.uint16))
        else:
            array = value.numpy().copy()
            try:
                code_of(array)
            except EncodeError as exc:
                raise EncodeError(f"state dict entry {name!r}: {exc}") from None
            arrays[name] = array
    return arrays


def state_dict_from_arrays(weights: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """torch tensors of the same dtypes as decoded model `weights`, for ``load_state_dict``."""
    import torch

    state: dict[str, torch.Tensor] = {}
    for name, array in weights.items():
        if np.asarray(array).dtype == BFLOAT16:
            bits = bfloat16_bits(array).view(np.int16)  # the same 16 bits, in a dtype torch reads
            state[name] = torch.from_numpy(np.ascontiguousarray(bits)).view(torch.bfloat16)
        else:
            code_of(array)
            state[name] = torch.from_numpy(np.array(array, copy=True))
    return state
