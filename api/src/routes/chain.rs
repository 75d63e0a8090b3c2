//! The chain itself, as the hub reads it: `/v1/settlement/chain` (where the hub settles, the
//! contract's parameters and running totals) and `/v1/operators/{address}` (an operator's stake,
//! jail and bank balance), so a provider sees its pay arrive without a chain client of its own.
//! Everything here is public on chain, so any API key reads it.

use axum::{Router, extract::State, routing::get};
use crds::rest::{ChainInfo, OperatorAccount};
use serde_json::{Value, json};
use settlement::chain::ChainError;

use crate::{
    error::{ApiError, ApiResult},
    extract::{Path, Tenant},
    settling::ChainLink,
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/settlement/chain", get(chain))
        .route("/v1/operators/{address}", get(operator))
}

fn link(state: &AppState) -> ApiResult<&ChainLink> {
    state.chain.as_ref().ok_or_else(|| ApiError::Unavailable {
        code: "no_chain",
        message: "this hub settles on no chain (it runs with --chain none)".into(),
    })
}

fn unavailable(error: ChainError) -> ApiError {
    ApiError::Unavailable {
        code: "chain_unavailable",
        message: format!("the chain did not answer: {error}"),
    }
}

async fn chain(State(state): State<AppState>, _tenant: Tenant) -> ApiResult<axum::Json<ChainInfo>> {
    let link = link(&state)?;
    let params = link
        .chain
        .query(json!({"params": {}}))
        .await
        .map_err(unavailable)?;
    let totals = link
        .chain
        .query(json!({"totals": {}}))
        .await
        .map_err(unavailable)?;
    Ok(axum::Json(ChainInfo {
        label: link.chain.label(),
        devnet: link.devnet.is_some(),
        epoch_seconds: link.epoch.as_secs(),
        params,
        totals,
    }))
}

async fn operator(
    State(state): State<AppState>,
    _tenant: Tenant,
    Path(address): Path<String>,
) -> ApiResult<axum::Json<OperatorAccount>> {
    super::settlement::operator_address("address", &address)?;
    let link = link(&state)?;
    let params = link
        .chain
        .query(json!({"params": {}}))
        .await
        .map_err(unavailable)?;
    let denom = params["denom"].as_str().unwrap_or_default().to_string();
    let account = link
        .chain
        .query(json!({"operator": {"address": address}}))
        .await
        .map_err(unavailable)?;
    let balance = match link.chain.balance(&address, &denom).await {
        Ok(amount) => Some(amount.to_string()),
        Err(ChainError::Invalid { .. }) => None,
        Err(error) => return Err(unavailable(error)),
    };
    let text = |field: &str| -> String { account[field].as_str().unwrap_or("0").to_string() };
    Ok(axum::Json(OperatorAccount {
        address,
        denom,
        balance,
        bonded: text("bonded"),
        unbonding: text("unbonding"),
        slashed: text("slashed"),
        meets_min_stake: account["meets_min_stake"].as_bool().unwrap_or(false),
        jailed: account["jailed"].as_bool().unwrap_or(false),
        jailed_until: account["jailed_until"].as_u64().unwrap_or(0),
        nodes: account["nodes"]
            .as_array()
            .map(|nodes| {
                nodes
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
    }))
}
