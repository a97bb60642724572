"""Every rule gives the same CID across threads, SIMD levels, BLAS kernels, arrival orders and processes.

SPEC section 5. The rounds come from rule_rounds.py (SHA-256-derived inputs);
GOLDEN pins their model bytes, CIDs and scores, so any change to the
arithmetic, the rules or the writer shows up here as a changed vector.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from node.storage import cid_of
from tests.aggregation.rule_rounds import ROUNDS, digests, round_inputs, run_round
from tests.aggregation.test_determinism import disabled_simd_features

SCRIPT = Path(__file__).with_name("rule_rounds.py")

# Generated once from rule_rounds.py; name -> (model sha256, model CID, scores in WAD).
# Scores are cosines relative to the round's median one (aggregation.scores). The attacker
# (update 5) publishes -3x the honest direction, 2.7x the median norm, inside scores.NORM_BOUND, so
# every rule still sees it. Under fedavg its 10**6 samples are capped at 300 (max_samples) and
# the aggregate stays honest: the attacker scores 0, honest 0 (the fewest samples) 0.35.
# fedavg+clip has no max_samples: the attacker counts as 5 median claims (2,000 of 3,300, #16),
# its direction wins, every honest cosine is 0, so the median is 0 and nobody is credited, the
# captor included. Update 6 repeats update 1: both score 0 and neither is aggregated (screen).
GOLDEN: dict[str, tuple[str, str, list[int]]] = {
    "fedavg": (
        "780e81a644d645b441fb8e9054ce9ffa0771599cb00f8d735bdfa494e53309fb",
        "bafkreidyb2a2mrgwiw2ed64osbkm5h72a5yvthfqb6gxgw67uskokmyj7m",
        [346231028620584897, 0, 1000000000000000000, 1000000000000000000, 1000000000000000000, 0, 0],
    ),
    "median": (
        "6a1d11fa1512ea39fd40eea869069f019d839925a7729890d3fff86c2a571b15",
        "bafkreidkdui7ufis5i472qhovbuqnhybtwbzsjnhokmjbu777bwcuvy3cu",
        [984884011712593617, 0, 1000000000000000000, 1000000000000000000, 1000000000000000000, 0, 0],
    ),
    "trimmed-mean": (
        "b7e2ae665ec221b77976b7010576f16495bb441e8e29bcf4e24eef0e0b80d736",
        "bafkreifx4kxgmxwceg3xs5vxaecxn4lesw5uihuofg6pjyso54haxagxgy",
        [978015312211416829, 0, 1000000000000000000, 1000000000000000000, 1000000000000000000, 0, 0],
    ),
    "multi-krum": (
        "214c7d04028f7ba256939129c586f37ef5cf697feb7c125740c4b36ea7b00e02",
        "bafkreibbjr6qiaupporfne4rfhcyn4366xhws77lpqjfoqgewnxkpmaoai",
        [887695672045362188, 0, 1000000000000000000, 1000000000000000000, 1000000000000000000, 0, 0],
    ),
    "fedavg+clip": (
        "998e43cf00baf749d55cd36da3bc31efcafecdd6ad6e428989f1f97ca6e9bd0b",
        "bafkreiezrzb46af265e5kxgtnwr3ymppzl7m3vvnnzbitcpr7f6kn2n5bm",
        [0, 0, 0, 0, 0, 0, 0],
    ),
    "median+clip": (
        "81553d53c46712bd857b1bb341c1e35299b9f83c1d472500ccd1d7d4fef98888",
        "bafkreiebku6vhrdhck6yk6y3wna4dy2stg47qpa5i4sqbtgr27kp56mira",
        [982900108638275519, 0, 1000000000000000000, 1000000000000000000, 1000000000000000000, 0, 0],
    ),
}


def run_script(*args: str, env: dict[str, str]) -> dict[str, object]:
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def expected_digests() -> dict[str, object]:
    return {
        name: {"sha256": sha, "scores": [str(s) for s in scores]} for name, (sha, _, scores) in GOLDEN.items()
    }


def test_golden_vectors_cover_every_round() -> None:
    assert set(GOLDEN) == set(ROUNDS)
    assert {rule for rule, _ in ROUNDS.values()} == {"fedavg", "median", "trimmed-mean", "multi-krum"}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_round_matches_its_golden_vector(name: str) -> None:
    # Execute
    model, scores = run_round(name)

    # Assert
    sha, cid, expected_scores = GOLDEN[name]
    assert hashlib.sha256(model).hexdigest() == sha
    assert cid_of(model) == cid
    assert scores == expected_scores


def test_robust_rules_score_the_attacker_and_the_copy_zero() -> None:
    # The attacker (index 5) points away from the honest updates; index 6 repeats index 1, and
    # after commit-reveal only colluders can publish the same update, so both of them score 0.
    for name in ("median", "trimmed-mean", "multi-krum", "median+clip"):
        scores = GOLDEN[name][2]
        assert scores[5] == scores[6] == scores[1] == 0, name
        assert all(scores[i] > 0 for i in (0, 2, 3, 4)), name


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_arrival_order_does_not_matter_once_the_canonical_order_is_restored(seed: int) -> None:
    # Prepare: updates arrive shuffled, tagged with their on-chain reveal index,
    # and the node sorts them back by that index before aggregating.
    _, canonical = round_inputs()
    arrivals = list(enumerate(canonical))
    random.Random(seed).shuffle(arrivals)
    restored = [data for _, data in sorted(arrivals)]

    for name in ROUNDS:
        # Execute
        model, scores = run_round(name, restored)
        shuffled_model, shuffled_scores = run_round(name, [data for _, data in arrivals])

        # Assert: restored order gives the golden result; even the raw arrival
        # order gives the same model (every rule is permutation invariant),
        # with the scores following their updates -- except which of two
        # identical copies counts as the first, the reason to restore the order.
        assert cid_of(model) == GOLDEN[name][1] and scores == GOLDEN[name][2]
        assert cid_of(shuffled_model) == GOLDEN[name][1]
        by_index = dict(zip((i for i, _ in arrivals), shuffled_scores))
        golden = GOLDEN[name][2]
        assert [by_index[i] for i in (0, 2, 3, 4, 5)] == [golden[i] for i in (0, 2, 3, 4, 5)]
        first, second = sorted((1, 6), key=[i for i, _ in arrivals].index)
        assert (by_index[first], by_index[second]) == (golden[1], 0)


def test_in_process_digests_match_the_golden_vectors() -> None:
    assert digests() == expected_digests()


def test_one_thread_no_simd_and_another_blas_kernel_give_the_same_bytes() -> None:
    # Prepare: one thread everywhere, numpy's non-baseline SIMD paths off,
    # OpenBLAS forced onto its oldest generic kernel (Gram products for Krum),
    # and the compiled FedAvg kernels built for a generic x86-64 (no AVX).
    env = {
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_CORETYPE": "Prescott",
        "FEDLEDGER_THREADS": "1",
        "NUMBA_CPU_NAME": "generic",
    }
    features = disabled_simd_features()
    if features:
        env["NPY_DISABLE_CPU_FEATURES"] = features

    # Execute
    restricted = run_script(env=env)

    # Assert
    assert restricted == expected_digests()


def test_torch_thread_counts_and_many_blas_threads_give_the_same_bytes() -> None:
    # Execute: torch imported and set to 1 and to 3 intra-op threads, numpy's
    # BLAS at 3 threads, the exact kernels on 1 and on 3 threads.
    one = run_script("1", env={"OPENBLAS_NUM_THREADS": "3", "OMP_NUM_THREADS": "3", "FEDLEDGER_THREADS": "1"})
    three = run_script("3", env={"OPENBLAS_NUM_THREADS": "3", "OMP_NUM_THREADS": "3", "FEDLEDGER_THREADS": "3"})

    # Assert
    assert one == three == expected_digests()
