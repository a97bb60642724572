"""Everything the node says to an Ethereum chain goes through this package."""

from node.chain.accounts import DEV_MNEMONIC, dev_account
from node.chain.client import (
    ChainLog,
    ContractRevert,
    FedLedgerClient,
    MemberInfo,
    Phase,
    RoundState,
    RoundUpdate,
    TaskInfo,
    deploy_fedledger,
    make_commitment,
    proposal_hash,
)
from node.chain.deployment import Deployment

__all__ = [
    "DEV_MNEMONIC",
    "ChainLog",
    "ContractRevert",
    "Deployment",
    "FedLedgerClient",
    "MemberInfo",
    "Phase",
    "RoundState",
    "RoundUpdate",
    "TaskInfo",
    "deploy_fedledger",
    "make_commitment",
    "proposal_hash",
    "dev_account",
]
