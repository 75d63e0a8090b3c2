//! The embedded devnet: the settlement contract's own code run in-process by cw-multi-test, behind
//! the same [`Chain`] trait as a real Cosmos chain, so `agora dev` settles with zero setup.
//!
//! It is a simulation and says so ([`Chain::label`], the chain id `agora-devnet`, the `agora1…`
//! test addresses): there are no validators, no consensus and no fees. Each transaction is its own
//! block, block time follows the wall clock, and a faucet mints test tokens. Gas is estimated
//! ([`gas`]) from the store accesses the contract makes, at the Cosmos SDK's prices, so the
//! settlement benchmark can show what a batch costs and that it does not grow with its receipts.
//!
//! cw-multi-test's `App` is not `Send`: the devnet owns it on a thread of its own and the async
//! side sends it closures over a channel. With a state file the chain survives restarts: the store
//! is saved after every transaction (see [`store`]).

pub mod gas;
pub mod store;

use std::{
    cell::Cell,
    collections::BTreeMap,
    path::PathBuf,
    rc::Rc,
    sync::{Mutex, mpsc},
};

use cosmwasm_std::{Addr, BlockInfo, Decimal, Timestamp, Uint128, coins};
use cw_multi_test::{
    App, AppBuilder, AppResponse, BankKeeper, BankSudo, ContractWrapper, Executor, MockApiBech32,
    SudoMsg,
};
use serde_json::Value;
use settlement_contract::{
    contract::{execute, instantiate, query},
    msg::{InstantiateMsg, Params, SlashRatios},
};
use sha2::{Digest, Sha256};

use crate::chain::{Chain, ChainError, ChainFuture, Coin, TxEvent, TxOutcome};
use store::{FORMAT, Header, MeteredStorage, StateFile};

/// The devnet's chain id: a real chain never uses it.
pub const CHAIN_ID: &str = "agora-devnet";
/// The bech32 prefix of devnet addresses.
pub const PREFIX: &str = "agora";

/// How the devnet's contract is set up; [`DevnetConfig::default`] suits `agora dev`.
#[derive(Debug, Clone)]
pub struct DevnetConfig {
    /// The contract's denom (smallest unit): one token is 1,000,000 of it.
    pub denom: String,
    /// Bonded stake an operator needs for its nodes to get work.
    pub min_stake: u128,
    pub unbonding_seconds: u64,
    /// Short on a devnet, so a batch goes final within a minute.
    pub challenge_window_seconds: u64,
    pub protocol_fee_bps: u16,
    pub jail_seconds: u64,
    /// Where the chain is saved after each transaction; `None` keeps it in memory only (it
    /// starts empty on every run, and batches the hub posted before are unknown to it).
    pub state_file: Option<PathBuf>,
}

impl Default for DevnetConfig {
    fn default() -> Self {
        Self {
            denom: "uagora".into(),
            min_stake: 100_000_000,
            unbonding_seconds: 600,
            challenge_window_seconds: 20,
            protocol_fee_bps: 250,
            jail_seconds: 3_600,
            state_file: None,
        }
    }
}

type DevApp = App<BankKeeper, MockApiBech32, MeteredStorage>;

/// What the devnet thread keeps besides the `App`.
struct World {
    contract: Addr,
    settler: Addr,
    gas: Rc<Cell<u64>>,
    transactions: u64,
    state_file: Option<StateFile>,
}

type Job = Box<dyn FnOnce(&mut DevApp, &mut World) + Send>;

/// The embedded devnet (see the module docs).
pub struct Devnet {
    jobs: Mutex<mpsc::Sender<Job>>,
    denom: String,
    contract: String,
    settler: String,
    treasury: String,
    admin: String,
    min_stake: u128,
    resumed: bool,
}

