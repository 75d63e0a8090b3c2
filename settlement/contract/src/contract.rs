//! Entry points (public, so the hub's embedded devnet can wrap them in cw-multi-test with
//! `ContractWrapper::new(execute, instantiate, query)`), parameter validation and the admin's
//! messages. The other messages live in [`crate::execute`], the queries in [`crate::query`].

#[cfg(not(feature = "library"))]
use cosmwasm_std::entry_point;
use cosmwasm_std::{
    Addr, Binary, Decimal, Deps, DepsMut, Env, MessageInfo, Response, StdResult, Uint128,
};

use crate::error::ContractError;
use crate::execute::{batch, escrow, stake};
use crate::msg::{ExecuteMsg, InstantiateMsg, Params, QueryMsg};
use crate::state::{CONFIG, Config, LEDGER, Ledger, PARAMS};

#[cfg_attr(not(feature = "library"), entry_point)]
pub fn instantiate(
    deps: DepsMut,
    env: Env,
    info: MessageInfo,
    msg: InstantiateMsg,
) -> Result<Response, ContractError> {
    nonpayable(&info)?;
    validate_params(&msg.params)?;
    let config = Config {
        settler: validate_addr(deps.as_ref(), "settler", &msg.settler)?,
        admin: validate_addr(deps.as_ref(), "admin", &msg.admin)?,
        treasury: validate_payee(deps.as_ref(), &env, "treasury", &msg.treasury)?,
    };
    CONFIG.save(deps.storage, &config)?;
    PARAMS.save(deps.storage, &msg.params)?;
    LEDGER.save(deps.storage, &Ledger::default())?;
    Ok(Response::new()
        .add_attribute("action", "instantiate")
        .add_attribute("denom", &msg.params.denom)
        .add_attribute("settler", config.settler)
        .add_attribute("admin", config.admin)
        .add_attribute("treasury", config.treasury))
}

#[cfg_attr(not(feature = "library"), entry_point)]
pub fn execute(
    deps: DepsMut,
    env: Env,
    info: MessageInfo,
    msg: ExecuteMsg,
) -> Result<Response, ContractError> {
    // Funds sent with any other message would sit in the contract outside every account and
    // break the invariant, so only the two funded messages take them.
    if !matches!(msg, ExecuteMsg::Bond {} | ExecuteMsg::Deposit {}) {
        nonpayable(&info)?;
    }
    match msg {
        ExecuteMsg::Bond {} => stake::bond(deps, info),
        ExecuteMsg::Unbond { amount } => stake::unbond(deps, env, info, amount),
        ExecuteMsg::Claim {} => stake::claim(deps, env, info),
        ExecuteMsg::RegisterNode { node, pubkey } => {
            stake::register_node(deps, env, info, node, pubkey)
        }
        ExecuteMsg::Slash {
            operator,
            reason,
            evidence,
        } => stake::slash(deps, env, info, operator, reason, evidence),
        ExecuteMsg::Deposit {} => escrow::deposit(deps, info),
        ExecuteMsg::Withdraw { amount } => escrow::withdraw(deps, info, amount),
        ExecuteMsg::PostBatch {
            id,
            root,
            period,
            receipts,
            provider_totals,
            payer_totals,
        } => batch::post(
            deps,
            env,
            info,
            batch::NewBatch {
                id,
                root,
                period,
                receipts,
                provider_totals,
                payer_totals,
            },
        ),
        ExecuteMsg::FinalizeBatch { id } => batch::finalize(deps, env, id),
        ExecuteMsg::Challenge { batch, evidence } => {
            batch::challenge(deps, env, info, batch, evidence)
        }
        ExecuteMsg::UpdateParams { params } => update_params(deps, info, params),
        ExecuteMsg::UpdateConfig {
            settler,
            admin,
            treasury,
        } => update_config(deps, env, info, settler, admin, treasury),
    }
}

#[cfg_attr(not(feature = "library"), entry_point)]
pub fn query(deps: Deps, env: Env, msg: QueryMsg) -> StdResult<Binary> {
    crate::query::query(deps, env, msg)
}

