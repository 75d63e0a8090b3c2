//! [`Chain`] on a real Cosmos chain running CosmWasm (e.g. `wasmd`), over CometBFT's JSON-RPC.
//!
//! A transaction is one `MsgExecuteContract` from the settler key, signed in `SIGN_MODE_DIRECT`
//! with the account number and sequence read from the chain just before, broadcast with
//! `broadcast_tx_sync` (CheckTx only), then looked up by hash until a block holds it. Reading the
//! account for every transaction costs one query and makes the client stateless: a restart, a
//! failed transaction or another tool using the key never leaves a stale sequence behind; when the
//! sequence changes between the read and the broadcast anyway, the chain says "account sequence
//! mismatch" and the client reads it again (a bounded number of times). Transactions from one
//! client are serialized, so they never race each other for a sequence.

use super::{Chain, ChainError, ChainFuture, Coin, SettlerKey, TxEvent, TxOutcome};
use cosmrs::cosmwasm::MsgExecuteContract;
use cosmrs::proto::cosmos::auth::v1beta1::{
    BaseAccount, QueryAccountRequest, QueryAccountResponse,
};
use cosmrs::proto::cosmos::bank::v1beta1::{QueryBalanceRequest, QueryBalanceResponse};
use cosmrs::proto::cosmos::tx::v1beta1::{SimulateRequest, SimulateResponse};
use cosmrs::proto::cosmwasm::wasm::v1::{
    QuerySmartContractStateRequest, QuerySmartContractStateResponse,
};
use cosmrs::proto::traits::Message;
use cosmrs::rpc::error::ErrorDetail;
use cosmrs::rpc::{Client, HttpClient, HttpClientUrl};
use cosmrs::tendermint::{Hash, chain};
use cosmrs::tx::{Body, Fee, Msg, SignDoc, SignerInfo};
use cosmrs::{AccountId, Denom};
use std::path::Path;
use std::time::{Duration, Instant};

const ACCOUNT_PATH: &str = "/cosmos.auth.v1beta1.Query/Account";
const SIMULATE_PATH: &str = "/cosmos.tx.v1beta1.Service/Simulate";
const SMART_QUERY_PATH: &str = "/cosmwasm.wasm.v1.Query/SmartContractState";
const BALANCE_PATH: &str = "/cosmos.bank.v1beta1.Query/Balance";
const BASE_ACCOUNT_TYPE: &str = "/cosmos.auth.v1beta1.BaseAccount";

/// How much gas a transaction may use (its fee is this limit × the gas price).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GasLimit {
    /// Always this limit.
    Fixed(u64),
    /// Simulate the transaction first (`cosmos.tx.v1beta1.Service/Simulate`, the same as
    /// `wasmd tx … --gas auto`), then use the gas it used × `adjustment`, never above `max`.
    Simulate { adjustment: f64, max: u64 },
}

/// Settings of a [`CosmosChain`]; [`CosmosConfig::new`] fills in the defaults.
#[derive(Debug, Clone)]
pub struct CosmosConfig {
    /// CometBFT RPC, e.g. `http://127.0.0.1:26657`.
    pub rpc_url: String,
    /// The chain id signatures are bound to, e.g. `agora-local-1`.
    pub chain_id: String,
    /// The settlement contract's bech32 address.
    pub contract: String,
    /// Price of one unit of gas with its denom, e.g. `0.025uagora` (decimal, as in `--gas-prices`).
    pub gas_price: String,
    pub gas: GasLimit,
    /// How long to wait for a broadcast transaction to appear in a block.
    pub inclusion_timeout: Duration,
    /// The first wait between inclusion checks; it doubles up to 8× this.
    pub poll_interval: Duration,
    /// How many times a sequence mismatch is answered by reading the account again.
    pub sequence_retries: u32,
    /// The limit for one RPC request.
    pub request_timeout: Duration,
}

