"""Shared pytest set-up: run the CLI as a user would, from the project's venv."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from node.reproducible import pin_cpu_kernels

# Before any test imports torch: tests that compare a simulation with committed numbers (the
# README's CIDs, the robustness report) then hold on every x86-64 CPU, whatever its SIMD level.
pin_cpu_kernels()

REPO = Path(__file__).resolve().parents[1]
FEDLEDGER = Path(sys.executable).with_name("fedledger")


def default_sigint() -> None:
    """A child's preexec_fn: SIGINT as a terminal delivers it. A suite started in the background
    by a non-interactive shell inherits SIGINT ignored, and Python then never raises
    KeyboardInterrupt, so tests of Ctrl-C would test nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300):
    """Run `fedledger ARGS` in a subprocess; returns the CompletedProcess (text mode)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [str(FEDLEDGER), *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def cli():
    return run_cli
