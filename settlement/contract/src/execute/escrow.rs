//! Payers' escrow: what batches are paid from. A posted batch reserves part of it; only the rest
//! (the free escrow) can be withdrawn or reserved again.

use cosmwasm_std::{BankMsg, DepsMut, MessageInfo, Response, Uint128, coins};

use crate::contract::must_pay;
use crate::error::ContractError;
use crate::state::{ESCROWS, LEDGER, PARAMS};

pub fn deposit(deps: DepsMut, info: MessageInfo) -> Result<Response, ContractError> {
    let params = PARAMS.load(deps.storage)?;
    let amount = must_pay(&info, &params.denom)?;
    let mut escrow = ESCROWS
        .may_load(deps.storage, &info.sender)?
        .unwrap_or_default();
    escrow.balance = escrow.balance.checked_add(amount)?;
    ESCROWS.save(deps.storage, &info.sender, &escrow)?;
    let mut ledger = LEDGER.load(deps.storage)?;
    ledger.deposits = ledger.deposits.checked_add(amount)?;
    ledger.escrow = ledger.escrow.checked_add(amount)?;
    LEDGER.save(deps.storage, &ledger)?;
    Ok(Response::new()
        .add_attribute("action", "deposit")
        .add_attribute("payer", info.sender)
        .add_attribute("amount", amount)
        .add_attribute("balance", escrow.balance))
}

pub fn withdraw(
    deps: DepsMut,
    info: MessageInfo,
    amount: Uint128,
) -> Result<Response, ContractError> {
    if amount.is_zero() {
        return Err(ContractError::ZeroAmount);
    }
    let params = PARAMS.load(deps.storage)?;
    let mut escrow = ESCROWS
        .may_load(deps.storage, &info.sender)?
        .unwrap_or_default();
    let free = escrow.balance - escrow.reserved;
    if amount > free {
        return Err(ContractError::WithdrawTooMuch {
            requested: amount,
            free,
            reserved: escrow.reserved,
        });
    }
    escrow.balance -= amount;
    ESCROWS.save(deps.storage, &info.sender, &escrow)?;
    let mut ledger = LEDGER.load(deps.storage)?;
    ledger.withdrawals = ledger.withdrawals.checked_add(amount)?;
    ledger.escrow = ledger.escrow.checked_sub(amount)?;
    LEDGER.save(deps.storage, &ledger)?;
    Ok(Response::new()
        .add_message(BankMsg::Send {
            to_address: info.sender.to_string(),
            amount: coins(amount.u128(), params.denom),
        })
        .add_attribute("action", "withdraw")
        .add_attribute("payer", info.sender)
        .add_attribute("amount", amount)
        .add_attribute("balance", escrow.balance))
}
