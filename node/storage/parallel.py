"""Helper threads that share the leaves of one blockstore put (`node/storage/embedded.py`).

The leaves of a UnixFS DAG are independent, so the putting thread and idle helper threads
each take the next chunk, hash it and write it while it is still in cache (hashlib and file
writes release the GIL). The helpers are daemon threads, one fewer than the CPUs the process
may use (at most 3), started at the first put of more than one chunk and started afresh in a
forked child; the putting thread never waits for a helper that has not started, so a busy
machine costs no more than writing inline.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable

from node.errors import StorageError

# Helper threads for puts: at most this many, and one fewer than the CPUs the process may use.
_MAX_HELPERS = 3


class Shared:
    """The leaves of one put, claimed one at a time by the putting thread and any idle helper.

    Helpers are an optimisation only: the putting thread works through the leaves itself and
    then waits just for helpers that did claim one, so a helper that wakes late (or never, on a
    busy machine) costs nothing. After the first error nothing more is claimed.
    """

    __slots__ = ("_active", "_fn", "_idle", "_lock", "_next", "_total", "error")

    def __init__(self, total: int, fn: Callable[[int], None]) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._fn: Callable[[int], None] | None = fn
        self._next = 0
        self._total = total
        self._active = 0
        self.error: BaseException | None = None

    def _work(self, fn: Callable[[int], None]) -> None:
        while True:
            with self._lock:
                if self.error is not None or self._next >= self._total:
                    return
                index = self._next
                self._next += 1
            try:
                fn(index)
            except BaseException as exc:  # re-raised by the putting thread
                with self._lock:
                    if self.error is None:
                        self.error = exc
                return

    def help(self) -> None:
        """Run by a helper thread: work alongside the putting thread, if anything is left."""
        with self._lock:
            fn = self._fn
            if fn is None or self.error is not None or self._next >= self._total:
                return
            self._active += 1
        try:
            self._work(fn)
        finally:
            del fn  # before the putting thread may return: no reference to its bytes outlives the put
            with self._lock:
                self._active -= 1
                if not self._active:
                    self._idle.notify_all()

    def run(self) -> None:
        """Run by the putting thread: do the work, wait for helpers still busy, raise the first error."""
        fn = self._fn
        assert fn is not None
        try:
            self._work(fn)
        finally:
            with self._lock:
                # An error (or an interrupt) also stops the helpers at their next claim.
                if self.error is None and self._next < self._total:
                    self.error = StorageError("put interrupted")
                while self._active:
                    self._idle.wait()
                # Helpers that wake up later find nothing, and hold no reference to the caller's bytes.
                self._fn = None
        if self.error is not None:
            raise self.error


def _run_helper(jobs: queue.SimpleQueue) -> None:
    while True:
        shared = jobs.get()
        shared.help()
        del shared  # no reference to a finished put while waiting


def _helper_count() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(0, min(cpus - 1, _MAX_HELPERS))


class Helpers:
    """Daemon threads (one fewer than the CPUs, at most _MAX_HELPERS) that help puts hash and write
    leaves. Started at the first put that can use them; a forked child starts its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue | None = None
        self.threads: list[threading.Thread] = []

    def _queue(self) -> queue.SimpleQueue | None:
        jobs = self._jobs
        if jobs is None:
            with self._lock:
                if self._jobs is None:
                    fresh: queue.SimpleQueue = queue.SimpleQueue()
                    for number in range(_helper_count()):
                        thread = threading.Thread(
                            target=_run_helper, args=(fresh,), name=f"blockstore-helper-{number}", daemon=True
                        )
                        try:
                            thread.start()
                        except RuntimeError:  # out of threads: puts work without (more) helpers
                            break
                        self.threads.append(thread)
                    self._jobs = fresh
                jobs = self._jobs
        return jobs if self.threads else None

    def share(self, shared: Shared, extra: int) -> None:
        """Offer `shared` to at most `extra` helpers."""
        jobs = self._queue()
        if jobs is not None:
            for _ in range(min(extra, len(self.threads))):
                jobs.put(shared)

    def after_fork_in_child(self) -> None:
        # The threads did not survive the fork, and the queue or lock may be in any state: start over.
        self._lock = threading.Lock()
        self._jobs = None
        self.threads = []


HELPERS = Helpers()
"""The process's helper threads, shared by every store."""


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: HELPERS.after_fork_in_child())
