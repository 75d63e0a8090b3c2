//! The settler's account key: the one key allowed to post batches to the contract.

use super::ChainError;
use cosmrs::AccountId;
use cosmrs::bip32::{DerivationPath, Language, Mnemonic};
use cosmrs::crypto::PublicKey;
use cosmrs::crypto::secp256k1::SigningKey;
use std::fmt;
use std::path::Path;

/// The Cosmos SDK's default HD path (coin type 118): the account `wasmd keys add` and Keplr
/// derive from the same mnemonic, so the same phrase gives the same address everywhere.
pub const DERIVATION_PATH: &str = "m/44'/118'/0'/0/0";

/// A secp256k1 account key and its bech32 address. Its `Debug` never shows the secret.
pub struct SettlerKey {
    signing: SigningKey,
    public: PublicKey,
    address: AccountId,
}

impl SettlerKey {
    /// Reads a key file: either 64 hex characters (the raw private key, as `wasmd keys export
    /// --unarmored-hex --unsafe` prints it) or a 24-word BIP-39 mnemonic. Surrounding whitespace
    /// is ignored.
    pub fn from_file(path: &Path, prefix: &str) -> Result<Self, ChainError> {
        let text = std::fs::read_to_string(path).map_err(|error| ChainError::Invalid {
            field: "chain key file",
            reason: format!("{}: {error}", path.display()),
        })?;
        Self::parse(&text, prefix)
    }

    /// A hex private key or a mnemonic (see [`SettlerKey::from_file`]).
    pub fn parse(text: &str, prefix: &str) -> Result<Self, ChainError> {
        let text = text.trim();
        if text.split_whitespace().count() > 1 {
            Self::from_mnemonic(text, prefix)
        } else {
            Self::from_hex(text, prefix)
        }
    }

    /// A raw 32-byte private key in hex.
    pub fn from_hex(hex_key: &str, prefix: &str) -> Result<Self, ChainError> {
        let invalid = |reason: String| ChainError::Invalid {
            field: "chain key",
            reason,
        };
        let bytes = hex::decode(hex_key.trim())
            .map_err(|error| invalid(format!("not hex and not a mnemonic: {error}")))?;
        if bytes.len() != 32 {
            return Err(invalid(format!(
                "a private key is 32 bytes, got {}",
                bytes.len()
            )));
        }
        let signing = SigningKey::from_slice(&bytes)
            .map_err(|error| invalid(format!("not a secp256k1 private key: {error}")))?;
        Self::new(signing, prefix)
    }

    /// A 24-word English BIP-39 mnemonic, no passphrase, derived at [`DERIVATION_PATH`].
    pub fn from_mnemonic(phrase: &str, prefix: &str) -> Result<Self, ChainError> {
        let invalid = |reason: String| ChainError::Invalid {
            field: "chain key",
            reason,
        };
        let normalized = phrase.split_whitespace().collect::<Vec<_>>().join(" ");
        let mnemonic = Mnemonic::new(&normalized, Language::English)
            .map_err(|error| invalid(format!("not a 24-word BIP-39 mnemonic: {error}")))?;
        let path: DerivationPath = DERIVATION_PATH
            .parse()
            .map_err(|error| invalid(format!("derivation path: {error}")))?;
        let signing = SigningKey::derive_from_path(mnemonic.to_seed("").as_bytes(), &path)
            .map_err(|error| invalid(format!("derivation failed: {error}")))?;
        Self::new(signing, prefix)
    }

    fn new(signing: SigningKey, prefix: &str) -> Result<Self, ChainError> {
        if prefix.is_empty()
            || !prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            return Err(ChainError::Invalid {
                field: "address prefix",
                reason: format!("{prefix:?}: lowercase letters and digits, e.g. wasm or cosmos"),
            });
        }
        let public = signing.public_key();
        let address = public
            .account_id(prefix)
            .map_err(|error| ChainError::Invalid {
                field: "address prefix",
                reason: format!("{prefix:?}: {error}"),
            })?;
        Ok(Self {
            signing,
            public,
            address,
        })
    }

    /// The bech32 account address (`wasm1…`), the contract's `settler`.
    pub fn address(&self) -> &AccountId {
        &self.address
    }

    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.signing
    }
}

impl fmt::Debug for SettlerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SettlerKey")
            .field("address", &self.address.as_ref())
            .finish_non_exhaustive()
    }
}
