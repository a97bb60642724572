"""Unpinning what finished rounds no longer need (#14, H7), on a real federation's chain and stores.

A federation of 3 in-process protocol nodes runs 4 rounds on the embedded chain (py-evm); then
node 0 releases what round 4 no longer needs. Before, nothing was ever unpinned or collected.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from node.chain import FedLedgerClient
from node.chain.providers import embedded_web3
from node.daemon.peers import release_old_rounds
from node.sim.simulate import SimulationConfig, run_simulation
from node.storage import EmbeddedStorage, cid_of
from node.storage.retention import release
from node.taskspec import TaskSpec

pytestmark = pytest.mark.slow


def test_old_round_updates_are_released_and_every_global_model_kept(tmp_path: Path) -> None:
    # Prepare
    w3 = embedded_web3(num_accounts=4)
    config = SimulationConfig(nodes=3, rounds=4, seed=3, chain="embedded", spec=TaskSpec(epochs=1))
    report = run_simulation(config, workdir=tmp_path, w3=w3)
    client = FedLedgerClient(w3, report.contracts["FedLedger"])
    task = report.task_id
    store = EmbeddedStorage(tmp_path / "node0", fsync=False)
    updates = {r: [u.cid for u in client.round_updates(task, r)] for r in range(1, 5)}
    models = [r.global_model_cid for r in report.rounds]
    # A daemon fetches every update it checks. In-process nodes share one recomputation of a
    # round (ProtocolNode `results`), so node 0 fetched only some: add the rest from the nodes
    # that made them, as its own fetches would have.
    others = [EmbeddedStorage(tmp_path / f"node{i}", fsync=False) for i in (1, 2)]
    for cid in [c for r in updates for c in updates[r] if not store.has(c)]:
        assert store.put(next(o.get(cid) for o in others if o.has(cid))) == cid
    initial = store.pins()  # node 0 pinned every update and model it fetched or made
    assert all(store.is_pinned(c) for r in updates for c in updates[r])
    # Execute: round 4 has its proposal; keeping one finished round (round 3, for replay
    # detection), rounds 1 and 2 are done with. The default keeps more: nothing goes yet.
    assert release_old_rounds(store, client, task, 4) == 0 and store.pins() == initial
    removed = release_old_rounds(store, client, task, 4, keep_rounds=1)
    # Assert: rounds 1 and 2's updates are gone from disk, rounds 3 and 4's and every model stay
    assert removed > 0
    for r in (1, 2):
        assert not any(store.has(c) or store.is_pinned(c) for c in updates[r])
    for cid in updates[3] + updates[4] + models:
        assert store.has(cid) and store.get(cid)
    assert set(store.pins()) < set(initial)


def test_keep_wins_over_drop_and_junk_cids_are_skipped(tmp_path: Path) -> None:
    # Prepare: an "old update" that is byte for byte a global model (a replay), and one that is
    # not a CID at all (chain data)
    store = EmbeddedStorage(tmp_path / "ipfs", fsync=False)
    model = store.put(b"global model")
    old = store.put(b"an old update")
    # Execute
    removed = release(store, [old, model, "not-a-cid"], keep=[model])
    # Assert
    assert removed == 1 and not store.has(old)
    assert store.get(model) == b"global model" and store.is_pinned(model)
    assert cid_of(b"an old update") == old
