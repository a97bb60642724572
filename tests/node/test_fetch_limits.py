"""The task's byte limit reaches every fetch of peer content (#14 H7), and content over it is
invalid on every node alike, never merely "unavailable" (which would make it neutral, #14 H6)."""

from __future__ import annotations

import pytest

from node.chain.types import RoundUpdate
from node.errors import StorageError
from node.protocol import fetch_available, fetch_each
from node.storage.unixfs import OverLimit

UPDATES = [RoundUpdate(sender=f"0x{i:040x}", cid=f"bafk-{i}", num_samples=1, earned=True) for i in range(3)]


def fetch_for(outcomes: dict[str, object], seen: list[int | None]):
    def fetch(cid, holders, max_bytes=None):
        seen.append(max_bytes)
        outcome = outcomes[cid]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return fetch


def test_over_the_limit_is_invalid_and_unreachable_is_unavailable():
    seen: list[int | None] = []
    fetch = fetch_for({"bafk-0": b"ok", "bafk-1": OverLimit("too big"), "bafk-2": StorageError("nobody answers")}, seen)

    assert fetch_available(fetch, UPDATES, max_bytes=1234) == [b"ok", b"", None]
    assert seen == [1234] * 3
    assert fetch_each(fetch, UPDATES, max_bytes=99) == [b"ok", b"", b""]


@pytest.mark.parametrize("limit", [None, 10])
def test_the_limit_is_passed_through(limit):
    seen: list[int | None] = []
    fetch_available(fetch_for({u.cid: b"x" for u in UPDATES}, seen), UPDATES, max_bytes=limit)
    assert seen == [limit] * 3
