//! Hand-computed cases for equations (1)–(4).

use super::*;

fn close(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() < 1e-9
}

fn assert_cost(cost: Cost, dp: f64, pp: f64) {
    assert!(
        close(cost.data_parallel_s, dp),
        "DP {cost:?}, expected {dp}"
    );
    assert!(close(cost.pipeline_s, pp), "PP {cost:?}, expected {pp}");
    assert!(close(cost.total_s, dp + pp), "total {cost:?}");
}

/// Four devices, symmetric links (delay ms / bandwidth Gbps):
///
/// ```text
///        1           2          3
/// 0   10 / 10     0 / 8     100 / 1
/// 1              50 / 2       5 / 4
/// 2                          20 / 5
/// ```
fn two_by_two() -> Topology {
    let pairs = [
        (0, 1, 10.0, 10.0),
        (0, 2, 0.0, 8.0),
        (0, 3, 100.0, 1.0),
        (1, 2, 50.0, 2.0),
        (1, 3, 5.0, 4.0),
        (2, 3, 20.0, 5.0),
    ];
    let mut delay = vec![vec![0.0; 4]; 4];
    let mut bandwidth = vec![vec![1.0; 4]; 4];
    for (i, j, d, b) in pairs {
        delay[i][j] = d;
        delay[j][i] = d;
        bandwidth[i][j] = b;
        bandwidth[j][i] = b;
    }
    Topology::from_matrices(&delay, &bandwidth).unwrap()
}

#[test]
fn two_by_two_by_hand() {
    let topology = two_by_two();
    let sizes = Sizes {
        c_pp_gb: 1.0,
        c_dp_gb: 2.0,
    };
    // D_DP = 2, so each member sends c_dp / 2 = 1 GB = 8 Gb to its one peer.
    // Group {0,1}: 2 (0.010 + 8/10)  = 1.62 for either member.
    // Group {2,3}: 2 (0.020 + 8/5)   = 3.24  → DataPCost = max = 3.24.
    // Boundary 0→2: 2 (0 + 8/8) = 2.0; 1→3: 2 (0.005 + 8/4) = 4.01 → slowest pair 4.01.
    let aligned = Layout {
        stages: vec![vec![0, 1], vec![2, 3]],
    };
    assert_cost(dtfm(&topology, &sizes, &aligned), 3.24, 4.01);
    // Same groups, other pairing: 0→3: 2 (0.1 + 8/1) = 16.2; 1→2: 2 (0.05 + 8/2) = 8.1.
    // The data-parallel cost does not depend on the pairing; the pipeline does.
    let crossed = Layout {
        stages: vec![vec![0, 1], vec![3, 2]],
    };
    assert_cost(dtfm(&topology, &sizes, &crossed), 3.24, 16.2);
}

/// Six devices through the closure constructor. Stage A = {0,1,2}: 2 ms, 6 Gbps, except 0–2 at
/// 3 Gbps. Stage B = {3,4,5}: 0 ms, 12 Gbps. Across: 10 ms, 4 Gbps, except 2–5 at 1 Gbps.
fn two_by_three() -> Topology {
    Topology::from_fn(6, |i, j| {
        let (a, b) = (i.min(j), i.max(j));
        match (a < 3, b < 3) {
            (true, true) => Link {
                delay_ms: 2.0,
                bandwidth_gbps: if (a, b) == (0, 2) { 3.0 } else { 6.0 },
            },
            (false, false) => Link {
                delay_ms: 0.0,
                bandwidth_gbps: 12.0,
            },
            _ => Link {
                delay_ms: 10.0,
                bandwidth_gbps: if (a, b) == (2, 5) { 1.0 } else { 4.0 },
            },
        }
    })
}

