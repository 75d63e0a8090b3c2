//! The agent's standing with the hub: registration and the token it yields.
//!
//! Registering proves the node holds its key: the agent asks for a challenge for its public key,
//! signs it into the registration ([`crds::agent::register_message`]) and sends both; the hub issues
//! a token only for a fresh challenge, a valid signature and a name not bound to another key.
//!
//! A hub may forget a node (its database was reset, or it was replaced) and then answers 401 to
//! everything. Any call can notice; [`Session::call`] registers again under the same name and repeats
//! the call once, and concurrent callers that notice together share one re-registration.

use std::{
    sync::{Mutex, PoisonError},
    time::Duration,
};

use crds::agent::{RegisterRequest, RegisterResponse};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{
    backoff::{Backoff, FailureStreak},
    client::{ClientError, HubClient},
    identity::NodeIdentity,
};

/// How many times in a row the hub may refuse a registration's proof (HTTP 401) before the agent
/// gives up. A challenge can lapse or vanish between issue and use (a slow link, a hub restarted
/// with an empty database), and a fresh one then succeeds; a proof refused again and again is a
/// wrong key or a broken hub, which retrying cannot fix.
const MAX_REFUSED_PROOFS: u32 = 3;

/// Bounds on the heartbeat interval the hub asks for, so a zero or absurd answer neither floods the
/// hub nor silences the node.
const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
const MAX_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(300);

/// The heartbeat interval to use when the hub asks for `seconds`.
pub(super) fn heartbeat_interval(seconds: u32) -> Duration {
    Duration::from_secs(u64::from(seconds)).clamp(MIN_HEARTBEAT_INTERVAL, MAX_HEARTBEAT_INTERVAL)
}

/// The token in use, and which registration produced it.
#[derive(Clone, Debug)]
pub(super) struct Auth {
    pub(super) token: String,
    pub(super) generation: u64,
    pub(super) heartbeat_interval: Duration,
}

/// Why registering ended without a token.
enum RegisterError {
    /// The agent is shutting down.
    ShuttingDown,
    /// The hub answered, and said no: retrying cannot help.
    Refused(ClientError),
}

/// The registration of this node with the hub, shared by every task of the agent.
pub(super) struct Session {
    client: HubClient,
    /// The registration without its proof; every registration signs a fresh challenge into it.
    request: RegisterRequest,
    identity: NodeIdentity,
    /// The network the hub settles on (from the first registration): usage receipts are signed
    /// for it.
    network: String,
    current: Mutex<Auth>,
    /// Serialises re-registrations, so that many calls failing at once register once.
    renewing: tokio::sync::Mutex<()>,
    stopping: CancellationToken,
    /// Fires when the hub refuses a re-registration; the agent then ends with `failure`.
    failed: CancellationToken,
    failure: Mutex<Option<String>>,
}

impl Session {
    /// Registers, retrying while the hub is unreachable; fails when the hub refuses the node.
    pub(super) async fn open(
        client: HubClient,
        request: RegisterRequest,
        identity: NodeIdentity,
        stopping: CancellationToken,
    ) -> anyhow::Result<Self> {
        let response = match register(&client, &request, &identity, &stopping).await {
            Ok(response) => response,
            Err(RegisterError::ShuttingDown) => anyhow::bail!("shut down before registering"),
            Err(RegisterError::Refused(e)) => return Err(refused(&request, &e)),
        };
        info!(
            hub = %client.hub_url(),
            public_key = %identity.public_key(),
            gpus = request.gpus.len(),
            simulated = request.simulated,
            "registered with the hub"
        );
        Ok(Self {
            current: Mutex::new(Auth {
                token: response.token,
                generation: 0,
                heartbeat_interval: heartbeat_interval(response.heartbeat_interval_seconds),
            }),
            client,
            request,
            identity,
            network: response.network,
            renewing: tokio::sync::Mutex::new(()),
            stopping,
            failed: CancellationToken::new(),
            failure: Mutex::new(None),
        })
    }

    pub(super) fn client(&self) -> &HubClient {
        &self.client
    }

    /// The node's key, which signs its usage receipts.
    pub(super) fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// The node's name.
    pub(super) fn node(&self) -> &str {
        &self.request.name
    }

    /// The network the hub settles on.
    pub(super) fn network(&self) -> &str {
        &self.network
    }

    /// The current token.
    pub(super) fn auth(&self) -> Auth {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Makes an authenticated call with the current token; on 401 registers again and repeats it
    /// once. A 401 that persists (or a re-registration that did not happen) is returned as is.
    pub(super) async fn call<T, F, Fut>(&self, f: F) -> Result<T, ClientError>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let auth = self.auth();
        match f(auth.token).await {
            Err(ClientError::Unauthorized) => {
                if !self.renew(auth.generation).await {
                    return Err(ClientError::Unauthorized);
                }
                f(self.auth().token).await
            }
            other => other,
        }
    }

