//! The contract's messages: what the hub's settler, providers, payers and the admin send, and what
//! queries answer. The shape is the shared API in /tmp/notes/contract-api.md (other crates code
//! against it): fields may be added, never renamed or removed. Amounts are `Uint128` in the chain's
//! smallest unit of `params.denom`; times are block-time seconds unless named `_ms`.

use cosmwasm_schema::{QueryResponses, cw_serde};
use cosmwasm_std::{Binary, Decimal, Uint128};

#[cw_serde]
pub struct InstantiateMsg {
    pub params: Params,
    /// The only address that may post batches (the hub's relayer key).
    pub settler: String,
    /// May change parameters and configuration and slash; can be the chain's governance module
    /// account, so parameters change by on-chain vote.
    pub admin: String,
    /// Receives protocol fees and slashed stake.
    pub treasury: String,
}

#[cw_serde]
pub struct Params {
    /// The one denom the contract holds (stakes, escrow, payouts).
    pub denom: String,
    /// Bonded stake an operator needs for its nodes to get work (the hub reads it); a `Bond` must
    /// leave the operator at least this much bonded.
    pub min_stake: Uint128,
    /// How long unbonded stake stays slashable before it can be claimed.
    pub unbonding_seconds: u64,
    /// How long after posting a batch can be challenged; it can be finalized only afterwards.
    pub challenge_window_seconds: u64,
    /// The protocol's cut of each provider total, in basis points (≤ 10000).
    pub protocol_fee_bps: u16,
    pub slash_ratios: SlashRatios,
    /// How long a slashed operator stays jailed (its nodes get no work while jailed).
    pub jail_seconds: u64,
}

/// The share of an operator's stake (bonded + unbonding) a slash takes, per reason; each ≤ 1.
#[cw_serde]
pub struct SlashRatios {
    pub fraud: Decimal,
    pub cheating: Decimal,
    pub downtime: Decimal,
}

#[cw_serde]
pub enum SlashReason {
    Fraud,
    Cheating,
    Downtime,
}

/// The epoch a batch settles, Unix milliseconds.
#[cw_serde]
pub struct Period {
    pub from_ms: u64,
    pub to_ms: u64,
}

/// One address's amount in a batch (a provider's gross pay, or a payer's charge).
#[cw_serde]
pub struct Total {
    pub address: String,
    pub amount: Uint128,
}

/// A receipt in a batch's Merkle tree that contradicts the batch (see docs/settlement.md, "The
/// contract"): the leaf bytes and their RFC 6962 inclusion proof in the batch's root.
#[cw_serde]
pub struct ChallengeEvidence {
    /// The leaf: the canonical receipt bytes (docs/settlement.md, "Usage receipts").
    pub receipt: Binary,
    /// Sibling hashes from the leaf up, each 32 bytes as hex.
    pub proof: Vec<String>,
    /// The leaf's position in the tree (0-based).
    pub index: u64,
    /// The number of leaves in the tree: must equal the batch's `receipts`.
    pub tree_size: u64,
}

#[cw_serde]
pub enum ExecuteMsg {
    /// Funds in `denom`: adds to the sender's bonded stake.
    Bond {},
    /// Moves `amount` of bonded stake into a claim maturing after `unbonding_seconds` (still
    /// slashable until claimed).
    Unbond { amount: Uint128 },
    /// Pays the sender's matured claims.
    Claim {},
    /// Ties node `node` and its secp256k1 key (compressed SEC1, 33 bytes as hex) to the sender.
    RegisterNode { node: String, pubkey: String },
    /// Funds in `denom`: adds to the sender's escrow as a payer.
    Deposit {},
    /// Returns `amount` of the sender's free escrow (what no pending batch reserves).
    Withdraw { amount: Uint128 },
    /// Settler only. Idempotent by `id`: the same content again is a no-op, different content an
    /// error. Reserves each payer's total from its free escrow.
    PostBatch {
        id: String,
        /// The RFC 6962 Merkle root of the batch's receipts, 32 bytes as hex.
        root: String,
        period: Period,
        /// Number of receipts (leaves) in the tree.
        receipts: u64,
        provider_totals: Vec<Total>,
        payer_totals: Vec<Total>,
    },
    /// Anyone, once the challenge window is over: escrow → providers, less the fee → treasury.
    FinalizeBatch { id: String },
    /// Anyone, within the challenge window.
    Challenge {
        batch: String,
        evidence: ChallengeEvidence,
    },
    /// Settler or admin: takes the reason's ratio of the operator's stake and jails it.
    Slash {
        operator: String,
        reason: SlashReason,
        evidence: String,
    },
    /// Admin only. The denom cannot change (balances are held in it).
    UpdateParams { params: Params },
    /// Admin only (an addition to the shared API): rotates the settler, admin or treasury.
    UpdateConfig {
        settler: Option<String>,
        admin: Option<String>,
        treasury: Option<String>,
    },
}

