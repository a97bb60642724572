"""A federation that mixes storage backends (SPEC §6): one daemon keeps its blocks in a real IPFS RPC
daemon (js-ipfs, `[storage] backend = "kubo"` in its node.toml), the others in the embedded store.
Updates cross between the two kinds over libp2p, block by verified block, for every round."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from node.chain.anvil import Anvil
from node.sim.federation import Federation, NodeDaemon
from node.storage import EmbeddedStorage, KuboStorage
from tests.daemon.federation import build_federation
from tests.storage.jsipfs_daemon import jsipfs_daemon

pytestmark = pytest.mark.slow

ROUNDS = 2


def use_kubo(node: NodeDaemon, api: str) -> None:
    """Point a node's storage at the IPFS daemon whose RPC API is at `api` (node.toml edit)."""
    text = node.config.read_text()
    edited, count = re.subn(r'(?m)^backend = "embedded".*$', f'backend = "kubo"\nkubo_api = "{api}"', text)
    assert count == 1, f"no embedded backend line in {node.config}"
    node.config.write_text(edited)


def round_outcome(fed: Federation, r: int) -> tuple[str, list[str], list[int]]:
    """The finalized model of round `r`, its updates' senders in reveal order, and the accepted scores."""
    client = fed.client
    finalized = client.logs("RoundFinalized", from_block=fed.task_block, taskId=fed.task, round=r)
    assert len(finalized) == 1, f"round {r} was not finalized (voided?)"
    cid = bytes(finalized[0].args["cid"]).decode()
    proposals = client.logs("ProposalSubmitted", from_block=fed.task_block, taskId=fed.task, round=r)
    accepted = [p for p in proposals if bytes(p.args["cid"]).decode() == cid][-1]
    senders = [u.sender for u in client.round_updates(fed.task, r)]
    return cid, senders, [int(s) for s in accepted.args["scores"]]


def test_kubo_and_embedded_daemons_finish_two_rounds(tmp_path: Path) -> None:
    # Prepare: three daemons on anvil; node 1 stores its blocks in js-ipfs (node 0 serves the
    # initial model from its embedded store, so the kubo node must fetch it from a peer at once)
    (tmp_path / "jsipfs").mkdir()
    started = time.monotonic()
    with Anvil(accounts=1) as anvil, jsipfs_daemon(tmp_path / "jsipfs") as api:
        fed = build_federation(tmp_path / "fed", anvil.url, n_nodes=3, rounds=ROUNDS)
        kubo_node = fed.nodes[1]
        use_kubo(kubo_node, api)
        client = fed.client
        # Execute
        try:
            fed.start()
            fed.wait(lambda: client.task_info(fed.task).finished, timeout=600, what=f"task {fed.task} to finish")
            for n in fed.nodes:
                assert n.proc is not None and n.proc.wait(timeout=60) == 0, n.text()[-3000:]
        finally:
            fed.stop_all()
        outcomes = [round_outcome(fed, r) for r in range(1, ROUNDS + 1)]
        content = _content(fed, outcomes)
        kubo = KuboStorage(api)
        try:
            kubo_holds = {cid: kubo.has(cid) for cid in content}
        finally:
            kubo.close()
    elapsed = time.monotonic() - started

    # Assert: every round finalized with an update from every node, each one accepted (score > 0:
    # an update its proposer or attesters could not fetch or verify scores 0)
    addresses = sorted(n.address for n in fed.nodes)
    for r, (_, senders, scores) in enumerate(outcomes, start=1):
        assert sorted(senders) == addresses, f"round {r}: updates from {senders}"
        assert len(scores) == 3 and all(s > 0 for s in scores), f"round {r}: scores {scores}"
    # The kubo node really kept its blocks in the IPFS daemon: none on its disk; in js-ipfs every
    # update of every round (its own, and the others' it fetched to check the aggregate) and the
    # models it trained from (fetched from its peers)
    assert not (kubo_node.directory / "ipfs").exists()
    assert "storage: the IPFS daemon at " + api in kubo_node.text()
    assert all(kubo_holds.values()), {cid for cid, held in kubo_holds.items() if not held}
    # ... and the embedded nodes fetched its updates from it
    mine = [cid for cid, kind in content.items() if kind == ("update", kubo_node.address)]
    assert len(mine) == ROUNDS
    for n in fed.nodes:
        if n is not kubo_node:
            store = EmbeddedStorage(n.directory / "ipfs", fsync=False)
            assert all(store.has(cid) for cid in mine), f"node {n.index} lacks node 1's updates"
    print(f"mixed-backend federation: {ROUNDS} rounds in {elapsed:.0f} s")


def _content(fed: Federation, outcomes: list[tuple[str, list[str], list[int]]]) -> dict[str, tuple[str, str]]:
    """What every member needed to hold: each round's base model (the initial one, then the last
    round's) and each round's updates. The final model need not be fetched by anyone."""
    found: dict[str, tuple[str, str]] = {fed.initial_model_cid: ("model", "initial")}
    for r, (model, _, _) in enumerate(outcomes, start=1):
        for u in fed.client.round_updates(fed.task, r):
            found[u.cid] = ("update", u.sender)
        if r < len(outcomes):
            found[model] = ("model", f"round {r}")
    return found
