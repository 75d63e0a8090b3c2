//! The node's identity: a secp256k1 key pair kept in a key file on the node.
//!
//! A node name alone proves nothing, so the hub binds each name to the key that first registered it
//! and asks every registration to sign a fresh challenge (see [`crds::agent::register_message`]).
//! Settlement will verify the node's usage receipts against the same key, which is why the scheme is
//! deliberately plain and written down once:
//!
//! - public key: the compressed SEC1 point (33 bytes), lowercase hex;
//! - signature: ECDSA over SHA-256 of the message bytes, nonce per RFC 6979, `s` normalised to the
//!   lower half of the curve order, encoded as `r ‖ s` (64 bytes big-endian), lowercase hex.
//!
//! Low `s` makes every signature have exactly one encoding, so a signature cannot be altered into a
//! second valid one; the hub refuses high-`s` signatures.
//!
//! The key file holds the 32-byte secret scalar as 64 hex digits and a newline, readable only by its
//! owner. It is created on first start and never overwritten: losing it means the node's name can
//! never be registered again, so the agent refuses a file it cannot read as a key instead of
//! replacing it.

use std::{
    fmt,
    io::{ErrorKind, Write},
    path::Path,
};

use anyhow::{Context, bail};
use k256::ecdsa::{
    Signature, SigningKey, VerifyingKey,
    signature::{Signer, Verifier},
};
use rand::RngCore;

/// A node's key pair. `Debug` shows only the public key.
#[derive(Clone)]
pub struct NodeIdentity {
    key: SigningKey,
    public_key: String,
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

impl NodeIdentity {
    /// A new random key.
    pub fn generate() -> Self {
        loop {
            let mut secret = [0u8; 32];
            rand::rng().fill_bytes(&mut secret);
            // Fails only for zero or a value at or above the curve order: odds of about 2^-128.
            if let Ok(identity) = Self::from_secret(&secret) {
                return identity;
            }
        }
    }

    /// The key whose secret scalar is `secret` (32 bytes, big-endian).
    pub fn from_secret(secret: &[u8]) -> anyhow::Result<Self> {
        if secret.len() != 32 {
            bail!("a secret key is 32 bytes, not {}", secret.len());
        }
        let key = SigningKey::from_slice(secret)
            .map_err(|_| anyhow::anyhow!("not a valid secp256k1 secret key"))?;
        let public_key = hex::encode(key.verifying_key().to_sec1_point(true).as_bytes());
        Ok(Self { key, public_key })
    }

    /// The key in `path`, or a new one written there (mode 0600) when the file does not exist.
    /// An existing file that does not hold a key is an error, never replaced.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        match Self::load(path) {
            Err(e)
                if e.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == ErrorKind::NotFound) => {}
            other => return other,
        }
        let identity = Self::generate();
        match create_private(path, &identity) {
            Ok(()) => {
                tracing::info!(key_file = %path.display(), public_key = %identity.public_key, "created a new node key");
                Ok(identity)
            }
            // Another process created it first: use theirs, so both agree on the node's key.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Self::load(path),
            Err(e) => {
                Err(e).with_context(|| format!("creating the node key file {}", path.display()))
            }
        }
    }

    /// The key in `path`. The error wraps an [`std::io::Error`] when the file cannot be read.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let context = format!("reading the node key file {}", path.display());
            anyhow::Error::new(e).context(context)
        })?;
        let malformed = || {
            format!(
                "{} is not a node key file (expected the 32-byte secp256k1 secret key as 64 hex \
                 digits); it is left as it is: move it away or pass another --key",
                path.display()
            )
        };
        let digits = text.trim();
        if digits.len() != 64 {
            bail!(malformed());
        }
        let secret = hex::decode(digits).with_context(malformed)?;
        let identity = Self::from_secret(&secret).with_context(malformed)?;
        warn_if_shared(path);
        Ok(identity)
    }

    /// The public key: compressed SEC1 point, lowercase hex (66 digits).
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// Signs `message`: ECDSA over SHA-256, low `s`, `r ‖ s` as lowercase hex (128 digits).
    pub fn sign(&self, message: &[u8]) -> String {
        let signature: Signature = self.key.sign(message);
        // k256 already signs with low `s`; normalising again states the scheme where it is used.
        hex::encode(signature.normalize_s().to_bytes())
    }

    /// The signature of a registration (see [`crds::agent::register_message`]).
    pub fn sign_registration(
        &self,
        challenge: &str,
        name: &str,
        operator_address: Option<&str>,
    ) -> String {
        self.sign(crds::agent::register_message(challenge, name, operator_address).as_bytes())
    }

    /// The signature of a workload result's output digest for an assignment on a network (see
    /// [`crds::agent::result_message`]).
    pub fn sign_result(&self, network: &str, assignment: &str, digest: &[u8; 32]) -> String {
        self.sign(&crds::agent::result_message(network, assignment, digest))
    }

    /// The signature of an opening's rows (their SHA-256, `rows_digest`) for an assignment on a
    /// network (see [`crds::agent::opening_message`]).
    pub fn sign_opening(&self, network: &str, assignment: &str, rows_digest: &[u8; 32]) -> String {
        self.sign(&crds::agent::opening_message(
            network,
            assignment,
            rows_digest,
        ))
    }
}

