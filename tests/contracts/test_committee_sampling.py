"""The committee draw is a uniform sample of the eligible nodes, so the trust assumption's
numbers (docs/security.md, node/sim/capture.py) hold for the contract as deployed.

Exploit (found while writing those numbers): with at most 2K eligible nodes the draw took K
*consecutive* entries of the active list from a random offset. Nodes that register one after
another sit next to each other in that list, so a pair of colluders shared a committee of 3 out
of 6 nodes in 1/3 of the draws instead of the 1/5 a uniform draw gives, and only 6 of the 20
possible committees could ever be drawn.
"""

from __future__ import annotations

from collections import Counter
from math import comb, sqrt

from ledger_harness import TaskConfig

DRAWS = 150


def _draw_many(chain, proto, nodes, committee_size):
    owner = chain.accounts[0]
    seen = []
    for _ in range(DRAWS):
        task = proto.create_task(owner, TaskConfig(committee_size=committee_size, rounds=1), reward=10**9)
        chain.mine()  # the seed block must be in the past
        seen.append(frozenset(proto.draw(task)))
    return seen


def test_a_small_population_is_sampled_uniformly_not_by_a_window(chain, proto):
    nodes = chain.accounts[1:7]
    proto.register(nodes)  # registered one after another: neighbours in the active list
    colluders = set(nodes[:2])
    committees = _draw_many(chain, proto, nodes, 3)

    assert all(len(c) == 3 for c in committees)
    # A uniform draw reaches every one of the C(6,3) = 20 committees (each is missed by 150
    # draws with probability (19/20)^150 < 1e-3); a window reaches only 6.
    assert len(set(committees)) >= 15, f"only {len(set(committees))} distinct committees in {DRAWS} draws"
    # Both colluders seated: C(4,1)/C(6,3) = 1/5 under a uniform draw; 4 standard deviations.
    both = sum(1 for c in committees if colluders <= c) / DRAWS
    expected = comb(4, 1) / comb(6, 3)
    assert abs(both - expected) < 4 * sqrt(expected * (1 - expected) / DRAWS), both


def test_every_node_is_seated_about_equally_often(chain, proto):
    nodes = chain.accounts[1:9]
    proto.register(nodes)
    seats = Counter(n for c in _draw_many(chain, proto, nodes, 3) for n in c)
    # Each of 8 nodes expects 150 * 3/8 = 56 seats; allow for chance, not for a bias.
    assert all(30 <= seats[n] <= 85 for n in nodes), seats
