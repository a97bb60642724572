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
"""

from __future__ import annotations

import json
import logging
import os
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from node.abc import BlockStore
from node.errors import IntegrityError, StorageError
from node.storage.cid import CODEC_DAG_PB, Cid, parse_cid
from node.storage.dagpb import decode_node, decode_unixfs
from node.storage.unixfs import (
    DEFAULT_MAX_BLOCKS,
    DEFAULT_MAX_FETCH_BYTES,
    MAX_BLOCK_SIZE,
    MAX_DEPTH,
    OverLimit,
    dag_blocks_bound,
    dag_bytes_bound,
)

log = logging.getLogger(__name__)

BLOCKS_PROTOCOL = "/fedledger/blocks/1.0.0"
_U32 = struct.Struct(">I")
_TOKEN_LEN = 16
_TAG_LEN = 16
# Largest control message: a request or an offer is ~200 bytes.
_MAX_CONTROL = 4096
# How long an offered direct session waits for the fetcher to connect.
_OFFER_TTL = 30.0
# Blocks in flight between the network reader and the verifier/writer.
_PIPELINE_DEPTH = 16
# Direct-channel offers held at once, in all and per peer: each is a few dozen bytes, but a peer
# asking again and again (and never connecting) must not grow the table without bound.
_MAX_OFFERS = 256
_MAX_OFFERS_PER_PEER = 4


class FetchError(StorageError):
    """Raised when no provider delivered a DAG; the message lists what went wrong with each."""

    def __init__(self, message: str, faults: "list[ProviderFault] | None" = None) -> None:
        super().__init__(message)
        self.faults: list[ProviderFault] = list(faults or [])


class ContentTooLarge(FetchError, OverLimit):
    """Raised when a DAG is larger than the fetch's byte limit: its root declares more, or its
    blocks add up to more. The CID fixes the content, so no other provider is tried (an
    `OverLimit`, as a local read of the same content under the same limit raises)."""


class SlowProvider(Exception):
    """Raised inside a transfer when a provider sends under the minimum throughput."""


@dataclass(frozen=True)
class ProviderFault:
    """One provider's failure during a fetch: which peer, which kind, and the error text."""

    peer: str
    # "corrupt" (a block did not match its CID), "timeout" (silent, or the fetch's deadline),
    # "slow" (under the minimum throughput), "unavailable" or "protocol"
    kind: str
    error: str


# --- framing over any byte stream --------------------------------------------------------


class _Reader:
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
        (n,) = _U32.unpack(await self.read_exactly(4))
        if n > limit:
            raise ValueError(f"frame of {n} bytes exceeds the {limit}-byte limit")
        return await self.read_exactly(n)


def _libp2p_reader(stream) -> _Reader:  # type: ignore[no-untyped-def]
    from libp2p.network.stream.exceptions import StreamEOF

    async def receive(n: int) -> bytes:
        try:
            return await stream.read(n)
        except StreamEOF:
            return b""

    return _Reader(receive)


def _socket_reader(sock: trio.SocketStream) -> _Reader:
    return _Reader(sock.receive_some)


def _control(obj: dict) -> bytes:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return _U32.pack(len(body)) + body


def _nonce(counter: int) -> bytes:
    return counter.to_bytes(12, "big")


class _RateGuard:
    """Drops a provider that sends under `min_rate` bytes/s, judged over each `window` seconds
    spent waiting on it. Only time inside a receive counts: while the pipeline is full (our disk
    or hashing is the bottleneck) the provider is not to blame."""

    def __init__(self, peer: str, min_rate: float, window: float) -> None:
        self.peer, self.min_rate, self.window = peer, min_rate, window
        self._bytes = 0
        self._waited = 0.0

    def observe(self, nbytes: int, seconds: float) -> None:
        self._bytes += nbytes
        self._waited += seconds
        if self._waited < self.window:
            return
        if self._bytes < self.min_rate * self._waited:
            raise SlowProvider(
                f"{self.peer} sent {self._bytes} bytes in {self._waited:.1f} s of waiting, "
                f"under the minimum of {self.min_rate:g} bytes/s"
            )
        self._bytes, self._waited = 0, 0.0


