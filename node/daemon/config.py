"""node.toml: a node operator's configuration (SPEC §8).

Paths in the file are relative to the file's own directory, so a node
directory can be moved as a whole. Secrets never live here: the Ethereum key
is in an encrypted keystore, its password comes from a file, the environment
or a prompt.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Sequence

from eth_utils import is_address, to_checksum_address

from node.daemon.policy import TaskPolicy
from node.errors import ConfigError
from node.units import ETHER

LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class NodeConfig:
    path: Path  # the config file itself
    data_dir: Path  # blockstore, journal and identity live here
    keystore: Path  # encrypted eth-account keystore
    password_file: Path | None  # optional; else FEDLEDGER_PASSWORD or a prompt
    log_level: str
    rpc: str  # JSON-RPC endpoint of the chain
    deployment: Path  # deployment.json written by `fedledger deploy`
    policy: TaskPolicy  # [tasks]: which tasks to work on (none unless told) and the limits they must fit
    listen: tuple[str, ...]  # libp2p listen multiaddrs (loopback unless told otherwise)
    storage_backend: str  # embedded | kubo
    kubo_api: str | None  # kubo RPC multiaddr when storage_backend == "kubo"
    data_path: Path | None  # the node's private training data (None: the app loads its own)
    data_format: str  # auto | npz | csv | images
    status_listen: str  # host:port of the JSON status endpoint and /metrics
    poll_interval: float = 1.0  # seconds between chain polls when idle
    train_seed: int | None = None  # [training] seed: fixes this node's training seeds; None = random
    test_path: Path | None = None  # [data] test: held-out data the node evaluates models on
    app_ref: str | None = None  # [app] ref: this node's copy of the task's app (file.py:attr, package.module:attr)
    app_node_config: dict[str, Any] = field(default_factory=dict)  # [app.node_config]: Flower's context.node_config

    def node_config(self) -> dict[str, Any]:
        """What the app gets as its node config: [app.node_config], with the [data] files as
        data-path, data-format and test-path (the built-in apps read those)."""
        out = dict(self.app_node_config)
        if self.data_path is not None:
            out.update({"data-path": str(self.data_path), "data-format": self.data_format})
        if self.test_path is not None:
            out["test-path"] = str(self.test_path)
        return out
    extra: dict[str, Any] = field(default_factory=dict)


TEMPLATE = """\
# FedLedger node configuration. Paths are relative to this file.

[node]
data_dir = "."                 # blockstore, action journal, libp2p identity (p2p/identity.ed25519)
keystore = "keystore.json"     # encrypted Ethereum key (eth-account keystore v3)
# password_file = "password"   # else FEDLEDGER_PASSWORD, else a prompt
log_level = "info"             # debug | info | warning | error

[chain]
rpc = "{rpc}"
deployment = "{deployment}" # written by `fedledger deploy`
poll_interval = 1.0            # seconds between polls of the chain when idle

[tasks]
# Which tasks this node works on. A task can slash the stake of the nodes that act in it (a
# rejected proposal, a missing reveal), and anyone can create one: so the node joins NO task
# until you list it here. It never draws, commits, proposes, attests or finalizes elsewhere.
# `fedledger node join --config node.toml --task T` checks task T against the limits below and adds it.
join = []                      # task ids to work on, e.g. [1, 4]
owners = []                    # also work on every task created by these addresses ("0x...")
# Limits every joined task must fit; a task over any of them is refused (one log line).
max_stake_at_risk = "1"        # ETH one slash in a task may take (the task's minimum stake)
min_reward = "0"               # ETH the task's reward pool must hold
max_rounds = 1000
max_committee = 64
max_epochs = 100               # local epochs per round the spec may ask for
max_batch_size = 4096
max_update_bytes = 268435456   # 256 MiB: largest update (and model) the spec may allow

[p2p]
# Loopback by default; list a public address to federate across machines.
listen = ["/ip4/127.0.0.1/tcp/0"]

[storage]
backend = "embedded"           # embedded (in data_dir) | kubo
# kubo_api = "/ip4/127.0.0.1/tcp/5001"

[data]
path = "data.npz"              # .npz with arrays x and y, a .csv (label in the last column), or a folder of images per class
format = "auto"                # auto | npz | csv | images
# test = "test.npz"            # held-out data the node evaluates each new global model on; default: the training data

