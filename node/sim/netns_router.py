"""The userspace router of an impaired network (node/sim/netns.py): it delays and drops packets.

One process holds a TUN device in each host namespace and one in the root namespace. It reads
every IPv4 packet a namespace sends, drops it with probability `loss` (or always, for a host
that is cut off), and writes the rest, `delay` seconds later and in order, to the TUN of the
destination address: what `tc netem` would do, on kernels without sch_netem. It counts what it
did, and obeys one command per stdin line (`cut ADDR`, `restore ADDR`, `stats`).

Runbook (as root; `ImpairedNetwork` starts it this way):

    .venv/bin/python node/sim/netns_router.py router '<json>'    # see run_router for the JSON

This file imports only the standard library, so the router starts as a plain script in a
fraction of a second.
"""

from __future__ import annotations

import ctypes
import heapq
import json
import os
import random
import selectors
import socket
import struct
import sys
import time
from pathlib import Path

NETNS_DIR = Path("/run/netns")  # where `ip netns add` keeps its named namespaces
CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000  # bare IP packets, no 4-byte packet-info header
MAX_QUEUED = 20_000  # packets in flight in the router; beyond it, drop (a full queue, as a router would)


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace open at `fd` (os.setns needs 3.12)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _open_tun(ifname: str) -> int:
    """Create TUN device `ifname` in the calling thread's namespace; returns its (non-blocking) fd.
    The device lives as long as the fd is open, wherever the process holding it moves."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        import fcntl

        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", ifname.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def run_router(spec: dict) -> int:
    """The router's main loop. `spec`: {"delay": s, "loss": p, "seed": n, "ports": [{"netns": name
    or null for this namespace, "ifname": ..., "addr": "a.b.c.d"}]}. Prints `ready` once every
    TUN exists, then obeys one command per stdin line (`cut ADDR`, `restore ADDR`, `stats`),
    answering one line each; exits when stdin closes."""
    delay, loss = float(spec["delay"]), float(spec["loss"])
    rng = random.Random(spec.get("seed"))
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    fds: list[int] = []
    by_addr: dict[bytes, int] = {}  # destination address -> the fd of the TUN that reaches it
    addr_of: dict[int, bytes] = {}
    for port in spec["ports"]:
        if port["netns"]:
            with open(NETNS_DIR / port["netns"]) as ns:
                setns(ns.fileno())
        try:
            fd = _open_tun(port["ifname"])
        finally:
            if port["netns"]:
                setns(home)
        addr = socket.inet_aton(port["addr"])
        fds.append(fd)
        by_addr[addr] = fd
        addr_of[fd] = addr
    cut: set[bytes] = set()
    counts = {"forwarded": 0, "lost": 0, "cut": 0, "unroutable": 0, "overflow": 0}
    queue: list[tuple[float, int, int, bytes]] = []  # (due, sequence, fd, packet): FIFO per due time
    seq = 0
    sel = selectors.DefaultSelector()
    for fd in fds:
        sel.register(fd, selectors.EVENT_READ, fd)
    stdin = sys.stdin.fileno()
    os.set_blocking(stdin, False)
    sel.register(stdin, selectors.EVENT_READ, None)
    pending = b""
    print("ready", flush=True)
    while True:
        now = time.monotonic()
        timeout = max(0.0, queue[0][0] - now) if queue else None
        for key, _ in sel.select(timeout):
            if key.data is None:
                try:
                    chunk = os.read(stdin, 4096)
                except BlockingIOError:
                    continue
                if not chunk:
                    return 0
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    words = line.decode(errors="replace").split()
                    if words[:1] == ["stats"]:
                        reply = json.dumps(counts)
                    elif len(words) == 2 and words[0] in ("cut", "restore"):
                        try:
                            addr = socket.inet_aton(words[1])
                        except OSError:
                            reply = f"error: bad address {words[1]!r}"
                        else:
                            (cut.add if words[0] == "cut" else cut.discard)(addr)
                            reply = "ok"
                    else:
                        reply = f"error: unknown command {line[:80]!r}"
                    print(reply, flush=True)
                continue
            src_fd = key.data
            for _ in range(256):  # bounded, so one busy TUN cannot starve delivery
                try:
                    packet = os.read(src_fd, 65536)
                except (BlockingIOError, InterruptedError):
                    break
                if len(packet) < 20 or packet[0] >> 4 != 4:
                    counts["unroutable"] += 1  # IPv6 (router solicitations and the like): not routed
                    continue
                out = by_addr.get(packet[16:20])
                if out is None:
                    counts["unroutable"] += 1
                elif addr_of[src_fd] in cut or packet[16:20] in cut:
                    counts["cut"] += 1
                elif rng.random() < loss:
                    counts["lost"] += 1
                elif len(queue) >= MAX_QUEUED:
                    counts["overflow"] += 1
                else:
                    seq += 1
                    heapq.heappush(queue, (time.monotonic() + delay, seq, out, packet))
                    counts["forwarded"] += 1
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _due, _seq, out, packet = heapq.heappop(queue)
            try:
                os.write(out, packet)
            except OSError:  # the destination's queue is full or its interface is down: lost
                counts["overflow"] += 1


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "router":
        sys.exit(f"usage: {sys.argv[0]} router SPEC_JSON")
    try:
        sys.exit(run_router(json.loads(sys.argv[2])))
    except (OSError, ValueError, KeyError) as exc:
        sys.exit(f"netns router: {type(exc).__name__}: {exc}")
