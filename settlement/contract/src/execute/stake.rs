//! Providers' collateral: bonding, unbonding into claims that stay slashable until paid, node
//! registration, and slashing with jail.

use cosmwasm_std::{Api, BankMsg, DepsMut, Env, MessageInfo, Response, Uint128, coins};

use crate::contract::{must_pay, validate_addr};
use crate::error::ContractError;
use crate::msg::{Claim, SlashReason};
use crate::state::{CONFIG, LEDGER, NODES, Node, OPERATOR_NODES, OPERATORS, PARAMS};

/// Longest node name: the receipt encoding's text limit (one length byte).
const MAX_NODE_NAME: usize = 255;
/// Longest slash evidence: a reference (batch id and leaf, receipt ids), not the data itself.
const MAX_EVIDENCE: usize = 1024;

pub fn bond(deps: DepsMut, info: MessageInfo) -> Result<Response, ContractError> {
    let params = PARAMS.load(deps.storage)?;
    let amount = must_pay(&info, &params.denom)?;
    let mut operator = OPERATORS
        .may_load(deps.storage, &info.sender)?
        .unwrap_or_default();
    operator.bonded = operator.bonded.checked_add(amount)?;
    if operator.bonded < params.min_stake {
        return Err(ContractError::BelowMinStake {
            operator: info.sender.to_string(),
            bonded: operator.bonded,
            min_stake: params.min_stake,
        });
    }
    OPERATORS.save(deps.storage, &info.sender, &operator)?;
    let mut ledger = LEDGER.load(deps.storage)?;
    ledger.stakes = ledger.stakes.checked_add(amount)?;
    ledger.bonded = ledger.bonded.checked_add(amount)?;
    LEDGER.save(deps.storage, &ledger)?;
    Ok(Response::new()
        .add_attribute("action", "bond")
        .add_attribute("operator", info.sender)
        .add_attribute("amount", amount)
        .add_attribute("bonded", operator.bonded))
}

pub fn unbond(
    deps: DepsMut,
    env: Env,
    info: MessageInfo,
    amount: Uint128,
) -> Result<Response, ContractError> {
    if amount.is_zero() {
        return Err(ContractError::ZeroAmount);
    }
    let params = PARAMS.load(deps.storage)?;
    let mut operator = OPERATORS
        .may_load(deps.storage, &info.sender)?
        .unwrap_or_default();
    if amount > operator.bonded {
        return Err(ContractError::UnbondTooMuch {
            requested: amount,
            bonded: operator.bonded,
        });
    }
    let release_at = env
        .block
        .time
        .seconds()
        .saturating_add(params.unbonding_seconds);
    operator.bonded -= amount;
    operator.claims.push(Claim { amount, release_at });
    OPERATORS.save(deps.storage, &info.sender, &operator)?;
    let mut ledger = LEDGER.load(deps.storage)?;
    ledger.bonded = ledger.bonded.checked_sub(amount)?;
    ledger.unbonding = ledger.unbonding.checked_add(amount)?;
    LEDGER.save(deps.storage, &ledger)?;
    Ok(Response::new()
        .add_attribute("action", "unbond")
        .add_attribute("operator", info.sender)
        .add_attribute("amount", amount)
        .add_attribute("bonded", operator.bonded)
        .add_attribute("release_at", release_at.to_string()))
}

pub fn claim(deps: DepsMut, env: Env, info: MessageInfo) -> Result<Response, ContractError> {
    let params = PARAMS.load(deps.storage)?;
    let now = env.block.time.seconds();
    let mut operator = OPERATORS
        .may_load(deps.storage, &info.sender)?
        .unwrap_or_default();
    let (matured, pending): (Vec<Claim>, Vec<Claim>) = operator
        .claims
        .drain(..)
        .partition(|claim| claim.release_at <= now);
    let amount: Uint128 = matured.iter().map(|c| c.amount).sum();
    if amount.is_zero() {
        return Err(ContractError::NothingToClaim {
            next: pending
                .iter()
                .map(|c| c.release_at)
                .min()
                .map_or_else(|| "never: no claims".to_owned(), |t| t.to_string()),
        });
    }
    operator.claims = pending;
    OPERATORS.save(deps.storage, &info.sender, &operator)?;
    let mut ledger = LEDGER.load(deps.storage)?;
    ledger.unbonding = ledger.unbonding.checked_sub(amount)?;
    ledger.claims_paid = ledger.claims_paid.checked_add(amount)?;
    LEDGER.save(deps.storage, &ledger)?;
    Ok(Response::new()
        .add_message(BankMsg::Send {
            to_address: info.sender.to_string(),
            amount: coins(amount.u128(), params.denom),
        })
        .add_attribute("action", "claim")
        .add_attribute("operator", info.sender)
        .add_attribute("amount", amount))
}

