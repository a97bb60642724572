"""The provider side of the block exchange (`node/p2p/blocks.py`): serve DAGs to peers.

A peer asks on a libp2p stream for a root CID; the server answers with a one-time direct
channel (TCP port, token, AES-256-GCM key) or sends the blocks inline on the stream, in DAG
pre-order. Only peers the `allow` callable accepts are served, and the table of direct-channel
offers is bounded.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from node.errors import StorageError
from node.p2p.blocks import MAX_CONTROL, U32, block_links, control_message, frame_nonce, libp2p_reader, socket_reader
from node.storage.cid import Cid, parse_cid

# The block exchange logs under one name, whichever side speaks.
log = logging.getLogger("node.p2p.blocks")

_TOKEN_LEN = 16
# How long an offered direct session waits for the fetcher to connect.
_OFFER_TTL = 30.0
# Direct-channel offers held at once, in all and per peer: each is a few dozen bytes, but a peer
# asking again and again (and never connecting) must not grow the table without bound.
_MAX_OFFERS = 256
_MAX_OFFERS_PER_PEER = 4
# A DAG of one block this size or less (a small model: 69 KB for digits-mlp) goes inline even
# when the direct channel is asked for: a TCP connection, a token and an AES key per fetch cost
# more than the block, and with 16 daemons each attester fetches 15 updates a round. It is one
# yamux window (256 KiB), so the sender never waits for credit.
_INLINE_MAX = 256 * 1024


@dataclass
class _Offer:
    root: Cid
    key: bytes
    peer: str
    expires: float


@dataclass
class BlockServer:
    """Serves DAGs from a local block source to peers, inline or over the direct channel.

    `get_block` returns one block's bytes by CID text (`BlockStore.get_block`,
    the store's verified read: a block rotten in our store is never served);
    tests substitute a corrupting source here.
    """

    get_block: Callable[[str], bytes]
    direct_host: str | None = "127.0.0.1"  # None: offer inline transfers only
    direct_port: int = 0
    # Which peers are served (peer ID -> bool): the daemon passes its registered peers, refreshed
    # with the chain's registry; None serves every peer (tests and single-process simulations).
    allow: Callable[[str], bool] | None = None
    max_offers: int = _MAX_OFFERS  # direct-channel offers held at once; the oldest go first
    max_offers_per_peer: int = _MAX_OFFERS_PER_PEER
    _offers: dict[bytes, _Offer] = field(default_factory=dict)  # insertion order: oldest first

    def _allowed(self, peer: str) -> bool:
        if self.allow is None:
            return True
        try:
            return bool(self.allow(peer))
        except Exception:  # an allow-list that cannot answer serves nobody
            return False

    def _add_offer(self, token: bytes, offer: _Offer) -> None:
        """Keep `offer`, within the table's bounds: expired offers go, then the peer's oldest
        beyond its share, then the oldest of all."""
        now = trio.current_time()
        for stale in [t for t, o in self._offers.items() if o.expires < now]:
            del self._offers[stale]
        mine = [t for t, o in self._offers.items() if o.peer == offer.peer]
        for old in mine[: max(0, len(mine) - self.max_offers_per_peer + 1)]:
            del self._offers[old]
        while self._offers and len(self._offers) >= self.max_offers:
            del self._offers[next(iter(self._offers))]
        self._offers[token] = offer

    async def serve_direct(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
        """Listen for direct-channel connections until cancelled; reports the bound port."""
        if self.direct_host is None:
            task_status.started(None)
            return
        listeners = await trio.open_tcp_listeners(self.direct_port, host=self.direct_host)
        self.direct_port = listeners[0].socket.getsockname()[1]
        task_status.started(self.direct_port)
        await trio.serve_listeners(self._handle_direct, listeners)

    async def handle_stream(self, stream) -> None:  # type: ignore[no-untyped-def]
        """The libp2p stream handler for BLOCKS_PROTOCOL."""
        peer = str(stream.muxed_conn.peer_id)
        try:
            if not self._allowed(peer):
                # M1: only the federation's registered nodes are served. One line, then hang up.
                log.debug("refused a block request from unregistered peer %s", peer)
                await stream.write(control_message({"error": "not a registered peer"}))
                return
            with trio.fail_after(30):
                request = json.loads(await libp2p_reader(stream).read_frame(MAX_CONTROL))
            root = parse_cid(request["root"])
            first = await trio.to_thread.run_sync(self.get_block, str(root))  # do we hold the root at all?
            small = len(first) <= _INLINE_MAX and not block_links(root, first)
            if request.get("direct") and self.direct_host is not None and self.direct_port and not small:
                token, key = os.urandom(_TOKEN_LEN), AESGCM.generate_key(bit_length=256)
                self._add_offer(token, _Offer(root, key, peer, trio.current_time() + _OFFER_TTL))
                await stream.write(control_message({"port": self.direct_port, "token": token.hex(), "key": key.hex()}))
            else:
                await stream.write(control_message({"inline": True}))

                async def send(frame: bytes) -> None:
                    await stream.write(frame)

                await self._send_dag(root, send, None, first)
        except (StorageError, KeyError, ValueError, TypeError) as exc:
            try:
                await stream.write(control_message({"error": str(exc)}))
            except Exception:
                pass
        except Exception as exc:  # the peer went away; nothing to tell it
            log.debug("block stream from %s ended: %r", peer, exc)
        finally:
            try:
                await stream.close()
            except Exception:
                pass

    async def _handle_direct(self, sock: trio.SocketStream) -> None:
        try:
            with trio.fail_after(10):
                token = await socket_reader(sock).read_exactly(_TOKEN_LEN)
            offer = self._offers.pop(token, None)
            now = trio.current_time()
            for stale in [t for t, o in self._offers.items() if o.expires < now]:
                del self._offers[stale]
            if offer is None or offer.expires < now:
                return  # unknown or expired token: hang up without a word
            await self._send_dag(offer.root, sock.send_all, AESGCM(offer.key))
        except Exception as exc:
            log.debug("direct transfer ended: %r", exc)
        finally:
            await sock.aclose()

    async def _send_dag(
        self, root: Cid, send: Callable[[bytes], Awaitable[None]], aead: AESGCM | None, first: bytes | None = None
    ) -> None:
        """Send every block under `root` in pre-order, the order the fetcher verifies in (`first`:
        the root's block, already read)."""
        stack = [root]
        counter = 0
        while stack:
            cid = stack.pop()
            if cid is root and first is not None:
                block = first
            else:
                block = await trio.to_thread.run_sync(self.get_block, str(cid))
            stack.extend(reversed(block_links(cid, block)))
            if aead is not None:
                block = aead.encrypt(frame_nonce(counter), block, None)
            counter += 1
            await send(U32.pack(len(block)) + block)
