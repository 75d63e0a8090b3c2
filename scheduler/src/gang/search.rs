//! Local search directly on the layout grid (stage × pipeline position), by simulated annealing.
//!
//! Working on the layout rather than on the partition makes a move cheap: swapping two devices
//! changes at most two groups' data-parallel sums (updated incrementally in O(D_DP)) and at most
//! four stage boundaries (each O(1) from a cache of its two slowest pairs, or one scan), about a
//! third of a microsecond per move for 8 × 8. The exact coarsening step ([`super::realize`]) then
//! re-derives the optimal order and matchings of whatever partition the walk ends on, which can
//! only lower the cost.
//!
//! Both halves of the objective are maxima (slowest member of the slowest group, slowest pair of a
//! boundary), so most single moves leave the cost unchanged: a boundary only gets cheaper once
//! *every* pair crossing it is fast, which no single swap achieves. The walk is therefore guided by
//! the cost plus small multiples of smooth stand-ins for those maxima (the mean member sum over
//! all groups; a power mean of every boundary's pairs), which reward each step towards a cheaper
//! bottleneck. The best layout is chosen by the true cost, the guide only breaks its ties.
//!
//! Besides uniform random swaps, a third of the moves are targeted: a device and one of its
//! nearest neighbours ([`PairCosts::successors`] and the like), moved next to it in its pipeline or
//! into its group. Among the n² possible swaps these few are the ones likely to help, and on a
//! topology of fast islands they are what lines up a boundary pair by pair.

use super::{costs::PairCosts, rng::Rng};

/// Weight of the mean member sum (over all devices) in the guiding objective.
const GUIDE_DP: f64 = 0.1;
/// Weight of the boundaries' power means (see [`power`]) in the guiding objective.
const GUIDE_PP: f64 = 0.2;
/// Costs closer than this (seconds) are equal: incremental sums differ from exact ones by
/// rounding, and a tie must not be broken by rounding noise.
const TIE: f64 = 1e-9;

pub(crate) struct Search<'a> {
    costs: &'a PairCosts,
    d_pp: usize,
    d_dp: usize,
    /// `grid[s · d_dp + i]`: the device at stage s, pipeline i.
    grid: Vec<usize>,
    /// Candidate devices the layout does not use.
    bench: Vec<usize>,
    /// Per device: its cell, or `cells + b` for bench slot b.
    loc: Vec<usize>,
    /// Per cell: the device's sum over its group (equation (1)'s inner sum).
    row: Vec<f64>,
    /// Per stage: the largest and the total of its rows.
    stage: Vec<Summary>,
    /// Per boundary e and position i: the pair cost `grid[e][i] → grid[e + 1][i]`.
    pair: Vec<f64>,
    /// Per boundary s → s + 1: its two slowest pairs and its power mean.
    edge: Vec<EdgeCache>,
    /// Σ over boundaries of the slowest pair: the pipeline half of the cost.
    edge_max_sum: f64,
    /// Σ over boundaries of the power mean: the pipeline half of the guide.
    edge_soft_sum: f64,
    /// Σ over all cells of `row`: the data-parallel half of the guide.
    row_sum: f64,
}

/// The maximum (what the cost reads) and the sum (what the guide reads) of some terms.
#[derive(Clone, Copy, Default)]
struct Summary {
    max: f64,
    sum: f64,
}

impl Summary {
    fn add(self, value: f64) -> Self {
        Self {
            max: self.max.max(value),
            sum: self.sum + value,
        }
    }
}

/// A boundary's slowest pair, the runner-up (so that the new maximum after changing one or two
/// pairs usually needs no scan) and the power mean of all pairs.
#[derive(Clone, Copy, Default)]
struct EdgeCache {
    max: f64,
    max_at: usize,
    second: f64,
    second_at: usize,
    /// Σ cost⁴ over the boundary's pairs.
    power_sum: f64,
    /// The power mean `(power_sum / D_DP)^(1/4)`: the guide's smooth stand-in for `max`.
    soft: f64,
}

/// The guide's stand-in for a boundary's maximum is the power mean of order 4 of its pairs. A
/// plain mean rewards every fast pair equally, so the walk can settle with fast pairs spread over
/// all boundaries and none of them complete; a power mean rewards the last slow pairs of a
/// boundary most, pulling the walk towards finishing boundaries, which is what lowers the true
/// cost. (Order 4 keeps the root two square roots.)
fn power(cost: f64) -> f64 {
    let square = cost * cost;
    square * square
}

