//! The network model against a synthetic world with known true RTTs (`scheduler::network::synthetic`:
//! DT-FM's 8-region matrix plus residential last miles).

use scheduler::network::{
    Coordinate, DEFAULT_BANDWIDTH_MBPS, DIMS, MAX_BANDWIDTH_MBPS, MAX_MEASURED_PEERS, MAX_RTT_MS,
    NetworkModel, NodeKey, REFIT_PASSES,
    synthetic::{REGION_RTT_MS, REGIONS, SplitMix64, World},
};

/// RTT samples each node takes; the acceptance criterion allows at most 32.
const SAMPLES_PER_NODE: u32 = 32;

#[derive(Debug)]
struct Accuracy {
    median: f64,
    p90: f64,
}

/// Relative errors `|estimate − true| / true` over `pairs` random distinct node pairs that were
/// never measured, so every estimate comes from coordinates alone.
fn accuracy(world: &World, model: &NetworkModel, pairs: usize, seed: u64) -> Accuracy {
    let mut rng = SplitMix64::new(seed);
    let n = world.len() as u64;
    let mut errors = Vec::with_capacity(pairs);
    while errors.len() < pairs {
        let (a, b) = (rng.below(n) as usize, rng.below(n) as usize);
        let (ka, kb) = (a as NodeKey, b as NodeKey);
        if a == b || model.measured_rtt_ms(ka, kb).is_some() {
            continue;
        }
        let truth = world.true_rtt(a, b);
        errors.push((model.rtt_ms(ka, kb) - truth).abs() / truth);
    }
    errors.sort_by(f64::total_cmp);
    Accuracy {
        median: errors[errors.len() / 2],
        p90: errors[errors.len() * 9 / 10],
    }
}

/// A world of `nodes` nodes, and a model that saw `samples` probes per node in interleaved rounds
/// (every node probes one random peer per round), without refitting.
fn probed(nodes: usize, samples: u32, seed: u64) -> (World, NetworkModel) {
    let world = World::generate(nodes, seed);
    let mut model = NetworkModel::new(seed ^ 0xa5a5);
    world.populate(&mut model);
    world.probe(&mut model, samples, seed ^ 0x5a5a);
    model.refresh();
    (world, model)
}

/// [`probed`] with 32 samples per node, then refitted as the hub does.
fn trained(nodes: usize, seed: u64) -> (World, NetworkModel) {
    let (world, mut model) = probed(nodes, SAMPLES_PER_NODE, seed);
    model.refit(REFIT_PASSES);
    (world, model)
}

fn check_accuracy(nodes: usize) {
    let (world, mut model) = probed(nodes, SAMPLES_PER_NODE, 42);
    let online = accuracy(&world, &model, 100_000, 7);
    model.refit(REFIT_PASSES);
    let refit = accuracy(&world, &model, 100_000, 7);
    println!(
        "{nodes} nodes, {SAMPLES_PER_NODE} samples/node, {DIMS}-D + height, 100,000 unmeasured \
         pairs: online Vivaldi median {:.1} % p90 {:.1} %; after refit({REFIT_PASSES}) median \
         {:.1} % p90 {:.1} %",
        online.median * 100.0,
        online.p90 * 100.0,
        refit.median * 100.0,
        refit.p90 * 100.0,
    );
    assert!(refit.median <= 0.15, "{refit:?}");
    // Not the criterion, but a tail this far off would make latency filters useless.
    assert!(refit.p90 <= 0.30, "{refit:?}");
}

/// The acceptance criterion: ≤ 32 samples per node, median relative error ≤ 15 % on pairs that
/// were never measured.
#[test]
fn median_error_on_unmeasured_pairs_is_at_most_15_percent_at_1000_nodes() {
    check_accuracy(1_000);
}

/// The same at 10,000 nodes (a few seconds in a debug build).
#[test]
fn median_error_on_unmeasured_pairs_is_at_most_15_percent_at_10000_nodes() {
    check_accuracy(10_000);
}

