//! Federated placement: one worker on each node that holds part of the data (the data never
//! moves), and an aggregator where the slowest participant is nearest.

use crate::{
    index::{Index, NodeKey},
    inputs::{BasePrices, Network},
    model::{Rejection, Request, Unschedulable},
    place::{Slot, release},
    single::{fitting, node_filter, wanted_models},
};

/// Places worker i on `request.data_nodes[i]`, on its cheapest acceptable GPU model; all sites or
/// none. A site that is unknown, fails a filter, is too expensive or lacks free GPUs is counted as
/// [`Rejection::DataSiteUnavailable`].
pub fn place_federated(
    index: &mut Index,
    prices: &impl BasePrices,
    request: &Request,
) -> Result<Vec<Slot>, Unschedulable> {
    let per_worker = request.gpus_per_worker.max(1) as usize;
    let mut slots: Vec<Slot> = Vec::with_capacity(request.data_nodes.len());
    let mut unavailable = 0;
    for (rank, site) in request.data_nodes.iter().enumerate() {
        let choice = index.key(site).and_then(|key| {
            let entry = index.entry(key)?;
            node_filter(entry, request).ok()?;
            let models = wanted_models(index, request);
            models
                .into_iter()
                .filter(|&m| fitting(entry, m, request).count() >= per_worker)
                .map(|m| {
                    (
                        entry
                            .node
                            .price_micros
                            .max(prices.base_price_micros(index.model_name(m))),
                        m,
                    )
                })
                .filter(|(price, _)| *price <= request.max_price_micros)
                .min()
                .map(|(price, model)| {
                    let gpus: Vec<String> = fitting(entry, model, request)
                        .take(per_worker)
                        .map(|i| entry.node.gpus[i].uuid.clone())
                        .collect();
                    (key, gpus, price)
                })
        });
        match choice {
            Some((node, gpus, price_micros)) => {
                index.set_allocated(node, &gpus, true);
                slots.push(Slot {
                    rank: rank as u32,
                    node,
                    gpus,
                    price_micros,
                });
            }
            None => unavailable += 1,
        }
    }
    if unavailable == 0 {
        return Ok(slots);
    }
    release(index, &slots);
    let mut why = Unschedulable {
        nodes: index.len() as u32,
        workers: request.workers,
        workers_that_fit: slots.len() as u32,
        capability: request.capability.clone(),
        ..Unschedulable::default()
    };
    why.rejections
        .insert(Rejection::DataSiteUnavailable, unavailable);
    Err(why)
}

/// The ready node whose largest RTT to the participating sites is smallest (it may be a site), and
/// that RTT: where the aggregation round trip is shortest for the slowest participant.
pub fn aggregator(
    index: &Index,
    network: &impl Network,
    sites: &[NodeKey],
) -> Option<(NodeKey, f64)> {
    index
        .iter()
        .filter(|(_, e)| e.node.ready && !e.node.jailed)
        .map(|(key, _)| {
            (
                key,
                sites
                    .iter()
                    .map(|&s| network.rtt_ms(key, s))
                    .fold(0.0_f64, f64::max),
            )
        })
        .filter(|(_, worst)| worst.is_finite())
        .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AskOnly;

    /// A single-region node of `gpus` free A100s.
    fn node(name: &str, gpus: usize) -> crate::NodeView {
        crate::fixtures::node(name, "eu", 1_000_000, &vec!["A100-80GB"; gpus], "container")
    }

    fn federated(sites: &[&str]) -> Request {
        Request {
            workers: sites.len() as u32,
            gpus_per_worker: 1,
            max_price_micros: 5_000_000,
            capability: "container".into(),
            data_nodes: sites.iter().map(|s| s.to_string()).collect(),
            ..Request::default()
        }
    }

    #[test]
    fn each_worker_runs_where_its_data_is() {
        let mut index = Index::new();
        for name in ["hospital-a", "hospital-b", "cheap-elsewhere"] {
            index.apply(node(name, 2));
        }
        let slots = place_federated(
            &mut index,
            &AskOnly,
            &federated(&["hospital-b", "hospital-a"]),
        )
        .unwrap();
        let names: Vec<&str> = slots
            .iter()
            .map(|s| index.entry(s.node).unwrap().node.name.as_str())
            .collect();
        assert_eq!(names, ["hospital-b", "hospital-a"], "rank i on data site i");
    }

    #[test]
    fn a_site_that_cannot_take_its_worker_fails_the_whole_job() {
        let mut index = Index::new();
        index.apply(node("hospital-a", 1));
        let mut offline = node("hospital-b", 1);
        offline.ready = false;
        index.apply(offline);
        let err = place_federated(
            &mut index,
            &AskOnly,
            &federated(&["hospital-a", "hospital-b", "nowhere"]),
        )
        .unwrap_err();
        assert_eq!(
            err.rejections.get(&Rejection::DataSiteUnavailable),
            Some(&2)
        );
        assert!(
            err.to_string()
                .contains("2 data sites that cannot take their worker"),
            "{err}"
        );
        assert_eq!(
            index.iter().map(|(_, e)| e.free_total()).sum::<usize>(),
            2,
            "nothing stays allocated"
        );
    }

    #[test]
    fn the_aggregator_minimizes_the_slowest_participant() {
        struct Line;
        impl Network for Line {
            fn rtt_to_region_ms(&self, _: NodeKey, _: &str) -> Option<f64> {
                None
            }
            fn rtt_ms(&self, a: NodeKey, b: NodeKey) -> f64 {
                10.0 * (f64::from(a) - f64::from(b)).abs()
            }
            fn bandwidth_mbps(&self, _: NodeKey, _: NodeKey) -> f64 {
                1000.0
            }
        }
        let mut index = Index::new();
        let keys: Vec<NodeKey> = (0..5)
            .map(|i| index.apply(node(&format!("n{i}"), 1)))
            .collect();
        // Sites at 0 and 4 on a line: the middle node is 20 ms from both.
        assert_eq!(
            aggregator(&index, &Line, &[keys[0], keys[4]]),
            Some((keys[2], 20.0))
        );
    }
}
