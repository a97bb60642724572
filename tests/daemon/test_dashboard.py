"""The live dashboard (GET /) in real headless Chromium, driven over the DevTools protocol.

Chromium is Debian's `chromium` package (scripts/test.sh installs it). Set
FEDLEDGER_DASHBOARD_SCREENSHOT=docs/dashboard.png to have the federation test save what the
browser shows (that is how the screenshot in docs/ is made).
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import trio
from websockets.sync.client import connect

from node.chain.anvil import Anvil
from node.daemon.dashboard import PAGES, page
from node.daemon.dashboard.history import History
from node.daemon.observability import Metrics, serve_status
from tests.daemon.federation import build_federation

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--remote-debugging-port=0", "--window-size=1280,1400", "--hide-scrollbars",
)  # fmt: skip
TASK_ROUND = "(e => e ? Number(e.textContent) : null)(document.querySelector('[data-task=\"1\"] .task-round'))"

# The round shown once its committee is drawn and every earlier round is in the table (else 0).
SETTLED = """(c => { if (!c) return 0; const r = Number(c.querySelector('.task-round').textContent);
  return c.querySelectorAll('.rounds tbody tr').length === r - 1 && c.querySelector('.task-committee span') ? r : 0;
})(document.querySelector('[data-task="1"]'))"""


class Page:
    """One Chromium tab over the DevTools protocol (JSON over a websocket)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        n = next(self.ids)
        self.ws.send(json.dumps({"id": n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=30))
            if msg.get("id") == n:  # events in between are not asked for
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, ok: Callable[[Any], bool], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if ok(value):
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last value {value!r}")
            time.sleep(0.25)

    def screenshot(self, path: Path) -> None:
        height = self.evaluate("Math.ceil(document.querySelector('main').getBoundingClientRect().bottom) + 8")
        self.call("Emulation.setDeviceMetricsOverride", width=1280, height=int(height), deviceScaleFactor=1, mobile=False)
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))


@contextmanager
def chromium(profile: Path) -> Iterator[Page]:
    """Headless Chromium with a fresh profile, on about:blank; stopped (its whole process group) on exit."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed: bash scripts/test.sh installs it (Debian package chromium)")
    proc = subprocess.Popen(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            assert proc.poll() is None, f"chromium exited with status {proc.returncode}"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port in 30 s"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        with connect(url, max_size=None, open_timeout=10) as ws:
            tab = Page(ws)
            tab.call("Page.enable")
            yield tab
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass


def test_the_page_needs_nothing_from_outside_the_machine():
    for name, _ in PAGES.values():
        text = page(name).decode()
        # The SVG namespace is a name, never fetched; any other absolute URL would be a request out.
        assert not re.findall(r"(?:https?:)?//(?!www\.w3\.org/2000/svg)[a-z0-9.-]+\.[a-z]{2,}", text, re.I), name
        assert "@import" not in text and "<script>" not in text and "innerHTML" not in text, name


@contextmanager
def status_server(status: Callable[[], dict[str, Any]]) -> Iterator[str]:
    """The daemon's status server (observability.serve_status) on a free loopback port, in a thread."""
    import threading

    ready: dict[str, Any] = {}
    stop = threading.Event()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            ready["addr"] = await nursery.start(serve_status, "127.0.0.1:0", status, Metrics())
            while not stop.is_set():
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while "addr" not in ready:
        assert time.monotonic() < deadline and thread.is_alive(), "the status server did not start"
        time.sleep(0.01)
    try:
        yield "http://%s:%d" % ready["addr"]
    finally:
        stop.set()
        thread.join(timeout=10)


