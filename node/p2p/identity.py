"""A node's persistent libp2p identity: one Ed25519 key in its data directory.

The peer ID derives from the public key, so keeping the key keeps the peer ID
that the node registered on-chain. The file holds the 32-byte private seed,
written atomically with mode 0600; a file of any other size is refused rather
than silently replaced (that would change the node's registered identity).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID

from node.errors import ConfigError

#: Where the key lives inside a node's data directory.
IDENTITY_FILE = Path("p2p") / "identity.ed25519"
_SEED_LEN = 32


def load_or_create_identity(data_dir: str | os.PathLike[str]) -> KeyPair:
    """The node's key pair from `data_dir`, created on first use."""
    path = Path(data_dir) / IDENTITY_FILE
    try:
        seed = path.read_bytes()
    except FileNotFoundError:
        private = Ed25519PrivateKey.new()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(private.to_bytes()[:_SEED_LEN])
                fh.flush()
                os.fsync(fh.fileno())
            # link, not replace: two processes creating at once must not end with two identities.
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
        seed = path.read_bytes()
    if len(seed) != _SEED_LEN:
        raise ConfigError(f"{path} holds {len(seed)} bytes, not a {_SEED_LEN}-byte Ed25519 seed; refusing to replace it")
    private = Ed25519PrivateKey.from_bytes(seed)
    return KeyPair(private, private.get_public_key())


def peer_id_of(key_pair: KeyPair) -> str:
    """The base58 peer ID ("12D3KooW...") of a key pair."""
    return ID.from_pubkey(key_pair.public_key).to_base58()
