"""Which tasks a daemon works on: the operator's `[tasks]` policy in node.toml (#14, C1, M7).

Anyone can create a task, and a task can slash the stake of the nodes that act in it (a
rejected proposal, a missing reveal). So a daemon joins no task unless its operator says so:
by task id (`join`) or by owner (`owners`). Every task it would join must also fit the
operator's limits: the stake one slash can take, the reward on offer, the number of rounds,
the committee, and the spec's training and update sizes. A task that does not fit is refused
with one log line, and the daemon never draws, commits, proposes, attests or finalizes in it.

The checks run on data a stranger wrote (the chain's task record and the spec it names), so
they read it as hostile: a value that does not parse refuses the task, it does not stop the
daemon.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from node.chain.types import TaskInfo
from node.taskspec import TaskSpec
from node.units import ETHER

MIB = 2**20


@dataclass(frozen=True)
class TaskPolicy:
    join: tuple[int, ...] = ()  # task ids the operator joined
    owners: tuple[str, ...] = ()  # checksummed owner addresses whose tasks the operator joins
    max_stake_at_risk_wei: int = ETHER  # the most one slash in a task may take (its minimum stake)
    min_reward_wei: int = 0  # tasks whose reward pool holds less are refused
    max_rounds: int = 1000
    max_committee: int = 64
    max_epochs: int = 100
    max_batch_size: int = 4096
    max_update_bytes: int = 256 * MIB

    @property
    def joins_any(self) -> bool:
        return bool(self.join or self.owners)

    @property
    def closed(self) -> bool:
        """Only explicit ids: the set of tasks can never grow, so `--exit-when-done` can fire."""
        return not self.owners

    def selects(self, task: int, owner: str) -> bool:
        """Whether the operator chose this task, by id or by owner (before any limit)."""
        return task in self.join or owner.lower() in {o.lower() for o in self.owners}

    def refuse_task(self, info: TaskInfo, min_stake_wei: int) -> str | None:
        """Why the task's on-chain terms are over this node's limits (None: within them)."""
        if min_stake_wei > self.max_stake_at_risk_wei:
            return (f"a slash may take {_eth(min_stake_wei)} ETH, more than max_stake_at_risk "
                    f"({_eth(self.max_stake_at_risk_wei)} ETH)")  # fmt: skip
        if info.reward_remaining < self.min_reward_wei:
            return f"its reward pool holds {_eth(info.reward_remaining)} ETH, less than min_reward ({_eth(self.min_reward_wei)} ETH)"
        if info.rounds > self.max_rounds:
            return f"it has {info.rounds} rounds, more than max_rounds ({self.max_rounds})"
        if info.committee_size > self.max_committee:
            return f"its committee has {info.committee_size} seats, more than max_committee ({self.max_committee})"
        return None

    def refuse_spec(self, spec: TaskSpec) -> str | None:
        """Why the task's spec asks more of this node than its operator allows (None: it fits)."""
        for name, value, limit in (
            ("epochs", spec.epochs, self.max_epochs),
            ("batch_size", spec.batch_size, self.max_batch_size),
            ("max_update_bytes", spec.max_update_bytes, self.max_update_bytes),
        ):
            if value > limit:
                return f"its spec has {name} = {value}, more than this node's max_{name.removeprefix('max_')} ({limit})"
        return None




def _eth(wei: int) -> str:
    return format(Decimal(wei) / ETHER, "f")

