"""node.toml: the template loads, paths resolve next to the file, bad values are named."""

from __future__ import annotations

import pytest

from dataclasses import replace

from node.chain.types import TaskInfo
from node.daemon.config import load_config, write_template
from node.daemon.policy import TaskPolicy
from node.errors import ConfigError
from node.taskspec import TaskSpec


def test_template_round_trips(tmp_path):
    path = tmp_path / "node.toml"
    write_template(path, rpc="http://127.0.0.1:9999")

    config = load_config(path)

    assert config.rpc == "http://127.0.0.1:9999"
    assert config.data_dir == tmp_path and config.keystore == tmp_path / "keystore.json"
    assert config.listen == ("/ip4/127.0.0.1/tcp/0",)  # loopback by default
    assert config.status_listen.startswith("127.0.0.1:")
    assert config.storage_backend == "embedded"
    # C1 (#14): a fresh node joins no task; anyone can create one, and a joined task can slash.
    assert config.policy == TaskPolicy() and not config.policy.joins_any


def test_task_policy_is_read_from_its_section(tmp_path):
    path = tmp_path / "node.toml"
    write_template(path)
    owner = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8"
    text = path.read_text()
    for old, new in (("join = []", "join = [3, 1, 3]"), ("owners = []", f'owners = ["{owner}"]'),
                     ('max_stake_at_risk = "1"', 'max_stake_at_risk = "0.25"'), ('min_reward = "0"', "min_reward = 2"),
                     ("max_epochs = 100", "max_epochs = 7")):  # fmt: skip
        assert old in text
        text = text.replace(old, new)
    path.write_text(text)

    policy = load_config(path).policy

    assert policy.join == (3, 1) and policy.owners == ("0x70997970C51812dc3A010C7d01b50e0d17dc79C8",)
    assert (policy.max_stake_at_risk_wei, policy.min_reward_wei, policy.max_epochs) == (25 * 10**16, 2 * 10**18, 7)
    assert policy.selects(1, "0x0000000000000000000000000000000000000001") and policy.selects(9, "0x" + owner[2:].upper())
    assert not policy.selects(2, "0x0000000000000000000000000000000000000001")


def test_policy_refuses_what_is_over_its_limits():
    policy = TaskPolicy(join=(1,), max_stake_at_risk_wei=10, min_reward_wei=5, max_rounds=3, max_committee=4,
                        max_epochs=2, max_batch_size=8, max_update_bytes=100)  # fmt: skip
    info = TaskInfo("0x" + "11" * 20, rounds=3, committee_size=4, rule=0, max_samples=1, current_round=1,
                    reward_remaining=5, spec_cid="x")  # fmt: skip
    assert policy.refuse_task(info, 10) is None
    assert "max_stake_at_risk" in policy.refuse_task(info, 11)
    assert "min_reward" in policy.refuse_task(replace(info, reward_remaining=4), 0)
    assert "max_rounds" in policy.refuse_task(replace(info, rounds=4), 0)
    assert "max_committee" in policy.refuse_task(replace(info, committee_size=5), 0)
    assert policy.refuse_spec(TaskSpec(epochs=2, batch_size=8, max_update_bytes=100)) is None
    assert "max_epochs" in policy.refuse_spec(TaskSpec(epochs=3, batch_size=8, max_update_bytes=100))
    assert "max_batch_size" in policy.refuse_spec(TaskSpec(epochs=2, batch_size=9, max_update_bytes=100))
    assert "max_update_bytes" in policy.refuse_spec(TaskSpec(epochs=2, batch_size=8, max_update_bytes=101))


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
        ('[chain]\nrpc = "x"\ntasks = [1]\n[data]\npath = "d.npz"', r"\[tasks\] join"),
        ('[chain]\nrpc = "x"\n[tasks]\njoin = [0]\n[data]\npath = "d.npz"', "positive task ids"),
        ('[chain]\nrpc = "x"\n[tasks]\njoin = [true]\n[data]\npath = "d.npz"', "positive task ids"),
        ('[chain]\nrpc = "x"\n[tasks]\nowners = ["0x12"]\n[data]\npath = "d.npz"', "owners must be"),
        ('[chain]\nrpc = "x"\n[tasks]\nmax_stake_at_risk = "lots"\n[data]\npath = "d.npz"', "amount of ETH"),
        ('[chain]\nrpc = "x"\n[tasks]\nmax_stake_at_risk = "-1"\n[data]\npath = "d.npz"', "non-negative"),
        ('[chain]\nrpc = "x"\n[tasks]\nmin_reward = "1e-19"\n[data]\npath = "d.npz"', "18 decimals"),
        ('[chain]\nrpc = "x"\n[tasks]\nmin_reward = "NaN"\n[data]\npath = "d.npz"', "non-negative"),
        ('[chain]\nrpc = "x"\n[tasks]\nmax_epochs = 0\n[data]\npath = "d.npz"', "positive integer"),
        ('[chain]\nrpc = "x"\n[tasks]\nmax_update_bytes = 1.5\n[data]\npath = "d.npz"', "must be int"),
        ('[chain]\nrpc = "x"\ntasks = "all"\n[data]\npath = "d.npz"', r"\[tasks\] join"),
        ('[chain]\nrpc = "x"\n[data]\npath = "d.npz"\n[tasks]\njoin = 1', "must be list"),
        ('[chain]\nrpc = "x"\n[data]\npath = "d.npz"\n[tasks]\nmax_stake = "1"', "unknown key.*max_stake"),
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