/// A tentative move's effect: new summaries for up to two stages and four boundaries (for a
/// boundary, `sum` holds its new power mean).
#[derive(Clone, Copy)]
struct Delta {
    stages: [(usize, Summary); 2],
    stage_count: usize,
    edges: [(usize, Summary); 4],
    edge_count: usize,
}

impl Delta {
    fn new() -> Self {
        Self {
            stages: [(0, Summary::default()); 2],
            stage_count: 0,
            edges: [(0, Summary::default()); 4],
            edge_count: 0,
        }
    }
}

impl<'a> Search<'a> {
    pub(crate) fn new(costs: &'a PairCosts, stages: &[Vec<usize>], bench: Vec<usize>) -> Self {
        let d_pp = stages.len();
        let d_dp = stages.first().map_or(0, Vec::len);
        let grid = stages.concat();
        let mut loc = vec![usize::MAX; costs.len()];
        for (cell, &d) in grid.iter().chain(&bench).enumerate() {
            loc[d] = cell;
        }
        let mut search = Self {
            costs,
            d_pp,
            d_dp,
            grid,
            bench,
            loc,
            row: vec![0.0; d_pp * d_dp],
            stage: vec![Summary::default(); d_pp],
            pair: vec![0.0; d_pp.saturating_sub(1) * d_dp],
            edge: vec![EdgeCache::default(); d_pp.saturating_sub(1)],
            edge_max_sum: 0.0,
            edge_soft_sum: 0.0,
            row_sum: 0.0,
        };
        search.recompute();
        search
    }

    fn recompute(&mut self) {
        for s in 0..self.d_pp {
            let group = &self.grid[s * self.d_dp..(s + 1) * self.d_dp];
            let mut summary = Summary::default();
            for (i, &d) in group.iter().enumerate() {
                let sum: f64 = group.iter().map(|&peer| self.costs.dp(d, peer)).sum();
                self.row[s * self.d_dp + i] = sum;
                summary = summary.add(sum);
            }
            self.stage[s] = summary;
        }
        for e in 0..self.edge.len() {
            self.refresh_edge(e);
        }
        self.row_sum = self.stage.iter().map(|s| s.sum).sum();
        self.edge_max_sum = self.edge.iter().map(|e| e.max).sum();
        self.edge_soft_sum = self.edge.iter().map(|e| e.soft).sum();
    }

    pub(crate) fn stages(&self) -> Vec<Vec<usize>> {
        self.grid
            .chunks(self.d_dp.max(1))
            .map(<[usize]>::to_vec)
            .collect()
    }

    /// The true cost, equation (4).
    pub(crate) fn total(&self) -> f64 {
        self.stage.iter().map(|s| s.max).fold(0.0, f64::max) + self.edge_max_sum
    }

    fn guide(&self) -> f64 {
        self.guide_from(self.total(), self.row_sum, self.edge_soft_sum)
    }

    fn guide_from(&self, total: f64, row_sum: f64, edge_soft_sum: f64) -> f64 {
        let d_dp = self.d_dp as f64;
        total + GUIDE_DP * row_sum / (self.d_pp as f64 * d_dp) + GUIDE_PP * edge_soft_sum
    }

    /// The guiding cost after `delta`.
    fn guide_after(&self, delta: &Delta) -> f64 {
        let mut row_sum = self.row_sum;
        let changed = &delta.stages[..delta.stage_count];
        let (a, b) = (
            changed.first().map_or(usize::MAX, |c| c.0),
            changed.get(1).map_or(usize::MAX, |c| c.0),
        );
        let mut dp_max = self
            .stage
            .iter()
            .enumerate()
            .filter(|&(s, _)| s != a && s != b)
            .fold(0.0, |m: f64, (_, summary)| m.max(summary.max));
        for &(s, new) in changed {
            dp_max = dp_max.max(new.max);
            row_sum += new.sum - self.stage[s].sum;
        }
        let (mut edge_max_sum, mut edge_soft_sum) = (self.edge_max_sum, self.edge_soft_sum);
        for &(e, new) in &delta.edges[..delta.edge_count] {
            edge_max_sum += new.max - self.edge[e].max;
            edge_soft_sum += new.sum - self.edge[e].soft;
        }
        self.guide_from(dp_max + edge_max_sum, row_sum, edge_soft_sum)
    }

