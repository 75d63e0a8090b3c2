//! Single-worker placement: filters, scores, explanations, and exactness of the pruned search.

use std::collections::HashMap;

use scheduler::{
    AskOnly, BasePrices, GpuView, Index, Network, NodeKey, NodeView, Rejection, Request, Weights,
    place_single,
};

/// A network given as a table of node → RTT to each user region.
#[derive(Default)]
struct Table(HashMap<(NodeKey, String), f64>);

impl Network for Table {
    fn rtt_to_region_ms(&self, node: NodeKey, region: &str) -> Option<f64> {
        self.0.get(&(node, region.to_string())).copied()
    }
    fn rtt_ms(&self, a: NodeKey, b: NodeKey) -> f64 {
        if a == b { 0.0 } else { 50.0 }
    }
    fn bandwidth_mbps(&self, _: NodeKey, _: NodeKey) -> f64 {
        1000.0
    }
}

struct Base(u64);

impl BasePrices for Base {
    fn base_price_micros(&self, _: &str) -> u64 {
        self.0
    }
}

fn node(name: &str, region: &str, ask: u64, gpus: &[&str]) -> NodeView {
    NodeView {
        name: name.into(),
        region: region.into(),
        price_micros: ask,
        ready: true,
        capabilities: vec!["builtin:sleep".into()],
        gpus: gpus
            .iter()
            .enumerate()
            .map(|(i, model)| GpuView {
                uuid: format!("{name}-{i}"),
                model: (*model).into(),
                memory_gib: 80,
                compute_capability: (9, 0),
                healthy: true,
                allocated: false,
            })
            .collect(),
        stake_micros: 1_000_000,
        reputation_bps: 10_000,
        jailed: false,
    }
}

fn request() -> Request {
    Request {
        workers: 1,
        gpus_per_worker: 1,
        max_price_micros: 10_000_000,
        capability: "builtin:sleep".into(),
        ..Request::default()
    }
}

fn chosen(index: &Index, network: &impl Network, request: &Request) -> String {
    let choice = place_single(index, network, &AskOnly, request, &Weights::default()).unwrap();
    index.entry(choice.node).unwrap().node.name.clone()
}

#[test]
fn without_users_to_serve_the_cheapest_node_wins() {
    let mut index = Index::new();
    index.apply(node("eu-1", "eu", 2_000_000, &["H100"]));
    index.apply(node("us-1", "us", 1_500_000, &["H100"]));
    assert_eq!(chosen(&index, &Table::default(), &request()), "us-1");
}

#[test]
fn latency_to_the_users_is_worth_its_price() {
    let mut index = Index::new();
    let near = index.apply(node("near", "eu", 2_000_000, &["H100"]));
    let far = index.apply(node("far", "us", 1_970_000, &["H100"]));
    let cheap_far = index.apply(node("very-cheap-far", "us", 1_000_000, &["L4"]));
    let mut net = Table::default();
    net.0.insert((near, "eu".into()), 10.0);
    net.0.insert((far, "eu".into()), 90.0);
    net.0.insert((cheap_far, "eu".into()), 90.0);
    let mut req = request();
    req.user_region = Some("eu".into());
    req.models = vec!["H100".into()];
    // 80 ms closer is worth 0.08/h at the default weight: more than the 0.03/h the far node saves.
    assert_eq!(chosen(&index, &net, &req), "near");
    // A node 1.00/h cheaper is worth the same 80 ms.
    req.models.clear();
    assert_eq!(chosen(&index, &net, &req), "very-cheap-far");
}

#[test]
fn a_latency_bound_is_a_hard_filter_and_is_explained() {
    let mut index = Index::new();
    let far = index.apply(node("far", "us", 1_000_000, &["H100"]));
    let mut net = Table::default();
    net.0.insert((far, "eu".into()), 90.0);
    let mut req = request();
    req.user_region = Some("eu".into());
    req.max_latency_ms = Some(50);
    let err = place_single(&index, &net, &AskOnly, &req, &Weights::default()).unwrap_err();
    assert_eq!(err.rejections.get(&Rejection::TooFar), Some(&1), "{err}");
    assert!(
        err.to_string().contains("1 too far from the users"),
        "{err}"
    );
}

#[test]
fn jailed_unstaked_and_previously_failed_nodes_are_refused() {
    let mut index = Index::new();
    let mut jailed = node("jailed", "eu", 1, &["H100"]);
    jailed.jailed = true;
    let mut poor = node("poor", "eu", 1, &["H100"]);
    poor.stake_micros = 10;
    index.apply(jailed);
    index.apply(poor);
    index.apply(node("failed-here", "eu", 1, &["H100"]));
    index.apply(node("ok", "eu", 5, &["H100"]));
    let mut req = request();
    req.min_stake_micros = 1_000;
    req.excluded_nodes = vec!["failed-here".into()];
    assert_eq!(chosen(&index, &Table::default(), &req), "ok");
    index.remove("ok");
    let err = place_single(
        &index,
        &Table::default(),
        &AskOnly,
        &req,
        &Weights::default(),
    )
    .unwrap_err();
    for (reason, n) in [
        (Rejection::Jailed, 1),
        (Rejection::InsufficientStake, 1),
        (Rejection::FailedBefore, 1),
    ] {
        assert_eq!(err.rejections.get(&reason), Some(&n), "{reason:?}: {err}");
    }
}

