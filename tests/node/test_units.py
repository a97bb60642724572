"""The packages that cannot import each other keep their own WAD; they must be the same unit."""

from aggregation.scores import WAD as AGGREGATION_WAD
from incentives.reputation import WAD as INCENTIVES_WAD
from node.units import ETHER, WAD


def test_every_package_uses_the_same_fixed_point_unit():
    assert WAD == AGGREGATION_WAD == INCENTIVES_WAD == 10**18
    assert ETHER == 10**18  # wei per ether: the same number, a different unit
