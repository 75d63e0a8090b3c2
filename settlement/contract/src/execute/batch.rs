//! Settlement batches: posted by the settler with the Merkle root of an epoch's receipts and the
//! totals they add up to, open to challenge for `challenge_window_seconds`, then finalized (escrow
//! → providers, less the protocol fee → treasury) or, if a challenge proved the batch wrong,
//! closed as `challenged` with the payers' reservations released.

use std::collections::BTreeSet;

use cosmwasm_std::{
    Addr, BankMsg, Deps, DepsMut, Env, Event, MessageInfo, Response, Uint128, coins,
};

use crate::contract::validate_payee;
use crate::error::ContractError;
use crate::evidence::{MAX_PROOF, decode_receipt, hash_from_hex, leaf_hash, verify_inclusion};
use crate::msg::{BatchState, ChallengeEvidence, Period, Total};
use crate::state::{BATCHES, Batch, CONFIG, ESCROWS, LEDGER, NODES, PARAMS};

/// Longest batch id (ids are the relayer's, e.g. `epoch-…`; the bound keeps keys small).
const MAX_ID: usize = 128;

/// A `PostBatch` message's content.
pub struct NewBatch {
    pub id: String,
    pub root: String,
    pub period: Period,
    pub receipts: u64,
    pub provider_totals: Vec<Total>,
    pub payer_totals: Vec<Total>,
}

pub fn post(
    deps: DepsMut,
    env: Env,
    info: MessageInfo,
    new: NewBatch,
) -> Result<Response, ContractError> {
    let config = CONFIG.load(deps.storage)?;
    if info.sender != config.settler {
        return Err(ContractError::Unauthorized {
            role: "settler",
            action: "post batches",
        });
    }
    if new.id.is_empty() || new.id.len() > MAX_ID || new.id.chars().any(char::is_whitespace) {
        return Err(ContractError::invalid(
            "id",
            format!("must be 1 to {MAX_ID} bytes without whitespace"),
        ));
    }
    let root = hash_from_hex(&new.root)
        .map(hex::encode)
        .ok_or_else(|| ContractError::invalid("root", "must be 32 bytes as hex"))?;
    if new.period.from_ms > new.period.to_ms {
        return Err(ContractError::invalid(
            "period",
            format!(
                "from_ms {} is after to_ms {}",
                new.period.from_ms, new.period.to_ms
            ),
        ));
    }
    if new.receipts == 0 {
        return Err(ContractError::invalid(
            "receipts",
            "a batch settles at least one receipt",
        ));
    }
    let providers = validate_totals(deps.as_ref(), &env, "provider_totals", &new.provider_totals)?;
    let payers = validate_totals(deps.as_ref(), &env, "payer_totals", &new.payer_totals)?;
    let provider_sum: Uint128 = providers.iter().map(|(_, amount)| *amount).sum();
    let payer_sum: Uint128 = payers.iter().map(|(_, amount)| *amount).sum();
    if provider_sum != payer_sum {
        return Err(ContractError::Unbalanced {
            providers: provider_sum,
            payers: payer_sum,
        });
    }

    if let Some(existing) = BATCHES.may_load(deps.storage, &new.id)? {
        // Idempotent by id: the relayer may resend after a crash; the same content is a no-op.
        let same = existing.root == root
            && existing.period == new.period
            && existing.receipts == new.receipts
            && existing.provider_totals == new.provider_totals
            && existing.payer_totals == new.payer_totals;
        if !same {
            return Err(ContractError::BatchConflict { id: new.id });
        }
        return Ok(Response::new()
            .add_attribute("action", "post_batch")
            .add_attribute("id", new.id)
            .add_attribute("duplicate", "true"));
    }

    for (payer, total) in &payers {
        let mut escrow = ESCROWS.may_load(deps.storage, payer)?.unwrap_or_default();
        let free = escrow.balance - escrow.reserved;
        if free < *total {
            return Err(ContractError::EscrowShort {
                payer: payer.to_string(),
                free,
                total: *total,
            });
        }
        escrow.reserved += *total;
        ESCROWS.save(deps.storage, payer, &escrow)?;
    }
    let mut ledger = LEDGER.load(deps.storage)?;
    ledger.reserved = ledger.reserved.checked_add(payer_sum)?;
    LEDGER.save(deps.storage, &ledger)?;

    let params = PARAMS.load(deps.storage)?;
    let posted_at = env.block.time.seconds();
    let challenge_ends_at = posted_at.saturating_add(params.challenge_window_seconds);
    BATCHES.save(
        deps.storage,
        &new.id,
        &Batch {
            root: root.clone(),
            period: new.period,
            receipts: new.receipts,
            provider_totals: new.provider_totals,
            payer_totals: new.payer_totals,
            posted_at,
            challenge_ends_at,
            state: BatchState::Posted,
            closed_at: None,
            fee: None,
            challenge: None,
        },
    )?;
    Ok(Response::new()
        .add_attribute("action", "post_batch")
        .add_attribute("id", new.id)
        .add_attribute("duplicate", "false")
        .add_attribute("root", root)
        .add_attribute("receipts", new.receipts.to_string())
        .add_attribute("total", payer_sum)
        .add_attribute("providers", providers.len().to_string())
        .add_attribute("payers", payers.len().to_string())
        .add_attribute("challenge_ends_at", challenge_ends_at.to_string()))
}