#[test]
fn measured_pairs_override_estimates_and_are_symmetric() {
    let (world, mut model) = trained(300, 1);
    let (a, b) = (0..300u32)
        .flat_map(|a| (0..300u32).map(move |b| (a, b)))
        .find(|&(a, b)| a != b && model.measured_rtt_ms(a, b).is_none())
        .unwrap();
    let estimate = model.rtt_ms(a, b);
    assert!(estimate.is_finite() && estimate > 0.0);

    // A measured value far from the estimate wins, and its median ignores one spike.
    let measured = estimate * 3.0;
    for rtt in [measured, measured * 1.02, 5_000.0, measured * 0.98] {
        assert!(model.observe_rtt(b, a, rtt));
    }
    assert_eq!(
        model.measured_rtt_ms(a, b),
        Some((measured + measured * 1.02) / 2.0)
    );
    assert_eq!(model.rtt_ms(a, b), model.rtt_ms(b, a));
    assert_eq!(model.rtt_ms(a, b), model.measured_rtt_ms(a, b).unwrap());
    assert_ne!(model.estimated_rtt_ms(a, b), model.measured_rtt_ms(a, b));

    // Bandwidth: without a measurement, min(uplink(a), downlink(b)); a measured direction wins
    // for that direction only.
    let (ia, ib) = (a as usize, b as usize);
    assert_eq!(model.bandwidth_mbps(a, b), world.true_bandwidth(ia, ib));
    assert!(model.observe_bandwidth(a, b, 3.5));
    assert_eq!(model.bandwidth_mbps(a, b), 3.5);
    assert_eq!(model.bandwidth_mbps(b, a), world.true_bandwidth(ib, ia));
}

#[test]
fn rtt_is_symmetric_and_zero_to_self() {
    let (_, model) = trained(200, 2);
    for a in 0..200 {
        assert_eq!(model.rtt_ms(a, a), 0.0);
        for b in 0..200 {
            assert_eq!(model.rtt_ms(a, b).to_bits(), model.rtt_ms(b, a).to_bits());
        }
    }
    // A node the model does not know is infinitely far, so latency limits exclude it.
    assert_eq!(model.rtt_ms(0, 10_000), f64::INFINITY);
    assert_eq!(model.estimated_rtt_ms(0, 10_000), None);
}

#[test]
fn unusable_samples_are_ignored() {
    let (_, mut model) = trained(100, 3);
    let (a, b) = (0..100u32)
        .map(|b| (0, b))
        .find(|&(a, b)| a != b && model.measured_rtt_ms(a, b).is_none())
        .unwrap();
    let before = (model.coordinate(a), model.coordinate(b), model.rtt_ms(a, b));
    for rtt in [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        0.0,
        -0.0,
        -25.0,
        MAX_RTT_MS * 2.0,
    ] {
        assert!(!model.observe_rtt(a, b, rtt), "{rtt} accepted");
    }
    for mbps in [
        f64::NAN,
        f64::INFINITY,
        0.0,
        -100.0,
        MAX_BANDWIDTH_MBPS * 2.0,
    ] {
        assert!(!model.observe_bandwidth(a, b, mbps), "{mbps} Mbps accepted");
        assert!(!model.set_bandwidth(a, mbps, 100.0));
        assert!(!model.set_bandwidth(a, 100.0, mbps));
    }
    assert!(
        !model.observe_rtt(a, a, 10.0),
        "a self-sample is not a network RTT"
    );
    assert!(!model.observe_rtt(a, 999, 10.0), "unknown node");
    assert_eq!(
        before,
        (model.coordinate(a), model.coordinate(b), model.rtt_ms(a, b))
    );
    assert_eq!(model.measured_rtt_ms(a, b), None);
    assert_eq!(model.measured_bandwidth_mbps(a, b), None);
}

