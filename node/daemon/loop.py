"""The daemon's protocol loop: which tasks it works on, and when it steps each of them.

`TaskLoop.run` judges each task once against the operator's [tasks] policy, then steps every
joined task (`ProtocolNode.step`, node/protocol/node.py) and waits for a peer's announcement or
the poll interval, whichever comes first. Outages are retried with backoff; a task whose data
is hostile is skipped with one line; a draw that would seat nobody waits, backing off.
"""

from __future__ import annotations

import logging
import math
import random
from typing import Any, Callable

import requests
import trio
from eth_account.signers.local import LocalAccount
from web3.exceptions import Web3Exception

from aggregation import AggregationError, decode_model
from node.chain.client import FedLedgerClient
from node.chain.types import ContractRevert, Phase
from node.apps.resolve import misfit
from node.daemon import startup
from node.daemon.backoff import Backoff
from node.daemon.config import NodeConfig
from node.daemon.gossip import DaemonGossip
from node.daemon.hints import RoundView, StepFilter, announcement_for
from node.daemon.observability import Metrics
from node.daemon.peers import PeerDirectory
from node.errors import ChainError, ConfigError, StorageError
from node.protocol import ProtocolNode

log = logging.getLogger("fedledger.daemon")

# What an outage looks like from here: retried with backoff, never fatal once running.
TRANSIENT = (ChainError, requests.RequestException, ConnectionError, OSError, Web3Exception, StorageError)
# What one task's hostile data looks like (a CID that is not UTF-8, a spec or a base model that
# does not parse, a spec the trainer cannot run): that task is skipped, with one log line, and
# the daemon goes on with its other tasks. TRANSIENT is tested first: some of its errors are
# ValueErrors too.
TASK_FAULTS = (UnicodeDecodeError, ConfigError, AggregationError, ValueError, TypeError, KeyError)

# A task's verdict under the operator's [tasks] policy, decided once per task and process.
JOINED, NOT_CHOSEN, REFUSED, SKIPPED = "joined", "not chosen", "refused", "skipped"
# Backing off a task whose draws would seat nobody or revert, or whose spec cannot be fetched:
# the first retry after twice the poll interval, doubling up to this many seconds.
BACKOFF_CAP = 15.0  # an eth_call is free; the cap bounds how late a draw comes once it would seat enough nodes
# The most blocks after its seed block that a round's seed hash is still readable (EVM blockhash).
BLOCKHASH_WINDOW = 256


