"""Per-task announcements over gossipsub: who holds which update or proposal, from registered peers only.

An announcement is a hint, never a fact: the chain is the source of truth for
which CIDs were revealed and proposed (SPEC §7). A node that misses one still
learns the CID from the chain and fetches it from any registered peer, so a
lost message costs latency, never correctness. Announcements are idempotent
(keyed by task, round, kind, CID and sender), so publishers may repeat them
freely and receivers dedupe.

Kinds: "update" (a revealed update), "proposal" (an aggregate), "model" (a
finalized global model) name content the sender holds. "committing",
"revealing" and "proposing" name none (their CID is empty): "round `round` of
the task has moved into that phase, look at the chain". A committed update's
CID is never announced: it is secret until the reveal, which is what the
commitment is for.

Gossipsub drops silently at py-libp2p's defaults (DEPENDENCIES.md): per-topic
spam protection passes 10 msg/s, a 32-slot outbound queue drops bursts, and an
undrained subscription drops past 32. `P2PNode` therefore turns spam
protection off (only registered peers are accepted anyway), paces its own
publishes, and drains each subscription at once into a large local queue.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass

from node.storage.cid import parse_cid

#: Prefix of every task's topic; the task ID follows.
TOPIC_PREFIX = "/fedledger/task/"
#: Kinds that carry no content, only "the round has moved into this phase": their CID is "".
PHASE_KINDS = frozenset({"committing", "revealing", "proposing"})
_KINDS = frozenset({"update", "proposal", "model"}) | PHASE_KINDS
_MAX_MESSAGE = 1024


def topic_for_task(task_id: int) -> str:
    """The gossipsub topic of one task."""
    if task_id < 0:
        raise ValueError(f"task id must be >= 0, got {task_id}")
    return f"{TOPIC_PREFIX}{task_id}"


@dataclass(frozen=True)
class Announcement:
    """"Peer `sender` holds `cid`, its `kind` for `task` round `round`." `sender` is set on receipt."""

    task: int
    round: int
    kind: str  # "update" (a revealed update), "proposal" (an aggregate), "model" (a global model), or a phase
    cid: str  # "" for a phase kind
    sender: str = ""  # the signed originator's peer ID; ignored when encoding

    def encode(self) -> bytes:
        body = {k: v for k, v in asdict(self).items() if k != "sender"}
        return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes, sender: str) -> "Announcement":
        """Parse and validate a message body; raise ValueError on anything malformed."""
        if len(data) > _MAX_MESSAGE:
            raise ValueError(f"announcement of {len(data)} bytes is too long")
        body = json.loads(data)
        if not isinstance(body, dict) or set(body) != {"task", "round", "kind", "cid"}:
            raise ValueError("announcement must have exactly task, round, kind, cid")
        task, round_, kind, cid = body["task"], body["round"], body["kind"], body["cid"]
        if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in (task, round_)):
            raise ValueError("task and round must be non-negative integers")
        if kind not in _KINDS:
            raise ValueError(f"unknown announcement kind {kind!r}")
        if kind in PHASE_KINDS:
            if cid != "":
                raise ValueError(f"a {kind!r} announcement names no CID")
            return cls(task, round_, kind, "", sender)
        return cls(task, round_, kind, str(parse_cid(cid)), sender)


def accept(is_registered: Callable[[str], bool], sender: str, data: bytes, task_id: int) -> Announcement | None:
    """The announcement in `data` if its signed sender is a registered node and it is well-formed for this task.

    This is the topic validator: anything it rejects is dropped and not relayed.
    """
    try:
        if not is_registered(sender):
            return None
        ann = Announcement.decode(data, sender)
    except Exception:  # a malformed message or a failing registry lookup: drop, never crash the router
        return None
    return ann if ann.task == task_id else None
