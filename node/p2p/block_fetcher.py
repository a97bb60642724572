"""The fetcher side of the block exchange (`node/p2p/blocks.py`): fetch a DAG from providers.

Each provider in turn is asked for the root; its blocks are read in one task and verified
and stored in another, so hashing and disk overlap the network. Every block is checked
against the CID the DAG's pre-order says comes next; a stall, a trickle under the minimum
throughput, a corrupt block or a refusal moves on to the next provider, and the whole fetch
is bounded in time, in bytes and in blocks.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from node.abc import BlockStore
from node.errors import IntegrityError, StorageError
from node.p2p.blocks import (
    MAX_CONTROL,
    ContentTooLarge,
    FetchError,
    ProviderFault,
    Reader,
    block_links,
    control_message,
    frame_nonce,
    libp2p_reader,
    socket_reader,
)
from node.storage.cid import CODEC_DAG_PB, Cid, parse_cid
from node.storage.dagpb import decode_node, decode_unixfs
from node.storage.unixfs import (
    DEFAULT_MAX_BLOCKS,
    DEFAULT_MAX_FETCH_BYTES,
    MAX_BLOCK_SIZE,
    MAX_DEPTH,
    dag_blocks_bound,
    dag_bytes_bound,
)

# The block exchange logs under one name, whichever side speaks.
log = logging.getLogger("node.p2p.blocks")

_TAG_LEN = 16
# Blocks in flight between the network reader and the verifier/writer.
_PIPELINE_DEPTH = 16


class SlowProvider(Exception):
    """Raised inside a transfer when a provider sends under the minimum throughput."""



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
            control = libp2p_reader(stream)
            control.observe = guard.observe
            await stream.write(control_message({"root": str(root), "direct": self.direct}))  # type: ignore[attr-defined]
            with trio.fail_after(self.stall_timeout):
                reply = json.loads(await control.read_frame(MAX_CONTROL))
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
                reader = socket_reader(sock)
                reader.observe = guard.observe
                await self._receive(root, peer, reader, AESGCM(bytes.fromhex(reply["key"])), limit)
            finally:
                await sock.aclose()
        finally:
            try:
                await stream.close()  # type: ignore[attr-defined]
            except Exception:
                pass

    async def _receive(self, root: Cid, peer: str, reader: Reader, aead: AESGCM | None, max_bytes: int) -> None:
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
                        frame = aead.decrypt(frame_nonce(counter), frame, None)
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
                        stack.extend((child, depth + 1) for child in reversed(block_links(cid, block)))
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
