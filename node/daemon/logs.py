"""Readable daemon logs: one line per event, UTC timestamps, level, component."""

from __future__ import annotations

import logging
import sys


class _UTCFormatter(logging.Formatter):
    converter = __import__("time").gmtime


def setup_logging(level: str = "info", stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_UTCFormatter("%(asctime)sZ %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S"))
    root = logging.getLogger("fedledger")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
