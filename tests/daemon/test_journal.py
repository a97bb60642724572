"""The action journal survives the process: intents and salts come back after a crash."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from node.daemon.journal import Journal


def test_intent_is_recorded_once_and_keeps_its_first_payload(tmp_path):
    with Journal(tmp_path / "j.db") as j:
        first = j.intend(1, 2, "commit", {"salt": "aa"})
        again = j.intend(1, 2, "commit", {"salt": "bb"})

    assert first.payload == again.payload == {"salt": "aa"}
    assert first.status == "intent"


def test_status_moves_and_pending_lists_unfinished(tmp_path):
    with Journal(tmp_path / "j.db") as j:
        j.intend(1, 1, "commit", {})
        j.intend(1, 1, "reveal", {})
        j.mark_sent(1, 1, "commit", "0xabc")
        j.mark_done(1, 1, "commit")

        assert [a.kind for a in j.pending()] == ["reveal"]
        assert j.get(1, 1, "commit").tx_hash == "0xabc"
        with pytest.raises(KeyError):
            j.mark_done(9, 9, "commit")


def test_a_killed_process_loses_nothing_it_wrote(tmp_path):
    db = tmp_path / "j.db"
    code = (
        "import os, sys\n"
        "from node.daemon.journal import Journal\n"
        "j = Journal(sys.argv[1])\n"
        "j.intend(3, 4, 'commit', {'salt': 'ff' * 32})\n"
        "j.mark_sent(3, 4, 'commit', '0x01')\n"
        "os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(db)], env={**os.environ})

    assert proc.returncode == -9
    with Journal(db) as j:
        action = j.get(3, 4, "commit")
        assert action is not None and action.status == "sent"
        assert action.payload == {"salt": "ff" * 32} and action.tx_hash == "0x01"


def test_settings(tmp_path):
    with Journal(tmp_path / "j.db") as j:
        assert j.setting("last_block", "0") == "0"
        j.set_setting("last_block", "42")
    with Journal(tmp_path / "j.db") as j:
        assert j.setting("last_block") == "42"
