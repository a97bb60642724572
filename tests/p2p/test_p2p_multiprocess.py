"""Three and four node processes on loopback: fetch, announcements, a corrupting peer, a vanishing peer."""

from __future__ import annotations

import hashlib
import random
import time
from pathlib import Path

import pytest

from tests.p2p.peers import peer_processes

pytestmark = pytest.mark.slow
MB = 1024 * 1024


def digest(size: int, seed: int) -> str:
    return hashlib.sha256(random.Random(seed).randbytes(size)).hexdigest()


def test_fetch_across_processes_direct_and_inline(tmp_path: Path) -> None:
    # Prepare: A holds an update; B fetches over the direct channel, C over the libp2p stream itself
    with peer_processes(tmp_path, (), (), ("--inline",)) as (a, b, c):
        cid = a.call("put", size=3 * MB + 5, seed=1)["cid"]
        for peer in (b, c):
            peer.call("connect", addr=a.addr)
        # Execute
        fetched_b = b.call("fetch", cid=cid, providers=[a.peer_id])
        fetched_c = c.call("fetch", cid=cid, providers=[a.peer_id])
        # Assert: both hold the same, correct bytes and met no faults
        assert fetched_b["faults"] == [] and fetched_c["faults"] == []
        assert b.call("get", cid=cid)["sha256"] == c.call("get", cid=cid)["sha256"] == digest(3 * MB + 5, 1)


def test_announcements_delivered_and_unregistered_dropped(tmp_path: Path) -> None:
    # Prepare: A, B, C registered; D is not (everyone's allow-list leaves it out)
    with peer_processes(tmp_path, (), (), (), ()) as (a, b, c, d):
        registered = [a.peer_id, b.peer_id, c.peer_id]
        for peer in (a, b, c, d):
            peer.call("allow", peers=registered)
        for peer in (b, c, d):
            peer.call("connect", addr=a.addr)
        c.call("connect", addr=b.addr)
        for peer in (a, b, c, d):
            peer.call("subscribe", task=5)
        deadline = time.monotonic() + 20
        while len(a.call("peers", task=5)["peers"]) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        cid = a.call("put", size=10, seed=2)["cid"]
        # Execute: a burst of 60 from A (past gossipsub's silent-drop limits), one from D
        for i in range(60):
            a.call("announce", task=5, round=i, kind="update", cid=cid)
        d.call("announce", task=5, round=0, kind="update", cid=cid)
        received: dict[str, list] = {"b": [], "c": []}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and min(len(v) for v in received.values()) < 60:
            time.sleep(0.2)
            received["b"] += b.call("inbox")["announcements"]
            received["c"] += c.call("inbox")["announcements"]
        time.sleep(0.5)
        received["b"] += b.call("inbox")["announcements"]
        received["c"] += c.call("inbox")["announcements"]
        # Assert: every one of A's 60 arrived at both, none of D's
        for got in received.values():
            assert sorted(r[1] for r in got) == list(range(60))
            assert {r[4] for r in got} == {a.peer_id}


def test_corrupting_peer_detected_and_other_provider_used(tmp_path: Path) -> None:
    # Prepare: A (corrupting) and B (honest) hold the same update
    with peer_processes(tmp_path, ("--corrupt",), (), ()) as (a, b, c):
        cid = a.call("put", size=2 * MB, seed=3)["cid"]
        assert b.call("put", size=2 * MB, seed=3)["cid"] == cid
        c.call("connect", addr=a.addr)
        c.call("connect", addr=b.addr)
        # Execute
        result = c.call("fetch", cid=cid, providers=[a.peer_id, b.peer_id])
        # Assert: A is reported by name with the CID of the bad block, B delivered the update
        [(peer, kind, error)] = result["faults"]
        assert (peer, kind) == (a.peer_id, "corrupt"), error
        assert "does not match its CID" in error and a.peer_id in error and "bafkrei" in error
        assert c.call("get", cid=cid)["sha256"] == digest(2 * MB, 3)


def test_corrupting_only_provider_is_an_error(tmp_path: Path) -> None:
    with peer_processes(tmp_path, ("--corrupt",), ()) as (a, c):
        cid = a.call("put", size=MB, seed=4)["cid"]
        c.call("connect", addr=a.addr)
        result = c.call("fetch", cid=cid, providers=[a.peer_id])
        assert "error" in result and "FetchError" in result["error"] and a.peer_id in result["error"]
        assert "error" in c.call("get", cid=cid)  # nothing unverified was pinned


def test_vanished_peer_survived(tmp_path: Path) -> None:
    # Prepare: A dies after serving 5 blocks of a 16 MB update; B holds it too
    with peer_processes(tmp_path, ("--die-after", "5"), (), ()) as (a, b, c):
        cid = a.call("put", size=16 * MB, seed=5)["cid"]
        assert b.call("put", size=16 * MB, seed=5)["cid"] == cid
        c.call("connect", addr=a.addr)
        c.call("connect", addr=b.addr)
        # Execute
        start = time.monotonic()
        result = c.call("fetch", cid=cid, providers=[a.peer_id, b.peer_id], timeout=60)
        elapsed = time.monotonic() - start
        # Assert: A's disappearance is a fault, not a hang (stall timeout 3 s), and B completed the fetch
        assert [f[0] for f in result["faults"]] == [a.peer_id]
        assert result["faults"][0][1] in ("unavailable", "timeout")
        assert elapsed < 15
        assert c.call("get", cid=cid)["sha256"] == digest(16 * MB, 5)
        assert a.proc.wait(timeout=10) == 3  # it really was gone
