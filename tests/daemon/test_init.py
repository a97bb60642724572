"""`fedledger node init`: a node directory an operator can run, and never clobbers one."""

from __future__ import annotations

import json
import stat

from eth_account import Account

from node.daemon.config import load_config
from node.p2p.identity import load_or_create_identity, peer_id_of


def test_init_creates_config_and_encrypted_keystore(cli, tmp_path):
    node_dir = tmp_path / "n1"

    proc = cli("node", "init", "--dir", str(node_dir), "--rpc", "http://127.0.0.1:1234",
               env={"FEDLEDGER_PASSWORD": "s3cret-pass"})

    assert proc.returncode == 0, proc.stderr
    address = proc.stdout.split()[2]
    keystore = json.loads((node_dir / "keystore.json").read_text())
    assert Account.from_key(Account.decrypt(keystore, "s3cret-pass")).address == address
    assert "s3cret-pass" not in (node_dir / "node.toml").read_text()
    assert stat.S_IMODE((node_dir / "keystore.json").stat().st_mode) == 0o600
    config = load_config(node_dir / "node.toml")
    assert config.rpc == "http://127.0.0.1:1234"
    assert not config.policy.joins_any  # C1 (#14): a new node works on no task until its operator joins one
    assert "join = []" in (node_dir / "node.toml").read_text()  # and the file shows where to say so
    peer_id = proc.stdout.splitlines()[1].split()[2]
    assert peer_id.startswith("12D3KooW")
    assert peer_id_of(load_or_create_identity(node_dir)) == peer_id  # persisted, not regenerated


def test_second_init_refuses_and_keeps_the_key(cli, tmp_path):
    node_dir = tmp_path / "n1"
    cli("node", "init", "--dir", str(node_dir), env={"FEDLEDGER_PASSWORD": "s3cret-pass"})
    before = (node_dir / "keystore.json").read_bytes()

    proc = cli("node", "init", "--dir", str(node_dir), env={"FEDLEDGER_PASSWORD": "other-pass"})

    assert proc.returncode == 1 and "already exists" in proc.stderr and "\n" not in proc.stderr.strip()
    assert (node_dir / "keystore.json").read_bytes() == before


def test_short_password_is_refused_and_a_password_file_works(cli, tmp_path):
    short = cli("node", "init", "--dir", str(tmp_path / "a"), env={"FEDLEDGER_PASSWORD": "short"})
    pw = tmp_path / "pw"
    pw.write_text("long-enough-pass\n")
    from_file = cli("node", "init", "--dir", str(tmp_path / "b"), "--password-file", str(pw))

    assert short.returncode == 1 and "at least 8" in short.stderr
    assert not (tmp_path / "a" / "keystore.json").exists()
    assert from_file.returncode == 0, from_file.stderr
    keystore = json.loads((tmp_path / "b" / "keystore.json").read_text())
    Account.decrypt(keystore, "long-enough-pass")  # raises if the trailing newline leaked into the password
