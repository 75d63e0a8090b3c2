//! Accounts on the embedded devnet, opened by the hub so that `agora dev` settles with zero
//! setup: every node's operator is funded by the devnet faucet and bonds the contract's minimum
//! stake, every node's key is registered to its operator, and every tenant gets a payer account
//! whose escrow is kept topped up. A node that registered without an operator address, or a
//! tenant without a payer address, gets a devnet address derived from its name
//! (`operator/<node>`, `payer/<tenant>`), recorded in the hub's store like one an admin set.
//!
//! On a real chain none of this happens: operators bond and register their own nodes, payers
//! deposit their own escrow, and the hub only reads what they did.

use std::collections::HashSet;

use serde_json::json;
use settlement::{
    chain::{Chain, Coin},
    devnet::Devnet,
};

use crate::state::AppState;

/// What a tenant's devnet escrow is topped up to, in the smallest unit (a million tokens).
pub const ESCROW_TOP_UP: u128 = 1_000_000_000_000;

/// Remembers what it already did, so a tick costs a few queries, not a transaction per party.
#[derive(Default)]
pub struct Provisioner {
    bonded: HashSet<String>,
    registered: HashSet<String>,
}

impl Provisioner {
    /// Opens whatever accounts are missing; the first failure stops the pass (the next tick
    /// resumes where it stopped).
    pub async fn run(&mut self, state: &AppState, devnet: &Devnet) -> anyhow::Result<()> {
        for node in state.store.all_nodes().await? {
            let operator = match &node.operator_address {
                Some(address) => address.clone(),
                None => {
                    let address = devnet.address(&format!("operator/{}", node.name));
                    if state
                        .store
                        .set_missing_operator_address(&node.name, &address)
                        .await?
                    {
                        tracing::info!(node = %node.name, operator = %address, "devnet: the node registered without an operator address; it is paid at a devnet account");
                    }
                    address
                }
            };
            if !self.bonded.contains(&operator) {
                self.bond(devnet, &operator).await?;
                self.bonded.insert(operator.clone());
            }
            if !self.registered.contains(&node.name) {
                let Some(pubkey) = state.store.node_public_key(&node.name).await? else {
                    continue;
                };
                register(devnet, &operator, &node.name, &pubkey).await?;
                self.registered.insert(node.name.clone());
            }
        }
        for tenant in state.store.tenant_payers().await? {
            let payer = match tenant.payer_address {
                Some(address) => address,
                None => {
                    let address = devnet.address(&format!("payer/{}", tenant.name));
                    state
                        .store
                        .set_payer_address(&tenant.tenant_id, &address)
                        .await?;
                    tracing::info!(tenant = %tenant.name, payer = %address, "devnet: the tenant pays from a devnet escrow account");
                    address
                }
            };
            top_up(devnet, &payer).await?;
        }
        Ok(())
    }

    /// Bonds what `operator` lacks of the minimum stake, from the faucet.
    async fn bond(&self, devnet: &Devnet, operator: &str) -> anyhow::Result<()> {
        let stake = devnet
            .query(json!({"stake": {"operator": operator}}))
            .await?;
        let bonded: u128 = stake["bonded"].as_str().unwrap_or("0").parse()?;
        let missing = devnet.min_stake().saturating_sub(bonded);
        if missing > 0 {
            devnet.fund(operator, missing).await?;
            devnet
                .execute_as(
                    operator,
                    json!({"bond": {}}),
                    vec![Coin::new(devnet.denom(), missing)],
                )
                .await?;
            tracing::info!(%operator, amount = missing, denom = devnet.denom(), "devnet: bonded the minimum stake from the faucet");
        }
        Ok(())
    }
}

/// Registers `node`'s key to `operator` unless the contract has it already.
async fn register(devnet: &Devnet, operator: &str, node: &str, pubkey: &str) -> anyhow::Result<()> {
    if let Ok(registered) = devnet.query(json!({"node": {"node": node}})).await {
        if registered["operator"] != operator || registered["pubkey"] != pubkey {
            tracing::warn!(%node, %registered, "devnet: the node is registered to another operator or key; its receipts cannot be challenged correctly");
        }
        return Ok(());
    }
    devnet
        .execute_as(
            operator,
            json!({"register_node": {"node": node, "pubkey": pubkey}}),
            vec![],
        )
        .await?;
    tracing::info!(%node, %operator, "devnet: registered the node's key");
    Ok(())
}

/// Keeps `payer`'s free escrow above half of [`ESCROW_TOP_UP`].
async fn top_up(devnet: &Devnet, payer: &str) -> anyhow::Result<()> {
    let escrow = devnet.query(json!({"escrow": {"payer": payer}})).await?;
    let free: u128 = escrow["free"].as_str().unwrap_or("0").parse()?;
    if free >= ESCROW_TOP_UP / 2 {
        return Ok(());
    }
    let amount = ESCROW_TOP_UP - free;
    devnet.fund(payer, amount).await?;
    devnet
        .execute_as(
            payer,
            json!({"deposit": {}}),
            vec![Coin::new(devnet.denom(), amount)],
        )
        .await?;
    tracing::info!(%payer, amount, denom = devnet.denom(), "devnet: topped up the payer's escrow from the faucet");
    Ok(())
}
