"""Slither finds nothing of high or medium impact in FedLedger, and only the documented lows.

Runs contracts/tools/slither.sh (its own venv, our pinned solc-js); ~15 s once installed.
Run: .venv/bin/pytest -m slow tests/contracts/test_slither.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Accepted in contracts/README.md ("Slither"), each with its reason.
ACCEPTED = {"timestamp", "assembly", "low-level-calls"}

pytestmark = pytest.mark.slow


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not on PATH")
def test_slither_reports_no_high_or_medium_finding() -> None:
    # Execute
    proc = subprocess.run(
        ["bash", "contracts/tools/slither.sh", "--json", "-"], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    # Assert
    report = json.loads(proc.stdout)
    assert report["success"], report.get("error") or proc.stderr[-2000:]
    findings = report["results"].get("detectors", [])
    serious = [f"{f['check']} ({f['impact']}): {f['description']}" for f in findings if f["impact"] in ("High", "Medium")]
    assert serious == []
    assert {f["check"] for f in findings} <= ACCEPTED