pub fn register_node(
    deps: DepsMut,
    env: Env,
    info: MessageInfo,
    node: String,
    pubkey: String,
) -> Result<Response, ContractError> {
    if node.is_empty() || node.len() > MAX_NODE_NAME {
        return Err(ContractError::invalid(
            "node",
            format!("must be 1 to {MAX_NODE_NAME} bytes"),
        ));
    }
    if node.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ContractError::invalid(
            "node",
            format!("{node:?} contains whitespace or control characters"),
        ));
    }
    let pubkey = validate_pubkey(deps.api, &pubkey)?;
    let operator = OPERATORS
        .may_load(deps.storage, &info.sender)?
        .unwrap_or_default();
    if operator.jailed_until > env.block.time.seconds() {
        return Err(ContractError::Jailed {
            operator: info.sender.to_string(),
            until: operator.jailed_until,
        });
    }
    let rotated = match NODES.may_load(deps.storage, &node)? {
        Some(existing) if existing.operator != info.sender => {
            return Err(ContractError::NodeTaken {
                node,
                operator: existing.operator.to_string(),
            });
        }
        Some(_) => true,
        None => false,
    };
    NODES.save(
        deps.storage,
        &node,
        &Node {
            operator: info.sender.clone(),
            pubkey: pubkey.clone(),
        },
    )?;
    OPERATOR_NODES.save(deps.storage, (&info.sender, &node), &cosmwasm_std::Empty {})?;
    // The operator appears in `Operators` from its first node on, even before it bonds.
    OPERATORS.save(deps.storage, &info.sender, &operator)?;
    Ok(Response::new()
        .add_attribute("action", "register_node")
        .add_attribute("node", node)
        .add_attribute("operator", info.sender)
        .add_attribute("pubkey", pubkey)
        .add_attribute("rotated", rotated.to_string()))
}

/// A compressed SEC1 secp256k1 public key: 33 bytes starting 0x02 or 0x03, as hex, that is a point
/// on the curve. Returned in lowercase.
///
/// The curve check uses the chain's own secp256k1 (the `secp256k1_verify` host function, so the
/// contract carries no curve code): verifying the well-formed signature r = s = 1 over a zero hash
/// parses the key first and fails only if the key is not a curve point; the signature itself is
/// never valid, so the answer (`false`) is ignored.
fn validate_pubkey(api: &dyn Api, pubkey: &str) -> Result<String, ContractError> {
    let bytes = hex::decode(pubkey)
        .map_err(|e| ContractError::invalid("pubkey", format!("not hex: {e}")))?;
    if bytes.len() != 33 || !matches!(bytes[0], 2 | 3) {
        return Err(ContractError::invalid(
            "pubkey",
            format!(
                "a compressed secp256k1 key is 33 bytes starting 02 or 03; got {} bytes",
                bytes.len()
            ),
        ));
    }
    let mut signature = [0u8; 64];
    signature[31] = 1;
    signature[63] = 1;
    if api
        .secp256k1_verify(&[0u8; 32], &signature, &bytes)
        .is_err()
    {
        return Err(ContractError::invalid(
            "pubkey",
            "not a point on the secp256k1 curve",
        ));
    }
    Ok(hex::encode(bytes))
}

/// Takes `ratio(reason) × (bonded + unbonding)`, rounded down, to the treasury: from the bonded
/// stake first, then from pending claims, newest (latest to mature) first. Jails the operator
/// until `now + jail_seconds` (never shortening a longer jail).
pub fn slash(
    deps: DepsMut,
    env: Env,
    info: MessageInfo,
    operator: String,
    reason: SlashReason,
    evidence: String,
) -> Result<Response, ContractError> {
    let config = CONFIG.load(deps.storage)?;
    if info.sender != config.settler && info.sender != config.admin {
        return Err(ContractError::Unauthorized {
            role: "settler or admin",
            action: "slash",
        });
    }
    if evidence.trim().is_empty() || evidence.len() > MAX_EVIDENCE {
        return Err(ContractError::invalid(
            "evidence",
            format!("must say why (a reference anyone can check) in 1 to {MAX_EVIDENCE} bytes"),
        ));
    }
    let address = validate_addr(deps.as_ref(), "operator", &operator)?;
    let params = PARAMS.load(deps.storage)?;
    let (ratio, reason_name) = match reason {
        SlashReason::Fraud => (params.slash_ratios.fraud, "fraud"),
        SlashReason::Cheating => (params.slash_ratios.cheating, "cheating"),
        SlashReason::Downtime => (params.slash_ratios.downtime, "downtime"),
    };
    let mut state = OPERATORS
        .may_load(deps.storage, &address)?
        .unwrap_or_default();
    let stake = state.bonded.checked_add(state.unbonding())?;
    let amount = stake.mul_floor(ratio);

    let from_bonded = amount.min(state.bonded);
    state.bonded -= from_bonded;
    let mut left = amount - from_bonded;
    for claim in state.claims.iter_mut().rev() {
        let take = left.min(claim.amount);
        claim.amount -= take;
        left -= take;
    }
    state.claims.retain(|claim| !claim.amount.is_zero());
    let from_unbonding = amount - from_bonded;
    state.slashed = state.slashed.checked_add(amount)?;
    let jailed_until = env
        .block
        .time
        .seconds()
        .saturating_add(params.jail_seconds)
        .max(state.jailed_until);
    state.jailed_until = jailed_until;
    OPERATORS.save(deps.storage, &address, &state)?;

    let mut ledger = LEDGER.load(deps.storage)?;
    ledger.bonded = ledger.bonded.checked_sub(from_bonded)?;
    ledger.unbonding = ledger.unbonding.checked_sub(from_unbonding)?;
    ledger.slashes = ledger.slashes.checked_add(amount)?;
    LEDGER.save(deps.storage, &ledger)?;

    let mut response = Response::new();
    if !amount.is_zero() {
        response = response.add_message(BankMsg::Send {
            to_address: config.treasury.to_string(),
            amount: coins(amount.u128(), params.denom),
        });
    }
    Ok(response
        .add_attribute("action", "slash")
        .add_attribute("operator", address)
        .add_attribute("reason", reason_name)
        .add_attribute("ratio", ratio.to_string())
        .add_attribute("amount", amount)
        .add_attribute("from_bonded", from_bonded)
        .add_attribute("from_unbonding", from_unbonding)
        .add_attribute("jailed_until", jailed_until.to_string())
        .add_attribute("evidence", evidence)
        .add_attribute("by", info.sender))
}
