"""The `kubo` storage backend: an IPFS daemon's RPC API through ipfshttpclient, verified on our side.

The daemon is trusted to store and serve bytes, never to vouch for them:

- `put` adds with kubo's defaults (`--cid-version=1` implies raw leaves;
  CIDv0 on request) and checks the CID the daemon printed against our own
  importer (`node.storage.unixfs`), so a daemon with another chunker or
  layout is refused instead of silently giving CIDs the federation cannot
  reproduce;
- `get` does not use `cat`: it walks the DAG with `block/get` through our
  `read_dag`, which hashes every block against its CID and checks every
  declared size before using it (SPEC §6);
- the block-level half of `node.abc.BlockStore`, which the block exchange
  with peers uses (node/p2p/blocks.py): `get_block` reads one block the
  daemon holds (`block/get`, offline) and hashes it before returning it, so a
  block rotten on the daemon is never served to a peer; `put_block` hashes a
  peer's block against the CID it was asked for *before* the daemon sees it,
  then stores it with `block/put` and checks that the CID the daemon printed
  has the codec and the digest asked for.

A block the daemon lacks: kubo answers `block/get --offline` at once, but
js-ipfs ignores `offline` and waits for the network, so local reads also
carry the RPC's own `timeout` argument (`local_timeout`), and a peer asking
for content this node does not hold gets an error after at most that long.

`ipfshttpclient.connect()` refuses every daemon newer than 0.7 (see
DEPENDENCIES.md), so the client is constructed directly. The daemon may print
CIDv1 in base58btc (js-ipfs) or base32 (kubo); results are normalised through
`parse_cid`, so the text this backend returns equals what `EmbeddedStorage`
returns for the same bytes.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

from node.errors import StorageError
from node.storage.cid import CODEC_DAG_PB, parse_cid, verify_block
from node.storage.dagpb import decode_node
from node.storage.unixfs import DEFAULT_MAX_FETCH_BYTES, cid_of, dag_blocks_bound, read_dag, received_block

#: Where `ipfs daemon` serves its RPC API by default.
DEFAULT_API = "/ip4/127.0.0.1/tcp/5001/http"


def _flag(value: bool) -> str:
    # The RPC API takes booleans as the strings "true"/"false".
    return "true" if value else "false"


class KuboStorage:
    """`node.abc.BlockStore` on an IPFS RPC daemon (kubo, or js-ipfs's compatible API)."""

    def __init__(self, api_addr: str = DEFAULT_API, *, timeout: float = 120.0, local_timeout: float = 5.0) -> None:
        """Talk to the daemon at multiaddr `api_addr`; nothing is sent until the first call.

        `timeout` bounds each HTTP request in seconds, so a wedged daemon is an
        error rather than a hang; `local_timeout` bounds a read of one block
        that should be held locally (see the module doc).
        """
        # Imported here: ipfshttpclient is only needed by nodes that use this backend.
        import ipfshttpclient

        self.api_addr = api_addr
        self._timeout = timeout
        self._local_timeout = local_timeout
        self._errors: type[Exception] = ipfshttpclient.exceptions.Error
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._client = ipfshttpclient.Client(api_addr, timeout=timeout)
        except self._errors as exc:
            raise StorageError(f"bad IPFS API address {api_addr!r}: {exc}") from None

    def close(self) -> None:
        """Release the HTTP session."""
        self._client.close()

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one RPC call; ipfshttpclient's errors become StorageError naming the call and daemon."""
        try:
            with warnings.catch_warnings():
                # Every request warns about urllib3's removed `strict` parameter (DEPENDENCIES.md).
                warnings.simplefilter("ignore")
                return fn(*args, **kwargs)
        except self._errors as exc:
            raise StorageError(f"IPFS daemon at {self.api_addr}: {what} failed: {exc}") from None

    # --- the Storage protocol --------------------------------------------------------------

    def put(self, data: bytes, cid_version: int = 1) -> str:
        """Add and pin `data` on the daemon; return its CID, checked against our own importer."""
        if cid_version not in (0, 1):
            raise ValueError(f"cid_version must be 0 or 1, got {cid_version!r}")
        opts = {
            "cid-version": str(cid_version),
            "raw-leaves": _flag(cid_version == 1),
            "pin": "true",
            "chunker": "size-262144",
        }
        reply = self._call("add", self._client.add_bytes, data, opts=opts)
        printed = reply.get("Hash") if hasattr(reply, "get") else str(reply)
        got = str(parse_cid(printed))
        want = cid_of(data, cid_version)
        if got != want:
            raise StorageError(
                f"IPFS daemon at {self.api_addr} added {len(data)} bytes as {got}, but kubo's "
                f"defaults give {want}: the daemon's chunker or DAG layout differs"
            )
        return got

    def get(self, cid: str, max_bytes: int | None = None) -> bytes:
        """The file under `cid`, fetched block by block and verified against every CID.

        Blocks are read unverified here (`read_dag` hashes each one itself) and
        may come from the daemon's network, if it is online. At most `max_bytes` (default
        DEFAULT_MAX_FETCH_BYTES), checked on the root's declared size before any other block.
        """
        limit = DEFAULT_MAX_FETCH_BYTES if max_bytes is None else max_bytes
        return read_dag(
            cid, lambda c: self._get_block(c, offline=False), max_size=limit, max_blocks=dag_blocks_bound(limit)
        )

    def has(self, cid: str) -> bool:
        """Whether the daemon holds every block of `cid` locally (it is not asked to search the network).

        A `block/get` of a missing block waits for the network (js-ipfs ignores
        `offline`), so presence comes from `refs/local` and only held dag-pb
        nodes are read, to follow their links.
        """
        root = parse_cid(cid)
        local = self._local_digests()
        stack = [root]
        seen: set[bytes] = set()
        while stack:
            node = stack.pop()
            if node.digest in seen:
                continue
            if node.digest not in local:
                return False
            seen.add(node.digest)
            if node.codec == CODEC_DAG_PB:
                block = self.get_block(str(node))
                stack.extend(link.cid for link in decode_node(block, node).links)
        return True

    def _local_digests(self) -> set[bytes]:
        """The sha2-256 digests of every block in the daemon's blockstore."""
        reply = self._call("refs local", self._client.unstable.refs.local)
        rows = reply if isinstance(reply, list) else [reply]
        digests: set[bytes] = set()
        for row in rows:
            ref = row.get("Ref") if hasattr(row, "get") else None
            if ref:
                try:
                    digests.add(parse_cid(ref).digest)
                except StorageError:
                    continue  # a block under a hash we do not use cannot be one of ours
        return digests

    def pin(self, cid: str) -> None:
        """Pin `cid` on the daemon (it fetches missing blocks itself, if it is online)."""
        self._call(f"pin add {cid}", self._client.pin.add, str(parse_cid(cid)))

    def unpin(self, cid: str) -> None:
        """Unpin `cid`; a no-op if it is not pinned."""
        text = str(parse_cid(cid))
        pinned = self._call("pin ls", self._client.pin.ls, type="recursive")
        keys = pinned.get("Keys", {}) if hasattr(pinned, "get") else {}
        if not any(str(parse_cid(k)) == text for k in keys):
            return
        self._call(f"pin rm {cid}", self._client.pin.rm, text)

    # --- single blocks: the rest of node.abc.BlockStore ------------------------------------

    def get_block(self, cid: str) -> bytes:
        """One block the daemon holds, verified against `cid` (for serving peers).

        StorageError if the daemon does not hold it (within `local_timeout`), IntegrityError if
        the daemon's bytes do not hash to `cid`.
        """
        parsed = parse_cid(cid)
        block = self._get_block(str(parsed), offline=True)
        verify_block(parsed, block)
        return block

    def put_block(self, cid: str, data: bytes, source: str | None = None) -> None:
        """Store one block received from `source` after checking it hashes to `cid`; unpinned.

        The bytes are hashed before the daemon sees them (IntegrityError naming `cid` and
        `source`); the CID the daemon then prints must have `cid`'s codec and digest, or the
        daemon stored the block under another name and StorageError says so. The daemon keys
        blocks by multihash, so a CIDv0 or v1 answer for a dag-pb block is the same block.
        """
        parsed = received_block(cid, data, source)
        # `format` (not kubo's newer `cid-codec`): kubo still honours it and js-ipfs knows no other.
        opts = {"format": parsed.codec_name, "mhtype": "sha2-256"}
        reply = self._call(f"block put {parsed}", self._client.block.put, io.BytesIO(bytes(data)), opts=opts)
        printed = reply.get("Key") if hasattr(reply, "get") else None
        try:
            got = parse_cid(printed) if isinstance(printed, str) else None
        except StorageError:
            got = None
        if got is None or (got.codec, got.digest) != (parsed.codec, parsed.digest):
            raise StorageError(
                f"IPFS daemon at {self.api_addr} stored block {parsed} as {printed!r}: "
                f"not the {parsed.codec_name} sha2-256 block it was given"
            )

    def _get_block(self, cid: str, *, offline: bool) -> bytes:
        """One raw block from the daemon, unverified; `offline`: only if it holds the block."""
        text = str(parse_cid(cid))
        kwargs: dict[str, Any] = {}
        if offline:
            # kubo honours `offline`; js-ipfs ignores it, so the RPC's own timeout bounds the wait.
            kwargs = {"offline": True, "opts": {"timeout": f"{self._local_timeout:g}s"}}
        block = self._call(f"block get {text}", self._client.block.get, text, **kwargs)
        if not isinstance(block, (bytes, bytearray)):
            raise StorageError(f"IPFS daemon at {self.api_addr}: block get {text} returned {type(block).__name__}")
        return bytes(block)
