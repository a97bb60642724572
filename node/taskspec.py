"""What defines a task: the task spec JSON (pinned in IPFS, its CID on-chain) that tells every
node how to train, and the on-chain protocol parameters that `createTask` fixes.
Nodes read both; nothing in them is secret.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from node.errors import ConfigError

# On-chain rule ids. The contract stores a uint8; this is the one mapping.
RULE_IDS: dict[str, int] = {"fedavg": 0, "median": 1, "trimmed-mean": 2, "multi-krum": 3}
RULE_NAMES: dict[int, str] = {v: k for k, v in RULE_IDS.items()}
WAD = 10**18


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


@dataclass(frozen=True)
class TaskParams:
    """The protocol parameters of a task, as FedLedger's `createTask` takes them (SPEC §4)."""

    rounds: int = 3
    committee_size: int = 4  # K members per round, at most 64
    rule: str = "fedavg"
    rule_params: bytes = b"{}"  # rule options in canonical JSON, interpreted off-chain
    max_samples: int = 2**20
    commit_timeout: int = 3600  # seconds; each phase ends sooner once every member acted
    reveal_timeout: int = 3600
    propose_timeout: int = 3600  # after it, any staked node may propose
    attest_timeout: int = 3600  # the challenge window
    min_stake_wei: int = 0  # stake a node needs for a committee seat of this task
    reputation_threshold_wad: int = 2 * WAD // 10  # below it: no seat, no reward
    alpha_wad: int = 3 * WAD // 10  # weight of the newest score in the reputation EMA
    proposer_share_bps: int = 500  # of each round's payout, to the accepted proposer
    attester_share_bps: int = 500  # of each round's payout, split among agreeing attesters

    def validate(self) -> None:
        if self.rule not in RULE_IDS:
            raise ConfigError(f"unknown rule {self.rule!r}; known: {', '.join(RULE_IDS)}")
        if not 1 <= self.rounds < 2**32 - 1:
            raise ConfigError(f"rounds must be between 1 and {2**32 - 2}, got {self.rounds}")
        if not 1 <= self.committee_size <= 64:
            raise ConfigError(f"committee size must be between 1 and 64, got {self.committee_size}")
        for name in ("commit_timeout", "reveal_timeout", "propose_timeout", "attest_timeout"):
            if not 1 <= getattr(self, name) <= 30 * 86400:
                raise ConfigError(f"{name.replace('_', ' ')} must be between 1 s and 30 days")
        if not 0 <= self.reputation_threshold_wad <= WAD or not 0 <= self.alpha_wad <= WAD:
            raise ConfigError("reputation threshold and alpha must be between 0 and 1")
        if self.proposer_share_bps < 0 or self.attester_share_bps < 0 or self.proposer_share_bps + self.attester_share_bps > 10_000:
            raise ConfigError("proposer and attester shares must add up to at most 100%")

    def contract_args(self, model_cid: str, spec_cid: str) -> tuple[object, ...]:
        """The TaskConfig tuple of `createTask`; CIDs go on-chain as the UTF-8 bytes of their text."""
        return (
            model_cid.encode(), spec_cid.encode(), self.rule_params, self.rounds, self.committee_size,
            RULE_IDS[self.rule], self.max_samples, self.commit_timeout, self.reveal_timeout,
            self.propose_timeout, self.attest_timeout, self.min_stake_wei, self.reputation_threshold_wad,
            self.alpha_wad, self.proposer_share_bps, self.attester_share_bps,
        )  # fmt: skip
