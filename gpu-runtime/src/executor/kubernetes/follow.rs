//! Follows a worker Pod's log (`pods/log?follow=true`) for the checkpoint markers its workload
//! prints ([`crate::executor::checkpoint_marker`]), as the process executor reads its child's
//! pipes.
//!
//! The log can be read only once the container started, so following waits for the Pod's watch
//! to see it running (or ended: a short-lived container's whole log is still there). A follow the
//! API server ends while the container still runs (a timeout, a restart of the API server) is
//! opened again, with backoff, from a little before the last output read (`sinceSeconds`): a line
//! read twice is harmless, as the sink takes a checkpoint only past the step it has.

use futures::AsyncReadExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::LogParams};
use tokio::{sync::watch, time::Instant};
use tracing::{debug, warn};

use super::CONTAINER;
use crate::{
    backoff::{Backoff, FailureStreak},
    executor::CheckpointSink,
};

/// Where the worker's container is, as the Pod's watch saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Progress {
    /// Not started yet: there is no log to follow.
    Waiting,
    /// Running (or ended): the log can be followed.
    Started,
    /// The Pod ended: read what is left of the log, then stop.
    Ended,
}

/// Records that the watch saw `pod`: a started container moves `progress` to
/// [`Progress::Started`].
pub(super) fn observe(progress: &watch::Sender<Progress>, pod: &Pod) {
    let started = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.iter().find(|c| c.name == CONTAINER))
        .and_then(|c| c.state.as_ref())
        .is_some_and(|s| s.running.is_some() || s.terminated.is_some());
    if started {
        progress.send_if_modified(|p| {
            let waiting = *p == Progress::Waiting;
            if waiting {
                *p = Progress::Started;
            }
            waiting
        });
    }
}

/// Follows Pod `name`'s log into `sink` from when its container started until the Pod ended and
/// its log was read to the end (or the task is aborted).
pub(super) async fn follow(
    pods: Api<Pod>,
    name: String,
    mut progress: watch::Receiver<Progress>,
    sink: CheckpointSink,
) {
    if progress
        .wait_for(|p| *p != Progress::Waiting)
        .await
        .is_err()
    {
        return;
    }
    let mut backoff = Backoff::new(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(30),
    );
    let mut streak = FailureStreak::default();
    // When output was last read: a follow opened again starts a little before it.
    let mut last_read: Option<Instant> = None;
    loop {
        let params = LogParams {
            container: Some(CONTAINER.into()),
            follow: true,
            since_seconds: last_read
                .map(|at| i64::try_from(at.elapsed().as_secs()).unwrap_or(i64::MAX) + 2),
            ..LogParams::default()
        };
        let mut markers = sink.scanner();
        match pods.log_stream(&name, &params).await {
            Ok(stream) => {
                if let Some(failures) = streak.succeed() {
                    debug!(failures, "following the pod's log again");
                }
                let mut stream = std::pin::pin!(stream);
                let mut buf = vec![0; 8192];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) => {
                            markers.feed(&buf[..n]);
                            last_read = Some(Instant::now());
                            backoff.reset();
                        }
                        Err(e) => {
                            debug!(pod = %name, error = %e, "the pod's log stream broke");
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                if streak.fail() {
                    warn!(pod = %name, error = %e, "cannot follow the pod's log for checkpoint markers; retrying");
                }
            }
        }
        if *progress.borrow() == Progress::Ended {
            // The log is complete: its last line may lack a newline.
            markers.finish();
            return;
        }
        let ended = async { progress.wait_for(|p| *p == Progress::Ended).await.is_err() };
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            gone = ended => if gone { return },
        }
    }
}