/// Addresses valid, distinct and not the contract's, amounts above zero.
fn validate_totals(
    deps: Deps,
    env: &Env,
    field: &str,
    totals: &[Total],
) -> Result<Vec<(Addr, Uint128)>, ContractError> {
    let mut seen = BTreeSet::new();
    totals
        .iter()
        .enumerate()
        .map(|(i, total)| {
            let field = format!("{field}[{i}]");
            let address = validate_payee(deps, env, &format!("{field}.address"), &total.address)?;
            if !seen.insert(address.clone()) {
                return Err(ContractError::invalid(
                    field,
                    format!("{address} appears more than once"),
                ));
            }
            if total.amount.is_zero() {
                return Err(ContractError::invalid(
                    format!("{field}.amount"),
                    "must be more than zero",
                ));
            }
            Ok((address, total.amount))
        })
        .collect()
}

/// Pays a batch whose challenge window is over. For each provider total `t`, the fee is
/// `floor(t × protocol_fee_bps / 10000)` and the provider gets `t − fee`: together exactly `t`, so
/// no unit is created or lost. Finalizing a final batch again is a no-op (the relayer may retry).
pub fn finalize(deps: DepsMut, env: Env, id: String) -> Result<Response, ContractError> {
    let mut batch = BATCHES
        .may_load(deps.storage, &id)?
        .ok_or_else(|| ContractError::BatchNotFound { id: id.clone() })?;
    match batch.state {
        BatchState::Posted => {}
        BatchState::Final => {
            return Ok(Response::new()
                .add_attribute("action", "finalize_batch")
                .add_attribute("id", id)
                .add_attribute("duplicate", "true"));
        }
        BatchState::Challenged => {
            return Err(ContractError::BatchClosed {
                id,
                state: "challenged".into(),
            });
        }
    }
    let now = env.block.time.seconds();
    if now < batch.challenge_ends_at {
        return Err(ContractError::WindowOpen {
            id,
            ends_at: batch.challenge_ends_at,
            remaining: batch.challenge_ends_at - now,
        });
    }
    let params = PARAMS.load(deps.storage)?;
    let config = CONFIG.load(deps.storage)?;

    let mut total = Uint128::zero();
    for payer_total in &batch.payer_totals {
        let payer = Addr::unchecked(&payer_total.address);
        let mut escrow = ESCROWS.load(deps.storage, &payer)?;
        escrow.balance = escrow.balance.checked_sub(payer_total.amount)?;
        escrow.reserved = escrow.reserved.checked_sub(payer_total.amount)?;
        ESCROWS.save(deps.storage, &payer, &escrow)?;
        total = total.checked_add(payer_total.amount)?;
    }

    let mut response = Response::new();
    let (mut paid, mut fees) = (Uint128::zero(), Uint128::zero());
    for provider in &batch.provider_totals {
        let fee = provider
            .amount
            .multiply_ratio(params.protocol_fee_bps, 10_000u128);
        let net = provider.amount - fee;
        if !net.is_zero() {
            response = response.add_message(BankMsg::Send {
                to_address: provider.address.clone(),
                amount: coins(net.u128(), &params.denom),
            });
        }
        response = response.add_event(
            Event::new("agora_payout")
                .add_attribute("batch", &id)
                .add_attribute("provider", &provider.address)
                .add_attribute("gross", provider.amount)
                .add_attribute("fee", fee)
                .add_attribute("net", net),
        );
        paid = paid.checked_add(net)?;
        fees = fees.checked_add(fee)?;
    }
    if !fees.is_zero() {
        response = response.add_message(BankMsg::Send {
            to_address: config.treasury.to_string(),
            amount: coins(fees.u128(), &params.denom),
        });
    }

    let mut ledger = LEDGER.load(deps.storage)?;
    ledger.escrow = ledger.escrow.checked_sub(total)?;
    ledger.reserved = ledger.reserved.checked_sub(total)?;
    ledger.payouts = ledger.payouts.checked_add(paid)?;
    ledger.fees = ledger.fees.checked_add(fees)?;
    LEDGER.save(deps.storage, &ledger)?;

    batch.state = BatchState::Final;
    batch.closed_at = Some(now);
    batch.fee = Some(fees);
    BATCHES.save(deps.storage, &id, &batch)?;
    Ok(response
        .add_attribute("action", "finalize_batch")
        .add_attribute("id", id)
        .add_attribute("duplicate", "false")
        .add_attribute("total", total)
        .add_attribute("paid", paid)
        .add_attribute("fee", fees))
}

