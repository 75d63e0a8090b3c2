//! The market: a base price per GPU class that moves each epoch with the class's utilization
//! (`scheduler::pricing`, EIP-1559-style), persisted in the store so a restart keeps it.
//!
//! Utilization is sampled at the end of each epoch: allocated GPUs over offered ones (healthy GPUs
//! on ready nodes) of each class. A job then pays max(node's ask, base price) per GPU-hour, never
//! more than its `maxPricePerGpuHour`.

use std::sync::Mutex;

use scheduler::pricing::{ClassPrice, ClassUsage, PriceBook, PricingParams};

use crate::{
    leader::Leadership,
    state::AppState,
    store::{Fence, NodeRow, Store, StoreError, now_ms},
    views::node_ready,
};

/// The hub's price book.
pub struct Market {
    book: Mutex<PriceBook>,
}

impl Market {
    /// The book as the store last saved it (every class at its initial price on a new hub).
    pub async fn load(store: &Store, params: PricingParams) -> anyhow::Result<Self> {
        let book = PriceBook::restore(params, store.load_prices().await?)?;
        Ok(Self {
            book: Mutex::new(book),
        })
    }

    /// A copy of the book, for a scheduling cycle or a quote.
    pub fn book(&self) -> PriceBook {
        self.lock().clone()
    }

    /// Every priced class.
    pub fn snapshot(&self) -> Vec<ClassPrice> {
        self.lock().snapshot()
    }

    pub fn params(&self) -> PricingParams {
        *self.lock().params()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PriceBook> {
        // A panic while holding the lock cannot leave the book half-updated (updates are one call).
        self.book
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Advances the prices every `price_epoch` until shutdown, while this replica leads (see
/// [`crate::leader`]). Followers instead reload the book from the store each epoch, so their quotes
/// follow the leader's prices; a replica that becomes leader reloads it at once (the last leader's
/// final epoch is saved by then: its fenced save cannot commit after the lease moved) and waits a
/// whole epoch before moving prices, so a failover never moves them twice in one epoch. Returns
/// once the lease is released, so the hub closes its store after.
pub async fn run(state: AppState, mut leadership: Leadership) {
    let mut shutdown = state.shutdown.clone();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(state.settings.price_epoch) => {}
            _ = shutdown.changed() => break,
            () = leadership.changed() => {
                if leadership.is_leader()
                    && let Err(e) = reload(&state).await
                {
                    tracing::warn!(error = %e, "reloading prices on taking the lead failed");
                }
                // The epoch's timer starts again from the change.
                continue;
            }
        }
        let outcome = match leadership.fence() {
            Some(fence) => advance_epoch_fenced(&state, Some(&fence)).await.map(|_| ()),
            None => reload(&state).await,
        };
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "pricing epoch failed; prices unchanged");
        }
    }
    leadership.stopped().await;
}

/// Replaces the book with the prices the store holds (the leader's).
async fn reload(state: &AppState) -> Result<(), StoreError> {
    let saved = state.store.load_prices().await?;
    let book = PriceBook::restore(state.market.params(), saved)
        .map_err(|e| StoreError::Corrupt(format!("saved base prices: {e}")))?;
    *state.market.lock() = book;
    Ok(())
}

/// Ends one epoch, unfenced (a lone hub, tests): samples utilization, moves the prices, saves them.
pub async fn advance_epoch(state: &AppState) -> Result<Vec<ClassPrice>, StoreError> {
    Ok(advance_epoch_fenced(state, None).await?.unwrap_or_default())
}

/// Ends one epoch, saving the prices only under `fence` (always, without one). `None` when the
/// fence's lease moved on: nothing was saved, and the book is reloaded from the store, where the
/// new leader keeps the prices.
pub async fn advance_epoch_fenced(
    state: &AppState,
    fence: Option<&Fence>,
) -> Result<Option<Vec<ClassPrice>>, StoreError> {
    let rows = state.store.all_nodes().await?;
    let now = now_ms();
    let epoch_ms = i64::try_from(state.settings.price_epoch.as_millis()).unwrap_or(i64::MAX);
    let placed = state
        .store
        .gpus_placed_since(now.saturating_sub(epoch_ms))
        .await?;
    let mut usage = usage(&rows, now, state.settings.node_timeout.as_millis() as i64);
    count_placed(&mut usage, &rows, &placed);
    let prices = {
        let mut book = state.market.lock();
        book.advance_epoch(&usage);
        book.snapshot()
    };
    if state.store.save_prices_fenced(&prices, fence).await? {
        Ok(Some(prices))
    } else {
        reload(state).await?;
        Ok(None)
    }
}

/// Adds to each class of `usage` the GPUs `placed` (node, GPU UUIDs) on it: whether jobs still
/// took the class at its price this epoch (`ClassUsage::placed_gpus`).
fn count_placed(usage: &mut [ClassUsage], rows: &[NodeRow], placed: &[(String, Vec<String>)]) {
    let model_of: std::collections::HashMap<(&str, &str), &str> = rows
        .iter()
        .flat_map(|n| {
            n.gpus
                .iter()
                .map(|g| ((n.name.as_str(), g.uuid.as_str()), g.model.as_str()))
        })
        .collect();
    for (node, gpus) in placed {
        for gpu in gpus {
            if let Some(model) = model_of.get(&(node.as_str(), gpu.as_str()))
                && let Some(class) = usage.iter_mut().find(|u| u.class == *model)
            {
                class.placed_gpus += 1;
            }
        }
    }
}

/// Allocated and offered GPUs per class, as GPU counts (the book only uses their ratio).
pub fn usage(rows: &[NodeRow], now: i64, timeout_ms: i64) -> Vec<ClassUsage> {
    let mut by_class: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
    for node in rows
        .iter()
        .filter(|n| node_ready(n.last_heartbeat, now, timeout_ms))
    {
        for gpu in node.gpus.iter().filter(|g| g.healthy) {
            let entry = by_class.entry(gpu.model.as_str()).or_default();
            entry.1 += 1;
            if node.allocated.contains(&gpu.uuid) {
                entry.0 += 1;
            }
        }
    }
    by_class
        .into_iter()
        .map(|(class, (allocated, offered))| ClassUsage {
            class: class.to_string(),
            allocated_gpu_ms: allocated,
            offered_gpu_ms: offered,
            placed_gpus: 0,
        })
        .collect()
}
