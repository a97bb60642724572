"""`fedledger node init`: a new node directory with a config, a key and an identity."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account

from node.chain.deployment import Deployment
from node.daemon.config import write_template
from node.errors import ConfigError
from node.keys import write_keystore
from node.p2p.identity import load_or_create_identity, peer_id_of


DEFAULT_RPC = "http://127.0.0.1:8545"  # `fedledger testnet`'s


@dataclass(frozen=True)
class InitResult:
    directory: Path
    config: Path
    keystore: Path
    address: str
    peer_id: str


def init_node_dir(
    directory: str | Path, password: str, rpc: str | None = None, deployment: str | Path | None = None
) -> InitResult:
    """Create `directory` with node.toml, an encrypted keystore for a fresh key,
    and the node's libp2p identity. With `deployment` (a deployment.json), node.toml points at
    it, and at its chain unless `rpc` names another.

    Refuses to touch a directory that already holds a config or a keystore, so
    an existing node's key can never be overwritten by a second init."""
    directory = Path(directory)
    written = "deployment.json"
    if deployment is not None:
        found = Deployment.load(deployment)  # one line if it is missing or malformed
        rpc = rpc or found.rpc
        # Relative to the config's directory, as node.toml reads it: the pair can move together.
        written = os.path.relpath(Path(deployment).resolve(), directory.resolve())
    rpc = rpc or DEFAULT_RPC
    config, keystore = directory / "node.toml", directory / "keystore.json"
    for existing in (config, keystore):
        if existing.exists():
            raise ConfigError(f"{existing} already exists; refusing to overwrite a node's files")
    if len(password) < 8:
        raise ConfigError("the keystore password must be at least 8 characters")
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)  # the keystore and the identity are secrets at rest
    account = Account.create()
    write_keystore(keystore, account, password)
    write_template(config, rpc=rpc, deployment=written)
    peer_id = peer_id_of(load_or_create_identity(directory))
    return InitResult(directory, config, keystore, account.address, peer_id)
