"""What an operator watches: a live dashboard, a JSON status endpoint and Prometheus metrics.

Served by a tiny HTTP/1.1 responder on trio (GET / and its script and style, GET /status,
GET /metrics, GET /healthz), bound to loopback unless configured otherwise. The dashboard
(node/daemon/dashboard/) is static files that poll /status: nothing is loaded from outside
the machine, and the page's content security policy forbids it.
"""

from __future__ import annotations

import ipaddress
import json
import math
import threading
from typing import Any, Callable

import trio

from node.daemon.dashboard import PAGES, page


class Metrics:
    """Counters and gauges, rendered in the Prometheus text exposition format (0.0.4)."""

    def __init__(self, prefix: str = "fedledger") -> None:
        self.prefix = prefix
        self._lock = threading.Lock()
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._meta: dict[str, tuple[str, str]] = {}  # name -> (type, help)

    def describe(self, name: str, kind: str, help_text: str) -> None:
        if kind not in ("counter", "gauge"):
            raise ValueError(f"unknown metric type {kind!r}")
        self._meta[name] = (kind, help_text)

    def _key(self, name: str, labels: dict[str, str] | None) -> tuple[str, tuple[tuple[str, str], ...]]:
        if name not in self._meta:
            raise KeyError(f"metric {name!r} was not described")
        return name, tuple(sorted((labels or {}).items()))

    def inc(self, name: str, amount: float = 1.0, labels: dict[str, str] | None = None) -> None:
        if amount < 0:
            raise ValueError("counters only go up")
        key = self._key(name, labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def set(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        key = self._key(name, labels)
        with self._lock:
            self._values[key] = float(value)

    def get(self, name: str, labels: dict[str, str] | None = None) -> float:
        with self._lock:
            return self._values.get(self._key(name, labels), 0.0)

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            values = dict(self._values)
        for name, (kind, help_text) in sorted(self._meta.items()):
            full = f"{self.prefix}_{name}"
            lines.append(f"# HELP {full} {help_text}")
            lines.append(f"# TYPE {full} {kind}")
            for (metric, labels), value in sorted(values.items()):
                if metric != name:
                    continue
                label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                shown = repr(value) if not math.isinf(value) else ("+Inf" if value > 0 else "-Inf")
                lines.append(f"{full}{{{label_text}}} {shown}" if label_text else f"{full} {shown}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 400: "Bad Request"}
# Every response: the page may load only this daemon's own files and data, never run inline
# script (a CID or an error text from a hostile peer is shown as text, and could not run if it
# were not), and no other site may frame it.
_HEADERS = (
    "Content-Security-Policy: default-src 'self'; img-src 'self' data:; frame-ancestors 'none'\r\n"
    "X-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\n"
)


async def _respond(stream: trio.abc.Stream, code: int, body: bytes, content_type: str) -> None:
    head = (
        f"HTTP/1.1 {code} {_REASONS[code]}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n{_HEADERS}Connection: close\r\n\r\n"
    ).encode()
    await stream.send_all(head + body)


def _addressed_by_ip(request: bytes) -> bool:
    """Whether the request names this server by an IP address or localhost (or not at all).

    A web page elsewhere could otherwise read /status through DNS rebinding: its own name,
    re-pointed at 127.0.0.1, makes the daemon the page's same origin. Browsers always send the
    name they used, so a request that names any other host is refused."""
    for line in request.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() != b"host":
            continue
        host = value.strip().decode("ascii", errors="replace").lower()
        if host.startswith("["):  # [IPv6]:port
            host = host[1:].partition("]")[0]
        elif host.count(":") == 1:  # name:port, IPv4:port (a bare IPv6 address has more colons)
            host = host.partition(":")[0]
        if host == "localhost" or host.endswith(".localhost"):
            return True
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return False
        return True
    return True


def make_handler(status: Callable[[], dict[str, Any]], metrics: Metrics) -> Callable[[trio.abc.Stream], Any]:
    async def handle(stream: trio.abc.Stream) -> None:
        try:
            data = b""
            with trio.move_on_after(5):
                while b"\r\n\r\n" not in data and len(data) < 8192:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        break
                    data += chunk
            parts = data.split(b"\r\n", 1)[0].split()
            if len(parts) != 3:
                await _respond(stream, 400, b"bad request\n", "text/plain")
                return
            method, target = parts[0].decode(errors="replace"), parts[1].decode(errors="replace").split("?")[0]
            if method != "GET":
                await _respond(stream, 405, b"only GET\n", "text/plain")
            elif (target == "/status" or target in PAGES) and not _addressed_by_ip(data):
                await _respond(stream, 400, b"ask by IP address or localhost, not by name\n", "text/plain")
            elif target == "/status":
                body = json.dumps(status(), indent=2, default=str).encode() + b"\n"
                await _respond(stream, 200, body, "application/json")
            elif target == "/metrics":
                await _respond(stream, 200, metrics.render().encode(), "text/plain; version=0.0.4")
            elif target in PAGES:
                name, content_type = PAGES[target]
                await _respond(stream, 200, page(name), content_type)
            elif target == "/healthz":
                await _respond(stream, 200, b"ok\n", "text/plain")
            else:
                await _respond(stream, 404, b"not found\n", "text/plain")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away; nothing to tell it
        finally:
            await stream.aclose()

    return handle


async def serve_status(
    listen: str,
    status: Callable[[], dict[str, Any]],
    metrics: Metrics,
    *,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; reports the bound (host, port) through task_status."""
    host, _, port = listen.rpartition(":")
    listeners = await trio.open_tcp_listeners(int(port), host=host)
    bound = listeners[0].socket.getsockname()[:2]
    task_status.started((bound[0], bound[1]))
    await trio.serve_listeners(make_handler(status, metrics), listeners)
