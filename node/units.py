"""Units the node shares across its modules: one definition each.

The `aggregation` and `incentives` packages do not import `node`, so each keeps its own WAD;
tests/node/test_units.py checks that all three agree.
"""

#: 1.0 in the contracts' fixed point (scores, reputation).
WAD = 10**18
#: One ether in wei.
ETHER = 10**18