#[test]
fn region_queries_match_the_world() {
    let (world, model) = trained(2_000, 4);
    let median = |mut xs: Vec<f64>| {
        xs.sort_by(f64::total_cmp);
        xs[xs.len() / 2]
    };
    let last_miles = |region: usize| {
        median(
            world
                .nodes
                .iter()
                .filter(|n| n.region == region)
                .map(|n| n.last_mile_ms)
                .collect(),
        )
    };
    let mut errors = Vec::new();
    let mut own_errors = Vec::new();
    for a in 0..world.len() {
        let own = world.nodes[a].region;
        for (r, name) in REGIONS.iter().enumerate() {
            let estimate = model.rtt_to_region_ms(a as NodeKey, name).unwrap();
            // The typical RTT to a member: the median true RTT over the region's members (for
            // the own region that is about 5 ms + both last miles, not 0).
            let truth = median(
                (0..world.len())
                    .filter(|&m| m != a && world.nodes[m].region == r)
                    .map(|m| world.true_rtt(a, m))
                    .collect(),
            );
            let error = (estimate - truth).abs() / truth;
            errors.push(error);
            if REGION_RTT_MS[own][r] >= 60.0 {
                // Far regions: the region RTT plus both last miles.
                let expected = REGION_RTT_MS[own][r] + world.nodes[a].last_mile_ms + last_miles(r);
                assert!(
                    (estimate - expected).abs() <= 0.25 * expected,
                    "node {a} ({}) to {name}: {estimate:.1} ms, expected {expected:.1}",
                    REGIONS[own]
                );
            } else if r == own {
                own_errors.push(error);
            }
        }
    }
    let all = median(errors);
    // A node's RTT to its own region is about its typical RTT to a neighbour (≈ 5 ms + both last
    // miles), not 0. Intra-region pairs are the hardest for coordinates (short RTTs, dominated by
    // last miles), so this is checked on the median node.
    own_errors.sort_by(f64::total_cmp);
    let (own, own_p90) = (
        own_errors[own_errors.len() / 2],
        own_errors[own_errors.len() * 9 / 10],
    );
    println!(
        "node-to-region median relative error {:.1} %; to its own region median {:.1} % p90 {:.1} %",
        all * 100.0,
        own * 100.0,
        own_p90 * 100.0
    );
    assert!(all <= 0.10, "{all}");
    assert!(own <= 0.15, "{own}");

    for (i, x) in REGIONS.iter().enumerate() {
        for (j, y) in REGIONS.iter().enumerate() {
            let estimate = model.region_rtt_ms(x, y).unwrap();
            let expected = REGION_RTT_MS[i][j] + last_miles(i) + last_miles(j);
            assert!(
                (estimate - expected).abs() <= 0.2 * expected,
                "{x}–{y}: {estimate:.1} ms, expected {expected:.1}"
            );
            assert_eq!(estimate, model.region_rtt_ms(y, x).unwrap());
        }
    }

    assert_eq!(model.rtt_to_region_ms(0, "mars"), None);
    assert_eq!(model.region_rtt_ms("mars", "tokyo"), None);
    assert_eq!(model.rtt_to_region_ms(50_000, "tokyo"), None);
    let id = model.region_id("tokyo").unwrap();
    assert_eq!(
        model.rtt_to_region_id_ms(0, id),
        model.rtt_to_region_ms(0, "tokyo")
    );
}

#[test]
fn region_summaries_change_only_on_refresh_and_empty_regions_answer_none() {
    let mut model = NetworkModel::new(5);
    model.add_node(0, "a");
    model.add_node(1, "b");
    assert!(model.observe_rtt(0, 1, 50.0));
    assert!(model.observe_rtt(1, 0, 50.0));
    assert_eq!(model.rtt_to_region_ms(0, "b"), None, "no refresh yet");
    model.refresh();
    let before = model.rtt_to_region_ms(0, "b").unwrap();
    assert!(before.is_finite() && before > 0.0);
    for _ in 0..20 {
        model.observe_rtt(1, 0, 150.0);
    }
    assert_eq!(
        model.rtt_to_region_ms(0, "b"),
        Some(before),
        "queries use the last summary"
    );
    model.refresh();
    assert_ne!(model.rtt_to_region_ms(0, "b"), Some(before));

    // Re-adding moves a node to another region; an emptied region answers None after refresh.
    model.add_node(1, "a");
    assert_eq!(model.region_of(1), Some("a"));
    assert_eq!(model.region_members("a"), 2);
    assert_eq!(model.region_members("b"), 0);
    model.refresh();
    assert_eq!(model.rtt_to_region_ms(0, "b"), None);
    assert!(model.rtt_to_region_ms(0, "a").is_some());
}

