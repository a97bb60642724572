"""Pinning torch's CPU kernels, so that simulations train the same on any x86-64 CPU.

torch picks its CPU kernels by what the processor offers: ATen's own
(vectorized for AVX2 or AVX-512, `ATEN_CPU_CAPABILITY`) and MKL's matrix
products (`MKL_CBWR`). The float sums, hence the trained weights, differ
between those paths, so the same seed trains differently on an AVX2 machine
and on an AVX-512 one. Pinned to ATen's portable kernels and MKL's
conditional-numerical-reproducibility mode (one thread, which the trainer
uses anyway), training gives the same bits on every x86-64 CPU; other
architectures (ARM) have other kernels and train differently. The exact
aggregation needs none of this: it is integer arithmetic.

Both variables are read when torch loads, so `pin_cpu_kernels` must run
before torch is first imported; simulations (`fedledger simulate`, the daemons
a simulation starts, the robustness experiment, the test suite) call it first.
"""

from __future__ import annotations

import os
import sys

PINNED_KERNELS = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}


def pin_cpu_kernels() -> None:
    """Pin torch's CPU kernels for this process and its children; RuntimeError if torch was
    already loaded with other kernels (too late to pin)."""
    os.environ.update(PINNED_KERNELS)
    torch = sys.modules.get("torch")
    if torch is not None and torch.backends.cpu.get_cpu_capability() != "DEFAULT":
        raise RuntimeError("pin_cpu_kernels() must run before torch is imported")


def kernels_pinned() -> bool:
    """Whether this process runs with the pinned kernels."""
    return all(os.environ.get(k) == v for k, v in PINNED_KERNELS.items())
