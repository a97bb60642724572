"""Why a run of the robustness experiment misses a target: the mechanism, in the report's words.

`explain` names, for one attacked run and one missed target, the mechanism behind it (the
attackers captured the aggregate, identical updates score 0, an EMA that cannot fall fast
enough...) with the grid's numbers that back it; `split_note` says what a rule does under a
split as a whole (label skew, a rule that learns less than FedAvg). Text only: the numbers come
from `Outcome`s (node/sim/robustness.py).
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

from aggregation.scores import REPLAY_COSINE
from incentives.reputation import INITIAL_REPUTATION, ema
from node.sim.attacks import SYBIL
from node.sim.robustness import (
    ACCURACY_MARGIN,
    ALPHA_WAD,
    EXCLUSION_ROUNDS,
    SPLITS,
    THRESHOLD_WAD,
    Outcome,
    experiment_trim,
)
from node.sim.robustness_grid import (
    Grid,
    attacker_mean_scores,
    is_honest_mean,
    join_words,
    mean,
    pct,
    seat_count,
    seated_rounds,
    seq,
    spans,
)
from node.units import WAD


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
    attacker_score = mean(attacker_mean_scores(o))
    honest_score = mean(o.honest_mean_score)
    captured = attacker_score > honest_score
    seated = seated_rounds(o)
    norm = mean(o.published.get("norm_ratio", []))
    among_values = [x for x in o.published.get("cos_among_attackers", []) if x is not None]
    among = statistics.fmean(among_values) if among_values else None
    agree = f" agree with each other (mean pairwise cosine {among:.2f})" if among is not None and among > 0.3 else ""
    cos = [x for x in o.published.get("cos_to_honest_mean", []) if x is not None]
    cut = int((experiment_trim("trimmed-mean", nodes, malicious) or 0.0) * nodes)
    iid = split == "iid"

    if attack == "little-is-enough":
        shifts = [x for x in o.published.get("shift_std", []) if x is not None]
        z = mean(shifts)
        if target == "accuracy":
            return (
                f"The colluders publish their own mean shifted by Baruch et al.'s z for {malicious} colluders among {nodes}, "
                f"{z:.2f} honest standard deviations per coordinate on average: small enough to stay inside the honest "
                f"spread, so {rule} keeps it among the values it aggregates while they hold seats "
                f"({spans(seated)}), and those steps are bent towards it."
            )
        return (
            f"The colluders publish one vector, their own mean shifted by {z:.2f} honest standard deviations per "
            f"coordinate. Identical updates in one round score 0, so they score {attacker_score:.2f} on average and "
            f"{_ema_sentence(attacker_score)}."
        )

    if attack == "free-rider-perturbed" and target in ("payout", "exclusion"):
        later = [x for s in o.attacker_scores for x in s[1:] if x is not None]
        if later and max(later) == 0:
            return (
                f"The perturbed free-riders train honestly in round 1 and are paid for it like honest nodes; from round 2 "
                f"they resend their previous update plus a little noise. It is not bit-identical to anything, but its cosine "
                f"with what it replays (about 0.995) is over the replay check's {REPLAY_COSINE[0] / REPLAY_COSINE[1]:g}, so it scores 0 "
                f"like an exact replay (scores "
                f"per attacker: {'; '.join(seq(x) for x in o.attacker_scores)}). Their {pct(o.attacker_payout_share)} is, "
                f"nearly all, round 1's honest work."
            )
        return (
            f"From round 2 the perturbed free-riders resend their previous update plus a little noise, which no "
            f"bit-exact replay check matches. An old update still points roughly where the honest ones go (cosine with "
            f"their mean {seq(o.published.get('cos_to_honest_mean', []))}), so relative to the round's median cosine it "
            f"scores {mean(later):.2f} on average from round 2 (honest nodes: {honest_score:.2f}), and "
            f"{_ema_sentence(mean(later))}."
        )

    if attack == "free-rider-stale" and target == "payout":
        return (
            f"The stale free-riders train honestly in round 1 and are paid for it like honest nodes; from round 2 "
            f"they resend that update, a replay of the previous round that scores 0 (scores per attacker: "
            f"{'; '.join(seq(x) for x in o.attacker_scores)}). Their {pct(o.attacker_payout_share)} is, nearly all, "
            f"round 1's honest work: {malicious} of {nodes} nodes' part of the first round's {1 / len(o.accuracy_per_round):.0%} of the pool."
        )

    if attack == "gaussian" and target in ("exclusion", "payout") and iid:
        krum = grid.find(split, "multi-krum", "gaussian")
        text = (
            f"The noise is uncorrelated with the honest updates (cosine with their mean {mean(cos):.2f}) but it is an input "
            f"of the aggregate, so it is credited for its own share of it: it scores {attacker_score:.2f} on average, and "
            f"{_ema_sentence(attacker_score)}."
        )
        krum_score = mean(attacker_mean_scores(krum)) if krum else None
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
            f"{attacker_score:.2f}, the plain label-flippers {mean(attacker_mean_scores(lf)):.2f}."
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
        stall = f"while they hold seats ({spans(seated)})" if len(seated) < len(o.accuracy_per_round) else "in every round"
        b = grid.base(o).accuracy_per_round
        steep = (
            f" Accuracy is still climbing at the end (honest-only: {seq(b[-3:], '{:.3f}')}), so a slower start "
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
        if attack in ("sign-flip", SYBIL):  # a sybil flips signs too
            how = {
                "fedavg": f"{malicious} negated updates cancel about as many honest ones, so the step is roughly "
                f"{nodes - 2 * malicious}/{nodes} of the honest one",
                "median": f"{malicious} of {nodes} values on the far side of every coordinate move its median "
                "from the middle of the honest values toward their far end, shrinking the step",
                "trimmed-mean": f"cutting {cut} values per end leaves at least one of the {malicious} flipped values in "
                "every coordinate and cuts honest ones from the other end, shrinking the step",
            }.get(rule)
            if not how:
                return None
            return f"{how[0].upper() + how[1:]} {stall}." + steep + (_comeback(o, grid) if attack == SYBIL else "")
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
        if attack in ("sign-flip", SYBIL):  # a sybil flips signs too
            k = _late(o)
            own = o.attacker_own_cos[k] if o.attacker_own_cos else []
            return (
                f"Attacker {k + 1} trains on classes the other nodes hold little of: the update it trained had cosine "
                f"{seq(own)} with the honest mean, so the negation it publishes has {seq([None if x is None else -x + 0.0 for x in own])} "
                f"and scores {seq(o.attacker_scores[k])} against the aggregate (honest nodes: {seq(o.honest_mean_score)}). "
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
        held = join_words([f"{share:.0%} of the {c}s" for c, share in per_class if share >= 0.25] or [f"{per_class[0][1]:.0%} of the {per_class[0][0]}s"])
        text = (
            f"Under this split the {malicious} attackers hold {overall:.0%} of the training examples but {held}, "
            f"which the honest nodes have few of."
        )
        if attack == SYBIL:
            text += " The negation of that data is what they publish." + _comeback(o, grid)
        elif o.targets and o.targets["exclusion"]:
            text += (
                f" Once they are caught (their last seat: round {seated[-1]}) only the {nodes - malicious} honest nodes "
                "train, and that data is gone with them."
            )
            zero = grid.find(split, rule, "free-rider-zero")
            base = grid.base(o)
            if attack != "free-rider-zero" and zero and zero.final_accuracy < base.final_accuracy - ACCURACY_MARGIN:
                text += (
                    f" The zero free-riders, who teach nothing and are caught as fast, end at {zero.final_accuracy:.3f}: "
                    "most of the gap is the attackers' data missing, not their updates."
                )
            elif attack in ("free-rider-stale", "free-rider-perturbed") and zero:
                text += (
                    f" But the zero free-riders, with the same data, end at {zero.final_accuracy:.3f}: "
                    f"most of this gap is the replays themselves, updates trained on an older model that the {rule} "
                    f"keeps among its inputs while they hold seats ({spans(seated)})."
                )
        else:
            text += f" Not all of them are caught in time (see below), so their updates stay inputs of the {rule}."
        return text
    return None


def _comeback(o: Outcome, grid: Grid) -> str:
    """A sybil's comebacks against the sign-flip run (the same attackers, who stay out once
    excluded): the fresh identities are scored, not aggregated, until they earn influence."""
    flip = grid.find(o.split, o.rule, "sign-flip")
    if flip is None:
        return ""
    base = grid.base(o)
    return (
        f" Negated updates fill {seat_count(o)} seats over the {len(o.accuracy_per_round)} rounds ({spans(seated_rounds(o))}) "
        f"against {seat_count(flip)} under sign-flip, but a fresh identity is scored, not aggregated, until it scores "
        "above 0 (reputation before influence), which a negated update does not: the comebacks do not move the "
        f"model, and the sign-flip run of this cell ends at {flip.final_accuracy:.3f} "
        f"({(flip.final_accuracy - base.final_accuracy) * 100:+.1f} points)."
    )


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


def shard_classes(split: str, config: dict[str, Any]) -> list[tuple[int, float]]:
    """Per node's shard of `split`, in node order: how many classes it holds, and the share of its
    largest class."""
    from node.training import load_digits_split, partition

    train, _ = load_digits_split(seed=config["seed"])  # as simulate deals it
    labels = np.asarray(train.y)
    out = []
    for s in partition(train, config["nodes"], SPLITS[split], config["seed"]):
        counts = np.bincount(labels[s])
        out.append((int(np.count_nonzero(counts)), float(counts.max() / len(s))))
    return out


def split_note(rule: str, split: str, grid: Grid, targeted: bool = True) -> str | None:
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
            "disagree with the aggregate almost as much as many attacks do, so a cosine reputation separates them poorly."
            + (" Misses below without a reason of their own have this one." if targeted else "")
        )
    fedavg = grid.find(split, "fedavg", None)
    iid_rule, iid_fedavg = grid.find("iid", rule, None), grid.find("iid", "fedavg", None)
    if rule != "fedavg" and fedavg is not None and base.final_accuracy < fedavg.final_accuracy - 0.1:
        # Runs that gain accuracy from attacks that add nothing (the honest mean republished is left out: it may help).
        above = [o for o in attacked if o.final_accuracy > base.final_accuracy + ACCURACY_MARGIN and not is_honest_mean(o)]
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
