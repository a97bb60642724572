"""Everything the node says to an Ethereum chain goes through this package."""

from node.chain.accounts import DEV_MNEMONIC, dev_account
from node.chain.client import FedLedgerClient, RoundUpdate, TaskInfo, deploy_fedledger
from node.chain.deployment import Deployment

__all__ = [
    "DEV_MNEMONIC",
    "Deployment",
    "FedLedgerClient",
    "RoundUpdate",
    "TaskInfo",
    "deploy_fedledger",
    "dev_account",
]
