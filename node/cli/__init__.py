"""The `fedledger` command line (SPEC §9).

Every command has --help, every query --json; an expected failure is one line
on stderr and exit status 1 (argparse's usage errors exit 2).
"""

from __future__ import annotations

import sys
from typing import Sequence

from node.cli.parser import build_parser
from node.errors import FedLedgerError


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["simulate"]:
        from node.reproducible import pin_cpu_kernels

        pin_cpu_kernels()  # before torch loads: the same seed trains the same on any x86-64 CPU
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FedLedgerError as exc:
        print(f"fedledger: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a file the user named: unreadable, missing, or a full disk
        where = f" {exc.filename}" if exc.filename else ""
        print(f"fedledger: error:{where} {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fedledger: interrupted", file=sys.stderr)
        return 130
