"""One node's part in the protocol, as a step function the daemon calls in a loop.

`NodeWorker.step(task)` reads the task's round from the chain and takes at
most one action: draw the committee, train-pin-commit, reveal, propose,
attest (by re-running the aggregation), finalize, or nudge an expired phase
forward. The chain is the source of truth for what has happened; the journal
(written before every transaction) is the source of truth for what this node
meant to do, so a restart after `kill -9` resumes with the same update and
salt and never submits twice (the chain refuses, and the worker reads the
chain before sending).
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from eth_utils import to_checksum_address

from aggregation import aggregate_round, decode_model, encode_update
from node.abc import Storage, Trainer
from node.chain.client import FedLedgerClient, Phase, RoundUpdate, make_commitment, proposal_hash
from node.daemon.journal import Journal
from node.errors import ChainError
from node.storage.unixfs import cid_of
from node.taskspec import TaskSpec

log = logging.getLogger("fedledger.worker")

# A test seam: with this set, a daemon that is the designated proposer stops just before it
# proposes, so a test can kill -9 it at exactly that point (tests/daemon/test_daemon_anvil.py).
HOLD_BEFORE_PROPOSE = "FEDLEDGER_TEST_HOLD_BEFORE_PROPOSE"

ZERO32 = b"\x00" * 32

# fetch(cid, holders) -> bytes: get content into local storage from whoever holds it
# (holders are the on-chain addresses of nodes expected to have it).
Fetch = Callable[[str, Sequence[str]], bytes]


@dataclass(frozen=True)
class RoundResult:
    cid: str
    scores: list[int]
    model: bytes


class NodeWorker:
    def __init__(
        self,
        client: FedLedgerClient,
        journal: Journal,
        storage: Storage,
        trainer: Callable[[TaskSpec], Trainer],
        fetch: Fetch,
        now: Callable[[], float] | None = None,
        train_seed: int | None = None,
    ) -> None:
        assert client.account is not None, "the worker sends transactions"
        self.client = client
        self.me = client.account.address
        self.journal = journal
        self.storage = storage
        self._make_trainer = trainer
        self._trainers: dict[int, Trainer] = {}
        self.fetch = fetch
        self._now = now
        self._seed = train_seed if train_seed is not None else secrets.randbits(31)
        self._specs: dict[int, TaskSpec] = {}
        self._results: dict[tuple[int, int, str], RoundResult] = {}
        self.last_action: str | None = None

    # -- chain reads --------------------------------------------------------------

    def chain_time(self) -> float:
        """When our next transaction would be mined, as far as deadlines go.

        Deadlines are in block time. A dev chain that mines only on demand has a
        stale latest block while idle, and the next block takes the wall clock,
        so the later of the two is what a transaction sent now will see."""
        if self._now is not None:
            return self._now()
        return max(float(self.client.w3.eth.get_block("latest")["timestamp"]), time.time())

    def member(self, task: int, round_: int) -> tuple[bool, bytes, bool, int, int]:
        member, commitment, revealed, vote, attempt = self.client.contract.functions.memberInfo(
            task, round_, self.me
        ).call()
        return bool(member), bytes(commitment), bool(revealed), int(vote), int(attempt)

    def spec(self, task: int) -> TaskSpec:
        if task not in self._specs:
            info = self.client.task_info(task)
            self._specs[task] = TaskSpec.from_bytes(self.fetch(info.spec_cid, [info.owner]))
        return self._specs[task]

    def trainer(self, task: int) -> Trainer:
        if task not in self._trainers:
            self._trainers[task] = self._make_trainer(self.spec(task))
        return self._trainers[task]

    # -- the step -----------------------------------------------------------------

    def step(self, task: int) -> str | None:
        """Take at most one protocol action on `task`; returns what was done (None: nothing to do)."""
        info = self.client.task_info(task)
        if info.finished:
            return None
        r = info.current_round
        state = self.client.round_state(task, r)
        expired = self.chain_time() > state.deadline
        if state.phase == Phase.DRAW:
            members, _ = self.client.draw_committee(task)
            return self._did(f"task {task} round {r}: drew a committee of {len(members)}")
        is_member, commitment, revealed, vote, vote_attempt = self.member(task, r)
        if state.phase == Phase.COMMIT:
            if is_member and commitment == ZERO32:
                return self._commit(task, r)
            return self._advance(task, r, "commit") if expired else None
        if state.phase == Phase.REVEAL:
            if is_member and commitment != ZERO32 and not revealed:
                return self._reveal(task, r)
            return self._advance(task, r, "reveal") if expired else None
        if state.phase == Phase.PROPOSE:
            designated = self.client.designated_proposer(task, r)
            if to_checksum_address(designated) == self.me:
                return self._propose(task, r, state.attempt, takeover=False)
            if expired:
                self._fresh_block(task, state.deadline)
                return self._propose(task, r, state.attempt, takeover=True)
            return None
        if state.phase == Phase.ATTEST:
            voted = vote != 0 and vote_attempt == state.attempt
            if revealed and not voted and to_checksum_address(state.proposer) != self.me:
                return self._attest(task, r, state.attempt, state.proposal_hash)
            if expired:
                self._fresh_block(task, state.deadline)
            return self._try_finalize(task, r, state.attempt, state.proposal_hash)
        return None

    def _fresh_block(self, task: int, deadline: int) -> None:
        """Make sure the chain's head is past `deadline` before acting on its expiry.

        Transactions are simulated (gas estimation) on top of the latest block; on a dev chain
        that mines only when asked, that block can be older than the deadline although the wall
        clock is past it. `advance` is harmless and mines a block with the current time."""
        if float(self.client.w3.eth.get_block("latest")["timestamp"]) <= deadline:
            self.client.advance(task)

    def _did(self, what: str) -> str:
        log.info("%s", what)
        self.last_action = what
        return what

    def _advance(self, task: int, r: int, phase: str) -> str | None:
        try:
            self.client.advance(task)
        except ChainError as exc:
            log.debug("advance of task %d refused: %s", task, exc)
            return None
        return self._did(f"task {task} round {r}: {phase} phase expired; advanced")

    # -- trainer ------------------------------------------------------------------

    def _commit(self, task: int, r: int) -> str:
        action = self.journal.get(task, r, "commit")
        if action is None:
            base_cid, _ = self.client.global_model(task)
            spec = self.spec(task)
            base, _meta = decode_model(self.fetch(base_cid, [self.client.task_info(task).owner]), spec.max_update_bytes)
            trainer = self.trainer(task)
            delta = trainer.train(base, seed=(self._seed + 7919 * r) % 2**31)
            n = trainer.num_samples
            cid = self.storage.put(encode_update(delta, num_samples=n, task=task, round=r, base=base_cid))
            # Durable before the commitment leaves this process: a restart reveals this, and only this.
            action = self.journal.intend(task, r, "commit", {"cid": cid, "num_samples": n, "salt": secrets.token_hex(32)})
        p = action.payload
        commitment = make_commitment(p["cid"], p["num_samples"], bytes.fromhex(p["salt"]), self.me)
        receipt = self.client.commit(task, r, commitment)
        self.journal.mark_done(task, r, "commit", receipt["transactionHash"].hex())
        return self._did(f"task {task} round {r}: committed to update {p['cid']}")

    def _reveal(self, task: int, r: int) -> str | None:
        action = self.journal.get(task, r, "commit")
        if action is None:
            log.error("task %d round %d: committed on-chain but the journal has no salt; cannot reveal", task, r)
            return None
        p = action.payload
        self.journal.intend(task, r, "reveal", {})
        receipt = self.client.reveal(task, r, p["cid"], p["num_samples"], bytes.fromhex(p["salt"]))
        self.journal.mark_done(task, r, "reveal", receipt["transactionHash"].hex())
        return self._did(f"task {task} round {r}: revealed {p['cid']}")

    # -- aggregation, proposing, attesting -----------------------------------------

    def aggregate(self, task: int, r: int, updates: list[RoundUpdate] | None = None) -> RoundResult:
        """Re-run the round's aggregation from the on-chain CIDs: what every honest node gets."""
        updates = updates if updates is not None else self.client.round_updates(task, r)
        key = (task, r, ",".join(u.cid for u in updates))
        if key in self._results:
            return self._results[key]
        spec = self.spec(task)
        base_cid, base_round = self.client.global_model(task)
        base_bytes = self.fetch(base_cid, [self.client.task_info(task).owner])
        blobs = self._fetch_updates(task, r, updates)
        # The previous round's updates: a replay of one of them scores 0 (aggregation.scores).
        previous = self._fetch_updates(task, r - 1, self.client.round_updates(task, r - 1)) if r > 1 else []
        result = aggregate_round(
            spec.rule,
            base_bytes,
            blobs,
            options=spec.rule_options(),
            max_update_bytes=spec.max_update_bytes,
            previous=previous,
        )
        out = RoundResult(cid_of(result.model), list(result.scores_wad), result.model)
        self._results[key] = out
        return out

    def _fetch_updates(self, task: int, r: int, updates: list[RoundUpdate]) -> list[bytes]:
        blobs = []
        for u in updates:
            try:
                blobs.append(self.fetch(u.cid, [u.sender]))
            except Exception as exc:  # an unreachable update counts as rejected, like any invalid one
                log.warning("task %d round %d: update %s of %s unavailable (%s)", task, r, u.cid, u.sender, exc)
                blobs.append(b"")
        return blobs

    def _propose(self, task: int, r: int, attempt: int, takeover: bool) -> str:
        if not takeover and os.environ.get(HOLD_BEFORE_PROPOSE):
            log.warning("task %d round %d: holding before proposing (%s is set)", task, r, HOLD_BEFORE_PROPOSE)
            while True:
                time.sleep(3600)
        result = self.aggregate(task, r)
        self.storage.put(result.model)  # peers fetch the proposal from us to check it
        self.journal.intend(task, r, f"propose-{attempt}", {"cid": result.cid, "scores": [str(s) for s in result.scores]})
        self.client.propose(task, r, result.cid, result.scores)
        self.journal.mark_done(task, r, f"propose-{attempt}")
        how = "took over proposing (designated proposer silent)" if takeover else "proposed"
        return self._did(f"task {task} round {r}: {how} {result.cid}")

    def _attest(self, task: int, r: int, attempt: int, proposed: bytes) -> str:
        result = self.aggregate(task, r)
        agree = proposal_hash(result.cid, result.scores) == proposed
        self.journal.intend(task, r, f"attest-{attempt}", {"agree": agree})
        self.client.attest(task, r, agree)
        self.journal.mark_done(task, r, f"attest-{attempt}")
        return self._did(f"task {task} round {r}: attested {'agree' if agree else 'DISAGREE'}")

    def _try_finalize(self, task: int, r: int, attempt: int, proposed: bytes) -> str | None:
        result = self.aggregate(task, r)
        if proposal_hash(result.cid, result.scores) != proposed:
            return None  # not ours to finalize: we disagree, and the chain will reject or time it out
        try:
            self.client.finalize(task, r, result.cid, result.scores)
        except ChainError as exc:
            if "FedLedgerNotDecided" in str(exc) or "FedLedgerWrongPhase" in str(exc):
                return None  # votes still coming in, or someone else finalized first
            raise
        return self._did(f"task {task} round {r}: finalized {result.cid}")

