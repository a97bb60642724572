"""Write one node's share of the digits training set as an .npz a daemon reads ([data] path).

For trying the operator's path (README, "Running nodes for real") without data of your own:

    .venv/bin/python scripts/digits_shard.py 1 3 node1/data.npz   # shard 1 of 3
    .venv/bin/python scripts/digits_shard.py 2 3 node2/data.npz

Shards are disjoint, IID, of the same seeded train split `fedledger simulate` uses.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def main(argv: list[str]) -> int:
    try:
        index, count, out = int(argv[0]), int(argv[1]), Path(argv[2])
        if not 1 <= index <= count:
            raise ValueError
    except (IndexError, ValueError):
        print("usage: digits_shard.py INDEX COUNT OUT.npz  (1 <= INDEX <= COUNT)", file=sys.stderr)
        return 2
    from node.training import load_digits_split

    train, _test = load_digits_split(seed=0)
    shard = train.subset(np.arange(index - 1, len(train), count))
    np.savez(out, x=shard.x, y=shard.y)
    print(f"wrote {out}: {len(shard)} samples of {shard.x.shape[1]} features")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