impl Devnet {
    /// Starts the devnet: a saved one is picked up where it stopped; otherwise the contract is
    /// instantiated with the hub's settler key as settler.
    pub fn start(config: DevnetConfig) -> Result<Self, ChainError> {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (ready, started) = mpsc::channel();
        let denom = config.denom.clone();
        let min_stake = config.min_stake;
        std::thread::Builder::new()
            .name("agora-devnet".into())
            .spawn(move || match open(config) {
                Ok((mut app, mut world, addresses)) => {
                    let _ = ready.send(Ok(addresses));
                    for job in inbox {
                        job(&mut app, &mut world);
                    }
                }
                Err(error) => {
                    let _ = ready.send(Err(error));
                }
            })
            .map_err(|e| invalid("devnet thread", e.to_string()))?;
        let addresses = started
            .recv()
            .map_err(|_| invalid("devnet", "the devnet thread stopped while starting".into()))??;
        Ok(Self {
            jobs: Mutex::new(jobs),
            denom,
            contract: addresses.contract,
            settler: addresses.settler,
            treasury: addresses.treasury,
            admin: addresses.admin,
            min_stake,
            resumed: addresses.resumed,
        })
    }

    /// The devnet address for `name` (a deterministic test address, `agora1…`).
    pub fn address(&self, name: &str) -> String {
        MockApiBech32::new(PREFIX).addr_make(name).to_string()
    }

    pub fn denom(&self) -> &str {
        &self.denom
    }

    pub fn contract(&self) -> &str {
        &self.contract
    }

    /// The hub's settler account (the only one that may post batches).
    pub fn settler(&self) -> &str {
        &self.settler
    }

    /// Where protocol fees and slashed stake go.
    pub fn treasury(&self) -> &str {
        &self.treasury
    }

    /// The contract's admin (the devnet's stand-in for governance).
    pub fn admin(&self) -> &str {
        &self.admin
    }

    pub fn min_stake(&self) -> u128 {
        self.min_stake
    }

    /// Whether this run picked up a saved chain.
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// Runs `f` on the devnet's thread.
    async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut DevApp, &mut World) -> R + Send + 'static,
    ) -> Result<R, ChainError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |app, world| {
            let _ = reply.send(f(app, world));
        });
        let sent = self
            .jobs
            .lock()
            .map_err(|_| stopped())
            .and_then(|jobs| jobs.send(job).map_err(|_| stopped()));
        sent?;
        answer.await.map_err(|_| stopped())
    }

    /// The devnet faucet: mints `amount` test tokens to `address` (a devnet-only power).
    pub async fn fund(&self, address: &str, amount: u128) -> Result<(), ChainError> {
        if amount == 0 {
            return Ok(());
        }
        let address = address.to_string();
        let denom = self.denom.clone();
        self.with(move |app, world| {
            sync_clock(app);
            app.sudo(SudoMsg::Bank(BankSudo::Mint {
                to_address: address,
                amount: coins(amount, denom),
            }))
            .map_err(|e| refused(e.to_string()))?;
            world.save(app)
        })
        .await?
    }

    /// The bank balance of `address` in `denom`.
    async fn bank_balance(&self, address: String, denom: String) -> Result<u128, ChainError> {
        self.with(move |app, _| {
            let coin = app
                .wrap()
                .query_balance(address, denom)
                .map_err(|e| refused(e.to_string()))?;
            Uint128::try_from(coin.amount)
                .map(|a| a.u128())
                .map_err(|e| refused(e.to_string()))
        })
        .await?
    }

    /// Executes the contract's message `msg` as `sender` (any address: on a devnet the hub may act
    /// for the accounts it simulates, e.g. to bond a simulated operator's stake).
    pub async fn execute_as(
        &self,
        sender: &str,
        msg: Value,
        funds: Vec<Coin>,
    ) -> Result<TxOutcome, ChainError> {
        let sender = sender.to_string();
        self.with(move |app, world| world.execute(app, Addr::unchecked(sender), msg, funds))
            .await?
    }
}

