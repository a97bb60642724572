"""`open_storage`: the backend a node's configuration names, or a ConfigError naming the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.abc import BlockStore, Storage
from node.errors import ConfigError
from node.storage import EmbeddedStorage, KuboStorage, open_storage


def test_embedded_opens_the_directory(tmp_path: Path) -> None:
    # Execute
    store = open_storage("embedded", tmp_path / "ipfs")
    # Assert
    assert isinstance(store, EmbeddedStorage) and store.root == tmp_path / "ipfs"
    assert (tmp_path / "ipfs" / "blocks").is_dir()


def test_kubo_talks_to_the_api_and_leaves_the_directory_alone(tmp_path: Path) -> None:
    # Execute: nothing is sent to the daemon yet, so none needs to run
    store = open_storage("kubo", tmp_path / "ipfs", "/ip4/127.0.0.1/tcp/5001")
    # Assert
    assert isinstance(store, KuboStorage) and store.api_addr == "/ip4/127.0.0.1/tcp/5001"
    assert isinstance(store, BlockStore) and isinstance(store, Storage)
    assert not (tmp_path / "ipfs").exists()


@pytest.mark.parametrize(
    "backend, api, message",
    [("kubo", None, "needs the IPFS daemon's API"), ("s3", None, "embedded, kubo, not 's3'")],
)
def test_bad_backend_is_a_config_error(tmp_path: Path, backend: str, api: str | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_storage(backend, tmp_path / "ipfs", api)
