"""The trust-assumption numbers: hypergeometric tails, checked against brute force."""

from __future__ import annotations

from fractions import Fraction
from itertools import combinations

import pytest

from node.sim.capture import capture_probability, capture_probability_large, markdown, seats_to_capture


@pytest.mark.parametrize(("k", "need"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4), (21, 11)])
def test_seats_to_capture_is_a_strict_majority_of_the_committee(k, need):
    assert seats_to_capture(k) == need
    assert need * 2 > k and (need - 1) * 2 <= k


@pytest.mark.parametrize(("k", "attackers", "population"), [(3, 2, 7), (5, 3, 9), (4, 4, 8), (3, 0, 5), (5, 5, 5)])
def test_the_tail_matches_counting_every_committee(k, attackers, population):
    nodes = range(population)
    committees = list(combinations(nodes, k))
    captured = sum(1 for c in committees if sum(1 for n in c if n < attackers) >= seats_to_capture(k))
    assert capture_probability(k, attackers, population) == Fraction(captured, len(committees))


def test_a_large_population_tends_to_the_binomial():
    k, f = 7, Fraction(1, 4)
    big = capture_probability(k, 250_000, 1_000_000)
    assert abs(float(big - capture_probability_large(k, f))) < 1e-4
    # Bigger committees are safer against a minority, riskier against a majority.
    assert capture_probability_large(21, f) < capture_probability_large(7, f) < capture_probability_large(3, f)
    assert capture_probability_large(21, Fraction(3, 5)) > capture_probability_large(3, Fraction(3, 5))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        capture_probability(3, 5, 4)
    with pytest.raises(ValueError):
        capture_probability_large(3, Fraction(3, 2))


def test_the_table_has_a_row_per_share_and_a_column_per_size():
    text = markdown([3, 5], [Fraction(1, 10), Fraction(1, 5)], None)
    lines = text.splitlines()
    assert len(lines) == 4 and lines[0].count("K=") == 2
    assert lines[2].startswith("| 10% | 0.028 |")
