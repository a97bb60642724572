"""What finalizing a round's pending proposal would credit, predicted with the contract's mirror.

`incentives/` is the exact integer twin of the contract's settlement; given the chain's state
(reputations, the pool, the task's parameters, the pending proposal and its attestations) it
says what `finalize` will credit each account, before anyone sends it.
"""

from __future__ import annotations

from incentives.reputation import LedgerState, TaskIncentives, apply_finalize
from node.chain.client import FedLedgerClient
from node.chain.types import Phase
from node.errors import ChainError


def predicted_credits(client: FedLedgerClient, task: int) -> dict[str, int] | None:
    """Wei each account would be credited if the current round's pending proposal were finalized
    now, with the attestations so far (withdrawable, or held for a newcomer's probation; a vest of
    rewards held earlier is not counted); None when no proposal is pending."""
    info = client.task_info(task)
    if info.finished:
        return None
    r = info.current_round
    state = client.round_state(task, r)
    if state.phase != Phase.ATTEST:
        return None
    proposals = [ev for ev in client.logs("ProposalSubmitted", taskId=task, round=r) if ev.args["attempt"] == state.attempt]
    if not proposals:
        raise ChainError(f"task {task} round {r} is attesting, but no proposal of attempt {state.attempt} is logged")
    proposal = proposals[-1]
    senders = [u.sender for u in client.round_updates(task, r)]
    attested = client.logs("Attested", taskId=task, round=r)
    agreeing = {ev.args["node"] for ev in attested if ev.args["attempt"] == state.attempt and ev.args["agree"]}
    rejected = [  # votes on this round's rejected proposals: judged at finalize too (#16)
        {ev.args["node"]: bool(ev.args["agree"]) for ev in attested if ev.args["attempt"] == attempt}
        for attempt in sorted({ev.args["attempt"] for ev in client.logs("ProposalRejected", taskId=task, round=r)})
    ]
    config = client.task_config(task)
    params = TaskIncentives(
        alpha=int(config["alpha"]),
        threshold=int(config["reputationThreshold"]),
        proposer_share_bps=int(config["proposerShareBps"]),
        attester_share_bps=int(config["attesterShareBps"]),
    )
    accounts = {*senders, proposal.args["proposer"]}
    probation = {a: client.probation_of(a) for a in accounts}
    before = LedgerState(
        reputations={a: client.reputation_of(a) for a in accounts},
        reward_remaining=info.reward_remaining,
        probation={a: scored for a, (on, scored, _) in probation.items() if on},
        held={a: wei for a, (_, _, wei) in probation.items() if wei},
    )
    after = apply_finalize(
        before, owner=info.owner, rounds=info.rounds, round=r, senders=senders,
        scores=[int(s) for s in proposal.args["scores"]], proposer=proposal.args["proposer"], agreeing=agreeing,
        params=params, available=int(proposal.args["available"]), rejected=rejected,
    )  # fmt: skip
    return dict(after.credited)