impl CosmosConfig {
    /// The gas price is required because it must meet the chain's minimum; the rest defaults to
    /// simulated gas × 1.3 (at most 10,000,000), a 60 s inclusion timeout checked every 500 ms
    /// at first and every 4 s at most, 3 sequence retries and 10 s per request.
    pub fn new(
        rpc_url: impl Into<String>,
        chain_id: impl Into<String>,
        contract: impl Into<String>,
        gas_price: impl Into<String>,
    ) -> Self {
        Self {
            rpc_url: rpc_url.into(),
            chain_id: chain_id.into(),
            contract: contract.into(),
            gas_price: gas_price.into(),
            gas: GasLimit::Simulate {
                adjustment: 1.3,
                max: 10_000_000,
            },
            inclusion_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_millis(500),
            sequence_retries: 3,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// A decimal gas price kept as an integer fraction, so fees are computed exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GasPrice {
    /// The price × 10^`decimals`.
    scaled: u128,
    decimals: u32,
    denom: Denom,
}

impl GasPrice {
    /// Parses `0.025uagora`: a non-negative decimal immediately followed by the denom.
    pub fn parse(text: &str) -> Result<Self, ChainError> {
        let invalid = |reason: String| ChainError::Invalid {
            field: "gas price",
            reason,
        };
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| invalid(format!("{text:?} has no denom (e.g. 0.025uagora)")))?;
        let (number, denom) = text.split_at(split);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() || fraction.contains('.') || fraction.len() > 18 {
            return Err(invalid(format!(
                "{text:?} is not a decimal amount and a denom"
            )));
        }
        let scaled = format!("{whole}{fraction}")
            .parse::<u128>()
            .map_err(|error| invalid(format!("{text:?}: {error}")))?;
        let denom = denom
            .parse::<Denom>()
            .map_err(|error| invalid(format!("denom {denom:?}: {error}")))?;
        Ok(Self {
            scaled,
            decimals: fraction.len() as u32,
            denom,
        })
    }

    /// The fee for `gas` units, rounded up to the smallest unit.
    pub fn fee(&self, gas: u64) -> Result<cosmrs::Coin, ChainError> {
        let product = u128::from(gas)
            .checked_mul(self.scaled)
            .ok_or(ChainError::Invalid {
                field: "gas price",
                reason: "fee overflows".into(),
            })?;
        let amount = product.div_ceil(10u128.pow(self.decimals));
        Ok(cosmrs::Coin {
            denom: self.denom.clone(),
            amount,
        })
    }
}

/// The sender account's state that a signature depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    pub number: u64,
    pub sequence: u64,
}

/// The settlement contract on a Cosmos chain, reached over CometBFT RPC.
pub struct CosmosChain {
    client: HttpClient,
    rpc_url: String,
    chain_id: chain::Id,
    contract: AccountId,
    key: SettlerKey,
    gas_price: GasPrice,
    gas: GasLimit,
    inclusion_timeout: Duration,
    poll_interval: Duration,
    sequence_retries: u32,
    /// One transaction at a time: each needs the sequence the previous one produced.
    sending: tokio::sync::Mutex<()>,
}

impl CosmosChain {
    /// Checks every setting (naming the bad one) and builds the RPC client; contacts nothing.
    pub fn new(config: CosmosConfig, key: SettlerKey) -> Result<Self, ChainError> {
        let url: HttpClientUrl = config
            .rpc_url
            .parse()
            .map_err(|error| ChainError::Invalid {
                field: "chain RPC URL",
                reason: format!("{:?}: {error}", config.rpc_url),
            })?;
        let client = HttpClient::builder(url)
            .timeout(config.request_timeout)
            .build()
            .map_err(|error| ChainError::Invalid {
                field: "chain RPC URL",
                reason: format!("{:?}: {error}", config.rpc_url),
            })?;
        let chain_id = config
            .chain_id
            .parse()
            .map_err(|error| ChainError::Invalid {
                field: "chain id",
                reason: format!("{:?}: {error}", config.chain_id),
            })?;
        let contract = config
            .contract
            .parse()
            .map_err(|error| ChainError::Invalid {
                field: "chain contract",
                reason: format!("{:?}: {error}", config.contract),
            })?;
        if let GasLimit::Simulate { adjustment, max } = config.gas
            && (!adjustment.is_finite() || adjustment < 1.0 || max == 0)
        {
            return Err(ChainError::Invalid {
                field: "gas adjustment",
                reason: format!("{adjustment} (at least 1) with a maximum of {max} (above 0)"),
            });
        }
        Ok(Self {
            client,
            rpc_url: config.rpc_url,
            chain_id,
            contract,
            key,
            gas_price: GasPrice::parse(&config.gas_price)?,
            gas: config.gas,
            inclusion_timeout: config.inclusion_timeout,
            poll_interval: config.poll_interval.max(Duration::from_millis(1)),
            sequence_retries: config.sequence_retries,
            sending: tokio::sync::Mutex::new(()),
        })
    }

