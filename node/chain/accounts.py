"""Development accounts: the well-known mnemonic that anvil (and Hardhat) fund.

The embedded chain is seeded from the same mnemonic, so `--dev-account N` names
the same address on both chains.
"""

from __future__ import annotations

from functools import lru_cache

from eth_account import Account
from eth_account.signers.local import LocalAccount

DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEV_HD_PATH = "m/44'/60'/0'/0"
# The chain id anvil uses; `--dev-account` is refused on any other chain so
# that a development key can never sign on a real network.
TESTNET_CHAIN_ID = 31337

Account.enable_unaudited_hdwallet_features()


@lru_cache(maxsize=None)
def dev_account(index: int) -> LocalAccount:
    """Account `index` of the development mnemonic."""
    if index < 0:
        raise ValueError(f"dev account index must be >= 0, got {index}")
    return Account.from_mnemonic(DEV_MNEMONIC, account_path=f"{DEV_HD_PATH}/{index}")
