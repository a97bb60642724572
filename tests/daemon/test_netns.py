"""Daemons beyond loopback (#14, "Real networks"): each daemon in its own network namespace with its
own address, every packet between them (and to anvil) delayed 50 ms and dropped with 1%
probability, by the userspace router of node/sim/netns_router.py, driven by node/sim/netns.py
(this kernel has no sch_netem; the module docstrings say why and how). The impairment is
measured, not assumed.

Cleanup is asserted: the `network` fixture fails the test if a namespace, the router's TUN device,
the router or a process in a namespace survives, whatever happened in the test.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import time

import pytest

from node.chain.anvil import Anvil
from node.sim.federation import Federation, FederationConfig, build_federation
from node.sim.netns import ImpairedNetwork, missing_capability, reap_stale
from node.storage import EmbeddedStorage
from node.taskspec import TaskSpec

pytestmark = pytest.mark.slow

DELAY = 0.05  # one-way, per hop: what `tc qdisc add ... netem delay 50ms` adds on a link
LOSS = 0.01
LOOPBACK_LISTEN = 'listen = ["/ip4/127.0.0.1/tcp/0"]'
# A member cut off for a round holds that round for this long before the others go on without it;
# it also leaves the member, once restored, time to notice (its RPC requests time out after 30 s,
# TCP retries SYNs at 1, 3, 7, 15 s), fetch the model over the slow path and train.
COMMIT_TIMEOUT = 60


def _missing() -> str | None:
    why = missing_capability()
    return f"impaired-network tests need {why}" if why else None


@pytest.fixture
def network():
    why = _missing()
    if why:
        pytest.skip(why)
    net = ImpairedNetwork(hosts=3, delay=DELAY, loss=LOSS, seed=14)
    try:
        with net:
            yield net
    finally:
        left = net.leftovers()
        assert left == [], f"left behind: {left}"


def _events(fed: Federation, event: str, address: str, who: str = "node") -> set[int]:
    """The rounds of the task in which `address` (as argument `who`) emitted `event`."""
    logs = getattr(fed.client.contract.events, event)().get_logs(from_block=0, argument_filters={who: address})
    return {int(e["args"]["round"]) for e in logs if int(e["args"]["taskId"]) == fed.task}


def _did_its_part(fed: Federation, address: str, round_: int) -> bool:
    """Whether `address` has attested to or proposed the round's model, and the other nodes hold
    what they need from it: its update and any model it proposed (#14 H6: content that cannot be
    fetched is left out, not guessed). After that, nothing of the round depends on it."""
    if round_ not in _events(fed, "Attested", address) | _events(fed, "ProposalSubmitted", address, "proposer"):
        return False
    client = fed.client
    cids = [u.cid for u in client.round_updates(fed.task, round_) if u.sender == address]
    cids += [e.args["cid"].decode() for e in client.logs("ProposalSubmitted", taskId=fed.task, round=round_)
             if e.args["proposer"] == address]  # fmt: skip
    others = [EmbeddedStorage(n.directory / "ipfs") for n in fed.nodes if n.address != address]
    return all(store.has(cid) for store in others for cid in cids)


def _into_namespaces(fed: Federation, net: ImpairedNetwork) -> None:
    """Node i runs in host i's namespace and listens on host i's address only."""
    for node, host in zip(fed.nodes, net.hosts):
        node.prefix = host.prefix
        text = node.config.read_text()
        assert LOOPBACK_LISTEN in text, f"node {node.index}'s config has no loopback listen line"
        node.config.write_text(text.replace(LOOPBACK_LISTEN, f'listen = ["/ip4/{host.addr}/tcp/0"]'))


def test_the_router_delays_drops_and_cuts(network):
    # Prepare: hosts 0 and 1; a TCP listener in host 1.
    a, b = network.hosts[0], network.hosts[1]
    listener = network.socket_in(b, socket.SOCK_STREAM)
    listener.bind((b.addr, 0))
    listener.listen()
    try:
        # Execute: a UDP echo probe, a TCP handshake, then the same probe with host 1 cut off.
        probe = network.probe(a, b, count=500)
        start = time.monotonic()
        conn = network.socket_in(a, socket.SOCK_STREAM)
        conn.settimeout(10)
        conn.connect(listener.getsockname())
        handshake = time.monotonic() - start
        conn.close()
        network.cut(b)
        cut_probe = network.probe(a, b, count=50)
        network.restore(b)
        after = network.probe(a, b, count=50)
        stats = network.stats()
    finally:
        listener.close()

    # Assert: every round trip crosses the router twice (>= 2 x 50 ms), a few echoes are lost
    # (expected 1 - 0.99^2 ~ 2% of 500, so ~10; zero would mean no loss), a cut host hears nothing.
    assert min(probe.rtts) >= 2 * DELAY, min(probe.rtts)
    assert statistics.median(probe.rtts) < 2 * DELAY + 0.1  # delayed, not stuck
    assert 1 <= probe.lost <= 40, probe.lost
    assert handshake >= 2 * DELAY
    assert cut_probe.received == 0
    assert after.received >= 45
    assert stats["lost"] >= probe.lost and stats["cut"] >= 50


def test_a_failure_inside_leaves_nothing_behind():
    why = _missing()
    if why:
        pytest.skip(why)
    # Prepare: a network with a process running in one of its namespaces.
    net = ImpairedNetwork(hosts=2, delay=DELAY, loss=LOSS)
    sleeper: subprocess.Popen[bytes] | None = None
    # Execute: the test body fails while the process runs.
    with pytest.raises(RuntimeError, match="boom"):
        with net:
            sleeper = subprocess.Popen([*net.hosts[1].prefix, "sleep", "600"])
            time.sleep(0.3)
            raise RuntimeError("boom")
    # Assert: the process was killed, the namespaces, the TUN device and the router are gone.
    assert sleeper is not None and sleeper.wait(timeout=10) == -9
    assert sleeper.pid in net.killed
    assert net.leftovers() == []
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(n in names for n in net.names)


def test_namespaces_of_a_killed_run_are_reaped_and_a_live_runs_are_not():
    why = _missing()
    if why:
        pytest.skip(why)
    # Prepare: a namespace named after a process that is gone (a test run killed with SIGKILL
    # never reaches its cleanup), and one named after this live process.
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead_name, live_name = f"fl{gone.pid}xdead-0", f"fl{os.getpid()}xbeef-0"
    for name in (dead_name, live_name):
        subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        # Execute
        reaped = reap_stale()
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    finally:
        for name in (dead_name, live_name):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
    # Assert: the dead run's namespace is gone, the live one's was left alone.
    assert dead_name in reaped and dead_name not in names
    assert live_name not in reaped and live_name in names


def test_three_daemons_across_namespaces_and_one_cut_off_for_a_round(network, tmp_path):
    # Prepare: anvil on the root namespace's address (the test talks to it directly; the daemons
    # through the router), three nodes, each in its own namespace, and a 3-round task.
    rounds = 3
    with Anvil(accounts=10, host=network.root_addr) as anvil:
        config = FederationConfig(
            nodes=3, rounds=rounds, spec=TaskSpec(epochs=2), funding_wei=50 * 10**18,
            commit_timeout=COMMIT_TIMEOUT, password="netns-test-pass", log_level="debug",
        )  # fmt: skip
        fed = build_federation(tmp_path, anvil.url, config)
        _into_namespaces(fed, network)
        client = fed.client
        victim, host = fed.nodes[2], network.hosts[2]
        try:
            # Execute: round 1 with everyone; the victim is cut off as soon as it has done its part
            # in round 1 (so it cannot have committed to round 2) and restored once round 2 is
            # finalized without it; round 3 with everyone again.
            fed.start()
            fed.wait(lambda: _did_its_part(fed, victim.address, 1), 240, "node 2's part in round 1", 0.1)
            network.cut(host)
            cut_at = time.monotonic()
            fed.wait(lambda: client.task_info(fed.task).current_round >= 3, 240, "round 2 to finish without node 2")
            network.restore(host)
            cut_for = time.monotonic() - cut_at
            fed.wait(lambda: client.task_info(fed.task).finished, 240, "the task to finish")
            codes = [n.proc.wait(timeout=60) for n in fed.nodes]
            registered = [client.node_info(n.address)[3] for n in fed.nodes]
            stats = network.stats()
        finally:
            fed.stop_all()

        # Assert: the task finished, every daemon exited cleanly, and peers found each other at their
        # namespace addresses, registered on-chain (loopback is not shared between namespaces).
        cid, round_ = client.global_model(fed.task)
        assert round_ == rounds and cid.startswith("bafk")
        assert codes == [0, 0, 0], [n.text()[-3000:] for n in fed.nodes]
        for node, h, addrs in zip(fed.nodes, network.hosts, registered):
            assert addrs and all(a.startswith(f"/ip4/{h.addr}/tcp/") for a in addrs), (node.index, addrs)
            assert "Traceback" not in node.text()
        # The victim missed exactly the round it was cut off for, and came back for the next.
        assert cut_for >= COMMIT_TIMEOUT
        assert _events(fed, "UpdateCommitted", victim.address) == {1, 3}
        assert _events(fed, "UpdateRevealed", victim.address) == {1, 3}
        for n in fed.nodes[:2]:
            assert _events(fed, "UpdateRevealed", n.address) == {1, 2, 3}
        # The path was really impaired while they worked: packets were lost at random and dropped by the cut.
        assert stats["lost"] > 0 and stats["cut"] > 0 and stats["forwarded"] > 1000
