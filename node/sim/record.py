"""Read a simulated federation's run back from the chain, into the report (node/report.py).

Both simulators, nodes in this process or node daemons, report through
`ChainRecorder`: what the report says is what the chain says, whoever ran
the nodes.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import replace
from functools import partial
from typing import Callable, Sequence

from aggregation import decode_model
from node.chain.client import FedLedgerClient
from node.chain.types import BlockActivity, ChainLog
from node.errors import ChainError
from node.report import NodeRecord, RoundRecord
from node.taskspec import TaskSpec
from node.sim.evaluation import Evaluator, ModelEvaluation, PendingEvaluation

Progress = Callable[[str], None]


def describe(evaluation: ModelEvaluation) -> str:
    """A model's evaluation for a progress line: test accuracy, and the nodes' loss if reported."""
    acc = "-" if evaluation.accuracy is None else f"{evaluation.accuracy:.3f}"
    loss = evaluation.metrics.get("loss")
    return f"test accuracy {acc}" + ("" if loss is None else f", loss {loss:.3f}")


def rounds_done(client: FedLedgerClient, task: int) -> int:
    """How many rounds of `task` have ended (finalized or voided)."""
    info = client.task_info(task)
    return info.rounds if info.finished else info.current_round - 1


class ChainRecorder:
    """Follows a task on the chain: one RoundRecord and one progress line per ended round, and
    every node's reputation after it (read at the round's last block). Nodes that register during
    the run (a sybil attacker's new identities) are followed from then on (`track`)."""

    def __init__(
        self,
        client: FedLedgerClient,
        task: int,
        addresses: Sequence[str],
        spec: TaskSpec,
        evaluate: Evaluator,
        model_bytes: Callable[[str], bytes],
        start_block: int,
        total_rounds: int,
        progress: Progress,
    ) -> None:
        self.client, self.task, self.spec, self.evaluate = client, task, spec, evaluate
        self.addresses = list(addresses)
        self.model_bytes = model_bytes
        self.total_rounds = total_rounds
        self.progress = progress
        self.history: dict[str, list[int]] = {a: [client.reputation_of(a)] for a in self.addresses}
        self.scores: dict[str, list[int | None]] = {a: [] for a in self.addresses}
        self.payouts: dict[str, int] = {a: 0 for a in self.addresses}
        self.records: list[RoundRecord] = []
        self.joined: dict[str, int] = {}  # a node tracked during the run -> rounds recorded when it was
        self.identity_of: dict[str, str] = {}  # a sybil identity -> the address of its attacker's first identity
        self._last_block, self._last_time = start_block, time.monotonic()
        self._blocks: dict[int, BlockActivity] = {}  # read once each: a long run has many
        self._pending: deque[tuple[PendingEvaluation, Callable[[ModelEvaluation], None]]] = deque()

    def track(self, address: str, identity_of: str | None = None) -> None:
        """Follow `address` too, from now on: its reputation history starts with its reputation
        now, its scores are None (no seat) for the rounds already recorded. `identity_of`: the
        first identity of the sybil attacker that `address` is an identity of (itself included)."""
        if address not in self.history:
            self.addresses.append(address)
            self.history[address] = [self.client.reputation_of(address)]
            self.scores[address] = [None] * len(self.records)
            self.payouts[address] = 0
            self.joined[address] = len(self.records)
        if identity_of is not None:
            self.identity_of[address] = identity_of

    def _activity(self, first: int, last: int) -> list[BlockActivity]:
        for n in range(first, last + 1):
            if n not in self._blocks:
                self._blocks[n] = self.client.block_activity(n)
        return [self._blocks[n] for n in range(first, last + 1)]

    def _round_end(self, r: int) -> tuple[int, str, bool, list[ChainLog]]:
        """Round `r`'s last block, its resulting model CID, whether it was voided, and the task's
        events from the previous round's end up to that block."""
        events: list[ChainLog] = []
        for block in self._activity(self._last_block + 1, self.client.head_block()):
            events += [ev for ev in block.logs if ev.args.get("taskId") == self.task]
            for ev in block.logs:
                if ev.args.get("taskId") == self.task and ev.args.get("round") == r:
                    if ev.event == "RoundFinalized":
                        return block.number, bytes(ev.args["cid"]).decode(), False, events
                    if ev.event == "RoundVoided":  # the model is unchanged by a void
                        return block.number, self.client.global_model(self.task)[0], True, events
        raise ChainError(f"round {r} of task {self.task} ended without a RoundFinalized or RoundVoided event")

    def evaluation_of(self, cid: str) -> ModelEvaluation:
        return self.evaluate_later(cid).result()

    def evaluate_later(self, cid: str, then: Callable[[ModelEvaluation], None] | None = None) -> PendingEvaluation:
        """The evaluation of model `cid`, submitted (`Evaluator.submit`: in the background when
        the evaluator has threads for it). `then(evaluation)` runs in this thread once it is done,
        in submission order, from a later `catch_up` or `finish`."""
        model, _meta = decode_model(self.model_bytes(cid), self.spec.max_update_bytes)
        pending = self.evaluate.submit(model)
        if then is not None:
            self._pending.append((pending, then))
            self._deliver(wait=False)
        return pending

    def _deliver(self, wait: bool) -> None:
        while self._pending and (wait or self._pending[0][0].done()):
            pending, then = self._pending.popleft()
            then(pending.result())

    def finish(self) -> None:
        """Wait for the evaluations still running: every record has its accuracy, every round its
        progress line."""
        self._deliver(wait=True)

    def catch_up(self) -> int:
        """Record every round that ended since the last call; returns how many rounds are recorded."""
        client = self.client
        for r in range(len(self.records) + 1, rounds_done(client, self.task) + 1):
            end, cid, voided, events = self._round_end(r)
            gas = sum(b.round_gas for b in self._activity(self._last_block + 1, end))
            for ev in events:
                if ev.event == "ProposalRejected":
                    self.progress(f"round {r}: proposal by {ev.args['proposer']} rejected "
                                  f"({ev.args['agrees']} agree, {ev.args['disagrees']} disagree); proposer slashed")  # fmt: skip
                elif ev.event == "RewardCredited" and ev.args["account"] in self.payouts:
                    self.payouts[ev.args["account"]] += int(ev.args["amount"])
            self.records.append(RoundRecord(round=r, global_model_cid=cid, test_accuracy=None, gas_used=gas))
            for a in self.addresses:
                self.history[a].append(client.reputation_of(a, block=end))
            scores = {} if voided else self._accepted_scores(r, cid, events)
            for a in self.addresses:
                self.scores[a].append(scores.get(a))
            now = time.monotonic()
            if voided:
                line = f"round {r}/{self.total_rounds}: void (no eligible node), {{}}"
            else:
                updates = len(client.round_updates(self.task, r))
                line = f"round {r}/{self.total_rounds}: {updates} updates, {{}}, gas {gas:,}, {now - self._last_time:.1f} s"
            self.evaluate_later(cid, partial(self._evaluated, len(self.records) - 1, line))
            self._last_block, self._last_time = end, now
        self._deliver(wait=False)
        return len(self.records)

    def _evaluated(self, index: int, line: str, evaluation: ModelEvaluation) -> None:
        self.records[index] = replace(self.records[index], test_accuracy=evaluation.accuracy, metrics=evaluation.metrics)
        self.progress(line.format(describe(evaluation)))

    def _accepted_scores(self, r: int, cid: str, events: list[ChainLog]) -> dict[str, int]:
        """Each participant's score in the accepted proposal of round `r`, by address."""
        proposals = [ev for ev in events if ev.event == "ProposalSubmitted" and ev.args["round"] == r
                     and bytes(ev.args["cid"]).decode() == cid]  # fmt: skip
        if not proposals:
            raise ChainError(f"round {r} of task {self.task} was finalized without a proposal of {cid}")
        senders = [u.sender for u in self.client.round_updates(self.task, r)]
        return dict(zip(senders, (int(s) for s in proposals[-1].args["scores"])))

    def node_records(self, roles: Sequence[str], num_samples: Sequence[int]) -> list[NodeRecord]:
        """Every node's account at the end: reputation, payouts credited during the run, pending
        rewards. `roles` and `num_samples` follow the addresses: the initial ones, then the tracked."""
        client, payouts = self.client, self.payouts
        return [
            NodeRecord(
                address=a,
                role=role,
                reputation_wad=client.reputation_of(a),
                payout_wei=payouts[a],
                pending_wei=client.pending_rewards(a),
                held_wei=client.probation_of(a)[2],
                reputation_history_wad=self.history[a],
                num_samples=n,
                scores_wad=self.scores[a],
                identity_of=self.identity_of.get(a),
                joined_after_round=self.joined.get(a, 0),
            )
            for a, role, n in zip(self.addresses, roles, num_samples)
        ]
