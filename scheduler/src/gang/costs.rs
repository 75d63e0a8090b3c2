//! Per-pair terms of the DT-FM model, computed once per solve so the search reads a table instead
//! of asking the topology (which may be a closure over the network model) millions of times.

use super::GangError;
use crate::cost::dtfm::{Sizes, Topology, dp_pair_s, pp_pair_s};

/// `pp[from · n + to]` = equation (2)'s pair term, `dp[from · n + to]` = equation (1)'s pair term
/// for groups of `d_dp`. The diagonals are 0, so a sum over a whole group equals the paper's sum
/// over `C_j − {d}`.
pub(crate) struct PairCosts {
    n: usize,
    pp: Vec<f64>,
    dp: Vec<f64>,
    /// Per device, its [`NEIGHBOURS`] cheapest successors (`pp(d, ·)`), predecessors
    /// (`pp(·, d)`) and group mates (`dp(d, ·) + dp(·, d)`), flattened `n × width`.
    succ: Vec<usize>,
    pred: Vec<usize>,
    mates: Vec<usize>,
    width: usize,
}

/// Length of the neighbour lists that guide the local search's targeted moves.
pub(crate) const NEIGHBOURS: usize = 8;

impl PairCosts {
    pub(crate) fn new(topology: &Topology, sizes: &Sizes, d_dp: usize) -> Result<Self, GangError> {
        let n = topology.len();
        let mut pp = vec![0.0; n * n];
        let mut dp = vec![0.0; n * n];
        for from in 0..n {
            for to in (0..n).filter(|&to| to != from) {
                let link = topology.link(from, to);
                let (p, d) = (pp_pair_s(link, sizes), dp_pair_s(link, sizes, d_dp));
                if !(p.is_finite() && d.is_finite() && p >= 0.0 && d >= 0.0) {
                    return Err(GangError::InvalidLink { from, to, link });
                }
                pp[from * n + to] = p;
                dp[from * n + to] = d;
            }
        }
        let width = NEIGHBOURS.min(n.saturating_sub(1));
        let nearest = |key: &dyn Fn(usize, usize) -> f64| {
            let mut lists = Vec::with_capacity(n * width);
            for d in 0..n {
                let mut others: Vec<usize> = (0..n).filter(|&o| o != d).collect();
                others.sort_by(|&a, &b| key(d, a).total_cmp(&key(d, b)).then(a.cmp(&b)));
                lists.extend_from_slice(&others[..width]);
            }
            lists
        };
        let succ = nearest(&|d, o| pp[d * n + o]);
        let pred = nearest(&|d, o| pp[o * n + d]);
        let mates = nearest(&|d, o| dp[d * n + o] + dp[o * n + d]);
        Ok(Self {
            n,
            pp,
            dp,
            succ,
            pred,
            mates,
            width,
        })
    }

    /// The devices `d` reaches fastest in a pipeline, best first.
    pub(crate) fn successors(&self, d: usize) -> &[usize] {
        &self.succ[d * self.width..(d + 1) * self.width]
    }

    /// The devices that reach `d` fastest in a pipeline, best first.
    pub(crate) fn predecessors(&self, d: usize) -> &[usize] {
        &self.pred[d * self.width..(d + 1) * self.width]
    }

    /// The devices `d` all-reduces with most cheaply, best first.
    pub(crate) fn mates(&self, d: usize) -> &[usize] {
        &self.mates[d * self.width..(d + 1) * self.width]
    }

    pub(crate) fn len(&self) -> usize {
        self.n
    }

    #[inline]
    pub(crate) fn pp(&self, from: usize, to: usize) -> f64 {
        self.pp[from * self.n + to]
    }

    #[inline]
    pub(crate) fn dp(&self, from: usize, to: usize) -> f64 {
        self.dp[from * self.n + to]
    }

    /// Equation (1) for one group.
    pub(crate) fn group_dp(&self, group: &[usize]) -> f64 {
        group
            .iter()
            .map(|&d| group.iter().map(|&peer| self.dp(d, peer)).sum::<f64>())
            .fold(0.0, f64::max)
    }

    /// The slowest pair of a boundary under the pairing `from[i] → to[i]`.
    pub(crate) fn boundary(&self, from: &[usize], to: &[usize]) -> f64 {
        from.iter()
            .zip(to)
            .map(|(&a, &b)| self.pp(a, b))
            .fold(0.0, f64::max)
    }

    /// Equation (4) for a layout given as stages, computed from the table.
    pub(crate) fn total(&self, stages: &[Vec<usize>]) -> f64 {
        let dp = stages.iter().map(|g| self.group_dp(g)).fold(0.0, f64::max);
        let pp: f64 = stages.windows(2).map(|w| self.boundary(&w[0], &w[1])).sum();
        dp + pp
    }
}
