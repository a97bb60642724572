"""The Python mirror in `incentives.reputation` matches FedLedger.finalize to the wei."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from mirror_chain import RegisteredLedger

from incentives.outcome import MAX_ATTEMPTS, Outcome, outcome
from incentives.reputation import WAD, LedgerState, TaskIncentives, apply_finalize, apply_void
from tests.contracts.ledger_harness import DRAW, MIN_STAKE, PROPOSE, TIMEOUT, VOID, TaskConfig

SCORES = st.one_of(
    st.sampled_from([0, 1, WAD // 5, WAD // 3, WAD // 2, WAD - 1, WAD]),
    st.integers(min_value=0, max_value=WAD),
)
PARAMS = st.builds(
    TaskIncentives,
    alpha=st.sampled_from([0, WAD // 10, 3 * WAD // 10, WAD]),
    threshold=st.sampled_from([0, WAD // 5, WAD // 2]),
    proposer_share_bps=st.sampled_from([0, 500, 3333]),
    attester_share_bps=st.sampled_from([0, 700, 5000]),
)


Plan = list[tuple[list[int], list[bool], int, list[bool] | None]]


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    """Per round: a score per possible participant, whether each would agree (else stay silent),
    the proposal's availability bitmap (which updates the proposer could fetch), and, when not
    None, a poisoned proposal first, rejected, with the lazy voters (True) agreeing to it."""
    rounds = draw(st.integers(min_value=1, max_value=3))
    return [
        (
            draw(st.lists(SCORES, min_size=4, max_size=4)),
            draw(st.lists(st.booleans(), min_size=4, max_size=4)),
            draw(st.sampled_from([0b1111, 0b1111, 0b1011, 0b0001, 0])),
            draw(st.none() | st.lists(st.booleans(), min_size=4, max_size=4)),
        )
        for _ in range(rounds)
    ]


# No shrink phase: every shrink step replays transactions, and shrinking a failure took minutes.
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(plan=plans(), reward=st.integers(min_value=1, max_value=10**22), params=PARAMS)
def test_mirror_equals_chain_after_every_finalize(
    registered_ledger: RegisteredLedger, plan: Plan, reward: int, params: TaskIncentives
) -> None:
    # Prepare: a fresh task on a chain rewound to the warmed-up snapshot
    env = registered_ledger
    env.rewind()
    proto, f = env.proto, env.proto.f
    accounts = [env.owner, *env.nodes]
    config = TaskConfig(
        rounds=len(plan), committee_size=4, alpha=params.alpha, reputation_threshold=params.threshold,
        proposer_share_bps=params.proposer_share_bps, attester_share_bps=params.attester_share_bps,
    )  # fmt: skip
    task = proto.create_task(env.owner, config, reward)
    state = LedgerState(
        reputations={n: f.reputationOf(n).call() for n in env.nodes},
        pending={a: f.pendingRewards(a).call() for a in accounts},
        reward_remaining=reward,
        probation={n: scored for n in env.nodes for on, scored, _ in [f.probationOf(n).call()] if on},
        held={n: f.probationOf(n).call()[2] for n in env.nodes},
    )
    assert state.probation and len(state.probation) < len(env.nodes)  # newcomers and veterans both

    for rnd, (all_scores, agrees, bitmap, lazy) in enumerate(plan, start=1):
        # Execute: on chain (whoever is eligible is drawn) and in the mirror
        staked = [n for n in env.nodes if f.stakeOf(n).call() >= MIN_STAKE]  # rejected proposers are slashed
        if all(state.reputations[n] < params.threshold for n in staked):
            # nobody above this task's threshold: the draw is refused and the round waits (no void)
            with env.chain.reverts(proto.ledger, "FedLedgerCommitteeTooSmall", 0, 1):
                f.drawCommittee(task).transact({"from": env.owner})
            assert proto.state(task, rnd)["phase"] == DRAW
            return
        members = proto.draw(task)
        proto.commit(task, members)
        proto.reveal(task, members)
        senders = proto.revealed(task)
        scores = all_scores[: len(senders)]
        available = bitmap & ((1 << len(senders)) - 1)
        rejected: list[dict[str, bool]] = []
        if lazy is not None and len(senders) > 2:
            # A poisoned proposal: the lazy voters agree, then just enough checkers disagree to
            # reject it at once (more than half of the revealed members: with 2 revealed, the
            # proposer's lone voter is only half, so nothing can be rejected there); the
            # proposer's slash goes to the pool.
            proto.propose(task, scores, cid=b"bafk-poisoned", available=available)
            bad_proposer, bad_voters = proto.state(task)["proposer"], proto.voters(task)
            need = len(senders) // 2 + 1
            lazies = [v for v, yes in zip(bad_voters, lazy) if yes][: len(bad_voters) - need]
            checkers = [v for v in bad_voters if v not in lazies][:need]
            stake = f.stakeOf(bad_proposer).call()
            proto.attest(task, lazies, agree=True)
            proto.attest(task, checkers, agree=False)
            assert proto.state(task)["attempt"] == 1
            rejected.append({**dict.fromkeys(lazies, True), **dict.fromkeys(checkers, False)})
            state = replace(state, reward_remaining=state.reward_remaining + stake - f.stakeOf(bad_proposer).call())
        attempt = len(rejected)
        proto.propose(task, scores, available=available)
        proposer = proto.state(task)["proposer"]
        agreeing = [v for v, yes in zip(proto.voters(task), agrees) if yes]
        proto.attest(task, agreeing)
        voters = len(proto.voters(task))
        if voters == 0:  # a lone member: nobody can check it, so it is never accepted; void
            for _ in range(MAX_ATTEMPTS):
                env.chain.travel(TIMEOUT + 1)
                env.chain.send(f.advance(task), env.owner)
                if proto.state(task, rnd)["phase"] == VOID:
                    break
                proto.propose(task, scores, available=available)
            assert proto.state(task, rnd)["phase"] == VOID
            state = apply_void(state, owner=env.owner, rounds=len(plan), round=rnd, senders=senders, params=params)
            continue
        if outcome(len(senders), True, len(agreeing), 0) is not Outcome.ACCEPTED:
            # Silence is not consent: the window closes undecided, nobody is slashed, and the
            # next proposer's proposal is agreed by everyone.
            assert outcome(len(senders), True, len(agreeing), 0, window_closed=True) is Outcome.UNDECIDED
            env.chain.travel(TIMEOUT + 1)
            env.chain.send(f.advance(task), env.owner)
            assert proto.state(task)["phase"] == PROPOSE and proto.state(task)["attempt"] == attempt + 1
            proto.propose(task, scores, available=available)
            proposer = proto.state(task)["proposer"]
            agreeing = proto.voters(task)
            proto.attest(task, agreeing)
        before, pending_before = dict(state.probation), dict(state.pending)
        proto.finalize(task, scores)
        state = apply_finalize(
            state, owner=env.owner, rounds=len(plan), round=rnd, senders=senders, scores=scores,
            proposer=proposer, agreeing=agreeing, params=params, available=available, rejected=rejected,
        )  # fmt: skip

        # Assert: to the wei
        assert {n: f.reputationOf(n).call() for n in env.nodes} == state.reputations
        assert {a: f.pendingRewards(a).call() for a in accounts} == {a: state.pending.get(a, 0) for a in accounts}
        probation = {n: f.probationOf(n).call() for n in env.nodes}
        for n, (on, _, _) in probation.items():
            if n in before and not on:
                event("probation ended: " + ("vested" if state.pending.get(n, 0) > pending_before[n] else "forfeited"))
        assert {n: s for n, (on, s, _) in probation.items() if on} == state.probation
        assert {n: h for n, (_, _, h) in probation.items()} == {n: state.held.get(n, 0) for n in env.nodes}
        assert f.taskInfo(task).call()[6] == state.reward_remaining
    assert state.reward_remaining == 0