def _declared_size(cid: Cid, block: bytes) -> int:
    """The file size a verified root block declares: its own length for a raw block, the UnixFS
    filesize (or the sum of its blocksizes) for a dag-pb node; 0 if it declares nothing."""
    if cid.codec != CODEC_DAG_PB:
        return len(block)
    node = decode_node(block, cid)
    if node.data is None:
        return 0
    fs = decode_unixfs(node.data, cid)
    if fs.filesize is not None:
        return fs.filesize
    return len(fs.data or b"") + sum(fs.blocksizes)


def _links(cid: Cid, block: bytes) -> list[Cid]:
    return [link.cid for link in decode_node(block, cid).links] if cid.codec == CODEC_DAG_PB else []


# --- provider side -----------------------------------------------------------------------


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
                await stream.write(_control({"error": "not a registered peer"}))
                return
            with trio.fail_after(30):
                request = json.loads(await _libp2p_reader(stream).read_frame(_MAX_CONTROL))
            root = parse_cid(request["root"])
            await trio.to_thread.run_sync(self.get_block, str(root))  # do we hold the root at all?
            if request.get("direct") and self.direct_host is not None and self.direct_port:
                token, key = os.urandom(_TOKEN_LEN), AESGCM.generate_key(bit_length=256)
                self._add_offer(token, _Offer(root, key, peer, trio.current_time() + _OFFER_TTL))
                await stream.write(_control({"port": self.direct_port, "token": token.hex(), "key": key.hex()}))
            else:
                await stream.write(_control({"inline": True}))

                async def send(frame: bytes) -> None:
                    await stream.write(frame)

                await self._send_dag(root, send, None)
        except (StorageError, KeyError, ValueError, TypeError) as exc:
            try:
                await stream.write(_control({"error": str(exc)}))
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
                token = await _socket_reader(sock).read_exactly(_TOKEN_LEN)
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

    async def _send_dag(self, root: Cid, send: Callable[[bytes], Awaitable[None]], aead: AESGCM | None) -> None:
        """Send every block under `root` in pre-order, the order the fetcher verifies in."""
        stack = [root]
        counter = 0
        while stack:
            cid = stack.pop()
            block = await trio.to_thread.run_sync(self.get_block, str(cid))
            stack.extend(reversed(_links(cid, block)))
            if aead is not None:
                block = aead.encrypt(_nonce(counter), block, None)
            counter += 1
            await send(_U32.pack(len(block)) + block)


# --- fetcher side ------------------------------------------------------------------------


