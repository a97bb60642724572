"""Retries: waits grow, stay under the cap, are jittered, and give up when told."""

from __future__ import annotations

import random

import pytest

from node.daemon.backoff import Backoff, retry


def test_retries_until_success_with_bounded_jittered_waits():
    calls, waits = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 6:
            raise ConnectionError("down")
        return "up"

    result = retry(flaky, what="rpc", retry_on=(ConnectionError,), policy=Backoff(base=1, cap=4),
                   rng=random.Random(1), sleep=waits.append)

    assert result == "up" and len(calls) == 6
    assert len(waits) == 5 and all(0 <= w <= 4 for w in waits)
    assert len(set(waits)) == 5  # jittered, not lock-step


def test_gives_up_after_attempts_and_does_not_retry_other_errors():
    with pytest.raises(ConnectionError):
        retry(lambda: (_ for _ in ()).throw(ConnectionError("x")), what="rpc", retry_on=(ConnectionError,),
              policy=Backoff(attempts=3), sleep=lambda s: None)
    calls = []

    def bad():
        calls.append(1)
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError):
        retry(bad, what="rpc", retry_on=(ConnectionError,), sleep=lambda s: None)
    assert calls == [1]


def test_delay_caps():
    policy = Backoff(base=0.5, cap=2.0)
    rng = random.Random(0)
    assert max(policy.delay(30, rng) for _ in range(100)) <= 2.0
