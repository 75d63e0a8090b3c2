//! A cw-multi-test chain with the contract instantiated and funded accounts, helpers to send each
//! message, an independent RFC 6962 tree and receipt encoder to build challenge evidence, and the
//! invariant every test ends with.
#![allow(dead_code)] // each test binary uses a different subset of these helpers

use cosmwasm_schema::serde::de::DeserializeOwned;
use cosmwasm_std::{Addr, Coin, Decimal, Uint128, coin};
use cw_multi_test::{App, AppBuilder, AppResponse, ContractWrapper, Executor};
use sha2::{Digest, Sha256};

use settlement_contract::contract::{execute, instantiate, query};
use settlement_contract::msg::{
    EscrowResponse, EscrowsResponse, ExecuteMsg, InstantiateMsg, OperatorsResponse, Params, Period,
    QueryMsg, SlashRatios, Total, TotalsResponse,
};

pub const DENOM: &str = "uagora";
pub const OTHER_DENOM: &str = "uother";
/// Every named account starts with this much of each denom.
pub const START: u128 = 1_000_000_000;
/// The accounts the suite funds; the supply check adds up their balances.
pub const ACCOUNTS: &[&str] = &[
    "admin",
    "settler",
    "treasury",
    "provider1",
    "provider2",
    "provider3",
    "payer1",
    "payer2",
    "payer3",
    "stranger",
];

pub fn params() -> Params {
    Params {
        denom: DENOM.into(),
        min_stake: Uint128::new(1_000),
        unbonding_seconds: 100,
        challenge_window_seconds: 60,
        protocol_fee_bps: 250,
        slash_ratios: SlashRatios {
            fraud: Decimal::one(),
            cheating: Decimal::percent(50),
            downtime: Decimal::percent(1),
        },
        jail_seconds: 3_600,
    }
}

pub struct Suite {
    pub app: App,
    pub contract: Addr,
}

impl Suite {
    pub fn new() -> Self {
        Self::try_with(params()).expect("instantiate")
    }

    pub fn try_with(params: Params) -> Result<Self, String> {
        let mut app = AppBuilder::new().build(|router, api, storage| {
            for name in ACCOUNTS {
                router
                    .bank
                    .init_balance(
                        storage,
                        &api.addr_make(name),
                        vec![coin(START, DENOM), coin(START, OTHER_DENOM)],
                    )
                    .unwrap();
            }
        });
        let code = app.store_code(Box::new(ContractWrapper::new(execute, instantiate, query)));
        let msg = InstantiateMsg {
            params,
            settler: app.api().addr_make("settler").into(),
            admin: app.api().addr_make("admin").into(),
            treasury: app.api().addr_make("treasury").into(),
        };
        let admin = app.api().addr_make("admin");
        let contract = app
            .instantiate_contract(code, admin, &msg, &[], "agora-settlement", None)
            .map_err(|e| e.to_string())?;
        Ok(Self { app, contract })
    }

    pub fn addr(&self, name: &str) -> Addr {
        self.app.api().addr_make(name)
    }

    /// Sends `msg` from `sender` with `amount` of the denom (none if zero).
    pub fn exec(
        &mut self,
        sender: &str,
        msg: &ExecuteMsg,
        amount: u128,
    ) -> Result<AppResponse, String> {
        let funds = if amount == 0 {
            vec![]
        } else {
            vec![coin(amount, DENOM)]
        };
        self.exec_funds(sender, msg, &funds)
    }

    pub fn exec_funds(
        &mut self,
        sender: &str,
        msg: &ExecuteMsg,
        funds: &[Coin],
    ) -> Result<AppResponse, String> {
        let sender = self.addr(sender);
        self.app
            .execute_contract(sender, self.contract.clone(), msg, funds)
            .map_err(|e| e.to_string())
    }

    pub fn query<T: DeserializeOwned>(&self, msg: &QueryMsg) -> T {
        self.app
            .wrap()
            .query_wasm_smart(self.contract.clone(), msg)
            .expect("query")
    }

