"""The daemon's gossip decisions without a network: what a step announces, which hinted iterations
step, whom to dial, how a hint cuts the idle wait, and prefetching only what the chain backs.
The real thing, daemons on anvil talking over libp2p, is tests/daemon/test_daemon_gossip.py."""

from __future__ import annotations

import trio

from node.chain.types import Phase
from node.daemon.hints import Prefetcher, RoundView, Seen, StepFilter, Wakeup, announcement_for, ring_neighbours
from node.p2p.gossip import Announcement
from node.storage import cid_of

CID = cid_of(b"an update")


def test_proposals_and_models_are_announced_and_commitments_and_reveals_are_not() -> None:
    assert announcement_for(f"task 3 round 7: proposed {CID}") == Announcement(3, 7, "proposal", CID)
    took_over = f"task 3 round 7: took over proposing (designated proposer silent) {CID}"
    assert announcement_for(took_over) == Announcement(3, 7, "proposal", CID)
    assert announcement_for(f"task 3 round 7: finalized {CID}") == Announcement(3, 7, "model", CID)
    # A commitment's CID is secret until its reveal; a reveal is read from the chain (one message
    # a member through gossipsub cost more than the rest of a round); the rest names no content.
    assert announcement_for(f"task 3 round 7: committed to update {CID}") is None
    assert announcement_for(f"task 3 round 7: revealed {CID}") is None
    assert announcement_for("task 3 round 7: drew a committee of 4") is None
    assert announcement_for("task 3 round 7: attested agree") is None
    assert announcement_for("task 3 round 7: commit phase expired; advanced") is None
    assert announcement_for("task 3 round 7: proposed not-a-cid") is None
    assert announcement_for("") is None


def view(round_: int, phase: Phase, attempt: int = 0) -> RoundView:
    return RoundView(round_, phase, attempt)


def test_the_node_whose_action_moved_the_round_announces_the_new_phase() -> None:
    steps = StepFilter()
    # We drew the committee; the next look finds the commit phase: peers must commit.
    steps.stepped(1, view(2, Phase.DRAW), "task 1 round 2: drew a committee of 3")
    assert steps.moved(1, view(2, Phase.COMMIT)) == Announcement(1, 2, "committing", "")
    assert steps.moved(1, view(2, Phase.COMMIT)) is None  # said once, not at every look
    # We committed, but not last: nothing moved, nothing to say.
    steps.stepped(1, view(2, Phase.COMMIT), f"task 1 round 2: committed to update {CID}")
    assert steps.moved(1, view(2, Phase.COMMIT)) is None
    # We revealed last: the proposer must wake.
    steps.stepped(1, view(2, Phase.REVEAL), f"task 1 round 2: revealed {CID}")
    assert steps.moved(1, view(2, Phase.PROPOSE)) == Announcement(1, 2, "proposing", "")
    # We proposed: the proposal announcement already woke the attesters.
    steps.stepped(1, view(2, Phase.PROPOSE), f"task 1 round 2: proposed {CID}")
    assert steps.moved(1, view(2, Phase.ATTEST)) is None
    # A proposal rejected after its timeout: back to proposing, attempt 1.
    steps.stepped(1, view(2, Phase.ATTEST), "task 1 round 2: attest phase expired; advanced")
    assert steps.moved(1, view(2, Phase.PROPOSE, 1)) == Announcement(1, 2, "proposing", "")
    # We finalized: the next round's draw is ours to make, not announced.
    steps.stepped(1, view(2, Phase.ATTEST), f"task 1 round 2: finalized {CID}")
    assert steps.moved(1, view(3, Phase.DRAW)) is None
    # Others' actions are theirs to announce.
    assert steps.moved(1, view(3, Phase.COMMIT)) is None


def test_only_the_first_announcement_of_each_kind_counts() -> None:
    seen = Seen(limit=3)
    assert seen.first(Announcement(1, 2, "revealing", "", "peerA"))
    assert not seen.first(Announcement(1, 2, "revealing", "", "peerB"))  # the same news from another peer
    assert seen.first(Announcement(1, 2, "proposing", "", "peerB"))
    assert seen.first(Announcement(1, 3, "revealing", "", "peerA"))
    assert seen.first(Announcement(1, 2, "model", CID, "peerA"))  # past the limit: starts afresh
    assert seen.first(Announcement(1, 2, "revealing", "", "peerA"))


def test_a_hinted_iteration_steps_only_tasks_that_moved_and_never_into_a_draw() -> None:
    steps = StepFilter()
    assert steps.should_step(1, view(1, Phase.COMMIT), hinted=True)  # never looked: step
    steps.stepped(1, view(1, Phase.COMMIT), None)  # committed already, waiting for the others
    assert not steps.should_step(1, view(1, Phase.COMMIT), hinted=True)
    assert steps.should_step(1, view(1, Phase.COMMIT), hinted=False)  # the poll always steps: deadlines
    assert steps.should_step(1, view(1, Phase.REVEAL), hinted=True)
    assert not steps.should_step(1, view(2, Phase.DRAW), hinted=True)  # the finalizer draws
    assert steps.should_step(1, view(2, Phase.DRAW), hinted=False)
    steps.forget()  # after a failed iteration
    assert steps.should_step(1, view(1, Phase.COMMIT), hinted=True)


