// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title FedLedger: the on-chain protocol of a federated-learning run (SPEC section 4)
/// @notice Nodes stake and register their libp2p addresses; a task owner deposits a reward pool;
/// each round a committee of K eligible nodes is drawn from on-chain randomness, commits to its
/// updates, reveals them, a rotating proposer posts the aggregated model with one contribution
/// score per participant, the other participants attest to it by re-running the aggregation, and
/// anyone finalizes an accepted proposal: the global model is recorded, every participant's
/// reputation moves towards its score (RFFL, Xu & Lyu 2020: an exponential moving average) and
/// the round's share of the pool is credited for the recipients to withdraw (pull payments).
/// @dev Gas per round is O(K): every loop runs over one round's committee, never over the
/// registered nodes. Committee sampling draws indices into the array of active nodes from a seed
/// (the hash of the round-opening block) with a bounded number of tries. Phases end at their
/// deadline or as soon as every member has acted; deadlines are enforced lazily by `_sync`, which
/// every round action (and the public `advance`) runs first.
/// Invariant: address(this).balance == sum(stakes) + sum(rewardRemaining) + sum(pendingRewards)
/// + sum(held rewards of newcomers on probation).
contract FedLedger {
    // ---------------------------------------------------------------- constants

    /// @notice Fixed-point unit: 1e18 represents 1.0.
    uint256 public constant WAD = 1e18;
    /// @notice Reputation of a freshly registered node (0.5).
    uint256 public constant INITIAL_REPUTATION = 0.5e18;
    /// @notice Seconds between `requestUnstake` and the earliest `withdrawStake`.
    uint256 public constant UNSTAKE_DELAY = 2 days;
    /// @notice Largest committee a task may ask for; bounds every per-round loop.
    uint256 public constant MAX_COMMITTEE = 64;
    /// @notice Longest phase timeout a task may set.
    uint256 public constant MAX_TIMEOUT = 30 days;
    /// @notice Basis-point denominator of the reward shares.
    uint256 public constant BPS = 10_000;
    /// @notice Sampling tries per committee seat when the active set is large.
    uint256 public constant TRIES_PER_SEAT = 4;
    /// @notice Populations up to this size are sampled without repeats (a shuffle in memory).
    uint256 public constant SHUFFLE_LIMIT = 256;
    /// @notice Proposals a round may see (rejected or undecided) before it is void; bounds `attempt`.
    uint256 public constant MAX_ATTEMPTS = 4;
    /// @notice Scored rounds a newcomer's rewards are held for (its probation; #16). At the end it is
    /// paid what it held if its reputation is at least INITIAL_REPUTATION, else the held wei is
    /// forfeited to the pool of the task that ends the probation; falling under a task's threshold
    /// ends the probation early, forfeiting.
    uint256 public constant PROBATION_ROUNDS = 3;

    // ---------------------------------------------------------------- types

    /// @notice Phases of a round, in the order a round moves through them.
    /// @dev `Draw`: waiting for `drawCommittee`. `Propose` is re-entered from `Attest` when a proposal
    /// is rejected or undecided (the round's `attempt` grows, so (attempt, phase) still only moves forward;
    /// after MAX_ATTEMPTS proposals the round is void).
    enum Phase {
        Draw,
        Commit,
        Reveal,
        Propose,
        Attest,
        Finalized,
        Void
    }

    /// @notice Which `createTask` parameter `FedLedgerInvalidTask` complains about.
    enum TaskParam {
        RewardPool,
        Rounds,
        CommitteeSize,
        Timeout,
        ReputationThreshold,
        Alpha,
        Shares,
        MinCommittee
    }

    /// @notice Why a node was slashed.
    enum SlashReason {
        Unrevealed,
        RejectedProposal
    }

    /// @notice Everything `createTask` needs (a struct keeps the call under the EVM stack limit).
    /// @param modelCid CID of the initial model (safetensors), UTF-8 bytes of the CID text.
    /// @param specCid CID of the task spec JSON.
    /// @param ruleParams Aggregation-rule parameters, interpreted off-chain (e.g. canonical JSON).
    /// @param rounds Number of rounds, in 1..2^32-2.
    /// @param committeeSize Committee size K, in 1..MAX_COMMITTEE.
    /// @param rule Aggregation rule id (interpreted off-chain).
    /// @param maxSamples Per-update sample cap of the rule (interpreted off-chain).
    /// @param commitTimeout Seconds the commit phase lasts at most.
    /// @param revealTimeout Seconds the reveal phase lasts at most.
    /// @param proposeTimeout Seconds the designated proposer has before anyone may propose.
    /// @param attestTimeout Seconds of the challenge window.
    /// @param minStake Stake a node needs to sit on this task's committees.
    /// @param reputationThreshold WAD; nodes below it are not drawn and earn nothing.
    /// @param alpha WAD weight of the newest score in the reputation moving average.
    /// @param proposerShareBps Share of each round's payout to the accepted proposer.
    /// @param attesterShareBps Share of each round's payout to attesters on the accepted side.
    /// @param minCommittee Fewest eligible nodes a draw seats, in 1..committeeSize; with fewer the
    /// draw reverts and the round waits (an aggregate nobody else checks is worth nothing).
    struct TaskConfig {
        bytes modelCid;
        bytes specCid;
        bytes ruleParams;
        uint32 rounds;
        uint8 committeeSize;
        uint8 rule;
        uint64 maxSamples;
        uint32 commitTimeout;
        uint32 revealTimeout;
        uint32 proposeTimeout;
        uint32 attestTimeout;
        uint96 minStake;
        uint64 reputationThreshold;
        uint64 alpha;
        uint16 proposerShareBps;
        uint16 attesterShareBps;
        uint8 minCommittee;
    }

    struct Node {
        uint96 stake;
        uint64 reputation; // WAD, in [0, WAD]
        uint32 activeIndex; // position in _active while active
        uint8 scored; // rounds scored while on probation (up to PROBATION_ROUNDS)
        uint32 unstakeAt; // 0 unless an unstake was requested (a timestamp: 32 bits last until 2106)
        uint16 exposure; // open commitments + pending proposals: slashes that may still land
        uint8 flags; // F_REGISTERED | F_ACTIVE | F_SEEN | F_PROBATION | F_EARNED
    }

    struct PeerInfo {
        string peerId;
        string[] multiaddrs;
    }

    struct Task {
        // slot 0
        address owner;
        uint32 rounds;
        uint32 currentRound; // starts at 1; rounds + 1 once the task is finished
        uint8 committeeSize;
        uint8 rule;
        uint16 attesterShareBps;
        // slot 1
        uint96 minStake;
        uint64 reputationThreshold;
        uint64 alpha;
        uint16 proposerShareBps;
        uint8 minCommittee;
        // slot 2
        uint32 commitTimeout;
        uint32 revealTimeout;
        uint32 proposeTimeout;
        uint32 attestTimeout;
        uint64 maxSamples;
        uint32 globalRound; // round that produced globalCid; 0 = the initial model
        // slot 3
        uint256 rewardRemaining;
        bytes initialModelCid;
        bytes specCid;
        bytes ruleParams;
        bytes globalCid;
    }

    struct Round {
        // slot 0
        Phase phase;
        uint8 committeeLen;
        uint8 commitCount;
        uint8 revealCount;
        uint8 voters;
        uint8 agrees;
        uint8 disagrees;
        uint8 abstains; // voters that could not check the proposal (an update it aggregated was unavailable to them)
        uint16 attempt; // proposals of this round that ended rejected or undecided, < MAX_ATTEMPTS
        uint40 deadline; // end of the current phase (unix seconds)
        uint40 seedBlock; // block whose hash seeds the committee draw
        uint40 openedBlock; // block that opened the round (log scans start here)
        uint32 population; // active nodes when seedBlock was fixed: the only candidates of the draw
        uint8 rejected; // bit a: attempt a ended rejected; its voters are judged at finalize (#16)
        bool anyEarned; // a revealed sender had earned influence; if none had, the round is a founding one
        // slot 1
        address proposer;
        uint64 available; // bit i: the proposer could fetch update i (reveal order); the others are neutral
        // slot 2
        bytes32 proposalHash; // keccak256(abi.encode(globalCid, scores)) of the pending proposal
        // reveal order: member indices, 32 per slot
        uint8[MAX_COMMITTEE] order;
        mapping(uint256 index => address) committee;
    }

    struct Member {
        uint8 index1; // committee index + 1; 0 = not a member
        bool revealed;
        uint8 votes; // 2 bits per attempt (MAX_ATTEMPTS = 4): 0 none, 1 agree, 2 disagree, 3 abstain
        uint96 numSamples;
        bool earned; // the sender had scored above 0 before it revealed (see `roundUpdates`)
    }

    /// @notice A round's public state, as `roundState` returns it.
    struct RoundView {
        Phase phase;
        uint256 committeeLen;
        uint256 commitCount;
        uint256 revealCount;
        uint256 voters;
        uint256 agrees;
        uint256 disagrees;
        uint256 abstains;
        uint256 attempt;
        uint256 deadline;
        uint256 seedBlock;
        uint256 openedBlock;
        address proposer;
        bytes32 proposalHash;
        uint256 available;
    }

    uint8 private constant F_REGISTERED = 1;
    uint8 private constant F_ACTIVE = 2;
    uint8 private constant F_SEEN = 4; // registered once: a re-registration keeps the reputation
    uint8 private constant F_PROBATION = 8; // a newcomer: its rewards are held (see PROBATION_ROUNDS)
    uint8 private constant F_EARNED = 16; // has influence: scored above 0, or trained in a founding round (`roundUpdates`)
    uint8 private constant VOTE_AGREE = 1;
    uint8 private constant VOTE_DISAGREE = 2;
    uint8 private constant VOTE_ABSTAIN = 3;

    uint256 private immutable _minStake;
    uint256 private _taskCount;
    address[] private _active;
    mapping(address node => Node) private _nodes;
    mapping(address node => PeerInfo) private _peers;
    mapping(uint256 taskId => Task) private _tasks;
    mapping(uint256 taskId => mapping(uint256 round => Round)) private _rounds;
    mapping(uint256 taskId => mapping(uint256 round => mapping(address node => Member))) private _members;
    // commitment while committed, keccak256(cid) once revealed
    mapping(uint256 taskId => mapping(uint256 round => mapping(address node => bytes32))) private _commitments;
    mapping(address account => uint256) private _pending;
    mapping(address node => uint256) private _held; // rewards of a newcomer on probation

    // ---------------------------------------------------------------- events

    /// @notice Emitted when a node joins; peers discover each other from these fields.
    /// @param node The node's account.
    /// @param stake The stake deposited, in wei.
    /// @param peerId The node's libp2p peer ID.
    /// @param multiaddrs The node's libp2p listen multiaddrs.
    event NodeRegistered(address indexed node, uint256 stake, string peerId, string[] multiaddrs);
    /// @notice Emitted when a node changes its libp2p peer record.
    /// @param node The node.
    /// @param peerId The new peer ID.
    /// @param multiaddrs The new listen multiaddrs.
    event PeerInfoUpdated(address indexed node, string peerId, string[] multiaddrs);
    /// @notice Emitted when a node adds stake.
    /// @param node The node.
    /// @param amount Added wei.
    /// @param stake The stake after the deposit.
    event StakeAdded(address indexed node, uint256 amount, uint256 stake);
    /// @notice Emitted when a node leaves the active set and starts its unstaking delay.
    /// @param node The node.
    /// @param unlocksAt Earliest time of `withdrawStake`.
    event UnstakeRequested(address indexed node, uint256 unlocksAt);
    /// @notice Emitted when a node takes its stake back and is deregistered.
    /// @param node The node.
    /// @param amount Paid wei.
    event StakeWithdrawn(address indexed node, uint256 amount);
    /// @notice Emitted when stake is slashed into a task's reward pool.
    /// @param node The slashed node.
    /// @param taskId The task whose pool receives the stake.
    /// @param round The round of the offence.
    /// @param amount Slashed wei.
    /// @param reason 0 = committed but never revealed, 1 = proposal rejected.
    event Slashed(address indexed node, uint256 indexed taskId, uint256 round, uint256 amount, SlashReason reason);
    /// @notice Emitted when a task is created and its reward pool deposited.
    /// @param taskId The new task's id.
    /// @param owner The account that created the task.
    /// @param rounds Number of rounds.
    /// @param committeeSize Committee size K.
    /// @param rewardPool The deposited pool, in wei.
    /// @param modelCid CID of the initial model.
    /// @param specCid CID of the task spec JSON.
    event TaskCreated(
        uint256 indexed taskId,
        address indexed owner,
        uint32 rounds,
        uint8 committeeSize,
        uint256 rewardPool,
        bytes modelCid,
        bytes specCid
    );
    /// @notice Emitted when a round's phase changes (also on a rejected proposal's return to Propose).
    /// @param taskId The task.
    /// @param round The round.
    /// @param phase The new phase.
    /// @param deadline End of the new phase (0 when it has none).
    event PhaseChanged(uint256 indexed taskId, uint256 indexed round, Phase phase, uint256 deadline);
    /// @notice Emitted when a round's committee is drawn.
    /// @param taskId The task.
    /// @param round The round.
    /// @param members The committee, in draw order.
    event CommitteeDrawn(uint256 indexed taskId, uint256 indexed round, address[] members);
    /// @notice Emitted when the seed block fell out of the 256-block window and a newer one is used.
    /// @param taskId The task.
    /// @param round The round.
    /// @param seedBlock The new seed block; draw again after it.
    event CommitteeReseeded(uint256 indexed taskId, uint256 indexed round, uint256 seedBlock);
    /// @notice Emitted when a member commits to its update.
    /// @param taskId The task.
    /// @param round The round.
    /// @param node The member.
    /// @param commitment keccak256(abi.encode(cid, numSamples, salt, node)).
    event UpdateCommitted(uint256 indexed taskId, uint256 indexed round, address indexed node, bytes32 commitment);
    /// @notice Emitted when a member reveals its update.
    /// @param taskId The task.
    /// @param round The round.
    /// @param node The member.
    /// @param index Position in the reveal order, which is the canonical aggregation order.
    /// @param cid CID of the update.
    /// @param numSamples Training samples the node claims.
    event UpdateRevealed(
        uint256 indexed taskId, uint256 indexed round, address indexed node, uint256 index, bytes cid, uint256 numSamples
    );
    /// @notice Emitted when a proposal is posted.
    /// @param taskId The task.
    /// @param round The round.
    /// @param proposer The proposer.
    /// @param attempt How many proposals of this round were rejected before this one.
    /// @param cid CID of the proposed global model.
    /// @param scores One WAD score per revealed participant, in reveal order.
    /// @param available Bit i set: the proposer fetched update i and aggregated it (see `propose`).
    event ProposalSubmitted(
        uint256 indexed taskId,
        uint256 indexed round,
        address indexed proposer,
        uint256 attempt,
        bytes cid,
        uint256[] scores,
        uint256 available
    );
    /// @notice Emitted when a participant attests to the pending proposal.
    /// @param taskId The task.
    /// @param round The round.
    /// @param node The attester.
    /// @param attempt The proposal attempt attested to.
    /// @param agree Whether the attester's re-execution matched.
    event Attested(uint256 indexed taskId, uint256 indexed round, address indexed node, uint256 attempt, bool agree);
    /// @notice Emitted when a participant says it cannot check the pending proposal (it could not
    /// fetch an update the proposer aggregated); neither agreement nor disagreement.
    /// @param taskId The task.
    /// @param round The round.
    /// @param node The participant.
    /// @param attempt The proposal attempt.
    event Abstained(uint256 indexed taskId, uint256 indexed round, address indexed node, uint256 attempt);
    /// @notice Emitted when a proposal is rejected; proposing reopens.
    /// @param taskId The task.
    /// @param round The round.
    /// @param proposer The slashed proposer.
    /// @param attempt The rejected attempt.
    /// @param agrees Agreeing attestations.
    /// @param disagrees Disagreeing attestations.
    event ProposalRejected(
        uint256 indexed taskId, uint256 indexed round, address indexed proposer, uint256 attempt, uint256 agrees, uint256 disagrees
    );
    /// @notice Emitted when the challenge window of a proposal closes with neither a majority
    /// agreeing nor a majority disagreeing: nobody is slashed and the next proposer gets its turn.
    /// @param taskId The task.
    /// @param round The round.
    /// @param proposer The proposer (not slashed).
    /// @param attempt The undecided attempt.
    /// @param agrees Agreeing attestations.
    /// @param disagrees Disagreeing attestations.
    event ProposalUndecided(
        uint256 indexed taskId, uint256 indexed round, address indexed proposer, uint256 attempt, uint256 agrees, uint256 disagrees
    );
    /// @notice Emitted when a round is finalized and its global model recorded.
    /// @param taskId The task.
    /// @param round The finalized round.
    /// @param cid CID of the new global model.
    event RoundFinalized(uint256 indexed taskId, uint256 indexed round, bytes cid);
    /// @notice Emitted when a round closes with no revealed update; the global model is unchanged.
    /// @param taskId The task.
    /// @param round The void round.
    event RoundVoided(uint256 indexed taskId, uint256 indexed round);
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
    /// @notice Emitted when a newcomer's reward is held for its probation instead of credited.
    /// @param account The newcomer.
    /// @param taskId The task whose pool pays.
    /// @param round The round the reward is for.
    /// @param amount Held wei.
    event RewardHeld(address indexed account, uint256 indexed taskId, uint256 round, uint256 amount);
    /// @notice Emitted when a probation ends: `vested` wei of held rewards were credited (a
    /// RewardCredited of the same amount is emitted too) or `forfeited` wei went to the task's pool.
    /// @param account The node.
    /// @param taskId The task whose round ended the probation (and whose pool takes a forfeit).
    /// @param round That round.
    /// @param reputation The node's reputation then, WAD.
    /// @param vested Wei credited.
    /// @param forfeited Wei forfeited.
    event ProbationEnded(
        address indexed account, uint256 indexed taskId, uint256 round, uint256 reputation, uint256 vested, uint256 forfeited
    );
    /// @notice Emitted when an account withdraws its pending rewards.
    /// @param account The account paid.
    /// @param amount Paid wei.
    event Withdrawn(address indexed account, uint256 amount);

    // ---------------------------------------------------------------- errors

    /// @notice Thrown when a deposit is below the minimum stake.
    /// @param sent The wei sent.
    /// @param required The minimum stake.
    error FedLedgerInsufficientStake(uint256 sent, uint256 required);
    /// @notice Thrown when a registered node registers again.
    /// @param node The node.
    error FedLedgerAlreadyRegistered(address node);
    /// @notice Thrown when an unregistered account acts as a node.
    /// @param node The caller.
    error FedLedgerNotRegistered(address node);
    /// @notice Thrown when a node that is unstaking adds stake or asks to unstake again.
    /// @param node The node.
    /// @param unlocksAt When its stake unlocks.
    error FedLedgerUnstaking(address node, uint256 unlocksAt);
    /// @notice Thrown when `withdrawStake` is called without a prior `requestUnstake`.
    /// @param node The caller.
    error FedLedgerNoUnstakeRequested(address node);
    /// @notice Thrown when `withdrawStake` is called before the unstaking delay has passed.
    /// @param node The caller.
    /// @param unlocksAt When the stake unlocks.
    error FedLedgerStakeLocked(address node, uint256 unlocksAt);
    /// @notice Thrown when `withdrawStake` is called while a slash may still land on the stake.
    /// @param node The caller.
    /// @param exposure Open commitments and pending proposals of the node.
    error FedLedgerPendingSlash(address node, uint256 exposure);
    /// @notice Thrown when a task id was never created.
    /// @param taskId The unknown id.
    error FedLedgerUnknownTask(uint256 taskId);
    /// @notice Thrown when `createTask` gets an out-of-range parameter.
    /// @dev Numeric, not a string: eth-tester's web3 provider decodes string-shaped payloads as
    /// `Error(string)` and drops the selector.
    /// @param param Which parameter (see `TaskParam`).
    /// @param value The rejected value.
    error FedLedgerInvalidTask(TaskParam param, uint256 value);
    /// @notice Thrown when acting on a task whose last round is closed.
    /// @param taskId The task.
    error FedLedgerTaskFinished(uint256 taskId);
    /// @notice Thrown when a call names a round other than the task's open round.
    /// @param taskId The task.
    /// @param expected The open round.
    /// @param got The round named by the caller.
    error FedLedgerWrongRound(uint256 taskId, uint256 expected, uint256 got);
    /// @notice Thrown when a draw finds fewer eligible nodes than the task's minimum committee; the
    /// round stays in Draw (a revert: nothing is charged to whoever tries again later).
    /// @param found Eligible nodes the draw found.
    /// @param required The task's minimum committee.
    error FedLedgerCommitteeTooSmall(uint256 found, uint256 required);
    /// @notice Thrown when an action does not belong to the round's current phase (late, early).
    /// @param taskId The task.
    /// @param round The round.
    /// @param expected The phase the action needs.
    /// @param actual The round's phase.
    error FedLedgerWrongPhase(uint256 taskId, uint256 round, Phase expected, Phase actual);
    /// @notice Thrown when an attestation arrives after the challenge window closed.
    /// @param taskId The task.
    /// @param round The round.
    /// @param deadline When the window closed.
    error FedLedgerPhaseExpired(uint256 taskId, uint256 round, uint256 deadline);
    /// @notice Thrown when the committee is drawn in the block that fixed its seed.
    /// @param seedBlock The seed block; draw in a later block.
    error FedLedgerSeedNotReady(uint256 seedBlock);
    /// @notice Thrown when a non-member commits or reveals.
    /// @param taskId The task.
    /// @param round The round.
    /// @param node The caller.
    error FedLedgerNotCommitteeMember(uint256 taskId, uint256 round, address node);
    /// @notice Thrown on a second (or replayed) commitment by the same member in a round.
    /// @param taskId The task.
    /// @param round The round.
    /// @param node The member.
    error FedLedgerAlreadyCommitted(uint256 taskId, uint256 round, address node);
    /// @notice Thrown when a member reveals without having committed.
    /// @param taskId The task.
    /// @param round The round.
    /// @param node The member.
    error FedLedgerNotCommitted(uint256 taskId, uint256 round, address node);
    /// @notice Thrown on a second reveal.
    /// @param taskId The task.
    /// @param round The round.
    /// @param node The member.
    error FedLedgerAlreadyRevealed(uint256 taskId, uint256 round, address node);
    /// @notice Thrown when a reveal does not hash to the member's commitment.
    /// @param node The member.
    /// @param committed The stored commitment.
    /// @param revealed The hash of the revealed values.
    error FedLedgerCommitmentMismatch(address node, bytes32 committed, bytes32 revealed);
    /// @notice Thrown when `commit` gets a zero commitment.
    error FedLedgerZeroCommitment();
    /// @notice Thrown when someone other than the designated proposer proposes before the timeout.
    /// @param caller The caller.
    /// @param designated The designated proposer.
    /// @param openToAllAt When anyone may propose.
    error FedLedgerNotProposer(address caller, address designated, uint256 openToAllAt);
    /// @notice Thrown when a fallback proposer has too little stake to answer for a bad proposal.
    /// @param caller The caller.
    /// @param stake Its stake.
    /// @param required The task's minimum stake.
    error FedLedgerIneligibleProposer(address caller, uint256 stake, uint256 required);
    /// @notice Thrown when a proposal's score count differs from the revealed update count.
    /// @param expected Revealed updates.
    /// @param got Scores given.
    error FedLedgerScoresLength(uint256 expected, uint256 got);
    /// @notice Thrown when a proposal's availability bitmap names updates that were not revealed.
    /// @param available The bitmap.
    /// @param revealed Revealed updates (only bits below this may be set).
    error FedLedgerBadAvailability(uint256 available, uint256 revealed);
    /// @notice Thrown when a contribution score exceeds WAD (1.0).
    /// @param index Position of the score.
    /// @param score The score.
    error FedLedgerScoreOutOfRange(uint256 index, uint256 score);
    /// @notice Thrown when someone other than a revealed, non-proposing participant attests.
    /// @param taskId The task.
    /// @param round The round.
    /// @param node The caller.
    error FedLedgerNotAttester(uint256 taskId, uint256 round, address node);
    /// @notice Thrown on a second attestation to the same proposal.
    /// @param node The attester.
    /// @param attempt The proposal attempt.
    error FedLedgerAlreadyAttested(address node, uint256 attempt);
    /// @notice Thrown when `finalize` is given a model or scores other than the pending proposal's.
    /// @param expected The pending proposal's hash.
    /// @param got The hash of the given values.
    error FedLedgerProposalMismatch(bytes32 expected, bytes32 got);
    /// @notice Thrown when `finalize` comes before a strict majority of the attesters agrees.
    /// @param taskId The task.
    /// @param round The round.
    /// @param agrees Agreeing attestations so far.
    /// @param voters Participants entitled to attest (revealed members other than the proposer).
    /// @param windowEnd When the challenge window closes.
    error FedLedgerNotDecided(uint256 taskId, uint256 round, uint256 agrees, uint256 voters, uint256 windowEnd);
    /// @notice Thrown when `withdraw` is called with no pending rewards.
    /// @param account The caller.
    error FedLedgerNothingToWithdraw(address account);
    /// @notice Thrown when the recipient of a payment rejects the ether.
    /// @param account The recipient.
    error FedLedgerTransferFailed(address account);
    /// @notice Thrown when a CID argument is empty.
    error FedLedgerEmptyCid();
    /// @notice Thrown when an update claims zero (or more than 2^96-1) training samples.
    /// @param numSamples The claimed count.
    error FedLedgerBadSamples(uint256 numSamples);

    // ---------------------------------------------------------------- constructor

    /// @notice Deploys the ledger.
    /// @param minimumStake Minimum wei a node must stake to register.
    constructor(uint256 minimumStake) {
        _minStake = minimumStake;
    }

    // ---------------------------------------------------------------- nodes

    /// @notice Registers the caller as an active node, staking `msg.value`.
    /// @dev A node that registered before and withdrew keeps its old reputation (no reset by re-joining).
    /// @param peerId The caller's libp2p peer ID.
    /// @param multiaddrs The caller's libp2p listen multiaddrs.
    function register(string calldata peerId, string[] calldata multiaddrs) external payable {
        if (msg.value < _minStake) revert FedLedgerInsufficientStake(msg.value, _minStake);
        Node storage node = _nodes[msg.sender];
        if (node.flags & F_REGISTERED != 0) revert FedLedgerAlreadyRegistered(msg.sender);
        node.stake = uint96(msg.value); // the supply of ether fits in 96 bits
        uint8 probation = node.flags & F_PROBATION; // a returning newcomer resumes its probation
        if (node.flags & F_SEEN == 0) {
            node.reputation = uint64(INITIAL_REPUTATION);
            probation = F_PROBATION;
        } else {
            delete _peers[msg.sender].multiaddrs; // a returning node's old addresses are stale
        }
        node.flags = F_REGISTERED | F_ACTIVE | F_SEEN | probation | (node.flags & F_EARNED);
        node.unstakeAt = 0;
        node.activeIndex = uint32(_active.length);
        _active.push(msg.sender);
        _setPeer(msg.sender, peerId, multiaddrs);
        emit NodeRegistered(msg.sender, msg.value, peerId, multiaddrs);
    }

    /// @notice Replaces the caller's libp2p peer record.
    /// @param peerId The new peer ID.
    /// @param multiaddrs The new listen multiaddrs.
    function updatePeerInfo(string calldata peerId, string[] calldata multiaddrs) external {
        _registered(msg.sender);
        delete _peers[msg.sender].multiaddrs;
        _setPeer(msg.sender, peerId, multiaddrs);
        emit PeerInfoUpdated(msg.sender, peerId, multiaddrs);
    }

    /// @notice Adds `msg.value` to the caller's stake.
    function addStake() external payable {
        Node storage node = _registered(msg.sender);
        if (node.unstakeAt != 0) revert FedLedgerUnstaking(msg.sender, node.unstakeAt);
        if (msg.value == 0) revert FedLedgerInsufficientStake(0, 1);
        uint256 stake = uint256(node.stake) + msg.value;
        node.stake = uint96(stake);
        emit StakeAdded(msg.sender, msg.value, stake);
    }

    /// @notice Leaves the active set (no more committee seats) and starts the unstaking delay.
    /// @dev Committees already drawn keep the node; what it commits there stays slashable.
    function requestUnstake() external {
        Node storage node = _registered(msg.sender);
        if (node.unstakeAt != 0) revert FedLedgerUnstaking(msg.sender, node.unstakeAt);
        _removeActive(node);
        uint256 unlocksAt = block.timestamp + UNSTAKE_DELAY;
        node.unstakeAt = uint32(unlocksAt);
        emit UnstakeRequested(msg.sender, unlocksAt);
    }

    /// @notice After the unstaking delay, pays the caller its stake and deregisters it.
    /// @dev Refused while the node has an open commitment or a pending proposal: those are the
    /// slashes that may still land, and leaving first would dodge them.
    function withdrawStake() external {
        Node storage node = _registered(msg.sender);
        uint256 unlocksAt = node.unstakeAt;
        if (unlocksAt == 0) revert FedLedgerNoUnstakeRequested(msg.sender);
        if (block.timestamp < unlocksAt) revert FedLedgerStakeLocked(msg.sender, unlocksAt);
        if (node.exposure != 0) revert FedLedgerPendingSlash(msg.sender, node.exposure);
        uint256 amount = node.stake;
        node.stake = 0;
        node.unstakeAt = 0;
        node.flags = F_SEEN | (node.flags & (F_PROBATION | F_EARNED)); // held rewards wait for a return
        emit StakeWithdrawn(msg.sender, amount);
        (bool ok,) = payable(msg.sender).call{value: amount}("");
        if (!ok) revert FedLedgerTransferFailed(msg.sender);
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
        PeerInfo storage p = _peers[node];
        return (n.flags & F_REGISTERED != 0, n.stake, p.peerId, p.multiaddrs);
    }

    /// @notice Returns a node's protocol status.
    /// @param node The node's account.
    /// @return active Whether it can be drawn into committees.
    /// @return unstakeAt When its stake unlocks (0 unless unstaking).
    /// @return exposure Open commitments and pending proposals.
    function nodeStatus(address node) external view returns (bool active, uint256 unstakeAt, uint256 exposure) {
        Node storage n = _nodes[node];
        return (n.flags & F_ACTIVE != 0, n.unstakeAt, n.exposure);
    }

    /// @notice Returns a node's stake.
    /// @param node The node's account.
    /// @return Staked wei (0 once withdrawn or for an unknown account).
    function stakeOf(address node) external view returns (uint256) {
        return _nodes[node].stake;
    }

    /// @notice Returns a node's reputation.
    /// @param node The node's account.
    /// @return The reputation in WAD (1e18 = 1.0); 0 for an account never registered.
    function reputationOf(address node) external view returns (uint256) {
        return _nodes[node].reputation;
    }

    /// @notice Returns the number of active nodes (the population committees are drawn from).
    /// @return The count.
    function activeNodeCount() external view returns (uint256) {
        return _active.length;
    }

    /// @notice Returns the minimum stake for registering.
    /// @return The minimum stake in wei.
    function minStake() external view returns (uint256) {
        return _minStake;
    }

    // ---------------------------------------------------------------- tasks

    /// @notice Creates a task; `msg.value` is its reward pool. Round 1 opens at once; its
    /// committee can be drawn from the next block on.
    /// @param config The task's parameters (see `TaskConfig`).
    /// @return taskId The new task's id; ids start at 1.
    function createTask(TaskConfig calldata config) external payable returns (uint256 taskId) {
        _validate(config);
        taskId = ++_taskCount;
        Task storage task = _tasks[taskId];
        task.owner = msg.sender;
        task.rounds = config.rounds;
        task.currentRound = 1;
        task.committeeSize = config.committeeSize;
        task.rule = config.rule;
        task.attesterShareBps = config.attesterShareBps;
        task.minStake = config.minStake;
        task.reputationThreshold = config.reputationThreshold;
        task.alpha = config.alpha;
        task.proposerShareBps = config.proposerShareBps;
        task.minCommittee = config.minCommittee;
        task.commitTimeout = config.commitTimeout;
        task.revealTimeout = config.revealTimeout;
        task.proposeTimeout = config.proposeTimeout;
        task.attestTimeout = config.attestTimeout;
        task.maxSamples = config.maxSamples;
        task.rewardRemaining = msg.value;
        task.initialModelCid = config.modelCid;
        task.specCid = config.specCid;
        task.ruleParams = config.ruleParams;
        emit TaskCreated(
            taskId, msg.sender, config.rounds, config.committeeSize, msg.value, config.modelCid, config.specCid
        );
        _openRound(taskId, 1);
    }

    /// @notice Returns a task's main parameters and progress.
    /// @param taskId The task.
    /// @return owner The task owner.
    /// @return rounds Number of rounds.
    /// @return committeeSize Committee size K.
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
            uint8 committeeSize,
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

    /// @notice Returns a task's protocol parameters.
    /// @param taskId The task.
    /// @return timeouts Commit, reveal, propose and attest timeouts, in seconds.
    /// @return minStakeWei Stake needed for a committee seat.
    /// @return reputationThreshold WAD threshold for seats and rewards.
    /// @return alpha WAD weight of the newest score in the reputation average.
    /// @return proposerShareBps Proposer share of a round's payout.
    /// @return attesterShareBps Attesters' share of a round's payout.
    /// @return ruleParams Rule parameters (off-chain encoding).
    function taskParams(uint256 taskId)
        external
        view
        returns (
            uint32[4] memory timeouts,
            uint256 minStakeWei,
            uint256 reputationThreshold,
            uint256 alpha,
            uint256 proposerShareBps,
            uint256 attesterShareBps,
            bytes memory ruleParams
        )
    {
        Task storage t = _existingTask(taskId);
        timeouts = [t.commitTimeout, t.revealTimeout, t.proposeTimeout, t.attestTimeout];
        return (timeouts, t.minStake, t.reputationThreshold, t.alpha, t.proposerShareBps, t.attesterShareBps, t.ruleParams);
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
        round = t.globalRound;
        cid = round == 0 ? t.initialModelCid : t.globalCid;
    }

    // ---------------------------------------------------------------- rounds

    /// @notice Applies any phase timeouts of the task's open round (slashing unrevealed members,
    /// voiding empty rounds, rejecting disputed proposals). Anyone may call it.
    /// @param taskId The task.
    function advance(uint256 taskId) external {
        Task storage task = _existingTask(taskId);
        if (task.currentRound > task.rounds) revert FedLedgerTaskFinished(taskId);
        _sync(taskId, task);
    }

    /// @notice Draws the open round's committee: K eligible active nodes, sampled from the hash of
    /// the round's seed block. Anyone may call it, from the block after the seed block on.
    /// @dev Manipulation resistance: the seed block is the block that opened the round, so its hash
    /// was unknown when the opening transaction was sent, and the caller of this function cannot
    /// choose it. A block producer can still bias it (by ordering or withholding its own block),
    /// which matters only if the producer colludes with nodes. If more than 256 blocks pass,
    /// `blockhash` returns 0 and the round is reseeded from the current block (a caller could time
    /// that; it only happens when nobody drew for ~50 minutes). Sampling: with at most SHUFFLE_LIMIT
    /// frozen nodes, a seeded partial Fisher-Yates shuffle of them; otherwise up to
    /// TRIES_PER_SEAT * K seeded samples with replacement, skipping ineligible or repeated nodes.
    /// Either way O(K) gas, and the committee may be smaller than K when few nodes are eligible;
    /// with fewer than the task's minimum committee it reseeds if nodes registered since the seed
    /// block, and otherwise reverts: the round waits, never voids for want of members.
    /// Candidates are the nodes active when the seed block was fixed (`population`): a node
    /// registered after it, which could have seen the seed, waits for the next round.
    /// @param taskId The task.
    /// @return members The committee, in draw order (empty if the round was reseeded).
    function drawCommittee(uint256 taskId) external returns (address[] memory members) {
        Task storage task = _existingTask(taskId);
        uint256 round = task.currentRound;
        if (round > task.rounds) revert FedLedgerTaskFinished(taskId);
        Round storage r = _rounds[taskId][round];
        if (r.phase != Phase.Draw) revert FedLedgerWrongPhase(taskId, round, Phase.Draw, r.phase);
        uint256 seedBlock = r.seedBlock;
        if (block.number <= seedBlock) revert FedLedgerSeedNotReady(seedBlock);
        bytes32 hash = blockhash(seedBlock);
        if (hash == bytes32(0)) {
            _reseed(taskId, round, r);
            return members;
        }
        members = _sample(task, uint256(keccak256(abi.encode(hash, taskId, round))), r.population);
        uint256 n = members.length;
        if (n < task.minCommittee) {
            // Too few to check each other. If nodes joined since the seed block, freeze again
            // (from this block on, so the newcomers cannot know the new seed) and draw next block.
            // Otherwise the round waits: a revert, not a void, so a task nobody can serve charges
            // nothing to the nodes that try (a void was paid by whoever drew, every block). With
            // more than 2K active nodes the draw samples and may miss eligible nodes; the seed
            // then changes with the next registration or the 256-block reseed.
            if (_active.length > r.population) {
                _reseed(taskId, round, r);
                return new address[](0);
            }
            revert FedLedgerCommitteeTooSmall(n, task.minCommittee);
        }
        for (uint256 i = 0; i < n; ++i) {
            r.committee[i] = members[i];
            _members[taskId][round][members[i]].index1 = uint8(i + 1);
        }
        r.committeeLen = uint8(n);
        emit CommitteeDrawn(taskId, round, members);
        _enter(taskId, round, r, Phase.Commit, task.commitTimeout);
    }

    /// @notice Commits the caller's update for the open round, without revealing it.
    /// @param taskId The task.
    /// @param round The open round.
    /// @param commitment keccak256(abi.encode(cid, numSamples, salt, msg.sender)), non-zero.
    function commit(uint256 taskId, uint256 round, bytes32 commitment) external {
        (Task storage task, Round storage r) = _syncedRound(taskId, round, Phase.Commit);
        if (commitment == bytes32(0)) revert FedLedgerZeroCommitment();
        if (_members[taskId][round][msg.sender].index1 == 0) {
            revert FedLedgerNotCommitteeMember(taskId, round, msg.sender);
        }
        mapping(address => bytes32) storage commitments = _commitments[taskId][round];
        if (commitments[msg.sender] != bytes32(0)) revert FedLedgerAlreadyCommitted(taskId, round, msg.sender);
        commitments[msg.sender] = commitment;
        _nodes[msg.sender].exposure += 1;
        uint8 count = r.commitCount + 1;
        r.commitCount = count;
        emit UpdateCommitted(taskId, round, msg.sender, commitment);
        if (count == r.committeeLen) _enter(taskId, round, r, Phase.Reveal, task.revealTimeout);
    }

    /// @notice Reveals the caller's committed update; its position in the reveal order is its
    /// position in the aggregation.
    /// @param taskId The task.
    /// @param round The open round.
    /// @param cid CID of the update (UTF-8 bytes of the CID text), non-empty.
    /// @param numSamples Training samples behind the update, in 1..2^96-1.
    /// @param salt The secret salt of the commitment.
    function reveal(uint256 taskId, uint256 round, bytes calldata cid, uint256 numSamples, bytes32 salt) external {
        (Task storage task, Round storage r) = _syncedRound(taskId, round, Phase.Reveal);
        if (cid.length == 0) revert FedLedgerEmptyCid();
        if (numSamples == 0 || numSamples > type(uint96).max) revert FedLedgerBadSamples(numSamples);
        Member storage m = _members[taskId][round][msg.sender];
        if (m.index1 == 0) revert FedLedgerNotCommitteeMember(taskId, round, msg.sender);
        if (m.revealed) revert FedLedgerAlreadyRevealed(taskId, round, msg.sender);
        mapping(address => bytes32) storage commitments = _commitments[taskId][round];
        bytes32 committed = commitments[msg.sender];
        if (committed == bytes32(0)) revert FedLedgerNotCommitted(taskId, round, msg.sender);
        bytes32 revealed = keccak256(abi.encode(cid, numSamples, salt, msg.sender));
        if (revealed != committed) revert FedLedgerCommitmentMismatch(msg.sender, committed, revealed);

        Node storage node = _nodes[msg.sender];
        m.revealed = true;
        m.numSamples = uint96(numSamples);
        bool earned = node.flags & F_EARNED != 0;
        m.earned = earned;
        if (earned) r.anyEarned = true;
        commitments[msg.sender] = keccak256(cid);
        uint8 index = r.revealCount;
        r.order[index] = m.index1 - 1;
        r.revealCount = index + 1;
        node.exposure -= 1;
        emit UpdateRevealed(taskId, round, msg.sender, index, cid, numSamples);
        if (index + 1 == r.commitCount) _endReveal(taskId, round, task, r);
    }

    /// @notice Proposes the round's new global model and one contribution score per revealed
    /// update, in reveal order. The designated proposer (rotating over the revealed participants)
    /// may propose until the propose timeout; after it, any registered node with the task's
    /// minimum stake may.
    /// @param taskId The task.
    /// @param round The open round.
    /// Availability: bit i of `available` says the proposer could fetch update i (reveal order) and
    /// aggregated it. An update it could not fetch is left out of the aggregate and is neutral at
    /// finalize (no reputation change, no pay), so an uploader that serves some nodes and not
    /// others cannot make the proposer's honest peers disagree: they recompute over this set, and
    /// one that cannot fetch an update of the set stays silent rather than disagreeing.
    /// @param globalCid CID of the aggregated model, non-empty.
    /// @param scores WAD scores in [0, WAD], one per revealed update, in reveal order.
    /// @param available Bitmap of the updates aggregated; bits at or above the reveal count must be 0.
    function propose(uint256 taskId, uint256 round, bytes calldata globalCid, uint256[] calldata scores, uint256 available)
        external
    {
        (Task storage task, Round storage r) = _syncedRound(taskId, round, Phase.Propose);
        address designated = _designatedProposer(r);
        if (msg.sender != designated) {
            if (block.timestamp <= r.deadline) revert FedLedgerNotProposer(msg.sender, designated, r.deadline);
            Node storage caller = _registered(msg.sender);
            if (caller.stake < task.minStake || caller.unstakeAt != 0) {
                revert FedLedgerIneligibleProposer(msg.sender, caller.stake, task.minStake);
            }
        }
        if (globalCid.length == 0) revert FedLedgerEmptyCid();
        uint256 n = r.revealCount;
        if (scores.length != n) revert FedLedgerScoresLength(n, scores.length);
        for (uint256 i = 0; i < n; ++i) {
            if (scores[i] > WAD) revert FedLedgerScoreOutOfRange(i, scores[i]);
        }
        if (available >> n != 0) revert FedLedgerBadAvailability(available, n);
        r.proposer = msg.sender;
        r.available = uint64(available); // n <= MAX_COMMITTEE = 64
        r.proposalHash = keccak256(abi.encode(globalCid, scores));
        r.agrees = 0;
        r.disagrees = 0;
        r.abstains = 0;
        r.voters = uint8(_members[taskId][round][msg.sender].revealed ? n - 1 : n);
        _nodes[msg.sender].exposure += 1;
        emit ProposalSubmitted(taskId, round, msg.sender, r.attempt, globalCid, scores, available);
        r.deadline = 0; // the challenge window starts now, even for a late fallback proposal
        _enter(taskId, round, r, Phase.Attest, task.attestTimeout);
    }

    /// @notice Attests to the pending proposal after re-running the aggregation: agree iff the
    /// model CID and every score match. Open to revealed participants other than the proposer.
    /// More than half of the revealed members disagreeing rejects the proposal at once.
    /// @param taskId The task.
    /// @param round The open round.
    /// @param agree Whether the re-execution matched the proposal.
    function attest(uint256 taskId, uint256 round, bool agree) external {
        _vote(taskId, round, agree ? VOTE_AGREE : VOTE_DISAGREE);
    }

    /// @notice Says the caller cannot check the pending proposal: an update the proposer marked
    /// available could not be fetched. Counts as a vote cast, for neither side, so a proposal all
    /// voters have acted on without a majority ends undecided at once (no slash, next proposer)
    /// instead of waiting for the window. Same callers as `attest`.
    /// @param taskId The task.
    /// @param round The open round.
    function abstain(uint256 taskId, uint256 round) external {
        _vote(taskId, round, VOTE_ABSTAIN);
    }

    function _vote(uint256 taskId, uint256 round, uint8 vote) private {
        (Task storage task, Round storage r) = _syncedRound(taskId, round, Phase.Attest);
        if (block.timestamp > r.deadline) revert FedLedgerPhaseExpired(taskId, round, r.deadline);
        Member storage m = _members[taskId][round][msg.sender];
        if (!m.revealed || msg.sender == r.proposer) revert FedLedgerNotAttester(taskId, round, msg.sender);
        uint16 attempt = r.attempt;
        uint256 votes = m.votes;
        uint256 shift = 2 * uint256(attempt);
        if ((votes >> shift) & 3 != 0) revert FedLedgerAlreadyAttested(msg.sender, attempt);
        m.votes = uint8(votes | (uint256(vote) << shift)); // attempt < MAX_ATTEMPTS = 4: 8 bits hold them all
        if (vote == VOTE_AGREE) {
            r.agrees += 1;
        } else if (vote == VOTE_DISAGREE) {
            r.disagrees += 1;
        } else {
            r.abstains += 1;
        }
        if (vote == VOTE_ABSTAIN) {
            emit Abstained(taskId, round, msg.sender, attempt);
        } else {
            emit Attested(taskId, round, msg.sender, attempt, vote == VOTE_AGREE);
        }
        if (_rejected(r)) {
            _endAttempt(taskId, round, task, r, true);
        } else if (uint256(r.agrees) + r.disagrees + r.abstains == r.voters && !_accepted(r)) {
            _endAttempt(taskId, round, task, r, false); // every vote is in and none decides: no need to wait
        }
    }

    /// @notice Finalizes the pending proposal once it is accepted, as soon as a strict majority of
    /// the attesters (the revealed members other than the proposer) agree: records the model,
    /// updates reputations, credits rewards, opens the next round.
    /// Anyone may call it; the proposal's model and scores are passed again (only their hash is stored).
    /// @param taskId The task.
    /// @param round The open round.
    /// @param globalCid The pending proposal's model CID.
    /// @param scores The pending proposal's scores.
    function finalize(uint256 taskId, uint256 round, bytes calldata globalCid, uint256[] calldata scores) external {
        (Task storage task, Round storage r) = _syncedRound(taskId, round, Phase.Attest);
        bytes32 hash = keccak256(abi.encode(globalCid, scores));
        if (hash != r.proposalHash) revert FedLedgerProposalMismatch(r.proposalHash, hash);
        if (!_accepted(r)) revert FedLedgerNotDecided(taskId, round, r.agrees, r.voters, r.deadline);
        address proposer = r.proposer;
        _nodes[proposer].exposure -= 1;
        _settle(taskId, round, task, r, scores, proposer);
        task.globalCid = globalCid;
        task.globalRound = uint32(round);
        emit RoundFinalized(taskId, round, globalCid);
        _closeRound(taskId, round, task, r, Phase.Finalized);
    }

    /// @notice Returns a round's public state.
    /// @param taskId The task.
    /// @param round The round.
    /// @return state See `RoundView`; all zero for a round not opened yet.
    function roundState(uint256 taskId, uint256 round) external view returns (RoundView memory state) {
        _existingTask(taskId);
        Round storage r = _rounds[taskId][round];
        state = RoundView({
            phase: r.phase,
            committeeLen: r.committeeLen,
            commitCount: r.commitCount,
            revealCount: r.revealCount,
            voters: r.voters,
            agrees: r.agrees,
            disagrees: r.disagrees,
            abstains: r.abstains,
            attempt: r.attempt,
            deadline: r.deadline,
            seedBlock: r.seedBlock,
            openedBlock: r.openedBlock,
            proposer: r.proposer,
            proposalHash: r.proposalHash,
            available: r.available
        });
    }

    /// @notice Returns a round's committee in draw order.
    /// @param taskId The task.
    /// @param round The round.
    /// @return members The members.
    function committee(uint256 taskId, uint256 round) external view returns (address[] memory members) {
        _existingTask(taskId);
        Round storage r = _rounds[taskId][round];
        members = new address[](r.committeeLen);
        for (uint256 i = 0; i < members.length; ++i) {
            members[i] = r.committee[i];
        }
    }

    /// @notice Returns a round's revealed updates in reveal order, the canonical aggregation order.
    /// @dev CIDs themselves are in the `UpdateRevealed` events (storing them would cost ~60k gas per
    /// update); `cidHashes` lets anyone check a CID taken from the logs or from a peer.
    /// @param taskId The task.
    /// @param round The round.
    /// @return senders Revealing nodes.
    /// @return numSamples Claimed sample counts.
    /// @return cidHashes keccak256 of each update's CID bytes.
    /// @return earned Whether each sender had earned influence (in any task) before it revealed: by
    /// a score above 0, or by training in a founding round, one in which no revealed sender had
    /// earned (a new federation's first round). Reputation before influence: the aggregate takes
    /// the updates of senders that had earned and scores every update against it, so an identity
    /// that joins an established federation counts only once it has scored above 0. In a founding
    /// round every update counts.
    function roundUpdates(uint256 taskId, uint256 round)
        external
        view
        returns (address[] memory senders, uint256[] memory numSamples, bytes32[] memory cidHashes, bool[] memory earned)
    {
        _existingTask(taskId);
        Round storage r = _rounds[taskId][round];
        uint256 n = r.revealCount;
        senders = new address[](n);
        numSamples = new uint256[](n);
        cidHashes = new bytes32[](n);
        earned = new bool[](n);
        for (uint256 i = 0; i < n; ++i) {
            address sender = r.committee[r.order[i]];
            Member storage m = _members[taskId][round][sender];
            senders[i] = sender;
            numSamples[i] = m.numSamples;
            cidHashes[i] = _commitments[taskId][round][sender];
            earned[i] = m.earned;
        }
    }

    /// @notice Returns who may propose in the open round before the propose timeout.
    /// @param taskId The task.
    /// @param round The round.
    /// @return The designated proposer (zero before any reveal).
    function designatedProposer(uint256 taskId, uint256 round) external view returns (address) {
        _existingTask(taskId);
        return _designatedProposer(_rounds[taskId][round]);
    }

    /// @notice Returns a node's standing in a round.
    /// @param taskId The task.
    /// @param round The round.
    /// @param node The node.
    /// @return member Whether it sits on the committee.
    /// @return commitment Its commitment (keccak256 of its CID once revealed); zero if none.
    /// @return revealed Whether it revealed.
    /// @return vote Its latest attestation: 0 none, 1 agree, 2 disagree, 3 abstain.
    /// @return voteAttempt The proposal attempt that vote was for.
    function memberInfo(uint256 taskId, uint256 round, address node)
        external
        view
        returns (bool member, bytes32 commitment, bool revealed, uint8 vote, uint16 voteAttempt)
    {
        Member storage m = _members[taskId][round][node];
        uint256 votes = m.votes;
        for (uint256 a = MAX_ATTEMPTS; a > 0; --a) {
            uint256 v = (votes >> (2 * (a - 1))) & 3;
            if (v != 0) {
                (vote, voteAttempt) = (uint8(v), uint16(a - 1));
                break;
            }
        }
        return (m.index1 != 0, _commitments[taskId][round][node], m.revealed, vote, voteAttempt);
    }

    // ---------------------------------------------------------------- payments

    /// @notice Returns the wei an account can withdraw.
    /// @param account The account.
    /// @return Pending wei.
    function pendingRewards(address account) external view returns (uint256) {
        return _pending[account];
    }

    /// @notice Returns a node's probation: whether it is on it, the rounds scored so far and the
    /// rewards held until it ends (see PROBATION_ROUNDS).
    /// @param node The node's account.
    /// @return onProbation Whether its rewards are still held.
    /// @return scored Rounds scored while on probation.
    /// @return held Held wei.
    function probationOf(address node) external view returns (bool onProbation, uint256 scored, uint256 held) {
        Node storage n = _nodes[node];
        return (n.flags & F_PROBATION != 0, n.scored, _held[node]);
    }

    /// @notice Sends the caller all of its pending rewards.
    /// @dev Checks-effects-interactions: the balance is zeroed before the call, so a re-entrant
    /// `withdraw` finds nothing; a recipient that rejects ether only reverts its own withdrawal.
    function withdraw() external {
        uint256 amount = _pending[msg.sender];
        if (amount == 0) revert FedLedgerNothingToWithdraw(msg.sender);
        _pending[msg.sender] = 0;
        emit Withdrawn(msg.sender, amount);
        (bool ok,) = payable(msg.sender).call{value: amount}("");
        if (!ok) revert FedLedgerTransferFailed(msg.sender);
    }

    // ---------------------------------------------------------------- internals: nodes

    function _registered(address account) private view returns (Node storage node) {
        node = _nodes[account];
        if (node.flags & F_REGISTERED == 0) revert FedLedgerNotRegistered(account);
    }

    function _setPeer(address account, string calldata peerId, string[] calldata multiaddrs) private {
        PeerInfo storage p = _peers[account];
        p.peerId = peerId;
        // Element-wise: the legacy code generator cannot copy nested calldata arrays to storage.
        // The caller pays for its own list, so this loop is not over anyone else's data.
        for (uint256 i = 0; i < multiaddrs.length; ++i) {
            p.multiaddrs.push(multiaddrs[i]);
        }
    }

    /// @dev O(1) swap-and-pop, so leaving never iterates over the active set.
    function _removeActive(Node storage node) private {
        uint256 index = node.activeIndex;
        uint256 last = _active.length - 1;
        if (index != last) {
            address moved = _active[last];
            _active[index] = moved;
            _nodes[moved].activeIndex = uint32(index);
        }
        _active.pop();
        node.flags &= ~F_ACTIVE;
    }

    /// @dev A newcomer not yet scored may sit whatever the task's threshold (its first round is how
    /// it earns reputation: a threshold above INITIAL_REPUTATION would otherwise lock newcomers out).
    function _eligible(Node storage node, Task storage task) private view returns (bool) {
        uint8 flags = node.flags;
        return flags & F_ACTIVE != 0 && node.stake >= task.minStake
            && (node.reputation >= task.reputationThreshold || (flags & F_PROBATION != 0 && node.scored == 0));
    }

    function _slash(address account, uint256 taskId, uint256 round, Task storage task, SlashReason reason)
        private
    {
        Node storage node = _nodes[account];
        node.exposure -= 1;
        uint256 amount = node.stake < task.minStake ? node.stake : task.minStake;
        if (amount == 0) return;
        node.stake -= uint96(amount);
        task.rewardRemaining += amount; // stays in the contract: conservation holds
        emit Slashed(account, taskId, round, amount, reason);
    }

    // ---------------------------------------------------------------- internals: tasks and rounds

    function _validate(TaskConfig calldata c) private view {
        if (c.modelCid.length == 0 || c.specCid.length == 0) revert FedLedgerEmptyCid();
        if (msg.value == 0) revert FedLedgerInvalidTask(TaskParam.RewardPool, 0);
        // rounds == max would wrap `currentRound` past the last round and lock the pool.
        if (c.rounds == 0 || c.rounds == type(uint32).max) revert FedLedgerInvalidTask(TaskParam.Rounds, c.rounds);
        if (c.committeeSize == 0 || c.committeeSize > MAX_COMMITTEE) {
            revert FedLedgerInvalidTask(TaskParam.CommitteeSize, c.committeeSize);
        }
        uint32[4] memory timeouts = [c.commitTimeout, c.revealTimeout, c.proposeTimeout, c.attestTimeout];
        for (uint256 i = 0; i < 4; ++i) {
            if (timeouts[i] == 0 || timeouts[i] > MAX_TIMEOUT) revert FedLedgerInvalidTask(TaskParam.Timeout, timeouts[i]);
        }
        if (c.reputationThreshold > WAD) {
            revert FedLedgerInvalidTask(TaskParam.ReputationThreshold, c.reputationThreshold);
        }
        if (c.alpha > WAD) revert FedLedgerInvalidTask(TaskParam.Alpha, c.alpha);
        uint256 shares = uint256(c.proposerShareBps) + c.attesterShareBps;
        if (shares > BPS) revert FedLedgerInvalidTask(TaskParam.Shares, shares);
        if (c.minCommittee == 0 || c.minCommittee > c.committeeSize) {
            revert FedLedgerInvalidTask(TaskParam.MinCommittee, c.minCommittee);
        }
    }

    function _existingTask(uint256 taskId) private view returns (Task storage task) {
        task = _tasks[taskId];
        if (task.owner == address(0)) revert FedLedgerUnknownTask(taskId);
    }

    /// @dev The open round after timeouts are applied, checked to be `round` and in `phase`.
    function _syncedRound(uint256 taskId, uint256 round, Phase phase)
        private
        returns (Task storage task, Round storage r)
    {
        task = _existingTask(taskId);
        uint256 current = task.currentRound;
        if (current > task.rounds) revert FedLedgerTaskFinished(taskId);
        if (round != current) revert FedLedgerWrongRound(taskId, current, round);
        r = _sync(taskId, task);
        if (task.currentRound != current) revert FedLedgerWrongPhase(taskId, round, phase, Phase.Void);
        if (r.phase != phase) revert FedLedgerWrongPhase(taskId, round, phase, r.phase);
    }

    /// @dev Applies the timeouts of the open round, as often as they apply. Each step either ends
    /// the round or moves it to a phase with a fresh deadline, so the loop runs at most four times.
    function _sync(uint256 taskId, Task storage task) private returns (Round storage r) {
        uint256 round = task.currentRound;
        r = _rounds[taskId][round];
        while (true) {
            Phase phase = r.phase;
            bool expired = block.timestamp > r.deadline;
            if (phase == Phase.Commit && expired) {
                if (r.commitCount == 0) {
                    _closeRound(taskId, round, task, r, Phase.Void);
                    return r;
                }
                _enter(taskId, round, r, Phase.Reveal, task.revealTimeout);
            } else if (phase == Phase.Reveal && expired) {
                _endReveal(taskId, round, task, r);
                if (r.phase == Phase.Void) return r;
            } else if (phase == Phase.Attest && expired && !_accepted(r)) {
                // Not rejected either (a strict majority disagreeing ends the attempt at once).
                _endAttempt(taskId, round, task, r, false);
                if (r.phase == Phase.Void) return r;
            } else {
                return r;
            }
        }
    }

    /// @dev A phase ended early starts its successor now; one ended by its deadline starts it at that
    /// deadline, so the schedule does not depend on when somebody happens to call `_sync`.
    function _enter(uint256 taskId, uint256 round, Round storage r, Phase phase, uint256 timeout) private {
        uint256 start = block.timestamp > r.deadline && r.deadline != 0 ? r.deadline : block.timestamp;
        uint256 deadline = start + timeout;
        r.phase = phase;
        r.deadline = uint40(deadline);
        emit PhaseChanged(taskId, round, phase, deadline);
    }

    /// @dev A new seed block (this one) and a new frozen population (the active nodes now); the
    /// committee is drawn from the next block on.
    function _reseed(uint256 taskId, uint256 round, Round storage r) private {
        r.seedBlock = uint40(block.number);
        r.population = uint32(_active.length);
        emit CommitteeReseeded(taskId, round, block.number);
    }

    function _openRound(uint256 taskId, uint256 round) private {
        Round storage r = _rounds[taskId][round];
        r.seedBlock = uint40(block.number);
        r.openedBlock = uint40(block.number);
        r.population = uint32(_active.length);
        emit PhaseChanged(taskId, round, Phase.Draw, 0);
    }

    /// @dev Ends the reveal phase: slashes members that committed and never revealed (one pass over
    /// the committee, only when someone is missing), then voids the round or opens proposing.
    function _endReveal(uint256 taskId, uint256 round, Task storage task, Round storage r) private {
        if (r.revealCount < r.commitCount) {
            uint256 n = r.committeeLen;
            for (uint256 i = 0; i < n; ++i) {
                address member = r.committee[i];
                if (_commitments[taskId][round][member] != bytes32(0) && !_members[taskId][round][member].revealed) {
                    _slash(member, taskId, round, task, SlashReason.Unrevealed);
                }
            }
        }
        if (r.revealCount == 0) {
            _closeRound(taskId, round, task, r, Phase.Void);
        } else {
            _enter(taskId, round, r, Phase.Propose, task.proposeTimeout);
        }
    }

    /// @dev The attempt-th revealed member (mod the reveal count) in draw order. Draw order comes
    /// from the round's seed, fixed before anyone could act, so a member cannot make itself the
    /// proposer by timing its reveal; withholding a reveal only passes the turn to the next drawn.
    function _designatedProposer(Round storage r) private view returns (address) {
        uint256 n = r.revealCount;
        if (n == 0) return address(0);
        // `order` (reveal order -> draw index) packs 32 indices per slot, the first in the lowest
        // byte; read the slots whole rather than one SLOAD per entry.
        uint8[MAX_COMMITTEE] storage order = r.order;
        uint256 revealed = 0; // bit i: draw index i revealed
        uint256 word;
        for (uint256 i = 0; i < n; ++i) {
            if (i % 32 == 0) {
                assembly ("memory-safe") {
                    word := sload(add(order.slot, shr(5, i)))
                }
            }
            revealed |= 1 << ((word >> (8 * (i % 32))) & 0xff);
        }
        uint256 turn = r.attempt % n;
        for (uint256 index = 0; ; ++index) {
            if ((revealed >> index) & 1 == 0) continue;
            if (turn == 0) return r.committee[index];
            --turn;
        }
        return address(0); // unreachable: `revealed` has n set bits and turn < n
    }

    /// @dev Accepted: a strict majority of the voters agree. The voters are fixed when the proposal
    /// is posted: every revealed member except the proposer, so an outside (fallback) proposer
    /// neither adds a seat nor removes one. Ties and silence are not acceptance, and with no
    /// voters at all (a lone revealed member proposing) nothing is ever accepted.
    function _accepted(Round storage r) private view returns (bool) {
        return uint256(r.agrees) * 2 > r.voters;
    }

    /// @dev Rejected: more than half of the round's revealed members disagree; the only outcome
    /// that slashes. A revealed proposer's own seat counts on its side: otherwise half of the
    /// members who did the round's work (2 of 4: the proposer's 3 voters hold 2 of them) could
    /// slash it. An outside proposer has every revealed member as a voter, so this is the same
    /// count as theirs. A tie slashes nobody.
    function _rejected(Round storage r) private view returns (bool) {
        return uint256(r.disagrees) * 2 > r.revealCount;
    }

    /// @dev Ends the pending proposal without finalizing it. Rejected (`slash`): the proposer loses
    /// its stake. Undecided (the window closed, or a tie): the proposer's exposure is released
    /// and nobody is slashed, since an honest proposer can fail to convince attesters that could
    /// not fetch an update. Either way the next proposer gets its turn, and after MAX_ATTEMPTS
    /// proposals the round is void (the pool carries over), so `attempt` never wraps.
    function _endAttempt(uint256 taskId, uint256 round, Task storage task, Round storage r, bool slash) private {
        address proposer = r.proposer;
        uint256 attempt = r.attempt;
        if (slash) {
            emit ProposalRejected(taskId, round, proposer, attempt, r.agrees, r.disagrees);
            r.rejected |= uint8(1 << attempt); // attempt < MAX_ATTEMPTS = 4
            _slash(proposer, taskId, round, task, SlashReason.RejectedProposal);
        } else {
            emit ProposalUndecided(taskId, round, proposer, attempt, r.agrees, r.disagrees);
            _nodes[proposer].exposure -= 1;
        }
        r.proposer = address(0);
        r.available = 0;
        r.proposalHash = bytes32(0);
        r.agrees = 0;
        r.disagrees = 0;
        r.abstains = 0;
        r.voters = 0;
        if (attempt + 1 >= MAX_ATTEMPTS) {
            if (r.rejected != 0) _judgeVoidRound(taskId, round, task, r);
            _closeRound(taskId, round, task, r, Phase.Void);
            return;
        }
        r.attempt = uint16(attempt + 1);
        _enter(taskId, round, r, Phase.Propose, task.proposeTimeout);
    }

    /// @dev Closes the round with `outcome` (Finalized or Void) and opens the next one; after the
    /// last round, whatever the pool still holds (dust, unearned shares, slashes) goes to the owner.
    function _closeRound(uint256 taskId, uint256 round, Task storage task, Round storage r, Phase outcome) private {
        r.phase = outcome;
        r.deadline = 0;
        if (outcome == Phase.Void) emit RoundVoided(taskId, round);
        emit PhaseChanged(taskId, round, outcome, 0);
        task.currentRound = uint32(round + 1);
        if (round == task.rounds) {
            uint256 leftover = task.rewardRemaining;
            task.rewardRemaining = 0;
            _creditPending(task.owner, taskId, round, leftover); // never held: it is a refund
        } else {
            _openRound(taskId, round + 1);
        }
    }

    // ---------------------------------------------------------------- internals: incentives

    /// @dev Reputation: rep := (rep * (WAD - alpha) + score * alpha) / WAD. The round pays
    /// share = rewardRemaining / (rounds - round + 1): proposerShareBps of it to the proposer,
    /// attesterShareBps to the attesters, per vote that matched its proposal's outcome (agree with
    /// the accepted one, disagree with one of this round's rejected ones), the rest to the trainers
    /// in proportion to score * newRep / WAD. Each agreement with a rejected proposal of the round
    /// is one more EMA step at score 0, after the training step: an attester that agrees without
    /// checking pays for it (#16, contracts/README.md "Paying attesters for checking"). Nodes whose
    /// (new) reputation is below the task threshold get nothing; what nobody earns, and
    /// floor-division dust, stays in the pool. An update the proposer marked unavailable is neutral
    /// for training: no training step, nothing earned this round (neither as trainer nor as
    /// attester); its sender's wrong votes still cost it. Two passes over the revealed updates: the
    /// weights need every new reputation before any payout is divided. A newcomer's reward is held
    /// and its probation judged after its credit (`_judgeProbation`).
    function _settle(
        uint256 taskId,
        uint256 round,
        Task storage task,
        Round storage r,
        uint256[] calldata scores,
        address proposer
    ) private {
        uint256 n = scores.length;
        uint256 threshold = task.reputationThreshold;
        uint256 alpha = task.alpha;
        address[] memory senders = new address[](n);
        // weight << 8 | right votes, one word per update (weight <= WAD, right <= MAX_ATTEMPTS):
        // a second array would cost every finalize its allocation
        uint256[] memory earned = new uint256[](n);
        uint256 sumWeights = 0;
        uint256 sumRight = 0;
        uint256 attempt = r.attempt;
        uint256 rejected = r.rejected;
        uint256 available = r.available;
        bool founding = !r.anyEarned;
        for (uint256 i = 0; i < n; ++i) {
            address sender = r.committee[r.order[i]];
            senders[i] = sender;
            (uint256 right, uint256 wrong) = _judgeVotes(_members[taskId][round][sender].votes, attempt, rejected);
            bool aggregated = (available >> i) & 1 != 0;
            if (!aggregated && wrong == 0) continue;
            uint256 newRep = _updateReputation(sender, aggregated, scores[i], wrong, alpha, founding);
            if (!aggregated || newRep < threshold) continue;
            uint256 weight = scores[i] * newRep / WAD;
            earned[i] = (weight << 8) | right;
            sumWeights += weight;
            sumRight += right;
        }

        // The round's budget is fixed first (an equal part of what is left), then split; the
        // floor of each division is at most a few wei and stays in the pool (Slither's
        // divide-before-multiply, accepted: see contracts/README.md).
        uint256 share = task.rewardRemaining / (uint256(task.rounds) - round + 1);
        // slither-disable-next-line divide-before-multiply
        uint256 proposerCut = share * task.proposerShareBps / BPS;
        // slither-disable-next-line divide-before-multiply
        uint256 attesterCut = share * task.attesterShareBps / BPS;
        uint256 trainerCut = share - proposerCut - attesterCut;
        uint256 paid = 0;
        if (_nodes[proposer].reputation >= threshold) {
            paid += _credit(proposer, taskId, round, proposerCut);
        }
        uint256 perVote = sumRight == 0 ? 0 : attesterCut / sumRight;
        for (uint256 i = 0; i < n; ++i) {
            uint256 e = earned[i];
            uint256 amount = sumWeights == 0 ? 0 : trainerCut * (e >> 8) / sumWeights;
            // slither-disable-next-line divide-before-multiply
            amount += perVote * (e & 0xff);
            paid += _credit(senders[i], taskId, round, amount);
            _judgeProbation(senders[i], taskId, round, task, threshold);
        }
        task.rewardRemaining -= paid;
    }

    /// @dev Ends a newcomer's probation once it is under the task's threshold (forfeit) or has been
    /// scored PROBATION_ROUNDS times (vest if its reputation is at least INITIAL_REPUTATION, else
    /// forfeit). Runs after the round's credit, so the last probation round's reward is judged with
    /// the rest. A forfeit goes to this task's pool, for its later rounds (or its owner).
    function _judgeProbation(address account, uint256 taskId, uint256 round, Task storage task, uint256 threshold)
        private
    {
        Node storage node = _nodes[account];
        if (node.flags & F_PROBATION == 0) return;
        uint256 rep = node.reputation;
        bool under = rep < threshold;
        if (!under && node.scored < PROBATION_ROUNDS) return;
        node.flags &= ~F_PROBATION;
        uint256 held = _held[account];
        if (held != 0) _held[account] = 0;
        if (under || rep < INITIAL_REPUTATION) {
            task.rewardRemaining += held; // stays in the contract: conservation holds
            emit ProbationEnded(account, taskId, round, rep, 0, held);
        } else {
            _creditPending(account, taskId, round, held);
            emit ProbationEnded(account, taskId, round, rep, held, 0);
        }
    }

    /// @dev A member's votes in a round judged by the outcomes: `right` counts its agreement with
    /// the accepted attempt and its disagreements with rejected ones, `wrong` its agreements with
    /// rejected ones. Undecided attempts and abstentions count neither way (nobody can tell who was
    /// right), nor does disagreeing with the accepted proposal (it earns nothing already).
    function _judgeVotes(uint256 votes, uint256 attempt, uint256 rejected)
        private
        pure
        returns (uint256 right, uint256 wrong)
    {
        if ((votes >> (2 * attempt)) & 3 == VOTE_AGREE) right = 1;
        if (rejected == 0) return (right, 0);
        for (uint256 a = 0; a < attempt; ++a) {
            if ((rejected >> a) & 1 == 0) continue;
            uint256 v = (votes >> (2 * a)) & 3;
            if (v == VOTE_DISAGREE) ++right;
            else if (v == VOTE_AGREE) ++wrong;
        }
    }

    /// @dev A round that ends void pays nobody, but an agreement with one of its rejected proposals
    /// still costs its zero-score step: else a lazy attester escapes whenever the round fails. One
    /// pass over the revealed members, only when a proposal of the round was rejected.
    function _judgeVoidRound(uint256 taskId, uint256 round, Task storage task, Round storage r) private {
        uint256 n = r.revealCount;
        uint256 rejected = r.rejected;
        uint256 alpha = task.alpha;
        for (uint256 i = 0; i < n; ++i) {
            address member = r.committee[r.order[i]];
            (, uint256 wrong) = _judgeVotes(_members[taskId][round][member].votes, MAX_ATTEMPTS, rejected);
            if (wrong != 0) _updateReputation(member, false, 0, wrong, alpha, false);
        }
    }

    /// @dev The training step (when the update was aggregated), then one step at score 0 per wrong vote.
    /// A trained update earns its sender influence (F_EARNED) when it scored above 0, or whatever it
    /// scored in a founding round (one in which no revealed sender had earned yet).
    function _updateReputation(address account, bool trained, uint256 score, uint256 wrong, uint256 alpha, bool founding)
        private
        returns (uint256 newRep)
    {
        Node storage node = _nodes[account];
        uint256 oldRep = node.reputation;
        newRep = oldRep;
        if (trained) {
            newRep = (newRep * (WAD - alpha) + score * alpha) / WAD; // a convex mix: stays in [0, WAD]
            if (node.flags & F_PROBATION != 0 && node.scored < PROBATION_ROUNDS) ++node.scored;
            if (score != 0 || founding) node.flags |= F_EARNED;
        }
        for (uint256 k = 0; k < wrong; ++k) {
            // Each step is floored as the mirror floors it (Slither's divide-before-multiply,
            // accepted: see contracts/README.md).
            // slither-disable-next-line divide-before-multiply
            newRep = newRep * (WAD - alpha) / WAD;
        }
        node.reputation = uint64(newRep);
        emit ReputationUpdated(account, oldRep, newRep);
    }

    /// @dev A reward: held while the account is a newcomer on probation, else withdrawable.
    function _credit(address account, uint256 taskId, uint256 round, uint256 amount) private returns (uint256) {
        if (amount == 0) return 0;
        if (_nodes[account].flags & F_PROBATION != 0) {
            _held[account] += amount;
            emit RewardHeld(account, taskId, round, amount);
        } else {
            _pending[account] += amount;
            emit RewardCredited(account, taskId, round, amount);
        }
        return amount;
    }

    /// @dev Wei made withdrawable at once (a vest, a task's leftover to its owner).
    function _creditPending(address account, uint256 taskId, uint256 round, uint256 amount) private {
        if (amount == 0) return;
        _pending[account] += amount;
        emit RewardCredited(account, taskId, round, amount);
    }

    /// @dev Committee sampling; see `drawCommittee`. Duplicates are caught in memory (K <= 64).
    /// Only the first `frozen` entries of the active array are candidates: the nodes active when
    /// the seed block was fixed. A node registering once the seed is public is appended past them
    /// and waits for the next round, so sybils cannot be added after seeing the draw's seed.
    function _sample(Task storage task, uint256 seed, uint256 frozen) private view returns (address[] memory chosen) {
        uint256 k = task.committeeSize;
        uint256 population = _active.length < frozen ? _active.length : frozen;
        chosen = new address[](k);
        uint256 count = 0;
        if (population == 0) return _truncate(chosen, 0);
        // At most TRIES_PER_SEAT * K candidates are looked at (every one when there are at most 2K).
        uint256 tries = population <= 2 * k ? population : TRIES_PER_SEAT * k;
        if (population <= SHUFFLE_LIMIT) {
            // Candidates in a seeded random order without repeats (a partial Fisher-Yates shuffle of
            // the indices, in memory): the seats go to a uniformly random set of the eligible nodes,
            // and nodes that registered one after another are no likelier to sit together.
            if (tries > population) tries = population;
            uint256[] memory order = new uint256[](population);
            for (uint256 t = 0; t < tries && count < k; ++t) {
                // slither-disable-next-line weak-prng
                uint256 j = t + uint256(keccak256(abi.encode(seed, t))) % (population - t);
                uint256 picked = order[j] == 0 ? j : order[j] - 1; // 0: never moved, holds its own index
                order[j] = (order[t] == 0 ? t : order[t] - 1) + 1;
                address candidate = _active[picked];
                if (_eligible(_nodes[candidate], task)) chosen[count++] = candidate;
            }
            return _truncate(chosen, count);
        }
        // A large population: seeded draws with replacement, repeats and ineligible nodes skipped
        // (uniform over the eligible nodes found; may seat fewer than K when few are eligible).
        for (uint256 t = 0; t < tries && count < k; ++t) {
            // slither-disable-next-line weak-prng
            uint256 index = uint256(keccak256(abi.encode(seed, t))) % population;
            address candidate = _active[index];
            if (!_eligible(_nodes[candidate], task) || _contains(chosen, count, candidate)) continue;
            chosen[count++] = candidate;
        }
        return _truncate(chosen, count);
    }

    function _contains(address[] memory list, uint256 length, address item) private pure returns (bool) {
        for (uint256 i = 0; i < length; ++i) {
            if (list[i] == item) return true;
        }
        return false;
    }

    function _truncate(address[] memory list, uint256 length) private pure returns (address[] memory) {
        assembly ("memory-safe") {
            mstore(list, length)
        }
        return list;
    }
}
