"""The task spec: the JSON document (pinned in IPFS, its CID on-chain) that tells
every node how to train for a task. Nodes read it; nothing in it is secret.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from node.errors import ConfigError

# On-chain rule ids. The contract stores a uint8; this is the one mapping.
RULE_IDS: dict[str, int] = {"fedavg": 0, "median": 1, "trimmed-mean": 2, "multi-krum": 3}


@dataclass(frozen=True)
class TaskSpec:
    model: str = "digits-mlp"
    rule: str = "fedavg"
    epochs: int = 5  # local epochs per round
    batch_size: int = 32
    lr: float = 0.05
    max_samples: int = 2**20  # fedavg weight cap per update (SPEC §5)
    max_update_bytes: int = 64 * 2**20  # larger updates are rejected unread

    def to_bytes(self) -> bytes:
        """Canonical JSON, so the same spec always has the same CID."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "TaskSpec":
        try:
            raw = json.loads(data)
            spec = cls(**raw)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"task spec is not valid: {exc}") from None
        if spec.rule not in RULE_IDS:
            raise ConfigError(f"task spec names unknown rule {spec.rule!r}")
        return spec
