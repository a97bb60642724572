"""Child processes that do not outlive the process that started them."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from typing import Callable


def parent_death_signal() -> Callable[[], None] | None:
    """A preexec_fn that has Linux SIGTERM the child when this process dies, however it dies
    (kill -9 included), so not even a killed `simulate` leaves daemons or anvil behind.

    The kernel ties it to the *thread* that forks: start children from a thread that outlives them
    (the main thread, as the CLI and the tests do)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the child only calls it
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the call: nobody would signal us
            os._exit(1)

    return preexec
