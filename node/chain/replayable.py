"""An in-process chain whose blocks depend on their transactions alone.

Stock eth-tester stamps each block with the wall clock and a random mix hash
(prevrandao), so two runs of the same calls meet different block hashes, and
with them different committee draws and proposers. Here the genesis lies in
the future (2096), so every block is its parent's timestamp + 1 (py-evm takes
the later of that and the wall clock) unless a caller travels in time, and the
mix hash is derived from the parent's hash. A simulation is then a function of
its seed: the same calls give the same chain, byte for byte.

Imported only by the embedded chain: py-evm takes a quarter of a second to load.
"""

from __future__ import annotations

from typing import Any

from eth_tester import PyEVMBackend
from eth_utils import keccak

GENESIS_TIMESTAMP = 4_000_000_000  # 2096-10-02: later than any wall clock this code will meet


class ReplayableBackend(PyEVMBackend):
    def __init__(self, genesis_parameters: Any = None, **kwargs: Any) -> None:
        params = PyEVMBackend.generate_genesis_params(overrides={"timestamp": GENESIS_TIMESTAMP, **(genesis_parameters or {})})
        super().__init__(genesis_parameters=params, **kwargs)

    def mine_blocks(self, num_blocks: int = 1, coinbase: bytes = b"\x00" * 20) -> tuple[bytes, ...]:
        hashes = []
        for _ in range(num_blocks):
            parent = self.chain.get_canonical_head()
            kwargs: dict[str, Any] = {"coinbase": coinbase, "mix_hash": keccak(b"mix" + parent.hash)}
            pending = self.chain.get_block()
            if pending.transactions and hasattr(pending.header, "blob_gas_used"):
                kwargs["blob_gas_used"] = 0  # no blob transactions are ever sent here
            hashes.append(self.chain.mine_block(**kwargs).hash)
        return tuple(hashes)
