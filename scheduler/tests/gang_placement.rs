//! Gang placement on a fleet: all or nothing, kept together where the network is fast, within the
//! job's latency and bandwidth bounds between workers.

use scheduler::{
    AskOnly, GpuView, Index, Network, NodeKey, NodeView, Rejection, Request, Weights, place,
};

/// Two regions: 5 ms / 1 Gbps inside each, 150 ms / 100 Mbps between them.
struct TwoRegions {
    region_of: Vec<u8>,
}

impl Network for TwoRegions {
    fn rtt_to_region_ms(&self, _: NodeKey, _: &str) -> Option<f64> {
        None
    }
    fn rtt_ms(&self, a: NodeKey, b: NodeKey) -> f64 {
        match (
            a == b,
            self.region_of[a as usize] == self.region_of[b as usize],
        ) {
            (true, _) => 0.0,
            (false, true) => 5.0,
            (false, false) => 150.0,
        }
    }
    fn bandwidth_mbps(&self, a: NodeKey, b: NodeKey) -> f64 {
        if self.region_of[a as usize] == self.region_of[b as usize] {
            1000.0
        } else {
            100.0
        }
    }
}

fn node(name: &str, region: &str, ask: u64, gpus: usize) -> NodeView {
    NodeView {
        name: name.into(),
        region: region.into(),
        price_micros: ask,
        ready: true,
        capabilities: vec!["container".into()],
        gpus: (0..gpus)
            .map(|i| GpuView {
                uuid: format!("{name}-{i}"),
                model: "H100-80GB".into(),
                memory_gib: 80,
                compute_capability: (9, 0),
                healthy: true,
                allocated: false,
            })
            .collect(),
        reputation_bps: 10_000,
        ..NodeView::default()
    }
}

/// `per_region` single-GPU nodes in each of regions "a" (asks 1.00…) and "b" (asks 0.95…).
fn fleet(per_region: usize) -> (Index, TwoRegions) {
    let mut index = Index::new();
    let mut region_of = Vec::new();
    for i in 0..per_region {
        let k = index.apply(node(&format!("a{i}"), "a", 1_000_000 + i as u64, 1));
        region_of.resize(k as usize + 1, 0);
        region_of[k as usize] = 0;
        let k = index.apply(node(&format!("b{i}"), "b", 950_000 + i as u64, 1));
        region_of.resize(k as usize + 1, 0);
        region_of[k as usize] = 1;
    }
    (index, TwoRegions { region_of })
}

fn gang(workers: u32) -> Request {
    Request {
        workers,
        gpus_per_worker: 1,
        max_price_micros: 5_000_000,
        capability: "container".into(),
        ..Request::default()
    }
}

fn regions_used(index: &Index, slots: &[scheduler::Slot]) -> Vec<String> {
    let mut regions: Vec<String> = slots
        .iter()
        .map(|s| index.entry(s.node).unwrap().node.region.clone())
        .collect();
    regions.sort();
    regions.dedup();
    regions
}

#[test]
fn a_gang_stays_in_one_region_when_one_can_hold_it() {
    let (mut index, net) = fleet(8);
    let slots = place(&mut index, &net, &AskOnly, &gang(6), &Weights::default()).unwrap();
    assert_eq!(slots.len(), 6);
    assert_eq!(
        regions_used(&index, &slots).len(),
        1,
        "splitting over a 150 ms link would slow every step"
    );
    let ranks: Vec<u32> = slots.iter().map(|s| s.rank).collect();
    assert_eq!(ranks, (0..6).collect::<Vec<_>>());
}

#[test]
fn a_gang_that_must_split_does_so_unless_its_bounds_forbid_it() {
    let (mut index, net) = fleet(2);
    let slots = place(&mut index, &net, &AskOnly, &gang(4), &Weights::default()).unwrap();
    assert_eq!(
        regions_used(&index, &slots),
        ["a", "b"],
        "no bound: the only way to fit is to split"
    );
    scheduler::release(&mut index, &slots);

    let mut bounded = gang(4);
    bounded.max_latency_ms = Some(50);
    let err = place(&mut index, &net, &AskOnly, &bounded, &Weights::default()).unwrap_err();
    assert_eq!(err.unmet_link_bounds.as_deref(), Some("maxLatencyMs 50"));
    assert!(
        err.to_string().ends_with(
            "no layout of the 4 workers found keeps every pair of them within maxLatencyMs 50"
        ),
        "{err}"
    );
    assert!(
        !err.rejections.contains_key(&Rejection::TooFar),
        "no users to be far from: {err}"
    );
    assert_eq!(
        index.iter().map(|(_, e)| e.free_total()).sum::<usize>(),
        4,
        "nothing left allocated"
    );

    let mut fat_pipes = gang(4);
    fat_pipes.min_bandwidth_mbps = Some(500);
    let err = place(&mut index, &net, &AskOnly, &fat_pipes, &Weights::default()).unwrap_err();
    assert!(
        err.to_string().contains("within minBandwidthMbps 500"),
        "{err}"
    );
}

#[test]
fn pipeline_stages_split_the_gang_into_equal_data_parallel_groups() {
    let (mut index, net) = fleet(8);
    let mut job = gang(8);
    job.pipeline_stages = 2;
    let slots = place(&mut index, &net, &AskOnly, &job, &Weights::default()).unwrap();
    assert_eq!(slots.len(), 8);
    let mut gpus: Vec<&String> = slots.iter().flat_map(|s| &s.gpus).collect();
    gpus.sort();
    gpus.dedup();
    assert_eq!(gpus.len(), 8, "every worker holds its own GPU");
}

#[test]
fn a_gang_larger_than_the_fleet_is_refused_whole() {
    let (mut index, net) = fleet(2);
    let err = place(&mut index, &net, &AskOnly, &gang(5), &Weights::default()).unwrap_err();
    assert_eq!(err.workers_that_fit, 4);
    assert!(err.to_string().contains("only 4 of 5 workers fit"), "{err}");
    assert_eq!(index.iter().map(|(_, e)| e.free_total()).sum::<usize>(), 4);
}

#[test]
fn workers_share_a_multi_gpu_node_before_crossing_the_network() {
    let mut index = Index::new();
    let big = index.apply(node("big", "a", 1_200_000, 8));
    let mut region_of = vec![0; big as usize + 1];
    for i in 0..8 {
        let k = index.apply(node(&format!("small{i}"), "b", 1_000_000, 1));
        region_of.resize(k as usize + 1, 0);
        region_of[k as usize] = 1;
    }
    let net = TwoRegions { region_of };
    let mut job = gang(4);
    job.gpus_per_worker = 2;
    let slots = place(&mut index, &net, &AskOnly, &job, &Weights::default()).unwrap();
    assert!(
        slots.iter().all(|s| s.node == big),
        "4 workers × 2 GPUs fit on one 8-GPU server"
    );
}
