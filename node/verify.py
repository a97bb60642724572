"""Re-execution: recompute a finalized round from its on-chain inputs and compare (SPEC §5).

Everything comes from the chain: the base model (the global model the round
started from), the task spec (rule and its options), the revealed updates in
reveal order, and the accepted proposal (the new global model's CID and the
scores). Aggregation is exact, so an honest result matches to the byte; any
difference is named.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from node.chain.client import FedLedgerClient
from node.chain.types import RoundUpdate
from node.errors import ConfigError
from node.protocol import Fetch, recompute_round
from node.taskspec import SPEC_MAX_BYTES, TaskSpec
from node.units import WAD


@dataclass
class FinalizedRound:
    """What the chain says about a finalized round."""

    task: int
    round: int
    base_cid: str
    spec_cid: str
    updates: list[RoundUpdate]
    global_cid: str
    scores: list[int]
    proposer: str
    available: int | None = None  # the accepted proposal's bitmap of aggregated updates (None: all)


@dataclass
class Verdict:
    record: FinalizedRound
    computed_cid: str
    computed_scores: list[int]
    rejected: list[str | None] = field(default_factory=list)  # why each update was rejected, per update

    @property
    def differences(self) -> list[str]:
        out = []
        if self.computed_cid != self.record.global_cid:
            out.append(f"global model: on-chain {self.record.global_cid}, recomputed {self.computed_cid}")
        if len(self.computed_scores) != len(self.record.scores):
            out.append(f"scores: on-chain {len(self.record.scores)}, recomputed {len(self.computed_scores)}")
        for u, chain, mine in zip(self.record.updates, self.record.scores, self.computed_scores):
            if chain != mine:
                out.append(f"score of {u.sender}: on-chain {chain / WAD:.18f}, recomputed {mine / WAD:.18f}")
        return out

    @property
    def ok(self) -> bool:
        return not self.differences

    def to_json(self) -> dict[str, object]:
        r = self.record
        return {
            "task": r.task,
            "round": r.round,
            "match": self.ok,
            "base_cid": r.base_cid,
            "global_model_cid": r.global_cid,
            "recomputed_cid": self.computed_cid,
            "participants": [u.sender for u in r.updates],
            "scores_wad": [str(s) for s in r.scores],
            "recomputed_scores_wad": [str(s) for s in self.computed_scores],
            "rejected": self.rejected,
            "differences": self.differences,
        }


def _log_args(client: FedLedgerClient, event: str, task: int, **filters: object) -> list[dict]:
    """The arguments of the task's `event` logs, oldest first."""
    return [log.args for log in client.logs(event, taskId=task, **filters)]


def round_record(client: FedLedgerClient, task: int, round_: int) -> FinalizedRound:
    """The chain's account of a finalized round; ConfigError for an unknown task or an unfinished round."""
    if not 1 <= task <= client.task_count():
        raise ConfigError(f"unknown task {task}")
    created = _log_args(client, "TaskCreated", task)
    if not created:
        raise ConfigError(f"no TaskCreated event for task {task}")
    finalized = client.finalized_cids(task)
    if round_ not in finalized:
        raise ConfigError(f"round {round_} of task {task} is not finalized (finalized: {sorted(finalized) or 'none'})")
    earlier = [r for r in finalized if r < round_]
    base = finalized[max(earlier)] if earlier else bytes(created[0]["modelCid"]).decode()
    proposals = [a for a in _log_args(client, "ProposalSubmitted", task, round=round_)
                 if bytes(a["cid"]).decode() == finalized[round_]]  # fmt: skip
    accepted = proposals[-1]
    return FinalizedRound(
        task=task,
        round=round_,
        base_cid=base,
        spec_cid=bytes(created[0]["specCid"]).decode(),
        updates=client.round_updates(task, round_),
        global_cid=finalized[round_],
        scores=[int(s) for s in accepted["scores"]],
        proposer=accepted["proposer"],
        available=int(accepted["available"]),
    )


def verify_round(client: FedLedgerClient, fetch: Fetch, task: int, round_: int) -> Verdict:
    """Recompute `round_` of `task` from its on-chain inputs, fetched by CID through `fetch`: the
    same recomputation every attester runs (node/protocol/recompute.py)."""
    record = round_record(client, task, round_)
    participants = [u.sender for u in record.updates]
    owner = client.task_info(task).owner
    spec = TaskSpec.from_bytes(fetch(record.spec_cid, [owner, *participants], max_bytes=SPEC_MAX_BYTES))
    holders = [record.proposer, owner, *participants]
    result = recompute_round(
        client, fetch, spec, task, round_, record.base_cid, record.updates, holders, record.available
    )
    return Verdict(record, result.cid, result.scores, list(result.rejected))
