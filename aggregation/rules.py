"""The registry of aggregation rules, by the name used on chain and on the CLI."""

from __future__ import annotations

from typing import Mapping

from aggregation import fedavg
from aggregation.abc import Rule
from aggregation.errors import UnknownRuleError

RULES: Mapping[str, Rule] = {
    "fedavg": fedavg.aggregate,
}


def get_rule(name: str) -> Rule:
    """The rule registered as `name`; UnknownRuleError if there is none."""
    try:
        return RULES[name]
    except KeyError:
        raise UnknownRuleError(f"unknown aggregation rule {name!r}; known: {', '.join(sorted(RULES))}") from None