/// Whether `signature` (hex `r ‖ s`, low `s`) is `public_key`'s (hex compressed SEC1) signature of
/// `message` under the scheme above. Malformed input is simply not a valid signature.
pub fn verify(public_key: &str, message: &[u8], signature: &str) -> bool {
    let Ok(key) = hex::decode(public_key) else {
        return false;
    };
    let Ok(signature) = hex::decode(signature) else {
        return false;
    };
    if key.len() != 33 {
        return false;
    }
    let (Ok(key), Ok(signature)) = (
        VerifyingKey::from_sec1_bytes(&key),
        Signature::from_slice(&signature),
    ) else {
        return false;
    };
    key.verify(message, &signature).is_ok()
}

/// Writes a new key file readable only by its owner; fails if the file exists.
fn create_private(path: &Path, identity: &NodeIdentity) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    let written =
        writeln!(file, "{}", hex::encode(identity.key.to_bytes())).and_then(|()| file.sync_all());
    if written.is_err() {
        // A half-written key file would be refused at the next start; remove it instead.
        let _ = std::fs::remove_file(path);
    }
    written
}

/// Warns when others may read the key file: anyone who reads it can act as this node.
fn warn_if_shared(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                key_file = %path.display(),
                mode = format_args!("{:o}", meta.permissions().mode() & 0o777),
                "the node key file is readable by others; chmod 600 it"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k256::elliptic_curve::scalar::IsHigh;

    #[test]
    fn a_new_key_file_is_private_and_reloads_as_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let created = NodeIdentity::load_or_create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 65, "64 hex digits and a newline: {text:?}");
        assert!(
            text.trim_end()
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );

        let reloaded = NodeIdentity::load_or_create(&path).unwrap();
        assert_eq!(reloaded.public_key(), created.public_key());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            text,
            "loading never rewrites the file"
        );
        let public_key = created.public_key();
        assert_eq!(public_key.len(), 66);
        assert!(public_key.starts_with("02") || public_key.starts_with("03"));
    }

    #[test]
    fn a_malformed_key_file_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let order = "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141";
        for (what, content) in [
            ("empty", String::new()),
            ("not hex", "z".repeat(64)),
            ("too short", "ab".repeat(31)),
            ("too long", "ab".repeat(33)),
            ("zero", "0".repeat(64)),
            ("the curve order", order.to_string()),
            ("a PEM file", "-----BEGIN EC PRIVATE KEY-----\n".to_string()),
        ] {
            let path = dir.path().join(format!("{}.key", what.replace(' ', "-")));
            std::fs::write(&path, &content).unwrap();
            let err = NodeIdentity::load_or_create(&path).unwrap_err();
            let message = format!("{err:#}");
            assert!(
                message.contains("is not a node key file"),
                "{what}: {message}"
            );
            assert_eq!(
                std::fs::read_to_string(&path).unwrap(),
                content,
                "{what}: the file must stay as it was"
            );
        }
    }

    #[test]
    fn a_missing_directory_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("node.key");
        assert!(NodeIdentity::load_or_create(&path).is_err());
    }

    #[test]
    fn signatures_verify_under_the_documented_scheme() {
        let identity = NodeIdentity::generate();
        let message =
            crds::agent::register_message(&"ab".repeat(32), "gn-a", Some("cosmos1qqqqqq"));
        let signature = identity.sign_registration(&"ab".repeat(32), "gn-a", Some("cosmos1qqqqqq"));
        assert_eq!(signature.len(), 128);
        assert!(verify(
            identity.public_key(),
            message.as_bytes(),
            &signature
        ));
        // Deterministic (RFC 6979): the same message gives the same signature.
        assert_eq!(identity.sign(message.as_bytes()), signature);

        // Any other message, key or signature does not verify.
        assert!(!verify(
            identity.public_key(),
            b"another message",
            &signature
        ));
        let other = NodeIdentity::generate();
        assert!(!verify(other.public_key(), message.as_bytes(), &signature));
        let mut tampered = signature.clone().into_bytes();
        tampered[10] = if tampered[10] == b'0' { b'1' } else { b'0' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(!verify(
            identity.public_key(),
            message.as_bytes(),
            &tampered
        ));
        for garbage in ["", "zz", &"00".repeat(64)] {
            assert!(!verify(identity.public_key(), message.as_bytes(), garbage));
            assert!(!verify(garbage, message.as_bytes(), &signature));
        }
    }

    #[test]
    fn signatures_have_low_s_and_the_high_s_twin_is_refused() {
        let identity = NodeIdentity::generate();
        for i in 0..16u8 {
            let message = [i; 16];
            let hex_signature = identity.sign(&message);
            let signature = Signature::from_slice(&hex::decode(&hex_signature).unwrap()).unwrap();
            assert!(
                !bool::from(signature.s().is_high()),
                "s must be at most n/2"
            );
            // (r, n − s) verifies in plain ECDSA too; the scheme admits only the low-s encoding.
            let twin = Signature::from_scalars(signature.r(), -signature.s()).unwrap();
            assert!(bool::from(twin.s().is_high()));
            let twin = hex::encode(twin.to_bytes());
            assert!(
                !verify(identity.public_key(), &message, &twin),
                "a high-s signature must be refused"
            );
            assert!(verify(identity.public_key(), &message, &hex_signature));
        }
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let identity = NodeIdentity::generate();
        let secret = hex::encode(identity.key.to_bytes());
        let shown = format!("{identity:?}");
        assert!(shown.contains(identity.public_key()));
        assert!(!shown.contains(&secret));
    }
}