class TaskLoop:
    """Steps the daemon's tasks; `run` returns only with `exit_when_done`, once they are all done."""

    def __init__(
        self, config: NodeConfig, account: LocalAccount, metrics: Metrics, gossip: DaemonGossip, exit_when_done: bool
    ) -> None:
        self.config = config
        self.account = account
        self.metrics = metrics
        self.gossip = gossip
        self.exit_when_done = exit_when_done  # stop once every configured task is finished
        self.tasks: dict[int, dict[str, Any]] = {}  # task -> its round, phase and whether it is finished (status)
        self.last_error: str | None = None
        self.verdicts: dict[int, str] = {}  # task -> JOINED, NOT_CHOSEN, REFUSED or SKIPPED
        self.reasons: dict[int, str] = {}  # task -> why it was refused or skipped
        # task -> (failures in a row, trio time before which we do not try again): judging a task whose
        # spec cannot be fetched yet, drawing a committee that would seat nobody
        self._judge_later: dict[int, tuple[int, float]] = {}
        self._draw_later: dict[int, tuple[int, float]] = {}
        self.worker: ProtocolNode | None = None
        self.peers: PeerDirectory | None = None
        self.on_move: Callable[[], None] | None = None  # called when a task's round, phase or end changes

    async def run(self, client: FedLedgerClient, worker: ProtocolNode, peers: PeerDirectory) -> None:
        """Step every task, then wait for a peer's announcement or the poll interval, whichever is first.

        The chain is read before every step, so an announcement only decides when we look; an
        iteration woken by one skips the tasks it cannot have changed (`StepFilter`)."""
        self.worker, self.peers = worker, peers
        policy, rng, failures = Backoff(base=0.5, cap=10.0), random.Random(), 0
        steps = StepFilter()
        hinted = False  # this iteration was woken by an announcement, not by the poll timer or our own action
        full = refreshed = -math.inf  # when an iteration last stepped every task; when the peers were last read
        if not self.config.policy.joins_any:
            log.warning(
                "joined no task: [tasks] join and owners are empty in %s, so this node works on no task "
                "(list the tasks to work on there)", self.config.path,
            )  # fmt: skip
        while True:
            acted = False
            if trio.current_time() - full >= self.config.poll_interval:
                hinted = False  # announcements never crowd out the poll: deadlines are only seen there
            if not hinted:
                full = trio.current_time()
            try:
                if trio.current_time() - refreshed >= self.config.poll_interval:
                    await trio.to_thread.run_sync(peers.refresh)
                    refreshed = trio.current_time()
                    self.metrics.set("peers", len(peers.by_address))
                    self.gossip.keep_connected()
                # One look at the chain per iteration: the step reads again what _step_task just read
                # (task, round), and each view costs a daemon CPU that 16 of them on 2 cores lack.
                with client.cached_reads():
                    # One thread hand-off reads the task list and every joined task's round: each
                    # hand-off wakes trio's loop, and they were a fifth of a daemon's CPU.
                    ids, reads = await trio.to_thread.run_sync(self._look, client)
                    for task in ids:
                        if self.verdicts.get(task, JOINED) != JOINED or _waiting(self._judge_later, task):
                            continue
                        try:
                            # After an earlier task's action (seconds of training, a transaction) look afresh.
                            did = await self._step_task(client, task, steps, hinted, None if acted else reads.get(task))
                        except TRANSIENT:
                            raise
                        except TASK_FAULTS as exc:
                            self._skip(task, exc)
                            continue
                        if did:
                            acted = True
                failures = 0
                self.last_error = None
            except ContractRevert as exc:
                # The chain answered, and said no: most often another node got there first (a
                # draw or a finalize). Nothing is down, so no backoff: look again at the next
                # announcement or poll.
                steps.forget()
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.metrics.inc("errors_total")
                log.log(logging.DEBUG if is_expected_race(exc) else logging.WARNING,
                        "protocol loop: %s; looking again at the next announcement or poll", self.last_error)  # fmt: skip
            except TRANSIENT as exc:
                steps.forget()
                failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.metrics.inc("errors_total")
                wait = policy.delay(failures - 1, rng)
                log.warning("protocol loop: %s; retrying in %.1f s", self.last_error, wait)
                await trio.sleep(wait)
                hinted = False
                continue
            if self.exit_when_done and self._done():
                log.info("every configured task is finished or was refused or skipped (joined: %s); exiting (--exit-when-done)",
                         ", ".join(map(str, self.config.policy.join)))  # fmt: skip
                return
            if acted:
                hinted = False
                await trio.sleep(0)
            else:
                hinted = await self.gossip.wakeup.wait(self.config.poll_interval)

    async def _step_task(
        self, client: FedLedgerClient, task: int, steps: StepFilter, hinted: bool, read: Any = None
    ) -> str | None:
        """Judge the task once (the policy), then read its round (unless `_look` read it: `read`)
        and take at most one step in it."""
        assert self.worker is not None
        if task not in self.verdicts:
            try:
                self.verdicts[task] = await trio.to_thread.run_sync(self._judge, client, task)
            except StorageError as exc:  # its spec or model cannot be fetched yet: this task waits, the others go on
                why = await trio.to_thread.run_sync(self._unserved, client, task, exc)
                self._put_off(self._judge_later, task, why, first=logging.WARNING)
                return None
            self._judge_later.pop(task, None)
            if self.verdicts[task] != JOINED:
                return None
        await self.gossip.subscribe(task)
        if read is None:
            read = await trio.to_thread.run_sync(_read_round, client, task)  # one hand-off for both views
        if isinstance(read, BaseException):  # raised here, so it is this task's fault, as if read now
            raise read
        info, state = read
        before = self.tasks.get(task)
        self.tasks[task] = {"round": info.current_round, "rounds": info.rounds, "finished": info.finished}
        if state is not None:
            self.tasks[task]["phase"] = state.phase.name.lower()
        if self.tasks[task] != before and self.on_move is not None:
            self.on_move()
        self.metrics.set("round", info.current_round, {"task": str(task)})
        if state is None:
            return None
        self.gossip.opened[task] = (info.current_round, state.opened_block)
        if state.phase == Phase.ATTEST:
            self.gossip.release_updates(task, info.current_round)  # attesters need the updates now
        view = RoundView(info.current_round, state.phase, state.attempt)
        moved = steps.moved(task, view)
        if moved is not None:
            self.gossip.announce(moved)
        if not steps.should_step(task, view, hinted):
            return None
        if state.phase == Phase.DRAW:
            if _waiting(self._draw_later, task):
                return None
            why = await trio.to_thread.run_sync(self._draw_would_seat, client, task, state.seed_block)
            if why is not None:
                self._put_off(self._draw_later, task, why)
                return None
        did = await trio.to_thread.run_sync(self.worker.step, task)
        steps.stepped(task, view, did)
        if did:
            self._draw_later.pop(task, None)
            self.metrics.inc("actions_total", labels={"kind": did.split(": ")[-1].split()[0]})
            ann = announcement_for(did)
            if ann is not None:
                self.gossip.announce(ann)
        return did

    def _look(self, client: FedLedgerClient) -> tuple[list[int], dict[int, Any]]:
        """The task ids (`_task_ids`), and for each already joined one its `_read_round`, or the
        error reading it raised (runs in a thread)."""
        ids, reads = self._task_ids(client), {}
        for task in ids:
            if self.verdicts.get(task) == JOINED:
                try:
                    reads[task] = _read_round(client, task)
                except Exception as exc:
                    reads[task] = exc
        return ids, reads

    def _task_ids(self, client: FedLedgerClient) -> list[int]:
        """The tasks that may pass the policy: the joined ids that exist, and with `owners`
        every task (each one's owner is read once, when its verdict is made)."""
        policy = self.config.policy
        if not policy.joins_any:
            return []
        count = client.task_count()
        if policy.owners:
            return list(range(1, count + 1))
        return [t for t in policy.join if t <= count]

    def _judge(self, client: FedLedgerClient, task: int) -> str:
        """The task's verdict under the policy (runs in a thread). Chosen tasks are checked
        against every limit, their spec and base model parsed, before the node ever acts."""
        assert self.worker is not None
        policy = self.config.policy
        info = client.task_info(task)
        if not policy.selects(task, info.owner):
            return NOT_CHOSEN
        if info.finished:
            return JOINED  # nothing left to do in it; it counts as done
        why = policy.refuse_task(info, client.task_min_stake(task))
        spec = self.worker.spec(task) if why is None else None
        if spec is not None:
            why = policy.refuse_spec(spec)
        if why is None and spec is not None:
            why = startup.app_problem(self.config, spec)
        if why is None and spec is not None:
            why = startup.data_misfit(self.config, spec)
            if why is not None and task in policy.join:  # the operator asked for it: a setup error, not a refusal
                raise startup.DataMismatch(f"task {task} cannot use this node's data: {why}")
        if why is not None:
            self.reasons[task] = why
            log.warning("task %d refused by this node's [tasks] policy: %s", task, why)
            return REFUSED
        assert spec is not None
        base_cid, _ = client.global_model(task)
        base, _meta = decode_model(self.worker.fetch(base_cid, [info.owner]), spec.max_update_bytes)
        if (why := misfit(base, spec)) is not None:  # the owner's model is not the one its spec pins
            self.reasons[task] = f"its global model {base_cid} is not the model its spec pins: {why}"
            log.warning("task %d refused: %s", task, self.reasons[task])
            return REFUSED
        log.info("task %d joined (owner %s, %d rounds)", task, info.owner, info.rounds)
        return JOINED

    def _unserved(self, client: FedLedgerClient, task: int, exc: StorageError) -> str:
        """Why a task's spec or initial model cannot be fetched, and what to do (runs in a thread).

        Its creator published them in a blockstore (`task create --repo`); if that store is not a
        running node's, nobody serves them, and every node waits (a task created without --repo)."""
        owner = client.task_info(task).owner
        return startup.unserved(owner, client.node_info(owner)[0], exc)

    def _skip(self, task: int, exc: BaseException) -> None:
        """One line, once: the task's data is bad, and the daemon leaves the task for good (until a restart)."""
        self.verdicts[task] = SKIPPED
        self.reasons[task] = f"{type(exc).__name__}: {str(exc)[:300]}"
        self.tasks.pop(task, None)
        log.error("task %d skipped: its on-chain or published data is bad (%s)", task, self.reasons[task])

    def _put_off(self, later: dict[int, tuple[int, float]], task: int, why: str, first: int = logging.INFO) -> None:
        """Do not try this again for a while, doubling each time in a row (reset by progress). Said
        at level `first` the first time in a row, at debug level after."""
        failures = later.get(task, (0, 0.0))[0] + 1
        wait = min(self.config.poll_interval * 2 ** min(failures, 20), BACKOFF_CAP)
        later[task] = (failures, trio.current_time() + wait)
        log.log(first if failures == 1 else logging.DEBUG, "task %d: %s; looking again in %.1f s", task, why, wait)

    def _draw_would_seat(self, client: FedLedgerClient, task: int, seed_block: int) -> str | None:
        """Why drawing the task's committee now is not worth a transaction (None: it is): a draw
        that would revert (too few eligible nodes: the round waits) costs gas and moves nothing. Asked of
        the chain with an eth_call on the pending block, so it is free (runs in a thread)."""
        if client.head_block() + 1 - seed_block > BLOCKHASH_WINDOW:
            return None  # the draw reseeds the round: cheap, and the only way forward
        why = client.draw_revert_reason(task, self.account.address)  # e.g. too few eligible nodes yet
        if why is not None:
            return f"a draw now would revert ({why})"
        # An empty committee without a revert is a reseed (nodes joined since the seed was fixed):
        # cheap, it happens once per new registration, and the next draw seats them.
        return None

    def _done(self) -> bool:
        """Every task this node can ever work on is finished, refused or skipped (`--exit-when-done`)."""
        policy = self.config.policy
        if not policy.closed:
            return False
        return all(
            self.verdicts.get(t) in (REFUSED, SKIPPED) or self.tasks.get(t, {}).get("finished") for t in policy.join
        )


# Reverts that only mean another node acted first (drew, advanced, finalized): the loop reads
# the chain again and moves on. Logged at debug level; any other revert is a warning.
RACES = frozenset({"FedLedgerWrongRound", "FedLedgerWrongPhase", "FedLedgerTaskFinished"})
RACY_FUNCTIONS = frozenset({"drawCommittee", "advance", "finalize"})


def is_expected_race(exc: ContractRevert) -> bool:
    return exc.error in RACES or (exc.error is None and exc.function in RACY_FUNCTIONS)


def _read_round(client: FedLedgerClient, task: int) -> tuple[Any, Any]:
    """The task's info and, unless it is finished, its current round's state (runs in a thread)."""
    info = client.task_info(task)
    return info, None if info.finished else client.round_state(task, info.current_round)


def _waiting(later: dict[int, tuple[int, float]], task: int) -> bool:
    return trio.current_time() < later.get(task, (0, 0.0))[1]
