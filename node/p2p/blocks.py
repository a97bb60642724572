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
keeping the blocks already verified. Every read has a stall timeout, so a
provider that vanishes mid-transfer costs `stall_timeout` seconds, not a hang.

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
from node.storage.dagpb import decode_node
from node.storage.unixfs import DEFAULT_MAX_BLOCKS, MAX_BLOCK_SIZE, MAX_DEPTH

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


class FetchError(StorageError):
    """Raised when no provider delivered a DAG; the message lists what went wrong with each."""

    def __init__(self, message: str, faults: "list[ProviderFault] | None" = None) -> None:
        super().__init__(message)
        self.faults: list[ProviderFault] = list(faults or [])


@dataclass(frozen=True)
class ProviderFault:
    """One provider's failure during a fetch: which peer, which kind, and the error text."""

    peer: str
    kind: str  # "corrupt" (a block did not match its CID), "timeout", "unavailable" or "protocol"
    error: str


# --- framing over any byte stream --------------------------------------------------------


class _Reader:
    """read_exactly over a receive function that returns at most n bytes (b"" at EOF)."""

    def __init__(self, receive: Callable[[int], Awaitable[bytes]]) -> None:
        self._receive = receive
        self._buf = bytearray()

    async def read_exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = await self._receive(max(n - len(self._buf), 1 << 16))
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
    _offers: dict[bytes, _Offer] = field(default_factory=dict)

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
            with trio.fail_after(30):
                request = json.loads(await _libp2p_reader(stream).read_frame(_MAX_CONTROL))
            root = parse_cid(request["root"])
            await trio.to_thread.run_sync(self.get_block, str(root))  # do we hold the root at all?
            if request.get("direct") and self.direct_host is not None and self.direct_port:
                token, key = os.urandom(_TOKEN_LEN), AESGCM.generate_key(bit_length=256)
                self._offers[token] = _Offer(root, key, peer, trio.current_time() + _OFFER_TTL)
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

    async def fetch(self, root: str, providers: list[str]) -> list[ProviderFault]:
        """Fetch the DAG under `root` from the first provider that delivers it whole, then pin it.

        Returns the faults met on the way (also passed to `on_fault`); raises
        FetchError if every provider failed.
        """
        cid = parse_cid(root)
        faults: list[ProviderFault] = []
        if await trio.to_thread.run_sync(self.store.has, str(cid)):
            await trio.to_thread.run_sync(self.store.pin, str(cid))
            return faults
        for peer in providers:
            try:
                await self._fetch_from(cid, peer)
            except IntegrityError as exc:
                fault = ProviderFault(peer, "corrupt", str(exc))
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
                return faults
            log.warning("fetch %s: provider fault: %s", cid, fault.error)
            faults.append(fault)
            if self.on_fault is not None:
                self.on_fault(fault)
        detail = "; ".join(f"{f.kind}: {f.error}" for f in faults) or "no providers"
        raise FetchError(f"could not fetch {cid}: {detail}", faults)

    async def _fetch_from(self, root: Cid, peer: str) -> None:
        with trio.fail_after(self.stall_timeout):
            stream = await self.open_stream(peer)
        try:
            control = _libp2p_reader(stream)
            await stream.write(_control({"root": str(root), "direct": self.direct}))  # type: ignore[attr-defined]
            with trio.fail_after(self.stall_timeout):
                reply = json.loads(await control.read_frame(_MAX_CONTROL))
            if "error" in reply:
                raise StorageError(f"{peer} refused {root}: {reply['error']}")
            if reply.get("inline"):
                await self._receive(root, peer, control, None)
                return
            ip = self.remote_ip(peer)
            if ip is None:
                raise StorageError(f"no IP address known for {peer}")
            with trio.fail_after(self.stall_timeout):
                sock = await trio.open_tcp_stream(ip, int(reply["port"]))
            try:
                await sock.send_all(bytes.fromhex(reply["token"]))
                await self._receive(root, peer, _socket_reader(sock), AESGCM(bytes.fromhex(reply["key"])))
            finally:
                await sock.aclose()
        finally:
            try:
                await stream.close()  # type: ignore[attr-defined]
            except Exception:
                pass

    async def _receive(self, root: Cid, peer: str, reader: _Reader, aead: AESGCM | None) -> None:
        """Read frames in one task, verify and store them in another, so hashing and disk overlap the network.

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

        async def verify_and_store() -> None:
            stack: list[tuple[Cid, int]] = [(root, 0)]
            seen = 0
            with receive:
                try:
                    while stack:
                        cid, depth = stack.pop()
                        seen += 1
                        if seen > self.max_blocks or depth > MAX_DEPTH:
                            raise StorageError(f"DAG {root} from {peer} exceeds {self.max_blocks} blocks or depth {MAX_DEPTH}")
                        try:
                            block = await receive.receive()
                        except trio.EndOfChannel:
                            raise EOFError(f"{peer} stopped sending {root} before block {cid}") from None
                        # put_block hashes against the CID we expect here and names the peer on a mismatch.
                        await trio.to_thread.run_sync(self.store.put_block, str(cid), block, peer)
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
