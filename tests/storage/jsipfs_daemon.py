"""Start a real IPFS RPC daemon (js-ipfs 0.66.1 from scripts/jsipfs) on loopback, for the kubo-backend tests.

scripts/setup.sh installs it. The two Node 20 workarounds of DEPENDENCIES.md
are applied here: a `Promise.withResolvers` polyfill preloaded through
NODE_OPTIONS, and no swarm addresses with `daemon --offline`. Each daemon has
its own temporary IPFS_PATH and a free loopback port, and is always killed.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
JSIPFS_DIR = REPO / "scripts" / "jsipfs"
JSIPFS = JSIPFS_DIR / "node_modules" / ".bin" / "jsipfs"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def jsipfs_daemon(repo: Path, startup_timeout: float = 60.0) -> Iterator[str]:
    """Run `jsipfs daemon --offline` with its repo at `repo`; yield its API multiaddr; kill it on exit."""
    if not JSIPFS.exists():
        raise RuntimeError(f"{JSIPFS} is missing: run `bash scripts/setup.sh`")
    env = {
        **os.environ,
        "IPFS_PATH": str(repo),
        "NODE_OPTIONS": f"--require {JSIPFS_DIR / 'polyfill.cjs'}",
    }

    def jsipfs(*args: str) -> None:
        subprocess.run([str(JSIPFS), *args], env=env, check=True, capture_output=True, timeout=120)

    port = _free_port()
    api = f"/ip4/127.0.0.1/tcp/{port}/http"
    jsipfs("init")
    # With any swarm address js-ipfs 0.66.1 never brings the API up on Node 20.
    jsipfs("config", "--json", "Addresses.Swarm", "[]")
    jsipfs("config", "Addresses.API", f"/ip4/127.0.0.1/tcp/{port}")
    jsipfs("config", "--json", "Addresses.Gateway", '""')
    log = open(repo / "daemon.log", "wb")
    proc = subprocess.Popen([str(JSIPFS), "daemon", "--offline"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + startup_timeout
        while b"Daemon is ready" not in (repo / "daemon.log").read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"jsipfs daemon did not start:\n{(repo / 'daemon.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield api
    finally:
        proc.kill()
        proc.wait(timeout=30)
        log.close()
