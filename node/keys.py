"""Signing keys for commands that send transactions.

Keys live in encrypted eth-account keystores; the password comes from a file,
the FEDLEDGER_PASSWORD environment variable, or a prompt, never from a flag
(flags end up in shell history and `ps`). Development accounts are allowed only
on a local testnet.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from node.chain.accounts import TESTNET_CHAIN_ID, dev_account
from node.errors import ConfigError


def read_password(password_file: str | None, confirm: bool = False) -> str:
    """The keystore password; `confirm` asks twice when prompting (for a new keystore)."""
    if password_file:
        try:
            return Path(password_file).read_text().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"cannot read password file {password_file}: {exc.strerror}") from None
    if "FEDLEDGER_PASSWORD" in os.environ:
        return os.environ["FEDLEDGER_PASSWORD"]
    if not sys.stdin.isatty():
        raise ConfigError("no password: use --password-file or FEDLEDGER_PASSWORD")
    password = getpass.getpass("keystore password: ")
    if confirm and getpass.getpass("again: ") != password:
        raise ConfigError("the two passwords differ")
    return password


def load_keystore(path: str, password: str) -> LocalAccount:
    try:
        blob = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read keystore {path}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(f"keystore {path} is not JSON") from None
    try:
        key = Account.decrypt(blob, password)
    except ValueError:
        raise ConfigError(f"wrong password for keystore {path}") from None
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"keystore {path} is malformed: missing {exc}") from None
    return Account.from_key(key)


def write_keystore(path: str | Path, account: LocalAccount, password: str) -> None:
    path = Path(path)
    blob = Account.encrypt(account.key, password)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(blob, f)


def signer(keystore: str | None, password_file: str | None, dev_index: int | None, chain_id: int) -> LocalAccount:
    """The account a command signs with, from --keystore or --dev-account."""
    if dev_index is not None:
        if chain_id != TESTNET_CHAIN_ID:
            raise ConfigError(f"--dev-account is only allowed on a local testnet (chain id {TESTNET_CHAIN_ID}), not {chain_id}")
        return dev_account(dev_index)
    if keystore is None:
        raise ConfigError("this command sends a transaction: give --keystore FILE (or --dev-account N on a testnet)")
    return load_keystore(keystore, read_password(password_file))
