"""Daemons announce what they did over gossipsub, and peers act at once instead of at their next
chain poll; with every announcement suppressed the task still finishes, on polls alone.

Both federations poll the chain only every few seconds, so the round times tell the two apart: a
round hands over between daemons at least four times (committee drawn, last commit, last reveal,
proposal), and without announcements each hand-over waits for some daemon's poll."""

from __future__ import annotations

import re
import time

import pytest

from node.chain.anvil import Anvil
from node.daemon.hints import NO_ANNOUNCE
from node.sim.federation import Federation, rounds_done
from tests.daemon.federation import build_federation, committed_count

pytestmark = pytest.mark.slow


@pytest.fixture
def anvil():
    with Anvil(accounts=10) as chain:
        yield chain


def set_poll_interval(fed: Federation, seconds: float) -> None:
    for n in fed.nodes:
        text, count = re.subn(r"(?m)^poll_interval = [0-9.]+", f"poll_interval = {seconds}", n.config.read_text())
        assert count == 1, f"node {n.index}'s config has no poll_interval line"
        n.config.write_text(text)


def round_ends(fed: Federation, rounds: int, timeout: float) -> list[float]:
    """Follow the task on the chain (10 Hz) until it is finished; when each round was finalized."""
    ends: list[float] = []

    def finished() -> bool:
        done = rounds_done(fed.client, fed.task)
        while len(ends) < done:
            ends.append(time.monotonic())
        return done >= rounds

    fed.wait(finished, timeout=timeout, what="the task to finish", interval=0.1)
    return ends


def run_federation(fed: Federation, rounds: int, env: dict[str, str] | None = None) -> list[float]:
    """Start every daemon, wait for the task and for every daemon to leave by itself; the durations
    of rounds 2..R (round 1 also pays for the daemons' start-up)."""
    try:
        fed.start(env)
        ends = round_ends(fed, rounds, timeout=400)
        for n in fed.nodes:
            assert n.proc is not None and n.proc.wait(timeout=60) == 0, n.text()[-2000:]
    finally:
        fed.stop_all()
    client = fed.client
    assert client.global_model(fed.task)[1] == rounds
    for n in fed.nodes:
        assert committed_count(fed, n.address) == rounds  # every daemon took part in every round
    return [b - a for a, b in zip(ends, ends[1:])]


def test_announcements_wake_daemons_long_before_their_poll(anvil, tmp_path):
    poll = 10.0
    fed = build_federation(tmp_path, anvil.url, n_nodes=3, rounds=4)
    set_poll_interval(fed, poll)

    steady = run_federation(fed, rounds=4)

    # Each round hands over between daemons at least four times, yet most rounds take less than one
    # poll. Not every round: gossip may lose a message, which costs that hand-over a poll (a CI run
    # saw rounds of 0.8 s and 10.7 s), and that is all a lost message may cost.
    assert len(steady) == 3 and sorted(steady)[1] < poll and min(steady) < poll / 2, steady
    for n in fed.nodes:
        assert "woken by " in n.text() and NO_ANNOUNCE not in n.text(), n.index
    logs = "".join(n.text() for n in fed.nodes)
    for kind in ("committing", "revealing", "proposing", "proposal", "model"):
        assert f"woken by {kind} of task 1" in logs, kind
    assert "prefetched update" in logs  # the round's updates were fetched ahead of the attesters' steps
    assert "prefetched proposal" in logs  # and the next round's base model


def test_without_announcements_the_task_finishes_on_polls_alone(anvil, tmp_path):
    poll = 3.0
    fed = build_federation(tmp_path, anvil.url, n_nodes=3, rounds=3)
    set_poll_interval(fed, poll)

    steady = run_federation(fed, rounds=3, env={NO_ANNOUNCE: "1"})

    # Correct, only slower: the hand-overs wait for polls, which the two rounds add up to at least one of.
    assert len(steady) == 2 and sum(steady) > poll, steady
    for n in fed.nodes:
        log = n.text()
        assert "woken by" not in log and "prefetched proposal" not in log, n.index  # nothing was heard
        assert "not announcing Announcement(task=1, round=1" in log  # the seam held back what it had to say
