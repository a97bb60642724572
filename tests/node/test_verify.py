"""Re-execution of finalized rounds from on-chain inputs."""

from __future__ import annotations

import pytest

from node.chain import FedLedgerClient
from node.chain.providers import embedded_web3
from node.errors import ConfigError
from node.sim.simulate import SimulationConfig, run_simulation
from node.storage import EmbeddedStorage
from node.taskspec import SPEC_MAX_BYTES, TaskSpec, spec_for_rule
from node.verify import verify_round


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sim")
    config = SimulationConfig(nodes=3, rounds=2, seed=4, rule="median", spec=spec_for_rule("median", 3, epochs=1))
    w3 = embedded_web3(num_accounts=4)
    report = run_simulation(config, workdir=workdir, w3=w3)
    stores = [EmbeddedStorage(p) for p in sorted(workdir.iterdir()) if p.is_dir()]

    def fetch(cid, holders, max_bytes=None):
        for store in stores:
            if store.has(cid):
                return store.get(cid, max_bytes=max_bytes)
        raise AssertionError(f"{cid} is in no store")

    return FedLedgerClient(w3, report.contracts["FedLedger"]), report, fetch


def test_every_round_recomputes_to_the_same_bytes(finished):
    client, report, fetch = finished

    verdicts = [verify_round(client, fetch, report.task_id, r.round) for r in report.rounds]

    for verdict, record in zip(verdicts, report.rounds):
        assert verdict.ok, verdict.differences
        assert verdict.computed_cid == record.global_model_cid
        assert verdict.to_json()["match"] is True
    assert verdicts[1].record.base_cid == report.rounds[0].global_model_cid  # round 2 builds on round 1


def test_a_wrong_input_is_named_as_a_mismatch(finished):
    client, report, fetch = finished
    initial = verify_round(client, fetch, report.task_id, 1).record.base_cid

    def stale_base(cid, holders, max_bytes=None):  # a verifier fed the initial model instead of round 1's output
        return fetch(initial if cid == report.rounds[0].global_model_cid else cid, holders, max_bytes)

    verdict = verify_round(client, stale_base, report.task_id, 2)

    assert not verdict.ok
    assert any(d.startswith("global model: on-chain") for d in verdict.differences)


def test_every_fetch_is_bounded_by_the_task(finished):
    """The spec by its own cap, the models and updates by the task's max_update_bytes (#14 H7)."""
    client, report, fetch = finished
    limits: dict[str, int | None] = {}

    def recording(cid, holders, max_bytes=None):
        limits[cid] = max_bytes
        return fetch(cid, holders, max_bytes)

    verdict = verify_round(client, recording, report.task_id, 2)

    spec_cid = verdict.record.spec_cid
    assert limits.pop(spec_cid) == SPEC_MAX_BYTES
    assert limits and set(limits.values()) == {TaskSpec.from_bytes(fetch(spec_cid, [])).max_update_bytes}
    assert verdict.record.base_cid in limits and all(u.cid in limits for u in verdict.record.updates)


def test_unknown_task_and_unfinished_round_are_refused(finished):
    client, report, fetch = finished
    with pytest.raises(ConfigError, match="unknown task 9"):
        verify_round(client, fetch, 9, 1)
    with pytest.raises(ConfigError, match="round 3 of task 1 is not finalized"):
        verify_round(client, fetch, report.task_id, 3)


def test_a_replayed_update_is_scored_zero_by_the_verifier_too(tmp_path):
    # Prepare: a stale free-rider resends its round-1 update in round 2.
    config = SimulationConfig(
        nodes=3, malicious=1, attack="free-rider-stale", rounds=2, seed=4, spec=spec_for_rule("fedavg", 3, epochs=1)
    )
    w3 = embedded_web3(num_accounts=4)
    report = run_simulation(config, workdir=tmp_path, w3=w3)
    stores = [EmbeddedStorage(p) for p in sorted(tmp_path.iterdir()) if p.is_dir()]

    def fetch(cid, holders, max_bytes=None):
        return next(store.get(cid, max_bytes=max_bytes) for store in stores if store.has(cid))

    client = FedLedgerClient(w3, report.contracts["FedLedger"])
    stale = next(n.address for n in report.nodes if n.role == "free-rider-stale")

    # Execute
    verdict = verify_round(client, fetch, report.task_id, 2)

    # Assert: the on-chain scores, which zero the replay, are what re-execution gives.
    assert verdict.ok, verdict.differences
    senders = [u.sender for u in verdict.record.updates]
    assert verdict.computed_scores[senders.index(stale)] == 0
    assert all(s > 0 for a, s in zip(senders, verdict.computed_scores) if a != stale)

    def forgetful(cid, holders, max_bytes=None):  # a verifier that skips the previous round's updates
        if cid in {u.cid for u in client.round_updates(report.task_id, 1)}:
            raise LookupError(cid)
        return fetch(cid, holders, max_bytes)

    assert not verify_round(client, forgetful, report.task_id, 2).ok