def test_pages_and_status_answer_only_requests_that_name_the_daemon_by_address():
    def get(url: str, host: str) -> tuple[int, dict[str, str]]:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers={"Host": host}), timeout=5) as r:
                return r.status, dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers)

    with status_server(lambda: {"node": "0x0"}) as base:
        port = base.rpartition(":")[2]
        page_ok, headers = get(base + "/", f"127.0.0.1:{port}")
        script_ok = get(base + "/dashboard.js", f"localhost:{port}")[0]
        # A page on another site that re-points its own name at 127.0.0.1 (DNS rebinding).
        rebound = [get(base + path, f"evil.example:{port}")[0] for path in ("/", "/status", "/dashboard.js")]
        metrics = get(base + "/metrics", f"prometheus.internal:{port}")[0]

    assert page_ok == 200 and script_ok == 200
    assert headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert rebound == [400, 400, 400]
    assert metrics == 200  # scrapers name their targets as they like; metrics are not the page's


def test_history_keeps_the_last_entries_of_the_log_only():
    history = History("0x" + "11" * 20, keep=3)
    root = logging.getLogger("fedledger")
    level = root.level
    root.setLevel(logging.INFO)
    try:
        with history.listening():
            for i in range(10):
                logging.getLogger("fedledger.protocol").info("task 1 round %d: committed to update bafk%d", i, i)
                logging.getLogger("fedledger.daemon").warning("protocol loop: outage %d", i)
            logging.getLogger("fedledger.daemon").info("not an action")  # the daemon's info lines are not actions
        logging.getLogger("fedledger.daemon").warning("after: not kept")
    finally:
        root.setLevel(level)

    seen = history.snapshot()
    assert [e["text"] for e in seen["actions"]] == [f"task 1 round {i}: committed to update bafk{i}" for i in (7, 8, 9)]
    assert [e["text"] for e in seen["errors"]] == [f"protocol loop: outage {i}" for i in (7, 8, 9)]
    assert all(e["level"] == "warning" and e["source"] == "fedledger.daemon" for e in seen["errors"])


HOSTILE = '<img src=x onerror="document.title=\'pwned\'"><b>bold</b>'


def test_hostile_cids_and_errors_are_shown_as_text_never_run(tmp_path):
    # Prepare: a status whose chain- and peer-supplied strings are markup (a hostile task's CID,
    # an error quoting a peer), served by the daemon's own HTTP responder.
    status = {
        "node": "0x" + "ab" * 20, "peer_id": HOSTILE, "uptime_s": 5.0, "peers": 1, "last_error": HOSTILE,
        "tasks": {"1": {"round": 2, "rounds": 3, "finished": False, "phase": HOSTILE}},
        "not_joined": {}, "recent_actions": [],
        "dashboard": {
            "account": {"stake_wei": "1000000000000000000", "reputation_wad": "620000000000000000",
                        "pending_wei": "12345", "paid_wei": "0", "earned_wei": "12345"},
            "reputation": [{"block": 1, "task": None, "round": None, "wad": "500000000000000000"},
                           {"block": 9, "task": 1, "round": 1, "wad": "620000000000000000"}],
            "tasks": {"1": {"committee": {"round": 2, "members": [HOSTILE]},
                            "rounds": [{"round": 1, "block": 9, "cid": HOSTILE, "voided": False, "accuracy": 0.83,
                                        "reward_wei": "12345"}]}},
            "actions": [{"t": 1.0, "level": "info", "source": "fedledger.protocol", "text": HOSTILE}],
            "errors": [{"t": 2.0, "level": "warning", "source": "fedledger.daemon", "text": HOSTILE}],
            "peers": [{"address": HOSTILE, "peer_id": HOSTILE, "connected": True}],
            "updated": 3.0,
        },
    }  # fmt: skip
    with status_server(lambda: status) as base, chromium(tmp_path / "profile") as tab:
        # Execute
        tab.call("Page.navigate", url=base + "/")
        tab.wait_for(TASK_ROUND, lambda r: r == 2, timeout=20, what="the task's round on screen")
        seen = tab.evaluate("document.body.innerText")
        images = tab.evaluate("document.querySelectorAll('img, b').length")
        title = tab.evaluate("document.title")
        points = tab.evaluate("document.querySelectorAll('#plot-reputation circle').length")
        accuracy = tab.evaluate("document.querySelectorAll('[data-task=\"1\"] .plot-accuracy circle').length")

    # Assert: every hostile string is on screen, verbatim, as text; none became an element.
    assert seen.count(HOSTILE) >= 7, seen
    assert images == 0 and title == "FedLedger node"
    assert points == 2 and accuracy == 1
    assert "0.6200" in seen and "83.0%" in seen and "1.0000 ETH" in seen


