"""The robustness report's grid of outcomes and the phrases that quote its numbers.

`Grid` looks outcomes up by split, rule and attack; `evidence` states what a missed target's
numbers are; the small formatters (`pct`, `seq`, ...) keep every sentence of the report
(node/sim/robustness_explain.py, node/sim/robustness_report.py) in one style.
"""

from __future__ import annotations

import statistics
from typing import Any

from node.sim.attacks import SYBIL
from node.sim.robustness import EXCLUSION_ROUNDS, Outcome


def pct(x: float) -> str:
    """A share as a percentage with one decimal."""
    return f"{x:.1%}"


def seq(xs: list[Any], fmt: str = "{:.2f}") -> str:
    """A per-round sequence, "-" for a round without a value."""
    return " → ".join("-" if x is None else fmt.format(x) for x in xs)


def mean(xs: list[Any]) -> float:
    """The mean of the values that are not None (0.0 if there are none)."""
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else 0.0


def attacker_mean_scores(o: Outcome) -> list[float | None]:
    """The attackers' mean score per round (None: no attacker held a seat)."""
    out: list[float | None] = []
    for r in range(len(o.accuracy_per_round)):
        xs = [s[r] for s in o.attacker_scores if s[r] is not None]
        out.append(round(statistics.fmean(xs), 3) if xs else None)
    return out


def seated_rounds(o: Outcome) -> list[int]:
    """The rounds (from 1) in which at least one attacker held a seat."""
    return [r + 1 for r in range(len(o.accuracy_per_round)) if any(s[r] is not None for s in o.attacker_scores)]


def seat_count(o: Outcome) -> int:
    """Seats attackers held over the run, one per identity and round."""
    return sum(x is not None for s in o.attacker_scores for x in s)


def spans(rounds: list[int]) -> str:
    """[1, 2, 4, 5] -> "rounds 1-2 and 4-5"; [3] -> "round 3"."""
    runs: list[list[int]] = []
    for r in rounds:
        if runs and r == runs[-1][-1] + 1:
            runs[-1].append(r)
        else:
            runs.append([r])
    words = [f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]) for run in runs]
    return ("round " if rounds == [rounds[0]] else "rounds ") + join_words(words)


class Grid:
    """The outcomes, with the look-ups the report's sentences need."""

    def __init__(self, outcomes: list[Outcome], config: dict[str, Any]) -> None:
        self.outcomes = outcomes
        self.config = config

    def find(self, split: str, rule: str, attack: str | None) -> Outcome | None:
        return next((o for o in self.outcomes if (o.split, o.rule, o.attack) == (split, rule, attack)), None)

    def base(self, o: Outcome) -> Outcome:
        b = self.find(o.split, o.rule, None)
        assert b is not None
        return b

    def honest_level(self, split: str, rule: str) -> float:
        """Mean score of the honest nodes in the honest-only run."""
        b = self.find(split, rule, None)
        return mean(b.honest_mean_score) if b else float("nan")


def evidence(o: Outcome, target: str, grid: Grid) -> str:
    base = grid.base(o)
    if target == "accuracy":
        return (
            f"{o.final_accuracy:.3f} vs {base.final_accuracy:.3f} honest-only "
            f"({(o.final_accuracy - base.final_accuracy) * 100:+.1f} points; per round {seq(o.accuracy_per_round, '{:.3f}')}"
            f" vs {seq(base.accuracy_per_round, '{:.3f}')})"
        )
    if target == "exclusion":
        late = [i for i, r in enumerate(o.rounds_to_exclusion) if r is None or r > EXCLUSION_ROUNDS]
        caught = len(o.rounds_to_exclusion) - len(late)
        worst = late[0]
        # A sybil attacker has one identity per comeback, each held to the target on its own.
        one, many = ("attacker identity", "attacker identities") if o.attack == SYBIL else ("attacker", "attackers")
        return (
            f"{len(late)} of {len(o.rounds_to_exclusion)} {many} not under the threshold in time"
            f"{f' ({caught} caught in time)' if caught else ''}; {one} {worst + 1}: reputation "
            f"{seq(o.attacker_reputation[worst])}, scores {seq(o.attacker_scores[worst])} (honest: {seq(o.honest_mean_score)})"
        )
    assert target == "payout"
    return (
        f"attackers earned {pct(o.attacker_payout_share)} of the payouts; their mean score per round "
        f"{seq(attacker_mean_scores(o))} (honest: {seq(o.honest_mean_score)})"
    )


def published_sentence(o: Outcome) -> str:
    """The sentence that describes what the attackers published (empty if nothing was measured)."""
    if not o.published:
        return ""
    p = o.published
    among = f", cosine among the attackers {seq(p['cos_among_attackers'])}" if any(x is not None for x in p["cos_among_attackers"]) else ""
    return (
        f"Published: cosine with the honest mean {seq(p['cos_to_honest_mean'])}, norm ratio {seq(p['norm_ratio'])}, "
        f"shift {seq(p['shift_std'])} std{among}."
    )


def is_honest_mean(o: Outcome) -> bool:
    """Whether the attackers published the honest mean itself (no shift, cosine ~1)."""
    p = o.published
    return bool(p) and all(abs(x) < 0.005 for x in p["shift_std"] if x is not None) and all(
        x > 0.995 for x in p["cos_to_honest_mean"] if x is not None
    )


def join_words(words: list[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
