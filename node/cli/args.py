"""Argument types and output helpers shared by the `fedledger` commands."""

from __future__ import annotations

import argparse
import json
import os
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from node.units import WAD


def _scaled_decimal(text: str, what: str, low: Decimal, high: Decimal | None, scale: int) -> int:
    """Parse a decimal in [low, high] exactly (no float) and return it times `scale`, truncated."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
    if not value.is_finite() or value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise argparse.ArgumentTypeError(f"must be {bound}: {text!r}")
    return int(value * scale)


def _eth_to_wei(text: str) -> int:
    return _scaled_decimal(text, "an amount of ETH", Decimal(0), None, WAD)


def _int_at_least(low: int, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}: {text!r}")
    return value


def _positive_int(text: str) -> int:
    return _int_at_least(1, text)


def _non_negative_int(text: str) -> int:
    return _int_at_least(0, text)


def _ipfs_dir(args: argparse.Namespace) -> Path:
    if args.repo:
        return Path(args.repo)
    home = Path(os.environ.get("FEDLEDGER_HOME", Path.home() / ".fedledger"))
    return home / "ipfs"


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def _fraction_to_wad(text: str) -> int:
    return _scaled_decimal(text, "a number", Decimal(0), Decimal(1), WAD)


def _percent_to_bps(text: str) -> int:
    return _scaled_decimal(text, "a percentage", Decimal(0), Decimal(100), 100)
