//! Solver checks on instances small enough to enumerate.

use super::*;
use crate::cost::dtfm::dtfm;
use rng::Rng;

/// A random asymmetric topology of `n` devices.
fn random_topology(n: usize, seed: u64) -> Topology {
    let mut rng = Rng::new(seed);
    let mut delay = vec![vec![0.0; n]; n];
    let mut bandwidth = vec![vec![1.0; n]; n];
    for i in 0..n {
        for j in (0..n).filter(|&j| j != i) {
            delay[i][j] = rng.unit() * 100.0;
            bandwidth[i][j] = 0.2 + rng.unit() * 10.0;
        }
    }
    Topology::from_matrices(&delay, &bandwidth).unwrap()
}

/// Every layout of `d_pp × d_dp` out of `n` devices (ordered selections), brute force.
fn brute_force(topology: &Topology, sizes: &Sizes, d_pp: usize, d_dp: usize) -> f64 {
    fn go(
        topology: &Topology,
        sizes: &Sizes,
        d_dp: usize,
        needed: usize,
        chosen: &mut Vec<usize>,
        best: &mut f64,
    ) {
        if chosen.len() == needed {
            let layout = Layout {
                stages: chosen.chunks(d_dp).map(<[usize]>::to_vec).collect(),
            };
            *best = best.min(dtfm(topology, sizes, &layout).total_s);
            return;
        }
        for d in 0..topology.len() {
            if !chosen.contains(&d) {
                chosen.push(d);
                go(topology, sizes, d_dp, needed, chosen, best);
                chosen.pop();
            }
        }
    }
    let mut best = f64::INFINITY;
    go(
        topology,
        sizes,
        d_dp,
        d_pp * d_dp,
        &mut Vec::new(),
        &mut best,
    );
    best
}

const SIZES: Sizes = Sizes {
    c_pp_gb: 0.3,
    c_dp_gb: 1.0,
};

#[test]
fn finds_the_optimum_of_small_instances() {
    // (devices, d_pp, d_dp): full gangs and gangs that must leave devices out.
    for (n, d_pp, d_dp) in [
        (4, 2, 2),
        (6, 2, 3),
        (6, 3, 2),
        (7, 3, 2),
        (8, 4, 2),
        (7, 2, 3),
    ] {
        for seed in 0..3 {
            let topology = random_topology(n, seed * 31 + n as u64);
            let layout = solve(&topology, &SIZES, d_pp, d_dp, seed, 20_000).unwrap();
            layout.validate(n).unwrap();
            assert_eq!((layout.d_pp(), layout.d_dp()), (d_pp, d_dp));
            let found = dtfm(&topology, &SIZES, &layout).total_s;
            let best = brute_force(&topology, &SIZES, d_pp, d_dp);
            assert!(
                (found - best).abs() < 1e-9,
                "{n} devices, {d_pp}×{d_dp}, seed {seed}: found {found}, optimum {best}"
            );
        }
    }
}

#[test]
fn same_seed_same_layout() {
    let topology = random_topology(24, 5);
    let a = solve(&topology, &SIZES, 4, 5, 11, 30_000).unwrap();
    let b = solve(&topology, &SIZES, 4, 5, 11, 30_000).unwrap();
    assert_eq!(a, b);
    let r1 = random_baseline(&topology, &SIZES, 4, 5, 3, 100).unwrap();
    let r2 = random_baseline(&topology, &SIZES, 4, 5, 3, 100).unwrap();
    assert_eq!(r1, r2);
}

#[test]
fn zero_budget_still_returns_a_valid_layout() {
    let topology = random_topology(20, 2);
    let layout = solve(&topology, &SIZES, 4, 4, 0, 0).unwrap();
    layout.validate(20).unwrap();
    assert_eq!((layout.d_pp(), layout.d_dp()), (4, 4));
}