@pytest.fixture
def anvil():
    with Anvil(accounts=10) as chain:
        yield chain


@pytest.mark.slow
def test_dashboard_follows_a_running_federation_in_chromium(anvil, tmp_path):
    # Prepare: three daemons on anvil, one task of 4 rounds; the browser opens node 0's page.
    fed = build_federation(tmp_path, anvil.url, n_nodes=3, rounds=4)
    node = fed.nodes[0]
    shot = os.environ.get("FEDLEDGER_DASHBOARD_SCREENSHOT")
    try:
        fed.start()
        found: list[str] = []

        def status_url() -> bool:
            found[:] = re.findall(r"status on (http://[0-9.]+:\d+)/status", node.text())
            return bool(found)

        fed.wait(status_url, timeout=60, what="node 0's status endpoint")
        with chromium(tmp_path / "profile") as tab:
            # Execute: load once, then only read the DOM while the federation runs.
            tab.call("Page.navigate", url=found[0] + "/")
            first = tab.wait_for(TASK_ROUND, lambda r: r is not None and r >= 1, timeout=60, what="a round on screen")
            tab.evaluate("window.loadedOnce = 'still here'")  # gone if the page reloaded
            second = tab.wait_for(TASK_ROUND, lambda r: r is not None and r > first, timeout=90, what="the round to advance")
            cid = tab.wait_for(
                "(e => e ? e.textContent : null)(document.querySelector('[data-task=\"1\"] .rounds tbody td.mono'))",
                lambda c: bool(c), timeout=30, what="a finished round's model CID",
            )  # fmt: skip
            kept = tab.evaluate("window.loadedOnce")
            reputation = tab.wait_for(
                "document.querySelectorAll('#plot-reputation circle').length", lambda n: n >= 2, 30, "reputation points"
            )
            accuracy = tab.wait_for(
                "document.querySelectorAll('[data-task=\"1\"] .plot-accuracy circle').length", lambda n: n >= 1, 30,
                "an accuracy point",
            )  # fmt: skip
            address = tab.evaluate("document.getElementById('node-address').textContent")
            if shot:
                tab.wait_for(SETTLED, lambda r: r >= 3, timeout=90, what="round 3 with its committee, for the screenshot")
                time.sleep(1.5)
                tab.screenshot(Path(shot))
    finally:
        fed.stop_all()

    # Assert: the round advanced on screen without a reload, and what is shown is the chain's.
    assert second > first >= 1 and kept == "still here"
    assert address == node.address
    client = fed.client
    finalized = {int(e.args["round"]): bytes(e.args["cid"]).decode() for e in client.logs("RoundFinalized", taskId=fed.task)}
    assert cid in finalized.values()
    assert reputation >= 2 and accuracy >= 1

    # A node that joins the task after the rounds ended (or restarts) still gets their history.
    late = History(node.address, from_block=fed.deployed_at)
    late.refresh(client, {})
    late.refresh(client, {fed.task: {"round": 1}})
    seen = late.snapshot()
    assert {r["round"]: r["cid"] for r in seen["tasks"][str(fed.task)]["rounds"]} == finalized
    assert seen["reputation"][-1]["wad"] == str(client.reputation_of(node.address))
    credited = client.logs("RewardCredited", account=node.address)
    assert int(seen["account"]["earned_wei"]) == sum(e.args["amount"] for e in credited)
    assert seen["account"]["pending_wei"] == str(client.pending_rewards(node.address))
    assert seen["account"]["held_wei"] == str(client.probation_of(node.address)[2])
    # paid, or (stopped before its 3rd scored round ended its probation) held
    assert int(seen["account"]["earned_wei"]) + int(seen["account"]["held_wei"]) > 0
