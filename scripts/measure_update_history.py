"""Cosines of honest updates with their senders' own earlier ones, against perturbed replays (#16).

    flock /tmp/bench.lock .venv/bin/python scripts/measure_update_history.py        # the table in docs/robustness-history.md
    .venv/bin/python scripts/measure_update_history.py --splits iid --rules median --nodes 4 --rounds 3   # a smoke run

The logic is node/sim/history.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.reproducible import pin_cpu_kernels  # noqa: E402

pin_cpu_kernels()  # before torch loads, as scripts/robustness.py does

from node.sim.history import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