    /// Stage `s`'s summary if the device at `cell` changed from `old` to `new`.
    fn stage_after(&self, s: usize, cell: usize, old: usize, new: usize) -> Summary {
        let mut summary = Summary::default();
        let mut own = 0.0;
        for other in s * self.d_dp..(s + 1) * self.d_dp {
            if other == cell {
                continue;
            }
            let d = self.grid[other];
            summary = summary.add(self.row[other] - self.costs.dp(d, old) + self.costs.dp(d, new));
            own += self.costs.dp(new, d);
        }
        summary.add(own)
    }

    fn commit_stage(&mut self, s: usize, cell: usize, old: usize, new: usize) {
        let mut summary = Summary::default();
        let mut own = 0.0;
        for other in s * self.d_dp..(s + 1) * self.d_dp {
            if other == cell {
                continue;
            }
            let d = self.grid[other];
            self.row[other] += self.costs.dp(d, new) - self.costs.dp(d, old);
            summary = summary.add(self.row[other]);
            own += self.costs.dp(new, d);
        }
        self.grid[cell] = new;
        self.row[cell] = own;
        let summary = summary.add(own);
        self.row_sum += summary.sum - self.stage[s].sum;
        self.stage[s] = summary;
    }

    /// Boundary `e`'s summary with the cell substitutions `subs` applied. Only the positions a
    /// substitution touches are priced anew; the maximum of the others comes from the cache.
    fn edge_with(&self, e: usize, subs: &[(usize, usize)]) -> Summary {
        let k = self.d_dp;
        let (from_base, to_base) = (e * k, (e + 1) * k);
        let at = |cell: usize| {
            subs.iter()
                .find(|&&(c, _)| c == cell)
                .map_or(self.grid[cell], |&(_, d)| d)
        };
        let mut changed = [(usize::MAX, 0.0); 2];
        let mut count = 0;
        for &(cell, _) in subs {
            let pos = if (from_base..to_base).contains(&cell) {
                cell - from_base
            } else if (to_base..to_base + k).contains(&cell) {
                cell - to_base
            } else {
                continue;
            };
            if changed[..count].iter().all(|c| c.0 != pos) {
                changed[count] = (pos, self.costs.pp(at(from_base + pos), at(to_base + pos)));
                count += 1;
            }
        }
        let cache = &self.edge[e];
        let changed = &changed[..count];
        let power_sum = changed.iter().fold(cache.power_sum, |sum, &(pos, cost)| {
            sum + power(cost) - power(self.pair[from_base + pos])
        });
        let hit = |pos: usize| changed.iter().any(|c| c.0 == pos);
        let others = if !hit(cache.max_at) {
            cache.max
        } else if !hit(cache.second_at) {
            cache.second
        } else {
            (0..k)
                .filter(|&i| !hit(i))
                .map(|i| self.pair[from_base + i])
                .fold(0.0, f64::max)
        };
        Summary {
            max: changed.iter().fold(others, |max, &(_, cost)| max.max(cost)),
            sum: self.soft(power_sum),
        }
    }

    fn soft(&self, power_sum: f64) -> f64 {
        (power_sum.max(0.0) / self.d_dp as f64).sqrt().sqrt()
    }

    /// Recomputes boundary `e`'s pair costs and cache from the grid, keeping the totals.
    fn refresh_edge(&mut self, e: usize) {
        let k = self.d_dp;
        let mut cache = EdgeCache::default();
        for i in 0..k {
            let cost = self
                .costs
                .pp(self.grid[e * k + i], self.grid[(e + 1) * k + i]);
            self.pair[e * k + i] = cost;
            cache.power_sum += power(cost);
            if i == 0 || cost > cache.max {
                (cache.second, cache.second_at) = (cache.max, cache.max_at);
                (cache.max, cache.max_at) = (cost, i);
            } else if i == 1 || cost > cache.second {
                (cache.second, cache.second_at) = (cost, i);
            }
        }
        if k == 1 {
            cache.second_at = usize::MAX;
        }
        cache.soft = self.soft(cache.power_sum);
        self.edge_max_sum += cache.max - self.edge[e].max;
        self.edge_soft_sum += cache.soft - self.edge[e].soft;
        self.edge[e] = cache;
    }

