"""Compiled contract artifacts (ABI + bytecode) committed under contracts/artifacts/."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from node.errors import ConfigError

ARTIFACTS_DIR = Path(__file__).resolve().parents[2] / "contracts" / "artifacts"


@lru_cache(maxsize=None)
def load_artifact(name: str) -> dict[str, Any]:
    """The artifact JSON of contract `name` (keys: abi, bytecode, ...)."""
    path = ARTIFACTS_DIR / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"contract artifact {path} is missing; run `node scripts/compile_contracts.mjs`") from None
