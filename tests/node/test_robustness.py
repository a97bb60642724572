"""The robustness experiment, at a size CI can afford (the full grid is scripts/robustness.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import robustness  # noqa: E402

pytestmark = pytest.mark.slow


def test_robust_rules_catch_and_starve_attackers(tmp_path):
    code = robustness.main([
        "--quick", "--rules", "median", "--attacks", "sign-flip", "free-rider-zero", "gaussian",
        "--out", str(tmp_path),
    ])  # fmt: skip

    assert code == 0
    results = json.loads((tmp_path / "robustness" / "results.json").read_text())
    table = (tmp_path / "robustness.md").read_text()
    assert "| median | sign-flip |" in table and (tmp_path / "robustness" / "final_accuracy-iid.png").exists()
    by_attack = {row["attack"]: row for row in results}
    for attack in ("sign-flip", "free-rider-zero", "gaussian"):
        # The median leaves these attackers next to nothing to be credited for...
        assert by_attack[attack]["attacker_payout_share"] <= 0.05, by_attack[attack]
    for attack in ("sign-flip", "free-rider-zero"):
        # ...and drives the ones that score 0 under the threshold within 3 rounds. (Gaussian
        # noise keeps a small positive cosine, so it decays more slowly: see docs/robustness.md.)
        assert all(r is not None and r <= 3 for r in by_attack[attack]["rounds_to_exclusion"]), by_attack[attack]
    assert by_attack[None]["final_accuracy"] > 0.7
