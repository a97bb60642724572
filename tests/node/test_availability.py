"""An update its uploader serves to some nodes and not to others (#14 H6): honest nodes must not
split on it, and no honest proposer may be slashed for someone else's withholding.

In-process federation (the simulator's ProtocolNodes on py-evm). Each node fetches a round's
updates from their uploader, as the daemon does; the withholder answers only the first node that
asks for each of its updates (in node order, the designated proposer) and nobody after it.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from node.chain import FedLedgerClient
from node.chain.providers import embedded_web3
from node.errors import StorageError
from node.sim import simulate
from node.sim.simulate import SimulationConfig, run_simulation
from node.storage import EmbeddedStorage
from node.taskspec import TaskSpec


def test_a_selective_withholder_cannot_get_an_honest_proposer_slashed(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: 4 nodes, the last withholds its updates from all but the first node that asks
    w3 = embedded_web3(num_accounts=5)
    config = SimulationConfig(nodes=4, rounds=2, seed=5, spec=TaskSpec(epochs=1))
    withholder = simulate.dev_account(config.nodes).address
    served: dict[str, EmbeddedStorage] = {}  # withheld cid -> the one store it was served to
    honest_fetch = simulate._fetch_for

    def selective(
        local: EmbeddedStorage, everyone: list[EmbeddedStorage], cid: str, holders: Sequence[str] = (),
        max_bytes: int | None = None,
    ) -> bytes:
        uploader = holders[0] if holders else None
        if uploader == withholder and local is not everyone[-1] and not local.has(cid):
            if served.setdefault(cid, local) is not local:
                raise StorageError(f"{withholder} does not answer for {cid}")
            return honest_fetch(local, [everyone[-1]], cid, holders, max_bytes)  # straight from the uploader only
        return honest_fetch(local, everyone, cid, holders, max_bytes)

    monkeypatch.setattr(simulate, "_fetch_for", selective)
    lines: list[str] = []

    # Execute
    report = run_simulation(config, progress=lines.append, w3=w3)

    # Assert: somebody was refused (the attack ran), no honest stake was slashed, the task finished
    assert served, "the withholder was never asked"
    client = FedLedgerClient(w3, report.contracts["FedLedger"])
    honest = [n for n in report.nodes if n.address != withholder]
    assert [client.node_info(n.address)[1] for n in honest] == [config.stake_wei] * 3, lines
    assert not [line for line in lines if "rejected" in line]
    assert len(report.rounds) == config.rounds
