"""Ways to reach a chain: the embedded EVM in this process, or JSON-RPC."""

from __future__ import annotations

import requests
from web3 import Web3

from node.chain.deployment import Deployment
from node.errors import ChainError, ConfigError


def embedded_web3(num_accounts: int = 10) -> Web3:
    """A fresh in-process chain (py-evm), its first `num_accounts` dev accounts funded.

    Replayable (node/chain/replayable.py): block hashes, and so committee draws and proposers,
    are the same in every run of the same calls."""
    # Imported here: py-evm takes a quarter of a second to load, and RPC commands never use it.
    from eth_tester import EthereumTester
    from web3.providers.eth_tester import EthereumTesterProvider

    from node.chain.accounts import DEV_HD_PATH, DEV_MNEMONIC
    from node.chain.replayable import ReplayableBackend

    backend = ReplayableBackend.from_mnemonic(DEV_MNEMONIC, num_accounts=num_accounts, hd_path=DEV_HD_PATH)
    return Web3(EthereumTesterProvider(EthereumTester(backend)))


def rpc_web3(url: str, timeout: float = 30.0) -> Web3:
    """A JSON-RPC chain at `url`; raises ChainError naming the URL when it does not answer.

    web3's own retries are off: a request that times out fails after `timeout`, once, and the
    caller's backoff (the daemon's, which logs each failure) decides what next. With them on, a
    node cut off from its chain stayed silent for minutes (5 retries of 30 s per call)."""
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": timeout}, exception_retry_configuration=None))
    try:
        w3.eth.chain_id
    except (requests.RequestException, OSError, ValueError) as exc:
        raise ChainError(f"cannot reach the chain at {url}: {type(exc).__name__}") from None
    return w3


def deployed_contract(rpc: str, deployment: Deployment, deployment_path: object) -> tuple[Web3, str]:
    """web3 on `rpc` and the deployment's FedLedger address, once the chain has answered as the
    deployment's chain and holds code at that address; one-line ChainError/ConfigError otherwise."""
    w3 = rpc_web3(rpc)  # ChainError naming the URL when nothing answers
    chain_id = int(w3.eth.chain_id)
    if chain_id != deployment.chain_id:
        raise ConfigError(f"{rpc} is chain {chain_id}, the deployment {deployment_path} is on {deployment.chain_id}")
    address = deployment.contracts["FedLedger"]
    if not w3.eth.get_code(address):
        raise ChainError(
            f"no FedLedger contract at {address} on {rpc}: was the chain restarted since {deployment_path} was written?"
        )
    return w3, address
