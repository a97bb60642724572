"""The `fedledger` command line (SPEC §9).

Every command has --help, every query --json. Every failure is one line on stderr: an
expected failure (bad input, an unreachable chain, a revert, missing content) is
`fedledger: error: ...` with exit status 1, a usage error is `fedledger ...: error: ...` with
exit status 2, and a bug is `fedledger: internal error: ...` with exit status 1 (its traceback
only with FEDLEDGER_DEBUG=1). docs/cli.md lists the contract.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

from node.cli.parser import build_parser
from node.errors import FedLedgerError


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, in order; trio wraps a task's error in
    one, and the user needs the error, not the group."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def root_cause(exc: BaseException) -> BaseException:
    """The error to report: the first leaf of a group that is not trio's cancellation of its
    siblings (the sibling cancelled because this one failed)."""
    leaves = _leaves(exc)
    real = [e for e in leaves if type(e).__name__ != "Cancelled"]
    return (real or leaves)[0]


def describe(exc: BaseException) -> str | None:
    """One line for an expected failure, or None for a bug."""
    if isinstance(exc, FedLedgerError):
        return str(exc)
    aggregation = sys.modules.get("aggregation.errors")  # only commands that aggregate load it
    if aggregation is not None and isinstance(exc, aggregation.AggregationError):
        return str(exc)
    requests = sys.modules.get("requests")
    if requests is not None and isinstance(exc, requests.RequestException):
        url = getattr(getattr(exc, "request", None), "url", None)
        return f"cannot reach the chain at {url or 'its RPC URL'}: {type(exc).__name__}"
    web3_exceptions = sys.modules.get("web3.exceptions")
    if web3_exceptions is not None and isinstance(exc, web3_exceptions.ContractLogicError):
        from node.chain.artifacts import load_artifact
        from node.chain.reverts import describe_revert

        return f"the contract refused: {describe_revert(load_artifact('FedLedger')['abi'], exc.data) or exc}"
    if web3_exceptions is not None and isinstance(exc, web3_exceptions.Web3Exception):
        return f"the chain refused: {exc}"
    if isinstance(exc, UnicodeDecodeError):  # a task owner's CID or a file that is not text
        return f"not UTF-8 text where text was expected ({exc.reason} at byte {exc.start})"
    if isinstance(exc, OSError):  # a file the user named: unreadable, missing, or a full disk
        where = f" {exc.filename}:" if exc.filename else ""
        return f"{where} {exc.strerror or exc}".strip()
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "(no message)"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["simulate"]:
        from node.reproducible import pin_cpu_kernels

        pin_cpu_kernels()  # before torch loads: the same seed trains the same on any x86-64 CPU
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return int(args.func(args) or 0)
    except (KeyboardInterrupt, SystemExit, Exception, BaseExceptionGroup) as raised:
        exc = root_cause(raised)
        if isinstance(exc, KeyboardInterrupt):
            print("fedledger: interrupted", file=sys.stderr)
            return 130
        if isinstance(exc, SystemExit):
            raise exc from None
        if isinstance(exc, BrokenPipeError):  # `fedledger task list | head`: the reader has all it wants
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
            return 141
        message = describe(exc)
        if message is not None:
            print(f"fedledger: error: {_one_line(message)}", file=sys.stderr)
            return 1
        if os.environ.get("FEDLEDGER_DEBUG"):
            raise
        print(f"fedledger: internal error: {type(exc).__name__}: {_one_line(str(exc))} "
              "(a bug; FEDLEDGER_DEBUG=1 shows where)", file=sys.stderr)  # fmt: skip
        return 1
