"""How a proposal's attestations decide it: the exact twin of FedLedger's `_accepted`,
`_rejected` and `_endAttempt` (contracts/README.md, "Round outcomes").

The voters of a proposal are the round's revealed members other than the proposer, fixed
when it is posted; an outside (fallback) proposer neither adds nor removes a seat. A strict
majority of the voters agreeing accepts it (finalizable at once). Disagreement rejects it and
slashes the proposer only when the disagreeing voters are more than half of the round's
revealed members: a revealed proposer's own seat counts on its side, so half of the members
who did the work (2 slanderers of 4) cannot slash it. Anything else when the window closes, or
once everyone has voted, leaves it undecided: nobody is slashed and the next proposer tries.
After MAX_ATTEMPTS proposals that were not accepted the round is void. Silence is never consent.
"""

from __future__ import annotations

from enum import Enum

MAX_ATTEMPTS = 4
"""Proposals a round may see without one being accepted before it is void (FedLedger.MAX_ATTEMPTS)."""


class Outcome(Enum):
    """Where a proposal stands."""

    PENDING = "pending"  # the window is open and votes may still decide it
    ACCEPTED = "accepted"  # finalizable: a strict majority agreed
    REJECTED = "rejected"  # a strict majority disagreed: the proposer is slashed
    UNDECIDED = "undecided"  # no majority either way and no more votes can come: no slash, retry


def outcome(
    revealed: int, proposer_revealed: bool, agrees: int, disagrees: int, window_closed: bool = False
) -> Outcome:
    """The outcome of a proposal in a round with `revealed` revealed members (the proposer among
    them or not), with `agrees` and `disagrees` votes so far."""
    voters = voters_of(revealed, proposer_revealed)
    if voters < 0 or agrees < 0 or disagrees < 0 or agrees + disagrees > voters:
        raise ValueError(f"{agrees} agree and {disagrees} disagree out of {voters} voters")
    if 2 * agrees > voters:
        return Outcome.ACCEPTED
    if 2 * disagrees > revealed:
        return Outcome.REJECTED
    if window_closed or agrees + disagrees == voters:
        return Outcome.UNDECIDED
    return Outcome.PENDING


def voters_of(revealed: int, proposer_revealed: bool) -> int:
    """The seats that vote on a proposal: the revealed members, less the proposer if it is one."""
    return revealed - 1 if proposer_revealed else revealed


def round_voided(attempt: int) -> bool:
    """Whether ending attempt `attempt` (0-based) without acceptance voids the round."""
    return attempt + 1 >= MAX_ATTEMPTS