def test_ring_neighbours_connect_everyone_with_k_dials_each() -> None:
    peers = [f"peer{i:02d}" for i in range(10)]
    assert ring_neighbours("peer08", peers, 3) == ["peer09", "peer00", "peer01"]
    assert ring_neighbours("peer00", ["peer01"], 6) == ["peer01"]
    assert ring_neighbours("alone", [], 6) == []
    assert ring_neighbours("peer05", [*peers, "peer05"], 20) == [p for p in peers[6:] + peers[:5]]
    # Following successors from any node reaches every node: one connected mesh.
    edges = {p: set(ring_neighbours(p, peers, 2)) for p in peers}
    reached, frontier = {"peer00"}, ["peer00"]
    while frontier:
        for q in edges[frontier.pop()] - reached:
            reached.add(q)
            frontier.append(q)
    assert reached == set(peers)


def test_a_hint_cuts_the_wait_short_and_one_that_came_early_is_kept() -> None:
    async def main() -> list[tuple[bool, float]]:
        wakeup, got = Wakeup(min_gap=0.0), []

        async def timed(timeout: float) -> None:
            t = trio.current_time()
            got.append((await wakeup.wait(timeout), trio.current_time() - t))

        await timed(0.05)  # nothing: the poll interval passes
        async with trio.open_nursery() as nursery:
            nursery.start_soon(timed, 10.0)
            await trio.sleep(0.05)
            wakeup.hint()
        wakeup.hint()  # while the loop was busy
        await timed(10.0)
        await timed(0.05)  # consumed: waits again
        return got

    (t1, d1), (t2, d2), (t3, d3), (t4, d4) = trio.run(main)
    assert (t1, t2, t3, t4) == (False, True, True, False)
    assert d1 >= 0.05 and d2 < 5 and d3 < 0.01 and d4 >= 0.05


def test_hints_from_a_flooding_peer_wake_the_loop_at_most_once_per_gap() -> None:
    async def main() -> int:
        wakeup, wakes = Wakeup(min_gap=0.1), 0

        async def flood() -> None:
            while True:
                wakeup.hint()
                await trio.sleep(0.001)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            with trio.move_on_after(1.0):
                while True:
                    wakes += await wakeup.wait(5.0)
            nursery.cancel_scope.cancel()
        return wakes

    assert 5 <= trio.run(main) <= 11


def test_prefetch_only_what_the_chain_backs_once_each_and_survive_failures() -> None:
    good = Announcement(1, 2, "update", CID, "peerA")
    liar = Announcement(1, 2, "update", cid_of(b"never revealed"), "peerB")
    broken = Announcement(1, 2, "update", cid_of(b"provider dies"), "peerC")
    late = Announcement(1, 2, "update", cid_of(b"announced after the proposal"), "peerE")
    stale = Announcement(1, 1, "update", cid_of(b"last round's"), "peerA")
    proposal = Announcement(1, 2, "proposal", cid_of(b"aggregate"), "peerD")
    confirmed: list[list[Announcement]] = []
    fetched: list[Announcement] = []

    def confirm(anns: list[Announcement]) -> list[Announcement]:
        confirmed.append(list(anns))
        return [a for a in anns if a is not liar]

    async def fetch(ann: Announcement) -> None:
        await trio.sleep(0.01)
        if ann is broken:
            raise ConnectionError("provider went away")
        fetched.append(ann)

    async def main() -> tuple[list[Announcement], int]:
        prefetcher = Prefetcher(confirm, fetch, linger=0.01, concurrency=2)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(prefetcher.run)
            for ann in (stale, good, liar, broken, good, Announcement(1, 2, "revealing", "", "peerA"), proposal):
                prefetcher.offer(ann)
            await trio.sleep(0.2)
            before_release = list(fetched)  # updates wait for the round's proposal; the proposal does not
            prefetcher.release(1, 2)
            prefetcher.release(1, 2)  # once is enough
            prefetcher.offer(late)  # after the release: fetched at once
            await trio.sleep(0.2)
            prefetcher.offer(good)  # seen: not again
            await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
        return before_release, prefetcher.fetched

    before_release, count = trio.run(main)
    assert before_release == [proposal]
    assert count == 3 and sorted(map(str, fetched)) == sorted(map(str, [proposal, good, late]))
    # One confirmation per batch and kind: round 2's updates together, held or just in; the phase
    # hint is nothing to fetch, and last round's update was dropped when round 2 was released.
    assert [(len(c), c[0].kind) for c in confirmed] == [(1, "proposal"), (4, "update")]
    # Held updates go last revealed first: the attester's step takes them in reveal order.
    assert confirmed[1] == [broken, liar, good, late]
