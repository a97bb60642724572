"""Fixed-point units shared by the chain, the contracts' mirror and the reports."""

#: 1.0 in the contracts' WAD fixed point (reputation, scores).
WAD = 10**18
#: One ether in wei.
ETHER = 10**18
