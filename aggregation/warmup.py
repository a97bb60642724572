"""Starting the aggregation kernels early, without importing numba in the caller's thread."""

from __future__ import annotations

import threading

_lock = threading.Lock()
_started = False


def _warm() -> None:
    from aggregation.kernels import warm

    warm()


def warm_in_background() -> None:
    """`kernels.warm` in a daemon thread, once per process. A node starts it when it starts, so
    importing numba and compiling (or loading) the kernels -- seconds on a fresh checkout --
    happens while the node trains instead of when it first aggregates."""
    global _started
    with _lock:
        if not _started:
            _started = True
            threading.Thread(target=_warm, name="fedledger-warm", daemon=True).start()
