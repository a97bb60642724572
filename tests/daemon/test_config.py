"""node.toml: the template loads, paths resolve next to the file, bad values are named."""

from __future__ import annotations

import pytest

from node.daemon.config import load_config, write_template
from node.errors import ConfigError


def test_template_round_trips(tmp_path):
    path = tmp_path / "node.toml"
    write_template(path, rpc="http://127.0.0.1:9999")

    config = load_config(path)

    assert config.rpc == "http://127.0.0.1:9999"
    assert config.data_dir == tmp_path and config.keystore == tmp_path / "keystore.json"
    assert config.listen == ("/ip4/127.0.0.1/tcp/0",)  # loopback by default
    assert config.status_listen.startswith("127.0.0.1:")
    assert config.storage_backend == "embedded" and config.tasks == ()


@pytest.mark.parametrize("api", ["/ip4/127.0.0.1/tcp/5001", "/ip4/10.0.0.2/tcp/5001/http", "/dns4/ipfs.local/tcp/443/https"])
def test_kubo_backend_with_its_api(tmp_path, api):
    path = tmp_path / "node.toml"
    write_template(path)
    path.write_text(path.read_text().replace('backend = "embedded"', f'backend = "kubo"\nkubo_api = "{api}"'))

    config = load_config(path)

    assert (config.storage_backend, config.kubo_api) == ("kubo", api)


def test_template_is_not_overwritten(tmp_path):
    path = tmp_path / "node.toml"
    path.write_text("keep me")
    with pytest.raises(ConfigError, match="already exists"):
        write_template(path)
    assert path.read_text() == "keep me"


@pytest.mark.parametrize(
    "text, message",
    [
        ("not toml [", "not valid TOML"),
        ('[chain]\nrpc = 5\n[data]\npath = "d.npz"', "'rpc' must be str"),
        ('[data]\npath = "d.npz"', "missing key 'rpc'"),
        ('[chain]\nrpc = "x"\ntasks = [0]\n[data]\npath = "d.npz"', "positive task ids"),
        ('[chain]\nrpc = "x"\n[data]\npath = "d.npz"\n[storage]\nbackend = "s3"', "embedded or kubo"),
        ('[chain]\nrpc = "x"\n[data]\npath = "d.npz"\n[storage]\nbackend = "kubo"', "needs kubo_api"),
        ('[chain]\nrpc = "x"\n[data]\npath = "d.npz"\n[storage]\nbackend = "kubo"\nkubo_api = "localhost:5001"', "kubo_api must be"),
        ('[chain]\nrpc = "x"\n[data]\npath = "d.npz"\n[storage]\nkubo_api = "/ip4/127.0.0.1/udp/5001"', "kubo_api must be"),
        ('[chain]\nrpc = "x"\n[data]\npath = "d.npz"\n[storage]\nkubo_api = "/ip4/127.0.0.1/tcp/5001/ws"', "kubo_api must be"),
        ('[chain]\nrpc = "x"\n[data]\npath = "d.npz"\n[status]\nlisten = "nowhere"', "HOST:PORT"),
        ('[chain]\nrpc = "x"\n[data]\npath = "d.npz"\n[node]\nlog_level = "loud"', "log_level"),
        ('[chain]\nrpc = "x"\n[data]\npath = "d.npz"\n[extra]\na = 1', "unknown section"),
        ('[chain]\nrpc = "x"\npoll_interval = true\n[data]\npath = "d.npz"', "poll_interval"),
    ],
)
def test_bad_configs_name_the_problem(tmp_path, text, message):
    path = tmp_path / "node.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_missing_config_points_at_init(tmp_path):
    with pytest.raises(ConfigError, match="fedledger node init"):
        load_config(tmp_path / "nope.toml")
