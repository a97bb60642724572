"""`fedledger node run`: the daemon, as one trio service (SPEC §8).

Parts, each a task in one nursery: the status/metrics endpoint, the libp2p
node (identity, block exchange, gossip), and the protocol loop that polls the
chain and lets the node's `ProtocolNode` (node/protocol.py) act. Blocking web3 and torch calls run in worker
threads (`trio.to_thread`); a worker thread fetching content from peers calls
back into trio (`trio.from_thread`). SIGINT/SIGTERM cancel the nursery, so
every part stops at its next checkpoint and the journal stays consistent.
"""

from __future__ import annotations

import logging
import random
import signal
import time
from pathlib import Path
from typing import Any, Sequence

import requests
import trio
from eth_account.signers.local import LocalAccount
from web3.exceptions import Web3Exception

from node.chain.client import FedLedgerClient
from node.chain.deployment import Deployment
from node.chain.providers import rpc_web3
from node.abc import BlockStore
from node.daemon.backoff import Backoff
from node.daemon.config import NodeConfig
from node.daemon.journal import Journal
from node.daemon.observability import Metrics, serve_status
from node.daemon.peers import PeerDirectory, fetch_from_peers
from node.errors import ChainError, ConfigError, StorageError
from node.p2p.node import P2PConfig, P2PNode
from node.protocol import Behaviour, ProtocolNode
from node.storage import open_storage
from node.taskspec import TaskSpec
from node.training import TorchTrainer, trainer_for
from node.training.localdata import load_local_data

log = logging.getLogger("fedledger.daemon")

# What an outage looks like from here: retried with backoff, never fatal once running.
TRANSIENT = (ChainError, requests.RequestException, ConnectionError, OSError, Web3Exception, StorageError)


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
        ):
            self.metrics.describe(name, kind, text)
        self.tasks: dict[int, dict[str, Any]] = {}
        self.last_error: str | None = None
        self.p2p: P2PNode | None = None
        self.peers: PeerDirectory | None = None
        self.worker: ProtocolNode | None = None

    # -- status -------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        worker = self.worker
        return {
            "node": self.account.address,
            "peer_id": self.p2p.peer_id if self.p2p else None,
            "listen": self.p2p.addrs if self.p2p else [],
            "uptime_s": round(time.time() - self.started, 1),
            "tasks": {str(k): v for k, v in self.tasks.items()},
            "last_action": worker.last_action if worker else None,
            "recent_actions": [
                {"task": a.task, "round": a.round, "kind": a.kind, "status": a.status}
                for a in (worker.journal.recent(10) if worker else [])
            ],
            "peers": len(self.peers.by_address) if self.peers else 0,
            "last_error": self.last_error,
        }

    # -- setup --------------------------------------------------------------------

    def _connect_chain(self) -> FedLedgerClient:
        deployment = Deployment.load(self.config.deployment)
        w3 = rpc_web3(self.config.rpc)
        if int(w3.eth.chain_id) != deployment.chain_id:
            raise ConfigError(f"{self.config.rpc} is chain {w3.eth.chain_id}, the deployment is on {deployment.chain_id}")
        address = deployment.contracts["FedLedger"]
        if not w3.eth.get_code(address):
            raise ConfigError(f"no FedLedger contract at {address} on {self.config.rpc}")
        self._deployed_at = deployment.block_number or 0
        return FedLedgerClient(w3, address, self.account)

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
        return trainer_for(spec, load_local_data(self.config.data_path, self.config.data_format))

    # -- content from peers ---------------------------------------------------------

    def _fetch(self, store: BlockStore, cid: str, holders: Sequence[str]) -> bytes:
        """Called from a worker thread: local copy, else from the holders over libp2p."""
        if store.has(cid):
            return store.get(cid)
        trio.from_thread.run(self._fetch_from_peers, cid, list(holders))
        return store.get(cid)

    async def _fetch_from_peers(self, cid: str, holders: list[str]) -> None:
        assert self.p2p is not None and self.peers is not None
        await fetch_from_peers(self.p2p, self.peers, cid, holders)

    # -- run ----------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        # [storage] backend: the embedded blockstore in data_dir, or the IPFS daemon at kubo_api.
        store = open_storage(cfg.storage_backend, cfg.data_dir / "ipfs", cfg.kubo_api)
        where = f"the IPFS daemon at {cfg.kubo_api}" if cfg.storage_backend == "kubo" else cfg.data_dir / "ipfs"
        log.info("storage: %s", where)
        journal = Journal(cfg.data_dir / "journal.db")
        client = await trio.to_thread.run_sync(self._connect_chain)
        self.peers = PeerDirectory(client, from_block=self._deployed_at)
        self.p2p = P2PNode(P2PConfig(cfg.data_dir, listen=cfg.listen[0]), store, self.peers.is_registered)
        self.worker = ProtocolNode(
            client, journal, store, trainer=self._trainer_for,
            fetch=lambda cid, holders: self._fetch(store, cid, holders),
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
        if self.config.tasks:
            return list(self.config.tasks)
        return list(range(1, client.task_count() + 1))

    async def _protocol_loop(self, client: FedLedgerClient) -> None:
        assert self.worker is not None and self.peers is not None
        policy, rng, failures = Backoff(base=0.5, cap=10.0), random.Random(), 0
        while True:
            acted = False
            try:
                await trio.to_thread.run_sync(self.peers.refresh)
                self.metrics.set("peers", len(self.peers.by_address))
                for task in await trio.to_thread.run_sync(self._task_ids, client):
                    info = await trio.to_thread.run_sync(client.task_info, task)
                    self.tasks[task] = {"round": info.current_round, "rounds": info.rounds, "finished": info.finished}
                    self.metrics.set("round", info.current_round, {"task": str(task)})
                    if info.finished:
                        continue
                    state = await trio.to_thread.run_sync(client.round_state, task, info.current_round)
                    self.tasks[task]["phase"] = state.phase.name.lower()
                    did = await trio.to_thread.run_sync(self.worker.step, task)
                    if did:
                        acted = True
                        self.metrics.inc("actions_total", labels={"kind": did.split(": ")[-1].split()[0]})
                failures = 0
                self.last_error = None
            except TRANSIENT as exc:
                failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.metrics.inc("errors_total")
                wait = policy.delay(failures - 1, rng)
                log.warning("protocol loop: %s; retrying in %.1f s", self.last_error, wait)
                await trio.sleep(wait)
                continue
            if self.config.tasks and all(self.tasks.get(t, {}).get("finished") for t in self.config.tasks):
                if self.exit_when_done:
                    log.info("every configured task is finished")
                    return
            await trio.sleep(0 if acted else self.config.poll_interval)


def run_daemon(
    config: NodeConfig, account: LocalAccount, exit_when_done: bool = False, behaviour: Behaviour | None = None
) -> None:
    trio.run(Daemon(config, account, exit_when_done, behaviour).run)
