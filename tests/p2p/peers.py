"""Start and drive p2p_peer_proc.py node processes; every process is killed when the context exits."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

SCRIPT = Path(__file__).with_name("p2p_peer_proc.py")


class PeerProcess:
    """One node process; `call(op, **args)` sends a command and returns its JSON reply."""

    def __init__(self, data_dir: Path, *flags: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), str(data_dir), *flags],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(data_dir.with_suffix(".log"), "wb") if data_dir.parent.exists() else subprocess.DEVNULL,
            text=True,
        )
        hello = self._read(timeout=60)
        self.peer_id: str = hello["peer_id"]
        self.addr: str = hello["addrs"][0]

    def _read(self, timeout: float) -> dict:
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not result or not result[0]:
            raise RuntimeError(f"peer process gave no answer within {timeout} s (exit code {self.proc.poll()})")
        return json.loads(result[0])

    def call(self, op: str, timeout: float = 60, **args: object) -> dict:
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        return self._read(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


@contextlib.contextmanager
def peer_processes(base: Path, *flag_sets: tuple[str, ...]) -> Iterator[list[PeerProcess]]:
    """Start one process per flag set under `base`; kill all of them on exit, whatever happened."""
    peers: list[PeerProcess] = []
    try:
        for i, flags in enumerate(flag_sets):
            data_dir = base / f"node{i}"
            data_dir.mkdir(parents=True, exist_ok=True)
            peers.append(PeerProcess(data_dir, *flags))
        yield peers
    finally:
        for peer in peers:
            peer.stop()
