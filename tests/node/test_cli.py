"""The command line as a user meets it: outputs, JSON shapes, one-line errors."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from aggregation import encode_model, encode_update
from node.storage import cid_of

HELLO_V0 = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
HELLO_V1 = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"


def one_line_error(proc) -> str:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("fedledger: error:")
    return err


@pytest.fixture
def hello(tmp_path):
    path = tmp_path / "hello.txt"
    path.write_bytes(b"hello world\n")
    return path


def test_help_lists_every_command(cli):
    proc = cli("--help")

    assert proc.returncode == 0
    for command in ("simulate", "testnet", "deploy", "reputation", "status", "rewards", "ipfs", "aggregate"):
        assert command in proc.stdout


@pytest.mark.parametrize("version, expected", [("1", HELLO_V1), ("0", HELLO_V0)])
def test_ipfs_add_prints_kubos_cid(cli, hello, tmp_path, version, expected):
    proc = cli("ipfs", "add", str(hello), "--cid-version", version, "--repo", str(tmp_path / "repo"))

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == expected + "\n"


def test_ipfs_add_only_hash_stores_nothing(cli, hello, tmp_path):
    repo = tmp_path / "repo"

    proc = cli("ipfs", "add", str(hello), "--only-hash", "--repo", str(repo))

    assert proc.stdout.strip() == HELLO_V1
    assert not repo.exists() or not any(p.is_file() for p in repo.rglob("*"))


def test_ipfs_get_round_trips(cli, tmp_path):
    data = np.random.default_rng(0).bytes(700_000)  # three chunks
    src, out, repo = tmp_path / "blob", tmp_path / "out", str(tmp_path / "repo")
    src.write_bytes(data)

    cid = cli("ipfs", "add", str(src), "--repo", repo).stdout.strip()
    proc = cli("ipfs", "get", cid, "--out", str(out), "--repo", repo)

    assert proc.returncode == 0, proc.stderr
    assert cid == cid_of(data)
    assert out.read_bytes() == data


def test_ipfs_errors_are_one_line(cli, tmp_path):
    repo = str(tmp_path / "repo")
    assert "missing" in one_line_error(cli("ipfs", "add", str(tmp_path / "missing"), "--repo", repo))
    assert "not-a-cid" in one_line_error(cli("ipfs", "get", "not-a-cid", "--out", str(tmp_path / "x"), "--repo", repo))
    assert HELLO_V1 in one_line_error(cli("ipfs", "get", HELLO_V1, "--out", str(tmp_path / "x"), "--repo", repo))


def _write_round(tmp_path, n_updates=3):
    rng = np.random.default_rng(4)
    base = {"w": rng.normal(size=(4, 3)).astype(np.float32), "b": rng.normal(size=3).astype(np.float32)}
    (tmp_path / "base.safetensors").write_bytes(encode_model(base))
    paths = []
    common = {k: rng.normal(size=v.shape) for k, v in base.items()}  # honest updates roughly agree
    for i in range(n_updates):
        delta = {k: (0.01 * (common[k] + 0.3 * rng.normal(size=v.shape))).astype(np.float32) for k, v in base.items()}
        path = tmp_path / f"u{i}.safetensors"
        path.write_bytes(encode_update(delta, num_samples=10 * (i + 1), task=1, round=1, base="bafkbase"))
        paths.append(str(path))
    return paths


def test_aggregate_prints_cid_and_scores_as_json(cli, tmp_path):
    updates = _write_round(tmp_path)
    out = tmp_path / "out.safetensors"

    proc = cli("aggregate", "--rule", "fedavg", "--base", str(tmp_path / "base.safetensors"),
               "--out", str(out), "--json", *updates)

    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["cid"] == cid_of(out.read_bytes())
    assert len(result["scores"]) == len(result["scores_wad"]) == 3
    assert all(0 < s <= 1 for s in result["scores"])
    assert [int(w) / 1e18 for w in result["scores_wad"]] == pytest.approx(result["scores"])


def test_aggregate_is_the_same_whatever_the_file_order(cli, tmp_path):
    updates = _write_round(tmp_path)
    base = str(tmp_path / "base.safetensors")

    a = json.loads(cli("aggregate", "--rule", "fedavg", "--base", base, "--out", str(tmp_path / "a"), "--json", *updates).stdout)
    b = json.loads(cli("aggregate", "--rule", "fedavg", "--base", base, "--out", str(tmp_path / "b"), "--json",
                       *reversed(updates)).stdout)

    assert a["cid"] == b["cid"]
    assert a["scores_wad"] == list(reversed(b["scores_wad"]))


def test_aggregate_rejects_a_pickle_without_unpickling_it(cli, tmp_path):
    updates = _write_round(tmp_path, n_updates=2)
    evil = tmp_path / "evil.safetensors"
    marker = tmp_path / "pwned"
    # If anything unpickled this, it would create the marker file.
    evil.write_bytes(pickle.dumps(eval_on_unpickle(str(marker))))

    proc = cli("aggregate", "--rule", "fedavg", "--base", str(tmp_path / "base.safetensors"),
               "--out", str(tmp_path / "out"), "--json", *updates, str(evil))

    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["scores_wad"][-1] == "0"
    assert not marker.exists()


class eval_on_unpickle:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_aggregate_with_a_bad_base_is_one_line(cli, tmp_path):
    updates = _write_round(tmp_path, n_updates=1)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 3)

    one_line_error(cli("aggregate", "--rule", "fedavg", "--base", str(bad), "--out", str(tmp_path / "o"), *updates))
    one_line_error(cli("aggregate", "--rule", "fedavg", "--base", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), *updates))


def test_reputation_rejects_a_bad_address_and_a_missing_deployment(cli, tmp_path):
    dep = tmp_path / "deployment.json"
    dep.write_text(json.dumps({"chain_id": 31337, "rpc": "http://127.0.0.1:9", "contracts": {"FedLedger": "0x" + "11" * 20}}))

    assert "0x123" in one_line_error(cli("reputation", "0x123", "--deployment", str(dep)))
    assert "does not exist" in one_line_error(cli("reputation", "0x" + "22" * 20, "--deployment", str(tmp_path / "none.json")))
    assert "cannot reach" in one_line_error(cli("reputation", "0x" + "22" * 20, "--deployment", str(dep)))


@pytest.mark.parametrize(
    "rule_args",
    [["--rule", "median"], ["--rule", "trimmed-mean", "--trim", "0.2"],
     ["--rule", "multi-krum", "--f", "1", "--m", "3", "--max-samples", "20"], ["--rule", "fedavg", "--clip", "0.01"]],
)
def test_aggregate_runs_every_rule_and_is_order_independent(cli, tmp_path, rule_args):
    updates = _write_round(tmp_path, n_updates=5)
    base = str(tmp_path / "base.safetensors")

    a = cli("aggregate", *rule_args, "--base", base, "--out", str(tmp_path / "a"), "--json", *updates)
    b = cli("aggregate", *rule_args, "--base", base, "--out", str(tmp_path / "b"), "--json", *reversed(updates))

    assert a.returncode == 0, a.stderr
    first, second = json.loads(a.stdout), json.loads(b.stdout)
    assert first["cid"] == cid_of((tmp_path / "a").read_bytes()) == second["cid"]
    assert first["scores_wad"] == list(reversed(second["scores_wad"]))


@pytest.mark.parametrize(
    ("rule_args", "message"),
    [
        (["--rule", "trimmed-mean"], "needs trim"),
        (["--rule", "trimmed-mean", "--trim", "0.5"], "trim must be"),
        (["--rule", "median", "--trim", "0.1"], "does not take trim"),
        (["--rule", "median", "--max-samples", "3"], "does not take max_samples"),
        (["--rule", "multi-krum", "--f", "1"], "needs m"),
        (["--rule", "multi-krum", "--f", "-1", "--m", "2"], "f must be"),
        (["--rule", "multi-krum", "--f", "1", "--m", "0"], "m must be"),
        (["--rule", "fedavg", "--f", "1", "--m", "2"], "does not take f or m"),
        (["--rule", "fedavg", "--clip", "nan"], "clip must be"),
        (["--rule", "fedavg", "--clip", "-2"], "clip must be"),
        (["--rule", "krum"], "unknown aggregation rule"),
    ],
)
def test_aggregate_refuses_bad_option_combinations_in_one_line(tmp_path, capsys, rule_args, message):
    from node.cli import main

    # The updates do not exist: the options are refused before any file is read.
    code = main(["aggregate", *rule_args, "--base", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "u1"])

    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.startswith("fedledger: error:") and "\n" not in err and message in err, err


def test_aggregate_bad_option_from_the_shell_is_one_line(cli, tmp_path):
    updates = _write_round(tmp_path, n_updates=1)

    err = one_line_error(cli("aggregate", "--rule", "median", "--trim", "0.2", "--base", str(tmp_path / "base.safetensors"),
                             "--out", str(tmp_path / "o"), *updates))
    assert "does not take trim" in err


def test_the_quick_start_prints_the_readmes_models(cli):
    """The README's quick-start table is what `fedledger simulate` prints, to the CID: the aggregation
    is exact and simulate pins torch's kernels, so this holds on any x86-64 machine."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = re.findall(r"^ +(\d) +(0\.\d{3}) +\d\.\d{3} +[\d,]+ +(bafk\w+)$", readme, re.M)
    assert [int(r) for r, _, _ in table] == [1, 2, 3]

    proc = cli("simulate", "--json")

    assert proc.returncode == 0, proc.stderr
    rounds = json.loads(proc.stdout)["rounds"]
    assert [(r["round"], f"{r['test_accuracy']:.3f}", r["global_model_cid"]) for r in rounds] == [
        (int(r), acc, cid) for r, acc, cid in table
    ]


@pytest.mark.parametrize(
    ("unlocks", "now", "shown"),
    [
        (1_800_000_000, 1_800_000_000 - 2 * 86400 + 3, "2027-01-15 08:00:00 UTC (in 1 day, 23:59:57)"),
        (1_800_000_000, 1_800_000_000 - 61, "2027-01-15 08:00:00 UTC (in 0:01:01)"),
        (1_800_000_000, 1_800_000_000 + 5, "2027-01-15 08:00:00 UTC"),  # already unlocked: no countdown
    ],
)
def test_unstake_says_when_on_the_chains_clock(unlocks, now, shown):
    from node.cli.stake import _when

    assert _when(unlocks, now) == shown
