"""Running a simulated federation until a cheating proposer's turn has come.

A round's proposer is its first drawn member, and the draw is seeded by block hashes. The
in-process chain is replayable, so a seed always gives the same turns, but any change to the
contract's bytecode (which is in the chain) moves them. Tests that need the cheat's turn to come
therefore try a few seeds and use the first run in which it did, instead of hard-coding one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from web3 import Web3

from node.chain.providers import embedded_web3
from node.report import SimulationReport
from node.sim.simulate import SimulationConfig, run_simulation


def rejected_rounds(lines: Sequence[str]) -> list[int]:
    """The rounds in which a proposal was rejected, from `run_simulation`'s progress lines."""
    return [int(line.split()[1].rstrip(":")) for line in lines if "rejected" in line]


def run_until_rejected(
    config_for: Callable[[int], SimulationConfig],
    seeds: Sequence[int],
    accounts: int,
    *,
    first_round: int = 1,
    last_round: int | None = None,
    workdir: Path | None = None,
) -> tuple[SimulationReport, list[str], Web3, int]:
    """The first of `seeds` whose run rejected a proposal, the first rejection in a round from
    `first_round` to `last_round` (default: any): (report, progress lines, chain, seed)."""
    for seed in seeds:
        w3 = embedded_web3(num_accounts=accounts)
        lines: list[str] = []
        report = run_simulation(config_for(seed), progress=lines.append, w3=w3,
                                workdir=None if workdir is None else workdir / f"seed{seed}")  # fmt: skip
        rejected = rejected_rounds(lines)
        if rejected and first_round <= rejected[0] <= (last_round or rejected[0]):
            return report, lines, w3, seed
    pytest.fail(f"no run of seeds {list(seeds)} gave a cheat its turn to propose in rounds {first_round}..{last_round or 'end'}")