    pub fn try_query<T: DeserializeOwned>(&self, msg: &QueryMsg) -> Result<T, String> {
        self.app
            .wrap()
            .query_wasm_smart(self.contract.clone(), msg)
            .map_err(|e| e.to_string())
    }

    pub fn balance_of(&self, addr: &Addr) -> u128 {
        let amount = self.app.wrap().query_balance(addr, DENOM).unwrap().amount;
        Uint128::try_from(amount).unwrap().u128()
    }

    pub fn balance(&self, name: &str) -> u128 {
        self.balance_of(&self.addr(name))
    }

    pub fn advance(&mut self, seconds: u64) {
        self.app.update_block(|block| {
            block.time = block.time.plus_seconds(seconds);
            block.height += seconds.div_ceil(5).max(1);
        });
    }

    pub fn now(&self) -> u64 {
        self.app.block_info().time.seconds()
    }

    pub fn totals(&self) -> TotalsResponse {
        self.query(&QueryMsg::Totals {})
    }

    /// The invariant, to the unit: the contract's bank balance equals deposits + stakes − payouts
    /// − withdrawals − claims paid − slashes − fees, and equals what it owes (escrow + bonded +
    /// unbonding); reserved escrow never exceeds escrow; and no unit of the denom appeared or
    /// vanished anywhere (the named accounts and the contract still hold the starting supply).
    pub fn check_invariant(&self) {
        let t = self.totals();
        let bank = self.balance_of(&self.contract);
        assert_eq!(t.balance.u128(), bank, "Totals.balance is the bank balance");
        let flows = t.deposits.u128() + t.stakes.u128()
            - t.payouts.u128()
            - t.withdrawals.u128()
            - t.claims_paid.u128()
            - t.slashes.u128()
            - t.fees.u128();
        assert_eq!(
            bank, flows,
            "bank balance == deposits + stakes − everything paid out: {t:?}"
        );
        assert_eq!(t.held.u128(), flows, "Totals.held: {t:?}");
        assert_eq!(
            bank,
            t.escrow.u128() + t.bonded.u128() + t.unbonding.u128(),
            "bank balance == escrow + bonded + unbonding: {t:?}"
        );
        assert!(t.reserved <= t.escrow, "reserved ≤ escrow: {t:?}");
        // The running sums agree with the accounts they sum (every test has fewer than 100).
        let escrows: EscrowsResponse = self.query(&QueryMsg::Escrows {
            start_after: None,
            limit: Some(100),
        });
        let sum =
            |f: fn(&EscrowResponse) -> Uint128| escrows.escrows.iter().map(f).sum::<Uint128>();
        assert_eq!(
            sum(|e| e.balance),
            t.escrow,
            "escrow accounts sum to Totals.escrow"
        );
        assert_eq!(
            sum(|e| e.reserved),
            t.reserved,
            "reservations sum to Totals.reserved"
        );
        let operators: OperatorsResponse = self.query(&QueryMsg::Operators {
            start_after: None,
            limit: Some(100),
        });
        let bonded: Uint128 = operators.operators.iter().map(|o| o.bonded).sum();
        let unbonding: Uint128 = operators.operators.iter().map(|o| o.unbonding).sum();
        assert_eq!(
            (bonded, unbonding),
            (t.bonded, t.unbonding),
            "operators sum to Totals"
        );
        let supply: u128 = ACCOUNTS.iter().map(|name| self.balance(name)).sum::<u128>() + bank;
        assert_eq!(
            supply,
            START * ACCOUNTS.len() as u128,
            "no unit created or lost"
        );
    }
}

pub fn total(suite: &Suite, name: &str, amount: u128) -> Total {
    Total {
        address: suite.addr(name).into(),
        amount: Uint128::new(amount),
    }
}

