"""The chain's RPC endpoint goes away for ~10 s in the middle of a federation (SPEC §8: survive
the chain RPC going away, retry with backoff, log, carry on).

The daemons reach anvil through a TCP relay that the test owns; cutting it closes the listening
socket and every relayed connection, so the daemons see refused connects and reset keep-alive
sockets, as they would if the RPC host went down. The test itself talks to anvil directly.
"""

from __future__ import annotations

import re
import socket
import threading
import time

import pytest

from node.chain.anvil import Anvil, free_port
from tests.daemon.federation import build_federation, committed_count, point_nodes_at

pytestmark = pytest.mark.slow

OUTAGE_S = 10.0
# What the cut looks like in a daemon's log: requests' ConnectionError (refused connects, reset
# keep-alive sockets), retried by the protocol loop. Other warnings (a lost race to finalize or to
# draw the committee) happen in any run and are not the outage's.
WARNING = re.compile(r"WARNING +fedledger\.daemon: protocol loop: ConnectionError: .*retrying in")


class TcpProxy:
    """A loopback TCP relay to `upstream` that can be cut and restored on the same port.

    Threads, not trio: it lives in the test process only. Bounded: at most `max_conns` relayed
    connections at once (more are closed on accept), every thread is joined by `stop`."""

    def __init__(self, upstream: tuple[str, int], max_conns: int = 32) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.max_conns = max_conns
        self.accepted = [0]  # connections relayed, per generation (each start() opens one)
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._stopping.clear()
        if self._listener is not None or self.accepted[-1]:
            self.accepted.append(0)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # rebind while old ones sit in TIME_WAIT
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        listener.settimeout(0.2)  # so the accept loop notices stop() promptly
        self._listener = listener
        with self._lock:
            self._spawn(self._accept_loop, listener)

    def stop(self) -> None:
        """Close the listener and every relayed connection; returns once every thread has ended."""
        self._stopping.set()
        with self._lock:
            conns, self._conns = list(self._conns), set()
            threads, self._threads = self._threads, []
        for s in conns:
            _close(s)  # wakes both pumps of the pair: recv returns or raises
        for t in threads:
            t.join(timeout=5)
            assert not t.is_alive(), f"proxy thread {t.name} did not stop"
        if self._listener is not None:
            self._listener.close()

    def _spawn(self, target, *args) -> None:
        t = threading.Thread(target=target, args=args, daemon=True, name=f"proxy-{target.__name__}")
        self._threads.append(t)
        t.start()

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                if self._stopping.is_set() or len(self._conns) >= 2 * self.max_conns:
                    client.close()
                    continue
                try:
                    server = socket.create_connection(self.upstream, timeout=5)
                except OSError:
                    client.close()
                    continue
                server.settimeout(None)
                self._conns.update((client, server))
                self.accepted[-1] += 1
                self._spawn(self._pump, client, server)
                self._spawn(self._pump, server, client)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:  # either side gone: drop the pair (HTTP clients never half-close)
            for s in (src, dst):
                _close(s)
            with self._lock:
                self._conns.difference_update((src, dst))


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()


@pytest.fixture
def anvil():
    with Anvil(accounts=10) as chain:
        yield chain


def test_daemons_ride_out_an_rpc_outage(anvil, tmp_path):
    # Prepare: three daemons whose only way to the chain is the proxy.
    rounds = 3
    fed = build_federation(tmp_path, anvil.url, n_nodes=3, rounds=rounds)
    proxy = TcpProxy(("127.0.0.1", anvil.port))
    proxy.start()
    point_nodes_at(fed, proxy.url)
    client = fed.client  # the test's own view of the chain, not through the proxy
    try:
        for n in fed.nodes:
            n.start()
        # Execute: cut the RPC once round 1 is under way, for ~10 s, then restore it on the same port.
        fed.wait(lambda: any(committed_count(fed, n.address) for n in fed.nodes), timeout=180, what="a first commit")
        proxy.stop()
        cut_at = time.monotonic()
        round_at_cut = client.task_info(fed.task).current_round
        # Every daemon runs into the outage (a poll every 0.2 s, web3's own retries take ~4 s).
        fed.wait(lambda: all(WARNING.search(n.text()) for n in fed.nodes), timeout=OUTAGE_S, what="outage warnings")
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - cut_at)))
        during = client.task_info(fed.task)
        proxy.start()
        fed.wait(lambda: client.task_info(fed.task).finished, timeout=150, what="the task to finish after the outage")
        codes = [n.proc.wait(timeout=60) for n in fed.nodes]
    finally:
        fed.stop_all()
        proxy.stop()

    # Assert: logged, recovered through the restored proxy, finished, nothing sent twice.
    assert not during.finished and round_at_cut <= during.current_round < rounds  # the cut landed mid-task
    assert proxy.accepted[0] > 0 and proxy.accepted[1] > 0  # daemons came back through the proxy
    assert codes == [0] * len(fed.nodes), [n.text()[-2000:] for n in fed.nodes]
    cid, round_ = client.global_model(fed.task)
    assert round_ == rounds and cid.startswith("bafk")
    for n in fed.nodes:
        text = n.text()
        assert WARNING.search(text), f"node {n.index} logged no outage:\n{text[-2000:]}"
        last_warning = max(m.end() for m in WARNING.finditer(text))
        assert re.search(r"(revealed|proposed|attested|finalized)", text[last_warning:]), f"node {n.index} did not act after the outage"
        assert committed_count(fed, n.address) == rounds  # exactly once per round
        assert "Traceback" not in text
