"""Status JSON and Prometheus metrics over real loopback HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
import trio

from node.daemon.observability import Metrics, serve_status


def test_metrics_render_in_prometheus_text_format():
    m = Metrics()
    m.describe("rounds_completed", "counter", "Rounds this node saw finalized.")
    m.describe("round", "gauge", "Current round per task.")
    m.inc("rounds_completed")
    m.inc("rounds_completed", 2)
    m.set("round", 7, labels={"task": "1"})

    text = m.render()

    assert "# TYPE fedledger_rounds_completed counter" in text
    assert "fedledger_rounds_completed 3.0" in text
    assert 'fedledger_round{task="1"} 7.0' in text
    with pytest.raises(ValueError):
        m.inc("rounds_completed", -1)
    with pytest.raises(KeyError):
        m.inc("undescribed")


def test_status_and_metrics_are_served_on_loopback():
    metrics = Metrics()
    metrics.describe("up", "gauge", "1 while the daemon runs.")
    metrics.set("up", 1)
    got: dict[str, object] = {}

    def fetch(url: str):
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status, r.headers["Content-Type"], r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, None, ""

    async def main():
        async with trio.open_nursery() as nursery:
            host, port = await nursery.start(serve_status, "127.0.0.1:0", lambda: {"round": 3, "phase": "commit"}, metrics)
            base = f"http://{host}:{port}"
            got["host"] = host
            got["status"] = await trio.to_thread.run_sync(fetch, base + "/status")
            got["metrics"] = await trio.to_thread.run_sync(fetch, base + "/metrics")
            got["missing"] = await trio.to_thread.run_sync(fetch, base + "/nope")
            nursery.cancel_scope.cancel()

    trio.run(main)

    assert got["host"] == "127.0.0.1"
    code, ctype, body = got["status"]
    assert code == 200 and ctype == "application/json" and json.loads(body) == {"round": 3, "phase": "commit"}
    code, ctype, body = got["metrics"]
    assert code == 200 and "fedledger_up 1.0" in body
    assert got["missing"][0] == 404
