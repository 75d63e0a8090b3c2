//! The permissions the operator needs, as `group/resource:verb` grants: the one list that the
//! hub chart's RBAC must equal (`tests/hub_chart.rs`) and that every request in the operator's
//! API-server scenarios must fall within (the test fixtures check each one), so the chart grants
//! exactly what the code uses.

/// Grants needed cluster-wide: ComputeJobs in every namespace, cluster-scoped GpuNodes, and Events
/// next to the ComputeJobs they are about.
pub const CLUSTER: &[&str] = &[
    "agora.dev/computejobs:get",
    "agora.dev/computejobs:list",
    "agora.dev/computejobs:watch",
    "agora.dev/computejobs:patch",
    "agora.dev/computejobs/status:patch",
    "agora.dev/gpunodes:get",
    "agora.dev/gpunodes:list",
    "agora.dev/gpunodes:watch",
    // Server-side apply creates a GpuNode that does not exist yet.
    "agora.dev/gpunodes:create",
    "agora.dev/gpunodes:patch",
    "agora.dev/gpunodes:delete",
    "agora.dev/gpunodes/status:patch",
    "events.k8s.io/events:create",
    "events.k8s.io/events:patch",
];

/// Grants needed in the hub's own namespace only: the leader election's Lease.
pub const NAMESPACED: &[&str] = &[
    "coordination.k8s.io/leases:get",
    "coordination.k8s.io/leases:create",
    "coordination.k8s.io/leases:update",
];

/// The grant an API request needs: `group/resource:verb` (the core group is empty), from its
/// method, path and query; `None` for a path that names no resource.
pub fn grant_for(method: &str, path: &str, query: &str) -> Option<String> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let (group, rest) = rest;
    let rest = match rest {
        ["namespaces", _namespace, rest @ ..] if !rest.is_empty() => rest,
        rest => rest,
    };
    let (resource, named) = match rest {
        [resource] => (resource.to_string(), false),
        [resource, _name] => (resource.to_string(), true),
        [resource, _name, sub] => (format!("{resource}/{sub}"), true),
        _ => return None,
    };
    let watching = query
        .split('&')
        .any(|p| p == "watch=true" || p == "watch=1");
    let verb = match (method, named) {
        ("GET", _) if watching => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return None,
    };
    Some(format!("{group}/{resource}:{verb}"))
}

/// Whether the operator's grants allow the request.
pub fn permits(method: &str, path: &str, query: &str) -> bool {
    grant_for(method, path, query).is_some_and(|grant| {
        CLUSTER.contains(&grant.as_str()) || NAMESPACED.contains(&grant.as_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_map_to_the_grants_rbac_checks() {
        let cases = [
            (
                "GET",
                "/apis/agora.dev/v1alpha1/computejobs",
                "watch=true&resourceVersion=1",
                "agora.dev/computejobs:watch",
            ),
            (
                "GET",
                "/apis/agora.dev/v1alpha1/computejobs",
                "",
                "agora.dev/computejobs:list",
            ),
            (
                "PATCH",
                "/apis/agora.dev/v1alpha1/namespaces/a/computejobs/x/status",
                "",
                "agora.dev/computejobs/status:patch",
            ),
            (
                "DELETE",
                "/apis/agora.dev/v1alpha1/gpunodes/gn-a",
                "",
                "agora.dev/gpunodes:delete",
            ),
            (
                "PUT",
                "/apis/coordination.k8s.io/v1/namespaces/agora/leases/agora-operator",
                "",
                "coordination.k8s.io/leases:update",
            ),
            ("POST", "/api/v1/namespaces/a/pods", "", "/pods:create"),
        ];
        for (method, path, query, grant) in cases {
            assert_eq!(
                grant_for(method, path, query).as_deref(),
                Some(grant),
                "{method} {path}"
            );
        }
        assert!(permits(
            "PATCH",
            "/apis/agora.dev/v1alpha1/gpunodes/gn-a",
            ""
        ));
        assert!(!permits("POST", "/api/v1/namespaces/a/pods", ""), "no Pods");
        assert!(
            !permits("GET", "/api/v1/namespaces/a/secrets/s", ""),
            "no Secrets"
        );
        assert!(!permits(
            "DELETE",
            "/apis/agora.dev/v1alpha1/namespaces/a/computejobs/x",
            ""
        ));
    }
}
