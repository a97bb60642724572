"""One node's part in a round: the only implementation of the protocol (SPEC §4).

- `node.py`: `ProtocolNode.step(task)` reads the task's round from the chain and takes at most
  one action: draw the committee, train-pin-commit, reveal, propose, attest (by recomputing the
  round), finalize, or nudge an expired phase forward;
- `recompute.py`: `recompute_round`, the recomputation a proposer posts, every attester checks
  and `fedledger verify` compares;
- `behaviour.py`: what a node decides (`Behaviour`; attacks in node/sim/attacks.py are
  behaviours), what may watch it (`Observer`), and what it knows meanwhile (`RoundView`);
- `seeds.py`: training seeds and simulated salts, derived the same way in every mode.

Everything that runs the protocol drives `ProtocolNode`: the daemon (node/daemon/loop.py)
steps one node in a loop; the simulator (node/sim/simulate.py) steps N nodes on one chain in one
process. The names below are re-exported so that `from node.protocol import X` names the
protocol's public surface.
"""

from node.protocol.behaviour import Behaviour, Delta, Observer, RoundView
from node.protocol.node import HOLD_BEFORE_PROPOSE, ProtocolNode
from node.protocol.recompute import (
    Fetch, RoundResult, UnavailableError, fetch_available, fetch_each, fetch_update, recompute_round,
)  # fmt: skip
from node.protocol.seeds import derive_seed, node_seed, seeded_salt, train_seed

__all__ = [
    "HOLD_BEFORE_PROPOSE", "Behaviour", "Delta", "Fetch", "Observer", "ProtocolNode", "RoundResult", "RoundView",
    "UnavailableError", "derive_seed", "fetch_available", "fetch_each", "fetch_update", "node_seed",
    "recompute_round", "seeded_salt", "train_seed",
]  # fmt: skip