# [app]                        # the task's app, when it is not a built-in one (see README, "Bring your own model")
# ref = "my_app.py:app"        # a Flower ClientApp or a FedLedger app, relative to this file
# [app.node_config]            # what the app reads as context.node_config
# partition-id = 0

[status]
listen = "127.0.0.1:0"         # live dashboard at /, JSON status at /status, Prometheus metrics at /metrics

[training]
# seed = 1234                  # fixes the seed of every round's local training (reproducible runs); default random
"""


# Every key node.toml may hold, by section. A misspelt key would silently fall back to its
# default (a `deplyment` would leave the node on "deployment.json"), so anything else is an error.
KNOWN_KEYS: dict[str, tuple[str, ...]] = {
    "node": ("data_dir", "keystore", "password_file", "log_level"),
    "chain": ("rpc", "deployment", "poll_interval"),
    "tasks": ("join", "owners", "max_stake_at_risk", "min_reward", "max_rounds", "max_committee", "max_epochs",
              "max_batch_size", "max_update_bytes"),
    "p2p": ("listen",),
    "storage": ("backend", "kubo_api"),
    "data": ("path", "format", "test"),
    "app": ("ref", "node_config"),
    "status": ("listen",),
    "training": ("seed",),
}  # fmt: skip


def check_keys(table: dict[str, Any], known: Sequence[str], where: str, what: str = "key") -> None:
    """ConfigError naming the first unknown key, with the known one it most likely misspells."""
    for key in sorted(set(table) - set(known)):
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(known)}"
        shown = f"[{key}]" if what == "section" else key
        raise ConfigError(f"{where}: unknown {what} {shown}; {hint}")


def _get(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any = ...) -> Any:
    if key not in table:
        if default is ...:
            raise ConfigError(f"{where}: missing key {key!r}")
        return default
    value = table[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{where}: {key!r} must be {names}, not {type(value).__name__}")
    return value


# What ipfshttpclient can reach an IPFS daemon's RPC API at: a host, a TCP port, http(s) or nothing.
_API_HOSTS = ("ip4", "ip6", "dns", "dns4", "dns6")


def _check_api_addr(addr: str, where: str) -> None:
    """An IPFS RPC API address must be a multiaddr like /ip4/127.0.0.1/tcp/5001[/http|/https]."""
    import multiaddr

    usage = f"{where}: kubo_api must be an IPFS daemon's API multiaddr like /ip4/127.0.0.1/tcp/5001, not {addr!r}"
    try:
        names = [p.name for p in multiaddr.Multiaddr(addr).protocols()]
    except Exception:
        raise ConfigError(usage) from None
    if len(names) < 2 or names[0] not in _API_HOSTS or names[1] != "tcp" or names[2:] not in ([], ["http"], ["https"]):
        raise ConfigError(usage)


def load_config(path: str | Path) -> NodeConfig:
    """Read and validate node.toml; every problem is one ConfigError line naming the file and key."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist (create one with `fedledger node init`)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    base = path.resolve().parent
    check_keys(raw, KNOWN_KEYS, str(path), "section")
    tables = {}
    for name, known in KNOWN_KEYS.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{name}] must be a table")
        if name != "chain":  # [chain] tasks gets its own message below
            check_keys(table, known, f"{path} [{name}]")
        tables[name] = table

    def rel(value: str) -> Path:
        return (base / value).resolve()

    n, c, p, s, d, st = (tables[k] for k in ("node", "chain", "p2p", "storage", "data", "status"))
    log_level = _get(n, "log_level", str, f"{path} [node]", "info").lower()
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"{path} [node]: log_level must be one of {', '.join(LOG_LEVELS)}, not {log_level!r}")
    if "tasks" in c:
        raise ConfigError(
            f"{path} [chain]: tasks is no longer read; list the tasks to work on in [tasks] join "
            "(the node now joins no task unless told)"
        )
    check_keys(c, KNOWN_KEYS["chain"], f"{path} [chain]")
    policy = _policy(tables["tasks"], f"{path} [tasks]")
    listen = _get(p, "listen", list, f"{path} [p2p]", ["/ip4/127.0.0.1/tcp/0"])
    if not all(isinstance(a, str) and a.startswith("/") for a in listen):
        raise ConfigError(f"{path} [p2p]: listen must be a list of multiaddrs like /ip4/127.0.0.1/tcp/0")
    backend = _get(s, "backend", str, f"{path} [storage]", "embedded")
    if backend not in ("embedded", "kubo"):
        raise ConfigError(f"{path} [storage]: backend must be embedded or kubo, not {backend!r}")
    kubo_api = _get(s, "kubo_api", str, f"{path} [storage]", None)
    if backend == "kubo" and not kubo_api:
        raise ConfigError(f"{path} [storage]: backend kubo needs kubo_api")
    if kubo_api is not None:
        _check_api_addr(kubo_api, f"{path} [storage]")
    data_format = _get(d, "format", str, f"{path} [data]", "auto")
    if data_format not in ("auto", "npz", "csv", "images"):
        raise ConfigError(f"{path} [data]: format must be auto, npz, csv or images, not {data_format!r}")
    app_ref, app_node_config = _app(tables["app"], f"{path} [app]")
    # The built-in apps train on [data]; an app of one's own may load its data itself.
    data_file = _get(d, "path", str, f"{path} [data]", None if app_ref else ...)
    data_path = rel(data_file) if data_file else None
    test_path = _get(d, "test", str, f"{path} [data]", None)
    status_listen = _get(st, "listen", str, f"{path} [status]", "127.0.0.1:0")
    host, _, port = status_listen.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{path} [status]: listen must be HOST:PORT, not {status_listen!r}")
    poll = _get(c, "poll_interval", (int, float), f"{path} [chain]", 1.0)
    if not 0 < poll <= 3600:
        raise ConfigError(f"{path} [chain]: poll_interval must be in (0, 3600] seconds")
    password_file = _get(n, "password_file", str, f"{path} [node]", None)
    train_seed = _get(tables["training"], "seed", int, f"{path} [training]", None)
    if train_seed is not None and not 0 <= train_seed < 2**31:
        raise ConfigError(f"{path} [training]: seed must be in [0, 2**31)")
    return NodeConfig(
        path=path.resolve(),
        data_dir=rel(_get(n, "data_dir", str, f"{path} [node]", ".")),
        keystore=rel(_get(n, "keystore", str, f"{path} [node]", "keystore.json")),
        password_file=rel(password_file) if password_file else None,
        log_level=log_level,
        rpc=_get(c, "rpc", str, f"{path} [chain]"),
        deployment=rel(_get(c, "deployment", str, f"{path} [chain]", "deployment.json")),
        policy=policy,
        listen=tuple(listen),
        storage_backend=backend,
        kubo_api=kubo_api,
        data_path=data_path,
        test_path=rel(test_path) if test_path else None,
        app_ref=app_ref,
        app_node_config=app_node_config,
        data_format=data_format,
        status_listen=status_listen,
        poll_interval=float(poll),
        train_seed=train_seed,
    )