pub fn post_batch(
    id: &str,
    root: [u8; 32],
    receipts: u64,
    provider_totals: Vec<Total>,
    payer_totals: Vec<Total>,
) -> ExecuteMsg {
    ExecuteMsg::PostBatch {
        id: id.into(),
        root: hex::encode(root),
        period: Period {
            from_ms: 1_000,
            to_ms: 61_000,
        },
        receipts,
        provider_totals,
        payer_totals,
    }
}

/// A real node key's public half, compressed SEC1 as hex, from a seed (any seed but 0).
pub fn pubkey(seed: u8) -> String {
    let mut secret = [0u8; 32];
    secret[31] = seed.max(1);
    secret[0] = seed;
    let key = k256::ecdsa::SigningKey::from_slice(&secret).expect("a valid secret scalar");
    hex::encode(key.verifying_key().to_sec1_point(true).as_bytes())
}

/// The receipt fields a test varies; the rest are fixed.
pub struct ReceiptFields<'a> {
    pub node: &'a str,
    pub gpus: u32,
    pub started_at_ms: u64,
    pub until_ms: u64,
    pub gpu_millis: u64,
}

/// The canonical receipt encoding of docs/settlement.md, written out independently of the
/// contract's decoder and without its validity checks (so tests can build invalid receipts).
pub fn encode_receipt(r: &ReceiptFields) -> Vec<u8> {
    let mut out = b"agora-receipt-v1".to_vec();
    for text in ["agora-devnet-1", r.node, "job-1", "asg-job-1-1-0"] {
        out.push(text.len() as u8);
        out.extend_from_slice(text.as_bytes());
    }
    out.extend_from_slice(&7u64.to_be_bytes());
    out.extend_from_slice(&2_490_000u64.to_be_bytes());
    out.extend_from_slice(&r.gpus.to_be_bytes());
    out.extend_from_slice(&r.started_at_ms.to_be_bytes());
    out.extend_from_slice(&r.until_ms.to_be_bytes());
    out.extend_from_slice(&r.gpu_millis.to_be_bytes());
    out
}

fn leaf_hash(bytes: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(bytes);
    h.finalize().into()
}

fn node_hash(left: [u8; 32], right: [u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// RFC 6962 MTH over leaf hashes: split at the largest power of two below n.
fn mth(leaves: &[[u8; 32]]) -> [u8; 32] {
    if leaves.len() == 1 {
        return leaves[0];
    }
    let k = split(leaves.len());
    node_hash(mth(&leaves[..k]), mth(&leaves[k..]))
}

fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// RFC 6962 PATH(m, D[n]): sibling hashes from the leaf up.
fn path(m: usize, leaves: &[[u8; 32]]) -> Vec<[u8; 32]> {
    if leaves.len() == 1 {
        return vec![];
    }
    let k = split(leaves.len());
    if m < k {
        let mut p = path(m, &leaves[..k]);
        p.push(mth(&leaves[k..]));
        p
    } else {
        let mut p = path(m - k, &leaves[k..]);
        p.push(mth(&leaves[..k]));
        p
    }
}

/// A batch's tree over leaf byte strings.
pub struct Tree {
    leaves: Vec<Vec<u8>>,
    hashes: Vec<[u8; 32]>,
}

impl Tree {
    pub fn new(leaves: Vec<Vec<u8>>) -> Self {
        let hashes = leaves.iter().map(|l| leaf_hash(l)).collect();
        Self { leaves, hashes }
    }

    pub fn root(&self) -> [u8; 32] {
        mth(&self.hashes)
    }

    pub fn size(&self) -> u64 {
        self.leaves.len() as u64
    }

    pub fn evidence(&self, index: usize) -> settlement_contract::msg::ChallengeEvidence {
        settlement_contract::msg::ChallengeEvidence {
            receipt: self.leaves[index].clone().into(),
            proof: path(index, &self.hashes).iter().map(hex::encode).collect(),
            index: index as u64,
            tree_size: self.size(),
        }
    }
}