    /// Adds to `delta` the boundaries touching stages `a` and `b` under `subs`.
    fn edges_after(&self, a: usize, b: usize, subs: &[(usize, usize)], delta: &mut Delta) {
        for e in [a.wrapping_sub(1), a, b.wrapping_sub(1), b] {
            let seen = delta.edges[..delta.edge_count].iter().any(|c| c.0 == e);
            if e < self.edge.len() && !seen {
                delta.edges[delta.edge_count] = (e, self.edge_with(e, subs));
                delta.edge_count += 1;
            }
        }
    }

    /// After the grid changed, refreshes the boundaries `delta` touched.
    fn set_edges(&mut self, delta: &Delta) {
        for &(e, _) in &delta.edges[..delta.edge_count] {
            self.refresh_edge(e);
        }
    }

    /// Swapping cells `p` and `q`, without applying it.
    fn try_swap(&self, p: usize, q: usize) -> Delta {
        let (sp, sq) = (p / self.d_dp, q / self.d_dp);
        let (x, y) = (self.grid[p], self.grid[q]);
        let mut delta = Delta::new();
        // Within one stage the group is unchanged; only the pairing moves.
        if sp != sq {
            delta.stages = [
                (sp, self.stage_after(sp, p, x, y)),
                (sq, self.stage_after(sq, q, y, x)),
            ];
            delta.stage_count = 2;
        }
        self.edges_after(sp, sq, &[(p, y), (q, x)], &mut delta);
        delta
    }

    fn commit_swap(&mut self, p: usize, q: usize, delta: &Delta) {
        let (sp, sq) = (p / self.d_dp, q / self.d_dp);
        let (x, y) = (self.grid[p], self.grid[q]);
        if sp == sq {
            self.grid.swap(p, q);
            self.row.swap(p, q);
        } else {
            self.commit_stage(sp, p, x, y);
            self.commit_stage(sq, q, y, x);
        }
        (self.loc[x], self.loc[y]) = (q, p);
        self.set_edges(delta);
    }

    /// Replacing the device at cell `p` by bench device `b`, without applying it.
    fn try_bench(&self, p: usize, b: usize) -> Delta {
        let sp = p / self.d_dp;
        let (x, y) = (self.grid[p], self.bench[b]);
        let mut delta = Delta::new();
        delta.stages[0] = (sp, self.stage_after(sp, p, x, y));
        delta.stage_count = 1;
        self.edges_after(sp, sp, &[(p, y)], &mut delta);
        delta
    }

    fn commit_bench(&mut self, p: usize, b: usize, delta: &Delta) {
        let sp = p / self.d_dp;
        let (x, y) = (self.grid[p], self.bench[b]);
        self.commit_stage(sp, p, x, y);
        self.bench[b] = x;
        (self.loc[x], self.loc[y]) = (self.grid.len() + b, p);
        self.set_edges(delta);
    }

    /// Reverses the stage order between `s` and `t` inclusive (a 2-opt move on the pipeline order)
    /// and recomputes the boundaries it touches.
    fn reverse(&mut self, s: usize, t: usize) {
        let k = self.d_dp;
        let (mut a, mut b) = (s, t);
        while a < b {
            for i in 0..k {
                let (p, q) = (a * k + i, b * k + i);
                self.grid.swap(p, q);
                self.row.swap(p, q);
                (self.loc[self.grid[p]], self.loc[self.grid[q]]) = (p, q);
            }
            self.stage.swap(a, b);
            a += 1;
            b -= 1;
        }
        for e in s.saturating_sub(1)..(t + 1).min(self.edge.len()) {
            self.refresh_edge(e);
        }
    }

    /// A targeted move: a random device `x` and one of its nearest neighbours `y`, to be moved into
    /// the cell returned: the cell after `x` in its pipeline (y a fast successor), the cell before
    /// (y a fast predecessor), or another cell of x's stage (y a cheap group mate). Random swaps
    /// rarely pick such pairs among the n² possible; these are the moves that line up pairs across
    /// a boundary one at a time, or gather a group.
    fn targeted(&self, rng: &mut Rng) -> Option<(usize, usize)> {
        let k = self.d_dp;
        let p = rng.below(self.grid.len());
        let (s, i, x) = (p / k, p % k, self.grid[p]);
        let pick = |list: &[usize], rng: &mut Rng| list.get(rng.below(list.len().max(1))).copied();
        match rng.below(3) {
            0 if s + 1 < self.d_pp => Some(((s + 1) * k + i, pick(self.costs.successors(x), rng)?)),
            1 if s > 0 => Some(((s - 1) * k + i, pick(self.costs.predecessors(x), rng)?)),
            _ if k > 1 => {
                let other = (i + 1 + rng.below(k - 1)) % k;
                Some((s * k + other, pick(self.costs.mates(x), rng)?))
            }
            _ => None,
        }
    }

