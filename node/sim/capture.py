"""How likely an attacker is to capture a committee: the numbers behind the trust assumption.

The contract draws a round's committee of K seats uniformly, without replacement, from the N
nodes eligible for the task (one seat per node, whatever its stake beyond the task's minimum),
and accepts or rejects a proposal only with a strict majority (see `seats_to_capture`). An attacker
who runs M of the N eligible nodes (a fraction M/N of the eligible population; with every node at
the minimum stake, that is its fraction of the stake) captures a round when it holds enough seats
to decide that majority on its own.

Exact rational arithmetic: the probabilities are hypergeometric tails, and the binomial tail is the
limit of a large population.
"""

from __future__ import annotations

from fractions import Fraction
from math import comb


def seats_to_capture(k: int) -> int:
    """Seats an attacker needs, of a committee of `k` that all reveal, to decide a vote alone:
    more than half of the k seats. Rejecting (slashing) an honest proposer takes disagreeing
    voters that are more than half of the revealed members, the proposer's seat counted on its
    side; finalizing its own proposal takes its proposer plus more than half of the other k - 1
    seats, which is as many or more. So this is the conservative (smaller) count."""
    if k < 1:
        raise ValueError(f"committee size must be at least 1, got {k}")
    return k // 2 + 1


def capture_probability(k: int, attackers: int, population: int) -> Fraction:
    """P(an attacker holding `attackers` of `population` eligible nodes gets at least
    `seats_to_capture(k)` of `k` seats drawn uniformly without replacement)."""
    if not 0 <= attackers <= population or not 1 <= k <= population:
        raise ValueError(f"need 0 <= attackers <= population and 1 <= k <= population (k={k}, M={attackers}, N={population})")
    need = seats_to_capture(k)
    total = comb(population, k)
    hits = sum(comb(attackers, s) * comb(population - attackers, k - s) for s in range(need, min(k, attackers) + 1))
    return Fraction(hits, total)


def capture_probability_large(k: int, fraction: Fraction) -> Fraction:
    """The same in an unbounded population: a binomial tail with success probability `fraction`."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    need = seats_to_capture(k)
    return sum((comb(k, s) * fraction**s * (1 - fraction) ** (k - s) for s in range(need, k + 1)), Fraction(0))


def table(ks: list[int], fractions: list[Fraction], population: int | None) -> list[list[str]]:
    """Rows of a markdown table: one per attacker fraction, one column per committee size."""
    rows = []
    for f in fractions:
        row = [f"{float(f):.0%}"]
        for k in ks:
            if population is None:
                p = capture_probability_large(k, f)
            else:
                p = capture_probability(k, int(f * population), population)
            row.append(f"{float(p):.2e}" if p < Fraction(1, 1000) else f"{float(p):.3f}")
        rows.append(row)
    return rows


def markdown(ks: list[int], fractions: list[Fraction], population: int | None) -> str:
    head = "| attacker share | " + " | ".join(f"K={k} (needs {seats_to_capture(k)})" for k in ks) + " |"
    rule = "|---" * (len(ks) + 1) + "|"
    body = ["| " + " | ".join(row) + " |" for row in table(ks, fractions, population)]
    return "\n".join([head, rule, *body])
