"""What a node may decide and what may watch it: `Behaviour` (what it publishes, proposes and
votes; the honest one changes nothing), `Observer` (a public hook for experiments and reports),
and `RoundView`, what a node can know while it decides.

Attacks (node/sim/attacks.py) are behaviours, so the same attack runs in-process and in a daemon.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Sequence

import numpy as np

from aggregation import decode_model, decode_update, layout
from node.abc import Trainer
from node.chain.types import RoundUpdate
from node.protocol.recompute import RoundResult, fetch_each
from node.protocol.seeds import train_seed

if TYPE_CHECKING:
    from node.protocol.node import ProtocolNode

Delta = dict[str, np.ndarray]


class RoundView:
    """What a node can know while it acts in a round, read lazily: the committee, its own
    training, the updates revealed in the previous round, and its own earlier updates."""

    def __init__(self, node: "ProtocolNode", task: int, round_: int) -> None:
        self.node = node
        self.task = task
        self.round = round_
        self.address = node.me
        self.rng = np.random.default_rng(train_seed(node.seed, task, round_) ^ 0x5EED)

    @cached_property
    def base_cid(self) -> str:
        return self.node.client.global_model(self.task)[0]

    @cached_property
    def base(self) -> dict[str, np.ndarray]:
        """The global model this round trains from."""
        node = self.node
        blob = node.fetch(self.base_cid, [node.owner(self.task)], max_bytes=node.spec(self.task).max_update_bytes)
        return decode_model(blob, node.spec(self.task).max_update_bytes)[0]

    @cached_property
    def trained(self) -> Delta:
        """What this node's training produced this round (before its behaviour's say)."""
        return self.node.train(self.task, self.round, lambda: self.base)

    def decode(self, blob: bytes) -> Delta | None:
        """An update's tensors if `blob` is a valid update of this task's model, else None."""
        shapes = {k: v.shape for k, v in self.base.items()}
        try:
            update = decode_update(
                blob, expected=shapes, max_bytes=self.node.spec(self.task).max_update_bytes, dtypes=layout(self.base)
            )
        except Exception:  # invalid: nothing to learn from it
            return None
        return dict(update.tensors)

    @cached_property
    def committee(self) -> list[str]:
        return self.node.client.committee(self.task, self.round)

    @cached_property
    def revealed_last_round(self) -> list[Delta]:
        """The other nodes' updates revealed in the previous round, in reveal order (commit-reveal
        hides this round's until every commitment is in)."""
        if self.round <= 1:
            return []
        earlier = [u for u in self.node.client.round_updates(self.task, self.round - 1) if u.sender != self.address]
        out = []
        for blob in fetch_each(self.node.fetch, earlier, max_bytes=self.node.spec(self.task).max_update_bytes):
            delta = self.decode(blob)
            if delta is not None:
                out.append(delta)
        return out

    @cached_property
    def own_previous(self) -> Delta | None:
        """The update this node published most recently before this round, if any."""
        for r in range(self.round - 1, 0, -1):
            action = self.node.journal.get(self.task, r, "commit")
            if action is not None:
                try:
                    return self.decode(self.node.storage.get(action.payload["cid"]))
                except Exception:  # no longer held locally
                    return None
        return None


class Behaviour:
    """An honest node: publishes what it trained, proposes what it computed, votes what it saw.
    Attacks override one or more of these (node/sim/attacks.py)."""

    role = "honest"

    def joined(self, node: "ProtocolNode") -> None:
        """Called once by the node this behaviour drives."""

    def trainer(self, trainer: Trainer) -> Trainer:
        """The trainer this node uses, built from its honest one (data poisoning wraps it)."""
        return trainer

    def publish(self, trained: Delta, view: RoundView) -> Delta:
        """The delta to publish this round, given what training produced."""
        return trained

    def propose(self, honest: RoundResult, view: RoundView, updates: Sequence[RoundUpdate]) -> RoundResult:
        """The proposal to post as proposer, given the honest recomputation."""
        return honest

    def vote(self, agree: bool, proposer: str, view: RoundView) -> bool:
        """The attestation to send, given whether the proposal matches the recomputation."""
        return agree


class Observer:
    """A public hook on what nodes do, for experiments and reports (no effect on the protocol).
    Subclasses override what they want to see."""

    def published(self, node: str, role: str, task: int, round_: int, trained: Delta, published: Delta) -> None:
        """`node` (playing `role`) trained `trained` and published `published` for the round."""

    def acted(self, node: "ProtocolNode", task: int, action: str) -> None:
        """`node` took a protocol step on `task`; `action` says what it did (ProtocolNode.step)."""