    /// Mean increase of the guiding cost over random swaps that make it worse: the scale of the
    /// annealing temperature, so one schedule fits topologies in microseconds or in minutes.
    pub(crate) fn typical_uphill(&mut self, rng: &mut Rng, samples: usize) -> f64 {
        let cells = self.grid.len();
        if cells < 2 {
            return 0.0;
        }
        let current = self.guide();
        let (mut sum, mut count) = (0.0, 0usize);
        for _ in 0..samples {
            let p = rng.below(cells);
            let q = (p + 1 + rng.below(cells - 1)) % cells;
            let guide = self.guide_after(&self.try_swap(p, q));
            if guide > current {
                sum += guide - current;
                count += 1;
            }
        }
        if count == 0 { 0.0 } else { sum / count as f64 }
    }

    /// Simulated annealing for `moves` moves, temperature falling geometrically from `t_start` to
    /// `t_end`. Returns the stages of the best state seen: lowest true cost, ties broken by the
    /// guiding cost, so that progress towards the next improvement survives into the next run even
    /// while the true cost stands still. The search is left at its final state.
    pub(crate) fn anneal(
        &mut self,
        rng: &mut Rng,
        moves: usize,
        t_start: f64,
        t_end: f64,
    ) -> Vec<Vec<usize>> {
        let mut guide = self.guide();
        let mut best = (self.total(), guide);
        let mut best_grid = self.grid.clone();
        let cells = self.grid.len();
        if cells < 2 || moves == 0 {
            return self.stages();
        }
        let cooling = (t_end / t_start).powf(1.0 / moves as f64);
        let mut temperature = t_start;
        let accept = |rng: &mut Rng, delta: f64, temperature: f64| {
            delta <= 0.0 || (temperature > 0.0 && rng.unit() < (-delta / temperature).exp())
        };
        for _ in 0..moves {
            temperature *= cooling;
            let kind = rng.below(20);
            if kind == 0 && self.d_pp >= 3 {
                // 2-opt on the stage order.
                let s = rng.below(self.d_pp - 1);
                let t = s + 1 + rng.below(self.d_pp - 1 - s);
                self.reverse(s, t);
                let new_guide = self.guide();
                if accept(rng, new_guide - guide, temperature) {
                    guide = new_guide;
                } else {
                    self.reverse(s, t);
                    continue;
                }
            } else if kind <= 2 && !self.bench.is_empty() {
                let p = rng.below(cells);
                let b = rng.below(self.bench.len());
                let delta = self.try_bench(p, b);
                let new_guide = self.guide_after(&delta);
                if !accept(rng, new_guide - guide, temperature) {
                    continue;
                }
                self.commit_bench(p, b, &delta);
                guide = new_guide;
            } else if kind <= 8 {
                let Some((target, y)) = self.targeted(rng) else {
                    continue;
                };
                let q = self.loc[y];
                if q == target {
                    continue;
                }
                let delta = if q < cells {
                    self.try_swap(target, q)
                } else {
                    self.try_bench(target, q - cells)
                };
                let new_guide = self.guide_after(&delta);
                if !accept(rng, new_guide - guide, temperature) {
                    continue;
                }
                if q < cells {
                    self.commit_swap(target, q, &delta);
                } else {
                    self.commit_bench(target, q - cells, &delta);
                }
                guide = new_guide;
            } else {
                let p = rng.below(cells);
                let q = (p + 1 + rng.below(cells - 1)) % cells;
                let delta = self.try_swap(p, q);
                let new_guide = self.guide_after(&delta);
                if !accept(rng, new_guide - guide, temperature) {
                    continue;
                }
                self.commit_swap(p, q, &delta);
                guide = new_guide;
            }
            let total = self.total();
            if total < best.0 - TIE || (total <= best.0 + TIE && guide < best.1 - TIE) {
                best = (total.min(best.0), guide);
                best_grid.copy_from_slice(&self.grid);
            }
        }
        // Incremental row updates drift by rounding; start the next run from exact sums.
        self.recompute();
        best_grid.chunks(self.d_dp).map(<[usize]>::to_vec).collect()
    }
}
