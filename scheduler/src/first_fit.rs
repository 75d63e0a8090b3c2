//! First-fit placement over nodes ordered by asking price.

use crate::model::{NodeView, Placement, Rejection, Request, Unschedulable, WorkerSlot};

/// Places every worker of `request` (all or nothing) on the cheapest nodes that pass every filter,
/// filling each node before moving to the next; ties on price go to the node name, so the result
/// depends on nothing but the inputs.
pub fn first_fit(request: &Request, nodes: &[NodeView]) -> Result<Placement, Unschedulable> {
    let mut order: Vec<usize> = (0..nodes.len()).collect();
    order.sort_by(|&a, &b| {
        nodes[a]
            .price_micros
            .cmp(&nodes[b].price_micros)
            .then_with(|| nodes[a].name.cmp(&nodes[b].name))
    });

    let mut why = Unschedulable {
        nodes: nodes.len() as u32,
        workers: request.workers,
        capability: request.capability.clone(),
        ..Unschedulable::default()
    };
    let mut workers = Vec::new();
    let per_worker = request.gpus_per_worker.max(1) as usize;
    for index in order {
        if workers.len() as u32 == request.workers {
            break;
        }
        let node = &nodes[index];
        if let Err(reason) = node_filter(request, node) {
            *why.rejections.entry(reason).or_default() += 1;
            continue;
        }
        let free: Vec<&str> = node
            .gpus
            .iter()
            .filter(|g| !g.allocated && gpu_matches(request, g))
            .map(|g| g.uuid.as_str())
            .collect();
        if free.len() < per_worker {
            let reason = if node.gpus.iter().any(|g| gpu_matches(request, g)) {
                Rejection::TooFewFreeGpus
            } else {
                Rejection::NoMatchingGpu
            };
            *why.rejections.entry(reason).or_default() += 1;
            continue;
        }
        for chunk in free.chunks_exact(per_worker) {
            if workers.len() as u32 == request.workers {
                break;
            }
            workers.push(WorkerSlot {
                rank: workers.len() as u32,
                node: index,
                gpus: chunk.iter().map(|s| s.to_string()).collect(),
            });
        }
    }
    if workers.len() as u32 == request.workers {
        Ok(Placement { workers })
    } else {
        why.workers_that_fit = workers.len() as u32;
        Err(why)
    }
}

/// The node-level filters, in the order their rejections are reported.
fn node_filter(request: &Request, node: &NodeView) -> Result<(), Rejection> {
    if !node.ready {
        return Err(Rejection::NotReady);
    }
    if !node.capabilities.contains(&request.capability) {
        return Err(Rejection::Incapable);
    }
    if !request.regions.is_empty() && !request.regions.contains(&node.region) {
        return Err(Rejection::WrongRegion);
    }
    if node.price_micros > request.max_price_micros {
        return Err(Rejection::TooExpensive);
    }
    Ok(())
}