#[test]
fn the_base_price_lifts_the_effective_price_and_the_maximum_caps_it() {
    let mut index = Index::new();
    index.apply(node("a", "eu", 1_000_000, &["H100"]));
    let req = request();
    let choice = place_single(
        &index,
        &Table::default(),
        &Base(2_500_000),
        &req,
        &Weights::default(),
    )
    .unwrap();
    assert_eq!(choice.price_micros, 2_500_000, "max(ask, base)");
    let mut capped = request();
    capped.max_price_micros = 2_000_000;
    let err = place_single(
        &index,
        &Table::default(),
        &Base(2_500_000),
        &capped,
        &Weights::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.rejections.get(&Rejection::TooExpensive),
        Some(&1),
        "{err}"
    );
}

#[test]
fn multi_gpu_workers_need_enough_free_gpus_of_one_model_on_one_node() {
    let mut index = Index::new();
    let a = index.apply(node("mixed", "eu", 1_000_000, &["H100", "L4", "H100"]));
    index.apply(node("two-h100", "eu", 1_100_000, &["H100", "H100"]));
    let mut req = request();
    req.gpus_per_worker = 2;
    let choice = place_single(
        &index,
        &Table::default(),
        &AskOnly,
        &req,
        &Weights::default(),
    )
    .unwrap();
    assert_eq!(choice.node, a);
    assert_eq!(
        choice.gpus,
        ["mixed-0", "mixed-2"],
        "both H100s, never H100 + L4"
    );
    index.set_allocated(a, &["mixed-0".to_string()], true);
    assert_eq!(chosen(&index, &Table::default(), &req), "two-h100");
}

#[test]
fn small_jobs_pack_onto_busy_nodes() {
    let mut index = Index::new();
    let busy = index.apply(node("busy", "eu", 1_000_000, &["H100"; 8]));
    index.apply(node("idle", "eu", 1_000_000, &["H100"; 8]));
    let taken: Vec<String> = (0..6).map(|i| format!("busy-{i}")).collect();
    index.set_allocated(busy, &taken, true);
    assert_eq!(
        chosen(&index, &Table::default(), &request()),
        "busy",
        "keep the idle node whole"
    );
}

/// The pruned walk must find exactly the score that scoring every feasible node would.
#[test]
fn pruned_search_equals_exhaustive_search() {
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let models = ["H100", "A100", "L4"];
    let regions = ["eu", "us", "ap"];
    for round in 0..40 {
        let mut index = Index::new();
        let mut net = Table::default();
        for i in 0..60 {
            let region = regions[next(3) as usize];
            let gpus: Vec<&str> = (0..1 + next(4)).map(|_| models[next(3) as usize]).collect();
            let mut n = node(&format!("n{i}"), region, 500_000 + next(3_000_000), &gpus);
            n.reputation_bps = 5_000 + next(5_001) as u16;
            n.ready = next(10) != 0;
            let key = index.apply(n);
            for r in regions {
                let base = if r == region { 5.0 } else { 50.0 };
                net.0.insert((key, r.to_string()), base + next(100) as f64);
            }
            if next(3) == 0 {
                index.set_allocated(key, &[format!("n{i}-0")], true);
            }
        }
        let mut req = request();
        req.user_region = Some(regions[next(3) as usize].to_string());
        req.gpus_per_worker = 1 + next(2) as u32;
        if next(2) == 0 {
            req.models = vec![models[next(3) as usize].to_string()];
        }
        if next(2) == 0 {
            req.max_latency_ms = Some(40 + next(100) as u32);
        }
        let fast = place_single(&index, &net, &AskOnly, &req, &Weights::default()).ok();
        let slow = exhaustive(&index, &net, &req);
        assert_eq!(
            fast.as_ref().map(|c| c.score),
            slow,
            "round {round}: {req:?}"
        );
    }
}

/// The best score by brute force: every node, every model it has, scored on its own.
fn exhaustive(index: &Index, net: &Table, req: &Request) -> Option<u64> {
    let mut best = None::<u64>;
    for (key, entry) in index.iter() {
        let mut models: Vec<&str> = entry.node.gpus.iter().map(|g| g.model.as_str()).collect();
        models.sort_unstable();
        models.dedup();
        for model in models {
            if !req.models.is_empty() && !req.models.iter().any(|m| m == model) {
                continue;
            }
            let mut single = Index::new();
            let mut only = entry.node.clone();
            only.gpus.retain(|g| g.model == model);
            let k = single.apply(only);
            let mut view = Table::default();
            for r in ["eu", "us", "ap"] {
                if let Some(l) = net.rtt_to_region_ms(key, r) {
                    view.0.insert((k, r.to_string()), l);
                }
            }
            let mut r = req.clone();
            r.models = vec![model.to_string()];
            if let Ok(c) = place_single(&single, &view, &AskOnly, &r, &Weights::default()) {
                // The packing term counts free GPUs of every model on the real node.
                let others = entry.free_total() - single.entry(k).unwrap().free_total();
                let score = c.score + others as u64 * Weights::default().packing_per_free_gpu;
                best = Some(best.map_or(score, |b| b.min(score)));
            }
        }
    }
    best
}
