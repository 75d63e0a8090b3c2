//! Leader election through a `coordination.k8s.io/v1` Lease: of several hub replicas, one holds
//! the Lease and runs the controllers; only it writes to the cluster.
//!
//! Every `renew` period each replica reads the Lease and acts on [`decide`] (pure): create it when
//! missing, renew it when held, take it over when its holder let it expire (`renewTime` +
//! `leaseDurationSeconds` in the past), follow otherwise. Writes carry the `resourceVersion`
//! read, so when two replicas race, one write fails with a conflict and that replica follows.
//! A leader that cannot renew steps down before its Lease could expire (`ttl` − `renew` after its
//! last renewal), so two replicas never lead at once as long as clocks agree to within that
//! margin. A replica that shuts down while leading clears the holder, so another takes over at
//! its next try instead of after the TTL.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{
    Api, Client,
    api::{PostParams, ResourceExt},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Where the Lease is and who this replica is.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// The Lease's namespace (the hub's own).
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This replica's name in `holderIdentity` (the pod name).
    pub identity: String,
    /// How long a Lease lasts without renewal.
    pub ttl: Duration,
    /// How often the Lease is read and renewed; shorter than `ttl`.
    pub renew: Duration,
}

/// What a replica does with the Lease it read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// There is none: create it, held by this replica.
    Create,
    /// This replica holds it: renew it.
    Renew,
    /// Nobody holds it, or its holder let it expire: take it.
    TakeOver,
    /// Another replica holds it.
    Follow { holder: String },
}

