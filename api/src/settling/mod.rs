//! The hub's settlement loop: on the leader, each epoch's receipts become a batch
//! ([`crate::settlement::build_batch`]), the relayer posts and finalizes batches
//! ([`crate::relayer::relay_once`]) and queued slashes go out ([`crate::slashing`]); on every
//! replica, operators' stakes are read from the contract so the scheduler can refuse work to the
//! jailed and the under-staked ([`crate::stakes`]). On the embedded devnet the leader also opens
//! the accounts the simulated parties need ([`devnet`]).
//!
//! Everything here is a retry of durable state: batches are recorded before they are posted and
//! advance by compare-and-set, so a crash, a lost lead or an unreachable chain at any point costs
//! only time.

pub mod devnet;

use std::{collections::HashMap, sync::Arc, time::Duration};

use settlement::{batch::Period, chain::Chain};

use crate::{
    leader::Leadership,
    relayer::{ContractChain, relay_once},
    settlement::build_batch,
    stakes::StakeBook,
    state::AppState,
    store::now_ms,
};

/// The chain the hub settles on, and how.
#[derive(Clone)]
pub struct ChainLink {
    pub chain: Arc<dyn Chain>,
    /// Set when `chain` is the embedded devnet: the hub then funds, bonds and registers the
    /// accounts of the parties it simulates.
    pub devnet: Option<Arc<settlement::devnet::Devnet>>,
    /// How often a batch is built: each batch settles the receipts received by the end of an epoch.
    pub epoch: Duration,
}

impl std::fmt::Debug for ChainLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainLink")
            .field("chain", &self.chain.label())
            .field("epoch", &self.epoch)
            .finish()
    }
}

/// How often the loop looks at the chain: stakes are at most this old, and a batch is built and
/// posted at most this long after its epoch ends.
const TICK: Duration = Duration::from_secs(2);

/// Runs until shutdown.
pub async fn run(state: AppState, leadership: Leadership, link: ChainLink) {
    let epoch_ms = i64::try_from(link.epoch.as_millis())
        .unwrap_or(i64::MAX)
        .max(1);
    let mut shutdown = state.shutdown.clone();
    let mut contract: Option<ContractChain> = None;
    let mut tries = HashMap::new();
    let mut provisioner = devnet::Provisioner::default();
    let mut complaints = Complaints::default();
    // Epochs end on multiples of the epoch length, so replicas agree on the boundaries.
    let mut epoch_end = (now_ms() / epoch_ms + 1).saturating_mul(epoch_ms);
    tracing::info!(chain = %link.chain.label(), epoch = ?link.epoch, "settling on chain");
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK.min(link.epoch)) => {}
            _ = shutdown.changed() => break,
        }
        let leading = leadership.is_leader();
        if leading && let Some(devnet) = &link.devnet {
            let result = provisioner.run(&state, devnet).await;
            complaints.note(
                "opening devnet accounts",
                result.map_err(|e| format!("{e:#}")),
            );
        }
        match StakeBook::read(link.chain.as_ref()).await {
            Ok(book) => {
                complaints.note("reading stakes", Ok(()));
                if state.stakes.replace(book) {
                    state.fleet_changed();
                }
            }
            Err(e) => complaints.note("reading stakes", Err(e.to_string())),
        }
        if !leading {
            continue;
        }
        let now = now_ms();
        if now >= epoch_end {
            let period = Period {
                from_ms: u64::try_from(epoch_end - epoch_ms).unwrap_or(0),
                to_ms: u64::try_from(epoch_end).unwrap_or(0),
            };
            match build_epoch(&state, period).await {
                Ok(()) => {
                    epoch_end = (now / epoch_ms + 1).saturating_mul(epoch_ms);
                    complaints.note("building the epoch's batch", Ok(()));
                }
                Err(e) => complaints.note("building the epoch's batch", Err(e.to_string())),
            }
        }
        if contract.is_none() {
            match ContractChain::connect(link.chain.clone()).await {
                Ok(connected) => contract = Some(connected),
                Err(e) => complaints.note("reading the contract's params", Err(e.to_string())),
            }
        }
        if let Some(contract) = &contract {
            let relayed = relay_once(&state.store, contract, now, &mut tries).await;
            complaints.note(
                "relaying batches",
                relayed.map(|_| ()).map_err(|e| e.to_string()),
            );
        }
        let slashed = crate::slashing::post_slashes(&state.store, link.chain.as_ref()).await;
        complaints.note(
            "posting slashes",
            slashed.map(|_| ()).map_err(|e| e.to_string()),
        );
    }
}

/// Builds the epoch's batches: one, unless it has more parties or receipts than one batch takes.
async fn build_epoch(state: &AppState, period: Period) -> Result<(), crate::store::StoreError> {
    loop {
        let build = build_batch(&state.store, &state.settings.network, period).await?;
        if build.unaddressed > 0 {
            tracing::info!(
                receipts = build.unaddressed,
                "receipts wait for an operator or payer address"
            );
        }
        if build.batch.is_none() || build.more == 0 {
            return Ok(());
        }
    }
}

/// Logs a failing step when it starts failing or fails differently, and when it recovers, not
/// on every tick of an outage.
#[derive(Default)]
struct Complaints {
    last: HashMap<&'static str, String>,
}

impl Complaints {
    fn note(&mut self, step: &'static str, result: Result<(), String>) {
        match result {
            Ok(()) => {
                if self.last.remove(step).is_some() {
                    tracing::info!(step, "settlement step works again");
                }
            }
            Err(message) => {
                if self.last.get(step) != Some(&message) {
                    tracing::warn!(step, error = %message, "settlement step failed; retrying");
                    self.last.insert(step, message);
                }
            }
        }
    }
}
