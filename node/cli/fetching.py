"""Content by CID for the commands that read a task's files (`verify`, `model get`, `task show`):
the local blockstore, else the registered nodes that hold it, over libp2p.

Nodes serve registered peers only (a stranger cannot use them as free storage), so a command
fetches as the operator's own registered node: `--node DIR`, the node's data directory, whose
libp2p identity asks and whose blockstore is read and filled. The fetch is the daemon's own
(`node.daemon.peers.libp2p_fetch`: verified block by block, bounded in size and time). Without
`--node` a command reads the local blockstore only, and says at once what is missing and how to
get it. libp2p and trio load only when content must come from peers.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from node.cli.args import _ipfs_dir
from node.errors import ConfigError, StorageError

T = TypeVar("T")


def local_store(args: argparse.Namespace):
    """The blockstore named by --repo, else the --node directory's, else $FEDLEDGER_HOME/ipfs."""
    from node.storage import EmbeddedStorage

    node_dir = getattr(args, "node", None)
    if node_dir and not args.repo:
        return EmbeddedStorage(Path(node_dir) / "ipfs")
    return EmbeddedStorage(_ipfs_dir(args))


def _node_dir(args: argparse.Namespace) -> Path | None:
    node_dir = getattr(args, "node", None)
    if node_dir is None:
        return None
    path = Path(node_dir)
    if not (path / "p2p").is_dir():
        raise ConfigError(f"{path} is not a node's data directory: it has no p2p/ identity (see `fedledger node init`)")
    return path


def with_peers(args: argparse.Namespace, client, work: Callable[..., T]) -> T:
    """`work(fetch)`, `fetch(cid, holders, max_bytes=None) -> bytes` being the local copy, else
    (with --node) the holders' (then a few other registered peers'), kept in the local store."""
    store = local_store(args)
    node_dir = _node_dir(args)
    if node_dir is None:
        where = getattr(store, "root", None) or "the local blockstore"

        def local_only(cid: str, holders: Sequence[str], max_bytes: int | None = None) -> bytes:
            if not store.has(cid):
                raise StorageError(f"{cid} is not in {where}; give --node DIR, your registered node's directory, "
                                   "to fetch it from the nodes that hold it (they serve registered nodes only)")  # fmt: skip
            return store.get(cid, max_bytes=max_bytes)

        return work(local_only)
    return _with_libp2p(client, store, node_dir, work)


def _with_libp2p(client, store, node_dir: Path, work: Callable[..., T]) -> T:
    """`work(fetch)` in a worker thread of a trio program running a libp2p host as `node_dir`'s node."""
    import logging

    import trio

    from node.cli import root_cause
    from node.daemon.peers import PeerDirectory, libp2p_fetch
    from node.p2p.node import P2PConfig, P2PNode

    # A command's output is its result or one error line; libp2p logs every failed dial at error
    # level to a logger that does not propagate and has no handler (it set it so on import),
    # which Python's last-resort handler would print to stderr.
    for name in ("", "libp2p"):
        logging.getLogger(name).addHandler(logging.NullHandler())
    directory = PeerDirectory(client)

    async def main() -> T:
        p2p = P2PNode(P2PConfig(node_dir), store, directory.is_registered)
        async with trio.open_nursery() as nursery:
            await nursery.start(p2p.run)
            fetch = libp2p_fetch(store, p2p, directory)
            try:
                return await trio.to_thread.run_sync(work, fetch)
            finally:
                nursery.cancel_scope.cancel()

    try:
        return trio.run(main)
    except BaseExceptionGroup as group:  # the nursery's: what failed, not the group around it
        raise root_cause(group) from None


def fetch_one(args: argparse.Namespace, client, cid: str, holders: Sequence[str], max_bytes: int | None = None) -> bytes:
    """The bytes of `cid`, verified against it: from the local store when it holds them (no
    network started), else from the holders (with --node)."""
    return with_peers(args, client, lambda fetch: fetch(cid, list(holders), max_bytes=max_bytes))
