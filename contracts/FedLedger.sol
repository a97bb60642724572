// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title FedLedger: task registry, update log, reputation and rewards of a federated-learning run
/// @notice Nodes register with a stake and their libp2p addresses, task owners deposit a reward
/// pool, committee members log the IPFS CID of each update, and each finalized round records the
/// new global model, moves every participant's reputation towards its contribution score and
/// credits rewards that the recipients withdraw themselves (pull payments).
/// @dev Walking-skeleton cut of SPEC section 4. `finalizeRound` is guarded by the task owner only;
/// committee selection, commit-reveal and attestation will replace that guard (`_authorizeFinalize`)
/// and the open submission list (`_authorizeSubmission`) without changing the reward arithmetic in
/// `_settleRound`. Reputation follows RFFL (Xu & Lyu): an exponential moving average of per-round
/// contribution scores. Every loop runs over one round's submissions (at most `committeeSize`),
/// never over registered nodes, so gas per round does not grow with the federation.
/// Invariant: address(this).balance == sum(stakes) + sum(rewardRemaining) + sum(pendingRewards).
contract FedLedger {
    // ---------------------------------------------------------------- constants

    /// @notice Fixed-point unit: 1e18 represents 1.0.
    uint256 public constant WAD = 1e18;
    /// @notice Reputation of a freshly registered node (0.5).
    uint256 public constant INITIAL_REPUTATION = 0.5e18;
    /// @notice Weight of the newest score in the reputation moving average (0.3).
    uint256 public constant REPUTATION_ALPHA = 0.3e18;
    /// @notice Nodes whose reputation is below this (0.2) earn nothing.
    uint256 public constant REPUTATION_THRESHOLD = 0.2e18;

    // ---------------------------------------------------------------- storage

    struct Node {
        bool registered;
        uint256 stake;
        uint256 reputation; // WAD, in [0, WAD]
        string peerId;
        string[] multiaddrs;
    }

    struct Task {
        address owner;
        uint32 rounds;
        uint32 committeeSize;
        uint8 rule;
        uint64 maxSamples;
        uint32 currentRound; // starts at 1; rounds + 1 once the task is finished
        uint256 rewardRemaining; // wei still owed by this task's pool
        bytes initialModelCid;
        bytes specCid;
        bytes globalCid; // latest finalized global model; empty before round 1 is finalized
    }

    struct Submission {
        address sender;
        uint256 numSamples;
        bytes cid;
    }

    uint256 private immutable _minStake;
    uint256 private _taskCount;
    mapping(address node => Node) private _nodes;
    mapping(uint256 taskId => Task) private _tasks;
    mapping(uint256 taskId => mapping(uint256 round => Submission[])) private _submissions;
    mapping(uint256 taskId => mapping(uint256 round => mapping(address node => bool))) private _submitted;
    mapping(address account => uint256) private _pending;

    // ---------------------------------------------------------------- events

    /// @notice Emitted when a node joins; peers discover each other from these fields.
    /// @param node The node's account.
    /// @param stake The stake deposited, in wei.
    /// @param peerId The node's libp2p peer ID.
    /// @param multiaddrs The node's libp2p listen multiaddrs.
    event NodeRegistered(address indexed node, uint256 stake, string peerId, string[] multiaddrs);

    /// @notice Emitted when a task is created and its reward pool deposited.
    /// @dev `rule` and `maxSamples` are left to `taskInfo` (and the spec CID): one more non-indexed
    /// field puts `createTask` over the EVM stack limit without via-IR.
    /// @param taskId The new task's id.
    /// @param owner The account that created the task.
    /// @param rounds Number of rounds.
    /// @param committeeSize Maximum number of updates per round.
    /// @param rewardPool The deposited pool, in wei.
    /// @param modelCid CID of the initial model.
    /// @param specCid CID of the task spec JSON.
    event TaskCreated(
        uint256 indexed taskId,
        address indexed owner,
        uint32 rounds,
        uint32 committeeSize,
        uint256 rewardPool,
        bytes modelCid,
        bytes specCid
    );

    /// @notice Emitted when a node logs its update for a round.
    /// @param taskId The task.
    /// @param round The round the update belongs to.
    /// @param node The submitting node.
    /// @param index Position in the round's canonical (submission) order.
    /// @param cid CID of the update.
    /// @param numSamples Number of training samples the node claims.
    event UpdateSubmitted(
        uint256 indexed taskId, uint256 indexed round, address indexed node, uint256 index, bytes cid, uint256 numSamples
    );

    /// @notice Emitted when a round is finalized and its global model recorded.
    /// @param taskId The task.
    /// @param round The finalized round.
    /// @param cid CID of the new global model.
    event RoundFinalized(uint256 indexed taskId, uint256 indexed round, bytes cid);

    /// @notice Emitted when a node's reputation changes.
    /// @param node The node.
    /// @param oldRep Reputation before, WAD.
    /// @param newRep Reputation after, WAD.
    event ReputationUpdated(address indexed node, uint256 oldRep, uint256 newRep);

    /// @notice Emitted when wei is credited to an account's withdrawable balance.
    /// @param account The credited account.
    /// @param taskId The task whose pool pays.
    /// @param round The round the credit is for.
    /// @param amount Credited wei.
    event RewardCredited(address indexed account, uint256 indexed taskId, uint256 round, uint256 amount);

    /// @notice Emitted when an account withdraws its pending rewards.
    /// @param account The account paid.
    /// @param amount Paid wei.
    event Withdrawn(address indexed account, uint256 amount);

    // ---------------------------------------------------------------- errors

    /// @notice Thrown when `register` is sent less than the minimum stake.
    /// @param sent The wei sent.
    /// @param required The minimum stake.
    error FedLedgerInsufficientStake(uint256 sent, uint256 required);
    /// @notice Thrown when an already registered node registers again.
    /// @param node The node.
    error FedLedgerAlreadyRegistered(address node);
    /// @notice Thrown when an unregistered account acts as a node.
    /// @param node The caller.
    error FedLedgerNotRegistered(address node);
    /// @notice Thrown when a task id was never created.
    /// @param taskId The unknown id.
    error FedLedgerUnknownTask(uint256 taskId);
    /// @notice Thrown when a call names a round other than the task's open round.
    /// @param taskId The task.
    /// @param expected The open round.
    /// @param got The round named by the caller.
    error FedLedgerWrongRound(uint256 taskId, uint256 expected, uint256 got);
    /// @notice Thrown when a node submits a second update for the same round.
    /// @param node The node.
    /// @param round The round.
    error FedLedgerDuplicateSubmission(address node, uint256 round);
    /// @notice Thrown when a round already holds `committeeSize` updates.
    /// @param taskId The task.
    /// @param round The round.
    error FedLedgerRoundFull(uint256 taskId, uint256 round);
    /// @notice Thrown when someone other than the task owner finalizes a round.
    /// @param caller The caller.
    /// @param owner The task owner.
    error FedLedgerNotTaskOwner(address caller, address owner);
    /// @notice Thrown when acting on a task whose last round is already finalized.
    /// @param taskId The task.
    error FedLedgerTaskFinished(uint256 taskId);
    /// @notice Thrown when `finalizeRound` gets a score count different from the update count.
    /// @param expected Number of updates in the round.
    /// @param got Number of scores given.
    error FedLedgerScoresLength(uint256 expected, uint256 got);
    /// @notice Thrown when a contribution score exceeds WAD (1.0).
    /// @param index Position of the score.
    /// @param score The score.
    error FedLedgerScoreOutOfRange(uint256 index, uint256 score);
    /// @notice Thrown when `withdraw` is called with no pending rewards.
    /// @param account The caller.
    error FedLedgerNothingToWithdraw(address account);
    /// @notice Thrown when the recipient of a withdrawal rejects the ether.
    /// @param account The recipient.
    error FedLedgerTransferFailed(address account);
    /// @notice Thrown when `createTask` gets a zero reward pool, rounds outside 1..2^32-2, or a zero committee size.
    /// @dev Carries the values rather than a reason string: eth-tester's web3 provider decodes any
    /// revert with a string-shaped payload as `Error(string)` and drops the selector.
    /// @param rewardPool The wei sent.
    /// @param rounds The rounds asked for.
    /// @param committeeSize The committee size asked for.
    error FedLedgerInvalidTask(uint256 rewardPool, uint32 rounds, uint32 committeeSize);
    /// @notice Thrown when a CID argument is empty.
    error FedLedgerEmptyCid();
    /// @notice Thrown when an update claims zero training samples.
    error FedLedgerZeroSamples();

    // ---------------------------------------------------------------- constructor

    /// @notice Deploys the ledger.
    /// @dev The parameter keeps the ABI name `minStake` that clients pass by keyword; solc warns
    /// that it shadows the `minStake()` view, which is harmless inside a constructor.
    /// @param minStake Minimum wei a node must stake to register.
    constructor(uint256 minStake) {
        _minStake = minStake;
    }

    // ---------------------------------------------------------------- nodes

    /// @notice Registers the caller as a node, staking `msg.value`.
    /// @dev The stake is held for the slashing of later protocol phases; this cut never releases it.
    /// @param peerId The caller's libp2p peer ID.
    /// @param multiaddrs The caller's libp2p listen multiaddrs.
    function register(string calldata peerId, string[] calldata multiaddrs) external payable {
        if (msg.value < _minStake) revert FedLedgerInsufficientStake(msg.value, _minStake);
        Node storage node = _nodes[msg.sender];
        if (node.registered) revert FedLedgerAlreadyRegistered(msg.sender);
        node.registered = true;
        node.stake = msg.value;
        node.reputation = INITIAL_REPUTATION;
        node.peerId = peerId;
        // Element-wise: the legacy code generator cannot copy nested calldata arrays to storage.
        // The caller pays for its own list, so this loop is not over anyone else's data.
        for (uint256 i = 0; i < multiaddrs.length; ++i) {
            node.multiaddrs.push(multiaddrs[i]);
        }
        emit NodeRegistered(msg.sender, msg.value, peerId, multiaddrs);
    }

    /// @notice Returns a node's registration record.
    /// @param node The node's account.
    /// @return registered Whether the account is registered.
    /// @return stake Staked wei.
    /// @return peerId libp2p peer ID.
    /// @return multiaddrs libp2p listen multiaddrs.
    function nodeInfo(address node)
        external
        view
        returns (bool registered, uint256 stake, string memory peerId, string[] memory multiaddrs)
    {
        Node storage n = _nodes[node];
        return (n.registered, n.stake, n.peerId, n.multiaddrs);
    }

    /// @notice Returns a node's reputation.
    /// @param node The node's account.
    /// @return The reputation in WAD (1e18 = 1.0); 0 for an unregistered account.
    function reputationOf(address node) external view returns (uint256) {
        return _nodes[node].reputation;
    }

    /// @notice Returns the minimum stake for registering.
    /// @return The minimum stake in wei.
    function minStake() external view returns (uint256) {
        return _minStake;
    }

    // ---------------------------------------------------------------- tasks

    /// @notice Creates a task; `msg.value` is its reward pool.
    /// @param modelCid CID of the initial model (safetensors).
    /// @param specCid CID of the task spec JSON.
    /// @param rounds Number of rounds, in 1..2^32-2.
    /// @param committeeSize Maximum updates per round, > 0; bounds the gas of `finalizeRound`.
    /// @param rule Aggregation rule identifier (interpreted off-chain).
    /// @param maxSamples Per-node sample cap from the task spec (interpreted off-chain).
    /// @return taskId The new task's id; ids start at 1.
    function createTask(
        bytes calldata modelCid,
        bytes calldata specCid,
        uint32 rounds,
        uint32 committeeSize,
        uint8 rule,
        uint64 maxSamples
    ) external payable returns (uint256 taskId) {
        if (modelCid.length == 0 || specCid.length == 0) revert FedLedgerEmptyCid();
        // rounds == max would wrap `currentRound` past the last round and lock the pool.
        if (msg.value == 0 || rounds == 0 || rounds == type(uint32).max || committeeSize == 0) {
            revert FedLedgerInvalidTask(msg.value, rounds, committeeSize);
        }

        taskId = ++_taskCount;
        Task storage task = _tasks[taskId];
        task.owner = msg.sender;
        task.rounds = rounds;
        task.committeeSize = committeeSize;
        task.rule = rule;
        task.maxSamples = maxSamples;
        task.currentRound = 1;
        task.rewardRemaining = msg.value;
        task.initialModelCid = modelCid;
        task.specCid = specCid;
        emit TaskCreated(taskId, msg.sender, rounds, committeeSize, msg.value, modelCid, specCid);
    }

    /// @notice Returns a task's parameters and progress.
    /// @param taskId The task.
    /// @return owner The task owner.
    /// @return rounds Number of rounds.
    /// @return committeeSize Maximum updates per round.
    /// @return rule Aggregation rule identifier.
    /// @return maxSamples Per-node sample cap.
    /// @return currentRound The open round; `rounds + 1` once the task is finished.
    /// @return rewardRemaining Wei of the pool not yet credited.
    /// @return specCid CID of the task spec JSON.
    function taskInfo(uint256 taskId)
        external
        view
        returns (
            address owner,
            uint32 rounds,
            uint32 committeeSize,
            uint8 rule,
            uint64 maxSamples,
            uint32 currentRound,
            uint256 rewardRemaining,
            bytes memory specCid
        )
    {
        Task storage t = _existingTask(taskId);
        return (t.owner, t.rounds, t.committeeSize, t.rule, t.maxSamples, t.currentRound, t.rewardRemaining, t.specCid);
    }

    /// @notice Returns the number of tasks created; task ids run from 1 to this value.
    /// @return The task count.
    function taskCount() external view returns (uint256) {
        return _taskCount;
    }

    /// @notice Returns the latest global model of a task.
    /// @param taskId The task.
    /// @return cid CID of the latest finalized global model (the initial model before any finalize).
    /// @return round The round that produced it (0 for the initial model).
    function globalModel(uint256 taskId) external view returns (bytes memory cid, uint256 round) {
        Task storage t = _existingTask(taskId);
        round = t.currentRound - 1;
        cid = round == 0 ? t.initialModelCid : t.globalCid;
    }

    // ---------------------------------------------------------------- rounds

    /// @notice Logs the caller's update for the open round of a task.
    /// @param taskId The task.
    /// @param round The open round (must equal `currentRound`).
    /// @param cid CID of the update, non-empty.
    /// @param numSamples Number of training samples behind the update, > 0.
    function submitUpdate(uint256 taskId, uint256 round, bytes calldata cid, uint256 numSamples) external {
        Task storage task = _existingTask(taskId);
        _requireOpenRound(taskId, task, round);
        if (cid.length == 0) revert FedLedgerEmptyCid();
        if (numSamples == 0) revert FedLedgerZeroSamples();
        _authorizeSubmission(taskId, round, task);

        Submission[] storage subs = _submissions[taskId][round];
        uint256 index = subs.length;
        subs.push(Submission({sender: msg.sender, numSamples: numSamples, cid: cid}));
        _submitted[taskId][round][msg.sender] = true;
        emit UpdateSubmitted(taskId, round, msg.sender, index, cid, numSamples);
    }

    /// @notice Returns a round's updates in submission order, which is the canonical aggregation order.
    /// @param taskId The task.
    /// @param round The round; a round not reached yet has no updates.
    /// @return senders Submitting nodes.
    /// @return cids Update CIDs.
    /// @return numSamples Claimed sample counts.
    function roundUpdates(uint256 taskId, uint256 round)
        external
        view
        returns (address[] memory senders, bytes[] memory cids, uint256[] memory numSamples)
    {
        _existingTask(taskId);
        Submission[] storage subs = _submissions[taskId][round];
        uint256 n = subs.length;
        senders = new address[](n);
        cids = new bytes[](n);
        numSamples = new uint256[](n);
        for (uint256 i = 0; i < n; ++i) {
            senders[i] = subs[i].sender;
            cids[i] = subs[i].cid;
            numSamples[i] = subs[i].numSamples;
        }
    }

    /// @notice Closes the open round: records the global model, updates reputations and credits rewards.
    /// @dev Reputation: rep := (rep * (WAD - ALPHA) + score * ALPHA) / WAD. The round pays
    /// rewardRemaining / (rounds - round + 1), split in proportion to score * newRep / WAD among
    /// submitters whose new reputation is at least the threshold. Floor-rounding dust stays in the
    /// pool; the last round hands whatever is left back to the task owner.
    /// @param taskId The task.
    /// @param round The open round.
    /// @param globalCid CID of the aggregated global model, non-empty.
    /// @param scores Contribution score per update, in submission order, each in [0, WAD].
    function finalizeRound(uint256 taskId, uint256 round, bytes calldata globalCid, uint256[] calldata scores)
        external
    {
        Task storage task = _existingTask(taskId);
        _requireOpenRound(taskId, task, round);
        _authorizeFinalize(task);
        if (globalCid.length == 0) revert FedLedgerEmptyCid();
        Submission[] storage subs = _submissions[taskId][round];
        if (scores.length != subs.length) revert FedLedgerScoresLength(subs.length, scores.length);

        _settleRound(taskId, round, task, subs, scores);

        task.globalCid = globalCid;
        task.currentRound = uint32(round + 1);
        emit RoundFinalized(taskId, round, globalCid);

        if (round == task.rounds) {
            // Floor-division dust and the shares of rounds nobody earned go back to the owner, so
            // a finished task holds no ether.
            uint256 leftover = task.rewardRemaining;
            task.rewardRemaining = 0;
            _credit(task.owner, taskId, round, leftover);
        }
    }

    // ---------------------------------------------------------------- payments

    /// @notice Returns the wei an account can withdraw.
    /// @param account The account.
    /// @return Pending wei.
    function pendingRewards(address account) external view returns (uint256) {
        return _pending[account];
    }

    /// @notice Sends the caller all of its pending rewards.
    /// @dev Checks-effects-interactions: the balance is zeroed before the call, so a re-entrant
    /// `withdraw` from the recipient finds nothing; a recipient that rejects ether only reverts its
    /// own withdrawal.
    function withdraw() external {
        uint256 amount = _pending[msg.sender];
        if (amount == 0) revert FedLedgerNothingToWithdraw(msg.sender);
        _pending[msg.sender] = 0;
        emit Withdrawn(msg.sender, amount);
        (bool ok,) = payable(msg.sender).call{value: amount}("");
        if (!ok) revert FedLedgerTransferFailed(msg.sender);
    }

    // ---------------------------------------------------------------- internals

    function _existingTask(uint256 taskId) private view returns (Task storage task) {
        task = _tasks[taskId];
        if (task.owner == address(0)) revert FedLedgerUnknownTask(taskId);
    }

    function _requireOpenRound(uint256 taskId, Task storage task, uint256 round) private view {
        uint256 current = task.currentRound;
        if (current > task.rounds) revert FedLedgerTaskFinished(taskId);
        if (round != current) revert FedLedgerWrongRound(taskId, current, round);
    }

    /// @dev Seam: committee membership and commit-reveal replace this open-admission check.
    function _authorizeSubmission(uint256 taskId, uint256 round, Task storage task) private view {
        if (!_nodes[msg.sender].registered) revert FedLedgerNotRegistered(msg.sender);
        if (_submitted[taskId][round][msg.sender]) revert FedLedgerDuplicateSubmission(msg.sender, round);
        if (_submissions[taskId][round].length >= task.committeeSize) revert FedLedgerRoundFull(taskId, round);
    }

    /// @dev Seam: the attestation quorum replaces this owner-only check.
    function _authorizeFinalize(Task storage task) private view {
        if (msg.sender != task.owner) revert FedLedgerNotTaskOwner(msg.sender, task.owner);
    }

    /// @dev Updates the submitters' reputations and credits this round's share of the pool.
    /// Two passes over at most `committeeSize` submissions: weights need every new reputation
    /// before any payout can be divided.
    function _settleRound(
        uint256 taskId,
        uint256 round,
        Task storage task,
        Submission[] storage subs,
        uint256[] calldata scores
    ) private {
        uint256 n = scores.length;
        address[] memory senders = new address[](n);
        uint256[] memory weights = new uint256[](n);
        uint256 sumWeights = 0;
        for (uint256 i = 0; i < n; ++i) {
            uint256 score = scores[i];
            if (score > WAD) revert FedLedgerScoreOutOfRange(i, score);
            address sender = subs[i].sender;
            uint256 newRep = _updateReputation(sender, score);
            senders[i] = sender;
            // Below-threshold nodes earn nothing (SPEC section 4), however good this round was.
            uint256 weight = newRep < REPUTATION_THRESHOLD ? 0 : score * newRep / WAD;
            weights[i] = weight;
            sumWeights += weight;
        }
        if (sumWeights == 0) return;

        uint256 share = task.rewardRemaining / (uint256(task.rounds) - round + 1);
        uint256 paid = 0;
        for (uint256 i = 0; i < n; ++i) {
            uint256 payout = share * weights[i] / sumWeights;
            paid += payout;
            _credit(senders[i], taskId, round, payout);
        }
        task.rewardRemaining -= paid;
    }

    function _updateReputation(address node, uint256 score) private returns (uint256 newRep) {
        Node storage n = _nodes[node];
        uint256 oldRep = n.reputation;
        newRep = (oldRep * (WAD - REPUTATION_ALPHA) + score * REPUTATION_ALPHA) / WAD;
        n.reputation = newRep;
        emit ReputationUpdated(node, oldRep, newRep);
    }

    function _credit(address account, uint256 taskId, uint256 round, uint256 amount) private {
        if (amount == 0) return;
        _pending[account] += amount;
        emit RewardCredited(account, taskId, round, amount);
    }
}
