//! The GpuNode mirror: the hub's node registry as cluster-scoped `GpuNode` objects, created,
//! updated and deleted as nodes come and go, so that `kubectl get gn` is a live capacity view.
//!
//! Each pass lists the hub's nodes and the GpuNodes this operator manages (labelled
//! `app.kubernetes.io/managed-by: agora-operator`), works out what differs ([`plan`], pure), and
//! writes only that: spec and labels, then status, with server-side apply under
//! [`crate::FIELD_MANAGER`]; GpuNodes of nodes the hub no longer has are deleted. GpuNodes made
//! by anyone else are never touched.
//!
//! A heartbeat every few seconds must not become a write every few seconds per node: a node's
//! `lastHeartbeat` is refreshed only when something else in its status changed or it is older
//! than the mirror's heartbeat resolution (a minute by default), and conditions keep their
//! transition time while their status holds. The `Ready` condition says whether heartbeats
//! arrive.

use std::{collections::BTreeMap, time::Duration};

use crds::{
    rest::Node,
    v1alpha1::{GpuNode, GpuNodeSpec, GpuNodeStatus},
};
use kube::{
    Api, Client,
    api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams},
};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::{FIELD_MANAGER, Result, hub::Hub};

/// The label on every GpuNode the mirror manages.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Its value.
pub const MANAGED_BY: &str = FIELD_MANAGER;

/// How many GpuNodes one list request returns.
const LIST_PAGE: u32 = 500;

/// What the cluster holds of one managed GpuNode (either part unreadable counts as absent).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Existing {
    pub spec: Option<GpuNodeSpec>,
    pub status: Option<GpuNodeStatus>,
}

/// The writes that bring the cluster in line with the hub.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// GpuNodes to create, or whose spec changed.
    pub specs: Vec<(String, GpuNodeSpec)>,
    /// GpuNodes whose status changed (new ones included).
    pub statuses: Vec<(String, GpuNodeStatus)>,
    /// GpuNodes of nodes the hub no longer has.
    pub deletes: Vec<String>,
}

impl Plan {
    /// Whether nothing needs writing.
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty() && self.statuses.is_empty() && self.deletes.is_empty()
    }
}

/// What to write so that the managed GpuNodes `existing` (by name) mirror the hub's `nodes`;
/// `resolution` is how stale a mirrored `lastHeartbeat` may get.
pub fn plan(nodes: &[Node], existing: &BTreeMap<String, Existing>, resolution: Duration) -> Plan {
    let mut plan = Plan::default();
    for node in nodes {
        let current = existing.get(&node.name);
        if current.and_then(|c| c.spec.as_ref()) != Some(&node.spec) {
            plan.specs.push((node.name.clone(), node.spec.clone()));
        }
        let current_status = current.and_then(|c| c.status.as_ref());
        let status = desired_status(&node.status, current_status, resolution);
        if current_status != Some(&status) {
            plan.statuses.push((node.name.clone(), status));
        }
    }
    for name in existing.keys() {
        if !nodes.iter().any(|n| &n.name == name) {
            plan.deletes.push(name.clone());
        }
    }
    plan
}

/// The hub's `status` of a node as the mirror writes it over `current`: conditions whose status
/// holds keep their transition time, and `lastHeartbeat` stays as it is unless anything else
/// changed or it is `resolution` old.
pub fn desired_status(
    status: &GpuNodeStatus,
    current: Option<&GpuNodeStatus>,
    resolution: Duration,
) -> GpuNodeStatus {
    let mut desired = status.clone();
    let Some(current) = current else {
        return desired;
    };
    for condition in &mut desired.conditions {
        if let Some(old) = current
            .conditions
            .iter()
            .find(|c| c.type_ == condition.type_ && c.status == condition.status)
        {
            condition.last_transition_time = old.last_transition_time.clone();
        }
    }
    let mut without_heartbeat = desired.clone();
    without_heartbeat.last_heartbeat = current.last_heartbeat.clone();
    let fresh_enough = match (&current.last_heartbeat, &status.last_heartbeat) {
        (Some(old), Some(new)) => {
            let age = new.0.duration_since(old.0);
            age < jiff::SignedDuration::try_from(resolution).unwrap_or(jiff::SignedDuration::MAX)
        }
        (None, None) => true,
        _ => false,
    };
    if without_heartbeat == *current && fresh_enough {
        return current.clone();
    }
    desired
}

