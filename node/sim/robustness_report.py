"""The robustness report: docs/robustness.md and its plots, written from the experiment's numbers.

Everything here reads `Outcome`s (node/sim/robustness.py) and nothing else, so `--render-only`
rewrites the page from results.json alone: tables, per-rule findings, the explanation of every
missed target, and the plots.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from incentives.reputation import INITIAL_REPUTATION, ema
from node.sim.robustness import (
    ACCURACY_MARGIN,
    ALPHA_WAD,
    EXCLUSION_ROUNDS,
    PAYOUT_SHARE,
    ROBUST_RULES,
    SPLITS,
    TARGETS,
    THRESHOLD_WAD,
    Outcome,
    assess,
    baseline_of,
    command_line,
    experiment_trim,
    misses,
    verdict,
)
from node.sim.simulate import SimulationConfig
from node.taskspec import TaskSpec, spec_for_rule
from node.units import WAD


SETUP = """\
## Setup

Every run is `fedledger simulate` in-process on the embedded chain (real contracts, real
content addressing, real torch training), with the seeds fixed: {nodes} nodes of which the last
{malicious} attack, {rounds} rounds, a committee of all {nodes} nodes (every node whose
reputation is at least the threshold gets a seat), digits split IID or by Dirichlet(0.5) label skew.
One honest-only run per rule and split is the baseline the attacked runs of that rule are compared with.

