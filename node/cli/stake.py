"""`fedledger node unstake`: leave the active set, then take the stake back after the delay.

Two transactions, days apart (FedLedger.UNSTAKE_DELAY): `requestUnstake` takes the node out of
future committees at once, and `withdrawStake` (`--withdraw`) pays the stake once the delay has
passed and no slash can still land (no open commitment or pending proposal). Both are checked
against the chain's own clock before anything is sent, so a too-early withdraw costs no gas and
says when it becomes possible.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from decimal import Decimal

from node.cli.chain import _client
from node.errors import ChainError
from node.units import WAD


def _when(unix: int, now: int) -> str:
    """`2026-12-02 21:40:14 UTC (in 1 day, 23:59:58)`, measured on the chain's clock."""
    at = datetime.fromtimestamp(unix, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    left = unix - now
    if left <= 0:
        return at
    days, rest = divmod(left, 86400)
    hours, rest = divmod(rest, 3600)
    clock = f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{at} (in {days} day{'s' if days != 1 else ''}, {clock})" if days else f"{at} (in {clock})"


def cmd_node_unstake(args: argparse.Namespace) -> int:
    client = _client(args, sending=True)
    assert client.account is not None
    me = client.account.address
    registered, stake, _, _ = client.node_info(me)
    if not registered:
        raise ChainError(f"{me} is not a registered node: it has no stake to unstake")
    status, now = client.node_status(me), client.head_timestamp()
    eth = f"{Decimal(stake) / WAD} ETH"
    if not args.withdraw:
        if status.unstake_at:
            raise ChainError(f"{me} already asked to unstake; its stake unlocks at {_when(status.unstake_at, now)}, "
                             "then run `fedledger node unstake --withdraw`")  # fmt: skip
        client.request_unstake()
        unlocks, now = client.node_status(me).unstake_at, client.head_timestamp()
        print(f"{me} left the active set; its stake of {eth} unlocks at {_when(unlocks, now)}: "
              "then run `fedledger node unstake --withdraw`")  # fmt: skip
        return 0
    if not status.unstake_at:
        raise ChainError(f"{me} has not asked to unstake; run `fedledger node unstake` first")
    if now < status.unstake_at:
        raise ChainError(f"the stake of {me} is locked; it can be withdrawn from {_when(status.unstake_at, now)}")
    if status.exposure:
        raise ChainError(f"{me} still has {status.exposure} open commitment(s) or proposal(s) that may be slashed; "
                         "withdraw once their rounds end")  # fmt: skip
    client.withdraw_stake()
    print(f"withdrew the stake of {eth} to {me}")
    return 0
