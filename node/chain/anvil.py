"""A local anvil testnet, run as a child process on loopback.

anvil ships inside the npm package `@foundry-rs/anvil` (pinned in
package.json); `npm ci` puts it under node_modules/.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import time
from pathlib import Path

import requests

from node.children import parent_death_signal
from node.errors import ChainError

REPO_ROOT = Path(__file__).resolve().parents[2]


def anvil_binary() -> Path:
    """The pinned anvil from node_modules, else one on PATH."""
    arch = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), platform.machine())
    candidates = [
        REPO_ROOT / "node_modules" / "@foundry-rs" / f"anvil-linux-{arch}" / "bin" / "anvil",
        REPO_ROOT / "node_modules" / ".bin" / "anvil",
    ]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    found = shutil.which("anvil")
    if found:
        return Path(found)
    raise ChainError("anvil is not installed; run `npm ci` in the repository (scripts/setup.sh does)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Anvil:
    """An anvil process; use as a context manager, or call start()/stop()."""

    def __init__(self, port: int | None = None, accounts: int = 10, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port if port is not None else free_port()
        self.accounts = accounts
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> "Anvil":
        cmd = [str(anvil_binary()), "--host", self.host, "--port", str(self.port), "--accounts", str(self.accounts)]
        # Dies with us, even when we are killed with SIGKILL (a kill -9'd `simulate` left anvil running).
        self.process = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=parent_death_signal()
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace").strip() if self.process.stderr else ""
                # Its error line, not the "For more information, try '--help'." that follows it.
                lines = [line for line in err.splitlines() if line.strip()]
                named = [line for line in lines if line.lower().startswith("error")]
                raise ChainError(f"anvil exited at start-up: {(named or lines or ['no output'])[0]}")
            if self.is_up():
                return self
            time.sleep(0.05)
        self.stop()
        raise ChainError(f"anvil did not answer on {self.url} within {timeout:.0f} s")

    def is_up(self) -> bool:
        try:
            r = requests.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=1)
            return r.ok
        except requests.RequestException:
            return False

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def wait(self) -> int:
        """Block until anvil exits (e.g. on Ctrl-C); returns its exit status."""
        assert self.process is not None
        return self.process.wait()

    def __enter__(self) -> "Anvil":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
