"""Content by CID for the commands that read a task's files (`verify`, `model get`, `task show`):
the local blockstore (`--repo`), else the registered nodes that hold it, over libp2p.

This is the daemon's own fetch (`node.daemon.peers.libp2p_fetch`: verified block by block,
bounded in size and time) run from a throwaway identity, so a command needs no registration,
only the peers' content. libp2p and trio load only when the content is not local.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from node.cli.args import _ipfs_dir

T = TypeVar("T")


def local_store(args: argparse.Namespace):
    """The blockstore named by --repo (default $FEDLEDGER_HOME/ipfs)."""
    from node.storage import EmbeddedStorage

    return EmbeddedStorage(_ipfs_dir(args))


def with_peers(args: argparse.Namespace, client, work: Callable[..., T]) -> T:
    """`work(fetch)` in a worker thread, `fetch(cid, holders, max_bytes=None) -> bytes` being the
    local copy else the holders' (then a few other registered peers'); what is fetched is kept
    in the local store."""
    import tempfile

    import trio

    from node.daemon.peers import PeerDirectory, libp2p_fetch
    from node.p2p.node import P2PConfig, P2PNode

    store = local_store(args)
    directory = PeerDirectory(client)

    async def main() -> T:
        with tempfile.TemporaryDirectory(prefix="fedledger-fetch-") as identity_dir:
            p2p = P2PNode(P2PConfig(Path(identity_dir)), store, directory.is_registered)
            async with trio.open_nursery() as nursery:
                await nursery.start(p2p.run)
                fetch = libp2p_fetch(store, p2p, directory)
                try:
                    return await trio.to_thread.run_sync(work, fetch)
                finally:
                    nursery.cancel_scope.cancel()

    return trio.run(main)


def fetch_one(args: argparse.Namespace, client, cid: str, holders: Sequence[str], max_bytes: int | None = None) -> bytes:
    """The bytes of `cid`, verified against it: from the local store when it holds them (no
    network started), else from the holders."""
    store = local_store(args)
    if store.has(cid):
        return store.get(cid, max_bytes=max_bytes)
    return with_peers(args, client, lambda fetch: fetch(cid, list(holders), max_bytes=max_bytes))
