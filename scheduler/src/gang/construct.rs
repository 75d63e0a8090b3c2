//! Starting points for the search, built from the topology alone.
//!
//! The two halves of the cost pull in opposite directions: a data-parallel group wants its
//! members close together (equation (1)), while a pipeline wants each device close to its
//! successor (equation (2)). Each constructor greedily favours one of them; on a topology of fast
//! islands joined by slow links, one yields "a stage per island", the other "a pipeline per
//! island", and the search starts from both.

use super::{costs::PairCosts, rng::Rng};

/// How a constructor picks the device each group or chain starts from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// Uniformly among the free devices: diversity for the population.
    Random,
    /// The free device with the cheapest links to its nearest free neighbours: dense islands are
    /// used up first, while they are still whole, instead of being split by earlier groups that
    /// happened to start elsewhere.
    Densest,
}

/// Balanced greedy partitioning for equation (1): `d_pp` groups of `d_dp`, each grown from a start
/// device by repeatedly adding the free device with the smallest data-parallel cost to the group.
/// Returns the groups (not yet ordered or matched).
pub(crate) fn dp_clusters(
    costs: &PairCosts,
    d_pp: usize,
    d_dp: usize,
    start: Start,
    rng: &mut Rng,
) -> Vec<Vec<usize>> {
    let mut free = vec![true; costs.len()];
    (0..d_pp)
        .map(|_| grow_group(costs, &mut free, d_dp, start, rng))
        .collect()
}

/// Grows one group of `size` from the devices marked free, taking them.
pub(crate) fn grow_group(
    costs: &PairCosts,
    free: &mut [bool],
    size: usize,
    start: Start,
    rng: &mut Rng,
) -> Vec<usize> {
    let mut group = Vec::with_capacity(size);
    while group.len() < size {
        let pick = if group.is_empty() {
            match start {
                Start::Random => random_free(free, rng),
                Start::Densest => {
                    densest_free(free, size - 1, |a, b| costs.dp(a, b) + costs.dp(b, a))
                }
            }
        } else {
            (0..free.len())
                .filter(|&v| free[v])
                .min_by(|&a, &b| affinity(costs, &group, a).total_cmp(&affinity(costs, &group, b)))
        };
        // Callers ask for at most as many devices as are free.
        let Some(v) = pick else { break };
        free[v] = false;
        group.push(v);
    }
    group
}

fn affinity(costs: &PairCosts, group: &[usize], v: usize) -> f64 {
    group.iter().map(|&u| costs.dp(u, v) + costs.dp(v, u)).sum()
}

fn random_free(free: &[bool], rng: &mut Rng) -> Option<usize> {
    let count = free.iter().filter(|&&f| f).count();
    if count == 0 {
        return None;
    }
    free.iter()
        .enumerate()
        .filter(|&(_, &f)| f)
        .nth(rng.below(count))
        .map(|(v, _)| v)
}

/// The free device whose `count` cheapest links (by `cost`) to other free devices sum lowest.
fn densest_free(free: &[bool], count: usize, cost: impl Fn(usize, usize) -> f64) -> Option<usize> {
    let mut links = Vec::new();
    let density = |d: usize, links: &mut Vec<f64>| {
        links.clear();
        links.extend(
            (0..free.len())
                .filter(|&o| o != d && free[o])
                .map(|o| cost(d, o)),
        );
        links.sort_unstable_by(f64::total_cmp);
        links.iter().take(count).sum::<f64>()
    };
    let mut best: Option<(f64, usize)> = None;
    for d in (0..free.len()).filter(|&d| free[d]) {
        let value = density(d, &mut links);
        if best.is_none_or(|(b, _)| value < b) {
            best = Some((value, d));
        }
    }
    best.map(|(_, d)| d)
}

/// Greedy chains for equation (2): `d_dp` pipelines, each started at a free device and extended
/// by the free device its last stage reaches fastest. Returns the stages (`stages[s][i]` = stage
/// s of chain i).
pub(crate) fn pp_chains(
    costs: &PairCosts,
    d_pp: usize,
    d_dp: usize,
    start: Start,
    rng: &mut Rng,
) -> Vec<Vec<usize>> {
    let mut free = vec![true; costs.len()];
    let sparsity: Vec<f64> = (0..costs.len())
        .map(|d| {
            let mut links: Vec<f64> = (0..costs.len())
                .filter(|&o| o != d)
                .map(|o| costs.pp(d, o))
                .collect();
            links.sort_unstable_by(f64::total_cmp);
            links.iter().take(d_pp - 1).sum()
        })
        .collect();
    let mut stages = vec![Vec::with_capacity(d_dp); d_pp];
    for _ in 0..d_dp {
        let first = match start {
            Start::Random => random_free(&free, rng),
            Start::Densest => densest_free(&free, d_pp - 1, |a, b| costs.pp(a, b)),
        };
        let Some(mut last) = first else {
            break;
        };
        free[last] = false;
        stages[0].push(last);
        for stage in stages.iter_mut().skip(1) {
            // On a tie, the sparsest device: a dense one is worth more to a chain of its own.
            let Some(next) = (0..free.len()).filter(|&v| free[v]).min_by(|&a, &b| {
                costs
                    .pp(last, a)
                    .total_cmp(&costs.pp(last, b))
                    .then(sparsity[b].total_cmp(&sparsity[a]))
            }) else {
                break;
            };
            free[next] = false;
            stage.push(next);
            last = next;
        }
    }
    stages
}

/// A uniformly random layout, as the paper's "without scheduler" baseline draws it.
pub(crate) fn random_stages(n: usize, d_pp: usize, d_dp: usize, rng: &mut Rng) -> Vec<Vec<usize>> {
    let mut devices: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut devices);
    devices[..d_pp * d_dp]
        .chunks(d_dp)
        .map(<[usize]>::to_vec)
        .collect()
}

/// The devices a layout leaves out.
pub(crate) fn bench_of(n: usize, stages: &[Vec<usize>]) -> Vec<usize> {
    let mut used = vec![false; n];
    for &d in stages.iter().flatten() {
        used[d] = true;
    }
    (0..n).filter(|&d| !used[d]).collect()
}
