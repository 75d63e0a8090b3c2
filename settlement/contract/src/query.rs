//! Queries: every piece of state, lists paginated by key (`start_after` exclusive, `limit` default
//! 30, at most 100).

use cosmwasm_std::{Addr, Binary, Deps, Env, Order, StdError, StdResult, Uint128, to_json_binary};
use cw_storage_plus::Bound;

use crate::msg::{
    BatchResponse, BatchesResponse, ClaimsResponse, ConfigResponse, EscrowResponse,
    EscrowsResponse, NodeResponse, NodesResponse, OperatorResponse, OperatorsResponse, QueryMsg,
    StakeResponse, TotalsResponse,
};
use crate::state::{
    BATCHES, Batch, CONFIG, ESCROWS, Escrow, LEDGER, NODES, Node, OPERATOR_NODES, OPERATORS,
    OperatorState, PARAMS,
};

const DEFAULT_LIMIT: u32 = 30;
const MAX_LIMIT: u32 = 100;

pub fn query(deps: Deps, env: Env, msg: QueryMsg) -> StdResult<Binary> {
    match msg {
        QueryMsg::Params {} => to_json_binary(&PARAMS.load(deps.storage)?),
        QueryMsg::Config {} => {
            let config = CONFIG.load(deps.storage)?;
            to_json_binary(&ConfigResponse {
                settler: config.settler.into(),
                admin: config.admin.into(),
                treasury: config.treasury.into(),
            })
        }
        QueryMsg::Stake { operator } => {
            let operator = operator_response(deps, &env, deps.api.addr_validate(&operator)?)?;
            to_json_binary(&StakeResponse {
                operator: operator.address,
                bonded: operator.bonded,
                unbonding: operator.unbonding,
                meets_min_stake: operator.meets_min_stake,
                jailed_until: operator.jailed_until,
                jailed: operator.jailed,
            })
        }
        QueryMsg::Claims { operator } => {
            let operator = deps.api.addr_validate(&operator)?;
            let state = OPERATORS
                .may_load(deps.storage, &operator)?
                .unwrap_or_default();
            to_json_binary(&ClaimsResponse {
                claims: state.claims,
            })
        }
        QueryMsg::Escrow { payer } => {
            let payer = deps.api.addr_validate(&payer)?;
            let escrow = ESCROWS.may_load(deps.storage, &payer)?.unwrap_or_default();
            to_json_binary(&escrow_response(payer, escrow))
        }
        QueryMsg::Escrows { start_after, limit } => {
            let start = start_after.map(Addr::unchecked);
            let escrows = ESCROWS
                .range(
                    deps.storage,
                    start.as_ref().map(Bound::exclusive),
                    None,
                    Order::Ascending,
                )
                .take(limit_of(limit))
                .map(|item| item.map(|(payer, escrow)| escrow_response(payer, escrow)))
                .collect::<StdResult<_>>()?;
            to_json_binary(&EscrowsResponse { escrows })
        }
        QueryMsg::Node { node } => {
            let stored = NODES
                .may_load(deps.storage, &node)?
                .ok_or_else(|| StdError::msg(format!("node {node} is not registered")))?;
            to_json_binary(&node_response(node, stored))
        }
        QueryMsg::Nodes { start_after, limit } => {
            let nodes = NODES
                .range(
                    deps.storage,
                    start_after.as_deref().map(Bound::exclusive),
                    None,
                    Order::Ascending,
                )
                .take(limit_of(limit))
                .map(|item| item.map(|(name, node)| node_response(name, node)))
                .collect::<StdResult<_>>()?;
            to_json_binary(&NodesResponse { nodes })
        }
        QueryMsg::Batch { id } => {
            let batch = BATCHES
                .may_load(deps.storage, &id)?
                .ok_or_else(|| StdError::msg(format!("batch {id} not found")))?;
            to_json_binary(&batch_response(id, batch))
        }
        QueryMsg::Batches { start_after, limit } => {
            let batches = BATCHES
                .range(
                    deps.storage,
                    start_after.as_deref().map(Bound::exclusive),
                    None,
                    Order::Ascending,
                )
                .take(limit_of(limit))
                .map(|item| item.map(|(id, batch)| batch_response(id, batch)))
                .collect::<StdResult<_>>()?;
            to_json_binary(&BatchesResponse { batches })
        }
        QueryMsg::Operator { address } => {
            let address = deps.api.addr_validate(&address)?;
            to_json_binary(&operator_response(deps, &env, address)?)
        }
        QueryMsg::Operators { start_after, limit } => {
            let start = start_after.map(Addr::unchecked);
            let addresses = OPERATORS
                .keys(
                    deps.storage,
                    start.as_ref().map(Bound::exclusive),
                    None,
                    Order::Ascending,
                )
                .take(limit_of(limit))
                .collect::<StdResult<Vec<_>>>()?;
            let operators = addresses
                .into_iter()
                .map(|address| operator_response(deps, &env, address))
                .collect::<StdResult<_>>()?;
            to_json_binary(&OperatorsResponse { operators })
        }
        QueryMsg::Totals {} => {
            let ledger = LEDGER.load(deps.storage)?;
            let denom = PARAMS.load(deps.storage)?.denom;
            let balance = deps
                .querier
                .query_balance(&env.contract.address, denom)?
                .amount;
            let balance = Uint128::try_from(balance).map_err(StdError::from)?;
            let held = (ledger.deposits + ledger.stakes)
                .checked_sub(
                    ledger.payouts
                        + ledger.withdrawals
                        + ledger.claims_paid
                        + ledger.slashes
                        + ledger.fees,
                )
                .map_err(StdError::from)?;
            to_json_binary(&TotalsResponse {
                deposits: ledger.deposits,
                stakes: ledger.stakes,
                payouts: ledger.payouts,
                withdrawals: ledger.withdrawals,
                claims_paid: ledger.claims_paid,
                slashes: ledger.slashes,
                fees: ledger.fees,
                held,
                balance,
                escrow: ledger.escrow,
                reserved: ledger.reserved,
                bonded: ledger.bonded,
                unbonding: ledger.unbonding,
            })
        }
    }
}

