"""`fedledger node run`: the daemon, as one trio service (SPEC §8).

Parts, each a task in one nursery: the status/metrics endpoint, the libp2p
node (identity, block exchange, gossip), and the protocol loop that polls the
chain and lets the node's `ProtocolNode` (node/protocol/node.py) act. Blocking web3 and torch calls run in worker
threads (`trio.to_thread`); a worker thread fetching content from peers calls
back into trio (`trio.from_thread`). SIGINT/SIGTERM cancel the nursery, so
every part stops at its next checkpoint and the journal stays consistent.

Gossip (node/daemon/hints.py): the loop announces what each step did on the
task's topic, and a peer's announcement ends its idle wait at once, so a round
moves at the pace of the nodes, not of their polls; announced updates and
proposals are fetched ahead of the steps that need them. The poll stays as the
fallback: a lost announcement costs latency, never correctness.
"""

from __future__ import annotations

import logging
import math
import os
import random
import signal
import time
from typing import Any, Sequence

import requests
import trio
from eth_account.signers.local import LocalAccount
from web3.exceptions import Web3Exception

from aggregation import AggregationError, decode_model
from node.chain.client import FedLedgerClient
from node.chain.types import ContractRevert, Phase
from node.daemon.backoff import Backoff
from node.daemon import startup
from node.daemon.config import NodeConfig
from node.daemon.dashboard.history import History
from node.daemon.hints import (
    NO_ANNOUNCE, WAKES, Prefetcher, RoundView, Seen, StepFilter, Wakeup, announcement_for, ring_neighbours,
)
from node.daemon.journal import Journal
from node.daemon.observability import Metrics, serve_status
from node.daemon.peers import PeerDirectory, libp2p_fetch
from node.errors import ChainError, ConfigError, StorageError
from node.p2p.gossip import Announcement
from node.p2p.node import P2PConfig, P2PNode
from node.protocol import Behaviour, ProtocolNode
from node.storage import open_storage
from node.taskspec import TaskSpec
from node.training import TorchTrainer, trainer_for
from node.training.data import Dataset

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