    /// Completes (with the reason) when the hub refused to register the node again.
    pub(super) async fn refused(&self) -> anyhow::Error {
        self.failed.cancelled().await;
        let failure = self
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        anyhow::anyhow!(failure.unwrap_or_else(|| "the hub refused to register the node".into()))
    }

    /// Registers again because token `stale_generation` was refused, unless another task already did.
    /// True when a newer token is now in use.
    async fn renew(&self, stale_generation: u64) -> bool {
        let _renewing = self.renewing.lock().await;
        if self.auth().generation != stale_generation {
            return true;
        }
        if self.failed.is_cancelled() {
            return false;
        }
        warn!("the hub no longer accepts this node's token; registering again");
        match register(&self.client, &self.request, &self.identity, &self.stopping).await {
            Ok(response) => {
                let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
                *current = Auth {
                    token: response.token,
                    generation: stale_generation + 1,
                    heartbeat_interval: heartbeat_interval(response.heartbeat_interval_seconds),
                };
                info!("registered with the hub again");
                true
            }
            Err(RegisterError::ShuttingDown) => false,
            Err(RegisterError::Refused(e)) => {
                let e = refused(&self.request, &e);
                error!(error = %e, "cannot register again; the agent stops");
                *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
                self.failed.cancel();
                false
            }
        }
    }
}

fn refused(request: &RegisterRequest, e: &ClientError) -> anyhow::Error {
    match e {
        // At registration a 401 is about the proof, not a token.
        ClientError::Unauthorized => anyhow::anyhow!(
            "the hub refused node {:?}'s proof of its key {} (HTTP 401), {MAX_REFUSED_PROOFS} times in a row",
            request.name,
            request.public_key
        ),
        e => anyhow::anyhow!("the hub refused to register node {:?}: {e}", request.name),
    }
}

/// `register`, retried with backoff while the hub is unreachable or failing; one log line per streak.
async fn register(
    client: &HubClient,
    request: &RegisterRequest,
    identity: &NodeIdentity,
    stopping: &CancellationToken,
) -> Result<RegisterResponse, RegisterError> {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut streak = FailureStreak::default();
    let mut refused_proofs = 0;
    loop {
        if stopping.is_cancelled() {
            return Err(RegisterError::ShuttingDown);
        }
        match register_once(client, request, identity).await {
            Ok(response) => {
                if let Some(failures) = streak.succeed() {
                    info!(failures, "the hub answers again");
                }
                return Ok(response);
            }
            Err(e) if e.is_transient() => {
                if streak.fail() {
                    warn!(hub = %client.hub_url(), error = %e, "cannot register with the hub; retrying with backoff");
                }
            }
            Err(ClientError::Unauthorized) if refused_proofs + 1 < MAX_REFUSED_PROOFS => {
                refused_proofs += 1;
                warn!("the hub refused the registration's proof; retrying with a fresh challenge");
            }
            Err(e) => return Err(RegisterError::Refused(e)),
        }
        tokio::select! {
            () = stopping.cancelled() => return Err(RegisterError::ShuttingDown),
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// One registration: a challenge for the node's key, signed into `template`.
async fn register_once(
    client: &HubClient,
    template: &RegisterRequest,
    identity: &NodeIdentity,
) -> Result<RegisterResponse, ClientError> {
    let challenge = client.challenge(identity.public_key()).await?.challenge;
    let request = signed(template, identity, challenge);
    client.register(&request).await
}

/// `template` with `identity`'s proof over `challenge`.
fn signed(
    template: &RegisterRequest,
    identity: &NodeIdentity,
    challenge: String,
) -> RegisterRequest {
    let mut request = template.clone();
    request.public_key = identity.public_key().to_string();
    request.signature = identity.sign_registration(
        &challenge,
        &request.name,
        request.operator_address.as_deref(),
    );
    request.challenge = challenge;
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_interval_is_bounded() {
        assert_eq!(heartbeat_interval(0), Duration::from_secs(1));
        assert_eq!(heartbeat_interval(5), Duration::from_secs(5));
        assert_eq!(heartbeat_interval(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn a_registration_carries_a_proof_over_its_own_fields() {
        let identity = NodeIdentity::generate();
        let template = RegisterRequest {
            name: "gn-a".into(),
            region: "eu-west".into(),
            operator_address: Some("cosmos1qqqqqq".into()),
            price_per_gpu_hour: "1.00".parse().unwrap(),
            gpus: Vec::new(),
            capabilities: vec!["builtin:sleep".into()],
            simulated: true,
            agent_version: None,
            public_key: String::new(),
            challenge: String::new(),
            signature: String::new(),
            probe_address: None,
        };
        let challenge = "ab".repeat(32);
        let request = signed(&template, &identity, challenge.clone());
        assert_eq!(request.public_key, identity.public_key());
        assert_eq!(request.challenge, challenge);
        let message = crds::agent::register_message(&challenge, "gn-a", Some("cosmos1qqqqqq"));
        assert!(crate::identity::verify(
            identity.public_key(),
            message.as_bytes(),
            &request.signature
        ));
    }
}
