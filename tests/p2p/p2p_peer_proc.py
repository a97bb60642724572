"""A FedLedger p2p node in its own process, driven by JSON lines on stdin, for the multi-process tests and the benchmark.

    python tests/p2p/p2p_peer_proc.py DATA_DIR [--allow ID,ID|*] [--corrupt] [--die-after N] [--inline]
        [--trickle BYTES_PER_S] [--min-rate BYTES_PER_S] [--fetch-timeout S]

Prints {"ready": true, "peer_id": ..., "addrs": [...]} once listening, then
answers each command line with one JSON line. Commands (`op` field): put
{size, seed} -> {cid}; connect {addr}; allow {peers}; subscribe {task};
announce {task, round, kind, cid}; inbox {} -> {announcements}; peers {task};
fetch {cid, providers, max_bytes?} -> {seconds, faults}; get {cid} -> {sha256};
offers {} -> {offers} (direct-channel offers held); quit.
--corrupt flips one byte of every served leaf; --die-after N exits the
process (os._exit) after serving N blocks, as a provider vanishing mid-transfer;
--trickle sends what it serves in 512-byte pieces at about that rate, never
silent long enough for a stall timeout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from node.p2p import Announcement, P2PConfig, P2PNode  # noqa: E402
from node.storage import EmbeddedStorage  # noqa: E402


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data_dir")
    parser.add_argument("--allow", default="*")
    parser.add_argument("--corrupt", action="store_true")
    parser.add_argument("--die-after", type=int, default=0)
    parser.add_argument("--inline", action="store_true")
    parser.add_argument("--stall-timeout", type=float, default=3.0)
    parser.add_argument("--fsync", action="store_true")
    parser.add_argument("--trickle", type=float, default=0.0)
    parser.add_argument("--min-rate", type=float, default=None)
    parser.add_argument("--fetch-timeout", type=float, default=None)
    args = parser.parse_args()
    tuning = {k: v for k, v in (("min_rate", args.min_rate), ("fetch_timeout", args.fetch_timeout)) if v is not None}

    allowed: set[str] | None = None if args.allow == "*" else set(filter(None, args.allow.split(",")))
    store = EmbeddedStorage(Path(args.data_dir) / "ipfs", fsync=args.fsync)
    served = 0

    def source(cid: str) -> bytes:
        nonlocal served
        block = store.get_block(cid)
        served += 1
        if args.die_after and served > args.die_after:
            os._exit(3)
        if args.corrupt and cid.startswith("bafkrei") and block:
            block = block[:-1] + bytes([block[-1] ^ 1])
        return block

    node = P2PNode(
        P2PConfig(Path(args.data_dir), direct_transfer=not args.inline, stall_timeout=args.stall_timeout, **tuning),
        store,
        lambda peer: allowed is None or peer in allowed,
        block_source=source,
    )
    if args.trickle:
        send_dag = node.server._send_dag

        async def trickling(root, send, aead):  # type: ignore[no-untyped-def]
            async def slowly(frame: bytes) -> None:
                for i in range(0, len(frame), 512):
                    await send(frame[i : i + 512])
                    await trio.sleep(512 / args.trickle)

            await send_dag(root, slowly, aead)

        node.server._send_dag = trickling  # type: ignore[method-assign]
    inboxes: dict[int, trio.MemoryReceiveChannel[Announcement]] = {}
    out = sys.stdout

    def reply(obj: dict) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        reply({"ready": True, "peer_id": node.peer_id, "addrs": node.addrs})
        stdin = trio.lowlevel.FdStream(os.dup(0))
        buf = b""
        while True:
            chunk = await stdin.receive_some(65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                cmd = json.loads(line)
                op = cmd["op"]
                try:
                    if op == "quit":
                        reply({"ok": True})
                        nursery.cancel_scope.cancel()
                        return
                    elif op == "put":
                        reply({"cid": store.put(payload(cmd["size"], cmd["seed"]))})
                    elif op == "connect":
                        reply({"peer": await node.connect(cmd["addr"])})
                    elif op == "allow":
                        allowed = set(cmd["peers"])
                        reply({"ok": True})
                    elif op == "subscribe":
                        inboxes[cmd["task"]] = await node.subscribe(cmd["task"])
                        reply({"ok": True})
                    elif op == "peers":
                        reply({"peers": node.gossip_peers(cmd["task"])})
                    elif op == "announce":
                        await node.announce(Announcement(cmd["task"], cmd["round"], cmd["kind"], cmd["cid"]))
                        reply({"ok": True})
                    elif op == "inbox":
                        got = []
                        for inbox in inboxes.values():
                            while True:
                                try:
                                    a = inbox.receive_nowait()
                                except trio.WouldBlock:
                                    break
                                got.append([a.task, a.round, a.kind, a.cid, a.sender])
                        reply({"announcements": got})
                    elif op == "fetch":
                        start = time.perf_counter()
                        limit = {"max_bytes": cmd["max_bytes"]} if "max_bytes" in cmd else {}
                        faults = await node.fetch(cmd["cid"], cmd["providers"], **limit)
                        seconds = time.perf_counter() - start
                        reply({"seconds": seconds, "faults": [[f.peer, f.kind, f.error] for f in faults]})
                    elif op == "offers":
                        reply({"offers": len(node.server._offers)})
                    elif op == "get":
                        reply({"sha256": hashlib.sha256(store.get(cmd["cid"])).hexdigest()})
                    else:
                        reply({"error": f"unknown op {op}"})
                except Exception as exc:  # report to the test; the test decides
                    reply({"error": f"{type(exc).__name__}: {exc}"})


if __name__ == "__main__":
    trio.run(main)
