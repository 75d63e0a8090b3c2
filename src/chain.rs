//! `--chain …`: which chain a hub settles on (`agora server` and `agora dev` share the flags; only
//! their defaults differ), turned into the hub's [`api::settling::ChainLink`].

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use settlement::{
    chain::{
        Chain,
        cosmos::{CosmosChain, CosmosConfig},
    },
    devnet::{Devnet, DevnetConfig},
};

/// Where settlement happens.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainMode {
    /// Nowhere: receipts are kept, nothing is posted, stake gates nothing.
    None,
    /// The embedded devnet: the settlement contract run in this process (a simulation, for
    /// trying Agora out and for tests; one hub replica only).
    Embedded,
    /// A Cosmos chain with the settlement contract, reached over CometBFT RPC.
    Cosmos,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ChainArgs {
    /// The chain to settle on [default: `none` for `agora server`, `embedded` for `agora dev`].
    #[arg(long, env = "AGORA_CHAIN", value_enum)]
    pub chain: Option<ChainMode>,
    /// CometBFT RPC endpoint of the chain (`--chain cosmos`), e.g. `http://127.0.0.1:26657`.
    #[arg(long, env = "AGORA_CHAIN_RPC_URL", value_name = "URL")]
    pub chain_rpc_url: Option<String>,
    /// The chain id (`--chain cosmos`), e.g. `agora-local-1`.
    #[arg(long, env = "AGORA_CHAIN_ID")]
    pub chain_id: Option<String>,
    /// The settlement contract's address (`--chain cosmos`).
    #[arg(long, env = "AGORA_CHAIN_CONTRACT", value_name = "ADDRESS")]
    pub chain_contract: Option<String>,
    /// The hub's settler key (`--chain cosmos`): a file with a BIP-39 mnemonic or a hex
    /// secp256k1 private key; its address must be the contract's settler.
    #[arg(long, env = "AGORA_CHAIN_KEY_FILE", value_name = "FILE")]
    pub chain_key_file: Option<PathBuf>,
    /// Price of a unit of gas with its denom (`--chain cosmos`), at least the chain's minimum.
    #[arg(
        long,
        env = "AGORA_CHAIN_GAS_PRICE",
        value_name = "PRICE",
        default_value = "0.025uagora"
    )]
    pub chain_gas_price: String,
    /// How often receipts are batched and posted, in seconds [default: 3600 for `agora server`,
    /// 10 for `agora dev`].
    #[arg(
        long,
        env = "AGORA_SETTLEMENT_EPOCH_SECONDS",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub settlement_epoch_seconds: Option<u64>,
    /// The embedded devnet's challenge window, in seconds [default: 20]: a posted batch goes
    /// final this long after posting.
    #[arg(long, env = "AGORA_DEVNET_CHALLENGE_WINDOW_SECONDS")]
    pub devnet_challenge_window_seconds: Option<u64>,
    /// Where the embedded devnet keeps its chain between runs [default: `DATA_DIR/devnet.json`
    /// for `agora dev`; in memory only for `agora server`].
    #[arg(long, env = "AGORA_DEVNET_STATE", value_name = "FILE")]
    pub devnet_state: Option<PathBuf>,
}

/// What a command defaults to where the flags say nothing.
pub struct Defaults {
    pub mode: ChainMode,
    pub epoch: Duration,
    pub devnet_state: Option<PathBuf>,
}

impl ChainArgs {
    /// The chain link the flags describe, connected (the devnet started, the key read).
    pub fn link(&self, defaults: Defaults) -> anyhow::Result<Option<api::settling::ChainLink>> {
        let epoch = self
            .settlement_epoch_seconds
            .map_or(defaults.epoch, Duration::from_secs);
        let mode = self.chain.unwrap_or(defaults.mode);
        let only_cosmos = [
            ("--chain-rpc-url", self.chain_rpc_url.is_some()),
            ("--chain-id", self.chain_id.is_some()),
            ("--chain-contract", self.chain_contract.is_some()),
            ("--chain-key-file", self.chain_key_file.is_some()),
        ];
        if mode != ChainMode::Cosmos
            && let Some((flag, _)) = only_cosmos.iter().find(|(_, given)| *given)
        {
            anyhow::bail!("{flag} is for --chain cosmos; this hub settles on --chain {mode:?}");
        }
        match mode {
            ChainMode::None => Ok(None),
            ChainMode::Embedded => {
                let mut config = DevnetConfig {
                    state_file: self.devnet_state.clone().or(defaults.devnet_state),
                    ..DevnetConfig::default()
                };
                if let Some(window) = self.devnet_challenge_window_seconds {
                    config.challenge_window_seconds = window;
                }
                let devnet =
                    Arc::new(Devnet::start(config).context("starting the embedded devnet")?);
                Ok(Some(api::settling::ChainLink {
                    chain: devnet.clone(),
                    devnet: Some(devnet),
                    epoch,
                }))
            }
            ChainMode::Cosmos => {
                let required = |value: &Option<String>, flag: &str| {
                    value
                        .clone()
                        .with_context(|| format!("--chain cosmos needs {flag}"))
                };
                let config = CosmosConfig::new(
                    required(&self.chain_rpc_url, "--chain-rpc-url")?,
                    required(&self.chain_id, "--chain-id")?,
                    required(&self.chain_contract, "--chain-contract")?,
                    self.chain_gas_price.clone(),
                );
                let key = self
                    .chain_key_file
                    .as_deref()
                    .context("--chain cosmos needs --chain-key-file (the settler's key)")?;
                let chain: Arc<dyn Chain> = Arc::new(
                    CosmosChain::with_key_file(config, key)
                        .with_context(|| format!("reading the settler key {}", key.display()))?,
                );
                Ok(Some(api::settling::ChainLink {
                    chain,
                    devnet: None,
                    epoch,
                }))
            }
        }
    }
}