@pytest.mark.parametrize(
    "old, new, message",
    [
        ('deployment = "deployment.json"', 'deplyment = "deployment.json"', r"\[chain\]: unknown key deplyment; did you mean deployment\?"),
        ('log_level = "info"', 'loglevel = "info"', r"\[node\]: unknown key loglevel; did you mean log_level\?"),
        ('format = "auto"', 'fromat = "auto"', r"\[data\]: unknown key fromat; did you mean format\?"),
        ("max_rounds = 1000", "max_round = 1000", r"\[tasks\]: unknown key max_round; did you mean max_rounds\?"),
        ('backend = "embedded"', 'backend = "embedded"\ncolour = "blue"', r"\[storage\]: unknown key colour; known: backend, kubo_api"),
        ("[training]", "[trainig]", r"unknown section \[trainig\]; did you mean training\?"),
    ],
)
def test_unknown_keys_are_errors_with_a_suggestion(tmp_path, old, new, message):
    path = tmp_path / "node.toml"
    write_template(path)
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))

    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_missing_config_points_at_init(tmp_path):
    with pytest.raises(ConfigError, match="fedledger node init"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    "tasks, expected",
    [
        ("[tasks]\njoin = [2]  # mine\nmax_rounds = 5\n", "[tasks]\njoin = [2, 7] # mine\nmax_rounds = 5\n"),  # no room: one space
        ("[tasks]\njoin = [\n  2,\n  3,\n]\nmax_rounds = 5\n", "[tasks]\njoin = [2, 3, 7]\nmax_rounds = 5\n"),
        ("[tasks]\nmax_rounds = 5\n", "[tasks]\njoin = [7]\nmax_rounds = 5\n"),
        ("", "\n[tasks]\njoin = [7]\n"),
    ],
)
def test_add_join_edits_only_the_join_line(tmp_path, tasks, expected):
    from node.daemon.config import add_join

    head = '# my node\n[chain]\nrpc = "x"  # the chain\n[data]\npath = "d.npz"\n'
    path = tmp_path / "node.toml"
    path.write_text(head + tasks)

    joined = add_join(path, 7)

    assert path.read_text() == head + expected
    assert joined == load_config(path).policy.join and 7 in joined
    assert add_join(path, 7) == joined and path.read_text() == head + expected  # already joined: unchanged