#[test]
fn remove_node_forgets_its_measurements() {
    let mut model = NetworkModel::new(6);
    for k in 0..3 {
        model.add_node(k, "r");
    }
    model.observe_rtt(0, 1, 20.0);
    model.observe_rtt(2, 1, 30.0);
    model.observe_bandwidth(1, 0, 100.0);
    assert!(model.remove_node(1));
    assert!(!model.remove_node(1));
    assert_eq!(model.len(), 2);
    assert_eq!(model.rtt_ms(0, 1), f64::INFINITY);
    model.add_node(1, "r");
    assert_eq!(model.measured_rtt_ms(0, 1), None);
    assert_eq!(model.measured_bandwidth_mbps(1, 0), None);
    assert_eq!(model.coordinate(1), Some(Coordinate::origin()));
}

#[test]
fn bandwidth_defaults_are_conservative() {
    let mut model = NetworkModel::new(7);
    model.add_node(0, "r");
    model.add_node(1, "r");
    assert_eq!(model.bandwidth_mbps(0, 1), DEFAULT_BANDWIDTH_MBPS);
    assert!(model.set_bandwidth(0, 40.0, 900.0));
    // 0's uplink is known, 1's downlink is not: the unknown side bounds the estimate.
    assert_eq!(model.bandwidth_mbps(0, 1), DEFAULT_BANDWIDTH_MBPS);
    assert!(model.set_bandwidth(1, 300.0, 500.0));
    assert_eq!(model.bandwidth_mbps(0, 1), 40.0);
    assert_eq!(model.bandwidth_mbps(1, 0), 300.0);
    assert_eq!(model.bandwidth_mbps(0, 0), f64::INFINITY);
}

#[test]
fn a_node_remembers_its_most_recently_measured_peers_only() {
    let mut model = NetworkModel::new(8);
    let peers = MAX_MEASURED_PEERS as NodeKey + 20;
    for k in 0..=peers {
        model.add_node(k, "r");
    }
    for b in 1..=peers {
        assert!(model.observe_rtt(0, b, 10.0 + f64::from(b)));
    }
    // Re-measuring peer 1 makes it recent again; 2..=21 are the oldest and were forgotten.
    assert!(model.observe_rtt(1, 0, 11.0));
    assert!(model.observe_rtt(0, peers, 10.0 + f64::from(peers)));
    let kept = (1..=peers)
        .filter(|&b| model.measured_rtt_ms(0, b).is_some())
        .count();
    assert_eq!(kept, MAX_MEASURED_PEERS);
    assert_eq!(model.measured_rtt_ms(0, 1), Some(11.0));
    assert_eq!(model.measured_rtt_ms(0, 21), None);
    assert_eq!(model.measured_rtt_ms(0, 22), Some(32.0));
}

#[test]
fn coordinates_never_become_nan_under_garbage() {
    let mut model = NetworkModel::new(9);
    let nodes = 40;
    for k in 0..nodes {
        model.add_node(k, REGIONS[k as usize % 3]);
    }
    let mut rng = SplitMix64::new(99);
    let garbage = [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        0.0,
        -1.0,
        f64::MIN_POSITIVE,
        1e-300,
        1e300,
        f64::MAX,
        MAX_RTT_MS,
        MAX_RTT_MS * 0.999,
        1e-9,
    ];
    let all_finite = |model: &NetworkModel| {
        (0..nodes).all(|k| {
            let c = model.coordinate(k).unwrap();
            c.is_valid() && c.v.iter().all(|x| x.is_finite())
        })
    };
    for round in 0..20_000u32 {
        let a = rng.below(u64::from(nodes) + 2) as NodeKey; // sometimes unknown
        let b = rng.below(u64::from(nodes) + 2) as NodeKey;
        let value = match rng.below(3) {
            0 => garbage[rng.below(garbage.len() as u64) as usize],
            1 => rng.range_f64(-1e6, 1e6),
            _ => rng.range_f64(0.0, 500.0),
        };
        match rng.below(6) {
            0 => {
                model.observe_bandwidth(a, b, value);
            }
            1 => {
                model.set_bandwidth(a, value, value);
            }
            2 => {
                let mut c = model.coordinate(a).unwrap_or_default();
                c.v[rng.below(DIMS as u64) as usize] = value;
                c.height = garbage[rng.below(garbage.len() as u64) as usize];
                model.set_coordinate(a, c);
            }
            _ => {
                model.observe_rtt(a, b, value);
            }
        }
        if round % 1_000 == 0 {
            model.refit(1);
        }
        assert!(all_finite(&model), "round {round}");
    }
    model.refit(3);
    assert!(all_finite(&model));
    for a in 0..nodes {
        for b in 0..nodes {
            let rtt = model.rtt_ms(a, b);
            assert!(rtt.is_finite() && rtt >= 0.0, "{a}-{b}: {rtt}");
            assert!(!model.bandwidth_mbps(a, b).is_nan());
        }
        for r in &REGIONS[..3] {
            assert!(model.rtt_to_region_ms(a, r).unwrap().is_finite());
        }
    }
}

