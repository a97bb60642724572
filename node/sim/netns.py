"""Impaired networks for multi-process tests: hosts in Linux network namespaces, each with its own
address, joined by a userspace router that delays and drops packets.

Why a userspace router and not `tc netem`: the usual recipe (veth pairs, `tc qdisc add ... netem
delay 50ms loss 1%`) needs the kernel's sch_netem, and kernels built for sandboxes and CI VMs
often lack it with no module to load (this project's test machine has neither netem nor
iptables/nft for a statistic drop). TUN devices are there almost everywhere. So each host
namespace gets one TUN device, `fl0`, with a /24 address, and the root namespace gets one more
(anvil and the test live there). All of their file descriptors are held by one router process
in the root namespace, which reads every IPv4 packet a namespace sends, drops it with
probability `loss`, and writes the rest, `delay` seconds later and in order, to the TUN of the
destination address. The kernel's TCP sees exactly what netem would give it: a constant one-way
delay per hop and independent random loss; a packet between two host namespaces crosses the
router once, so their round trip gains 2 x delay.

The router also cuts hosts off on request (every packet to or from the host is dropped, as if
its cable were pulled; the host's own interface stays up, so its sockets see silence, not an
error), and counts what it did. Cleanup is the point of the context manager: leaving it, even
on an exception, kills every process left in the namespaces, stops the router (its TUN devices
vanish with it) and deletes the namespaces; `leftovers()` says what, if anything, survived.

The router is its own standard-library-only script (node/sim/netns_router.py), so it starts in
a fraction of a second; this module sets up the namespaces around it and drives it.

Runbook (as root):

    .venv/bin/python -m pytest -q tests/daemon/test_netns.py    # daemons across namespaces
    .venv/bin/python node/sim/netns_router.py router '<json>'   # the router alone; see run_router
"""

from __future__ import annotations

import json
import os
import re
import secrets
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from node.children import parent_death_signal
from node.sim import netns_router
from node.sim.netns_router import NETNS_DIR, setns

HOST_IFNAME = "fl0"  # every host namespace's interface to the router
OUR_NETNS = re.compile(r"fl(\d+)x[0-9a-f]{4}-\d+")  # fl<pid of the test>x<tag>-<host>


class NetnsError(RuntimeError):
    """Raised when a namespace, a TUN device or the router cannot be set up, or the router fails."""


def missing_capability() -> str | None:
    """What this machine lacks to build an ImpairedNetwork, in words; None when nothing."""
    if not sys.platform.startswith("linux"):
        return "Linux network namespaces (this is not Linux)"
    if os.geteuid() != 0:
        return "root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to create network namespaces and TUN devices"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2)"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun (the TUN driver)"
    name = f"flprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` ({made.stderr.strip() or 'failed'})"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def _in_netns(name: str, fn):
    """Run `fn()` in a short-lived thread moved into namespace `name`; returns its result.

    A socket keeps the namespace it was created in, so `_in_netns(ns, lambda: socket.socket())`
    gives the caller a socket inside `ns` without moving any thread the caller uses."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            with open(NETNS_DIR / name) as ns:
                setns(ns.fileno())
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    t = threading.Thread(target=run, name=f"netns-{name}", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]


# -- the network, seen from the test -------------------------------------------------------------


@dataclass(frozen=True)
class Host:
    index: int
    netns: str  # the namespace's name under /run/netns
    addr: str  # its address on the impaired network

    @property
    def prefix(self) -> tuple[str, ...]:
        """Run a command in this host's namespace: prefix it with this."""
        return ("ip", "netns", "exec", self.netns)


@dataclass
class Probe:
    """What a UDP echo probe saw: datagrams sent, echoes back, and their round-trip times (s)."""

    sent: int
    received: int
    rtts: list[float] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.sent - self.received


def _run(*cmd: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise NetnsError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip() or proc.returncode}")


