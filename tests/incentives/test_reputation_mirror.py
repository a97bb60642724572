"""The Python mirror in `incentives.reputation` matches FedLedger.finalizeRound to the wei."""

from __future__ import annotations

from mirror_chain import RegisteredLedger
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from incentives.reputation import WAD, LedgerState, apply_finalize

SCORES = st.one_of(
    st.sampled_from([0, 1, WAD // 5, WAD // 3, WAD // 2, WAD - 1, WAD]),
    st.integers(min_value=0, max_value=WAD),
)


@st.composite
def rounds_of_submissions(draw: st.DrawFn) -> list[list[tuple[int, int]]]:
    """Per round, (node index, score) pairs in submission order; a round may be empty."""
    rounds = draw(st.integers(min_value=1, max_value=3))
    plan = []
    for _ in range(rounds):
        order = draw(st.permutations(range(4)))
        count = draw(st.integers(min_value=0, max_value=4))
        plan.append([(i, draw(SCORES)) for i in order[:count]])
    return plan


# No shrink phase: every shrink step replays transactions, and shrinking a failure took minutes.
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(plan=rounds_of_submissions(), reward=st.integers(min_value=1, max_value=10**22))
def test_mirror_equals_chain_after_every_finalize(
    registered_ledger: RegisteredLedger, plan: list[list[tuple[int, int]]], reward: int
) -> None:
    # Prepare: a fresh task on a chain rewound to the warmed-up snapshot
    env = registered_ledger
    env.rewind()
    f = env.ledger.functions
    accounts = [env.owner, *env.nodes]
    env.transact(f.createTask(b"model", b"spec", len(plan), 4, 0, 0), env.owner, reward)
    task = f.taskCount().call()
    state = LedgerState(
        reputations={n: f.reputationOf(n).call() for n in env.nodes},
        pending={a: f.pendingRewards(a).call() for a in accounts},
        reward_remaining=reward,
    )

    for rnd, submissions in enumerate(plan, start=1):
        senders = [env.nodes[i] for i, _ in submissions]
        scores = [s for _, s in submissions]
        # Execute: on chain and in the mirror
        for sender in senders:
            env.transact(f.submitUpdate(task, rnd, b"update", 1), sender)
        env.transact(f.finalizeRound(task, rnd, b"global", scores), env.owner)
        state = apply_finalize(state, owner=env.owner, rounds=len(plan), round=rnd, senders=senders, scores=scores)

        # Assert: to the wei
        assert {n: f.reputationOf(n).call() for n in env.nodes} == state.reputations
        assert {a: f.pendingRewards(a).call() for a in accounts} == {a: state.pending.get(a, 0) for a in accounts}
        assert f.taskInfo(task).call()[6] == state.reward_remaining
    assert state.reward_remaining == 0
