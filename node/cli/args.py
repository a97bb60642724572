"""Argument types and output helpers shared by the `fedledger` commands."""

from __future__ import annotations

import argparse
import json
import os
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from node.errors import ConfigError
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


def parse_run_config(text: str | None) -> dict[str, Any] | None:
    """`--run-config "lr=0.1 name='x' fast=true"` as `flwr run` reads it: space-separated KEY=VALUE,
    each VALUE a TOML value (number, boolean, quoted string), else taken as a bare string."""
    import shlex
    import tomllib

    if text is None:
        return None
    out: dict[str, Any] = {}
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise ConfigError(f"--run-config: {exc}") from None
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--run-config: {word!r} is not KEY=VALUE")
        try:
            parsed = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value
        if not isinstance(parsed, (int, float, str, bool)):
            raise ConfigError(f"--run-config: {key} must be a number, string or boolean")
        out[key.strip()] = parsed
    return out


def app_fields(args: argparse.Namespace) -> tuple[dict[str, Any], str | None]:
    """The task spec's app fields from --app/--model/--run-config/--batch-size/--lr/--max-update-bytes,
    and the model REF (--model with a colon) that builds the initial model."""
    from node.apps.builtin import BUILTIN_APPS
    from node.apps.refs import split_ref

    fields: dict[str, Any] = {"batch_size": args.batch_size, "lr": args.lr}
    if args.max_update_bytes is not None:
        fields["max_update_bytes"] = args.max_update_bytes
    run_config = parse_run_config(args.run_config)
    if run_config:
        fields["run_config"] = run_config
    model_ref = None
    if args.model is not None and ":" in args.model:
        split_ref(args.model)
        model_ref = args.model
    elif args.model is not None:
        if args.app is not None and args.app != args.model:
            raise ConfigError(f"--model {args.model} is a built-in app; with --app {args.app} give --model a REF")
        fields["model"] = args.model
    if args.app is not None:
        if args.app in BUILTIN_APPS:
            fields["model"] = args.app
        else:
            split_ref(args.app)
            fields["app"] = args.app
    if model_ref is not None and args.initial_model is not None:
        raise ConfigError("--model REF and --initial-model FILE both give the initial model: give one")
    return fields, model_ref

