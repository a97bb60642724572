"""deployment.json: where a FedLedger deployment lives (SPEC §9)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.errors import ConfigError


@dataclass
class Deployment:
    chain_id: int
    rpc: str | None  # None for the embedded, in-process chain
    contracts: dict[str, str] = field(default_factory=dict)  # contract name -> checksum address
    block_number: int | None = None  # block of the deployment transaction; log scans start here

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"chain_id": self.chain_id, "rpc": self.rpc, "contracts": dict(self.contracts)}
        if self.block_number is not None:
            out["block_number"] = self.block_number
        return out

    def save(self, path: str | Path) -> None:
        """Write atomically, so an interrupted deploy never leaves half a file."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=".deployment-")
        with os.fdopen(fd, "w") as f:
            json.dump(self.to_json(), f, indent=2)
            f.write("\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> "Deployment":
        try:
            raw = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"deployment file {path} does not exist") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"deployment file {path} is not valid JSON: {exc}") from None
        try:
            contracts = raw["contracts"]
            if not isinstance(contracts, dict) or "FedLedger" not in contracts:
                raise KeyError("contracts.FedLedger")
            return cls(
                chain_id=int(raw["chain_id"]),
                rpc=raw.get("rpc"),
                contracts={str(k): str(v) for k, v in contracts.items()},
                block_number=raw.get("block_number"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"deployment file {path} lacks a valid field {exc}") from None