/// Addresses the devnet thread reports when it has started.
struct Addresses {
    contract: String,
    settler: String,
    treasury: String,
    admin: String,
    resumed: bool,
}

/// Builds the `App`: from the saved state if there is one, else a fresh chain with the contract
/// instantiated.
fn open(config: DevnetConfig) -> Result<(DevApp, World, Addresses), ChainError> {
    let api = MockApiBech32::new(PREFIX);
    let settler = api.addr_make("settler");
    let treasury = api.addr_make("treasury");
    let admin = api.addr_make("admin");
    let state_file = config.state_file.clone().map(StateFile::new);
    let saved = match &state_file {
        Some(file) => file.load().map_err(|e| invalid("devnet state file", e))?,
        None => None,
    };
    let gas = Rc::new(Cell::new(0));
    let (header, data) = match saved {
        Some((header, data)) => (Some(header), data),
        None => (None, BTreeMap::new()),
    };
    let mut app: DevApp = AppBuilder::new()
        .with_api(api)
        .with_storage(MeteredStorage::new(data, gas.clone()))
        .build(|_, _, _| {});
    // Code is not part of the store: it is stored again on each start and gets the same id.
    let code = app.store_code(Box::new(ContractWrapper::new(execute, instantiate, query)));
    let (contract, transactions, resumed) = match header {
        Some(header) => {
            if header.chain_id != CHAIN_ID {
                return Err(invalid(
                    "devnet state file",
                    format!("it holds chain {:?}, not {CHAIN_ID:?}", header.chain_id),
                ));
            }
            app.set_block(BlockInfo {
                height: header.height,
                time: Timestamp::from_nanos(header.time_ns),
                chain_id: CHAIN_ID.into(),
            });
            let contract = Addr::unchecked(header.contract);
            app.contract_data(&contract).map_err(|e| {
                invalid(
                    "devnet state file",
                    format!("the settlement contract is missing from it: {e}"),
                )
            })?;
            (contract, header.transactions, true)
        }
        None => {
            let mut block = app.block_info();
            block.chain_id = CHAIN_ID.into();
            app.set_block(block);
            sync_clock(&mut app);
            let msg = InstantiateMsg {
                params: Params {
                    denom: config.denom.clone(),
                    min_stake: Uint128::new(config.min_stake),
                    unbonding_seconds: config.unbonding_seconds,
                    challenge_window_seconds: config.challenge_window_seconds,
                    protocol_fee_bps: config.protocol_fee_bps,
                    slash_ratios: SlashRatios {
                        fraud: Decimal::one(),
                        cheating: Decimal::percent(50),
                        downtime: Decimal::percent(1),
                    },
                    jail_seconds: config.jail_seconds,
                },
                settler: settler.to_string(),
                admin: admin.to_string(),
                treasury: treasury.to_string(),
            };
            let contract = app
                .instantiate_contract(
                    code,
                    admin.clone(),
                    &msg,
                    &[],
                    "agora-settlement (devnet)",
                    Some(admin.to_string()),
                )
                .map_err(|e| invalid("devnet contract", e.to_string()))?;
            (contract, 0, false)
        }
    };
    let world = World {
        contract: contract.clone(),
        settler: settler.clone(),
        gas,
        transactions,
        state_file,
    };
    world.save(&app)?;
    let addresses = Addresses {
        contract: contract.to_string(),
        settler: settler.to_string(),
        treasury: treasury.to_string(),
        admin: admin.to_string(),
        resumed,
    };
    Ok((app, world, addresses))
}

