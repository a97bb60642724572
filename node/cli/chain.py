"""`fedledger` commands that talk to a chain: testnet, deploy, task create, reputation, verify,
rewards (the read-only task views are in node/cli/tasks.py, unstaking in node/cli/stake.py)."""

from __future__ import annotations

import argparse
import sys
from decimal import Decimal
from typing import Any

from node.cli.args import _ipfs_dir, _print_json, app_fields
from node.errors import ChainError, ConfigError
from node.units import WAD


def cmd_testnet(args: argparse.Namespace) -> int:
    import signal

    from node.chain.accounts import dev_account
    from node.chain.anvil import Anvil

    anvil = Anvil(port=args.port, accounts=args.accounts, host=args.host)
    if anvil.is_up():  # else start() would take the other chain's answer for our anvil's
        raise ChainError(f"a chain already answers on {anvil.url}; stop it or choose another --port")
    # SIGTERM (a service manager, `kill`) stops the chain as cleanly as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        anvil.start()
        print(f"anvil testnet listening on {anvil.url} (chain id 31337); Ctrl-C stops it", flush=True)
        for i in range(min(args.accounts, 10)):
            print(f"  dev account {i}: {dev_account(i).address}", flush=True)
        code = anvil.wait()
        if code > 0:
            raise ChainError(f"anvil exited with status {code}")
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        anvil.stop()


def _rpc_for(args: argparse.Namespace, deployment: Any) -> str:
    url = getattr(args, "rpc", None) or deployment.rpc
    if not url:
        raise ConfigError("the deployment has no RPC URL (it was on the embedded chain); give --rpc URL")
    return url


def _client(args: argparse.Namespace, sending: bool = False):
    from node.chain import Deployment, FedLedgerClient
    from node.chain.providers import deployed_contract

    deployment = Deployment.load(args.deployment)
    w3, address = deployed_contract(_rpc_for(args, deployment), deployment, args.deployment)
    if not sending:
        # web3's validation middleware asks the chain id twice per eth_call, to check transaction
        # fields a read never has: a third of a query's requests (checked once, just above).
        w3.middleware_onion.remove("validation")
    account = None
    if sending:
        from node.keys import signer

        account = signer(args.keystore, args.password_file, args.dev_account, deployment.chain_id)
    return FedLedgerClient(w3, address, account)


def cmd_deploy(args: argparse.Namespace) -> int:
    from node.chain import Deployment, deploy_fedledger
    from node.chain.providers import rpc_web3
    from node.keys import signer

    w3 = rpc_web3(args.rpc)
    chain_id = int(w3.eth.chain_id)
    account = signer(args.keystore, args.password_file, args.dev_account, chain_id)
    client, receipt = deploy_fedledger(w3, account, args.min_stake)
    Deployment(chain_id, args.rpc, {"FedLedger": client.address}, int(receipt["blockNumber"])).save(args.out)
    print(f"FedLedger deployed at {client.address} (block {receipt['blockNumber']}); wrote {args.out}")
    return 0


def cmd_reputation(args: argparse.Namespace) -> int:
    from eth_utils import is_address, to_checksum_address

    for address in args.addresses:
        if not is_address(address):
            raise ConfigError(f"not an Ethereum address: {address!r}")
    client = _client(args)
    rows = [(to_checksum_address(a), client.reputation_of(a)) for a in args.addresses]
    if args.json:
        _print_json([{"address": a, "reputation": r / WAD, "reputation_wad": str(r)} for a, r in rows])
    else:
        for a, r in rows:
            print(f"{a}  {r / WAD:.6f}")
    return 0


def cmd_task_create(args: argparse.Namespace) -> int:
    from node.taskspec import RULE_IDS, TaskParams, spec_for_rule

    if args.rule not in RULE_IDS:
        raise ConfigError(f"unknown rule {args.rule!r}; known: {', '.join(RULE_IDS)}")
    if args.reward <= 0:
        raise ConfigError("--reward must be more than 0 ETH: the pool is what the task pays")
    client = _client(args, sending=True)  # before torch loads: a wrong deployment fails in a second
    from node.storage import EmbeddedStorage
    from node.apps.resolve import app_of, initial_model, model_file, pinned_spec

    fields, model_ref = app_fields(args)
    params = TaskParams(
        rounds=args.rounds,
        committee_size=args.committee,
        rule=args.rule,
        max_samples=args.max_samples,
        commit_timeout=args.commit_timeout,
        reveal_timeout=args.reveal_timeout,
        propose_timeout=args.propose_timeout,
        attest_timeout=args.attest_timeout,
        min_stake_wei=args.min_stake if args.min_stake is not None else client.min_stake(),
        reputation_threshold_wad=args.threshold,
        alpha_wad=args.alpha,
        proposer_share_bps=args.proposer_share,
        attester_share_bps=args.attester_share,
    )
    params.validate()
    # The initial model and the spec are content-addressed into the local blockstore, from which
    # the node serves them to its peers.
    store = EmbeddedStorage(_ipfs_dir(args))
    spec = spec_for_rule(
        args.rule, args.committee, trim=args.trim, f=args.f, m=args.m, clip=args.clip,
        epochs=args.epochs, max_samples=args.max_samples, **fields,
    )  # fmt: skip
    app_of(spec)  # the app imports and is one, before anything is stored or sent
    weights = initial_model(spec, args.seed, model_ref=model_ref, initial_file=args.initial_model)
    spec = pinned_spec(spec, weights)
    model_cid = store.put(model_file(spec, weights))
    spec_cid = store.put(spec.to_bytes())
    task_id, receipt = client.create_task(model_cid, spec_cid, params, args.reward)
    if not (_ipfs_dir(args).parent / "node.toml").is_file():
        # Nodes fetch the initial model and the spec from registered nodes' stores only: one
        # outside any node directory is served by nobody, and the task would wait forever.
        print(f"fedledger: note: task {task_id}'s initial model and spec are in {_ipfs_dir(args)}, which no node "
              "serves; copy them into a node's store (fedledger ipfs get/add --repo NODE_DIR/ipfs) or create "
              "tasks with --repo NODE_DIR/ipfs", file=sys.stderr)  # fmt: skip
    if args.json:
        _print_json({"task": task_id, "model_cid": model_cid, "spec_cid": spec_cid, "block": receipt["blockNumber"]})
    else:
        print(task_id)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from node.cli.fetching import with_peers
    from node.verify import verify_round

    client = _client(args)
    verdict = with_peers(args, client, lambda fetch: verify_round(client, fetch, args.task, args.round))
    if args.json:
        _print_json(verdict.to_json())
    elif verdict.ok:
        print(f"task {args.task} round {args.round}: OK, recomputed {verdict.computed_cid} and "
              f"{len(verdict.computed_scores)} scores match the chain")  # fmt: skip
    if not verdict.ok:
        for line in verdict.differences:
            print(f"fedledger: mismatch: {line}", file=sys.stderr)
        return 1
    return 0


def cmd_rewards_withdraw(args: argparse.Namespace) -> int:
    client = _client(args, sending=True)
    assert client.account is not None
    amount = client.pending_rewards(client.account.address)
    client.withdraw()
    print(f"withdrew {Decimal(amount) / WAD} ETH to {client.account.address}")
    return 0
