//! From a partition to a layout: the paper's coarsening step. Each group becomes a node of the
//! coarsened graph, each ordered pair of groups an edge weighted by its bottleneck matching
//! (equation (2)); the open-loop TSP path (equation (3)) orders the stages; the matchings along
//! the path fix which device of each stage feeds which device of the next.
//!
//! Consecutive matchings never conflict: a stage's own order is free, so the order of stage 0 is
//! arbitrary and each later stage is permuted to follow its matching with the stage before it.
//! Hence the realized layout costs exactly `DataPCost + PipelinePCost` of its partition, the
//! minimum over all orders and pairings of that partition.

use super::{costs::PairCosts, matching::bottleneck_assignment, tsp::open_path};

/// The cheapest layout of `groups` (equal-sized, disjoint): stages in optimal order, each stage
/// permuted to realize the bottleneck matching with its predecessor.
pub(crate) fn realize(costs: &PairCosts, groups: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let m = groups.len();
    let k = groups.first().map_or(0, Vec::len);
    let mut weight = vec![0.0; m * m];
    let mut assignment: Vec<Vec<usize>> = vec![Vec::new(); m * m];
    let mut cost = vec![0.0; k * k];
    for a in 0..m {
        for b in (0..m).filter(|&b| b != a) {
            for (i, &from) in groups[a].iter().enumerate() {
                for (j, &to) in groups[b].iter().enumerate() {
                    cost[i * k + j] = costs.pp(from, to);
                }
            }
            let (value, matched) = bottleneck_assignment(k, &cost);
            weight[a * m + b] = value;
            assignment[a * m + b] = matched;
        }
    }
    let order = open_path(m, &weight);
    let mut stages = Vec::with_capacity(m);
    // index[i]: which member of the current group sits at pipeline position i.
    let mut index: Vec<usize> = (0..k).collect();
    for (step, &group) in order.iter().enumerate() {
        if step > 0 {
            let matched = &assignment[order[step - 1] * m + group];
            for slot in &mut index {
                *slot = matched[*slot];
            }
        }
        stages.push(index.iter().map(|&i| groups[group][i]).collect());
    }
    stages
}
