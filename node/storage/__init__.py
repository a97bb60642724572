"""Content-addressed storage: kubo-identical CIDs, the UnixFS importer/reader and the embedded blockstore.

`cid_of(data)` is what `ipfs add --cid-version=1` prints (`cid_version=0`:
plain `ipfs add`); `EmbeddedStorage` is the default `node.abc.BlockStore`
backend, a verified blockstore in the node's data directory; `KuboStorage`
the same protocol on an IPFS daemon's RPC API, verified on our side.
`open_storage` opens the one a node's configuration names.
"""

from __future__ import annotations

import os

from node.abc import BlockStore
from node.errors import ConfigError
from node.storage.cid import Cid, parse_cid, verify_block
from node.storage.embedded import EmbeddedStorage
from node.storage.kubo import KuboStorage
from node.storage.unixfs import build_dag, cid_of, read_dag

#: The storage backends a node can be configured with (node.toml `[storage] backend`).
BACKENDS = ("embedded", "kubo")


def open_storage(backend: str, repo: str | os.PathLike[str], api: str | None = None) -> BlockStore:
    """The block store `backend` names: "embedded" in directory `repo`, or "kubo": the IPFS RPC
    daemon at multiaddr `api` (`repo` unused; nothing is sent to the daemon until the first call)."""
    if backend == "embedded":
        return EmbeddedStorage(repo)
    if backend == "kubo":
        if not api:
            raise ConfigError("the kubo storage backend needs the IPFS daemon's API multiaddr")
        return KuboStorage(api)
    raise ConfigError(f"storage backend must be one of {', '.join(BACKENDS)}, not {backend!r}")


__all__ = [
    "BACKENDS",
    "Cid",
    "EmbeddedStorage",
    "KuboStorage",
    "build_dag",
    "cid_of",
    "open_storage",
    "parse_cid",
    "read_dag",
    "verify_block",
]