#[test]
fn degenerate_shapes() {
    let topology = random_topology(6, 9);
    // One stage: no pipeline cost. One replica: no data-parallel cost.
    let one_stage = solve(&topology, &SIZES, 1, 4, 0, 5_000).unwrap();
    assert_eq!(dtfm(&topology, &SIZES, &one_stage).pipeline_s, 0.0);
    let one_replica = solve(&topology, &SIZES, 5, 1, 0, 5_000).unwrap();
    assert_eq!(dtfm(&topology, &SIZES, &one_replica).data_parallel_s, 0.0);
    assert_eq!(
        solve(&topology, &SIZES, 0, 3, 0, 10),
        Err(GangError::EmptyShape { d_pp: 0, d_dp: 3 })
    );
    assert_eq!(
        solve(&topology, &SIZES, 4, 2, 0, 10),
        Err(GangError::TooFewDevices {
            needed: 8,
            available: 6
        })
    );
    assert_eq!(
        random_baseline(&topology, &SIZES, 2, 2, 0, 0),
        Err(GangError::NoSamples)
    );
    let negative = Sizes {
        c_pp_gb: -1.0,
        c_dp_gb: 1.0,
    };
    assert_eq!(
        solve(&topology, &negative, 2, 2, 0, 10),
        Err(GangError::InvalidSizes(negative))
    );
}

#[test]
fn invalid_links_are_reported() {
    let topology = Topology::from_fn(4, |i, j| Link {
        delay_ms: 1.0,
        bandwidth_gbps: if (i, j) == (2, 1) { 0.0 } else { 1.0 },
    });
    assert!(matches!(
        solve(&topology, &SIZES, 2, 2, 0, 100),
        Err(GangError::InvalidLink { from: 2, to: 1, .. })
    ));
}

#[test]
fn table_costs_equal_the_model() {
    let topology = random_topology(12, 4);
    let costs = PairCosts::new(&topology, &SIZES, 3).unwrap();
    let mut rng = Rng::new(8);
    for _ in 0..50 {
        let stages = construct::random_stages(12, 4, 3, &mut rng);
        let model = dtfm(
            &topology,
            &SIZES,
            &Layout {
                stages: stages.clone(),
            },
        )
        .total_s;
        assert!((costs.total(&stages) - model).abs() < 1e-12);
    }
}

#[test]
fn realized_layout_is_optimal_for_its_partition() {
    // For a fixed partition, no order of the stages and no pairing beats the realized layout.
    let topology = random_topology(9, 12);
    let costs = PairCosts::new(&topology, &SIZES, 3).unwrap();
    let groups = vec![vec![0, 1, 2], vec![3, 4, 5], vec![6, 7, 8]];
    let realized = realize::realize(&costs, &groups);
    let best = costs.total(&realized);
    let orders = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    for order in orders {
        for p1 in orders {
            for p2 in orders {
                let stages = vec![
                    groups[order[0]].clone(),
                    p1.iter().map(|&i| groups[order[1]][i]).collect(),
                    p2.iter().map(|&i| groups[order[2]][i]).collect(),
                ];
                assert!(costs.total(&stages) >= best - 1e-12);
            }
        }
    }
}

/// A scenario with every link perturbed by up to ±30%, so that no constructed start is already
/// optimal and the search has to work.
fn perturbed(scenario: &scenarios::Scenario, seed: u64) -> Topology {
    let n = scenario.topology.len();
    let mut rng = Rng::new(seed);
    let noise: Vec<f64> = (0..n * n).map(|_| 0.7 + 0.6 * rng.unit()).collect();
    let base = scenario.topology.clone();
    Topology::from_fn(n, move |i, j| {
        let link = base.link(i, j);
        let factor = noise[i.min(j) * n + i.max(j)];
        Link {
            delay_ms: link.delay_ms * factor,
            bandwidth_gbps: link.bandwidth_gbps / factor,
        }
    })
}

#[test]
fn search_improves_on_the_constructed_starts() {
    // Budget 0 returns the best realized starting point; the same seed builds the same starts,
    // and the search never returns anything worse than where it started.
    let scenario = scenarios::spot_instances();
    let topology = perturbed(&scenario, 5);
    for seed in 0..3 {
        let cost = |budget| {
            let layout = solve(&topology, &scenario.sizes, 8, 8, seed, budget).unwrap();
            dtfm(&topology, &scenario.sizes, &layout).total_s
        };
        let (start, searched) = (cost(0), cost(60_000));
        assert!(
            searched < start * 0.99,
            "seed {seed}: start {start} s, after search {searched} s"
        );
    }
}
