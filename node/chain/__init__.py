"""Everything the node says to an Ethereum chain goes through this package.

Names are loaded on first use (PEP 562): eth-account alone costs half a second to import, and
the read-only commands (`status`, `reputation`, `task list`) must not pay for it.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "DEV_MNEMONIC": "node.chain.accounts",
    "dev_account": "node.chain.accounts",
    "ChainLog": "node.chain.types",
    "ContractRevert": "node.chain.types",
    "FedLedgerClient": "node.chain.client",
    "MemberInfo": "node.chain.types",
    "Phase": "node.chain.types",
    "RoundState": "node.chain.types",
    "RoundUpdate": "node.chain.types",
    "TaskInfo": "node.chain.types",
    "deploy_fedledger": "node.chain.client",
    "make_commitment": "node.chain.types",
    "proposal_hash": "node.chain.types",
    "Deployment": "node.chain.deployment",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'node.chain' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