def reap_stale() -> list[str]:
    """Delete the namespaces of networks whose test process is gone (killed with SIGKILL, so its
    `close` never ran); returns their names. The router and the daemons of such a run died with
    it (parent-death signal); only the named namespaces outlive a process."""
    reaped = []
    for path in NETNS_DIR.glob("fl*x*-*") if NETNS_DIR.is_dir() else []:
        m = OUR_NETNS.fullmatch(path.name)
        if m is None or _alive(int(m.group(1))):
            continue
        for pid in subprocess.run(["ip", "netns", "pids", path.name], capture_output=True, text=True).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        if subprocess.run(["ip", "netns", "del", path.name], capture_output=True).returncode == 0:
            reaped.append(path.name)
    return reaped


def _free_subnet() -> str:
    """A 10.x.y.0/24 that no interface of this machine uses yet (concurrent runs pick apart)."""
    used = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True).stdout
    for _ in range(100):
        base = f"10.{secrets.randbelow(100) + 100}.{secrets.randbelow(256)}"
        if f" {base}." not in used:
            return base
    raise NetnsError("no free 10.x.y.0/24 subnet for the impaired network")


class ImpairedNetwork:
    """`hosts` network namespaces and the root namespace on one /24, every packet between them
    delayed `delay` s and dropped with probability `loss` by a router process.

    The root namespace has address `root_addr` (bind anvil there: the test reaches it directly,
    the hosts through the router). `hosts[i].prefix` runs a command in host i's namespace."""

    def __init__(self, hosts: int, delay: float = 0.05, loss: float = 0.01, seed: int | None = None) -> None:
        self.delay, self.loss, self.seed = delay, loss, seed
        tag = f"{os.getpid()}x{secrets.token_hex(2)}"
        self.root_ifname = f"flr{tag}"[:15]
        self.names = [f"fl{tag}-{i}" for i in range(hosts)]
        self.hosts: list[Host] = []
        self.root_addr = ""
        self.router: subprocess.Popen[str] | None = None
        self.killed: list[int] = []  # processes found in the namespaces at close and killed there
        self._lock = threading.Lock()

    def __enter__(self) -> "ImpairedNetwork":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        reap_stale()
        base = _free_subnet()
        self.root_addr = f"{base}.1"
        for i, name in enumerate(self.names):
            _run("ip", "netns", "add", name)
            self.hosts.append(Host(i, name, f"{base}.{10 + i}"))
        ports = [{"netns": None, "ifname": self.root_ifname, "addr": self.root_addr}]
        ports += [{"netns": h.netns, "ifname": HOST_IFNAME, "addr": h.addr} for h in self.hosts]
        spec = {"delay": self.delay, "loss": self.loss, "seed": self.seed, "ports": ports}
        self.router = subprocess.Popen(
            [sys.executable, str(Path(netns_router.__file__).resolve()), "router", json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=parent_death_signal(),
        )  # fmt: skip
        line = self._read_line(timeout=20)
        if line != "ready":
            err = self.router.stderr.read() if self.router.poll() is not None and self.router.stderr else ""
            raise NetnsError(f"the router did not start: {line or err.strip().splitlines()[-1:] or 'no output'}")
        _run("ip", "addr", "add", f"{self.root_addr}/24", "dev", self.root_ifname)
        _run("ip", "link", "set", self.root_ifname, "up")
        for h in self.hosts:
            _run("ip", "-n", h.netns, "link", "set", "lo", "up")
            _run("ip", "-n", h.netns, "addr", "add", f"{h.addr}/24", "dev", HOST_IFNAME)
            _run("ip", "-n", h.netns, "link", "set", HOST_IFNAME, "up")

    def _read_line(self, timeout: float) -> str:
        assert self.router is not None and self.router.stdout is not None
        ready, _, _ = select.select([self.router.stdout], [], [], timeout)
        if not ready:
            raise NetnsError(f"the router did not answer within {timeout:.0f} s")
        return self.router.stdout.readline().strip()

    def _command(self, line: str) -> str:
        with self._lock:
            if self.router is None or self.router.poll() is not None:
                raise NetnsError("the router is not running")
            assert self.router.stdin is not None
            self.router.stdin.write(line + "\n")
            self.router.stdin.flush()
            reply = self._read_line(timeout=10)
        if reply.startswith("error") or not reply:
            raise NetnsError(f"router: {reply or 'no answer'} (to {line!r})")
        return reply

    def cut(self, host: Host) -> None:
        """Drop every packet to or from `host` from now on (its cable is pulled)."""
        self._command(f"cut {host.addr}")

    def restore(self, host: Host) -> None:
        self._command(f"restore {host.addr}")

    def stats(self) -> dict[str, int]:
        """The router's counters: packets forwarded, lost at random, dropped by a cut, unroutable."""
        return json.loads(self._command("stats"))

    def socket_in(self, host: Host, kind: int = socket.SOCK_DGRAM) -> socket.socket:
        """An IPv4 socket that lives in `host`'s namespace."""
        return _in_netns(host.netns, lambda: socket.socket(socket.AF_INET, kind))

    def probe(self, a: Host, b: Host, count: int = 500, interval: float = 0.002) -> Probe:
        """UDP echo from `a` to `b` and back: `count` datagrams, one every `interval` s. Every echo
        crosses the router twice, so its round trip is at least 2 x delay, and it survives with
        probability (1 - loss)^2."""
        server, client = self.socket_in(b), self.socket_in(a)
        stop = threading.Event()
        try:
            server.bind((b.addr, 0))
            server.settimeout(0.1)
            client.bind((a.addr, 0))
            client.setblocking(False)

            def echo() -> None:
                while not stop.is_set():
                    try:
                        data, peer = server.recvfrom(64)
                    except TimeoutError:
                        continue
                    server.sendto(data, peer)

            t = threading.Thread(target=echo, name="netns-echo", daemon=True)
            t.start()
            sent_at: dict[int, float] = {}
            result = Probe(count, 0)
            seen: set[int] = set()

            def drain(until: float) -> None:
                while True:
                    left = until - time.monotonic()
                    if left <= 0 or not select.select([client], [], [], left)[0]:
                        return
                    data = client.recv(64)
                    (n,) = struct.unpack("!I", data[:4])
                    if n in sent_at and n not in seen:
                        seen.add(n)
                        result.rtts.append(time.monotonic() - sent_at[n])

            for n in range(count):
                sent_at[n] = time.monotonic()
                client.sendto(struct.pack("!I", n), server.getsockname())
                drain(time.monotonic() + interval)
            drain(time.monotonic() + 4 * self.delay + 1.0)
            result.received = len(seen)
            stop.set()
            t.join(timeout=5)
            return result
        finally:
            stop.set()
            server.close()
            client.close()

    def close(self) -> None:
        """Kill whatever still runs in the namespaces, stop the router, delete the namespaces."""
        for name in self.names:
            if not (NETNS_DIR / name).exists():
                continue
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
            for pid in map(int, pids):
                try:
                    os.kill(pid, signal.SIGKILL)
                    self.killed.append(pid)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in self.killed) and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.router is not None:
            if self.router.poll() is None:
                try:
                    assert self.router.stdin is not None
                    self.router.stdin.close()  # the router's signal to exit
                    self.router.wait(timeout=5)
                except (OSError, subprocess.TimeoutExpired):
                    self.router.kill()
                    self.router.wait()
            for pipe in (self.router.stdout, self.router.stderr):
                if pipe is not None:
                    pipe.close()
        for name in self.names:
            if (NETNS_DIR / name).exists():
                subprocess.run(["ip", "netns", "del", name], capture_output=True)

    def leftovers(self) -> list[str]:
        """Everything of this network that still exists: namespaces, the root TUN device, the
        router, processes killed at close. Empty after a clean `close`."""
        left = [f"namespace {n}" for n in self.names if (NETNS_DIR / n).exists()]
        if Path("/sys/class/net", self.root_ifname).exists():
            left.append(f"interface {self.root_ifname}")
        if self.router is not None and self.router.poll() is None:
            left.append(f"router pid {self.router.pid}")
        left += [f"pid {pid}" for pid in self.killed if _alive(pid)]
        return left


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped by its parent, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")
