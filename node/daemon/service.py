"""`fedledger node run`: the daemon, as one trio service (SPEC §8). This module wires its parts.

Parts, each a task in one nursery: the status/metrics endpoint and its
dashboard history, the libp2p node (identity, block exchange, gossip), the
gossip part (node/daemon/gossip.py) and the protocol loop
(node/daemon/loop.py) that polls the chain and lets the node's
`ProtocolNode` (node/protocol/node.py) act. Blocking web3 and torch calls run in worker
threads (`trio.to_thread`); a worker thread fetching content from peers calls
back into trio (`trio.from_thread`). SIGINT/SIGTERM cancel the nursery, so
every part stops at its next checkpoint and the journal stays consistent.

Gossip (node/daemon/hints.py, node/daemon/gossip.py): the loop announces what each step did on the
task's topic, and a peer's announcement ends its idle wait at once, so a round
moves at the pace of the nodes, not of their polls; announced updates and
proposals are fetched ahead of the steps that need them. The poll stays as the
fallback: a lost announcement costs latency, never correctness.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from typing import Any

import trio
from eth_account.signers.local import LocalAccount

from aggregation.warmup import warm_in_background
from node.chain.client import FedLedgerClient
from node.daemon import startup
from node.daemon.config import NodeConfig
from node.daemon.dashboard.history import History
from node.daemon.gossip import DaemonGossip
from node.daemon.journal import Journal
from node.daemon.loop import REFUSED, TaskLoop
from node.daemon.observability import Metrics, serve_status
from node.daemon.peers import PeerDirectory, libp2p_fetch
from node.p2p.node import P2PConfig, P2PNode
from node.protocol import Behaviour, ProtocolNode
from node.storage import open_storage
from node.taskspec import TaskSpec
from node.abc import Trainer
from node.apps.native import Evaluation
from node.apps.resolve import node_trainer
from node.training.data import Dataset

log = logging.getLogger("fedledger.daemon")


class Daemon:
    """One node's daemon: storage, the libp2p node, the protocol worker, gossip and the task loop,
    wired into one trio service (`run`)."""

    def __init__(
        self, config: NodeConfig, account: LocalAccount, exit_when_done: bool = False, behaviour: Behaviour | None = None
    ) -> None:
        self.config = config
        self.account = account
        self.behaviour = behaviour  # None: honest
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
            ("model_metric", "gauge", "The app's evaluation of the newest global model on this node's held-out data, by task and metric."),
            ("model_evaluated_round", "gauge", "The round of the newest global model evaluated, by task."),
        ):
            self.metrics.describe(name, kind, text)
        self.gossip = DaemonGossip(self.metrics)
        self.loop = TaskLoop(config, account, self.metrics, self.gossip, exit_when_done)
        self.history = History(account.address)  # what the dashboard plots (GET /), bounded
        self.history.on_evaluated = self._evaluated
        self.loop.on_move = self.history.moved
        self.p2p: P2PNode | None = None
        self.peers: PeerDirectory | None = None
        self.worker: ProtocolNode | None = None
        self._data: Dataset | None = None  # the node's training data, read at start-up
        self._deployed_at = 0

    # -- status -------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        self.history.asked()  # someone watches: the history follows the chain every second for a while
        worker = self.worker
        return {
            "node": self.account.address,
            "peer_id": self.p2p.peer_id if self.p2p else None,
            "listen": self.p2p.addrs if self.p2p else [],
            "uptime_s": round(time.time() - self.started, 1),
            "tasks": {str(k): v for k, v in self.loop.tasks.items()},
            "not_joined": {str(k): f"{self.loop.verdicts.get(k, REFUSED)}: {v}" for k, v in list(self.loop.reasons.items())},
            "last_action": worker.last_action if worker else None,
            "recent_actions": [
                {"task": a.task, "round": a.round, "kind": a.kind, "status": a.status}
                for a in (worker.journal.recent(10) if worker else [])
            ],
            "peers": len(self.peers.by_address) if self.peers else 0,
            "last_error": self.loop.last_error,
            "evaluation": self.evaluations(),
            "dashboard": self.history.snapshot(),
        }

    def _evaluated(self, task: int, round_: int, evaluation: Evaluation) -> None:
        """/metrics: the newest evaluated round of each task, and its metrics."""
        if round_ < self.metrics.get("model_evaluated_round", {"task": str(task)}):
            return
        self.metrics.set("model_evaluated_round", round_, {"task": str(task)})
        for name, value in evaluation.metrics.items():
            if math.isfinite(value):
                self.metrics.set("model_metric", value, {"task": str(task), "metric": name[:64]})

    def evaluations(self) -> dict[str, Any]:
        """Per task, the newest global model this node evaluated: round, CID, examples, metrics."""
        out: dict[str, Any] = {}
        for task, entry in self.history.snapshot()["tasks"].items():
            done = [r for r in entry["rounds"] if r.get("metrics") is not None]
            if done:
                last = max(done, key=lambda r: r["round"])
                out[task] = {k: last[k] for k in ("round", "cid", "num_examples", "metrics")}
        return out

    # -- setup --------------------------------------------------------------------

    def _preflight(self) -> FedLedgerClient | None:
        """The start-up checks (node/daemon/startup.py), before anything is registered or spent;
        each failure raises one line. None: there is nothing to do (`--exit-when-done` and no
        task joined)."""
        cfg = self.config
        chain = startup.connect(cfg.rpc, cfg.deployment, self.account)
        self._deployed_at = chain.deployed_at
        self._data = startup.load_data(cfg)
        startup.check_app(cfg)
        if self.loop.exit_when_done and not cfg.policy.joins_any:
            log.info("joined no task ([tasks] join and owners are empty in %s) and --exit-when-done is set: "
                     "nothing to do, exiting (join one with `fedledger node join --config %s --task T`)", cfg.path, cfg.path)  # fmt: skip
            return None
        startup.check_joined(chain.client, cfg)
        startup.check_balance(chain.client, self.account.address, cfg.path)
        log.info("training data: %s", startup.describe_data(self._data, cfg))  # after the checks: a failure is one line
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

    def _trainer_for(self, spec: TaskSpec) -> Trainer:
        cfg = self.config  # the data was read at start-up, and fitted to the task when it was judged
        return node_trainer(spec, cfg.node_config(), cfg.app_ref, cfg.path.parent, trust_spec=False)

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
        warm_in_background()  # compiles the aggregation kernels while the node starts and trains
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
                self.gossip.start(nursery, client, self.p2p, self.peers, self._deployed_at)
                nursery.start_soon(self.history.run, client, self.worker, self.loop.tasks, self.peers, self.p2p, self._deployed_at)
                await self.loop.run(client, self.worker, self.peers)
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


def run_daemon(
    config: NodeConfig, account: LocalAccount, exit_when_done: bool = False, behaviour: Behaviour | None = None
) -> None:
    try:
        trio.run(Daemon(config, account, exit_when_done, behaviour).run)
    except BaseExceptionGroup as group:  # a trio nursery's: the user gets the cause, as one line
        raise startup.cause(group) from None

