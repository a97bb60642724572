"""`fedledger node fund` and `fedledger node join`: the steps between `node init` and `node run`.

An operator's path (README, "Running nodes for real"): init a node directory, fund its
address, join a task, run the daemon. Each command here says in one line what it did.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from node.errors import ConfigError
from node.units import ETHER


def keystore_address(path: Path) -> str:
    """The address of an eth-account keystore (v3), read without its password."""
    from eth_utils import is_address, to_checksum_address

    try:
        blob = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read keystore {path}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(f"keystore {path} is not JSON") from None
    address = blob.get("address") if isinstance(blob, dict) else None
    if not isinstance(address, str) or not is_address(address if address.startswith("0x") else "0x" + address):
        raise ConfigError(f"keystore {path} has no valid address field")
    return to_checksum_address(address if address.startswith("0x") else "0x" + address)


def cmd_node_fund(args: argparse.Namespace) -> int:
    from node.chain.accounts import TESTNET_CHAIN_ID, dev_account
    from node.chain.sends import send_ether
    from node.chain.providers import rpc_web3
    from node.daemon import startup
    from node.daemon.config import load_config

    if args.dev_account < 0:
        raise ConfigError(f"--dev-account must be 0 or more, not {args.dev_account}")
    config = load_config(args.config)
    address = keystore_address(config.keystore)
    w3 = rpc_web3(config.rpc)
    chain_id = int(w3.eth.chain_id)
    if chain_id != TESTNET_CHAIN_ID:
        raise ConfigError(
            f"node fund sends from a development account, which exists only on a local testnet (chain id "
            f"{TESTNET_CHAIN_ID}); {config.rpc} is chain {chain_id}: send ETH to {address} from your own wallet"
        )
    amount = args.amount
    if amount is None:  # what start-up checks for, plus 1 ETH of headroom for gas
        chain = startup.connect(config.rpc, config.deployment, None)
        stake, gas = startup.required_balance(chain.client, address)
        amount = stake + gas + ETHER
    funder = dev_account(args.dev_account)
    if int(w3.eth.get_balance(funder.address)) < amount:
        raise ConfigError(f"dev account {args.dev_account} ({funder.address}) holds less than {startup.eth(amount)} ETH")
    send_ether(w3, funder, address, amount)
    balance = int(w3.eth.get_balance(address))
    print(f"sent {startup.eth(amount)} ETH from dev account {args.dev_account} to {address}, "
          f"which now holds {startup.eth(balance)} ETH")  # fmt: skip
    return 0


def cmd_node_join(args: argparse.Namespace) -> int:
    from node.daemon import startup
    from node.daemon.config import add_join, load_config

    config = load_config(args.config)
    task = args.task
    client = startup.connect(config.rpc, config.deployment, None).client
    count = client.task_count()
    if not 1 <= task <= count:
        raise ConfigError(f"task {task} does not exist on {config.rpc} (there are {count} tasks)")
    info = client.task_info(task)
    if info.finished:
        raise ConfigError(f"task {task} is finished ({info.rounds} rounds): there is nothing left to join")
    why = config.policy.refuse_task(info, client.task_min_stake(task))
    spec_note = "its spec is checked against the node's limits and data when the daemon starts working on it"
    spec = startup.local_spec(config, info.spec_cid)
    if why is None and spec is not None:
        spec_note = f"its spec (model {spec.model}, {spec.epochs} epochs) fits this node"
        why = config.policy.refuse_spec(spec)
        if why is None:
            why = startup.app_problem(config, spec) or startup.data_misfit(config, spec)
    if why is not None:
        raise ConfigError(f"task {task} does not fit this node ({why}); {config.path} is unchanged")
    if task in config.policy.join:
        print(f"task {task} is already in [tasks] join of {config.path}; nothing changed")
        return 0
    joined = add_join(config.path, task)
    print(f"joined task {task} ({info.rounds} rounds, committee {info.committee_size}, reward pool "
          f"{startup.eth(info.reward_remaining)} ETH): [tasks] join = [{', '.join(map(str, joined))}] in {config.path}; "
          f"{spec_note}; (re)start the daemon to work on it")  # fmt: skip
    return 0