/// What `identity` does with `lease` (absent: none exists) at `now`.
pub fn decide(lease: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Decision {
    let Some(spec) = lease else {
        return Decision::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder.is_empty() {
        return Decision::TakeOver;
    }
    if holder == identity {
        return Decision::Renew;
    }
    let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
        (Some(renewed), Some(seconds)) => {
            renewed.0 + SignedDuration::from_secs(i64::from(seconds.max(0))) < now
        }
        // A Lease that says nothing of when it ends is taken to have ended.
        _ => true,
    };
    if expired {
        Decision::TakeOver
    } else {
        Decision::Follow {
            holder: holder.to_string(),
        }
    }
}

/// The Lease spec with `identity` holding it from `now`; `previous` is the spec read (for the
/// acquire time and the transition count).
pub fn held(
    previous: Option<&LeaseSpec>,
    identity: &str,
    ttl: Duration,
    now: Timestamp,
) -> LeaseSpec {
    let renewing = previous.is_some_and(|p| p.holder_identity.as_deref() == Some(identity));
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(i32::try_from(ttl.as_secs()).unwrap_or(i32::MAX).max(1)),
        acquire_time: if renewing {
            previous.and_then(|p| p.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if renewing || previous.is_none() {
            transitions
        } else {
            transitions + 1
        }),
        ..LeaseSpec::default()
    }
}

/// Runs the election until `stop` fires, publishing whether this replica leads on `leading`.
pub async fn elect(
    client: Client,
    config: LeaseConfig,
    leading: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let mut last_renewal: Option<tokio::time::Instant> = None;
    let step_down_after = config.ttl.saturating_sub(config.renew);
    loop {
        match try_lead(&api, &config).await {
            Ok(true) => {
                last_renewal = Some(tokio::time::Instant::now());
                if !*leading.borrow() {
                    info!(lease = %config.name, identity = %config.identity, "leading: this replica runs the controllers");
                }
                leading.send_replace(true);
            }
            Ok(false) => {
                last_renewal = None;
                if *leading.borrow() {
                    warn!(lease = %config.name, "another replica took the lease; stepping down");
                }
                leading.send_replace(false);
            }
            Err(e) => {
                warn!(lease = %config.name, error = %e, "cannot read or renew the lease");
                let stale = last_renewal.is_none_or(|at| at.elapsed() >= step_down_after);
                if stale && *leading.borrow() {
                    warn!(lease = %config.name, "stepping down: the lease could not be renewed in time");
                    leading.send_replace(false);
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(config.renew) => {}
        }
    }
    if *leading.borrow() {
        leading.send_replace(false);
        if let Err(e) = release(&api, &config).await {
            warn!(lease = %config.name, error = %e, "cannot release the lease; another replica takes over when it expires");
        } else {
            info!(lease = %config.name, "lease released");
        }
    }
}

/// One round: read the Lease and act; whether this replica holds it afterwards.
async fn try_lead(api: &Api<Lease>, config: &LeaseConfig) -> Result<bool, kube::Error> {
    let lease = api.get_opt(&config.name).await?;
    let now = Timestamp::now();
    let spec = lease.as_ref().and_then(|l| l.spec.as_ref());
    match decide(spec, &config.identity, now) {
        Decision::Follow { .. } => Ok(false),
        Decision::Create => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(config.name.clone()),
                    namespace: Some(config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(held(None, &config.identity, config.ttl, now)),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Decision::Renew | Decision::TakeOver => {
            let Some(mut lease) = lease else {
                return Ok(false);
            };
            lease.spec = Some(held(lease.spec.as_ref(), &config.identity, config.ttl, now));
            // The write carries the resourceVersion read: a conflict means another replica wrote.
            match api
                .replace(&config.name, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Clears the holder of a Lease this replica holds.
async fn release(api: &Api<Lease>, config: &LeaseConfig) -> Result<(), kube::Error> {
    let Some(mut lease) = api.get_opt(&config.name).await? else {
        return Ok(());
    };
    let Some(spec) = lease.spec.as_mut() else {
        return Ok(());
    };
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.renew_time = None;
    let name = lease.name_any();
    api.replace(&name, &PostParams::default(), &lease).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use http::Method;
    use serde_json::json;

    use super::*;
    use crate::fixtures::{self, expect, expect_no_more};

    const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/agora/leases";
    const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/agora/leases/agora-operator";

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn spec(holder: Option<&str>, renewed: Option<i64>, ttl: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(String::from),
            renew_time: renewed.map(|s| MicroTime(at(s))),
            lease_duration_seconds: ttl,
            lease_transitions: Some(3),
            acquire_time: Some(MicroTime(at(1))),
            ..LeaseSpec::default()
        }
    }

    fn config() -> LeaseConfig {
        LeaseConfig {
            namespace: "agora".into(),
            name: "agora-operator".into(),
            identity: "hub-0".into(),
            ttl: Duration::from_secs(15),
            renew: Duration::from_secs(5),
        }
    }

    #[test]
    fn who_leads() {
        let now = 1_000;
        let cases = [
            (None, Decision::Create),
            (
                Some(spec(Some("hub-0"), Some(now - 100), Some(15))),
                Decision::Renew,
            ),
            (
                Some(spec(Some("hub-1"), Some(now - 5), Some(15))),
                Decision::Follow {
                    holder: "hub-1".into(),
                },
            ),
            (
                Some(spec(Some("hub-1"), Some(now - 15), Some(15))),
                Decision::Follow {
                    holder: "hub-1".into(),
                },
            ),
            (
                Some(spec(Some("hub-1"), Some(now - 16), Some(15))),
                Decision::TakeOver,
            ),
            (
                Some(spec(Some("hub-1"), None, Some(15))),
                Decision::TakeOver,
            ),
            (
                Some(spec(Some("hub-1"), Some(now), None)),
                Decision::TakeOver,
            ),
            (Some(spec(None, Some(now), Some(15))), Decision::TakeOver),
            (
                Some(spec(Some(""), Some(now), Some(15))),
                Decision::TakeOver,
            ),
        ];
        for (lease, expected) in cases {
            assert_eq!(
                decide(lease.as_ref(), "hub-0", at(now)),
                expected,
                "{lease:?}"
            );
        }
    }

    #[test]
    fn taking_over_counts_a_transition_and_renewing_keeps_the_acquire_time() {
        let ttl = Duration::from_secs(15);
        let taken = held(
            Some(&spec(Some("hub-1"), Some(10), Some(15))),
            "hub-0",
            ttl,
            at(50),
        );
        assert_eq!(taken.holder_identity.as_deref(), Some("hub-0"));
        assert_eq!(taken.lease_transitions, Some(4));
        assert_eq!(taken.acquire_time, Some(MicroTime(at(50))));
        assert_eq!(taken.lease_duration_seconds, Some(15));
        let renewed = held(Some(&taken), "hub-0", ttl, at(55));
        assert_eq!(renewed.lease_transitions, Some(4));
        assert_eq!(renewed.acquire_time, Some(MicroTime(at(50))));
        assert_eq!(renewed.renew_time, Some(MicroTime(at(55))));
        assert_eq!(held(None, "hub-0", ttl, at(1)).lease_transitions, Some(0));
    }

    #[tokio::test]
    async fn a_missing_lease_is_created_and_a_lost_race_means_following() {
        let (client, mut server) = fixtures::client();
        let api: Api<Lease> = Api::namespaced(client, "agora");
        let task = tokio::spawn(async move { try_lead(&api, &config()).await });
        expect(&mut server, Method::GET, LEASE)
            .await
            .reply(404, &fixtures::not_found());
        let create = expect(&mut server, Method::POST, LEASES).await;
        assert_eq!(create.body["spec"]["holderIdentity"], "hub-0");
        assert_eq!(create.body["spec"]["leaseDurationSeconds"], 15);
        create.reply(409, &fixtures::conflict());
        assert!(
            !task.await.unwrap().unwrap(),
            "another replica created it first"
        );
        expect_no_more(server).await;
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_with_the_version_read() {
        let (client, mut server) = fixtures::client();
        let api: Api<Lease> = Api::namespaced(client, "agora");
        let task = tokio::spawn(async move { try_lead(&api, &config()).await });
        let expired = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "agora-operator", "namespace": "agora", "resourceVersion": "41"},
            "spec": {"holderIdentity": "hub-1", "leaseDurationSeconds": 15,
                     "renewTime": "2020-01-01T00:00:00.000000Z", "leaseTransitions": 2}
        });
        expect(&mut server, Method::GET, LEASE)
            .await
            .reply(200, &expired);
        let replace = expect(&mut server, Method::PUT, LEASE).await;
        assert_eq!(replace.body["metadata"]["resourceVersion"], "41");
        assert_eq!(replace.body["spec"]["holderIdentity"], "hub-0");
        assert_eq!(replace.body["spec"]["leaseTransitions"], 3);
        replace.echo();
        assert!(task.await.unwrap().unwrap());
        expect_no_more(server).await;
    }

    #[tokio::test]
    async fn a_lease_held_by_a_live_replica_is_left_alone() {
        let (client, mut server) = fixtures::client();
        let api: Api<Lease> = Api::namespaced(client, "agora");
        let task = tokio::spawn(async move { try_lead(&api, &config()).await });
        let live = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "agora-operator", "namespace": "agora", "resourceVersion": "41"},
            "spec": {"holderIdentity": "hub-1", "leaseDurationSeconds": 15,
                     "renewTime": MicroTime(Timestamp::now())}
        });
        expect(&mut server, Method::GET, LEASE)
            .await
            .reply(200, &live);
        assert!(!task.await.unwrap().unwrap());
        expect_no_more(server).await;
    }
}
