"""The names of the attacks a malicious node can play, without importing the attacks.

`fedledger --help` lists them, and must not pay for numpy and torch to do so;
`node.sim.attacks` checks at import that its tables define exactly these names.
"""

from __future__ import annotations

# Attacks on the model: a wrapper on the node's training data or on the update it publishes.
MODEL_ATTACKS: frozenset[str] = frozenset({
    "sign-flip", "gaussian", "scaling", "label-flip", "little-is-enough",
    "free-rider-zero", "free-rider-stale", "free-rider-copy", "free-rider-perturbed", "sybil",
})  # fmt: skip
# Attacks on the protocol: the node trains honestly but misbehaves in its on-chain role.
PROTOCOL_ATTACKS: frozenset[str] = frozenset({"bad-proposer", "slander"})
KNOWN_KINDS: frozenset[str] = MODEL_ATTACKS | PROTOCOL_ATTACKS