/// GpuNode as an untyped resource (the mirror reads objects others may have broken).
fn resource() -> ApiResource {
    ApiResource::erase::<GpuNode>(&())
}

/// The mirror: one [`Mirror::pass`] brings the cluster in line with the hub.
pub struct Mirror<H> {
    api: Api<DynamicObject>,
    hub: std::sync::Arc<H>,
    resolution: Duration,
}

impl<H: Hub> Mirror<H> {
    /// A mirror writing through `client`; `resolution` as in [`plan`].
    pub fn new(client: Client, hub: std::sync::Arc<H>, resolution: Duration) -> Self {
        Self {
            api: Api::all_with(client, &resource()),
            hub,
            resolution,
        }
    }

    /// Lists, compares, writes; returns what it wrote.
    pub async fn pass(&self) -> Result<Plan> {
        let nodes = self.hub.nodes().await?;
        let existing = self.existing().await?;
        let plan = plan(&nodes, &existing, self.resolution);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let resource = resource();
        for (name, spec) in &plan.specs {
            let body = json!({
                "apiVersion": resource.api_version,
                "kind": resource.kind,
                "metadata": { "name": name, "labels": { MANAGED_BY_LABEL: MANAGED_BY } },
                "spec": spec,
            });
            self.api.patch(name, &params, &Patch::Apply(body)).await?;
            if !existing.contains_key(name) {
                info!(node = %name, "GpuNode created");
            }
        }
        for (name, status) in &plan.statuses {
            let body = json!({
                "apiVersion": resource.api_version,
                "kind": resource.kind,
                "metadata": { "name": name },
                "status": status,
            });
            self.api
                .patch_status(name, &params, &Patch::Apply(body))
                .await?;
        }
        for name in &plan.deletes {
            match self.api.delete(name, &DeleteParams::default()).await {
                Ok(_) => info!(node = %name, "GpuNode deleted: the hub no longer has the node"),
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        if !plan.is_empty() {
            debug!(
                specs = plan.specs.len(),
                statuses = plan.statuses.len(),
                deletes = plan.deletes.len(),
                "GpuNode mirror pass"
            );
        }
        Ok(plan)
    }

    /// The managed GpuNodes in the cluster, by name, page by page.
    async fn existing(&self) -> Result<BTreeMap<String, Existing>> {
        let mut existing = BTreeMap::new();
        let mut params = ListParams::default()
            .labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"))
            .limit(LIST_PAGE);
        loop {
            let page = self.api.list(&params).await?;
            for object in page.items {
                let Some(name) = object.metadata.name.clone() else {
                    continue;
                };
                let read = |field: &str| object.data.get(field).cloned();
                let spec = read("spec").and_then(|s| serde_json::from_value(s).ok());
                let status = read("status").and_then(|s| serde_json::from_value(s).ok());
                if spec.is_none() {
                    warn!(node = %name, "a managed GpuNode with an unreadable spec; rewriting it");
                }
                existing.insert(name, Existing { spec, status });
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        Ok(existing)
    }
}

#[cfg(test)]
mod tests {
    use crds::{money::Price, v1alpha1::GpuDevice};
    use http::Method;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use std::sync::Arc;

    use super::*;
    use crate::fixtures::{self, FakeHub, expect, expect_no_more};

    const GPUNODES: &str = "/apis/agora.dev/v1alpha1/gpunodes";

    fn at(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(seconds).unwrap())
    }

    fn node(name: &str, free: u32, heartbeat: i64) -> Node {
        Node {
            name: name.into(),
            spec: GpuNodeSpec {
                operator_address: Some("cosmos1operator".into()),
                region: "eu-west".into(),
                price_per_gpu_hour: Price::from_micros(2_000_000),
            },
            status: GpuNodeStatus {
                gpus: vec![GpuDevice {
                    uuid: format!("GPU-SIM-{name}"),
                    model: "H100-80GB".into(),
                    memory_gib: 80,
                    compute_capability: "9.0".into(),
                    healthy: true,
                    simulated: true,
                }],
                capacity: 1,
                allocatable: 1,
                free,
                last_heartbeat: Some(at(heartbeat)),
                conditions: vec![Condition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    reason: "HeartbeatsArriving".into(),
                    message: "the agent sends heartbeats".into(),
                    last_transition_time: at(heartbeat),
                    observed_generation: None,
                }],
                ..GpuNodeStatus::default()
            },
            telemetry: None,
            benchmark: None,
        }
    }

    fn mirrored(node: &Node) -> Existing {
        Existing {
            spec: Some(node.spec.clone()),
            status: Some(node.status.clone()),
        }
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn new_nodes_are_created_gone_ones_deleted_and_unchanged_ones_left_alone() {
        let a = node("gn-a", 1, 100);
        let b = node("gn-b", 1, 100);
        let existing = BTreeMap::from([
            ("gn-a".to_string(), mirrored(&a)),
            ("gn-gone".to_string(), mirrored(&node("gn-gone", 1, 100))),
        ]);
        let plan = plan(&[a, b.clone()], &existing, MINUTE);
        assert_eq!(plan.specs, [("gn-b".to_string(), b.spec.clone())]);
        assert_eq!(plan.statuses, [("gn-b".to_string(), b.status.clone())]);
        assert_eq!(plan.deletes, ["gn-gone"]);
    }

    #[test]
    fn heartbeats_alone_are_written_at_most_once_per_resolution() {
        let old = node("gn-a", 1, 100);
        let existing = BTreeMap::from([("gn-a".to_string(), mirrored(&old))]);
        // Heartbeats only: the Ready condition's time and lastHeartbeat move, nothing else.
        assert!(plan(&[node("gn-a", 1, 130)], &existing, MINUTE).is_empty());
        let stale = plan(&[node("gn-a", 1, 160)], &existing, MINUTE);
        assert_eq!(stale.statuses.len(), 1);
        assert_eq!(stale.statuses[0].1.last_heartbeat, Some(at(160)));
        assert_eq!(
            stale.statuses[0].1.conditions[0].last_transition_time,
            at(100),
            "Ready held: its transition time stays"
        );
        // Anything else changed: written at once, with the latest heartbeat.
        let busy = plan(&[node("gn-a", 0, 110)], &existing, MINUTE);
        assert_eq!(busy.statuses[0].1.free, 0);
        assert_eq!(busy.statuses[0].1.last_heartbeat, Some(at(110)));
        assert!(busy.specs.is_empty());
    }

    #[test]
    fn an_unreadable_object_is_rewritten() {
        let a = node("gn-a", 1, 100);
        let existing = BTreeMap::from([("gn-a".to_string(), Existing::default())]);
        let plan = plan(std::slice::from_ref(&a), &existing, MINUTE);
        assert_eq!(plan.specs.len(), 1);
        assert_eq!(plan.statuses.len(), 1);
    }

    #[tokio::test]
    async fn a_pass_applies_spec_and_status_and_deletes_what_the_hub_forgot() {
        let hub = Arc::new(FakeHub::default());
        hub.state().nodes = vec![node("gn-new", 1, 100)];
        let (client, mut server) = fixtures::client();
        let mirror = Mirror::new(client, Arc::clone(&hub), MINUTE);
        let task = tokio::spawn(async move { mirror.pass().await });

        let list = expect(&mut server, Method::GET, GPUNODES).await;
        assert!(
            list.query
                .contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dagora-operator"),
            "only the operator's own GpuNodes: {}",
            list.query
        );
        list.reply(
            200,
            &serde_json::json!({
                "apiVersion": "agora.dev/v1alpha1", "kind": "GpuNodeList",
                "metadata": {"resourceVersion": "5"},
                "items": [{"apiVersion": "agora.dev/v1alpha1", "kind": "GpuNode",
                           "metadata": {"name": "gn-old"}, "spec": node("gn-old", 1, 1).spec}]
            }),
        );
        let apply = expect(&mut server, Method::PATCH, &format!("{GPUNODES}/gn-new")).await;
        assert!(apply.query.contains("fieldManager=agora-operator"));
        assert_eq!(
            apply.body["metadata"]["labels"][MANAGED_BY_LABEL],
            "agora-operator"
        );
        assert_eq!(apply.body["spec"]["region"], "eu-west");
        assert_eq!(apply.body["spec"]["pricePerGpuHour"], "2.00");
        apply.echo();
        let status = expect(
            &mut server,
            Method::PATCH,
            &format!("{GPUNODES}/gn-new/status"),
        )
        .await;
        assert_eq!(status.body["status"]["free"], 1);
        assert_eq!(status.body["status"]["gpus"][0]["simulated"], true);
        status.echo();
        let delete = expect(&mut server, Method::DELETE, &format!("{GPUNODES}/gn-old")).await;
        delete.reply(404, &fixtures::not_found());
        let plan = task.await.unwrap().unwrap();
        assert_eq!(plan.deletes, ["gn-old"]);
        expect_no_more(server).await;
    }
}
