"""Print the chance that an attacker captures a committee, for the trust-assumption tables in
docs/security.md:

    .venv/bin/python scripts/committee_capture.py            # unbounded population
    .venv/bin/python scripts/committee_capture.py --nodes 50  # 50 eligible nodes
"""

from __future__ import annotations

import argparse
from fractions import Fraction

from node.sim.capture import markdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=None, help="eligible nodes (default: unbounded)")
    parser.add_argument("--sizes", default="3,5,7,9,15,21", help="committee sizes, comma-separated")
    args = parser.parse_args()
    ks = [int(k) for k in args.sizes.split(",")]
    fractions = [Fraction(p, 100) for p in (5, 10, 20, 25, 30, 33, 40, 45)]
    print(markdown(ks, fractions, args.nodes))


if __name__ == "__main__":
    main()
