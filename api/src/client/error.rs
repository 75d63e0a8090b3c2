//! Errors of the REST client, worded for the person at the terminal: each says what happened and,
//! where there is one, what to do about it.

use std::fmt;

/// Where `agora dev` leaves the API key, repeated in every message about a missing or wrong key so
/// that the fix is on screen.
pub const API_KEY_HINT: &str = "set AGORA_API_KEY (agora dev writes it to DATA_DIR/api-key)";

/// Result of a client call.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Why a call to the hub failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The `--hub` value is not an http(s) URL; caught before any request so the message names the
    /// flag's value rather than a low-level connection failure.
    #[error("invalid hub URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },

    /// The hub's certificate was not trusted (or TLS failed otherwise): usually a hub whose
    /// certificate comes from a private CA that was not given with `--hub-ca`.
    #[error(
        "TLS with the hub at {url} failed: {cause}; if its certificate comes from a private CA, \
         pass that CA with --hub-ca FILE"
    )]
    Tls { url: String, cause: String },

    /// The CA given to trust the hub with (`--hub-ca`) is unusable.
    #[error("invalid hub CA: {reason}")]
    InvalidCa { reason: String },

    /// No connection could be made: the most common cause is that no hub runs at that address.
    #[error("cannot reach the hub at {url}: {cause}; is `agora dev` running?")]
    Unreachable { url: String, cause: String },

    /// A connection was made but the hub did not answer in time.
    #[error("the hub at {url} did not answer within {seconds}s")]
    Timeout { url: String, seconds: u64 },

    /// The hub answered with an error in the API's error format.
    #[error(transparent)]
    Api(#[from] ApiError),

    /// The hub (or something in front of it, such as a proxy) answered with something that is not
    /// the API's format: usually the URL points at the wrong server.
    #[error("unexpected answer from the hub at {url} (HTTP {status}): {detail}")]
    UnexpectedResponse {
        url: String,
        status: u16,
        detail: String,
    },

    /// Any other transport failure (connection reset mid-answer, TLS, …).
    #[error("request to the hub at {url} failed: {cause}")]
    Transport { url: String, cause: String },
}

/// An error answer of the hub (`ErrorBody`), with the HTTP status it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// Machine-readable code (`invalid_field`, `not_found`, …).
    pub code: String,
    /// The hub's explanation.
    pub message: String,
    /// The offending field, when one field is at fault.
    pub field: Option<String>,
    /// Whether the request carried an API key; decides the advice given on a 401.
    pub key_sent: bool,
}

impl ApiError {
    /// Whether the hub said the job (or node) does not exist, so callers can word their own message.
    pub fn is_not_found(&self) -> bool {
        self.status == 404
    }
}

impl std::error::Error for ApiError {}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "hub refused the request ({} {}): ",
            self.status, self.code
        )?;
        match &self.field {
            // The hub may already start its message with the field's path; do not say it twice.
            Some(field) if !self.message.starts_with(field.as_str()) => {
                write!(f, "{field}: {}", self.message)?;
            }
            _ => f.write_str(&self.message)?,
        }
        if self.status == 401 {
            if self.key_sent {
                write!(f, "; check the API key: {API_KEY_HINT}")?;
            } else {
                write!(f, "; no API key was given: {API_KEY_HINT}")?;
            }
        }
        Ok(())
    }
}

/// The innermost cause of an error chain: reqwest's own message is "error sending request for url
/// …", while the useful part ("Connection refused") sits at the bottom of the chain.
pub(crate) fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: &str, message: &str, field: Option<&str>, key_sent: bool) -> String {
        ClientError::from(ApiError {
            status,
            code: code.into(),
            message: message.into(),
            field: field.map(Into::into),
            key_sent,
        })
        .to_string()
    }

    #[test]
    fn an_invalid_field_names_the_field_and_the_rule() {
        assert_eq!(
            api(
                422,
                "invalid_field",
                "must be ≥ 1",
                Some("spec.resources.workers"),
                true
            ),
            "hub refused the request (422 invalid_field): spec.resources.workers: must be ≥ 1"
        );
    }

    #[test]
    fn a_field_already_in_the_message_is_not_repeated() {
        assert_eq!(
            api(
                422,
                "invalid_field",
                "spec.resources.workers: must be ≥ 1",
                Some("spec.resources.workers"),
                true
            ),
            "hub refused the request (422 invalid_field): spec.resources.workers: must be ≥ 1"
        );
    }

    #[test]
    fn an_error_without_a_field_is_just_the_message() {
        assert_eq!(
            api(404, "not_found", "no job job-42", None, true),
            "hub refused the request (404 not_found): no job job-42"
        );
    }

    #[test]
    fn a_401_without_a_key_says_where_the_key_is() {
        let msg = api(401, "unauthorized", "missing bearer token", None, false);
        assert_eq!(
            msg,
            "hub refused the request (401 unauthorized): missing bearer token; no API key was \
             given: set AGORA_API_KEY (agora dev writes it to DATA_DIR/api-key)"
        );
    }

    #[test]
    fn a_401_with_a_key_asks_to_check_it() {
        let msg = api(401, "unauthorized", "unknown API key", None, true);
        assert!(
            msg.contains("unknown API key; check the API key: set AGORA_API_KEY"),
            "{msg}"
        );
    }

    #[test]
    fn an_unreachable_hub_suggests_starting_agora_dev() {
        let err = ClientError::Unreachable {
            url: "http://127.0.0.1:7600/".into(),
            cause: "Connection refused (os error 111)".into(),
        };
        assert_eq!(
            err.to_string(),
            "cannot reach the hub at http://127.0.0.1:7600/: Connection refused (os error 111); \
             is `agora dev` running?"
        );
    }

    #[test]
    fn root_cause_is_the_bottom_of_the_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let err = Outer(std::io::Error::other("inner"));
        assert_eq!(root_cause(&err), "inner");
    }
}
