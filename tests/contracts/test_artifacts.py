"""The committed contract artifacts are exactly what the pinned compiler makes of the committed sources."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = sorted((ROOT / "contracts" / "artifacts").glob("*.json"))


def test_there_are_artifacts() -> None:
    assert {p.stem for p in ARTIFACTS} >= {"FedLedger", "ReentrantWithdrawer"}


@pytest.mark.parametrize("path", ARTIFACTS, ids=lambda p: p.stem)
def test_source_hash_matches_source(path: Path) -> None:
    # Prepare
    artifact = json.loads(path.read_text())
    source = ROOT / artifact["sourcePath"]
    # Assert
    assert hashlib.sha256(source.read_bytes()).hexdigest() == artifact["sourceHash"]
    assert artifact["compiler"] == "0.8.37"
    assert artifact["evmVersion"] == "cancun"  # py-evm cannot run solc's default (osaka)
    assert artifact["bytecode"].startswith("0x") and len(artifact["bytecode"]) > 2
    assert artifact["testOnly"] == ("/test/" in artifact["sourcePath"])


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not on PATH")
def test_recompiling_reproduces_committed_artifacts() -> None:
    # Execute
    result = subprocess.run(
        ["node", "scripts/compile_contracts.mjs", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Assert
    assert result.returncode == 0, result.stderr
