//! `/v1/prices` and `/v1/quotes`: the market's base prices, and what a job would cost before it is
//! submitted.

use axum::{
    Router,
    extract::State,
    routing::{get, post},
};
use crds::{
    money::{Price, display_micros},
    rest::{GpuClassPrice, PriceList, Quote},
    v1alpha1::WorkerPlacement,
};
use scheduler::Weights;

use crate::{
    error::ApiResult,
    extract::{RawBody, Tenant},
    scheduling::{fleet, request_for_on},
    state::AppState,
    submission,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/prices", get(prices))
        .route("/v1/quotes", post(quote))
}

async fn prices(State(state): State<AppState>, _tenant: Tenant) -> axum::Json<PriceList> {
    let params = state.market.params();
    let items = state
        .market
        .snapshot()
        .into_iter()
        .map(|p| GpuClassPrice {
            gpu_class: p.class,
            base_price_per_gpu_hour: Price::from_micros(p.base_micros),
            utilization_bps: p.utilization_bps,
            change_bps: p.change_bps,
        })
        .collect();
    axum::Json(PriceList {
        items,
        target_utilization_bps: params.target_utilization_bps,
        max_change_bps: params.max_change_bps,
        epoch_seconds: state.settings.price_epoch.as_secs(),
    })
}

/// Places the job on the current fleet without writing anything, and prices the result.
async fn quote(
    State(state): State<AppState>,
    _tenant: Tenant,
    body: RawBody,
) -> ApiResult<axum::Json<Quote>> {
    let parsed = submission::parse(&body.bytes, body.content_type.as_deref(), &state.validator)?;
    let request = request_for_on(&state, &parsed.spec);
    let (mut index, network) = fleet(&state).await?;
    let prices = state.market.book();
    Ok(axum::Json(
        match scheduler::place(&mut index, &network, &prices, &request, &Weights::default()) {
            Ok(slots) => {
                let per_worker = u64::from(request.gpus_per_worker.max(1));
                let hourly: u64 = slots
                    .iter()
                    .map(|s| s.price_micros.saturating_mul(per_worker))
                    .sum();
                let price = slots.iter().map(|s| s.price_micros).max().unwrap_or(0);
                let sites: Vec<scheduler::NodeKey> = slots.iter().map(|s| s.node).collect();
                let aggregator = (!request.data_nodes.is_empty())
                    .then(|| scheduler::federated::aggregator(&index, &network, &sites))
                    .flatten()
                    .and_then(|(key, _)| index.entry(key).map(|e| e.node.name.clone()));
                Quote {
                    placeable: true,
                    workers: slots
                        .iter()
                        .map(|s| {
                            let node = index.entry(s.node).map(|e| &e.node);
                            WorkerPlacement {
                                rank: s.rank,
                                node: node.map(|n| n.name.clone()).unwrap_or_default(),
                                gpus: s.gpus.clone(),
                                region: node.map(|n| n.region.clone()).unwrap_or_default(),
                            }
                        })
                        .collect(),
                    price_per_gpu_hour: Some(Price::from_micros(price)),
                    cost_per_hour: Some(display_micros(hourly)),
                    aggregator,
                    message: None,
                }
            }
            Err(why) => Quote {
                placeable: false,
                workers: Vec::new(),
                price_per_gpu_hour: None,
                cost_per_hour: None,
                aggregator: None,
                message: Some(why.to_string()),
            },
        },
    ))
}