fn limit_of(limit: Option<u32>) -> usize {
    limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT) as usize
}

fn escrow_response(payer: Addr, escrow: Escrow) -> EscrowResponse {
    EscrowResponse {
        payer: payer.into(),
        balance: escrow.balance,
        reserved: escrow.reserved,
        free: escrow.balance - escrow.reserved,
    }
}

fn node_response(node: String, stored: Node) -> NodeResponse {
    NodeResponse {
        node,
        operator: stored.operator.into(),
        pubkey: stored.pubkey,
    }
}

fn batch_response(id: String, batch: Batch) -> BatchResponse {
    BatchResponse {
        id,
        root: batch.root,
        period: batch.period,
        receipts: batch.receipts,
        provider_totals: batch.provider_totals,
        payer_totals: batch.payer_totals,
        posted_at: batch.posted_at,
        state: batch.state,
        challenge_ends_at: batch.challenge_ends_at,
        closed_at: batch.closed_at,
        fee: batch.fee,
        challenge: batch.challenge,
    }
}

fn operator_response(deps: Deps, env: &Env, address: Addr) -> StdResult<OperatorResponse> {
    let state: OperatorState = OPERATORS
        .may_load(deps.storage, &address)?
        .unwrap_or_default();
    let min_stake: Uint128 = PARAMS.load(deps.storage)?.min_stake;
    let nodes = OPERATOR_NODES
        .prefix(&address)
        .keys(deps.storage, None, None, Order::Ascending)
        .collect::<StdResult<Vec<String>>>()?;
    Ok(OperatorResponse {
        unbonding: state.unbonding(),
        meets_min_stake: state.bonded >= min_stake && !state.bonded.is_zero(),
        jailed: state.jailed_until > env.block.time.seconds(),
        address: address.into(),
        bonded: state.bonded,
        jailed_until: state.jailed_until,
        slashed: state.slashed,
        nodes,
    })
}