def _app(table: dict[str, Any], where: str) -> tuple[str | None, dict[str, Any]]:
    """[app] ref (checked to be a REF, not imported yet) and [app.node_config] (scalars only)."""
    from node.apps.refs import split_ref

    ref = _get(table, "ref", str, where, None)
    if ref is not None:
        try:
            split_ref(ref)
        except ConfigError as exc:
            raise ConfigError(f"{where}: ref: {exc}") from None
    node_config = _get(table, "node_config", dict, where, {})
    for key, value in node_config.items():
        if isinstance(value, (dict, list)) or not isinstance(value, (str, int, float, bool)):
            raise ConfigError(f"{where}.node_config: {key} must be a string, number or boolean")
    return ref, dict(node_config)


def _wei(table: dict[str, Any], key: str, where: str, default: int) -> int:
    """An amount of ETH, written "1.5" (exact) or as a number, in wei."""
    if key not in table:
        return default
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(f"{where}: {key!r} must be an amount of ETH like \"0.5\"")
    try:
        wei = Decimal(str(value)) * ETHER
    except InvalidOperation:
        raise ConfigError(f"{where}: {key!r} must be an amount of ETH like \"0.5\", not {value!r}") from None
    if not wei.is_finite() or wei < 0 or wei != wei.to_integral_value() or wei >= 2**256:
        raise ConfigError(f"{where}: {key!r} must be a non-negative amount of ETH, at most 18 decimals")
    return int(wei)


