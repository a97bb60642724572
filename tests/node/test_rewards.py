"""`status` predicts what finalizing the pending proposal would credit, with incentives/ (the
contract's mirror); the prediction is checked against what finalize then credits on-chain."""

from __future__ import annotations

from node.chain import FedLedgerClient
from node.chain.providers import embedded_web3
from node.protocol import Observer, ProtocolNode
from node.rewards import predicted_credits
from node.sim.simulate import SimulationConfig, run_simulation
from node.taskspec import TaskSpec


class Predictions(Observer):
    def __init__(self) -> None:
        self.by_round: dict[int, dict[str, int]] = {}

    def acted(self, node: ProtocolNode, task: int, action: str) -> None:
        # Once every attestation is in, just before the round is finalized: predict from that state.
        client = node.client
        info = client.task_info(task)
        state = client.round_state(task, info.current_round)
        if "attested" in action and state.agrees + state.disagrees == state.voters:
            self.by_round[info.current_round] = predicted_credits(client, task)


def test_the_prediction_is_what_finalize_credits():
    w3 = embedded_web3(num_accounts=4)
    predictions = Predictions()
    config = SimulationConfig(nodes=3, rounds=2, seed=4, spec=TaskSpec(epochs=1), proposer_share_bps=500,
                              attester_share_bps=500)  # fmt: skip

    report = run_simulation(config, w3=w3, observer=predictions)

    client = FedLedgerClient(w3, report.contracts["FedLedger"])
    assert sorted(predictions.by_round) == [1, 2]
    for r, predicted in predictions.by_round.items():
        credited: dict[str, int] = {}
        for kind, sign in (("RewardCredited", 1), ("RewardHeld", 1), ("ProbationEnded", -1)):
            for ev in client.logs(kind, taskId=report.task_id):
                if ev.args["round"] == r:
                    amount = ev.args["vested"] if kind == "ProbationEnded" else ev.args["amount"]
                    credited[ev.args["account"]] = credited.get(ev.args["account"], 0) + sign * int(amount)
        credited = {a: wei for a, wei in credited.items() if wei}
        assert predicted == credited and len(predicted) >= 3, r  # trainers, proposer, attesters; owner's leftover last