@dataclass
class BlockFetcher:
    """Fetches DAGs into a block store from a list of providers, verifying every block."""

    store: BlockStore
    open_stream: Callable[[str], Awaitable[object]]  # peer ID -> a libp2p stream on BLOCKS_PROTOCOL
    remote_ip: Callable[[str], str | None]  # peer ID -> the IP address we reached it at
    stall_timeout: float = 10.0  # seconds without a byte from a provider before giving up on it
    direct: bool = True  # ask for the direct channel (inline if the provider offers none)
    on_fault: Callable[[ProviderFault], None] | None = None
    max_blocks: int = DEFAULT_MAX_BLOCKS
    # A provider must send at least min_rate bytes/s over every rate_window s spent waiting on it.
    # 64 KiB/s is far under a WAN link with 100 ms round trips and 1% loss (~180 KB/s for one TCP
    # flow), and a trickle of a 64 MiB update at that rate still ends within the fetch deadline.
    min_rate: float = 64 * 1024
    rate_window: float = 5.0
    fetch_timeout: float = 600.0  # seconds for a whole fetch, all providers together
    max_bytes: int = DEFAULT_MAX_FETCH_BYTES  # the byte limit when the caller gives none

    async def fetch(self, root: str, providers: list[str], max_bytes: int | None = None) -> list[ProviderFault]:
        """Fetch the DAG under `root` from the first provider that delivers it whole, then pin it.

        At most `max_bytes` of content (default `self.max_bytes`): ContentTooLarge, nothing
        pinned, as soon as the DAG is known to be larger. Returns the faults met on the way (also
        passed to `on_fault`); raises FetchError if every provider failed or the fetch's deadline
        passed.
        """
        cid = parse_cid(root)
        limit = self.max_bytes if max_bytes is None else max_bytes
        faults: list[ProviderFault] = []
        if await trio.to_thread.run_sync(self.store.has, str(cid)):
            await trio.to_thread.run_sync(self.store.pin, str(cid))
            return faults
        current: list[str] = []  # the provider being tried, for the deadline's fault
        with trio.move_on_after(self.fetch_timeout) as deadline:
            if await self._try_providers(cid, providers, limit, faults, current):
                return faults
        if deadline.cancelled_caught:
            peer = current[-1] if current else "-"
            self._fault(cid, faults, ProviderFault(peer, "timeout", f"the fetch's {self.fetch_timeout:g} s deadline passed"))
        detail = "; ".join(f"{f.kind}: {f.error}" for f in faults) or "no providers"
        raise FetchError(f"could not fetch {cid}: {detail}", faults)

    def _fault(self, cid: Cid, faults: list[ProviderFault], fault: ProviderFault) -> None:
        # A corrupt block is a peer lying: a warning. Anything else (a peer without the content,
        # gone, slow) is in the FetchError the caller reports, once (#17).
        level = logging.WARNING if fault.kind == "corrupt" else logging.DEBUG
        log.log(level, "fetch %s: provider fault: %s", cid, fault.error)
        faults.append(fault)
        if self.on_fault is not None:
            self.on_fault(fault)

    async def _try_providers(
        self, cid: Cid, providers: list[str], limit: int, faults: list[ProviderFault], current: list[str]
    ) -> bool:
        """Try each provider in turn; True once one delivered the DAG whole and it is pinned."""
        for peer in providers:
            current.append(peer)
            try:
                await self._fetch_from(cid, peer, limit)
            except ContentTooLarge as exc:
                exc.faults = faults + [ProviderFault(peer, "protocol", str(exc))]
                raise
            except IntegrityError as exc:
                fault = ProviderFault(peer, "corrupt", str(exc))
            except SlowProvider as exc:
                fault = ProviderFault(peer, "slow", str(exc))
            except trio.TooSlowError:
                fault = ProviderFault(peer, "timeout", f"no data from {peer} for {self.stall_timeout:g} s")
            except (EOFError, OSError, ConnectionError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                fault = ProviderFault(peer, "unavailable", f"{peer}: {exc!r}")
            except (StorageError, ValueError, KeyError) as exc:
                fault = ProviderFault(peer, "protocol", f"{peer}: {exc}")
            except Exception as exc:  # libp2p's own errors (dial failures, stream resets) have no common root
                fault = ProviderFault(peer, "unavailable", f"{peer}: {exc!r}")
            else:
                await trio.to_thread.run_sync(self.store.pin, str(cid))
                return True
            self._fault(cid, faults, fault)
        return False

    async def _fetch_from(self, root: Cid, peer: str, limit: int) -> None:
        with trio.fail_after(self.stall_timeout):
            stream = await self.open_stream(peer)
        guard = _RateGuard(peer, self.min_rate, self.rate_window)
        try:
            control = _libp2p_reader(stream)
            control.observe = guard.observe
            await stream.write(_control({"root": str(root), "direct": self.direct}))  # type: ignore[attr-defined]
            with trio.fail_after(self.stall_timeout):
                reply = json.loads(await control.read_frame(_MAX_CONTROL))
            if "error" in reply:
                raise StorageError(f"{peer} refused {root}: {reply['error']}")
            if reply.get("inline"):
                await self._receive(root, peer, control, None, limit)
                return
            ip = self.remote_ip(peer)
            if ip is None:
                raise StorageError(f"no IP address known for {peer}")
            with trio.fail_after(self.stall_timeout):
                sock = await trio.open_tcp_stream(ip, int(reply["port"]))
            try:
                await sock.send_all(bytes.fromhex(reply["token"]))
                reader = _socket_reader(sock)
                reader.observe = guard.observe
                await self._receive(root, peer, reader, AESGCM(bytes.fromhex(reply["key"])), limit)
            finally:
                await sock.aclose()
        finally:
            try:
                await stream.close()  # type: ignore[attr-defined]
            except Exception:
                pass

    async def _receive(self, root: Cid, peer: str, reader: _Reader, aead: AESGCM | None, max_bytes: int) -> None:
        """Read frames in one task, verify and store them in another, so hashing and disk overlap the network.

        At most `max_bytes` of content: the root's declared size is checked first, and every
        block's bytes are counted as it is verified, against what an honest DAG over a file of
        `max_bytes` takes (`dag_bytes_bound`, `dag_blocks_bound`).

        The verdict must not depend on which task trio happens to run first:
        the verifier's error is the transfer's error, and the reader's only
        when it failed first (a stall, a bad frame, a broken connection).
        Neither task leaves a checkpoint between its failure and its exit,
        since the nursery's cancellation would replace the error there.
        """
        send, receive = trio.open_memory_channel[bytes](_PIPELINE_DEPTH)
        limit = MAX_BLOCK_SIZE + (_TAG_LEN if aead else 0)
        verdict: list[Exception] = []

        async def read_frames() -> None:
            counter = 0
            while True:
                with trio.fail_after(self.stall_timeout):
                    try:
                        frame = await reader.read_frame(limit)
                    except EOFError:
                        send.close()  # the verifier decides whether the DAG was complete
                        return
                if aead is not None:
                    try:
                        frame = aead.decrypt(_nonce(counter), frame, None)
                    except Exception:
                        raise IntegrityError(f"frame {counter} of {root} from {peer} failed AES-GCM authentication") from None
                counter += 1
                try:
                    await send.send(frame)
                except trio.BrokenResourceError:
                    return  # the verifier has stopped; its verdict ends the transfer

        byte_budget = dag_bytes_bound(max_bytes)
        block_budget = min(self.max_blocks, dag_blocks_bound(max_bytes))

        async def verify_and_store() -> None:
            stack: list[tuple[Cid, int]] = [(root, 0)]
            seen = 0
            received = 0
            with receive:
                try:
                    while stack:
                        cid, depth = stack.pop()
                        seen += 1
                        if seen > block_budget:
                            raise ContentTooLarge(f"DAG {root} has more than {block_budget} blocks, over what {max_bytes} bytes take")
                        if depth > MAX_DEPTH:
                            raise StorageError(f"DAG {root} from {peer} is deeper than {MAX_DEPTH} levels")
                        try:
                            block = await receive.receive()
                        except trio.EndOfChannel:
                            raise EOFError(f"{peer} stopped sending {root} before block {cid}") from None
                        received += len(block)
                        if received > byte_budget:
                            raise ContentTooLarge(f"DAG {root} is over the {max_bytes}-byte limit ({received} bytes of blocks so far)")
                        # put_block hashes against the CID we expect here and names the peer on a mismatch.
                        await trio.to_thread.run_sync(self.store.put_block, str(cid), block, peer)
                        if depth == 0:  # verified: its declared size is the content's, whoever sent it
                            declared = _declared_size(cid, block)
                            if declared > max_bytes:
                                raise ContentTooLarge(f"{root} declares {declared} bytes, over the {max_bytes}-byte limit")
                        stack.extend((child, depth + 1) for child in reversed(_links(cid, block)))
                except Exception as exc:
                    verdict.append(exc)
                    raise
            nursery.cancel_scope.cancel()  # complete: stop reading whatever the provider still sends

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_frames)
                nursery.start_soon(verify_and_store)
        except BaseExceptionGroup as group:
            raise (verdict[0] if verdict else _first_error(group)) from None


def _first_error(group: BaseExceptionGroup) -> BaseException:
    """The error that ended a transfer, unwrapped from trio's exception group (Cancelled last)."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(reversed(exc.exceptions))
        else:
            leaves.append(exc)
    for exc in leaves:
        if not isinstance(exc, trio.Cancelled):
            return exc
    return leaves[0]