| parameter | value | why |
|---|---|---|
| score | the node's clipped cosine with the round's aggregate, relative to the round's median cosine: 1 at or above the median, 0 at half of it or less, linear in between; 0 for an update identical to another of the same round (commit-reveal: only colluders can publish the same update) or to one of the previous round (a replay) | RFFL (Xu & Lyu, 2020) scores a node by the cosine of its update with the aggregate. How aligned honest updates are depends on the data (about 0.75 on IID shards, 0.3 under label skew), so an absolute cosine cannot be held to one threshold; relative to the round's median it can, as long as honest updates are the majority. |
| reputation | EMA of the round's score, alpha {alpha}, from {initial} at registration | RFFL: reputation is a moving average of the scores, so one bad round does not ruin an honest node and one good round does not redeem an attacker. With alpha {alpha}, a node that scores 0 falls from {initial} to {initial} x {keep}^3 = {three_zero:.3f} < {threshold} in 3 rounds, the exclusion target, and so does one that first scored 1 for a round, as the stale free-rider does ({after_one:g} x {keep}^3 = {one_then_zero:.3f}); with alpha 0.3 that took 4 rounds (0.65 x 0.7^3 = 0.223). |
| threshold | {threshold} | Under it a node earns nothing and gets no seat. An EMA heads for the node's typical score, so a node stays in the long run iff it scores at least {threshold}: honest nodes, near their round's median, score about 1. |
| proposer / attester shares | {proposer_share:g}% / {attester_share:g}% here (the protocol's default is 5% / 5%) | The simulator turns the protocol shares off by default so that a node's payout measures its training contribution alone, which is what this experiment compares. With the defaults, every seated node also earns for proposing and attesting honestly (these attackers only misbehave in training), so the attackers' share would also include part of the 10% of each round paid for protocol work, in the rounds in which they held seats. `--proposer-share-bps 500 --attester-share-bps 500` runs that. |
| rewards | {reward} ETH pool, each round pays an equal part of what is left, by score x reputation | SPEC section 4. |
| rules (`spec_for_rule`) | fedavg: weights = samples (cap 2^20); median: coordinate-wise; trimmed-mean: trim {trim:g} (cuts {cut} of {nodes} values from each end of every coordinate); multi-krum: f = {f}, m = {m} | trimmed-mean needs beta >= the attackers' fraction (Yin et al., 2018), so it cuts {malicious} of {nodes} (the protocol's default, without a known attacker count, is Flower's 0.2); f = (K - 3) // 2 is the most Byzantine updates Krum tolerates among K (Blanchard et al. need K > 2f + 2), m = K - f. |
| training | model {model}, {epochs} local epochs, batch {batch}, lr {lr}, seed {seed} | the task spec defaults. With 2 epochs (as an earlier version of this report ran) the honest-only runs were still climbing steeply after 5 rounds (0.49 -> 0.71 -> 0.77 under IID), so an attack that only slowed the first rounds showed as a lost accuracy target; with 5 they are near their plateau and the accuracy target measures lasting damage. |

Targets for the robust rules (median, trimmed-mean, multi-krum): final test accuracy within
{margin} points of the honest-only run with the same rule and split; every attacker's reputation
under the threshold within {exclusion} rounds of its first attack (round 1, except the stale
free-rider, which trains honestly in round 1 and resends that update from round 2); the attackers
together earn at most {payout}% of the payouts. FedAvg is held to the same targets but is not
expected to meet them: it has no defence but the reputation.

Attackers know what the protocol lets them know: their own training, their colluders', the
committee size and the updates revealed in earlier rounds. Commit-reveal hides the honest updates
of the round until every commitment is in, so little-is-enough estimates the honest mean and
spread from the colluders' own honestly trained updates, and free-rider-copy copies an update
revealed in the previous round (zeros in round 1, when there is none).

How to read the scores quoted below: a round's score is the relative score above, recovered
exactly from the on-chain reputations; "honest" is the mean
over the seated honest nodes. "Published" describes the attackers' updates against the mean of
the honest updates of the same round: cosine, norm ratio, the median shift in units of the
honest updates' per-coordinate standard deviation, and the mean cosine between the attackers' updates.
Every sequence runs over rounds 1, 2, ...; "-" is a round in which no attacker had a seat.
"""

def _pct(x: float) -> str:
    return f"{x:.1%}"


def _seq(xs: list[Any], fmt: str = "{:.2f}") -> str:
    return " → ".join("-" if x is None else fmt.format(x) for x in xs)


def _mean(xs: list[Any]) -> float:
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else 0.0


def _attacker_mean_scores(o: Outcome) -> list[float | None]:
    out: list[float | None] = []
    for r in range(len(o.accuracy_per_round)):
        xs = [s[r] for s in o.attacker_scores if s[r] is not None]
        out.append(round(statistics.fmean(xs), 3) if xs else None)
    return out


def _seated_rounds(o: Outcome) -> int:
    """Rounds in which at least one attacker held a seat."""
    return sum(any(s[r] is not None for s in o.attacker_scores) for r in range(len(o.accuracy_per_round)))


class Grid:
    """The outcomes, with the look-ups the report's sentences need."""

    def __init__(self, outcomes: list[Outcome], config: dict[str, Any]) -> None:
        self.outcomes = outcomes
        self.config = config

    def find(self, split: str, rule: str, attack: str | None) -> Outcome | None:
        return next((o for o in self.outcomes if (o.split, o.rule, o.attack) == (split, rule, attack)), None)

    def base(self, o: Outcome) -> Outcome:
        b = self.find(o.split, o.rule, None)
        assert b is not None
        return b

    def honest_level(self, split: str, rule: str) -> float:
        """Mean score of the honest nodes in the honest-only run."""
        b = self.find(split, rule, None)
        return _mean(b.honest_mean_score) if b else float("nan")


def evidence(o: Outcome, target: str, grid: Grid) -> str:
    base = grid.base(o)
    if target == "accuracy":
        return (
            f"{o.final_accuracy:.3f} vs {base.final_accuracy:.3f} honest-only "
            f"({(o.final_accuracy - base.final_accuracy) * 100:+.1f} points; per round {_seq(o.accuracy_per_round, '{:.3f}')}"
            f" vs {_seq(base.accuracy_per_round, '{:.3f}')})"
        )
    if target == "exclusion":
        late = [i for i, r in enumerate(o.rounds_to_exclusion) if r is None or r > EXCLUSION_ROUNDS]
        caught = len(o.rounds_to_exclusion) - len(late)
        worst = late[0]
        return (
            f"{len(late)} of {len(o.rounds_to_exclusion)} attackers not under the threshold in time"
            f"{f' ({caught} caught in time)' if caught else ''}; attacker {worst + 1}: reputation "
            f"{_seq(o.attacker_reputation[worst])}, scores {_seq(o.attacker_scores[worst])} (honest: {_seq(o.honest_mean_score)})"
        )
    assert target == "payout"
    return (
        f"attackers earned {_pct(o.attacker_payout_share)} of the payouts; their mean score per round "
        f"{_seq(_attacker_mean_scores(o))} (honest: {_seq(o.honest_mean_score)})"
    )


def _published(o: Outcome) -> str:
    if not o.published:
        return ""
    p = o.published
    among = f", cosine among the attackers {_seq(p['cos_among_attackers'])}" if any(x is not None for x in p["cos_among_attackers"]) else ""
    return (
        f"Published: cosine with the honest mean {_seq(p['cos_to_honest_mean'])}, norm ratio {_seq(p['norm_ratio'])}, "
        f"shift {_seq(p['shift_std'])} std{among}."
    )


def _is_honest_mean(o: Outcome) -> bool:
    p = o.published
    return bool(p) and all(abs(x) < 0.005 for x in p["shift_std"] if x is not None) and all(
        x > 0.995 for x in p["cos_to_honest_mean"] if x is not None
    )


def rounds_to_threshold(score: float) -> int | None:
    """Rounds an EMA needs from the initial 0.5 to fall under the threshold with a constant score
    (None: it never does, the EMA converges to the score)."""
    rep = INITIAL_REPUTATION
    for r in range(1, 100):
        rep = ema(rep, round(score * WAD), ALPHA_WAD)  # the contract's own arithmetic (incentives/)
        if rep < THRESHOLD_WAD:
            return r
    return None


def _ema_sentence(score: float) -> str:
    r = rounds_to_threshold(score)
    if r is None:
        return f"an EMA of scores near {score:.2f} stays above {THRESHOLD_WAD / WAD:g} for good"
    return f"an EMA of scores near {score:.2f} takes {r} rounds from 0.5 to fall under {THRESHOLD_WAD / WAD:g}"


def _late(o: Outcome) -> int:
    return next(i for i, r in enumerate(o.rounds_to_exclusion) if r is None or r > EXCLUSION_ROUNDS)


def explain(o: Outcome, target: str, grid: Grid) -> str | None:
    """Why `o` misses `target`: the mechanism, with the numbers of the grid that back it.
    None when no specific mechanism applies (the split's note then covers it)."""
    rule, attack, split = o.rule, o.attack, o.split
    nodes, malicious = grid.config["nodes"], grid.config["malicious"]
    attacker_score = _mean(_attacker_mean_scores(o))
    honest_score = _mean(o.honest_mean_score)
    captured = attacker_score > honest_score
    seated = _seated_rounds(o)
    norm = _mean(o.published.get("norm_ratio", []))
    among_values = [x for x in o.published.get("cos_among_attackers", []) if x is not None]
    among = statistics.fmean(among_values) if among_values else None
    agree = f" agree with each other (mean pairwise cosine {among:.2f})" if among is not None and among > 0.3 else ""
    cos = [x for x in o.published.get("cos_to_honest_mean", []) if x is not None]
    cut = int((experiment_trim("trimmed-mean", nodes, malicious) or 0.0) * nodes)
    iid = split == "iid"

    if attack == "little-is-enough":
        shifts = [x for x in o.published.get("shift_std", []) if x is not None]
        z = _mean(shifts)
        if target == "accuracy":
            return (
                f"The colluders publish their own mean shifted by Baruch et al.'s z for {malicious} colluders among {nodes}, "
                f"{z:.2f} honest standard deviations per coordinate on average: small enough to stay inside the honest "
                f"spread, so {rule} keeps it among the values it aggregates while they hold seats "
                f"(rounds 1-{seated}), and those steps are bent towards it."
            )
        return (
            f"The colluders publish one vector, their own mean shifted by {z:.2f} honest standard deviations per "
            f"coordinate. Identical updates in one round score 0, so they score {attacker_score:.2f} on average and "
            f"{_ema_sentence(attacker_score)}."
        )

    if attack == "free-rider-stale" and target == "payout":
        return (
            f"The stale free-riders train honestly in round 1 and are paid for it like honest nodes; from round 2 "
            f"they resend that update, a replay of the previous round that scores 0 (scores per attacker: "
            f"{'; '.join(_seq(x) for x in o.attacker_scores)}). Their {_pct(o.attacker_payout_share)} is, nearly all, "
            f"round 1's honest work: {malicious} of {nodes} nodes' part of the first round's {1 / len(o.accuracy_per_round):.0%} of the pool."
        )

    if attack == "gaussian" and target in ("exclusion", "payout") and iid:
        krum = grid.find(split, "multi-krum", "gaussian")
        text = (
            f"The noise is uncorrelated with the honest updates (cosine with their mean {_mean(cos):.2f}) but it is an input "
            f"of the aggregate, so it is credited for its own share of it: it scores {attacker_score:.2f} on average, and "
            f"{_ema_sentence(attacker_score)}."
        )
        krum_score = _mean(_attacker_mean_scores(krum)) if krum else None
        if krum_score is not None and rule != "multi-krum" and krum_score < attacker_score / 2:
            text += f" Multi-Krum, which leaves the noise out of the aggregate, scores it {krum_score:.2f}."
        return text

    if attack == "scaling" and rule in ("fedavg", "trimmed-mean") and captured:
        if target in ("exclusion", "payout"):
            return (
                f"The aggregate is the attackers' (see accuracy), so they are the ones aligned with it: they score "
                f"{attacker_score:.2f} on average, the honest nodes {honest_score:.2f}. Reputation measures agreement "
                "with the aggregate, so once the rule is captured it rewards the captors."
            )
        if rule == "fedavg":
            return (
                f"FedAvg weights updates by their sample counts only, so {malicious} updates boosted to ~{norm:.0f}x the norm of "
                "the honest mean make the aggregate theirs (model replacement): the global model is the attackers' "
                "label-flipped one, at chance accuracy."
            )
        return (
            f"Trimmed-mean cuts {cut} values from each end of every coordinate, fewer than the {malicious} attackers: where "
            f"their boosted values sit on one side, one survives the cut and, at ~{norm:.0f}x the honest norm, "
            f"dominates the mean of the {nodes - 2 * cut} values kept. The attackers score {attacker_score:.2f} on average, "
            f"the honest nodes {honest_score:.2f}: the aggregate follows them."
        )

    if attack in ("label-flip", "scaling") and target in ("exclusion", "payout") and iid:
        last = [x for s in o.attacker_scores for x in s[-2:] if x is not None]
        if rule == "multi-krum" and last and max(last) < 0.05:
            first = [s[0] for s in o.attacker_scores if s and s[0] is not None]
            return (
                f"Multi-Krum leaves the poisoned updates out of the aggregate and their scores fall to 0, but in round 1 "
                f"they still score up to {max(first):.2f}, which costs one round."
            )
        lf = grid.find(split, rule, "label-flip")
        same = (
            f" The median sees the attackers' values only through their rank, so the boost changes little: the scaling attackers score "
            f"{attacker_score:.2f}, the plain label-flippers {_mean(_attacker_mean_scores(lf)):.2f}."
            if rule == "median" and attack == "scaling" and lf
            else ""
        )
        if rule == "multi-krum" or not agree:
            return None
        return (
            f"Trained on the same wrong labels, the attackers' updates{agree} though not with the honest ones "
            f"(cosine with their mean {min(cos):.2f} to {max(cos):.2f}), and they "
            f"are {malicious} of the {nodes} inputs of the aggregate, so they pull it their way and are credited for it: "
            f"they score {attacker_score:.2f} on average, and {_ema_sentence(attacker_score)}." + same
        )

    if target == "accuracy" and iid:
        stall = f"while they hold seats (rounds 1-{seated})" if seated < len(o.accuracy_per_round) else "in every round"
        b = grid.base(o).accuracy_per_round
        steep = (
            f" Accuracy is still climbing at the end (honest-only: {_seq(b[-3:], '{:.3f}')}), so a slower start "
            f"shows as a gap after {len(b)} rounds."
        )
        if attack == "scaling" and rule == "median":
            lf = grid.find(split, rule, "label-flip")
            if lf:
                return (
                    "The median sees the attackers' values only through their rank, so this is nearly the label-flip attack: "
                    f"{o.final_accuracy:.3f} here, {lf.final_accuracy:.3f} with the plain label-flip (below)."
                )
        if attack == "label-flip" and agree and rule != "multi-krum":
            how = (
                "FedAvg averages them in at a quarter of the weight"
                if rule == "fedavg"
                else f"the {rule} bounds how far they move each coordinate, not the direction"
            )
            return f"The {malicious} label-flippers' updates{agree} and pull the aggregate the same way {stall}; {how}." + steep
        if attack == "sign-flip":
            how = {
                "fedavg": f"{malicious} negated updates cancel about as many honest ones, so the step is roughly "
                f"{nodes - 2 * malicious}/{nodes} of the honest one",
                "median": f"{malicious} of {nodes} values on the far side of every coordinate move its median "
                "from the middle of the honest values toward their far end, shrinking the step",
                "trimmed-mean": f"cutting {cut} values per end leaves at least one of the {malicious} flipped values in "
                "every coordinate and cuts honest ones from the other end, shrinking the step",
            }.get(rule)
            return f"{how[0].upper() + how[1:]} {stall}." + steep if how else None
        if attack == "free-rider-zero":
            how = {
                "fedavg": f"{malicious} zero updates are {malicious}/{nodes} of the sample-weighted average, so the step is shorter",
                "median": f"{malicious} zeros in every coordinate pull its median toward 0, so the step is shorter",
                "trimmed-mean": f"{malicious} zeros in every coordinate, of which at most {cut} are cut, pull the mean toward 0, "
                "so the step is shorter",
            }.get(rule)
            return f"{how[0].upper() + how[1:]} {stall}." + steep if how else None
        if attack == "free-rider-copy":
            return (
                f"The copiers send zeros in round 1 (nothing is revealed yet) and then replays of updates revealed the "
                f"round before, computed from the previous global model: {malicious} of the {nodes} inputs add no "
                f"new step {stall}." + steep
            )
        if attack == "gaussian":
            how = (
                "FedAvg adds a quarter of their mean to every step"
                if rule == "fedavg"
                else "they widen the spread each coordinate is robustly averaged over, so the step is noisier"
            )
            return f"{malicious} noise vectors of ~{norm:.1f}x the norm of the honest mean are inputs of the aggregate {stall}: {how}." + steep

    if not iid and target in ("exclusion", "payout"):
        if captured:
            return (
                f"The attackers score {attacker_score:.2f} on average, the honest nodes {honest_score:.2f}: the aggregate "
                f"follows the attackers' updates more than the honest ones, which under label skew point in many "
                f"directions, so a reputation that measures agreement with the aggregate rewards the attackers."
            )
        if attack == "sign-flip":
            k = _late(o)
            own = o.attacker_own_cos[k] if o.attacker_own_cos else []
            return (
                f"Attacker {k + 1} trains on classes the other nodes hold little of: the update it trained had cosine "
                f"{_seq(own)} with the honest mean, so the negation it publishes has {_seq([None if x is None else -x + 0.0 for x in own])} "
                f"and scores {_seq(o.attacker_scores[k])} against the aggregate (honest nodes: {_seq(o.honest_mean_score)}). "
                "A cosine score cannot tell the negation of an outlier from an honest update."
            )
        kind = {
            "label-flip": "Under label skew a shard with flipped labels looks like one more skewed shard",
            "scaling": "Under label skew a shard with flipped labels looks like one more skewed shard, and the boost does "
            "not change a cosine",
        }.get(attack, "Under label skew honest updates agree with the aggregate little, and a noise vector that is one of its inputs keeps some cosine with it")
        k = _late(o)
        mine = o.attacker_scores[k]
        top = max((x for x in mine if x is not None), default=0.0)
        return (
            f"{kind}, so in some rounds its cosine with the aggregate, relative to the round's median cosine, is "
            f"that of an honest update: attacker {k + 1} scores up to {top:.2f} (round {mine.index(top) + 1}; the honest "
            f"nodes {honest_score:.2f} on average), and its reputation takes more than {EXCLUSION_ROUNDS} rounds to come "
            "down from there."
        )

    if not iid and target == "accuracy":
        overall, per_class = attacker_data(split, grid.config)
        held = _join([f"{share:.0%} of the {c}s" for c, share in per_class if share >= 0.25] or [f"{per_class[0][1]:.0%} of the {per_class[0][0]}s"])
        text = (
            f"Under this split the {malicious} attackers hold {overall:.0%} of the training examples but {held}, "
            f"which the honest nodes have few of."
        )
        if o.targets and o.targets["exclusion"]:
            text += (
                f" Once they are caught (their last seat: round {seated}) only the {nodes - malicious} honest nodes "
                "train, and that data is gone with them."
            )
            zero = grid.find(split, rule, "free-rider-zero")
            base = grid.base(o)
            if attack != "free-rider-zero" and zero and zero.final_accuracy < base.final_accuracy - ACCURACY_MARGIN:
                text += (
                    f" The zero free-riders, who teach nothing and are caught as fast, end at {zero.final_accuracy:.3f}: "
                    "most of the gap is the attackers' data missing, not their updates."
                )
        else:
            text += f" Not all of them are caught in time (see below), so their updates stay inputs of the {rule}."
        return text
    return None


def attacker_data(split: str, config: dict[str, Any]) -> tuple[float, list[tuple[int, float]]]:
    """The attackers' part of the training data of `split`: overall, and per class, largest first.
    The simulator gives the last `malicious` of the `nodes` shards to the attackers."""
    from node.training import load_digits_split, partition

    train, _ = load_digits_split(seed=config["seed"])  # as simulate deals it
    labels = np.asarray(train.y)
    shards = partition(train, config["nodes"], SPLITS[split], config["seed"])
    theirs = np.concatenate(shards[config["nodes"] - config["malicious"] :])
    total = np.bincount(labels, minlength=10)
    held = np.bincount(labels[theirs], minlength=10)
    per_class = sorted(((c, float(held[c] / total[c])) for c in range(len(total)) if total[c]), key=lambda x: -x[1])
    return len(theirs) / len(labels), per_class


def split_note(rule: str, split: str, grid: Grid) -> str | None:
    """A note on a rule under a split: when honest updates agree too little for the scores to separate
    attackers, and when the rule itself learns much less than FedAvg there."""
    base = grid.find(split, rule, None)
    if base is None:
        return None
    attacked = [o for o in grid.outcomes if o.split == split and o.rule == rule and o.attack is not None]
    with_fp = [o for o in attacked if o.honest_excluded]
    iid = grid.find("iid", rule, None)
    text = ""
    if grid.honest_level(split, rule) < 0.5:
        text = (
            f"Under {split} the honest nodes of the honest-only run score only {grid.honest_level(split, rule):.2f} on average"
            f"{f' (IID: {grid.honest_level(iid.split, rule):.2f})' if iid else ''}, and in {len(with_fp)} of the {len(attacked)} attacked runs honest "
            f"nodes fell under the threshold ({sum(o.honest_excluded for o in attacked)} in all): under label skew honest updates "
            "disagree with the aggregate almost as much as many attacks do, so a cosine reputation separates them poorly. "
            "Misses below without a reason of their own have this one."
        )
    fedavg = grid.find(split, "fedavg", None)
    iid_rule, iid_fedavg = grid.find("iid", rule, None), grid.find("iid", "fedavg", None)
    if rule != "fedavg" and fedavg is not None and base.final_accuracy < fedavg.final_accuracy - 0.1:
        # Runs that gain accuracy from attacks that add nothing (the honest mean republished is left out: it may help).
        above = [o for o in attacked if o.final_accuracy > base.final_accuracy + ACCURACY_MARGIN and not _is_honest_mean(o)]
        text += (
            f"{' ' if text else ''}The rule itself learns less here in {len(base.accuracy_per_round)} rounds: {base.final_accuracy:.3f} honest-only "
            f"against FedAvg's {fedavg.final_accuracy:.3f}"
            + (f" (under IID: {iid_rule.final_accuracy:.3f} against {iid_fedavg.final_accuracy:.3f})" if iid_rule and iid_fedavg else "")
            + ", consistent with the known weakness of coordinate-wise and distance-based rules on heterogeneous data: "
            "they keep what most updates agree on, which under label skew drops what only the few nodes holding a class "
            "can teach (Karimireddy et al., ICLR 2022)."
        )
        if len(above) >= 2:
            listed = ", ".join(f"{o.attack} {o.final_accuracy:.3f}" for o in sorted(above, key=lambda o: -o.final_accuracy))
            text += (
                f" Attacks end more than {round(ACCURACY_MARGIN * 100)} points *above* this baseline in {len(above)} runs "
                f"({listed}): in this regime a {len(base.accuracy_per_round)}-round run moves by more than the margin in both "
                "directions, so its accuracy verdicts say little about an attack's harm."
            )
    return text or None


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def rule_findings(rule: str, grid: Grid) -> list[str]:
    rows = [o for o in grid.outcomes if o.rule == rule]
    lines = [f"### {rule}", ""]
    fedavg = {o.split: o for o in grid.outcomes if o.rule == "fedavg" and o.attack is None}
    bases = []
    for b in (o for o in rows if o.attack is None):
        versus = ""
        if rule != "fedavg" and b.split in fedavg:
            versus = f", FedAvg {fedavg[b.split].final_accuracy:.3f}"
        bases.append(f"{b.final_accuracy:.3f} ({b.split}{versus})")
    lines += [f"Honest-only accuracy: {', '.join(bases)}."]
    iid_base, iid_fedavg = grid.find("iid", rule, None), fedavg.get("iid")
    if rule != "fedavg" and iid_base and iid_fedavg and iid_base.final_accuracy < iid_fedavg.final_accuracy - ACCURACY_MARGIN:
        lines.append(
            f"Even under IID and without attackers this rule ends {(iid_fedavg.final_accuracy - iid_base.final_accuracy) * 100:.0f} "
            f"points under FedAvg (per round {_seq(iid_base.accuracy_per_round, '{:.3f}')} vs "
            f"{_seq(iid_fedavg.accuracy_per_round, '{:.3f}')}); its accuracy target is measured against its own honest-only run, "
            "so meeting it does not mean it learns as well as FedAvg."
        )
    lines.append("")
    for split in dict.fromkeys(o.split for o in rows):
        attacked = [o for o in rows if o.split == split and o.attack is not None]
        met = [o.attack for o in attacked if not misses(o)]
        per_target = {t: [o.attack for o in attacked if t in misses(o)] for t in TARGETS}
        summary = "; ".join(
            f"{t} missed under {', '.join(a)}" if a else f"{t} met under every attack" for t, a in per_target.items()  # type: ignore[arg-type]
        )
        honest_caught = [f"{o.attack} ({o.honest_excluded})" for o in attacked if o.honest_excluded]
        base = next((o for o in rows if o.split == split and o.attack is None), None)
        if base is not None and base.honest_excluded:
            honest_caught.insert(0, f"honest-only ({base.honest_excluded})")
        lines.append(f"#### {split}")
        lines.append("")
        lines.append(
            f"{len(met)} of {len(attacked)} attacks meet every target{' (' + ', '.join(met) + ')' if met else ''}. "  # type: ignore[arg-type]
            f"{summary[0].upper() + summary[1:]}. Honest nodes under the threshold: "
            f"{', '.join(honest_caught) if honest_caught else 'none, in any run'}."
        )
        note = split_note(rule, split, grid)
        if note:
            lines += ["", note]
        lines.append("")
        for o in (o for o in attacked if misses(o)):
            # Targets missed for the same reason share one explanation.
            reasons: dict[str, list[str]] = {}
            for t in misses(o):
                why = explain(o, t, grid) or ("See the note above." if note else "(no explanation written for this case)")
                reasons.setdefault(why, []).append(t)
            parts = [
                f"*{_join(ts)}*: " + "; ".join(evidence(o, t, grid) for t in ts) + f". {why}" for why, ts in reasons.items()
            ]
            lines.append(f"- **{o.attack}**: " + " ".join(parts) + (" " + _published(o) if o.published else ""))
        if any(misses(o) for o in attacked):
            lines.append("")
    return lines


def verdict_lines(grid: Grid) -> list[str]:
    """The headline: how often the robust rules meet each target, per split, and who stands out."""
    lines = []
    for split in dict.fromkeys(o.split for o in grid.outcomes):
        robust = [o for o in grid.outcomes if o.split == split and o.rule in ROBUST_RULES and o.attack is not None]
        if not robust:
            continue
        counts = ", ".join(f"{t} {sum(o.targets[t] for o in robust if o.targets)} of {len(robust)}" for t in TARGETS)
        lines.append(
            f"- **{split}**, robust rules: every target met in {sum(not misses(o) for o in robust)} of {len(robust)} attacked runs; "
            f"{counts}."
        )
    splits = list(dict.fromkeys(o.split for o in grid.outcomes))
    attacks = list(dict.fromkeys(o.attack for o in grid.outcomes if o.attack is not None))
    robust_rules = [r for r in ROBUST_RULES if any(o.rule == r for o in grid.outcomes)]
    for split in splits:
        robust = [o for o in grid.outcomes if o.split == split and o.rule in ROBUST_RULES and o.attack is not None]
        if not robust:
            continue
        starved = [
            a for a in attacks
            if all(o.targets and o.targets["exclusion"] and o.targets["payout"] for o in robust if o.attack == a)
        ]  # fmt: skip
        worst = max(robust, key=lambda o: o.attacker_payout_share)
        wrong = [o for o in grid.outcomes if o.split == split and o.honest_excluded]
        lines.append(
            f"- **{split}**: caught within {EXCLUSION_ROUNDS} rounds and paid at most {round(PAYOUT_SHARE * 100)}% under every "
            f"robust rule: {', '.join(starved) if starved else 'no attack'}. Highest attackers' share under a robust rule: "
            f"{_pct(worst.attacker_payout_share)} ({worst.rule}, {worst.attack}). Runs in which honest nodes fell under the "
            f"threshold: {len(wrong)} of {sum(o.split == split for o in grid.outcomes)}."
        )
    never = [
        a for a in attacks
        if all(o.targets and not o.targets["exclusion"] for o in grid.outcomes if o.attack == a and o.rule in robust_rules)
    ]  # fmt: skip
    if never:
        lines.append(f"- No robust rule, on either split, catches every attacker in time under: {', '.join(never)}.")
    return lines


def summary_table(outcomes: list[Outcome]) -> list[str]:
    lines = ["| rule | split | honest-only accuracy | attacks meeting every target | accuracy missed | exclusion missed | payout missed |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for rule in dict.fromkeys(o.rule for o in outcomes):
        for split in dict.fromkeys(o.split for o in outcomes if o.rule == rule):
            rows = [o for o in outcomes if o.rule == rule and o.split == split]
            attacked = [o for o in rows if o.attack is not None]
            base = next((o for o in rows if o.attack is None), None)
            cells = [", ".join(o.attack for o in attacked if t in misses(o)) or "-" for t in TARGETS]  # type: ignore[misc]
            lines.append(
                f"| {rule} | {split} | {base.final_accuracy:.3f} | "
                f"{sum(not misses(o) for o in attacked)} of {len(attacked)} | " + " | ".join(cells) + " |"
                if base
                else f"| {rule} | {split} | - | {sum(not misses(o) for o in attacked)} of {len(attacked)} | " + " | ".join(cells) + " |"
            )
    return lines


def results_table(split: str, outcomes: list[Outcome]) -> list[str]:
    lines = [
        "| rule | attack | final accuracy (vs honest-only) | attackers under the threshold after (rounds from first attack) "
        "| honest nodes ever under it | attackers' payout share | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for rule in dict.fromkeys(o.rule for o in outcomes if o.split == split):
        for o in (o for o in outcomes if o.split == split and o.rule == rule):
            base = baseline_of(o, outcomes)
            acc = f"{o.final_accuracy:.3f}"
            if o.attack is not None and base is not None:
                acc += f" ({(o.final_accuracy - base.final_accuracy) * 100:+.1f})"
            excl = "-" if o.attack is None else ", ".join("never" if r is None else str(r) for r in o.rounds_to_exclusion)
            lines.append(
                f"| {rule} | {o.attack or 'none (honest only)'} | {acc} | {excl} | {o.honest_excluded} | "
                f"{_pct(o.attacker_payout_share)} | {verdict(o)} |"
            )
    return lines


def markdown(outcomes: list[Outcome], config: dict[str, Any], plots: list[Path]) -> str:
    nodes = config["nodes"]
    spec = spec_for_rule("multi-krum", nodes)
    trim = experiment_trim("trimmed-mean", nodes, config["malicious"]) or 0.0
    defaults = TaskSpec()
    keep = 1 - ALPHA_WAD / WAD
    grid = Grid(outcomes, config)
    lines = [
        "# Robustness of FedLedger's rules and reputation",
        "",
        "Who learned, who was caught and who got paid, under every attack. Generated by one command,",
        f"`{command_line(config)}`, which runs the whole grid",
        "(fixed seeds, so the numbers replay exactly) and writes this page, the plots and every number",
        "behind them ([robustness/results.json](robustness/results.json)); `--render-only` rewrites the",
        "page from results.json. Do not edit it by hand.",
        "",
        SETUP.format(
            nodes=nodes, malicious=config["malicious"], rounds=config["rounds"], epochs=config["epochs"], seed=config["seed"],
            alpha=ALPHA_WAD / WAD, keep=keep, initial=0.5, three_zero=0.5 * keep**3, after_one=0.5 * keep + ALPHA_WAD / WAD,
            one_then_zero=(0.5 * keep + ALPHA_WAD / WAD) * keep**3, threshold=THRESHOLD_WAD / WAD,
            proposer_share=config["proposer_share_bps"] / 100, attester_share=config["attester_share_bps"] / 100,
            reward=SimulationConfig().reward_wei // WAD, trim=trim, cut=int(trim * nodes), f=spec.f, m=spec.m,
            model=defaults.model, batch=defaults.batch_size, lr=defaults.lr, margin=round(ACCURACY_MARGIN * 100),
            exclusion=EXCLUSION_ROUNDS, payout=round(PAYOUT_SHARE * 100),
        ),  # fmt: skip
        "## Summary",
        "",
        *verdict_lines(grid),
        "",
        *summary_table(outcomes),
        "",
        "## Findings per rule",
        "",
        "For each rule and split: which targets are met, which honest nodes were caught by mistake, and for every miss",
        "the numbers behind it and why it happens.",
        "",
    ]
    for rule in dict.fromkeys(o.rule for o in outcomes):
        lines += rule_findings(rule, grid)
    lines += ["## Results", ""]
    for split in dict.fromkeys(o.split for o in outcomes):
        lines += [f"### Split: {split}", "", *results_table(split, outcomes), ""]
    if plots:
        lines += ["## Plots", ""]
        for path in plots:
            lines += [f"![{path.stem}](robustness/{path.name})", ""]
    return "\n".join(lines).rstrip() + "\n"


PLOTS = {
    "final_accuracy": ("final test accuracy", None),
    "attacker_payout_share": ("attackers' payout share", PAYOUT_SHARE),
    "attacker_reputation": ("attackers' final reputation (mean)", THRESHOLD_WAD / WAD),
}


def _metric(o: Outcome, metric: str) -> float:
    if metric == "attacker_reputation":
        return statistics.fmean(h[-1] for h in o.attacker_reputation) if o.attacker_reputation else 0.0
    return float(getattr(o, metric))


def plot(outcomes: list[Outcome], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for split in dict.fromkeys(o.split for o in outcomes):
        rows = [o for o in outcomes if o.split == split]
        rules = list(dict.fromkeys(o.rule for o in rows))
        for metric, (label, line) in PLOTS.items():
            attacks = list(dict.fromkeys(o.attack or "none" for o in rows if o.attack or metric == "final_accuracy"))
            fig, ax = plt.subplots(figsize=(max(6, len(attacks) * 0.9) + 1.5, 4))
            width = 0.8 / max(1, len(rules))
            for i, rule in enumerate(rules):
                values = [next((_metric(o, metric) for o in rows if o.rule == rule and (o.attack or "none") == a), 0.0) for a in attacks]
                ax.bar([x + i * width for x in range(len(attacks))], values, width, label=rule)
            if line is not None:
                ax.axhline(line, color="black", linestyle="--", linewidth=1, label="target" if metric != "attacker_reputation" else "threshold")
            ax.set_xticks([x + width * (len(rules) - 1) / 2 for x in range(len(attacks))])
            ax.set_xticklabels(attacks, rotation=30, ha="right", fontsize="small")
            ax.set(ylabel=label, title=f"{label} ({split})")
            ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
            fig.tight_layout()
            path = out_dir / f"{metric}-{split}.png"
            fig.savefig(path, dpi=90, metadata={"Software": None})
            plt.close(fig)
            written.append(path)
    return written


def write_report(outcomes: list[Outcome], config: dict[str, Any], out: Path) -> Path:
    assess(outcomes)
    data_dir = out / "robustness"
    data_dir.mkdir(parents=True, exist_ok=True)
    results = {"config": config, "runs": [o.to_json() for o in outcomes]}
    (data_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plots = plot(outcomes, data_dir)
    page = out / "robustness.md"
    page.write_text(markdown(outcomes, config, plots))
    return page
