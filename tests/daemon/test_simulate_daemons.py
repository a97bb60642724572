"""`fedledger simulate --chain anvil`: anvil, one `fedledger node run` process per node, a report
from the chain, and never a process left behind."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from aggregation import decode_model
from node.cli import main
from node.sim.federation import NodeDaemon
from node.storage import EmbeddedStorage
from node.training import accuracy, dirichlet_partition, load_digits_split
from tests.conftest import FEDLEDGER, default_sigint, run_cli

WAD = 10**18
ANVIL_PID = re.compile(r"^anvil on \S+ \(pid (\d+)\)$", re.M)
DAEMON_PID = re.compile(r"^node (\d+): daemon pid (\d+), log ", re.M)


def pids_in(stdout: str) -> list[int]:
    """The anvil and daemon pids `simulate` printed as it started them."""
    return [int(p) for p in ANVIL_PID.findall(stdout)] + [int(pid) for _, pid in DAEMON_PID.findall(stdout)]


def alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie would count: nobody waited for it)."""
    return Path(f"/proc/{pid}").exists()


@pytest.mark.slow
def test_three_daemons_two_rounds_report_and_leave_nothing_running(tmp_path):
    out, work = tmp_path / "report", tmp_path / "work"

    proc = run_cli("simulate", "--chain", "anvil", "--nodes", "3", "--rounds", "2", "--epochs", "2",
                   "--report", str(out), "--workdir", str(work))  # fmt: skip

    assert proc.returncode == 0, proc.stderr + proc.stdout
    pids = pids_in(proc.stdout)
    assert len(pids) == 4 and not any(alive(p) for p in pids)  # anvil and 3 daemons, all gone
    assert re.search(r"^round 2/2: 3 updates, test accuracy 0\.\d+, loss \d+\.\d+, gas [\d,]+, \d+\.\d s$", proc.stdout, re.M)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["chain"] == "anvil" and summary["config"]["daemons"] is True
    assert summary["deployment"]["chain_id"] == 31337 and summary["deployment"]["rpc"] is None
    assert {p.name for p in out.iterdir()} == {"summary.json", "accuracy.png", "reputation.png", "payouts.png"}

    rounds = summary["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert len({r["global_model_cid"] for r in rounds}) == 2 and all(r["gas_used"] > 0 for r in rounds)
    assert summary["initial_accuracy"] < 0.2 < 0.5 < rounds[-1]["test_accuracy"]  # chance is 0.1
    # The reported accuracy is the finalized model's, as kept in the daemons' blockstores.
    _, test = load_digits_split(seed=7)
    cid = rounds[-1]["global_model_cid"]
    holders = [s for s in (EmbeddedStorage(work / f"node{i}" / "ipfs") for i in range(3)) if s.has(cid)]
    assert holders, "no daemon kept the final global model"
    model, _ = decode_model(holders[0].get(cid), 2**26)
    assert accuracy("digits-mlp", model, test) == rounds[-1]["test_accuracy"]

    nodes = summary["nodes"]
    assert len({n["address"] for n in nodes}) == 3 and all(n["role"] == "honest" for n in nodes)
    for n in nodes:
        history = [int(x) for x in n["reputation_history_wad"]]
        assert history[0] == WAD // 2 and history[-1] == int(n["reputation_wad"]) > WAD // 2  # honest rounds raised it
        assert len(history) == 3 and history == sorted(history)
        assert n["reputation"] == int(n["reputation_wad"]) / WAD
        # two rounds: still on probation (#16), so everything earned is held, nothing withdrawable yet
        assert int(n["held_wei"]) > 0 and n["payout_wei"] == n["pending_wei"] == "0"
    paid = sum(int(n["held_wei"]) for n in nodes)
    assert 99 * 10**17 < paid <= 10 * WAD  # the whole 10 ETH pool over the task's rounds, less rounding dust
    assert sum(n["num_samples"] for n in nodes) == len(load_digits_split(seed=7)[0])
    for i in range(3):  # every daemon saw the task finish and left by itself
        assert "every configured task is finished" in (work / f"node{i}.log").read_text()


def break_rpc_of_node_1(monkeypatch) -> list[NodeDaemon]:
    """Give node 1 an unreachable chain just before its daemon starts; returns the daemons started."""
    original, started = NodeDaemon.start, []

    def start(self: NodeDaemon, extra_env=None) -> None:
        if self.index == 1:
            self.config.write_text(re.sub(r'(?m)^rpc = ".*"', 'rpc = "http://127.0.0.1:9"', self.config.read_text()))
        original(self, extra_env)
        started.append(self)

    monkeypatch.setattr(NodeDaemon, "start", start)
    return started


@pytest.mark.slow
def test_a_daemon_that_dies_at_start_is_one_error_line(tmp_path, monkeypatch, capsys):
    started = break_rpc_of_node_1(monkeypatch)
    work = tmp_path / "work"

    code = main(["simulate", "--chain", "anvil", "--nodes", "2", "--rounds", "1", "--epochs", "1",
                 "--alpha", "0.5", "--workdir", str(work)])  # fmt: skip

    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.count("\n") == 1 and captured.err.startswith("fedledger: error: node 1 (pid ")
    assert "exited with status 1" in captured.err and "cannot reach the chain at http://127.0.0.1:9" in captured.err
    assert "last lines of node 1's log:" in captured.out  # the tail went to stdout, with the progress
    assert len(started) == 2 and all(n.proc.returncode is not None for n in started)
    assert not any(alive(p) for p in pids_in(captured.out))
    # --alpha dealt label-skewed shards, one data.npz per node directory.
    train, _ = load_digits_split(seed=7)
    shards = dirichlet_partition(train.y, 2, 0.5, seed=7)
    for i, shard in enumerate(shards):
        with np.load(work / f"node{i}" / "data.npz") as data:
            assert np.array_equal(data["y"], train.y[shard])


@pytest.mark.slow
def test_a_round_past_its_timeout_is_one_error_line(monkeypatch, capsys):
    original, started = NodeDaemon.start, []
    monkeypatch.setattr(NodeDaemon, "start", lambda self, extra_env=None: (original(self, extra_env), started.append(self)))

    code = main(["simulate", "--chain", "anvil", "--nodes", "2", "--rounds", "1", "--round-timeout", "1"])

    captured = capsys.readouterr()
    assert code == 1 and captured.err == "fedledger: error: timed out after 1 s waiting for round 1 to finish\n"
    assert len(started) == 2 and all(n.proc.returncode is not None for n in started)
    assert not any(alive(p) for p in pids_in(captured.out))


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stopping_simulate_mid_run_stops_every_daemon(stop, tmp_path):
    proc = subprocess.Popen(
        [str(FEDLEDGER), "simulate", "--chain", "anvil", "--nodes", "2", "--rounds", "5", "--epochs", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint,
    )  # fmt: skip
    seen = ""
    try:
        assert proc.stdout is not None
        while len(DAEMON_PID.findall(seen)) < 2:
            line = proc.stdout.readline()
            assert line, f"simulate ended before starting its daemons: {seen}"
            seen += line
        time.sleep(3)  # the daemons are importing, registering, training
        assert all(alive(p) for p in pids_in(seen))

        proc.send_signal(stop)  # to simulate alone, as `kill` does: it must stop its children itself
        rest, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert proc.returncode == 130 and err.strip() == "fedledger: interrupted"
    assert not any(alive(p) for p in pids_in(seen))


def test_in_process_without_anvil_is_refused(capsys):
    code = main(["simulate", "--in-process", "--nodes", "2"])

    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "only applies to --chain anvil" in err


@pytest.mark.slow
def test_in_process_keeps_the_old_anvil_mode_with_attacks(cli):
    proc = cli("simulate", "--chain", "anvil", "--in-process", "--nodes", "3", "--rounds", "1", "--epochs", "1",
               "--malicious", "1", "--attack", "sign-flip", "--json")  # fmt: skip

    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["config"]["chain"] == "anvil" and "daemons" not in summary["config"]
    assert [n["role"] for n in summary["nodes"]] == ["honest", "honest", "sign-flip"]
