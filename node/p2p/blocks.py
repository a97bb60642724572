"""Block exchange `/fedledger/blocks/1.0.0`: fetch a whole DAG from a peer, every block verified.

Why not bitswap. Measured on this machine kind (2 cores, two processes on
loopback, 64 MB): py-libp2p 0.8.1's bitswap moves 9-15 MB/s (DEPENDENCIES.md),
and even a bare libp2p stream moves only 100-125 MB/s under Noise with yamux
(70 under TLS, 26 under mplex; 335 in plaintext), before a single block is
hashed or written: the per-frame Python work of the Noise channel is the cap.
The target is >= 100 MB/s for a 64 MB fetch *into the blockstore*, so the
bulk bytes cannot ride the Noise channel. The design therefore splits:

- control on libp2p: the fetcher opens a libp2p stream (Noise-authenticated,
  so both sides know each other's peer ID) and asks for a root CID;
- bulk on a direct TCP connection to the provider ("direct" mode): the
  provider answers on the libp2p stream with a TCP port, a one-time 128-bit
  token and a fresh AES-256-GCM key. The fetcher connects, presents the token
  and receives the DAG's blocks, each one sealed with AES-GCM (nonce = block
  counter). Only the authenticated peer knows the key, so the bytes are
  confidential (model updates leak training data) and attributable to that
  peer; AES-GCM runs at GB/s in C, so the channel costs ~nothing;
- "inline" mode sends the same frames over the libp2p stream itself, for a
  provider that offers no direct port (or a fetcher that asks for none).

Either way the blocks come in DAG pre-order (root first, children left to
right), so the fetcher always knows the CID the next block must have: it
verifies each block against that CID with the store's `put_block(cid, data,
source=peer)` (`node.abc.BlockStore`: the embedded blockstore or a kubo
daemon) before storing it and before trusting its links. A
provider cannot push unrelated blocks, and a mismatch is an IntegrityError
naming the CID and the peer; the fetch then moves to the next provider,
keeping the blocks already verified.

Bounded and unstallable (issue #14, H5, H7, M1):

- every read has a stall timeout, so a provider that vanishes mid-transfer
  costs `stall_timeout` seconds, not a hang; a provider that trickles bytes
  just fast enough to beat that timeout is caught by a minimum throughput,
  judged over every `rate_window` seconds spent waiting on it (time the
  fetcher itself was busy hashing or writing does not count against the
  provider), and the next provider is tried;
- a whole fetch, all providers together, ends by `fetch_timeout`;
- a fetch takes at most `max_bytes` of content (the caller's limit: a task's
  `max_update_bytes`): a root whose declared size is larger is refused before
  any other block is asked for, and the blocks are counted as they arrive, so
  a DAG that lies its way past the root stops within the limit. Either is a
  property of the CID, not of the provider, so no other provider is tried;
- the server answers only peers its `allow` callable accepts (the daemon's
  registered peers), and its table of direct-channel offers is bounded
  (`max_offers`, `max_offers_per_peer`; the oldest go first).

Frames: u32 big-endian length, then the block (inline) or its AES-GCM
ciphertext (direct). Control messages: u32 length + JSON.

This module holds the protocol's vocabulary (its errors and faults) and its wire format;
the provider side is `node/p2p/block_server.py`, the fetcher side `node/p2p/block_fetcher.py`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from node.errors import StorageError
from node.storage.cid import CODEC_DAG_PB, Cid
from node.storage.dagpb import decode_node
from node.storage.unixfs import OverLimit

BLOCKS_PROTOCOL = "/fedledger/blocks/1.0.0"
U32 = struct.Struct(">I")
# Largest control message: a request or an offer is ~200 bytes.
MAX_CONTROL = 4096


class FetchError(StorageError):
    """Raised when no provider delivered a DAG; the message lists what went wrong with each."""

    def __init__(self, message: str, faults: "list[ProviderFault] | None" = None) -> None:
        super().__init__(message)
        self.faults: list[ProviderFault] = list(faults or [])


class ContentTooLarge(FetchError, OverLimit):
    """Raised when a DAG is larger than the fetch's byte limit: its root declares more, or its
    blocks add up to more. The CID fixes the content, so no other provider is tried (an
    `OverLimit`, as a local read of the same content under the same limit raises)."""


@dataclass(frozen=True)
class ProviderFault:
    """One provider's failure during a fetch: which peer, which kind, and the error text."""

    peer: str
    # "corrupt" (a block did not match its CID), "timeout" (silent, or the fetch's deadline),
    # "slow" (under the minimum throughput), "unavailable" or "protocol"
    kind: str
    error: str


# --- framing over any byte stream --------------------------------------------------------


class Reader:
    """read_exactly over a receive function that returns at most n bytes (b"" at EOF).

    `observe(nbytes, seconds)`, if given, hears of every receive: how many bytes it brought and
    how long we waited for them (the fetcher's throughput guard)."""

    def __init__(
        self,
        receive: Callable[[int], Awaitable[bytes]],
        observe: Callable[[int, float], None] | None = None,
    ) -> None:
        self._receive = receive
        self._buf = bytearray()
        self.observe = observe

    async def read_exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            started = trio.current_time()
            chunk = await self._receive(max(n - len(self._buf), 1 << 16))
            if self.observe is not None:
                self.observe(len(chunk), trio.current_time() - started)
            if not chunk:
                raise EOFError(f"connection closed with {n - len(self._buf)} bytes still expected")
            self._buf += chunk
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    async def read_frame(self, limit: int) -> bytes:
        (n,) = U32.unpack(await self.read_exactly(4))
        if n > limit:
            raise ValueError(f"frame of {n} bytes exceeds the {limit}-byte limit")
        return await self.read_exactly(n)


def libp2p_reader(stream) -> Reader:  # type: ignore[no-untyped-def]
    """A Reader over a libp2p stream (its EOF reads as b"")."""
    from libp2p.network.stream.exceptions import StreamEOF

    async def receive(n: int) -> bytes:
        try:
            return await stream.read(n)
        except StreamEOF:
            return b""

    return Reader(receive)


def socket_reader(sock: trio.SocketStream) -> Reader:
    """A Reader over the direct channel's TCP socket."""
    return Reader(sock.receive_some)


def control_message(obj: dict) -> bytes:
    """A control message: u32 length, then compact JSON."""
    body = json.dumps(obj, separators=(",", ":")).encode()
    return U32.pack(len(body)) + body


def frame_nonce(counter: int) -> bytes:
    """The AES-GCM nonce of the direct channel's frame number `counter` (a key serves one transfer)."""
    return counter.to_bytes(12, "big")


def block_links(cid: Cid, block: bytes) -> list[Cid]:
    """The CIDs a block links to, in order (none for a raw block): its children in the pre-order."""
    return [link.cid for link in decode_node(block, cid).links] if cid.codec == CODEC_DAG_PB else []