fn update_params(
    deps: DepsMut,
    info: MessageInfo,
    params: Params,
) -> Result<Response, ContractError> {
    require_admin(deps.as_ref(), &info.sender, "update params")?;
    validate_params(&params)?;
    let old = PARAMS.load(deps.storage)?;
    if old.denom != params.denom {
        return Err(ContractError::DenomChange { from: old.denom });
    }
    PARAMS.save(deps.storage, &params)?;
    Ok(Response::new()
        .add_attribute("action", "update_params")
        .add_attribute("min_stake", params.min_stake)
        .add_attribute("unbonding_seconds", params.unbonding_seconds.to_string())
        .add_attribute(
            "challenge_window_seconds",
            params.challenge_window_seconds.to_string(),
        )
        .add_attribute("protocol_fee_bps", params.protocol_fee_bps.to_string())
        .add_attribute("slash_fraud", params.slash_ratios.fraud.to_string())
        .add_attribute("slash_cheating", params.slash_ratios.cheating.to_string())
        .add_attribute("slash_downtime", params.slash_ratios.downtime.to_string())
        .add_attribute("jail_seconds", params.jail_seconds.to_string()))
}

fn update_config(
    deps: DepsMut,
    env: Env,
    info: MessageInfo,
    settler: Option<String>,
    admin: Option<String>,
    treasury: Option<String>,
) -> Result<Response, ContractError> {
    require_admin(deps.as_ref(), &info.sender, "update config")?;
    let mut config = CONFIG.load(deps.storage)?;
    if let Some(settler) = settler {
        config.settler = validate_addr(deps.as_ref(), "settler", &settler)?;
    }
    if let Some(admin) = admin {
        config.admin = validate_addr(deps.as_ref(), "admin", &admin)?;
    }
    if let Some(treasury) = treasury {
        config.treasury = validate_payee(deps.as_ref(), &env, "treasury", &treasury)?;
    }
    CONFIG.save(deps.storage, &config)?;
    Ok(Response::new()
        .add_attribute("action", "update_config")
        .add_attribute("settler", config.settler)
        .add_attribute("admin", config.admin)
        .add_attribute("treasury", config.treasury))
}

/// Parameters that cannot work are refused up front, naming the field.
pub fn validate_params(params: &Params) -> Result<(), ContractError> {
    if params.denom.is_empty() {
        return Err(ContractError::invalid("params.denom", "must not be empty"));
    }
    if params.protocol_fee_bps > 10_000 {
        return Err(ContractError::invalid(
            "params.protocol_fee_bps",
            format!("{} is above 10000 (100%)", params.protocol_fee_bps),
        ));
    }
    for (field, ratio) in [
        ("params.slash_ratios.fraud", params.slash_ratios.fraud),
        ("params.slash_ratios.cheating", params.slash_ratios.cheating),
        ("params.slash_ratios.downtime", params.slash_ratios.downtime),
    ] {
        if ratio > Decimal::one() {
            return Err(ContractError::invalid(field, format!("{ratio} is above 1")));
        }
    }
    Ok(())
}

pub fn validate_addr(deps: Deps, field: &str, addr: &str) -> Result<Addr, ContractError> {
    deps.api
        .addr_validate(addr)
        .map_err(|e| ContractError::invalid(field, format!("{addr:?} is not a valid address: {e}")))
}

/// An address the contract sends funds to: valid, and not the contract itself (funds sent to itself
/// would stay in its balance while its ledger counts them as paid out).
pub fn validate_payee(
    deps: Deps,
    env: &Env,
    field: &str,
    addr: &str,
) -> Result<Addr, ContractError> {
    let address = validate_addr(deps, field, addr)?;
    if address == env.contract.address {
        return Err(ContractError::invalid(
            field,
            "is this contract; it cannot pay itself",
        ));
    }
    Ok(address)
}

pub fn require_admin(deps: Deps, sender: &Addr, action: &'static str) -> Result<(), ContractError> {
    if CONFIG.load(deps.storage)?.admin != *sender {
        return Err(ContractError::Unauthorized {
            role: "admin",
            action,
        });
    }
    Ok(())
}

/// Messages other than `Bond` and `Deposit` carry no funds.
fn nonpayable(info: &MessageInfo) -> Result<(), ContractError> {
    if info.funds.is_empty() {
        return Ok(());
    }
    Err(ContractError::Unexpected {
        got: info
            .funds
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// The one coin of `denom` a message must carry, more than zero.
pub fn must_pay(info: &MessageInfo, denom: &str) -> Result<Uint128, ContractError> {
    match info.funds.as_slice() {
        [coin] if coin.denom == denom => {
            if coin.amount.is_zero() {
                Err(ContractError::ZeroAmount)
            } else {
                Uint128::try_from(coin.amount).map_err(|_| ContractError::Funds {
                    denom: denom.to_owned(),
                    got: format!("{coin}, more than the contract accounts in 128 bits"),
                })
            }
        }
        funds => Err(ContractError::Funds {
            denom: denom.to_owned(),
            got: if funds.is_empty() {
                "nothing".to_owned()
            } else {
                funds
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        }),
    }
}
