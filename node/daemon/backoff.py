"""Retry with exponential backoff and full jitter (the AWS architecture blog's
"full jitter": sleep uniform(0, min(cap, base * 2**attempt))), so that many
daemons that lost the same RPC endpoint do not come back in lock-step."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

T = TypeVar("T")
log = logging.getLogger("fedledger.retry")


@dataclass(frozen=True)
class Backoff:
    base: float = 0.25  # seconds before the first retry (at most)
    cap: float = 10.0  # no single wait is longer than this
    attempts: int | None = None  # None: retry forever (the daemon's choice); else give up after this many tries

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0.0, min(self.cap, self.base * (2**attempt)))


def retry(
    fn: Callable[[], T],
    *,
    what: str,
    retry_on: tuple[type[BaseException], ...],
    policy: Backoff = Backoff(),
    rng: random.Random | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `fn` until it succeeds; errors in `retry_on` are logged and retried, others propagate."""
    rng = rng or random.Random()
    attempt = 0
    while True:
        try:
            return fn()
        except retry_on as exc:
            attempt += 1
            if policy.attempts is not None and attempt >= policy.attempts:
                raise
            wait = policy.delay(attempt - 1, rng)
            log.warning("%s failed (%s: %s); retry %d in %.2f s", what, type(exc).__name__, exc, attempt, wait)
            sleep(wait)
