"""The robustness experiment (node/sim/robustness.py): the full grid, or any part of it.

    .venv/bin/python scripts/robustness.py                 # full grid -> docs/robustness.md + docs/robustness/
    .venv/bin/python scripts/robustness.py --render-only   # rewrite the report from docs/robustness/results.json
    .venv/bin/python scripts/robustness.py --quick         # a small grid, for a smoke run
    .venv/bin/python scripts/robustness.py --merge --splits dirichlet-0.1   # add cells to the committed grid
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.reproducible import pin_cpu_kernels  # noqa: E402

pin_cpu_kernels()  # before torch loads: the report's numbers are then the same on any x86-64 CPU

from node.sim.robustness import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