/// A challenge succeeds when the evidence's leaf is in the batch's tree and either is not a valid
/// receipt (bad encoding, or more GPU time than its GPUs had in its window), or names a node that
/// is not registered, or whose operator the batch does not credit. The batch is then closed as
/// `challenged` (it can never be finalized) and its payers' reservations are released.
pub fn challenge(
    deps: DepsMut,
    env: Env,
    info: MessageInfo,
    id: String,
    evidence: ChallengeEvidence,
) -> Result<Response, ContractError> {
    let mut batch = BATCHES
        .may_load(deps.storage, &id)?
        .ok_or_else(|| ContractError::BatchNotFound { id: id.clone() })?;
    if batch.state != BatchState::Posted {
        let state = match batch.state {
            BatchState::Final => "final",
            _ => "challenged",
        };
        return Err(ContractError::BatchClosed {
            id,
            state: state.into(),
        });
    }
    let now = env.block.time.seconds();
    if now >= batch.challenge_ends_at {
        return Err(ContractError::WindowClosed {
            id,
            ended_at: batch.challenge_ends_at,
        });
    }
    if evidence.tree_size != batch.receipts {
        return Err(ContractError::NotIncluded {
            id,
            reason: format!(
                "tree_size {} but the batch has {} receipts",
                evidence.tree_size, batch.receipts
            ),
        });
    }
    if evidence.proof.len() > MAX_PROOF {
        return Err(ContractError::invalid(
            "evidence.proof",
            format!("more than {MAX_PROOF} hashes"),
        ));
    }
    let proof = evidence
        .proof
        .iter()
        .enumerate()
        .map(|(i, hash)| {
            hash_from_hex(hash).ok_or_else(|| {
                ContractError::invalid(format!("evidence.proof[{i}]"), "must be 32 bytes as hex")
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let root = hash_from_hex(&batch.root)
        .ok_or_else(|| ContractError::invalid("root", "stored root is not 32 bytes of hex"))?;
    verify_inclusion(
        leaf_hash(evidence.receipt.as_slice()),
        evidence.index,
        evidence.tree_size,
        &proof,
        &root,
    )
    .map_err(|reason| ContractError::NotIncluded {
        id: id.clone(),
        reason,
    })?;

    let reason = match decode_receipt(evidence.receipt.as_slice()) {
        Err(problem) => format!("leaf {} is not a valid receipt: {problem}", evidence.index),
        Ok(receipt) => match NODES.may_load(deps.storage, &receipt.node)? {
            None => format!("node {} is not registered", receipt.node),
            Some(node)
                if !batch
                    .provider_totals
                    .iter()
                    .any(|total| total.address == node.operator.as_str()) =>
            {
                format!(
                    "node {} is registered to {}, whom the batch does not credit",
                    receipt.node, node.operator
                )
            }
            Some(node) => {
                return Err(ContractError::NoContradiction {
                    id,
                    reason: format!(
                        "the receipt is valid and node {} is registered to {}, who is credited",
                        receipt.node, node.operator
                    ),
                });
            }
        },
    };

    let mut released = Uint128::zero();
    for payer_total in &batch.payer_totals {
        let payer = Addr::unchecked(&payer_total.address);
        let mut escrow = ESCROWS.load(deps.storage, &payer)?;
        escrow.reserved = escrow.reserved.checked_sub(payer_total.amount)?;
        ESCROWS.save(deps.storage, &payer, &escrow)?;
        released = released.checked_add(payer_total.amount)?;
    }
    let mut ledger = LEDGER.load(deps.storage)?;
    ledger.reserved = ledger.reserved.checked_sub(released)?;
    LEDGER.save(deps.storage, &ledger)?;

    batch.state = BatchState::Challenged;
    batch.closed_at = Some(now);
    batch.challenge = Some(format!("{reason} (challenged by {})", info.sender));
    BATCHES.save(deps.storage, &id, &batch)?;
    Ok(Response::new()
        .add_attribute("action", "challenge")
        .add_attribute("batch", id)
        .add_attribute("by", info.sender)
        .add_attribute("index", evidence.index.to_string())
        .add_attribute("reason", reason)
        .add_attribute("released", released))
}
