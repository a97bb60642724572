"""Daemon logs: one format for every logger, identical repeats coalesced, races at debug level."""

from __future__ import annotations

import io
import logging
import re

import pytest

from node.daemon.logs import setup_logging

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (DEBUG|INFO|WARNING|ERROR) +[\w.]+: .+$")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def logs():
    """setup_logging into a buffer; the root logger is restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    buffer = io.StringIO()
    yield buffer
    for h in root.handlers[:]:
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    for name in ("fedledger", "node"):
        logging.getLogger(name).setLevel(logging.NOTSET)
    logging.captureWarnings(False)


def test_every_logger_writes_one_format(logs):
    setup_logging("info", logs)

    logging.getLogger("fedledger.daemon").info("daemon line")
    logging.getLogger("node.p2p.blocks").warning("p2p line")
    logging.getLogger("libp2p.host.basic_host").warning("libp2p line")
    logging.getLogger("trio").error("trio line")
    logging.getLogger("libp2p.network.auto_connector").info("library chatter")  # it sets its own level INFO
    logging.getLogger("fedledger.daemon").debug("not at info")

    lines = logs.getvalue().splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == ["daemon line", "p2p line", "libp2p line", "trio line"]
    assert all(LINE.match(line) for line in lines), lines


def test_identical_messages_are_coalesced_with_a_count(logs):
    clock = Clock()
    handler = setup_logging("info", logs, window=60)
    handler.clock = clock
    log = logging.getLogger("fedledger.peers")

    for _ in range(24):
        log.warning("could not fetch bafyX: refused")
        clock.now += 2
    log.warning("something else")  # the count comes out first, next to what it counts
    log.warning("could not fetch bafyX: refused")  # 48 s: still within the window, swallowed
    clock.now += 20
    log.warning("could not fetch bafyX: refused")  # 68 s: the window is over; printed again
    log.info("later")

    lines = [line.split(": ", 1)[1] for line in logs.getvalue().splitlines()]
    assert lines == [
        "could not fetch bafyX: refused",
        "could not fetch bafyX: refused (repeated 23 times in 46 s)",
        "something else",
        "could not fetch bafyX: refused (repeated 1 time in 0 s)",
        "could not fetch bafyX: refused",
        "later",
    ]


def test_repeats_are_counted_at_close_and_different_levels_are_not_merged(logs):
    handler = setup_logging("debug", logs, window=60)
    log = logging.getLogger("fedledger.daemon")
    log.info("same text")
    log.warning("same text")
    log.info("same text")

    handler.close()

    lines = [line.split(" ", 1)[1] for line in logs.getvalue().splitlines()]
    assert lines[0].startswith("INFO") and lines[1].startswith("WARNING")
    assert lines[2].startswith("INFO") and lines[2].endswith("same text (repeated 1 time in 0 s)")
    assert len(lines) == 3


def test_expected_races_are_debug(logs):
    from node.chain.types import ContractRevert
    from node.daemon.loop import is_expected_race

    assert is_expected_race(ContractRevert("commit", "FedLedgerWrongRound", (1, 2, 3), "wrong round"))
    assert is_expected_race(ContractRevert("attest", "FedLedgerWrongPhase", (), "wrong phase"))
    assert is_expected_race(ContractRevert("drawCommittee", None, (), "execution reverted"))
    assert not is_expected_race(ContractRevert("reveal", "FedLedgerCommitmentMismatch", (), "mismatch"))


@pytest.mark.slow  # an anvil process
def test_only_the_node_whose_advance_moved_the_round_says_it_advanced(tmp_path):
    """'commit phase expired; advanced' was logged by every node that sent `advance`, although
    only the first one moved the round: the others' transactions were no-ops (#17)."""
    from node.chain import deploy_fedledger, dev_account
    from node.chain.anvil import Anvil
    from node.chain.types import Phase
    from node.chain.providers import rpc_web3
    from node.daemon.journal import Journal
    from node.protocol import ProtocolNode
    from node.storage import EmbeddedStorage
    from node.taskspec import TaskParams

    with Anvil(accounts=4) as anvil:
        w3 = rpc_web3(anvil.url)
        owner, _ = deploy_fedledger(w3, dev_account(0), 10**18)
        members = [owner.as_account(dev_account(i)) for i in (1, 2, 3)]
        for i, c in enumerate(members):
            c.register(f"peer{i}", [], 10**18)
        params = TaskParams(rounds=3, committee_size=3, min_stake_wei=10**18, commit_timeout=5)
        task, _ = owner.as_account(dev_account(0)).create_task("bafkreimodel", "bafkreispec", params, 10**18)
        members[0].draw_committee(task)
        assert owner.round_state(task, 1).phase == Phase.COMMIT
        w3.provider.make_request("evm_increaseTime", [60])
        w3.provider.make_request("evm_mine", [])
        nodes = [
            ProtocolNode(c, Journal(tmp_path / f"j{i}.db"), EmbeddedStorage(tmp_path / f"s{i}"), trainer=None, fetch=None)
            for i, c in enumerate(members[:2])
        ]  # fmt: skip

        first = nodes[0]._advance(task, 1, "commit")
        second = nodes[1]._advance(task, 1, "commit")

        assert first == f"task {task} round 1: commit phase expired; advanced"
        assert second is None  # its transaction changed nothing: said at debug level only
        assert owner.round_state(task, 1).phase != Phase.COMMIT
        assert members[2].advance(task)["logs"] == []  # a late advance goes through and does nothing