#[test]
fn same_seed_and_calls_give_identical_coordinates() {
    let run = |seed: u64| {
        let (_, mut model) = probed(500, 16, seed);
        model.refit(3);
        (0..500)
            .map(|k| model.coordinate(k).unwrap())
            .collect::<Vec<_>>()
    };
    let bits = |cs: Vec<Coordinate>| {
        cs.iter()
            .flat_map(|c| c.v.iter().chain([&c.height, &c.error]).map(|x| x.to_bits()))
            .collect::<Vec<_>>()
    };
    assert_eq!(bits(run(11)), bits(run(11)));
    assert_ne!(bits(run(11)), bits(run(12)));
}

#[test]
fn coordinates_persist_and_restore() {
    let (world, model) = trained(300, 13);
    let mut restored = NetworkModel::new(0);
    world.populate(&mut restored);
    for k in 0..300 {
        assert!(restored.set_coordinate(k, model.coordinate(k).unwrap()));
    }
    assert_eq!(
        restored.estimated_rtt_ms(3, 250),
        model.estimated_rtt_ms(3, 250)
    );
    let mut bad = model.coordinate(0).unwrap();
    bad.v[0] = f64::NAN;
    assert!(!restored.set_coordinate(0, bad));
    bad = model.coordinate(0).unwrap();
    bad.height = -1.0;
    assert!(!restored.set_coordinate(0, bad));
    assert!(!restored.set_coordinate(1_000, model.coordinate(0).unwrap()));
    assert_eq!(restored.coordinate(0), model.coordinate(0));
}

/// A node joining an established fleet starts from its region's summary, so a handful of
/// samples (no refit) already place it well.
#[test]
fn a_late_joiner_is_placed_after_a_few_samples() {
    let (world, mut model) = trained(1_001, 14);
    let newcomer = 1_000;
    model.remove_node(newcomer as NodeKey);
    model.refresh();
    model.add_node(newcomer as NodeKey, world.region_name(newcomer));
    let mut rng = SplitMix64::new(15);
    for nonce in 0..4 {
        let peer = rng.below(1_000) as usize;
        model.observe_rtt(
            newcomer as NodeKey,
            peer as NodeKey,
            world.sample_rtt(newcomer, peer, nonce),
        );
    }
    let mut errors: Vec<f64> = (0..1_000)
        .filter(|&b| {
            model
                .measured_rtt_ms(newcomer as NodeKey, b as NodeKey)
                .is_none()
        })
        .map(|b| {
            let truth = world.true_rtt(newcomer, b);
            (model.rtt_ms(newcomer as NodeKey, b as NodeKey) - truth).abs() / truth
        })
        .collect();
    errors.sort_by(f64::total_cmp);
    let median = errors[errors.len() / 2];
    println!(
        "late joiner after 4 samples: median relative error {:.1} %",
        median * 100.0
    );
    assert!(median <= 0.15, "{median}");
}

#[test]
#[ignore = "exploration: error against samples per node and refit passes (release build)"]
fn error_by_samples_and_passes() {
    for nodes in [1_000, 10_000] {
        for samples in [8, 16, 32, 64] {
            let (world, mut model) = probed(nodes, samples, 42);
            let mut line = format!("{nodes:>6} nodes {samples:>3} samples/node:");
            let mut done = 0;
            for passes in [0, 2, 5, 10, 20, 50] {
                model.refit(passes - done);
                done = passes;
                let acc = accuracy(&world, &model, 100_000, 7);
                line += &format!(
                    "  refit {passes}: {:.1}/{:.1} %",
                    acc.median * 100.0,
                    acc.p90 * 100.0
                );
            }
            println!("{line}");
        }
    }
}