    /// [`CosmosChain::new`] with the key read from `key_file` (hex or mnemonic, see
    /// [`SettlerKey::from_file`]); its address takes the contract address's prefix (`wasm`,
    /// `cosmos`, …), which is the chain's, so the hub needs no prefix setting.
    pub fn with_key_file(config: CosmosConfig, key_file: &Path) -> Result<Self, ChainError> {
        let contract: AccountId = config
            .contract
            .parse()
            .map_err(|error| ChainError::Invalid {
                field: "chain contract",
                reason: format!("{:?}: {error}", config.contract),
            })?;
        let key = SettlerKey::from_file(key_file, contract.prefix())?;
        Self::new(config, key)
    }

    /// The settler's address (what the contract must have as `settler`).
    pub fn sender(&self) -> &AccountId {
        self.key.address()
    }

    /// The settler account's number and next sequence, from the chain's committed state.
    pub async fn account(&self) -> Result<Account, ChainError> {
        let request = QueryAccountRequest {
            address: self.sender().to_string(),
        };
        let value = match self.abci_query(ACCOUNT_PATH, request.encode_to_vec()).await {
            Err(ChainError::Refused { log, .. }) if log.contains("not found") => {
                return Err(ChainError::AccountMissing {
                    address: self.sender().to_string(),
                });
            }
            other => other?,
        };
        let bad = |reason: String| self.bad_response("abci_query account", reason);
        let any = QueryAccountResponse::decode(value.as_slice())
            .map_err(|error| bad(error.to_string()))?
            .account
            .ok_or_else(|| bad("no account in the answer".into()))?;
        if any.type_url != BASE_ACCOUNT_TYPE {
            return Err(ChainError::Invalid {
                field: "settler account",
                reason: format!(
                    "{} is a {}; use a plain account",
                    self.sender(),
                    any.type_url
                ),
            });
        }
        let account = BaseAccount::decode(any.value.as_slice()).map_err(|e| bad(e.to_string()))?;
        Ok(Account {
            number: account.account_number,
            sequence: account.sequence,
        })
    }

    async fn execute_json(
        &self,
        msg: serde_json::Value,
        funds: Vec<Coin>,
    ) -> Result<TxOutcome, ChainError> {
        let body = self.body(&msg, funds)?;
        let _one_at_a_time = self.sending.lock().await;
        let mut last_mismatch = String::new();
        for _ in 0..=self.sequence_retries {
            let mut account = self.account().await?;
            // A transaction of ours still in the mempool (one that timed out waiting for a
            // block) has used a sequence the committed state does not show yet: the chain's
            // "expected N" says which one is next.
            account.sequence = account
                .sequence
                .max(expected_sequence(&last_mismatch).unwrap_or(0));
            let gas = match self.gas {
                GasLimit::Fixed(gas) => gas,
                GasLimit::Simulate { adjustment, max } => {
                    match self.simulate(&body, account, max).await {
                        Ok(used) => ((used as f64 * adjustment).ceil() as u64).clamp(1, max),
                        Err(error) => match sequence_mismatch(&error) {
                            Some(log) => {
                                last_mismatch = log;
                                continue;
                            }
                            None => return Err(error),
                        },
                    }
                }
            };
            let tx = self.sign(&body, account, gas, self.gas_price.fee(gas)?)?;
            let response = self
                .client
                .broadcast_tx_sync(tx)
                .await
                .map_err(|error| self.rpc_error("broadcast_tx_sync", error))?;
            if response.code.is_ok() {
                return self.wait_for_inclusion(response.hash).await;
            }
            let refused = ChainError::Refused {
                code: response.code.value(),
                codespace: response.codespace,
                log: response.log,
                tx: None,
            };
            match sequence_mismatch(&refused) {
                Some(log) => last_mismatch = log,
                None => return Err(refused),
            }
        }
        Err(ChainError::SequenceMismatch {
            attempts: self.sequence_retries + 1,
            log: last_mismatch,
        })
    }

