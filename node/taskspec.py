"""What defines a task: the task spec JSON (pinned in IPFS, its CID on-chain) that tells every
node how to train, and the on-chain protocol parameters that `createTask` fixes.
Nodes read both; nothing in them is secret.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from node.errors import ConfigError
from node.units import WAD

if TYPE_CHECKING:
    from aggregation import RuleOptions

# On-chain rule ids. The contract stores a uint8; this is the one mapping.
RULE_IDS: dict[str, int] = {"fedavg": 0, "median": 1, "trimmed-mean": 2, "multi-krum": 3}
RULE_NAMES: dict[int, str] = {v: k for k, v in RULE_IDS.items()}
# The contract's largest committee (FedLedger.MAX_COMMITTEE).
MAX_COMMITTEE = 64

# What any spec may ask, whatever a node's own limits ([tasks] in node.toml) are: a spec is
# written by whoever created the task, so every field is checked for type and range.
SPEC_MAX_BYTES = 64 * 1024  # the spec file itself
SPEC_LIMITS: dict[str, tuple[int, int]] = {
    "epochs": (1, 10_000),
    "batch_size": (1, 2**20),
    "max_samples": (1, 2**96 - 1),  # the contract's numSamples range
    "max_update_bytes": (1, 2**32),  # what the node assembles in memory (node/storage/unixfs.py)
}
MAX_LR = 1000.0


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class TaskSpec:
    model: str = "digits-mlp"
    rule: str = "fedavg"
    epochs: int = 5  # local epochs per round
    batch_size: int = 32
    lr: float = 0.05
    max_samples: int = 2**20  # fedavg/multi-krum weight cap per update; also 5x the round median (aggregation.fedavg)
    max_update_bytes: int = 64 * 2**20  # larger updates are rejected unread
    # Rule options (SPEC §5); which ones a rule takes is checked by aggregation.rules.
    trim: float | None = None  # trimmed-mean: fraction cut from each end of every coordinate
    f: int | None = None  # multi-krum: assumed Byzantine updates
    m: int | None = None  # multi-krum: updates averaged
    clip: float | None = None  # any rule: L2 norm bound applied to each update first
    # The app (#15): a REF to the user's code (file.py:attr or package.module:attr: a Flower
    # ClientApp or a FedLedger app); None: the built-in app `model` names.
    app: str | None = None
    run_config: dict[str, int | float | str | bool] | None = None  # Flower's context.run_config
    # The model every update must fit: [name, shape, dtype] per tensor, in state-dict order.
    params: list[list] | None = None

    def check(self) -> None:
        """ConfigError unless every field has its type and range, the rule is known and its
        options fit it."""
        from aggregation import AggregationError
        from aggregation.rules import check_options

        if not isinstance(self.model, str) or not 0 < len(self.model) <= 64:
            raise ConfigError(f"task spec: model must be a model name, not {str(self.model)[:64]!r}")
        for name, (low, high) in SPEC_LIMITS.items():
            value = getattr(self, name)
            if not _is_int(value) or not low <= value <= high:
                raise ConfigError(f"task spec: {name} must be an integer in [{low}, {high}], not {str(value)[:64]}")
        if not isinstance(self.lr, (int, float)) or isinstance(self.lr, bool) or not 0 < self.lr <= MAX_LR:
            raise ConfigError(f"task spec: lr must be a number in (0, {MAX_LR:g}], not {str(self.lr)[:64]}")
        if not math.isfinite(self.lr):
            raise ConfigError("task spec: lr must be finite")
        self._check_app()
        if not isinstance(self.rule, str) or self.rule not in RULE_IDS:
            raise ConfigError(f"unknown rule {self.rule!r}; known: {', '.join(RULE_IDS)}")
        try:
            check_options(self.rule, self.rule_options())
        except AggregationError as exc:
            raise ConfigError(str(exc)) from None

    def _check_app(self) -> None:
        if self.app is not None and (not isinstance(self.app, str) or not 0 < len(self.app) <= 256 or ":" not in self.app):
            raise ConfigError(f"task spec: app must be a REF (file.py:attr or package.module:attr), not {str(self.app)[:64]!r}")
        if self.run_config is not None:
            if not isinstance(self.run_config, dict) or len(self.run_config) > 256:
                raise ConfigError("task spec: run_config must be an object of at most 256 keys")
            for key, value in self.run_config.items():
                if not isinstance(value, (int, float, str, bool)) or len(key) > 64 or len(str(value)) > 256:
                    raise ConfigError(f"task spec: run_config {str(key)[:64]!r} must be a number, string or boolean")
                if isinstance(value, float) and not math.isfinite(value):
                    raise ConfigError(f"task spec: run_config {key!r} must be finite")
        if self.params is not None:
            from aggregation.dtypes import MODEL_DTYPES

            if not isinstance(self.params, list) or not 0 < len(self.params) <= 4096:
                raise ConfigError("task spec: params must be a list of at most 4096 [name, shape, dtype]")
            for entry in self.params:
                ok = (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str) and 0 < len(entry[0]) <= 256
                      and isinstance(entry[1], list) and len(entry[1]) <= 8
                      and all(_is_int(d) and 0 <= d < 2**31 for d in entry[1]) and entry[2] in MODEL_DTYPES)  # fmt: skip
                if not ok:
                    raise ConfigError(f"task spec: each params entry must be [name, shape, dtype], not {str(entry)[:80]}")
            if len({e[0] for e in self.params}) != len(self.params):
                raise ConfigError("task spec: params names must be distinct")

    def pinned(self) -> dict[str, tuple[tuple[int, ...], str]] | None:
        """The model's tensors the spec pins, by name: (shape, dtype); None if it pins none."""
        if self.params is None:
            return None
        return {name: (tuple(shape), dtype) for name, shape, dtype in self.params}

    def rule_options(self) -> "RuleOptions":
        """The options every verifier passes to the rule: part of the content-addressed spec,
        so no node can aggregate with other parameters than the task's."""
        from aggregation import RuleOptions

        return RuleOptions(
            max_samples=self.max_samples if self.rule in ("fedavg", "multi-krum") else None,
            trim=self.trim, f=self.f, m=self.m, clip=self.clip,
        )  # fmt: skip

    def to_bytes(self) -> bytes:
        """Canonical JSON, so the same spec always has the same CID (unset options are left out,
        which keeps the CIDs of specs written before they existed)."""
        fields = {k: v for k, v in asdict(self).items() if v is not None}
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "TaskSpec":
        if len(data) > SPEC_MAX_BYTES:
            raise ConfigError(f"task spec is {len(data)} bytes, more than {SPEC_MAX_BYTES}")
        try:
            raw = json.loads(data)
            if not isinstance(raw, dict):
                raise TypeError(f"a JSON object is expected, not {type(raw).__name__}")
            spec = cls(**raw)
        except (ValueError, TypeError, RecursionError) as exc:  # RecursionError: deeply nested JSON
            raise ConfigError(f"task spec is not valid: {str(exc)[:200]}") from None
        spec.check()
        return spec


