//! The settler key and the gas price: what the hub reads from its key file and settings.
#![cfg(feature = "chain")]

use settlement::chain::cosmos::GasPrice;
use settlement::chain::{ChainError, SettlerKey};

/// A public test mnemonic (never fund it on a real chain).
const MNEMONIC: &str = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon \
    abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon \
    abandon art";
// Derived independently (Python bip_utils, BIP-44 coin 118, m/44'/118'/0'/0/0).
const PRIVATE_KEY: &str = "8088c2ed2149c34f6d6533b774da4e1692eb5cb426fdbaef6898eeda489630b7";
const PUBLIC_KEY: &str = "02ba66a84cf7839af172a13e7fc9f5e7008cb8bca1585f8f3bafb3039eda3c1fdd";
const COSMOS_ADDRESS: &str = "cosmos1r5v5srda7xfth3hn2s26txvrcrntldjumt8mhl";

fn invalid_field(error: ChainError) -> &'static str {
    match error {
        ChainError::Invalid { field, .. } => field,
        other => panic!("expected an invalid-setting error, got {other:?}"),
    }
}

#[test]
fn mnemonic_derives_the_cosmos_sdk_default_account() {
    let key = SettlerKey::from_mnemonic(MNEMONIC, "cosmos").unwrap();
    assert_eq!(key.address().as_ref(), COSMOS_ADDRESS);
    assert_eq!(hex::encode(key.public_key().to_bytes()), PUBLIC_KEY);
}

#[test]
fn hex_key_and_mnemonic_give_the_same_account_and_the_prefix_only_changes_the_encoding() {
    let from_hex = SettlerKey::from_hex(PRIVATE_KEY, "cosmos").unwrap();
    assert_eq!(from_hex.address().as_ref(), COSMOS_ADDRESS);
    let wasm = SettlerKey::from_hex(PRIVATE_KEY, "wasm").unwrap();
    assert!(
        wasm.address().as_ref().starts_with("wasm1"),
        "{}",
        wasm.address()
    );
    assert_eq!(wasm.address().to_bytes(), from_hex.address().to_bytes());
}

#[test]
fn key_files_hold_either_form_with_any_whitespace() {
    let dir = tempfile::tempdir().unwrap();
    let hex_file = dir.path().join("settler.hex");
    std::fs::write(&hex_file, format!("{PRIVATE_KEY}\n")).unwrap();
    let mnemonic_file = dir.path().join("settler.mnemonic");
    std::fs::write(
        &mnemonic_file,
        format!("  {}\n", MNEMONIC.replace(' ', "\n")),
    )
    .unwrap();
    for file in [&hex_file, &mnemonic_file] {
        let key = SettlerKey::from_file(file, "cosmos").unwrap();
        assert_eq!(key.address().as_ref(), COSMOS_ADDRESS, "{}", file.display());
    }
}

#[test]
fn bad_keys_are_refused_naming_what_is_wrong() {
    let missing = SettlerKey::from_file(std::path::Path::new("/nonexistent/settler.key"), "wasm");
    let error = missing.unwrap_err();
    assert!(
        error.to_string().contains("/nonexistent/settler.key"),
        "{error}"
    );
    assert_eq!(invalid_field(error), "chain key file");

    // 31 bytes, not hex, a broken checksum (last word changed), 12 words: all refused.
    for bad in [
        &PRIVATE_KEY[..62],
        "not-a-key",
        &MNEMONIC.replace("art", "abandon"),
        "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about",
    ] {
        let error = SettlerKey::parse(bad, "wasm").unwrap_err();
        assert!(!error.is_retryable());
        assert_eq!(invalid_field(error), "chain key", "{bad}");
    }
    // The zero scalar is not a private key.
    let zero = SettlerKey::from_hex(&"00".repeat(32), "wasm").unwrap_err();
    assert_eq!(invalid_field(zero), "chain key");
    let prefix = SettlerKey::from_hex(PRIVATE_KEY, "Not A Prefix").unwrap_err();
    assert_eq!(invalid_field(prefix), "address prefix");
}

#[test]
fn debug_output_never_shows_the_secret() {
    let key = SettlerKey::from_hex(PRIVATE_KEY, "wasm").unwrap();
    let shown = format!("{key:?}");
    assert!(!shown.contains(PRIVATE_KEY), "{shown}");
    assert!(shown.contains(key.address().as_ref()), "{shown}");
}

#[test]
fn fees_are_gas_times_price_rounded_up_to_the_smallest_unit() {
    let price = GasPrice::parse("0.025uagora").unwrap();
    let fee = price.fee(333_333).unwrap();
    assert_eq!((fee.amount, fee.denom.as_ref()), (8_334, "uagora")); // 8,333.325 ↑
    assert_eq!(price.fee(200_000).unwrap().amount, 5_000);
    assert_eq!(GasPrice::parse("1stake").unwrap().fee(7).unwrap().amount, 7);
    assert_eq!(
        GasPrice::parse("0uagora")
            .unwrap()
            .fee(1_000_000)
            .unwrap()
            .amount,
        0
    );
    for bad in [
        "0.025",
        "uagora",
        ".5uagora",
        "1.2.3uagora",
        "-1uagora",
        "0.025 uagora",
    ] {
        assert_eq!(
            invalid_field(GasPrice::parse(bad).unwrap_err()),
            "gas price",
            "{bad}"
        );
    }
}
