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
# Scores are cosines relative to the round's median one (aggregation.scores); under fedavg the
# attacker's 10**6 samples, capped at 300 (max_samples), still capture the aggregate: its delta is
# -10x the honest direction, the honest cosines are all 0, so the median is 0 and nobody is
# credited, the captor included. fedavg+clip has no max_samples: the attacker counts as 5 median
# claims (1,500 of 3,200, #16), clipping takes away its 10x, and honest 2-4 are credited (before
# the median cap it had 10**6 and all scored 0). Update 6 repeats update 1: both score 0.
GOLDEN: dict[str, tuple[str, str, list[int]]] = {
    "fedavg": (
        "340d099c4b8253958bf414f9c273e341e9f8f315a0d112812148d9a1d66eb569",
        "bafkreibubuezys4ckokyx5au7hbhhy2b5h4pgfna2ejiciki3gq5m3vvne",
        [0, 0, 0, 0, 0, 0, 0],
    ),
    "median": (
        "31155b8d372103bcc181b3102bf8771bf296618e1521a8b8f85a3116a706fba1",
        "bafkreibrcvny2nzbao6mdantcav7q5y36klgddqvegulr6c2gelkobx3ue",
        [1000000000000000000, 0, 1000000000000000000, 993382303531716012, 1000000000000000000, 0, 0],
    ),
    "trimmed-mean": (
        "9c1d89e53d08b5165261b931cb46cd1d90e6e33a7d52398c887207f63f05641a",
        "bafkreie4dwe6kpiiwulfeynzghfunti5sdtogot5ki4yzcdsa73d6bledi",
        [991602885704646856, 0, 1000000000000000000, 1000000000000000000, 1000000000000000000, 0, 0],
    ),
    "multi-krum": (
        "3a36b3b9860f2cc4a22960df43614e0c4914b9a3509cc27336e1e1c1391d5815",
        "bafkreib2g2z3tbqpftckekla35bwctqmjeklti2qttbhgnxb4hatshkycu",
        [973444649221876297, 0, 1000000000000000000, 1000000000000000000, 1000000000000000000, 0, 0],
    ),
    "fedavg+clip": (
        "03beee8524efefd3b1b19fa91eac549ddc437deaa6400f186c421f7edfcc787c",
        "bafkreiadx3xikjhp57j3dmm7vepkyve53rbx32vgiahrq3ccd57n7tdypq",
        [0, 0, 1000000000000000000, 1000000000000000000, 1000000000000000000, 0, 0],
    ),
    "median+clip": (
        "d6dd08eb530720831bdda4d597368f97de79003018836f5e44a62bf93f59f41e",
        "bafkreigw3ueowuyhecbrxxne2wltnd4x3z4qamayqnxv4rfgfp4t6wpudy",
        [1000000000000000000, 0, 1000000000000000000, 998270014748979299, 1000000000000000000, 0, 0],
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
