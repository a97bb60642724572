"""ProtocolNode, one node's part in a round: the state machine that drives the protocol (SPEC §4).

`ProtocolNode.step(task)` reads the task's round from the chain and takes at
most one action: draw the committee, train-pin-commit, reveal, propose,
attest (by recomputing the round, node/protocol/recompute.py), finalize, or
nudge an expired phase forward. The daemon (`node/daemon/loop.py`) steps
one node in a loop, with a libp2p fetch and a durable journal; the simulator
(`node/sim/simulate.py`) steps N nodes on one chain, in one process, with
their blockstores as the network.

The chain is the source of truth for what has happened; the journal (written
before every transaction) is the source of truth for what this node meant to
do, so a restart after `kill -9` resumes with the same update and salt and
never submits twice.

A node's `Behaviour` (node/protocol/behaviour.py) decides what it publishes,
proposes and votes; the honest one changes nothing.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from typing import Callable, Mapping, Sequence

import numpy as np
from eth_utils import to_checksum_address

from aggregation import encode_update
from node.abc import Storage, Trainer
from node.chain.client import FedLedgerClient
from node.chain.types import ContractRevert, Phase, RoundUpdate, all_available, make_commitment, proposal_hash
from node.daemon.journal import Journal
from node.errors import ChainError, ConfigError
from node.protocol.behaviour import Behaviour, Delta, Observer, RoundView
from node.protocol.recompute import Fetch, RoundResult, UnavailableError, recompute_round
from node.protocol.seeds import train_seed
from node.taskspec import SPEC_MAX_BYTES, TaskSpec

log = logging.getLogger("fedledger.protocol")

# A test seam: with this set, a node that is the designated proposer stops just before it
# proposes, so a test can kill -9 its daemon at exactly that point (tests/daemon/test_daemon_anvil.py).
HOLD_BEFORE_PROPOSE = "FEDLEDGER_TEST_HOLD_BEFORE_PROPOSE"

ZERO32 = b"\x00" * 32


# What the action a step returns says when it drew a round's committee (the simulator trains the
# members at once on seeing it).
DREW = "drew a committee"

class ProtocolNode:
    """One node's part in every round of its tasks: `step(task)` takes at most one action."""

    def __init__(
        self,
        client: FedLedgerClient,
        journal: Journal,
        storage: Storage,
        trainer: Callable[[TaskSpec], Trainer],
        fetch: Fetch,
        seed: int | None = None,
        behaviour: Behaviour | None = None,
        observer: Observer | None = None,
        now: Callable[[], float] | None = None,
        salt: Callable[[int, int], bytes] | None = None,
        sit_out_app_failures: bool = True,
        results: dict[tuple, RoundResult] | None = None,
    ) -> None:
        """`salt(task, round)` makes the commitment's salt; a secret random one by default. The
        in-process simulator derives it from the node's seed, so that a run is a function of its
        seed (the commitments go into the block hashes that seed the next draws).

        `sit_out_app_failures`: a round the app cannot train (ConfigError) is sat out with one log
        line, as a daemon must; False raises it instead, for the in-process simulator, whose chain
        never times a round out: there the app's line is the run's one error line.

        `results`: where recomputed rounds are kept, keyed by everything a recomputation reads
        (task, round, base CID, the revealed CIDs, the bitmap). The in-process simulator gives
        all its nodes one dict: a recomputation is a pure function of content-addressed inputs
        that every node there can fetch, so the committee's checks of a proposal are one
        computation, not one per member. A daemon keeps its own."""
        assert client.account is not None, "a protocol node sends transactions"
        self.client = client
        self.me = client.account.address
        self.journal = journal
        self.storage = storage
        self._make_trainer = trainer
        self._trainers: dict[int, Trainer] = {}
        self.fetch = fetch
        self._now = now
        self._salt = salt or (lambda task, round_: secrets.token_bytes(32))
        self.sit_out_app_failures = sit_out_app_failures
        self.seed = seed if seed is not None else secrets.randbits(31)
        self.behaviour = behaviour or Behaviour()
        self.behaviour.joined(self)
        self.observer = observer
        self._specs: dict[int, TaskSpec] = {}
        self._owners: dict[int, str] = {}
        self._results: dict[tuple, RoundResult] = results if results is not None else {}
        self._trained: dict[tuple[int, int], Delta] = {}
        # (task, round) -> why this node's app could not train that round: it sits the round out
        # instead of failing the same way at every poll.
        self._refused: dict[tuple[int, int], str] = {}
        self.last_action: str | None = None

    # -- reads ----------------------------------------------------------------------

    def chain_time(self) -> float:
        """When our next transaction would be mined, as far as deadlines go.

        Deadlines are in block time. A dev chain that mines only on demand has a
        stale latest block while idle, and the next block takes the wall clock,
        so the later of the two is what a transaction sent now will see."""
        if self._now is not None:
            return self._now()
        return max(float(self.client.head_timestamp()), time.time())

    def owner(self, task: int) -> str:
        if task not in self._owners:
            self._owners[task] = self.client.task_info(task).owner
        return self._owners[task]

    def spec(self, task: int) -> TaskSpec:
        if task not in self._specs:
            info = self.client.task_info(task)
            self._specs[task] = TaskSpec.from_bytes(self.fetch(info.spec_cid, [info.owner], max_bytes=SPEC_MAX_BYTES))
        return self._specs[task]

    def trainer(self, task: int) -> Trainer:
        if task not in self._trainers:
            self._trainers[task] = self.behaviour.trainer(self._make_trainer(self.spec(task)))
        return self._trainers[task]

    # -- the step -----------------------------------------------------------------

    def step(self, task: int) -> str | None:
        """Take at most one protocol action on `task`; returns what was done (None: nothing to do)."""
        info = self.client.task_info(task)
        if info.finished:
            return None
        r = info.current_round
        state = self.client.round_state(task, r)

        def expired() -> bool:  # read only when it matters: most steps act, or wait for others
            return self.chain_time() > state.deadline

        if state.phase == Phase.DRAW:
            members, _ = self.client.draw_committee(task)
            return self._did(f"task {task} round {r}: {DREW} of {len(members)}")
        if state.phase == Phase.PROPOSE:
            if to_checksum_address(self.client.designated_proposer(task, r)) == self.me:
                return self._propose(task, r, state.attempt, takeover=False)
            if expired():
                self._fresh_block(task, state.deadline)
                return self._propose(task, r, state.attempt, takeover=True)
            return None
        me = self.client.member_info(task, r)
        if state.phase == Phase.COMMIT:
            if me.member and me.commitment == ZERO32 and (task, r) not in self._refused:
                did = self._commit(task, r)
                if did is not None:
                    return did
            return self._advance(task, r, "commit") if expired() else None
        if state.phase == Phase.REVEAL:
            if me.member and me.commitment != ZERO32 and not me.revealed:
                return self._reveal(task, r)
            return self._advance(task, r, "reveal") if expired() else None
        if state.phase == Phase.ATTEST:
            if expired():
                # The window closed: an accepted proposal is finalized; any other attempt ends
                # undecided, which only `advance` (or any transaction on the round) records.
                # Attesting now would revert, and so would every retry: the round reads as Attest
                # until a transaction applies the timeout.
                self._fresh_block(task, state.deadline)
                done = self._try_finalize(task, r, state.proposal_hash, state.available)
                if done or state.agrees * 2 > state.voters:
                    return done  # accepted: whoever can check it finalizes it
                return self._advance(task, r, "attest")
            voted = me.vote != 0 and me.attempt == state.attempt
            if me.revealed and not voted and to_checksum_address(state.proposer) != self.me:
                return self._attest(task, r, state.attempt, state.proposal_hash, state.proposer, state.available)
            return self._try_finalize(task, r, state.proposal_hash, state.available)
        return None

    def _fresh_block(self, task: int, deadline: int) -> None:
        """Make sure the chain's head is past `deadline` before acting on its expiry.

        Transactions are simulated (gas estimation) on top of the latest block; on a dev chain
        that mines only when asked, that block can be older than the deadline although the wall
        clock is past it. `advance` is harmless and mines a block with the current time."""
        if self.client.head_timestamp() <= deadline:
            self.client.advance(task)

    def _did(self, what: str) -> str:
        log.info("%s", what)
        self.last_action = what
        return what

    def _advance(self, task: int, r: int, phase: str) -> str | None:
        try:
            receipt = self.client.advance(task)
        except ChainError as exc:
            log.debug("advance of task %d refused: %s", task, exc)
            return None
        if not receipt.get("logs", True):  # a no-op: another node's advance landed first (#17)
            log.debug("task %d round %d: %s phase expired; another node advanced it first", task, r, phase)
            return None
        return self._did(f"task {task} round {r}: {phase} phase expired; advanced")

    # -- trainer ------------------------------------------------------------------

    def has_trained(self, task: int, r: int) -> bool:
        """Whether this node's update for round `r` is made, or its app refused the round."""
        return (task, r) in self._trained or (task, r) in self._refused

    def train(self, task: int, r: int, base: Mapping[str, np.ndarray] | Callable[[], Mapping[str, np.ndarray]]) -> Delta:
        """This node's training for round `r` (its behaviour's trainer, its seed): cached per round.
        `base` is the round's base weights, or a function that reads them, called only if this node
        has not trained yet (a 45 MB model is not fetched and decoded again for a cached delta)."""
        key = (task, r)
        if key not in self._trained:
            weights = base() if callable(base) else base
            self._trained = {k: v for k, v in self._trained.items() if k[1] >= r - 1}
            self._trained[key] = self.trainer(task).train(weights, seed=train_seed(self.seed, task, r), round=r)
        return self._trained[key]

    def _commit(self, task: int, r: int) -> str | None:
        action = self.journal.get(task, r, "commit")
        if action is None:
            view = RoundView(self, task, r)
            try:
                trained = view.trained
            except ConfigError as exc:  # the app raised, or sent back what no update may carry
                if not self.sit_out_app_failures:
                    raise
                return self._refuse(task, r, str(exc))
            delta = self.behaviour.publish(trained, view)
            if self.observer is not None:
                self.observer.published(self.me, self.behaviour.role, task, r, view.trained, delta)
            n = self.trainer(task).num_samples
            cid = self.storage.put(encode_update(delta, num_samples=n, task=task, round=r, base=view.base_cid))
            # Durable before the commitment leaves this process: a restart reveals this, and only this.
            action = self.journal.intend(task, r, "commit", {"cid": cid, "num_samples": n, "salt": self._salt(task, r).hex()})
        p = action.payload
        commitment = make_commitment(p["cid"], p["num_samples"], bytes.fromhex(p["salt"]), self.me)
        receipt = self.client.commit(task, r, commitment)
        self.journal.mark_done(task, r, "commit", receipt["transactionHash"].hex())
        return self._did(f"task {task} round {r}: committed to update {p['cid']}")

    def _refuse(self, task: int, r: int, why: str) -> None:
        """Sit round `r` out, said once: the app failed deterministically (same seed, same base), so
        retrying at every poll would only repeat the line. The round goes on without this node
        once its commit phase ends; the next round trains afresh."""
        self._refused = {k: v for k, v in self._refused.items() if k[1] >= r - 1}
        self._refused[(task, r)] = why
        log.warning("task %d round %d: the app failed: %s; not committing this round", task, r, why)

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

    def recompute(
        self, task: int, r: int, updates: Sequence[RoundUpdate] | None = None, available: int | None = None
    ) -> RoundResult:
        """Recompute the round from the on-chain CIDs: what every honest node gets. `available`:
        the proposal's bitmap to recompute over (None: whatever this node can fetch).

        Cached only when nothing was missing: an update or a previous-round update that could not
        be fetched is not a verdict, and the next try may get it."""
        updates = list(updates) if updates is not None else self.client.round_updates(task, r)
        base_cid, _ = self.client.global_model(task)
        key = (task, r, base_cid, ",".join(u.cid for u in updates), available)
        if key in self._results:
            return self._results[key]
        for old in [k for k in self._results if k[0] == task and k[1] < r - 1]:  # in place: the dict may be shared
            del self._results[old]  # before computing: a ResNet-size round's decoded updates are ~0.4 GB
        # The previous round's updates as this process decoded them (the results kept for it).
        known = {cid: u for k, kept in list(self._results.items()) if k[:2] == (task, r - 1) for cid, u in kept.decoded.items()}
        result = recompute_round(
            self.client, self.fetch, self.spec(task), task, r, base_cid, updates, [self.owner(task)], available, known
        )
        if result.complete and (available is not None or result.available == all_available(len(updates))):
            self._results[key] = result
            # Everything fetched: the same computation as checking a proposal over all of them.
            self._results[key[:-1] + (result.available,)] = result
        return result

    def _propose(self, task: int, r: int, attempt: int, takeover: bool) -> str:
        if not takeover and os.environ.get(HOLD_BEFORE_PROPOSE):
            log.warning("task %d round %d: holding before proposing (%s is set)", task, r, HOLD_BEFORE_PROPOSE)
            while True:
                time.sleep(3600)
        updates = self.client.round_updates(task, r)
        honest = self.recompute(task, r, updates)
        result = self.behaviour.propose(honest, RoundView(self, task, r), updates)
        self.storage.put(result.model)  # peers fetch the proposal from us to check it
        available = result.available if result.available is not None else all_available(len(updates))
        self.journal.intend(
            task, r, f"propose-{attempt}",
            {"cid": result.cid, "scores": [str(s) for s in result.scores], "available": available},
        )  # fmt: skip
        self.client.propose(task, r, result.cid, result.scores, available)
        self.journal.mark_done(task, r, f"propose-{attempt}")
        how = "took over proposing (designated proposer silent)" if takeover else "proposed"
        return self._did(f"task {task} round {r}: {how} {result.cid}")

    def _attest(self, task: int, r: int, attempt: int, proposed: bytes, proposer: str, available: int) -> str:
        try:
            result = self.recompute(task, r, available=available)
        except UnavailableError as exc:
            return self._abstain(task, r, attempt, str(exc))
        matches = proposal_hash(result.cid, result.scores) == proposed
        if not matches and not result.complete:
            return self._abstain(task, r, attempt, "an update of the previous round is unavailable here")
        if matches:  # keep (pinned) and serve the model we checked: it must outlive its proposer
            self.storage.put(result.model)
        agree = self.behaviour.vote(matches, proposer, RoundView(self, task, r))
        self.journal.intend(task, r, f"attest-{attempt}", {"agree": agree})
        self.client.attest(task, r, agree)
        self.journal.mark_done(task, r, f"attest-{attempt}")
        return self._did(f"task {task} round {r}: attested {'agree' if agree else 'DISAGREE'}")

    def _abstain(self, task: int, r: int, attempt: int, why: str) -> str:
        """Cannot check the proposal: say so on-chain (neither side), never disagree for it."""
        log.warning("task %d round %d: cannot check the proposal (%s); abstaining", task, r, why)
        self.journal.intend(task, r, f"attest-{attempt}", {"abstain": True})
        self.client.abstain(task, r)
        self.journal.mark_done(task, r, f"attest-{attempt}")
        return self._did(f"task {task} round {r}: abstained (cannot check the proposal)")

    def _try_finalize(self, task: int, r: int, proposed: bytes, available: int) -> str | None:
        try:
            result = self.recompute(task, r, available=available)
        except UnavailableError:
            return None  # we cannot check it; those who can will finalize it
        if proposal_hash(result.cid, result.scores) != proposed:
            return None  # not ours to finalize: we disagree, and the chain will reject or time it out
        try:
            self.client.finalize(task, r, result.cid, result.scores)
        except ContractRevert as exc:
            if exc.error in ("FedLedgerNotDecided", "FedLedgerWrongPhase"):
                return None  # votes still coming in, or someone else finalized first
            raise
        return self._did(f"task {task} round {r}: finalized {result.cid}")
