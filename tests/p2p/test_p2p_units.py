"""Identity persistence and announcement filtering, without the network."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.errors import ConfigError
from node.p2p import Announcement, load_or_create_identity, peer_id_of, topic_for_task
from node.p2p.gossip import accept
from node.p2p.identity import IDENTITY_FILE
from node.storage import cid_of

CID = cid_of(b"update")


def test_identity_is_created_once_and_persists(tmp_path: Path) -> None:
    # Execute
    first = peer_id_of(load_or_create_identity(tmp_path))
    second = peer_id_of(load_or_create_identity(tmp_path))
    # Assert
    assert first == second and first.startswith("12D3KooW")  # an Ed25519 peer ID
    assert (tmp_path / IDENTITY_FILE).stat().st_mode & 0o077 == 0
    assert peer_id_of(load_or_create_identity(tmp_path / "other")) != first


def test_damaged_identity_is_refused_not_replaced(tmp_path: Path) -> None:
    load_or_create_identity(tmp_path)
    (tmp_path / IDENTITY_FILE).write_bytes(b"short")
    with pytest.raises(ConfigError, match="refusing to replace"):
        load_or_create_identity(tmp_path)
    assert (tmp_path / IDENTITY_FILE).read_bytes() == b"short"


def test_announcement_round_trip() -> None:
    ann = Announcement(3, 7, "update", CID)
    assert Announcement.decode(ann.encode(), "peerA") == Announcement(3, 7, "update", CID, "peerA")
    assert topic_for_task(3) == "/fedledger/task/3"
    phase = Announcement(3, 7, "revealing", "")  # "round 7 is in its reveal phase": no content, so no CID
    assert Announcement.decode(phase.encode(), "peerA") == Announcement(3, 7, "revealing", "", "peerA")


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"task":1,"round":0,"kind":"update"}',
        b'{"task":1,"round":-1,"kind":"update","cid":"%s"}' % CID.encode(),
        b'{"task":1,"round":true,"kind":"update","cid":"%s"}' % CID.encode(),
        b'{"task":1,"round":0,"kind":"spam","cid":"%s"}' % CID.encode(),
        b'{"task":1,"round":0,"kind":"update","cid":"Qmnotacid"}',
        b'{"task":1,"round":0,"kind":"update","cid":"%s","extra":1}' % CID.encode(),
        b'{"task":1,"round":0,"kind":"update","cid":""}',  # content kinds name their content
        b'{"task":1,"round":0,"kind":"committing","cid":"%s"}' % CID.encode(),  # a phase names none
        b'{"task":1,"round":0,"kind":"proposing","cid":null}',
        b'{"task":1,"round":0,"kind":"attesting","cid":""}',  # the proposal says that
        b"x" * 5000,
    ],
)
def test_malformed_announcements_are_dropped(body: bytes) -> None:
    assert accept(lambda peer: True, "peerA", body, 1) is None


def test_only_registered_senders_and_own_task_pass() -> None:
    # Prepare
    registered = {"peerA"}
    body = Announcement(1, 0, "proposal", CID).encode()

    def is_registered(peer: str) -> bool:
        return peer in registered

    def broken_registry(peer: str) -> bool:
        raise RuntimeError("chain unreachable")

    # Execute / Assert
    assert accept(is_registered, "peerA", body, 1) == Announcement(1, 0, "proposal", CID, "peerA")
    assert accept(is_registered, "peerB", body, 1) is None  # not registered on-chain
    assert accept(is_registered, "peerA", body, 2) is None  # published for another task's topic
    assert accept(broken_registry, "peerA", body, 1) is None  # drop, never crash the router
