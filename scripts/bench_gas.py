"""Gas of FedLedger's protocol calls, per call and per round, against the targets of issue 3.

Runbook (from the repository root):
    .venv/bin/python scripts/bench_gas.py            # prints the markdown table (~1-2 min)
    .venv/bin/python scripts/bench_gas.py --quick    # K = 4 only, to check the script

For K in {4, 16, 32} and {10, 200} registered nodes it deploys a fresh FedLedger on the embedded
EVM (py-evm), runs the three honest rounds of a 3-round task (everyone drawn commits and reveals,
the designated proposer proposes, every other participant agrees, then a finalize), and reports
round 2, the steady state (round 1 additionally pays for first-time storage such as each account's
first reward credit; its totals are printed too). Round 3's finalize is printed on its own: it ends
the probation (#16) of every node seated in all three rounds, moving their held rewards to
withdrawable ones, and credits the task owner's leftover. Targets: commit + reveal <= 110k per trainer; propose + finalize <=
150k + 30k * K; and no growth with the number of registered nodes. The committee draw is its own
transaction and is reported separately. With 10 registered nodes a committee cannot exceed 10, so
K is shown as asked/actual.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eth_abi import encode as abi_encode
from eth_utils import keccak

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.chain.artifacts import load_artifact  # noqa: E402
from node.chain.providers import embedded_web3  # noqa: E402
from node.units import ETHER, WAD  # noqa: E402

MIN_STAKE = 10**16
TIMEOUT = 3600


def _send(w3, call, sender: str, value: int = 0) -> int:
    receipt = w3.eth.wait_for_transaction_receipt(call.transact({"from": sender, "value": value, "gas": 15_000_000}))
    assert receipt["status"] == 1
    return int(receipt["gasUsed"])


def measure(k: int, registered: int) -> dict[str, float]:
    w3 = embedded_web3(num_accounts=registered + 1)
    owner, *nodes = w3.eth.accounts
    artifact = load_artifact("FedLedger")
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    receipt = w3.eth.wait_for_transaction_receipt(factory.constructor(MIN_STAKE).transact({"from": owner}))
    f = w3.eth.contract(address=receipt["contractAddress"], abi=artifact["abi"]).functions
    for i, node in enumerate(nodes):
        _send(w3, f.register(f"peer{i}", [f"/ip4/10.0.0.{i % 250}/tcp/4001"]), node, MIN_STAKE)
    config = (b"bafkreimodel", b"bafkreispec", b"{}", 3, k, 0, 1000, TIMEOUT, TIMEOUT, TIMEOUT, TIMEOUT,
              MIN_STAKE, 0, 3 * WAD // 10, 500, 500, 1)  # fmt: skip
    _send(w3, f.createTask(config), owner, ETHER)
    rows = []
    for rnd in (1, 2, 3):
        gas: dict[str, float] = {"draw": _send(w3, f.drawCommittee(1), owner)}
        members = f.committee(1, rnd).call()
        cids = {m: f"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy{m[-4:]}{rnd}".encode() for m in members}
        salt = keccak(b"salt")
        commits, reveals = [], []
        for m in members:
            c = keccak(abi_encode(["bytes", "uint256", "bytes32", "address"], [cids[m], 100, salt, m]))
            commits.append(_send(w3, f.commit(1, rnd, c), m))
        for m in members:
            reveals.append(_send(w3, f.reveal(1, rnd, cids[m], 100, salt), m))
        scores = [WAD - i * 10**15 for i in range(len(members))]
        proposer = f.designatedProposer(1, rnd).call()
        gas["propose"] = _send(w3, f.propose(1, rnd, b"bafkreiglobalmodelcidofthisround0000000000000000000000000", scores,
                                            (1 << len(scores)) - 1), proposer)
        attests = [_send(w3, f.attest(1, rnd, True), m) for m in members if m != proposer]
        gas["finalize"] = _send(w3, f.finalize(1, rnd, b"bafkreiglobalmodelcidofthisround0000000000000000000000000", scores), owner)
        gas["commit"] = sum(commits) / len(commits)
        gas["reveal"] = sum(reveals) / len(reveals)
        gas["attest"] = sum(attests) / max(1, len(attests))
        gas["k"] = len(members)
        gas["round"] = gas["draw"] + sum(commits) + sum(reveals) + gas["propose"] + sum(attests) + gas["finalize"]
        rows.append(gas)
    out = dict(rows[1])
    out["round1"] = rows[0]["round"]
    out["finalize3"] = rows[2]["finalize"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="K = 4 only")
    args = parser.parse_args()
    ks = [4] if args.quick else [4, 16, 32]
    print("| K (asked/actual) | registered | draw | commit | reveal | commit+reveal (<= 110k) | propose | attest | "
          "finalize | propose+finalize (target) | round total | round 1 total | round 3 finalize |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    ok = True
    for k in ks:
        for registered in (10, 200):
            g = measure(k, registered)
            cr = g["commit"] + g["reveal"]
            pf = g["propose"] + g["finalize"]
            target = 150_000 + 30_000 * g["k"]
            ok &= cr <= 110_000 and pf <= target
            print(
                f"| {k}/{g['k']} | {registered} | {g['draw']:,.0f} | {g['commit']:,.0f} | {g['reveal']:,.0f} | "
                f"{cr:,.0f} {'ok' if cr <= 110_000 else 'OVER'} | {g['propose']:,.0f} | {g['attest']:,.0f} | "
                f"{g['finalize']:,.0f} | {pf:,.0f} / {target:,.0f} {'ok' if pf <= target else 'OVER'} | "
                f"{g['round']:,.0f} | {g['round1']:,.0f} | {g['finalize3']:,.0f} |",
                flush=True,
            )
    print("all targets met" if ok else "some targets missed (see OVER)")


if __name__ == "__main__":
    main()
