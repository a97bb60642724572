"""The registry of aggregation rules, by the name used on chain and on the CLI.

`apply_rule` is how a round runs a rule: it checks that the options fit the
rule, clips the updates when `clip` is set, then calls the rule.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from aggregation import fedavg, krum, median, trimmed_mean
from aggregation.abc import FixedUpdate, Rule, RuleOptions
from aggregation.clip import clip_update
from aggregation.errors import AggregationError, UnknownRuleError

RULES: Mapping[str, Rule] = {
    "fedavg": fedavg.aggregate,
    "median": median.aggregate,
    "trimmed-mean": trimmed_mean.aggregate,
    "multi-krum": krum.aggregate,
}

# Per rule: (options it requires, options it also accepts). `clip` applies to
# every rule. An option a rule would ignore is an error, not a silent no-op:
# `--max-samples` on median would suggest a weighting that does not happen.
OPTIONS: Mapping[str, tuple[frozenset[str], frozenset[str]]] = {
    "fedavg": (frozenset(), frozenset({"max_samples", "clip"})),
    "median": (frozenset(), frozenset({"clip"})),
    "trimmed-mean": (frozenset({"trim"}), frozenset({"clip"})),
    "multi-krum": (frozenset({"f", "m"}), frozenset({"max_samples", "clip"})),
}


def get_rule(name: str) -> Rule:
    """The rule registered as `name`; UnknownRuleError if there is none."""
    try:
        return RULES[name]
    except KeyError:
        raise UnknownRuleError(f"unknown aggregation rule {name!r}; known: {', '.join(sorted(RULES))}") from None


def check_options(name: str, options: RuleOptions) -> None:
    """Raise AggregationError unless `options` gives what rule `name` needs and nothing it ignores."""
    get_rule(name)
    required, optional = OPTIONS[name]
    given = options.given()
    missing = sorted(required - given)
    if missing:
        raise AggregationError(f"rule {name!r} needs {' and '.join(missing)}")
    extra = sorted(given - required - optional)
    if extra:
        raise AggregationError(f"rule {name!r} does not take {' or '.join(extra)}")


def apply_rule(
    name: str, updates: Sequence[FixedUpdate], options: RuleOptions
) -> dict[str, NDArray[np.int64]]:
    """Run rule `name` on the updates (canonical order), clipping them first when `options.clip` is set."""
    rule = get_rule(name)
    check_options(name, options)
    if options.clip is not None:
        updates = [clip_update(u, options.clip) for u in updates]
    return rule(updates, options)
