"""simulate trains a round's nodes and evaluates a model in a thread pool (#15): the same bytes as
one node after another, torch's thread count safe when two threads train at once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import node.sim.simulate as simulate
from node.apps.builtin import DIGITS_MLP
from node.sim.evaluation import Evaluator
from node.sim.simulate import SimulationConfig, run_simulation
from node.taskspec import TaskSpec
from node.training import TorchTrainer
from node.training.model import initial_weights
from node.training.trainer import one_torch_thread

CONFIG = SimulationConfig(nodes=3, rounds=2, seed=5, spec=TaskSpec(epochs=1))


def test_one_torch_thread_holds_across_threads_and_restores_after_the_last():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    inside: list[int] = []
    both_in = threading.Barrier(2)

    def work() -> None:
        with one_torch_thread():
            both_in.wait()
            inside.append(torch.get_num_threads())
            both_in.wait()  # neither leaves before the other has looked

    try:
        threads = [threading.Thread(target=work) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)

    assert inside == [1, 1]
    assert after == 2


@pytest.mark.slow  # two simulations: ~10 s alone, 30 s on a loaded machine
def test_simulate_trains_in_the_pool_and_gets_the_same_models_as_one_after_another(monkeypatch):
    # Prepare: which threads train, in a run as simulate does it and in one with no training ahead.
    names: list[str] = []
    train = TorchTrainer.train

    def recorded(self, *args, **kwargs):
        names.append(threading.current_thread().name)
        return train(self, *args, **kwargs)

    monkeypatch.setattr(TorchTrainer, "train", recorded)

    # Execute
    parallel = run_simulation(CONFIG)
    pooled = list(names)
    names.clear()
    monkeypatch.setattr(simulate, "train_ahead", lambda *args: None)
    serial = run_simulation(CONFIG)

    # Assert: every training ran in the pool, once per node and round; the same CIDs, scores, gas.
    assert len(pooled) == CONFIG.nodes * CONFIG.rounds
    assert all(name.startswith("fedledger-sim") for name in pooled)
    assert names and not any(name.startswith("fedledger-sim") for name in names)
    assert [r.global_model_cid for r in parallel.rounds] == [r.global_model_cid for r in serial.rounds]
    assert [r.gas_used for r in parallel.rounds] == [r.gas_used for r in serial.rounds]
    assert [(n.reputation_wad, n.payout_wei) for n in parallel.nodes] == [(n.reputation_wad, n.payout_wei) for n in serial.nodes]
    assert [r.metrics for r in parallel.rounds] == [r.metrics for r in serial.rounds]


def test_evaluator_in_a_pool_reports_what_it_reports_in_turn():
    config = {"partition-seed": 3, "num-partitions": 3}
    trainers = [
        TorchTrainer(DIGITS_MLP, *DIGITS_MLP.load_data({**config, "partition-id": i})) for i in range(3)
    ]
    central = (DIGITS_MLP, DIGITS_MLP.load_data.central({**config, "partition-id": 0}))
    weights = initial_weights("digits-mlp", 1)

    in_turn = Evaluator(lambda: [t.evaluate for t in trainers], central)(weights)
    with ThreadPoolExecutor(2) as pool:
        pooled = Evaluator(lambda: [t.evaluate for t in trainers], central, map=pool.map)(weights)

    assert pooled == in_turn
    assert pooled.examples == sum(len(t.test) for t in trainers) > 0
    assert pooled.accuracy is not None


def test_the_committee_checks_a_proposal_with_one_recomputation(monkeypatch):
    # Prepare: count the recomputations the nodes make (the module's name, as ProtocolNode calls it).
    import node.protocol.node as protocol_node

    calls: list[tuple[int, int | None]] = []
    recompute = protocol_node.recompute_round

    def counted(client, fetch, spec, task, round_, base_cid, updates, holders=(), available=None, known=None):
        calls.append((round_, available))
        return recompute(client, fetch, spec, task, round_, base_cid, updates, holders, available, known)

    monkeypatch.setattr(protocol_node, "recompute_round", counted)

    # Execute: 3 honest nodes, every one of them in every committee.
    report = run_simulation(CONFIG)

    # Assert: each round was computed once, by its proposer (bitmap None), and every attester's check
    # and the finalize reused it; the rounds still finalized, with every node paid.
    assert calls == [(r, None) for r in range(1, CONFIG.rounds + 1)]
    assert len(report.rounds) == CONFIG.rounds
    assert all(n.earned_wei > 0 for n in report.nodes)  # paid or held for probation


def test_reports_are_evaluated_beside_the_rounds_and_say_what_an_evaluation_in_turn_says(monkeypatch):
    # Prepare: which threads evaluate; the same run with every evaluation done where it is asked for.
    from node.sim.evaluation import PendingEvaluation

    names: list[str] = []
    evaluate = TorchTrainer.evaluate

    def recorded(self, *args, **kwargs):
        names.append(threading.current_thread().name)
        return evaluate(self, *args, **kwargs)

    monkeypatch.setattr(TorchTrainer, "evaluate", recorded)
    lines: list[str] = []

    # Execute
    beside = run_simulation(CONFIG, progress=lines.append)
    background = list(names)
    names.clear()
    monkeypatch.setattr(Evaluator, "submit", lambda self, weights: PendingEvaluation.finished(self(weights)))
    in_turn = run_simulation(CONFIG)

    # Assert: the report's evaluations ran in the low-priority threads, one per node and model;
    # every round has its accuracy and metrics, those of the run that waited for them; the
    # progress lines come in round order, each with its round's accuracy.
    assert len(background) == CONFIG.nodes * (CONFIG.rounds + 1)
    assert all(name.startswith("fedledger-eval") for name in background)
    assert names and not any(name.startswith("fedledger-eval") for name in names)
    assert beside.initial_accuracy == in_turn.initial_accuracy is not None
    assert [(r.test_accuracy, r.metrics) for r in beside.rounds] == [(r.test_accuracy, r.metrics) for r in in_turn.rounds]
    assert all(r.test_accuracy is not None and r.metrics for r in beside.rounds)
    rounds = [line for line in lines if line.startswith("round ") and "accuracy" in line]
    assert [line.split(":")[0] for line in rounds] == ["round 0", "round 1/2", "round 2/2"]
    for line, record in zip(rounds[1:], beside.rounds):
        assert f"test accuracy {record.test_accuracy:.3f}" in line


def test_nodes_that_trained_ahead_do_not_read_the_base_model_again_to_commit(monkeypatch):
    # Prepare: count the base models the nodes decode (RoundView.base, as the round code reads them).
    import node.protocol.behaviour as behaviour

    decoded: list[int] = []
    decode = behaviour.decode_model

    def counted(*args, **kwargs):
        decoded.append(1)
        return decode(*args, **kwargs)

    monkeypatch.setattr(behaviour, "decode_model", counted)

    # Execute
    report = run_simulation(CONFIG)

    # Assert: one read per round, shared by the nodes that train at once; every commit found its
    # delta made (the models are those of the README's kind of run: nothing was left untrained).
    assert len(report.rounds) == CONFIG.rounds
    assert len(decoded) == CONFIG.rounds


def test_the_replay_check_reads_the_previous_round_as_the_last_recomputation_decoded_it(monkeypatch):
    # Prepare: record which of the previous round's updates each recomputation fetches again.
    import node.protocol.recompute as recompute

    fetched: list[list[str]] = []
    fetch_each = recompute.fetch_each

    def recorded(fetch, updates, *args, **kwargs):
        fetched.append([u.cid for u in updates])
        return fetch_each(fetch, updates, *args, **kwargs)

    monkeypatch.setattr(recompute, "fetch_each", recorded)
    config = SimulationConfig(nodes=3, rounds=3, seed=5, spec=TaskSpec(epochs=1))

    # Execute
    report = run_simulation(config)
    monkeypatch.setattr(recompute, "fetch_each", fetch_each)
    monkeypatch.setattr(recompute, "_previous", lambda fetch, updates, holders, limit, known: fetch_each(fetch, updates, holders, limit))
    again = run_simulation(config)

    # Assert: rounds 2 and 3 asked for none of them (one recomputation per round, shared by the
    # committee); a run that fetches and decodes them ends with the same models and scores.
    assert fetched == [[], []]
    assert [r.global_model_cid for r in report.rounds] == [r.global_model_cid for r in again.rounds]
    assert [n.scores_wad for n in report.nodes] == [n.scores_wad for n in again.nodes]
