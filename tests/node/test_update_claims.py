"""An update file must be for the round it is revealed in (#16): its `task`, `round` and `base`
metadata, and its `num_samples`, must agree with the round and with the sender's on-chain claim.

Before this check, an update naming task 999 and base "junk", or a file claiming far more samples
than its sender revealed on-chain, was aggregated and scored like any other. Each case here swaps
one honest update of a real round (in-process federation on py-evm) for a tampered copy and
recomputes the round exactly as every attester and `fedledger verify` do.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from aggregation import encode_update
from aggregation.safetensors_io import read_safetensors
from node.chain import FedLedgerClient
from node.chain.providers import embedded_web3
from node.protocol import recompute_round
from node.sim.simulate import SimulationConfig, local_or_peers, run_simulation
from node.storage import EmbeddedStorage
from node.taskspec import TaskSpec
from node.verify import round_record


@pytest.fixture(scope="module")
def finished_round(tmp_path_factory):
    """A 3-node, 1-round federation: (client, task, stores)."""
    workdir = tmp_path_factory.mktemp("claims")
    w3 = embedded_web3(num_accounts=4)
    config = SimulationConfig(nodes=3, rounds=1, seed=2, spec=TaskSpec(epochs=1))
    report = run_simulation(config, workdir=workdir, w3=w3)
    stores = [EmbeddedStorage(p, fsync=False) for p in sorted(workdir.iterdir()) if p.is_dir()]
    return FedLedgerClient(w3, report.contracts["FedLedger"]), report.task_id, stores


TAMPERED = {
    "another task": {"task": 999},
    "another round": {"round": 2},
    "another base": {"base": "junk"},
    "more samples than claimed on-chain": {"num_samples": 10**6},
}


@pytest.mark.parametrize("change", TAMPERED.values(), ids=TAMPERED.keys())
def test_an_update_that_claims_another_round_or_sample_count_scores_zero(finished_round, change) -> None:
    # Prepare: the round's second update, re-encoded with one field changed
    client, task, stores = finished_round
    record = round_record(client, task, 1)
    spec_bytes = local_or_peers(record.spec_cid, stores[0], stores)
    spec = TaskSpec.from_bytes(spec_bytes)
    victim = record.updates[1]
    original = local_or_peers(victim.cid, stores[0], stores, spec.max_update_bytes)
    base_cid = record.base_cid
    tensors, _ = read_safetensors(original, len(original))
    fields = {"num_samples": victim.num_samples, "task": task, "round": 1, "base": base_cid, **change}
    tampered = encode_update(tensors, **fields)

    def fetch(cid: str, holders: Sequence[str] = (), max_bytes: int | None = None) -> bytes:
        return tampered if cid == victim.cid else local_or_peers(cid, stores[0], stores, max_bytes)

    # Execute
    honest = recompute_round(client, lambda c, h=(), max_bytes=None: local_or_peers(c, stores[0], stores, max_bytes),
                             spec, task, 1, base_cid, record.updates)  # fmt: skip
    result = recompute_round(client, fetch, spec, task, 1, base_cid, record.updates)

    # Assert: the tampered update is rejected (score 0, a reason) and the others are aggregated
    assert honest.scores[1] > 0
    assert result.scores[1] == 0
    assert result.rejected[1] and "claims" in result.rejected[1]
    assert result.scores[0] > 0 and result.scores[2] > 0
