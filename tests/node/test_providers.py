"""Reaching a chain over JSON-RPC: a silent endpoint costs one timeout, not web3's retries."""

from __future__ import annotations

import socket
import time

import pytest

from node.chain.providers import rpc_web3
from node.errors import ChainError


def test_a_chain_that_never_answers_fails_after_one_timeout():
    """A listening socket that never answers (a cut-off or hung node). With web3's default retries
    the first call took 5 tries of the timeout plus backoff, and a cut-off daemon logged nothing
    for minutes; the daemon's own backoff logs each failure instead."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(ChainError, match="cannot reach the chain at .*ReadTimeout"):
            rpc_web3(url, timeout=0.5)
        assert time.monotonic() - start < 2.0
