"""Flower ClientApps in real daemons on anvil (#15): both styles run unchanged in `fedledger
simulate --chain anvil`, with accuracy per round; the daemons compute the round's model the
in-process simulation computes from the same seed; a node whose app fails in a round refuses
that round with one line and works on, its daemon up and serving /status and /metrics."""

from __future__ import annotations

import json
import re
import urllib.request

import pytest

from node.chain.anvil import Anvil, free_port
from node.sim.federation import FederationConfig, build_federation
from node.sim.simulate import SimulationConfig, run_simulation
from node.taskspec import TaskSpec
from node.units import ETHER
from tests.conftest import REPO, run_cli
from tests.daemon.federation import committed_count

pytestmark = pytest.mark.slow

MESSAGE_APP = REPO / "examples" / "flower_message" / "client_app.py"
NUMPY_APP = REPO / "examples" / "flower_numpy" / "client_app.py"
SEED = 11


def test_a_message_api_app_federates_in_daemons_as_in_process(tmp_path):
    # Execute: three daemons on anvil, each running the app from its own node.toml [app] ref.
    proc = run_cli(
        "simulate", "--chain", "anvil", "--nodes", "3", "--rounds", "2", "--epochs", "1", "--seed", str(SEED),
        "--app", f"{MESSAGE_APP}:app", "--model", f"{MESSAGE_APP}:Net",
        "--workdir", str(tmp_path / "fed"), "--report", str(tmp_path / "report"), timeout=240,
    )  # fmt: skip

    # Assert: both rounds finalized, accuracy reported per round and rising well above chance.
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["config"]["daemons"] is True
    rounds = summary["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    accuracy = [summary["initial_accuracy"], *(r["test_accuracy"] for r in rounds)]
    assert accuracy[0] < 0.25 and accuracy[2] > 0.45 and accuracy[2] > accuracy[0] + 0.2, accuracy
    for i in range(3):
        toml = (tmp_path / "fed" / f"node{i}" / "node.toml").read_text()
        assert f'ref = "{MESSAGE_APP}:app"' in toml and f"partition-id = {i}" in toml
        assert not (tmp_path / "fed" / f"node{i}" / "data.npz").exists()  # the app loads its own data

    # One implementation: the in-process federation with the same seed makes the same models.
    spec = TaskSpec(app=f"{MESSAGE_APP}:app", epochs=1)
    local = run_simulation(SimulationConfig(nodes=3, rounds=2, seed=SEED, spec=spec, model_ref=f"{MESSAGE_APP}:Net"))
    assert [r.global_model_cid for r in local.rounds] == [r["global_model_cid"] for r in rounds]


BAD_APP = '''
"""The NumPyClient example, but its fit fails in round {fail_round}: it {mode}s."""
import importlib.util

import numpy as np
from flwr.clientapp import ClientApp

_spec = importlib.util.spec_from_file_location("flower_numpy_example", {example!r})
example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(example)


class Failing(example.FlowerClient):
    def fit(self, parameters, config):
        if int(config["server-round"]) == {fail_round}:
            if {mode!r} == "raise":
                raise RuntimeError("the GPU caught fire")
            return [np.full_like(p, np.nan) for p in parameters], 10, {{}}
        return super().fit(parameters, config)


def client_fn(context):
    train, test = example.load_data(context, int(context.run_config["batch-size"]))
    return Failing(example.Net(), train, test, int(context.run_config["local-epochs"])).to_client()


app = ClientApp(client_fn=client_fn)
'''


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def test_an_app_that_fails_in_a_round_is_refused_for_that_round_and_the_daemon_goes_on(tmp_path):
    # Prepare: four daemons on the NumPyClient example; node 2's copy raises in round 2's fit and
    # node 3's returns NaN there. Short phase timeouts: round 2 goes on without them.
    with Anvil(accounts=1) as anvil:
        spec = TaskSpec(app=f"{NUMPY_APP}:app", epochs=1)
        config = FederationConfig(nodes=4, rounds=3, spec=spec, run_seed=SEED, funding_wei=5 * ETHER,
                                  commit_timeout=20, reveal_timeout=20, propose_timeout=20, attest_timeout=20)  # fmt: skip
        fed = build_federation(tmp_path, anvil.url, config)
        ports = {}
        for node, mode in ((fed.nodes[2], "raise"), (fed.nodes[3], "return NaN")):
            bad = node.directory / "bad_app.py"
            bad.write_text(BAD_APP.format(fail_round=2, mode=mode.split()[0], example=str(NUMPY_APP)))
            text = node.config.read_text().replace(f'ref = "{NUMPY_APP}:app"', 'ref = "bad_app.py:app"')
            ports[node.index] = free_port()
            text = text.replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{ports[node.index]}"')
            node.config.write_text(text)
        bad_nodes = fed.nodes[2:]

        # Execute: run until round 2 is past its commit phase's refusals, look at the bad nodes
        # while the round waits for them, then let the task finish.
        try:
            fed.start()
            fed.wait(lambda: all("task 1 round 2: the app failed" in n.text() for n in bad_nodes),
                     timeout=120, what="the bad nodes' refusals of round 2")  # fmt: skip
            base = f"http://127.0.0.1:{ports[2]}"
            fed.wait(lambda: "1" in json.loads(_get(base + "/status"))["evaluation"], timeout=60,
                     what="node 2's evaluation of round 1's model")  # fmt: skip
            status, metrics = json.loads(_get(base + "/status")), _get(base + "/metrics")
            assert fed.nodes[2].running() and fed.nodes[3].running()
            fed.wait(lambda: fed.client.task_info(fed.task).finished, timeout=180, what="task 1 to finish")
        finally:
            fed.stop_all()

        # Assert: every round finalized; the bad nodes sat round 2 out and committed in round 3.
        client = fed.client
        finalized = [e.args["round"] for e in client.logs("RoundFinalized", taskId=fed.task)]
        assert finalized == [1, 2, 3]
        assert len(client.round_updates(fed.task, 2)) == 2
        seated_in_3 = set(client.committee(fed.task, 3))
        for n in bad_nodes:
            log = n.text()
            assert log.count("the app failed") == 1, log[-3000:]
            assert "Traceback" not in log and "task 1 skipped" not in log, log[-3000:]
            assert committed_count(fed, n.address) == 1 + (n.address in seated_in_3), log[-3000:]
        line = next(line for line in fed.nodes[2].text().splitlines() if "the app failed" in line)
        assert "app bad_app.py:app: fit raised RuntimeError: the GPU caught fire" in line, line
        assert "not committing this round" in line, line
        line = next(line for line in fed.nodes[3].text().splitlines() if "the app failed" in line)
        assert "NaN" in line and "not committing this round" in line, line

        # The refusing daemon was up and reported round 1's model, evaluated with its app.
        evaluation = status["evaluation"]["1"]
        assert evaluation["round"] >= 1 and 0.3 < evaluation["metrics"]["accuracy"] <= 1, status["evaluation"]
        match = re.search(r'^fedledger_model_metric\{[^}]*metric="accuracy"[^}]*\} (\S+)$', metrics, re.M)
        assert match and float(match.group(1)) == pytest.approx(evaluation["metrics"]["accuracy"], abs=1e-6), metrics


RAISING_APP = '''
import numpy as np
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp


class Client(NumPyClient):
    def get_parameters(self, config):
        return [np.zeros((3, 2), np.float32)]

    def fit(self, parameters, config):
        raise RuntimeError("the GPU caught fire")

    def evaluate(self, parameters, config):
        return 1.0, 5, {"accuracy": 0.1}


app = ClientApp(client_fn=lambda context: Client().to_client())
'''


@pytest.mark.parametrize("chain", [(), ("--chain", "anvil")], ids=["in-process", "daemons"])
def test_an_app_whose_fit_raises_ends_simulate_with_one_line(tmp_path, chain):
    (tmp_path / "raising.py").write_text(RAISING_APP)

    proc = run_cli("simulate", *chain, "--nodes", "2", "--rounds", "1", "--app", "raising.py:app", cwd=tmp_path, timeout=180)

    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("fedledger: error: "), proc.stderr[-3000:]
    assert "raising.py:app: fit raised RuntimeError: the GPU caught fire" in proc.stderr, proc.stderr
