"""Recomputing a round: the base model, the revealed updates in reveal order and the previous
round's updates in, the new model, its CID and one score per update out.

What a proposer posts, what every attester checks (`ProtocolNode`), and what `fedledger verify`
compares: the one recomputation of the protocol. Pure apart from fetching content.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Mapping, Protocol, Sequence

from aggregation import aggregate_round
from aggregation.update import Update
from node.chain.client import FedLedgerClient
from node.chain.types import RoundUpdate
from node.errors import ChainError, StorageError
from node.storage.unixfs import OverLimit, cid_of
from node.taskspec import TaskSpec

log = logging.getLogger("fedledger.protocol")


class Fetch(Protocol):
    """fetch(cid, holders, max_bytes=None) -> bytes: get content into local storage from whoever
    holds it (holders are the on-chain addresses of nodes expected to have it). Content larger
    than `max_bytes` raises OverLimit, and is refused while it arrives, not after; None: the
    fetch's own default."""

    def __call__(self, cid: str, holders: Sequence[str], max_bytes: int | None = None) -> bytes: ...


class UnavailableError(StorageError):
    """Raised when an update a proposal aggregated cannot be fetched here: this node cannot
    check the proposal (it abstains; it must not disagree)."""


@dataclass(frozen=True)
class RoundResult:
    """What recomputing a round gives: the new model's CID and bytes, one score per update
    (in reveal order) and, per update, why it was rejected (None: accepted).

    `available` is the bitmap of the updates aggregated (bit i: update i; None: all of them):
    what a proposer could fetch, or the set an attester recomputed over. An update left out
    scores 0 here and is neutral on-chain. `complete` is False when some update of the previous
    round (the replay check's reference) could not be fetched: such a result may differ from a
    better-informed node's, so it is never grounds for disagreeing, nor cached."""

    cid: str
    scores: list[int]
    model: bytes
    rejected: tuple[str | None, ...] = ()
    available: int | None = None
    complete: bool = True
    # The accepted updates as decoded, by CID: the next round's replay check reads these
    # instead of fetching and decoding the same (content-addressed) files again.
    decoded: Mapping[str, Update] = field(default_factory=dict, repr=False, compare=False)


def fetch_each(
    fetch: Fetch, updates: Sequence[RoundUpdate], holders: Sequence[str] = (), max_bytes: int | None = None
) -> list[bytes]:
    """Every update's bytes, in order; one that cannot be fetched is b"" (rejected, like any invalid one)."""
    return [b if b is not None else b"" for b in fetch_available(fetch, updates, holders, max_bytes)]


def fetch_update(fetch: Fetch, u: RoundUpdate, holders: Sequence[str], max_bytes: int | None) -> bytes:
    """One update's bytes; b"" (invalid, scored 0 by every node alike) when its CID names more
    than `max_bytes`, which is refused as it arrives. Unreachable: the fetch's error."""
    try:
        return fetch(u.cid, [u.sender, *holders], max_bytes=max_bytes)
    except OverLimit as exc:  # the CID fixes the size: the same verdict on every node
        log.warning("update %s of %s is over the task's limit (%s)", u.cid, u.sender, exc)
        return b""


def fetch_available(
    fetch: Fetch, updates: Sequence[RoundUpdate], holders: Sequence[str] = (), max_bytes: int | None = None
) -> list[bytes | None]:
    """Every update's bytes, in order; None for one that cannot be fetched now (not a verdict on it)."""
    blobs: list[bytes | None] = []
    for u in updates:
        try:
            blobs.append(fetch_update(fetch, u, holders, max_bytes))
        except Exception as exc:  # unreachable or corrupt here; someone else may well have it
            log.warning("update %s of %s unavailable (%s)", u.cid, u.sender, exc)
            blobs.append(None)
    return blobs


def recompute_round(
    client: FedLedgerClient,
    fetch: Fetch,
    spec: TaskSpec,
    task: int,
    round_: int,
    base_cid: str,
    updates: Sequence[RoundUpdate],
    holders: Sequence[str] = (),
    available: int | None = None,
    known: Mapping[str, Update] | None = None,
) -> RoundResult:
    """Round `round_` of `task` from its inputs: the base model, the revealed updates in reveal
    order, and the previous round's updates (a replay of one of them scores 0). What a proposer
    posts, what every attester checks, and what `fedledger verify` compares.

    With `available` None (a proposer) every update is fetched and those that cannot be are left
    out (their bits cleared). With a bitmap (an attester checking a proposal) exactly those
    updates are aggregated, and one that cannot be fetched raises UnavailableError."""
    limit = spec.max_update_bytes
    base = fetch(base_cid, list(holders), max_bytes=limit)
    previous = _previous(fetch, client.round_updates(task, round_ - 1), holders, limit, known or {}) if round_ > 1 else []
    blobs: list[bytes | None]
    if available is None:
        blobs = fetch_available(fetch, updates, holders, limit)
    else:
        if available < 0 or available >> len(updates):
            raise ChainError(f"availability bitmap {available:#x} names updates beyond the {len(updates)} revealed")
        blobs = []
        for i, u in enumerate(updates):
            if not available >> i & 1:
                blobs.append(None)
                continue
            try:
                blobs.append(fetch_update(fetch, u, holders, limit))
            except Exception as exc:
                raise UnavailableError(f"update {u.cid} of {u.sender} is unavailable here ({exc})") from exc
    # Each file must be for this round, on this base, with the sample count its sender revealed.
    claims = [
        {"task": str(task), "round": str(round_), "base": base_cid, "num_samples": str(u.num_samples)}
        for u, b in zip(updates, blobs) if b is not None
    ]  # fmt: skip
    # Reputation before influence: a sender that has not earned it is scored, not followed.
    earned = [u.earned for u, b in zip(updates, blobs) if b is not None]
    result = aggregate_round(
        spec.rule,
        base,
        [b for b in blobs if b is not None],
        options=spec.rule_options(),
        max_update_bytes=spec.max_update_bytes,
        previous=previous,
        claims=claims,
        earned=earned,
    )
    scores, errors = iter(result.scores_wad), iter(result.errors)
    fetched = [u.cid for u, b in zip(updates, blobs) if b is not None]
    return RoundResult(
        cid_of(result.model),
        [next(scores) if b is not None else 0 for b in blobs],
        result.model,
        tuple(next(errors) if b is not None else "unavailable" for b in blobs),
        available=sum(1 << i for i, b in enumerate(blobs) if b is not None),
        complete=all(previous),
        decoded={cid: update for cid, update in zip(fetched, result.decoded) if update is not None},
    )


def _previous(
    fetch: Fetch, updates: Sequence[RoundUpdate], holders: Sequence[str], limit: int, known: Mapping[str, Update]
) -> list[bytes | Update]:
    """The previous round's updates for the replay check, in order: as decoded already (`known`,
    by CID), else fetched (b"" when that fails)."""
    fetched = iter(fetch_each(fetch, [u for u in updates if u.cid not in known], holders, limit))
    return [known[u.cid] if u.cid in known else next(fetched) for u in updates]