fn gpu_matches(request: &Request, gpu: &crate::GpuView) -> bool {
    gpu.healthy
        && (request.models.is_empty() || request.models.contains(&gpu.model))
        && gpu.memory_gib >= request.min_memory_gib
        && request
            .min_compute_capability
            .is_none_or(|min| gpu.compute_capability >= min)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GpuView;

    fn node(name: &str, price: u64, gpus: &[(&str, bool)]) -> NodeView {
        NodeView {
            name: name.into(),
            region: "eu-west".into(),
            price_micros: price,
            ready: true,
            capabilities: vec!["builtin:sleep".into()],
            gpus: gpus
                .iter()
                .enumerate()
                .map(|(i, (model, allocated))| GpuView {
                    uuid: format!("{name}-gpu{i}"),
                    model: (*model).into(),
                    memory_gib: 80,
                    compute_capability: (9, 0),
                    healthy: true,
                    allocated: *allocated,
                })
                .collect(),
            reputation_bps: 10_000,
            ..NodeView::default()
        }
    }

    fn request(workers: u32, gpus: u32) -> Request {
        Request {
            workers,
            gpus_per_worker: gpus,
            max_price_micros: 5_000_000,
            capability: "builtin:sleep".into(),
            ..Request::default()
        }
    }

    #[test]
    fn picks_the_cheapest_node_that_fits() {
        let nodes = [
            node("a", 3_000_000, &[("H100-80GB", false)]),
            node("b", 2_000_000, &[("H100-80GB", false)]),
        ];
        let placement = first_fit(&request(1, 1), &nodes).unwrap();
        assert_eq!(
            placement.workers,
            vec![WorkerSlot {
                rank: 0,
                node: 1,
                gpus: vec!["b-gpu0".into()]
            }]
        );
    }

    #[test]
    fn never_hands_out_an_allocated_gpu() {
        let nodes = [node("a", 1, &[("H100-80GB", true), ("H100-80GB", false)])];
        let placement = first_fit(&request(1, 1), &nodes).unwrap();
        assert_eq!(placement.workers[0].gpus, vec!["a-gpu1".to_string()]);
        assert!(first_fit(&request(2, 1), &nodes).is_err());
    }

    #[test]
    fn a_gang_is_placed_whole_or_not_at_all() {
        let nodes = [
            node("a", 1, &[("H100-80GB", false); 2]),
            node("b", 2, &[("H100-80GB", false); 2]),
        ];
        let placed = first_fit(&request(2, 2), &nodes).unwrap();
        assert_eq!(
            placed.workers.iter().map(|w| w.node).collect::<Vec<_>>(),
            vec![0, 1]
        );
        let err = first_fit(&request(3, 2), &nodes).unwrap_err();
        assert_eq!(err.workers_that_fit, 2);
        assert!(err.to_string().contains("only 2 of 3 workers fit"), "{err}");
    }

    #[test]
    fn explains_every_rejection_by_reason() {
        let mut offline = node("offline", 1, &[("H100-80GB", false)]);
        offline.ready = false;
        let pricey = node("pricey", 9_000_000, &[("H100-80GB", false)]);
        let mut far = node("far", 1, &[("H100-80GB", false)]);
        far.region = "ap-south".into();
        let mut container_only = node("containers", 1, &[("H100-80GB", false)]);
        container_only.capabilities = vec!["container".into()];
        let small = node("small", 1, &[("L4-24GB", false)]);
        let busy = node("busy", 1, &[("H100-80GB", true)]);
        let mut req = request(1, 1);
        req.regions = vec!["eu-west".into()];
        req.models = vec!["H100-80GB".into()];
        let err =
            first_fit(&req, &[offline, pricey, far, container_only, small, busy]).unwrap_err();
        let text = err.to_string();
        for expected in [
            "no placement on 6 nodes",
            "1 not ready",
            "1 cannot run builtin:sleep workloads",
            "1 in other regions",
            "1 too expensive",
            "1 without a matching GPU",
            "1 with too few free GPUs",
        ] {
            assert!(text.contains(expected), "{text:?} lacks {expected:?}");
        }
    }

    #[test]
    fn respects_memory_and_compute_capability() {
        let mut old = node("old", 1, &[("V100-32GB", false)]);
        old.gpus[0].compute_capability = (7, 0);
        old.gpus[0].memory_gib = 32;
        let mut req = request(1, 1);
        req.min_compute_capability = Some((8, 0));
        assert!(first_fit(&req, std::slice::from_ref(&old)).is_err());
        let mut req = request(1, 1);
        req.min_memory_gib = 40;
        assert!(first_fit(&req, std::slice::from_ref(&old)).is_err());
        assert!(first_fit(&request(1, 1), &[old]).is_ok());
    }

    #[test]
    fn with_no_nodes_it_says_so() {
        assert_eq!(
            first_fit(&request(1, 1), &[]).unwrap_err().to_string(),
            "no nodes are registered"
        );
    }
}