    /// The transaction body: one `MsgExecuteContract` from the settler to the contract.
    fn body(&self, msg: &serde_json::Value, mut funds: Vec<Coin>) -> Result<Body, ChainError> {
        // The chain accepts funds only sorted by denom, without duplicates or zero amounts.
        funds.sort_by(|a, b| a.denom.cmp(&b.denom));
        let invalid = |reason: String| ChainError::Invalid {
            field: "funds",
            reason,
        };
        if let Some(pair) = funds.windows(2).find(|pair| pair[0].denom == pair[1].denom) {
            return Err(invalid(format!("{} appears twice", pair[0].denom)));
        }
        let funds = funds
            .into_iter()
            .map(|coin| {
                if coin.amount == 0 {
                    return Err(invalid(format!("zero {}", coin.denom)));
                }
                cosmrs::Coin::new(coin.amount, &coin.denom)
                    .map_err(|error| invalid(format!("{}: {error}", coin.denom)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let msg = MsgExecuteContract {
            sender: self.sender().clone(),
            contract: self.contract.clone(),
            msg: serde_json::to_vec(msg).map_err(|error| ChainError::Invalid {
                field: "contract message",
                reason: error.to_string(),
            })?,
            funds,
        };
        let any = msg.to_any().map_err(|error| ChainError::Invalid {
            field: "contract message",
            reason: error.to_string(),
        })?;
        Ok(Body::new(vec![any], "", 0u32))
    }

    /// The signed transaction's bytes (`TxRaw`), ready to broadcast.
    fn sign(
        &self,
        body: &Body,
        account: Account,
        gas: u64,
        fee: cosmrs::Coin,
    ) -> Result<Vec<u8>, ChainError> {
        let signing_failed = |error: cosmrs::ErrorReport| ChainError::Invalid {
            field: "chain key",
            reason: format!("signing failed: {error}"),
        };
        let auth_info = SignerInfo::single_direct(Some(self.key.public_key()), account.sequence)
            .auth_info(Fee::from_amount_and_gas(fee, gas));
        SignDoc::new(body, &auth_info, &self.chain_id, account.number)
            .and_then(|doc| doc.sign(self.key.signing_key()))
            .and_then(|raw| raw.to_bytes())
            .map_err(signing_failed)
    }

    /// Gas the transaction would use now: runs it without committing (and surfaces the
    /// contract's refusal before any fee is spent).
    async fn simulate(&self, body: &Body, account: Account, max: u64) -> Result<u64, ChainError> {
        let fee = cosmrs::Coin {
            denom: self.gas_price.denom.clone(),
            amount: 0,
        };
        let request = SimulateRequest {
            tx_bytes: self.sign(body, account, max, fee)?,
            ..Default::default()
        };
        let value = self
            .abci_query(SIMULATE_PATH, request.encode_to_vec())
            .await?;
        let response = SimulateResponse::decode(value.as_slice())
            .map_err(|error| self.bad_response("simulate", error.to_string()))?;
        let gas_info = response
            .gas_info
            .ok_or_else(|| self.bad_response("simulate", "no gas_info in the answer".into()))?;
        Ok(gas_info.gas_used)
    }

    async fn smart_query(&self, msg: serde_json::Value) -> Result<serde_json::Value, ChainError> {
        let request = QuerySmartContractStateRequest {
            address: self.contract.to_string(),
            query_data: serde_json::to_vec(&msg).map_err(|error| ChainError::Invalid {
                field: "query message",
                reason: error.to_string(),
            })?,
        };
        let value = self
            .abci_query(SMART_QUERY_PATH, request.encode_to_vec())
            .await?;
        let bad = |reason: String| self.bad_response("abci_query smart", reason);
        let data = QuerySmartContractStateResponse::decode(value.as_slice())
            .map_err(|error| bad(error.to_string()))?
            .data;
        serde_json::from_slice(&data).map_err(|error| bad(format!("answer is not JSON: {error}")))
    }

    async fn bank_balance(&self, address: String, denom: String) -> Result<u128, ChainError> {
        let request = QueryBalanceRequest { address, denom };
        let value = self
            .abci_query(BALANCE_PATH, request.encode_to_vec())
            .await?;
        let bad = |reason: String| self.bad_response("abci_query balance", reason);
        let coin = QueryBalanceResponse::decode(value.as_slice())
            .map_err(|error| bad(error.to_string()))?
            .balance;
        match coin {
            None => Ok(0),
            Some(coin) => coin
                .amount
                .parse()
                .map_err(|_| bad(format!("the amount {:?} is not an integer", coin.amount))),
        }
    }

    /// A gRPC query through ABCI: the encoded answer, or `Refused` with the chain's log.
    async fn abci_query(&self, path: &str, data: Vec<u8>) -> Result<Vec<u8>, ChainError> {
        let response = self
            .client
            .abci_query(Some(path.to_string()), data, None, false)
            .await
            .map_err(|error| self.rpc_error("abci_query", error))?;
        if response.code.is_err() {
            return Err(ChainError::Refused {
                code: response.code.value(),
                codespace: response.codespace,
                log: response.log,
                tx: None,
            });
        }
        Ok(response.value)
    }

    /// Looks the transaction up by hash, waiting longer each time, until it is in a block or
    /// the inclusion timeout passes. RPC errors while waiting count as "not yet".
    async fn wait_for_inclusion(&self, hash: Hash) -> Result<TxOutcome, ChainError> {
        let started = Instant::now();
        let mut wait = self.poll_interval;
        loop {
            if let Ok(response) = self.client.tx(hash, false).await {
                let result = response.tx_result;
                if result.code.is_err() {
                    return Err(ChainError::Refused {
                        code: result.code.value(),
                        codespace: result.codespace,
                        log: result.log,
                        tx: Some(hash.to_string()),
                    });
                }
                return Ok(TxOutcome {
                    hash: hash.to_string(),
                    height: response.height.value(),
                    gas_wanted: u64::try_from(result.gas_wanted).unwrap_or(0),
                    gas_used: u64::try_from(result.gas_used).unwrap_or(0),
                    events: result
                        .events
                        .into_iter()
                        .map(|event| TxEvent {
                            kind: event.kind,
                            attributes: event
                                .attributes
                                .iter()
                                .map(|attribute| {
                                    (
                                        String::from_utf8_lossy(attribute.key_bytes()).into_owned(),
                                        String::from_utf8_lossy(attribute.value_bytes())
                                            .into_owned(),
                                    )
                                })
                                .collect(),
                        })
                        .collect(),
                });
            }
            let waited = started.elapsed();
            if waited >= self.inclusion_timeout {
                return Err(ChainError::InclusionTimeout {
                    hash: hash.to_string(),
                    waited,
                });
            }
            tokio::time::sleep(wait.min(self.inclusion_timeout - waited)).await;
            wait = wait
                .saturating_mul(2)
                .min(self.poll_interval.saturating_mul(8));
        }
    }

    fn rpc_error(&self, method: &'static str, error: cosmrs::rpc::Error) -> ChainError {
        match error.detail() {
            ErrorDetail::Http(_)
            | ErrorDetail::HttpRequestFailed(_)
            | ErrorDetail::Io(_)
            | ErrorDetail::Timeout(_) => ChainError::Unreachable {
                url: self.rpc_url.clone(),
                method,
                reason: error.to_string(),
            },
            _ => self.bad_response(method, error.to_string()),
        }
    }

    fn bad_response(&self, method: &'static str, reason: String) -> ChainError {
        ChainError::BadResponse {
            url: self.rpc_url.clone(),
            method,
            reason,
        }
    }
}

/// `N` from the SDK's "account sequence mismatch, expected N, got M: …".
fn expected_sequence(log: &str) -> Option<u64> {
    let rest = log.split_once("expected ")?.1;
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..digits].parse().ok()
}

/// The chain's log when `error` is the SDK's "account sequence mismatch" (code 32 in the `sdk`
/// codespace; the log is checked too because simulation reports it through a query).
fn sequence_mismatch(error: &ChainError) -> Option<String> {
    match error {
        ChainError::Refused {
            code,
            codespace,
            log,
            ..
        } if (*code == 32 && (codespace == "sdk" || codespace.is_empty()))
            || log.contains("account sequence mismatch") =>
        {
            Some(log.clone())
        }
        _ => None,
    }
}

impl Chain for CosmosChain {
    fn label(&self) -> String {
        format!(
            "cosmos chain {} at {} (contract {})",
            self.chain_id, self.rpc_url, self.contract
        )
    }

    fn execute(&self, msg: serde_json::Value, funds: Vec<Coin>) -> ChainFuture<'_, TxOutcome> {
        Box::pin(self.execute_json(msg, funds))
    }

    fn query(&self, msg: serde_json::Value) -> ChainFuture<'_, serde_json::Value> {
        Box::pin(self.smart_query(msg))
    }

    fn balance(&self, address: &str, denom: &str) -> ChainFuture<'_, u128> {
        Box::pin(self.bank_balance(address.to_string(), denom.to_string()))
    }
}