def _limit(table: dict[str, Any], key: str, where: str, default: int) -> int:
    value = _get(table, key, int, where, default)
    if value < 1:
        raise ConfigError(f"{where}: {key!r} must be a positive integer")
    return value


def _policy(t: dict[str, Any], where: str) -> TaskPolicy:
    join = _get(t, "join", list, where, [])
    if not all(isinstance(x, int) and not isinstance(x, bool) and 0 < x < 2**256 for x in join):
        raise ConfigError(f"{where}: join must be a list of positive task ids")
    owners = _get(t, "owners", list, where, [])
    if not all(isinstance(a, str) and is_address(a) for a in owners):
        raise ConfigError(f"{where}: owners must be a list of addresses like \"0x70997970C51812dc3A010C7d01b50e0d17dc79C8\"")
    d = TaskPolicy()
    return TaskPolicy(
        join=tuple(dict.fromkeys(join)),
        owners=tuple(to_checksum_address(a) for a in owners),
        max_stake_at_risk_wei=_wei(t, "max_stake_at_risk", where, d.max_stake_at_risk_wei),
        min_reward_wei=_wei(t, "min_reward", where, d.min_reward_wei),
        max_rounds=_limit(t, "max_rounds", where, d.max_rounds),
        max_committee=_limit(t, "max_committee", where, d.max_committee),
        max_epochs=_limit(t, "max_epochs", where, d.max_epochs),
        max_batch_size=_limit(t, "max_batch_size", where, d.max_batch_size),
        max_update_bytes=_limit(t, "max_update_bytes", where, d.max_update_bytes),
    )


def write_template(path: str | Path, rpc: str = "http://127.0.0.1:8545", deployment: str = "deployment.json") -> None:
    """Write a commented node.toml; refuses to overwrite an existing one. `deployment` is as
    written in the file: relative to the file's directory, or absolute."""
    path = Path(path)
    if path.exists():
        raise ConfigError(f"{path} already exists; not overwriting it")
    path.write_text(TEMPLATE.format(rpc=rpc, deployment=deployment))


_SECTION = re.compile(r"^\s*\[\s*([A-Za-z0-9_.-]+)\s*\]\s*(#.*)?$")
_JOIN = re.compile(r"^(\s*join\s*=\s*)")


def add_join(path: str | Path, task: int) -> tuple[int, ...]:
    """Add `task` to `[tasks] join` in the node.toml at `path`, leaving every other line (comments
    included) as it is; returns the new list. Written atomically, and checked by reading it back."""
    path = Path(path)
    joined = load_config(path).policy.join  # the file is valid before it is touched
    if task in joined:
        return joined
    new = (*joined, task)
    entry = f"join = [{', '.join(map(str, new))}]"  # where the file has none
    lines = path.read_text().splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if _SECTION.match(line)]
    header = next((i for i in starts if _SECTION.match(lines[i]).group(1) == "tasks"), None)  # type: ignore[union-attr]
    if header is None:
        lines += ([] if not lines or lines[-1].endswith("\n") else ["\n"]) + ["\n[tasks]\n", entry + "\n"]
    else:
        end = next((i for i in starts if i > header), len(lines))
        at = next((i for i in range(header + 1, end) if _JOIN.match(lines[i])), None)
        if at is None:
            lines.insert(header + 1, entry + "\n")
        else:
            # The old value may span lines ([1,\n 2]); it holds only integers, so brackets and a
            # comment are all there is to it. A comment after it on its last line is kept.
            last, depth = at, 0
            for last in range(at, end):
                code = lines[last].partition("#")[0]
                depth += code.count("[") - code.count("]")
                if depth <= 0:
                    break
            value = _JOIN.match(lines[at]).group(1) + f"[{', '.join(map(str, new))}]"  # type: ignore[union-attr]
            code, hash_, comment = lines[last].rstrip("\n").partition("#")
            if hash_:  # the comment stays in its column when there is room
                value += " " * max(1, len(code) - len(value)) + hash_ + comment
            lines[at : last + 1] = [value + "\n"]
    text = "".join(lines)
    try:
        check = tomllib.loads(text).get("tasks", {}).get("join")
    except tomllib.TOMLDecodeError:
        check = None
    if check != list(new):
        raise ConfigError(f"{path}: cannot add task {task} to [tasks] join by hand-safe editing; add it yourself")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, path.stat().st_mode & 0o777)
    os.replace(tmp, path)
    return new
