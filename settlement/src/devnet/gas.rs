//! An estimate of the gas a transaction would use on a Cosmos SDK chain with `x/wasm`, for the
//! devnet, which runs the contract natively and so meters nothing by itself.
//!
//! The estimate charges what the chain charges outside the Wasm VM, with the chain's own numbers:
//! every store access at the Cosmos SDK's `KVGasConfig` prices (cosmos-sdk `store/types/gas.go`:
//! read 1,000 + 3/byte, write 2,000 + 30/byte, delete 1,000, has 1,000, iterator step 30 +
//! 3/byte), the transaction's bytes at `x/auth`'s `TxSizeCostPerByte` (10) and one secp256k1
//! signature check (1,000), and wasmd's per-call costs (wasmd `x/wasm/types/gas_register.go`:
//! 60,000 to load the contract instance, 10 per event attribute and 1 per attribute byte beyond a
//! free 100). It leaves out the gas of the Wasm instructions themselves, so it is a lower bound of
//! what a real chain would charge, and says so wherever it is shown.

/// `KVGasConfig.ReadCostFlat`.
pub const READ_FLAT: u64 = 1_000;
/// `KVGasConfig.ReadCostPerByte` (applied to the value read, and to iterated keys and values).
pub const READ_PER_BYTE: u64 = 3;
/// `KVGasConfig.WriteCostFlat`.
pub const WRITE_FLAT: u64 = 2_000;
/// `KVGasConfig.WriteCostPerByte` (applied to key and value).
pub const WRITE_PER_BYTE: u64 = 30;
/// `KVGasConfig.DeleteCost`.
pub const DELETE: u64 = 1_000;
/// `KVGasConfig.IterNextCostFlat`.
pub const ITER_NEXT_FLAT: u64 = 30;
/// `x/auth` `TxSizeCostPerByte`.
pub const TX_BYTE: u64 = 10;
/// `x/auth` `SigVerifyCostSecp256k1`.
pub const SIGNATURE: u64 = 1_000;
/// wasmd `DefaultInstanceCost`: loading the contract for one call.
pub const INSTANCE: u64 = 60_000;
/// wasmd `DefaultPerAttributeCost`.
pub const PER_ATTRIBUTE: u64 = 10;
/// wasmd `DefaultEventAttributeDataCost`, per byte beyond [`ATTRIBUTE_FREE_BYTES`].
pub const ATTRIBUTE_BYTE: u64 = 1;
/// wasmd `DefaultEventAttributeDataFreeTier`.
pub const ATTRIBUTE_FREE_BYTES: u64 = 100;
/// The bytes a signed transaction carries besides its message: signer info, fee, signature and
/// the `MsgExecuteContract` envelope (sender and contract addresses), measured on the chain
/// client's own transactions (`settlement::chain::cosmos`) at about this size.
pub const TX_ENVELOPE_BYTES: u64 = 300;

/// Gas outside the store for one `MsgExecuteContract` with a JSON message of `msg_bytes` and
/// the contract's events.
pub fn fixed(msg_bytes: usize, attributes: &[(usize, usize)]) -> u64 {
    let tx_bytes = (msg_bytes as u64).saturating_add(TX_ENVELOPE_BYTES);
    let attribute_bytes: u64 = attributes
        .iter()
        .map(|(key, value)| (*key + *value) as u64)
        .sum();
    tx_bytes * TX_BYTE
        + SIGNATURE
        + INSTANCE
        + attributes.len() as u64 * PER_ATTRIBUTE
        + attribute_bytes.saturating_sub(ATTRIBUTE_FREE_BYTES) * ATTRIBUTE_BYTE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bigger_messages_and_more_attributes_cost_more() {
        let small = fixed(100, &[(6, 10)]);
        assert_eq!(
            small,
            400 * TX_BYTE + SIGNATURE + INSTANCE + PER_ATTRIBUTE,
            "16 attribute bytes are within the free tier"
        );
        assert_eq!(fixed(200, &[(6, 10)]) - small, 100 * TX_BYTE);
        assert_eq!(
            fixed(100, &[(6, 10), (50, 100)]) - small,
            PER_ATTRIBUTE + (166 - ATTRIBUTE_FREE_BYTES) * ATTRIBUTE_BYTE
        );
    }
}