#[cw_serde]
#[derive(QueryResponses)]
pub enum QueryMsg {
    #[returns(Params)]
    Params {},
    #[returns(ConfigResponse)]
    Config {},
    #[returns(StakeResponse)]
    Stake { operator: String },
    #[returns(ClaimsResponse)]
    Claims { operator: String },
    #[returns(EscrowResponse)]
    Escrow { payer: String },
    /// Errors if the node is not registered.
    #[returns(NodeResponse)]
    Node { node: String },
    /// Errors if there is no such batch.
    #[returns(BatchResponse)]
    Batch { id: String },
    /// Ordered by id.
    #[returns(BatchesResponse)]
    Batches {
        start_after: Option<String>,
        limit: Option<u32>,
    },
    #[returns(OperatorResponse)]
    Operator { address: String },
    /// Addition: every operator with stake, claims or nodes, ordered by address.
    #[returns(OperatorsResponse)]
    Operators {
        start_after: Option<String>,
        limit: Option<u32>,
    },
    /// Addition: registered nodes ordered by name.
    #[returns(NodesResponse)]
    Nodes {
        start_after: Option<String>,
        limit: Option<u32>,
    },
    /// Addition: payers' escrow ordered by address.
    #[returns(EscrowsResponse)]
    Escrows {
        start_after: Option<String>,
        limit: Option<u32>,
    },
    #[returns(TotalsResponse)]
    Totals {},
}

#[cw_serde]
pub struct ConfigResponse {
    pub settler: String,
    pub admin: String,
    pub treasury: String,
}

#[cw_serde]
pub struct StakeResponse {
    pub operator: String,
    pub bonded: Uint128,
    /// Sum of the claims not yet paid (still slashable).
    pub unbonding: Uint128,
    /// `bonded ≥ params.min_stake` and above zero: the operator may get work (unless jailed).
    pub meets_min_stake: bool,
    /// Block time (seconds) until which the operator is jailed; 0 if never.
    pub jailed_until: u64,
    /// `jailed_until` is after the current block time.
    pub jailed: bool,
}

#[cw_serde]
pub struct Claim {
    pub amount: Uint128,
    /// Block time (seconds) from which it can be claimed.
    pub release_at: u64,
}

#[cw_serde]
pub struct ClaimsResponse {
    pub claims: Vec<Claim>,
}

#[cw_serde]
pub struct EscrowResponse {
    pub payer: String,
    pub balance: Uint128,
    /// Held for posted batches not yet final.
    pub reserved: Uint128,
    /// `balance − reserved`: what can be withdrawn or reserved by a new batch.
    pub free: Uint128,
}

#[cw_serde]
pub struct EscrowsResponse {
    pub escrows: Vec<EscrowResponse>,
}

#[cw_serde]
pub struct NodeResponse {
    pub node: String,
    pub operator: String,
    /// Compressed SEC1 secp256k1 key, lowercase hex.
    pub pubkey: String,
}

#[cw_serde]
pub struct NodesResponse {
    pub nodes: Vec<NodeResponse>,
}

#[cw_serde]
pub enum BatchState {
    Posted,
    Final,
    Challenged,
}

#[cw_serde]
pub struct BatchResponse {
    pub id: String,
    /// Lowercase hex.
    pub root: String,
    pub period: Period,
    pub receipts: u64,
    pub provider_totals: Vec<Total>,
    pub payer_totals: Vec<Total>,
    /// Block time (seconds) of posting.
    pub posted_at: u64,
    pub state: BatchState,
    /// Addition: when the challenge window ends (`posted_at + challenge_window_seconds` at posting).
    pub challenge_ends_at: u64,
    /// Addition: block time of finalization or successful challenge.
    pub closed_at: Option<u64>,
    /// Addition: the protocol fee taken at finalization.
    pub fee: Option<Uint128>,
    /// Addition: why a challenge succeeded, and who made it.
    pub challenge: Option<String>,
}

#[cw_serde]
pub struct BatchesResponse {
    pub batches: Vec<BatchResponse>,
}

#[cw_serde]
pub struct OperatorResponse {
    pub address: String,
    pub bonded: Uint128,
    pub unbonding: Uint128,
    pub meets_min_stake: bool,
    pub jailed_until: u64,
    pub jailed: bool,
    /// Addition: everything slashed from this operator so far.
    pub slashed: Uint128,
    /// Names of the nodes registered to it.
    pub nodes: Vec<String>,
}

#[cw_serde]
pub struct OperatorsResponse {
    pub operators: Vec<OperatorResponse>,
}

/// Running totals since instantiation, for the invariant
/// `balance == held == deposits + stakes − payouts − withdrawals − claims_paid − slashes − fees
///  == escrow + bonded + unbonding`.
#[cw_serde]
pub struct TotalsResponse {
    /// Everything ever deposited into escrow.
    pub deposits: Uint128,
    /// Everything ever bonded.
    pub stakes: Uint128,
    /// Net pay sent to providers by finalized batches.
    pub payouts: Uint128,
    /// Escrow returned to payers.
    pub withdrawals: Uint128,
    /// Unbonded stake paid back by `Claim`.
    pub claims_paid: Uint128,
    /// Stake sent to the treasury by slashes.
    pub slashes: Uint128,
    /// Protocol fees sent to the treasury by finalized batches.
    pub fees: Uint128,
    /// What the ledger says the contract holds: deposits + stakes − everything paid out.
    pub held: Uint128,
    /// The contract's actual bank balance in `denom`.
    pub balance: Uint128,
    /// Current sums of the liabilities: all escrow (of which `reserved` is held for batches),
    /// bonded stake and unbonding claims.
    pub escrow: Uint128,
    pub reserved: Uint128,
    pub bonded: Uint128,
    pub unbonding: Uint128,
}
