//! Runs the operator: the leader election, and while this replica leads, the ComputeJob
//! controller and the GpuNode mirror.

use std::{sync::Arc, time::Duration};

use kube::Client;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    computejob::{self, Context},
    gpunode::Mirror,
    hub::Hub,
    leader::{self, LeaseConfig},
    metrics::{GPUNODE, Metrics},
};

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The Lease, and this replica's name in it.
    pub lease: LeaseConfig,
    /// How often a running job is re-read from the hub.
    pub job_poll: Duration,
    /// How often the GpuNode mirror runs.
    pub mirror_interval: Duration,
    /// How stale a mirrored `lastHeartbeat` may get (see [`crate::gpunode`]).
    pub heartbeat_resolution: Duration,
}

impl Config {
    /// The defaults for a replica named `identity` whose Lease lives in `namespace`.
    pub fn new(namespace: String, identity: String) -> Self {
        Self {
            lease: LeaseConfig {
                namespace,
                name: "agora-operator".into(),
                identity,
                ttl: Duration::from_secs(15),
                renew: Duration::from_secs(5),
            },
            job_poll: Duration::from_secs(2),
            mirror_interval: Duration::from_secs(5),
            heartbeat_resolution: Duration::from_secs(60),
        }
    }
}

/// Runs the operator until `stop` fires: elects, and runs the controllers while leading.
pub async fn run<H: Hub>(
    client: Client,
    hub: Arc<H>,
    config: Config,
    metrics: Metrics,
    stop: CancellationToken,
) {
    let (leading_tx, mut leading) = watch::channel(false);
    let election = tokio::spawn(leader::elect(
        client.clone(),
        config.lease.clone(),
        leading_tx,
        stop.clone(),
    ));
    loop {
        // Wait to lead.
        tokio::select! {
            () = stop.cancelled() => break,
            changed = leading.wait_for(|l| *l) => if changed.is_err() { break },
        }
        metrics.set_leader(true);
        let term = stop.child_token();
        let controllers = {
            let ctx = Arc::new(Context::new(
                client.clone(),
                Arc::clone(&hub),
                metrics.clone(),
                config.lease.identity.clone(),
                config.job_poll,
            ));
            let shutdown = term.clone().cancelled_owned();
            let computejobs = tokio::spawn(computejob::run(ctx, shutdown));
            let mirror = tokio::spawn(mirror_loop(
                Mirror::new(
                    client.clone(),
                    Arc::clone(&hub),
                    config.heartbeat_resolution,
                ),
                config.mirror_interval,
                metrics.clone(),
                term.clone(),
            ));
            (computejobs, mirror)
        };
        // Lead until the lease is lost or the operator stops.
        tokio::select! {
            () = stop.cancelled() => {}
            _ = leading.wait_for(|l| !*l) => info!("lost the lease; controllers stop"),
        }
        term.cancel();
        let (computejobs, mirror) = controllers;
        for task in [computejobs, mirror] {
            if let Err(e) = task.await {
                warn!(error = %e, "a controller task ended abnormally");
            }
        }
        metrics.set_leader(false);
    }
    let _ = election.await;
}

/// Runs mirror passes every `interval` until `stop` fires.
async fn mirror_loop<H: Hub>(
    mirror: Mirror<H>,
    interval: Duration,
    metrics: Metrics,
    stop: CancellationToken,
) {
    info!("GpuNode mirror started");
    loop {
        let started = std::time::Instant::now();
        let result = mirror.pass().await;
        let error = result.as_ref().err();
        if let Some(e) = error {
            warn!(error = %e, "GpuNode mirror pass failed");
        }
        metrics.reconciled(
            GPUNODE,
            started.elapsed(),
            error.map(crate::Error::metric_label),
        );
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(interval) => {}
        }
    }
    info!("GpuNode mirror stopped");
}