def spec_for_rule(
    rule: str,
    committee: int,
    *,
    trim: float | None = None,
    f: int | None = None,
    m: int | None = None,
    clip: float | None = None,
    **fields: object,
) -> TaskSpec:
    """A task spec for `rule` with its options filled in where the caller left them out:
    trimmed-mean cuts 20% from each end (Flower's default beta); multi-krum assumes the
    most Byzantine updates Krum tolerates among `committee` (f = (K - 3) // 2, Blanchard
    et al. need K > 2f + 2) and averages the K - f best."""
    if rule == "trimmed-mean" and trim is None:
        trim = 0.2
    if rule == "multi-krum":
        f = max(0, (committee - 3) // 2) if f is None else f
        m = max(1, committee - f) if m is None else m
    spec = TaskSpec(rule=rule, trim=trim, f=f, m=m, clip=clip, **fields)  # type: ignore[arg-type]
    spec.check()
    return spec


@dataclass(frozen=True)
class TaskParams:
    """The protocol parameters of a task, as FedLedger's `createTask` takes them (SPEC §4)."""

    rounds: int = 3
    committee_size: int = 4  # K members per round, at most MAX_COMMITTEE
    rule: str = "fedavg"
    rule_params: bytes = b"{}"  # rule options in canonical JSON, interpreted off-chain
    max_samples: int = 2**20
    commit_timeout: int = 3600  # seconds; each phase ends sooner once every member acted
    reveal_timeout: int = 3600
    propose_timeout: int = 3600  # after it, any staked node may propose
    attest_timeout: int = 3600  # the challenge window
    min_stake_wei: int = 0  # stake a node needs for a committee seat of this task
    reputation_threshold_wad: int = 2 * WAD // 10  # below it: no seat, no reward
    alpha_wad: int = 4 * WAD // 10  # weight of the newest score in the reputation EMA
    proposer_share_bps: int = 500  # of each round's payout, to the accepted proposer
    attester_share_bps: int = 500  # of each round's payout, split among agreeing attesters
    # Fewest eligible nodes a draw seats; with fewer the round waits (FedLedger reverts the draw).
    # None: 3, or the committee size if smaller (a proposer and two nodes that check it).
    min_committee: int | None = None

    @property
    def effective_min_committee(self) -> int:
        """The minimum committee `createTask` gets."""
        return min(3, self.committee_size) if self.min_committee is None else self.min_committee

    def validate(self) -> None:
        if self.rule not in RULE_IDS:
            raise ConfigError(f"unknown rule {self.rule!r}; known: {', '.join(RULE_IDS)}")
        if not 1 <= self.rounds < 2**32 - 1:
            raise ConfigError(f"rounds must be between 1 and {2**32 - 2}, got {self.rounds}")
        if not 1 <= self.committee_size <= MAX_COMMITTEE:
            raise ConfigError(f"committee size must be between 1 and {MAX_COMMITTEE}, got {self.committee_size}")
        for name in ("commit_timeout", "reveal_timeout", "propose_timeout", "attest_timeout"):
            if not 1 <= getattr(self, name) <= 30 * 86400:
                raise ConfigError(f"{name.replace('_', ' ')} must be between 1 s and 30 days")
        if not 0 <= self.reputation_threshold_wad <= WAD or not 0 <= self.alpha_wad <= WAD:
            raise ConfigError("reputation threshold and alpha must be between 0 and 1")
        if self.proposer_share_bps < 0 or self.attester_share_bps < 0 or self.proposer_share_bps + self.attester_share_bps > 10_000:
            raise ConfigError("proposer and attester shares must add up to at most 100%")
        if not 1 <= self.effective_min_committee <= self.committee_size:
            raise ConfigError(f"minimum committee must be between 1 and the committee size, got {self.min_committee}")

    def contract_args(self, model_cid: str, spec_cid: str) -> tuple[object, ...]:
        """The TaskConfig tuple of `createTask`; CIDs go on-chain as the UTF-8 bytes of their text."""
        return (
            model_cid.encode(), spec_cid.encode(), self.rule_params, self.rounds, self.committee_size,
            RULE_IDS[self.rule], self.max_samples, self.commit_timeout, self.reveal_timeout,
            self.propose_timeout, self.attest_timeout, self.min_stake_wei, self.reputation_threshold_wad,
            self.alpha_wad, self.proposer_share_bps, self.attester_share_bps, self.effective_min_committee,
        )  # fmt: skip