impl World {
    /// One transaction: a block of its own at the current time, gas estimated, state saved.
    fn execute(
        &mut self,
        app: &mut DevApp,
        sender: Addr,
        msg: Value,
        funds: Vec<Coin>,
    ) -> Result<TxOutcome, ChainError> {
        sync_clock(app);
        app.update_block(|block| block.height += 1);
        let funds: Vec<cosmwasm_std::Coin> = funds
            .into_iter()
            .map(|c| cosmwasm_std::Coin::new(c.amount, c.denom))
            .collect();
        let msg_bytes = serde_json::to_vec(&msg).map_err(|e| invalid("message", e.to_string()))?;
        self.gas.set(0);
        let response = app
            .execute_contract(sender, self.contract.clone(), &msg, &funds)
            .map_err(|e| refused(format!("{e:#}")))?;
        self.transactions += 1;
        let height = app.block_info().height;
        let events = events(&response);
        let attributes: Vec<(usize, usize)> = events
            .iter()
            .filter(|e| e.kind.starts_with("wasm"))
            .flat_map(|e| e.attributes.iter().map(|(k, v)| (k.len(), v.len())))
            .collect();
        let gas_used = self.gas.get() + gas::fixed(msg_bytes.len(), &attributes);
        let hash = Sha256::new()
            .chain_update(CHAIN_ID)
            .chain_update(height.to_be_bytes())
            .chain_update(self.transactions.to_be_bytes())
            .chain_update(&msg_bytes)
            .finalize();
        self.save(app)?;
        Ok(TxOutcome {
            hash: hex::encode_upper(hash),
            height,
            gas_wanted: gas_used,
            gas_used,
            events,
        })
    }

    fn save(&self, app: &DevApp) -> Result<(), ChainError> {
        let Some(file) = &self.state_file else {
            return Ok(());
        };
        let block = app.block_info();
        let header = Header {
            format: FORMAT.into(),
            chain_id: CHAIN_ID.into(),
            contract: self.contract.to_string(),
            height: block.height,
            time_ns: block.time.nanos(),
            transactions: self.transactions,
        };
        file.save(&header, app.storage().data())
            .map_err(|e| invalid("devnet state file", e))
    }
}

/// Moves block time up to the wall clock (never back).
fn sync_clock(app: &mut DevApp) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    app.update_block(|block| {
        if block.time.nanos() < now {
            block.time = Timestamp::from_nanos(now);
        }
    });
}

fn events(response: &AppResponse) -> Vec<TxEvent> {
    response
        .events
        .iter()
        .map(|e| TxEvent {
            kind: e.ty.clone(),
            attributes: e
                .attributes
                .iter()
                .map(|a| (a.key.clone(), a.value.clone()))
                .collect(),
        })
        .collect()
}

fn refused(log: String) -> ChainError {
    ChainError::Refused {
        code: 5,
        codespace: "wasm".into(),
        log,
        tx: None,
    }
}

fn invalid(field: &'static str, reason: String) -> ChainError {
    ChainError::Invalid { field, reason }
}

fn stopped() -> ChainError {
    ChainError::Unreachable {
        url: "embedded devnet".into(),
        method: "devnet",
        reason: "the devnet thread has stopped".into(),
    }
}

impl Chain for Devnet {
    fn label(&self) -> String {
        format!(
            "embedded devnet {CHAIN_ID} (simulated chain: cw-multi-test in this process), contract {}",
            self.contract
        )
    }

    fn execute(&self, msg: Value, funds: Vec<Coin>) -> ChainFuture<'_, TxOutcome> {
        Box::pin(async move {
            self.with(move |app, world| {
                let settler = world.settler.clone();
                world.execute(app, settler, msg, funds)
            })
            .await?
        })
    }

    fn balance(&self, address: &str, denom: &str) -> ChainFuture<'_, u128> {
        Box::pin(self.bank_balance(address.to_string(), denom.to_string()))
    }

    fn query(&self, msg: Value) -> ChainFuture<'_, Value> {
        Box::pin(async move {
            self.with(move |app, world| {
                sync_clock(app);
                app.wrap()
                    .query_wasm_smart::<Value>(world.contract.clone(), &msg)
                    .map_err(|e| ChainError::Refused {
                        code: 0,
                        codespace: "wasm".into(),
                        log: e.to_string(),
                        tx: None,
                    })
            })
            .await?
        })
    }
}