#[test]
fn two_by_three_by_hand() {
    let topology = two_by_three();
    topology.validate().unwrap();
    let sizes = Sizes {
        c_pp_gb: 0.5,
        c_dp_gb: 1.5,
    };
    // D_DP = 3: each shard is 1.5/3 GB = 4 Gb, so a pair costs 2 (α + 4/β).
    // A: 0–1 = 2 (0.002 + 4/6) = 1.337333…, 0–2 = 2 (0.002 + 4/3) = 2.670666…, 1–2 = 1.337333…
    //    rows: 0 → 4.008, 1 → 2.674666…, 2 → 4.008.
    // B: every pair 2 (0 + 4/12) = 0.666…, rows 1.333…      → DataPCost = 4.008.
    // Pipeline: c_pp = 4 Gb, so a pair costs 2 (0.010 + 4/β): 0→3 and 1→4 = 2.02, 2→5 = 8.02.
    let straight = Layout {
        stages: vec![vec![0, 1, 2], vec![3, 4, 5]],
    };
    assert_cost(dtfm(&topology, &sizes, &straight), 4.008, 8.02);
    // Re-pairing B as (5,3,4) avoids the slow 2–5 link: every pair is 2.02.
    let matched = Layout {
        stages: vec![vec![0, 1, 2], vec![5, 3, 4]],
    };
    assert_cost(dtfm(&topology, &sizes, &matched), 4.008, 2.02);
}

#[test]
fn three_stages_add_their_boundaries() {
    // Uniform 5 ms / 2 Gbps, D_PP = 3, D_DP = 2, c_pp = 0.25 GB (2 Gb), c_dp = 1 GB (4 Gb/peer).
    // DP: 2 (0.005 + 4/2) = 4.01. Each boundary: 2 (0.005 + 2/2) = 2.01, two of them = 4.02.
    let topology = Topology::from_fn(6, |_, _| Link {
        delay_ms: 5.0,
        bandwidth_gbps: 2.0,
    });
    let sizes = Sizes {
        c_pp_gb: 0.25,
        c_dp_gb: 1.0,
    };
    let layout = Layout {
        stages: vec![vec![0, 1], vec![2, 3], vec![4, 5]],
    };
    assert_cost(dtfm(&topology, &sizes, &layout), 4.01, 4.02);
}

#[test]
fn pipeline_reads_links_in_the_direction_data_flows() {
    // 0→1 is slow (10 ms, 1 Gbps), 1→0 fast (0 ms, 100 Gbps). One device per stage: no DP cost.
    let delay = vec![vec![0.0, 10.0], vec![0.0, 0.0]];
    let bandwidth = vec![vec![1.0, 1.0], vec![100.0, 1.0]];
    let topology = Topology::from_matrices(&delay, &bandwidth).unwrap();
    let sizes = Sizes {
        c_pp_gb: 1.0,
        c_dp_gb: 1.0,
    };
    let forward = Layout {
        stages: vec![vec![0], vec![1]],
    };
    assert_cost(dtfm(&topology, &sizes, &forward), 0.0, 2.0 * (0.01 + 8.0));
    let backward = Layout {
        stages: vec![vec![1], vec![0]],
    };
    assert_cost(dtfm(&topology, &sizes, &backward), 0.0, 2.0 * 0.08);
}

#[test]
fn matrices_are_checked() {
    let ok = vec![vec![0.0, 1.0], vec![1.0, 0.0]];
    assert!(matches!(
        Topology::from_matrices(&ok, &[vec![1.0, 1.0]]),
        Err(TopologyError::Shape { .. })
    ));
    let zero_bandwidth = vec![vec![1.0, 0.0], vec![1.0, 1.0]];
    assert!(matches!(
        Topology::from_matrices(&ok, &zero_bandwidth),
        Err(TopologyError::InvalidLink { from: 0, to: 1, .. })
    ));
    // The diagonal is never used, so it is not checked.
    let zero_diagonal = vec![vec![0.0, 1.0], vec![1.0, 0.0]];
    assert!(Topology::from_matrices(&ok, &zero_diagonal).is_ok());
}

#[test]
fn layouts_are_checked() {
    let layout = |stages: Vec<Vec<usize>>| Layout { stages };
    assert_eq!(layout(vec![vec![0, 1], vec![2, 3]]).validate(4), Ok(()));
    assert_eq!(layout(vec![]).validate(4), Err(LayoutError::Empty));
    assert!(matches!(
        layout(vec![vec![0, 1], vec![2]]).validate(4),
        Err(LayoutError::Ragged { stage: 1, .. })
    ));
    assert_eq!(
        layout(vec![vec![0, 4]]).validate(4),
        Err(LayoutError::UnknownDevice { device: 4, n: 4 })
    );
    assert_eq!(
        layout(vec![vec![0, 1], vec![1, 2]]).validate(4),
        Err(LayoutError::Duplicate { device: 1 })
    );
}