class Daemon:
    def __init__(
        self, config: NodeConfig, account: LocalAccount, exit_when_done: bool = False, behaviour: Behaviour | None = None
    ) -> None:
        self.config = config
        self.account = account
        self.behaviour = behaviour  # None: honest
        self.exit_when_done = exit_when_done  # stop once every configured task is finished
        self.started = time.time()
        self.metrics = Metrics()
        for name, kind, text in (
            ("up", "gauge", "1 while the daemon runs."),
            ("actions_total", "counter", "Protocol actions taken, by kind."),
            ("errors_total", "counter", "Errors met in the protocol loop (retried)."),
            ("round", "gauge", "Current round of each task."),
            ("peers", "gauge", "Registered peers known from the chain."),
            ("announcements_total", "counter", "Gossip announcements, by direction (sent, received) and kind."),
            ("prefetched_total", "counter", "Announced updates and proposals fetched before the protocol needed them."),
        ):
            self.metrics.describe(name, kind, text)
        self.tasks: dict[int, dict[str, Any]] = {}
        self.last_error: str | None = None
        self.history = History(account.address)  # what the dashboard plots (GET /), bounded
        self.p2p: P2PNode | None = None
        self.peers: PeerDirectory | None = None
        self.worker: ProtocolNode | None = None
        self._nursery: trio.Nursery | None = None
        self._wakeup = Wakeup()  # announcements from peers cut the protocol loop's idle wait short
        self._seen = Seen()  # announcements heard or made: only the first of each wakes us or is worth making
        self._prefetcher: Prefetcher | None = None
        self._client: FedLedgerClient | None = None
        self._subscribed: set[int] = set()  # tasks whose topic we joined
        self._dialled: dict[str, float] = {}  # "peer-ID addresses" -> when we last dialled them for the mesh
        self._opened: dict[int, tuple[int, int]] = {}  # task -> (round, its opening block), as last read
        self._released: dict[int, int] = {}  # task -> the last round whose updates we fetch ahead
        self._verdicts: dict[int, str] = {}  # task -> JOINED, NOT_CHOSEN, REFUSED or SKIPPED
        self._reasons: dict[int, str] = {}  # task -> why it was refused or skipped
        # task -> (failures in a row, trio time before which we do not try again): judging a task whose
        # spec cannot be fetched yet, drawing a committee that would seat nobody
        self._judge_later: dict[int, tuple[int, float]] = {}
        self._draw_later: dict[int, tuple[int, float]] = {}
        self._data: Dataset | None = None  # the node's training data, read at start-up
        self._deployed_at = 0

    # -- status -------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        worker = self.worker
        return {
            "node": self.account.address,
            "peer_id": self.p2p.peer_id if self.p2p else None,
            "listen": self.p2p.addrs if self.p2p else [],
            "uptime_s": round(time.time() - self.started, 1),
            "tasks": {str(k): v for k, v in self.tasks.items()},
            "not_joined": {str(k): f"{self._verdicts.get(k, REFUSED)}: {v}" for k, v in list(self._reasons.items())},
            "last_action": worker.last_action if worker else None,
            "recent_actions": [
                {"task": a.task, "round": a.round, "kind": a.kind, "status": a.status}
                for a in (worker.journal.recent(10) if worker else [])
            ],
            "peers": len(self.peers.by_address) if self.peers else 0,
            "last_error": self.last_error,
            "dashboard": self.history.snapshot(),
        }

    # -- setup --------------------------------------------------------------------

    def _preflight(self) -> FedLedgerClient | None:
        """The start-up checks (node/daemon/startup.py), before anything is registered or spent;
        each failure raises one line. None: there is nothing to do (`--exit-when-done` and no
        task joined)."""
        cfg = self.config
        chain = startup.connect(cfg.rpc, cfg.deployment, self.account)
        self._deployed_at = chain.deployed_at
        self._data = startup.load_data(cfg.data_path, cfg.data_format)
        if self.exit_when_done and not cfg.policy.joins_any:
            log.info("joined no task ([tasks] join and owners are empty in %s) and --exit-when-done is set: "
                     "nothing to do, exiting (join one with `fedledger node join --config %s --task T`)", cfg.path, cfg.path)  # fmt: skip
            return None
        startup.check_joined(chain.client, cfg, self._data)
        startup.check_balance(chain.client, self.account.address, cfg.path)
        log.info("training data: %s", startup.describe_data(self._data, cfg.data_path))  # after the checks: a failure is one line
        return chain.client

    def _ensure_registered(self, client: FedLedgerClient, peer_id: str, addrs: list[str]) -> None:
        registered, _stake, known_id, known_addrs = client.node_info(self.account.address)
        if not registered:
            stake = client.min_stake()
            log.info("registering %s with stake %d wei as peer %s", self.account.address, stake, peer_id)
            client.register(peer_id, addrs, stake)
        elif known_id != peer_id or list(known_addrs) != addrs:
            log.info("updating registered peer info to %s %s", peer_id, addrs)
            client.update_peer_info(peer_id, addrs)

    def _trainer_for(self, spec: TaskSpec) -> TorchTrainer:
        return trainer_for(spec, self._data)  # read and checked at start-up

    # -- run ----------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.config
        client = await trio.to_thread.run_sync(self._preflight)
        if client is None:
            return
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        # [storage] backend: the embedded blockstore in data_dir, or the IPFS daemon at kubo_api.
        store = open_storage(cfg.storage_backend, cfg.data_dir / "ipfs", cfg.kubo_api)
        where = f"the IPFS daemon at {cfg.kubo_api}" if cfg.storage_backend == "kubo" else cfg.data_dir / "ipfs"
        log.info("storage: %s", where)
        journal = Journal(cfg.data_dir / "journal.db")
        self.peers = PeerDirectory(client, from_block=self._deployed_at)
        self.p2p = P2PNode(P2PConfig(cfg.data_dir, listen=cfg.listen[0]), store, self.peers.is_registered)
        self.worker = ProtocolNode(
            client, journal, store, trainer=self._trainer_for,
            fetch=libp2p_fetch(store, self.p2p, self.peers),  # local copy, else from the holders
            seed=cfg.train_seed, behaviour=self.behaviour,
        )  # fmt: skip
        try:
            async with trio.open_nursery() as nursery:
                host, port = await nursery.start(serve_status, cfg.status_listen, self.status, self.metrics)
                await nursery.start(self.p2p.run)
                await trio.to_thread.run_sync(self._ensure_registered, client, self.p2p.peer_id, self.p2p.addrs)
                self.metrics.set("up", 1)
                log.info("node %s up: peer %s at %s; status on http://%s:%d/status",
                         self.account.address, self.p2p.peer_id, self.p2p.addrs, host, port)  # fmt: skip
                task_status.started((host, port))
                nursery.start_soon(self._watch_signals, nursery.cancel_scope)
                self._nursery, self._client = nursery, client
                self._prefetcher = Prefetcher(lambda anns: self._confirm(client, anns), self._prefetch)
                nursery.start_soon(self._prefetcher.run)
                nursery.start_soon(self.history.run, client, self.worker, self.tasks, self.peers, self.p2p, self._deployed_at)
                await self._protocol_loop(client)
                nursery.cancel_scope.cancel()
        finally:
            self.metrics.set("up", 0)
            journal.close()
            close = getattr(store, "close", None)  # KuboStorage's HTTP session; the embedded store has none
            if close is not None:
                close()
            log.info("node %s stopped", self.account.address)

    async def _watch_signals(self, scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("received %s; shutting down", signal.Signals(signum).name)
                scope.cancel()
                return

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
        if why is None and spec is not None and self._data is not None:
            why = startup.data_misfit(self._data, self.config.data_path, spec.model)
            if why is not None and task in policy.join:  # the operator asked for it: a setup error, not a refusal
                raise startup.DataMismatch(f"task {task} cannot use this node's data: {why}")
        if why is not None:
            self._reasons[task] = why
            log.warning("task %d refused by this node's [tasks] policy: %s", task, why)
            return REFUSED
        assert spec is not None
        base_cid, _ = client.global_model(task)
        decode_model(self.worker.fetch(base_cid, [info.owner]), spec.max_update_bytes)
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
        self._verdicts[task] = SKIPPED
        self._reasons[task] = f"{type(exc).__name__}: {str(exc)[:300]}"
        self.tasks.pop(task, None)
        log.error("task %d skipped: its on-chain or published data is bad (%s)", task, self._reasons[task])

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
            self._verdicts.get(t) in (REFUSED, SKIPPED) or self.tasks.get(t, {}).get("finished") for t in policy.join
        )

    async def _protocol_loop(self, client: FedLedgerClient) -> None:
        """Step every task, then wait for a peer's announcement or the poll interval, whichever is first.

        The chain is read before every step, so an announcement only decides when we look; an
        iteration woken by one skips the tasks it cannot have changed (`StepFilter`)."""
        assert self.worker is not None and self.peers is not None
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
                    await trio.to_thread.run_sync(self.peers.refresh)
                    refreshed = trio.current_time()
                    self.metrics.set("peers", len(self.peers.by_address))
                    self._keep_connected()
                for task in await trio.to_thread.run_sync(self._task_ids, client):
                    if self._verdicts.get(task, JOINED) != JOINED or _waiting(self._judge_later, task):
                        continue
                    try:
                        did = await self._step_task(client, task, steps, hinted)
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
                hinted = await self._wakeup.wait(self.config.poll_interval)

    async def _step_task(self, client: FedLedgerClient, task: int, steps: StepFilter, hinted: bool) -> str | None:
        """Judge the task once (the policy), then read its round and take at most one step in it."""
        assert self.worker is not None
        if task not in self._verdicts:
            try:
                self._verdicts[task] = await trio.to_thread.run_sync(self._judge, client, task)
            except StorageError as exc:  # its spec or model cannot be fetched yet: this task waits, the others go on
                why = await trio.to_thread.run_sync(self._unserved, client, task, exc)
                self._put_off(self._judge_later, task, why, first=logging.WARNING)
                return None
            self._judge_later.pop(task, None)
            if self._verdicts[task] != JOINED:
                return None
        await self._subscribe(task)
        info = await trio.to_thread.run_sync(client.task_info, task)
        self.tasks[task] = {"round": info.current_round, "rounds": info.rounds, "finished": info.finished}
        self.metrics.set("round", info.current_round, {"task": str(task)})
        if info.finished:
            return None
        state = await trio.to_thread.run_sync(client.round_state, task, info.current_round)
        self.tasks[task]["phase"] = state.phase.name.lower()
        self._opened[task] = (info.current_round, state.opened_block)
        if state.phase == Phase.ATTEST:
            self._release_updates(task, info.current_round)  # attesters need the updates now
        view = RoundView(info.current_round, state.phase, state.attempt)
        moved = steps.moved(task, view)
        if moved is not None:
            self._announce(moved)
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
                self._announce(ann)
        return did

    # -- gossip ---------------------------------------------------------------------

    async def _subscribe(self, task: int) -> None:
        """Join a task's topic (once): its announcements wake the protocol loop and feed the prefetcher."""
        if task in self._subscribed:
            return
        assert self.p2p is not None and self._nursery is not None
        try:
            inbox = await self.p2p.subscribe(task)
        except Exception as exc:  # gossip is an optimisation: poll on, try again next iteration
            log.warning("cannot subscribe to task %d's announcements: %s: %s", task, type(exc).__name__, exc)
            return
        self._subscribed.add(task)
        self._nursery.start_soon(self._take_announcements, inbox)

    async def _take_announcements(self, inbox: trio.MemoryReceiveChannel[Announcement]) -> None:
        async for ann in inbox:  # validated by P2PNode: well-formed, this task, a registered sender
            self.metrics.inc("announcements_total", labels={"direction": "received", "kind": ann.kind})
            known = self._opened.get(ann.task)
            if known is not None and not known[0] <= ann.round <= known[0] + 1:
                continue  # not the round we are in or the next: nothing to act on, nothing to fetch ahead
            if ann.kind in WAKES and self._seen.first(ann):
                log.debug("woken by %s of task %d round %d from %s", ann.kind, ann.task, ann.round, ann.sender)
                self._wakeup.hint()
            if self._prefetcher is not None:
                self._prefetcher.offer(ann)
            if ann.kind == "proposal":
                self._release_updates(ann.task, ann.round)  # attesters need the updates now

    def _announce(self, ann: Announcement) -> None:
        """Publish in the background: the loop never waits on gossip, and a failure only costs peers latency."""
        if not self._seen.first(ann):
            return  # a peer said it already (a phase change that several nodes saw after their actions)
        if os.environ.get(NO_ANNOUNCE):
            log.debug("not announcing %s (%s is set)", ann, NO_ANNOUNCE)
            return
        assert self._nursery is not None and self.p2p is not None
        p2p = self.p2p

        async def publish() -> None:
            try:
                await p2p.announce(ann)
                self.metrics.inc("announcements_total", labels={"direction": "sent", "kind": ann.kind})
            except Exception as exc:
                log.debug("announcing %s failed: %s: %s", ann, type(exc).__name__, exc)

        self._nursery.start_soon(publish)

    def _keep_connected(self, k: int = 6, redial_after: float = 10.0) -> None:
        """Dial our `k` ring neighbours among the registered peers that we are not connected to, in
        the background: the gossip mesh reaches only connected peers. A peer that would not answer is
        dialled again after `redial_after` s, or as soon as it registers a new address."""
        assert self.p2p is not None and self.peers is not None and self._nursery is not None
        p2p, now = self.p2p, trio.current_time()
        reachable = {p.peer_id: p for p in self.peers.by_address.values() if p.multiaddrs}
        for peer_id in ring_neighbours(p2p.peer_id, reachable, k):
            peer = reachable[peer_id]
            key = f"{peer_id} {peer.multiaddrs}"
            if peer_id == p2p.peer_id or p2p.connected(peer_id) or now - self._dialled.get(key, -math.inf) < redial_after:
                continue
            self._dialled[key] = now
            self._nursery.start_soon(self._dial, peer.multiaddrs)

    async def _dial(self, addrs: Sequence[str]) -> bool:
        """Connect at the first of a peer's registered addresses that answers within 5 s."""
        assert self.p2p is not None
        for addr in addrs:
            with trio.move_on_after(5):
                try:
                    await self.p2p.connect(addr)
                    return True
                except Exception as exc:  # unreachable for now: latency for gossip, nothing more
                    log.debug("cannot dial %s: %s: %s", addr, type(exc).__name__, exc)
        return False

    def _release_updates(self, task: int, round_: int) -> None:
        """The round has a proposal: fetch its updates ahead, from the senders the chain names."""
        if self._prefetcher is None or self._released.get(task, -1) >= round_:
            return
        self._released[task] = round_
        assert self._nursery is not None
        self._nursery.start_soon(self._offer_revealed, task, round_)

    async def _offer_revealed(self, task: int, round_: int) -> None:
        assert self._client is not None and self.p2p is not None and self.peers is not None
        assert self._prefetcher is not None
        client = self._client
        try:
            updates = await trio.to_thread.run_sync(client.round_updates, task, round_)
        except Exception as exc:  # the step fetches them itself
            log.debug("cannot read the reveals of task %d round %d: %s: %s", task, round_, type(exc).__name__, exc)
            updates = []
        for u in updates:  # in reveal order; the prefetcher takes them from the last
            peer = self.peers.by_address.get(u.sender)
            if peer is not None and peer.peer_id != self.p2p.peer_id:
                self._prefetcher.offer(Announcement(task, round_, "update", u.cid, peer.peer_id))
        self._prefetcher.release(task, round_)
        # Rounds before round_ - 1 are done with: unpin their updates, keep the global models (#14, H7).
        from node.daemon.peers import release_old_rounds

        store, since = self.p2p.store, self._deployed_at
        try:
            await trio.to_thread.run_sync(lambda: release_old_rounds(store, client, task, round_, from_block=since))
        except Exception as exc:  # only disk is reclaimed later; nothing else waits on it
            log.warning("cannot release old rounds of task %d: %s: %s", task, type(exc).__name__, exc)

    def _confirm(self, client: FedLedgerClient, anns: list[Announcement]) -> list[Announcement]:
        """Of announcements sharing task, round and kind, those the chain backs (runs in a thread)."""
        assert self.peers is not None
        task, round_, kind = anns[0].task, anns[0].round, anns[0].kind
        senders = {a: self.peers.by_peer_id.get(a.sender) for a in anns}
        if kind == "update":  # the round's reveals so far (the client keeps the CIDs it has read)
            revealed = {(u.sender, u.cid) for u in client.round_updates(task, round_)}
            return [a for a, p in senders.items() if p is not None and (p.address, a.cid) in revealed]
        state = client.round_state(task, round_)  # a proposal: fetch the aggregate from the round's proposer
        if state.phase != Phase.ATTEST:
            return []
        return [a for a, p in senders.items() if p is not None and p.address == state.proposer]

    async def _prefetch(self, ann: Announcement) -> None:
        assert self.p2p is not None and self.peers is not None
        peer = self.peers.by_peer_id.get(ann.sender)
        if peer is None:
            return
        if not self.p2p.connected(ann.sender) and not await self._dial(peer.multiaddrs):
            return
        await self.p2p.fetch(ann.cid, [ann.sender])
        self.metrics.inc("prefetched_total", labels={"kind": ann.kind})
        log.debug("prefetched %s %s of task %d round %d from %s", ann.kind, ann.cid, ann.task, ann.round, ann.sender)


# Reverts that only mean another node acted first (drew, advanced, finalized): the loop reads
# the chain again and moves on. Logged at debug level; any other revert is a warning.
RACES = frozenset({"FedLedgerWrongRound", "FedLedgerWrongPhase", "FedLedgerTaskFinished"})
RACY_FUNCTIONS = frozenset({"drawCommittee", "advance", "finalize"})


def is_expected_race(exc: ContractRevert) -> bool:
    return exc.error in RACES or (exc.error is None and exc.function in RACY_FUNCTIONS)


def _waiting(later: dict[int, tuple[int, float]], task: int) -> bool:
    return trio.current_time() < later.get(task, (0, 0.0))[1]


def run_daemon(
    config: NodeConfig, account: LocalAccount, exit_when_done: bool = False, behaviour: Behaviour | None = None
) -> None:
    try:
        trio.run(Daemon(config, account, exit_when_done, behaviour).run)
    except BaseExceptionGroup as group:  # a trio nursery's: the user gets the cause, as one line
        raise startup.cause(group) from None

