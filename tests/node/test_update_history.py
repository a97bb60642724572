"""node/sim/history.py (scripts/measure_update_history.py) at a tiny size: real simulations."""

from __future__ import annotations

import pytest

from node.sim.history import LEVELS, honest_updates, measure_cell, render


@pytest.mark.parametrize("split", ["iid", "dirichlet-0.1"])
def test_history_cosines_are_cosines_and_a_small_perturbation_stays_a_replay(split: str) -> None:
    # Prepare: 4 honest nodes, 2 rounds of real training (1 epoch, to stay quick).
    updates = honest_updates(split, "median", nodes=4, rounds=2, epochs=1, seed=7)

    # Execute
    found = measure_cell(updates, seed=7)
    table = render({(split, "median"): found}, "test", "0")

    # Assert: every node published twice; lag 1 exists, lag 2 cannot in 2 rounds.
    assert sorted(len(rounds) for rounds in updates.values()) == [2, 2, 2, 2]
    assert len(found["self-1"]) == 4 and found["self-2"] == []
    assert len(found["cross"]) == 2 * 6
    assert all(-1.0 <= c <= 1.0 for kind, values in found.items() if kind != "norm" for c in values)
    assert min(found["replay-1-0.001"]) > 0.99
    # Noise at 1e-1 of the norm costs about 0.5% of cosine (1 / sqrt(1.01)).
    assert all(abs(c - 1 / (1 + 0.1**2) ** 0.5) < 1e-3 for c in found["replay-1-0.1"])
    assert len(LEVELS) == 3 and f"| {split} | median |" in table
    # One norm ratio per node and round, and each round's upper median is one of them.
    assert len(found["norm"]) == 8 and found["norm"].count(1.0) >= 2 and min(found["norm"]) > 0
