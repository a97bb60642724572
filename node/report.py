"""The simulation report: a terminal table, summary.json (SPEC §9) and PNG plots."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.units import WAD


@dataclass(frozen=True)
class RoundRecord:
    round: int
    global_model_cid: str
    test_accuracy: float | None  # node/sim/evaluation.py: ModelEvaluation.accuracy
    gas_used: int
    metrics: dict[str, float] = field(default_factory=dict)  # the nodes' evaluations, weighted by examples


@dataclass(frozen=True)
class NodeRecord:
    address: str
    role: str  # "honest" or the attack kind
    reputation_wad: int  # on-chain, after the last round
    payout_wei: int  # every reward credited to the node during the run (withdrawable; vested included)
    pending_wei: int  # on-chain pendingRewards at the end (not yet withdrawn)
    reputation_history_wad: list[int] = field(default_factory=list)  # at registration, then after each round
    num_samples: int = 0
    scores_wad: list[int | None] = field(default_factory=list)  # per round, in the accepted proposal; None: no seat
    # A sybil attacker's identity (role "sybil"): the address of the attacker's first identity (its
    # own, for that one), which groups an attacker's identities; None for every other node.
    identity_of: str | None = None
    # Rounds already ended when the node registered: its reputation history starts there (at
    # registration, then after each later round); its scores are None for the rounds before.
    joined_after_round: int = 0
    # Rewards still held at the end for the node's probation (#16): a newcomer's rewards vest after
    # PROBATION_ROUNDS scored rounds at or above the initial reputation, else they are forfeited.
    held_wei: int = 0

    @property
    def earned_wei(self) -> int:
        """Paid during the run plus still held for probation: all it may yet withdraw of the run."""
        return self.payout_wei + self.held_wei


@dataclass
class SimulationReport:
    config: dict[str, Any]
    initial_accuracy: float | None
    rounds: list[RoundRecord]
    nodes: list[NodeRecord]
    chain_id: int
    rpc: str | None
    contracts: dict[str, str]
    block_number: int
    task_id: int
    owner: str
    initial_metrics: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """summary.json; large integers are decimal strings, as everywhere in our JSON."""
        return {
            "config": self.config,
            "task_id": self.task_id,
            "initial_accuracy": self.initial_accuracy,
            "initial_metrics": self.initial_metrics,
            "rounds": [
                {
                    "round": r.round,
                    "global_model_cid": r.global_model_cid,
                    "test_accuracy": r.test_accuracy,
                    "metrics": r.metrics,
                    "gas_used": r.gas_used,
                }
                for r in self.rounds
            ],
            "nodes": [
                {
                    "address": n.address,
                    "role": n.role,
                    "reputation": n.reputation_wad / WAD,
                    "reputation_wad": str(n.reputation_wad),
                    "payout_wei": str(n.payout_wei),
                    "pending_wei": str(n.pending_wei),
                    "held_wei": str(n.held_wei),
                    "num_samples": n.num_samples,
                    "reputation_history_wad": [str(x) for x in n.reputation_history_wad],
                    "scores_wad": [None if x is None else str(x) for x in n.scores_wad],
                    # Only a sybil attacker's identities carry these two (see NodeRecord).
                    **({"identity_of": n.identity_of, "joined_after_round": n.joined_after_round} if n.identity_of else {}),
                }
                for n in self.nodes
            ],
            "deployment": {
                "chain_id": self.chain_id,
                "rpc": self.rpc,
                "contracts": self.contracts,
                "block_number": self.block_number,
            },
        }

    def table(self) -> str:
        """The rounds (accuracy and loss: the nodes' own evaluations, weighted by their examples)
        and the nodes."""
        lines = ["", "round  accuracy    loss   gas used  global model"]
        first = self.initial_metrics
        lines.append(f"{0:>5}  {_cell(first.get('accuracy', self.initial_accuracy), 8)}  {_cell(first.get('loss'), 6)}  {'-':>9}  (initial)")
        for r in self.rounds:
            acc = r.metrics.get("accuracy", r.test_accuracy)
            lines.append(f"{r.round:>5}  {_cell(acc, 8)}  {_cell(r.metrics.get('loss'), 6)}  {r.gas_used:>9,}  {r.global_model_cid}")
        lines += ["", "node                                        role              reputation  payout (ETH)  held (ETH)"]
        for n in self.nodes:
            lines.append(f"{n.address}  {n.role:<16}  {n.reputation_wad / WAD:>10.4f}  {n.payout_wei / WAD:>12.6f}"
                         f"  {n.held_wei / WAD:>10.6f}")  # fmt: skip
        return "\n".join(lines) + "\n"

    def write(self, directory: str | Path) -> list[Path]:
        """Write summary.json and the plots into `directory`; returns the files written."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        summary = out / "summary.json"
        summary.write_text(json.dumps(self.summary(), indent=2) + "\n")
        return [summary, *self._plots(out)]

    def _plots(self, out: Path) -> list[Path]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator

        written: list[Path] = []
        fig, ax = plt.subplots(figsize=(6, 4))
        xs = [0] + [r.round for r in self.rounds]
        ys = [self.initial_accuracy] + [r.test_accuracy for r in self.rounds]
        ax.plot(xs, [math.nan if y is None else y for y in ys], marker="o")
        ax.set(xlabel="round", ylabel="test accuracy", title="Global model accuracy", ylim=(0, 1))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        written.append(_save(fig, out / "accuracy.png"))

        fig, ax = plt.subplots(figsize=(6, 4))
        for n in self.nodes:
            hist = [x / WAD for x in n.reputation_history_wad]
            start = n.joined_after_round  # a node that registered during the run starts there
            ax.plot(range(start, start + len(hist)), hist, marker="o", label=f"{n.address[:8]} ({n.role})")
        ax.set(xlabel="round", ylabel="reputation", title="Reputation per node", ylim=(0, 1))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        written.append(_save(fig, out / "reputation.png"))

        fig, ax = plt.subplots(figsize=(6, 4))
        labels = [f"{n.address[:8]}\n{n.role}" for n in self.nodes]
        colors = ["tab:blue" if n.role == "honest" else "tab:red" for n in self.nodes]
        ax.bar(labels, [n.earned_wei / WAD for n in self.nodes], color=colors)
        ax.set(ylabel="ETH", title="Rewards credited per node (paid or held)")
        written.append(_save(fig, out / "payouts.png"))
        return written


def _cell(value: float | None, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.3f}"


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
