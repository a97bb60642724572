"""Contract view calls on the embedded chain, executed on py-evm directly.

Through web3 and eth-tester, every `eth_call` passes a stack of middleware and
request normalizers, and eth-tester builds a fresh VM for it whose state caches
start cold: ~6 ms a call, more than half of a simulated round's chain time.
`EmbeddedCaller` keeps one VM per head block (any transaction mines a new head,
which invalidates it) and applies each call to that VM's state and reverts it,
which is what eth-tester does, minus the rebuilding. Results are decoded and
normalized as web3 returns them (checksummed addresses), and a revert raises
web3's `ContractLogicError` carrying the revert data, so callers cannot tell the
difference except by the clock.
"""

from __future__ import annotations

import copy
from typing import Any

from eth.vm.spoof import SpoofTransaction
from eth_utils import to_canonical_address
from web3 import Web3
from web3.exceptions import ContractLogicError

from node.chain.views import _abi_type, decode_outputs


class EmbeddedCaller:
    """`call(fn, sender, value, pending)` for a web3 ContractFunction on an EthereumTesterProvider
    chain, with `gas` as the gas limit (what the caller's transactions use)."""

    def __init__(self, w3: Web3, gas: int) -> None:
        tester = w3.provider.ethereum_tester  # type: ignore[union-attr]
        self._backend = tester.backend
        # Views need a sender that can afford the gas limit (py-evm checks), as web3's default
        # account is for eth-tester's own calls; nothing is charged, the call is reverted.
        self._default_sender = to_canonical_address(tester.get_accounts()[0])
        self._gas = gas
        self._vms: dict[tuple[bytes, bool], Any] = {}
        # Results on the current head: until a transaction mines a new one, the same view with
        # the same arguments returns the same thing (a simulation's nodes ask many times).
        self._results: dict[tuple[Any, ...], Any] = {}
        self._results_head: tuple[bytes, bool] | None = None

    def _vm(self, pending: bool) -> Any:
        chain = self._backend.chain
        head = chain.get_canonical_head()
        key = (head.hash, pending)
        vm = self._vms.get(key)
        if vm is None:
            # "pending" is the block being built on the head (eth-tester mines every transaction
            # at once, so it holds none): its number and timestamp, the head's state.
            vm = chain.get_vm() if pending else chain.get_vm(at_header=head)
            self._vms = {key: vm}  # only the newest head is ever asked for again
        return vm

    def call(self, fn: Any, sender: str | None = None, value: int = 0, pending: bool = False) -> Any:
        vm = self._vm(pending)
        head = next(iter(self._vms))
        if head != self._results_head:
            self._results, self._results_head = {}, head
        key = (fn.address, fn._encode_transaction_data(), sender, value)
        if key not in self._results:
            try:
                self._results[key] = (True, self._run(vm, "pending" if pending else "latest", fn, sender, value))
            except ContractLogicError as exc:
                self._results[key] = (False, exc)
        ok, result = self._results[key]
        if not ok:
            raise result
        return copy.deepcopy(result)

    def replay(self, fn: Any, sender: str, value: int, block: int) -> Any:
        """`fn` as the first transaction of mined block `block`: its parent's state, its own number
        and timestamp. eth-tester mines one transaction per block, so this re-runs a mined
        transaction exactly, to recover the revert data its receipt does not carry."""
        chain = self._backend.chain
        header = chain.get_canonical_block_header_by_number(block)
        parent = chain.get_block_header_by_hash(header.parent_hash)
        vm = chain.get_vm(at_header=header.copy(state_root=parent.state_root))
        return self._run(vm, block - 1, fn, sender, value)  # the sender's nonce as of the parent

    def _run(self, vm: Any, nonce_at: str | int, fn: Any, sender: str | None, value: int) -> Any:
        backend = self._backend
        tx = {
            "to": to_canonical_address(fn.address),
            "from": to_canonical_address(sender) if sender else self._default_sender,
            "data": bytes.fromhex(fn._encode_transaction_data()[2:]),
            "value": value,
            "gas": self._gas,
        }
        unsigned = backend._get_normalized_and_unsigned_evm_transaction(tx, nonce_at)
        state = vm.state
        snapshot = state.snapshot()
        try:
            computation = state.apply_transaction(SpoofTransaction(unsigned, from_=tx["from"]))
        finally:
            state.revert(snapshot)
        if computation.is_error:
            raise ContractLogicError(f"execution reverted: {computation.error!r}", data="0x" + computation.output.hex())
        return decode_outputs([_abi_type(o) for o in fn.abi["outputs"]], computation.output)
