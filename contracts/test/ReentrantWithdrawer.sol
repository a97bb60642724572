// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title ReentrantWithdrawer (TEST ONLY, never deploy outside tests)
/// @notice A hostile reward recipient for FedLedger tests. In `Reenter` mode its receive()
/// calls `withdraw()` again to try to drain the ledger; in `Reject` mode it refuses all ether,
/// to show that one bad recipient cannot block anybody else's withdrawal.
/// @dev Talks to the ledger through low-level calls so that it compiles without importing
/// FedLedger.sol (each artifact's sourceHash then covers exactly one file).
contract ReentrantWithdrawer {
    /// @notice How receive() behaves.
    enum Mode {
        Reenter,
        Reject
    }

    address private immutable _ledger;
    Mode private _mode;
    uint256 private _reentryAttempts;
    uint256 private _reentrySuccesses;
    bytes private _lastReentryRevert;
    bytes private _target;

    /// @notice Thrown by receive() in `Reject` mode.
    error ReentrantWithdrawerRejected();

    /// @notice Creates the attacker aimed at `ledger`.
    /// @param ledger The FedLedger to attack.
    constructor(address ledger) {
        _ledger = ledger;
    }

    /// @notice Chooses how receive() behaves.
    /// @param mode 0 = re-enter withdraw, 1 = reject ether.
    function setMode(Mode mode) external {
        _mode = mode;
    }

    /// @notice Calls the ledger as this contract (e.g. to create a task so it earns rewards).
    /// @param data ABI-encoded ledger call.
    /// @return result The ledger's return data.
    function forward(bytes calldata data) external payable returns (bytes memory result) {
        bool ok;
        (ok, result) = _ledger.call{value: msg.value}(data);
        if (!ok) _bubble(result);
    }

    /// @notice Makes several ledger calls in one transaction (tests of same-block rules).
    /// @param calls ABI-encoded ledger calls, made in order; the first failure reverts them all.
    function batch(bytes[] calldata calls) external payable {
        for (uint256 i = 0; i < calls.length; ++i) {
            (bool ok, bytes memory result) = _ledger.call{value: i == 0 ? msg.value : 0}(calls[i]);
            if (!ok) _bubble(result);
        }
    }

    /// @notice Starts the attack: withdraws rewards (or, with `stake`, the stake) from the ledger,
    /// re-entering the same function from receive().
    /// @param stake Whether to attack `withdrawStake` instead of `withdraw`.
    function attack(bool stake) external {
        _target = stake ? abi.encodeWithSignature("withdrawStake()") : abi.encodeWithSignature("withdraw()");
        (bool ok, bytes memory result) = _ledger.call(_target);
        if (!ok) _bubble(result);
    }

    /// @notice Returns what the re-entrant calls achieved.
    /// @return attempts How many times receive() tried to re-enter.
    /// @return successes How many re-entrant withdrawals succeeded (must stay 0).
    /// @return lastRevert Revert data of the last failed re-entrant call.
    function reentryStats() external view returns (uint256 attempts, uint256 successes, bytes memory lastRevert) {
        return (_reentryAttempts, _reentrySuccesses, _lastReentryRevert);
    }

    /// @notice Receives ether; re-enters or rejects depending on the mode.
    receive() external payable {
        if (_mode == Mode.Reject) revert ReentrantWithdrawerRejected();
        if (_reentryAttempts > 0) return; // one attempt is enough; avoids recursion until out of gas
        _reentryAttempts += 1;
        (bool ok, bytes memory result) = _ledger.call(_target);
        if (ok) {
            _reentrySuccesses += 1;
        } else {
            _lastReentryRevert = result;
        }
    }

    /// @dev Re-throws the ledger's revert data unchanged, so tests see the ledger's own custom error.
    function _bubble(bytes memory revertData) private pure {
        assembly ("memory-safe") {
            revert(add(revertData, 32), mload(revertData))
        }
    }
}
