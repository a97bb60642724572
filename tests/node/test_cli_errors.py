"""No traceback reaches a user from any command: every subcommand, run as a real process with a
representative bad input, fails with exactly one line on stderr and a non-zero status.

The subcommands are read from the parser itself, so a new command fails
`test_every_subcommand_has_a_bad_input` until it is given a case here. The contract (docs/cli.md):
an expected failure prints `fedledger: error: ...` and exits 1; a usage error prints
`fedledger COMMAND: error: ... (see `fedledger COMMAND --help`)` and exits 2.
"""

from __future__ import annotations

import json

import pytest

from node.cli.parser import build_parser, commands

UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused at once
ADDRESS = "0x" + "22" * 20


def bad_inputs(tmp) -> dict[tuple[str, ...], list[str]]:
    """One representative bad input per command: what an operator gets wrong most."""
    unreachable = tmp / "unreachable.json"
    unreachable.write_text(json.dumps({"chain_id": 31337, "rpc": UNREACHABLE, "contracts": {"FedLedger": ADDRESS}}))
    missing = str(tmp / "missing.json")
    dep = ["--deployment", str(unreachable)]
    return {
        ("simulate",): ["--rpc", UNREACHABLE, "--nodes", "2"],
        ("testnet",): ["--host", "256.0.0.1"],
        ("deploy",): ["--rpc", UNREACHABLE, "--dev-account", "0"],
        ("task", "create"): ["--deployment", missing, "--dev-account", "0", "--model", "digits-mlp", "--rounds", "1",
                             "--committee", "3", "--rule", "fedavg", "--reward", "1"],
        ("task", "list"): dep,
        ("task", "show"): [*dep, "--task", "1"],
        ("reputation",): [ADDRESS, *dep],
        ("status",): [*dep, "--task", "1"],
        ("verify",): ["--deployment", missing, "--task", "1", "--round", "1"],
        ("model", "get"): [*dep, "--task", "1", "--out", str(tmp / "model.safetensors")],
        ("rewards", "withdraw"): [*dep, "--dev-account", "0"],
        ("ipfs", "add"): [str(tmp / "missing.bin"), "--repo", str(tmp / "repo")],
        ("ipfs", "get"): ["not-a-cid", "--out", str(tmp / "out"), "--repo", str(tmp / "repo")],
        ("node", "init"): ["--dir", str(tmp / "node"), "--password-file", str(tmp / "no-password-file")],
        ("node", "run"): ["--config", str(tmp / "missing.toml")],
        ("node", "fund"): ["--config", str(tmp / "missing.toml"), "--dev-account", "0"],
        ("node", "join"): ["--config", str(tmp / "missing.toml"), "--task", "1"],
        ("node", "unstake"): [*dep, "--dev-account", "0"],
        ("aggregate",): ["--rule", "fedavg", "--base", str(tmp / "missing.safetensors"), "--out", str(tmp / "o"),
                         str(tmp / "u.safetensors")],
    }  # fmt: skip


def assert_one_line(proc, status: int = 1) -> str:
    assert proc.returncode == status, (proc.returncode, proc.stdout, proc.stderr)
    err = proc.stderr
    assert err.endswith("\n") and err.count("\n") == 1 and err.strip(), err
    assert "Traceback" not in err and "internal error" not in err, err
    return err.strip()


def test_every_subcommand_has_a_bad_input(tmp_path):
    runnable = set(commands(build_parser()))

    missing = runnable - set(bad_inputs(tmp_path))

    assert not missing, f"give these commands a bad input in bad_inputs(): {sorted(missing)}"


@pytest.mark.slow  # a process per command, some of which load torch before they fail
@pytest.mark.parametrize("command", commands(build_parser()), ids=" ".join)
def test_a_bad_input_is_one_line_and_a_failure(cli, tmp_path, command):
    args = bad_inputs(tmp_path)[command]

    proc = cli(*command, *args, env={"FEDLEDGER_HOME": str(tmp_path / "home"), "FEDLEDGER_PASSWORD": ""}, timeout=120)

    assert assert_one_line(proc).startswith("fedledger: error: ")


@pytest.mark.parametrize("command", commands(build_parser()), ids=" ".join)
def test_a_usage_error_is_one_line_with_status_2(cli, tmp_path, command):
    args = bad_inputs(tmp_path)[command]

    proc = cli(*command, *args, "--no-such-option", timeout=60)

    err = assert_one_line(proc, status=2)
    assert err.startswith(f"fedledger {' '.join(command)}: error: ") and "--no-such-option" in err
    assert err.endswith(f"(see `fedledger {' '.join(command)} --help`)")


def test_an_unreachable_chain_is_named(cli, tmp_path):
    args = bad_inputs(tmp_path)[("status",)]

    err = assert_one_line(cli("status", *args))

    assert err == f"fedledger: error: cannot reach the chain at {UNREACHABLE}: ConnectionError"


def test_an_exception_group_is_reported_by_its_cause(capsys, monkeypatch):
    """trio wraps a failing task's error in an ExceptionGroup beside its cancelled siblings (what
    `verify` of a round that is not finalized printed as 42 lines)."""
    import trio

    from node.cli import main
    from node.errors import ConfigError

    async def failing() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            raise ConfigError("round 9 of task 1 is not finalized")

    monkeypatch.setattr("node.cli.chain.cmd_reputation", lambda args: trio.run(failing))

    code = main(["reputation", ADDRESS, "--deployment", "x"])

    assert code == 1
    assert capsys.readouterr().err == "fedledger: error: round 9 of task 1 is not finalized\n"


def test_a_bug_is_one_line_unless_debugging(capsys, monkeypatch):
    from node.cli import main

    monkeypatch.setattr("node.cli.chain.cmd_reputation", lambda args: {}["missing key"])
    monkeypatch.delenv("FEDLEDGER_DEBUG", raising=False)

    assert main(["reputation", ADDRESS, "--deployment", "x"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fedledger: internal error: KeyError: 'missing key'")

    monkeypatch.setenv("FEDLEDGER_DEBUG", "1")
    with pytest.raises(KeyError):
        main(["reputation", ADDRESS, "--deployment", "x"])
