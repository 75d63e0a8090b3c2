//! Bottleneck assignment: the perfect matching between two stages whose slowest pair is fastest.
//!
//! Equation (2) of the paper prices a stage boundary as `min_M max_{(d,d') ∈ M}` of the pair cost,
//! a *bottleneck* objective: the boundary waits for its slowest pair, so the other pairs' costs do
//! not matter. The Hungarian algorithm minimizes the *sum* and can return a matching with a worse
//! maximum, so it is the wrong tool here (the reference implementation wraps it in a loop that
//! forbids the largest remaining edge and re-solves, O(k²) Hungarian runs). The textbook method is
//! cheaper and exact: the optimal bottleneck is one of the k² pair costs, and "is there a perfect
//! matching using only pairs ≤ t" is monotone in t, so binary search over the sorted costs with an
//! augmenting-path (Kuhn) feasibility test finds it in O(k³ log k).
//!
//! Many matchings usually share the optimal bottleneck. Among them we take the one with the least
//! total cost (Hungarian algorithm over the pairs within the bottleneck, O(k³)): the boundary's
//! cost is the same, the other pairs finish earlier, and a local search that later swaps devices
//! starts from pairs that are already as fast as they can be, so improving the bottleneck needs
//! fewer moves.

/// The bottleneck value and the assignment `row → column` achieving it, for a `k × k` row-major
/// `cost` matrix. `k = 0` gives `(0, [])`.
pub(crate) fn bottleneck_assignment(k: usize, cost: &[f64]) -> (f64, Vec<usize>) {
    debug_assert_eq!(cost.len(), k * k);
    if k == 0 {
        return (0.0, Vec::new());
    }
    // No matching can beat the cheapest way out of its worst row or into its worst column.
    let row_bound = (0..k)
        .map(|i| {
            cost[i * k..(i + 1) * k]
                .iter()
                .copied()
                .fold(f64::INFINITY, f64::min)
        })
        .fold(0.0, f64::max);
    let col_bound = (0..k)
        .map(|j| {
            (0..k)
                .map(|i| cost[i * k + j])
                .fold(f64::INFINITY, f64::min)
        })
        .fold(0.0, f64::max);
    let lower = row_bound.max(col_bound);

    let mut kuhn = Kuhn::new(k);
    if kuhn.perfect(cost, lower).is_some() {
        return (lower, min_sum_within(k, cost, lower));
    }
    let mut values: Vec<f64> = cost.iter().copied().filter(|&c| c > lower).collect();
    values.sort_unstable_by(f64::total_cmp);
    values.dedup();
    // Invariant: the complete graph (threshold = the largest cost) always has a perfect matching,
    // and `lower` did not, so the answer is in `values`.
    let (mut lo, mut hi) = (0, values.len() - 1);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if kuhn.perfect(cost, values[mid]).is_some() {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let threshold = values[lo];
    (threshold, min_sum_within(k, cost, threshold))
}

/// The least-sum perfect matching among those using only pairs ≤ `threshold` (one must exist).
/// Pairs above the threshold are priced so high that any matching using one costs more than every
/// matching that does not.
fn min_sum_within(k: usize, cost: &[f64], threshold: f64) -> Vec<usize> {
    let forbidden = (threshold.abs() + 1.0) * (k as f64 + 1.0);
    let masked: Vec<f64> = cost
        .iter()
        .map(|&c| if c <= threshold { c } else { forbidden })
        .collect();
    hungarian(k, &masked)
}

/// Minimum-sum assignment `row → column` of a `k × k` matrix: the Hungarian method with row and
/// column potentials (Kuhn 1955, Munkres 1957), one shortest augmenting path per row, O(k³).
fn hungarian(k: usize, cost: &[f64]) -> Vec<usize> {
    // Index 0 is a virtual column that roots each augmenting path; real rows and columns are 1..=k.
    let mut row_potential = vec![0.0; k + 1];
    let mut col_potential = vec![0.0; k + 1];
    let mut row_of_col = vec![0usize; k + 1];
    let mut previous_col = vec![0usize; k + 1];
    for row in 1..=k {
        row_of_col[0] = row;
        let mut col = 0;
        let mut slack = vec![f64::INFINITY; k + 1];
        let mut done = vec![false; k + 1];
        loop {
            done[col] = true;
            let from_row = row_of_col[col];
            let (mut step, mut next_col) = (f64::INFINITY, 0);
            for j in (1..=k).filter(|&j| !done[j]) {
                let reduced =
                    cost[(from_row - 1) * k + (j - 1)] - row_potential[from_row] - col_potential[j];
                if reduced < slack[j] {
                    slack[j] = reduced;
                    previous_col[j] = col;
                }
                if slack[j] < step {
                    step = slack[j];
                    next_col = j;
                }
            }
            for j in 0..=k {
                if done[j] {
                    row_potential[row_of_col[j]] += step;
                    col_potential[j] -= step;
                } else {
                    slack[j] -= step;
                }
            }
            col = next_col;
            if row_of_col[col] == 0 {
                break;
            }
        }
        // Flip the augmenting path back to the root.
        while col != 0 {
            let prev = previous_col[col];
            row_of_col[col] = row_of_col[prev];
            col = prev;
        }
    }
    let mut col_of_row = vec![0; k];
    for col in 1..=k {
        col_of_row[row_of_col[col] - 1] = col - 1;
    }
    col_of_row
}

/// Kuhn's augmenting-path bipartite matching over the pairs with cost ≤ a threshold.
struct Kuhn {
    k: usize,
    row_of_col: Vec<usize>,
    seen: Vec<bool>,
}

const FREE: usize = usize::MAX;

impl Kuhn {
    fn new(k: usize) -> Self {
        Self {
            k,
            row_of_col: vec![FREE; k],
            seen: vec![false; k],
        }
    }

    fn perfect(&mut self, cost: &[f64], threshold: f64) -> Option<Vec<usize>> {
        self.row_of_col.fill(FREE);
        for row in 0..self.k {
            self.seen.fill(false);
            if !self.augment(cost, threshold, row) {
                return None;
            }
        }
        let mut col_of_row = vec![0; self.k];
        for (col, &row) in self.row_of_col.iter().enumerate() {
            col_of_row[row] = col;
        }
        Some(col_of_row)
    }

    fn augment(&mut self, cost: &[f64], threshold: f64, row: usize) -> bool {
        for col in 0..self.k {
            if cost[row * self.k + col] > threshold || self.seen[col] {
                continue;
            }
            self.seen[col] = true;
            let owner = self.row_of_col[col];
            if owner == FREE || self.augment(cost, threshold, owner) {
                self.row_of_col[col] = row;
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// All permutations of 0..k, for brute force.
    fn permutations(k: usize) -> Vec<Vec<usize>> {
        if k == 0 {
            return vec![Vec::new()];
        }
        let mut out = Vec::new();
        for p in permutations(k - 1) {
            for at in 0..=p.len() {
                let mut q = p.clone();
                q.insert(at, k - 1);
                out.push(q);
            }
        }
        out
    }

    #[test]
    fn matches_brute_force() {
        let mut rng = super::super::rng::Rng::new(7);
        for k in 1..=6 {
            for _ in 0..40 {
                // Few distinct values, so ties are common.
                let cost: Vec<f64> = (0..k * k).map(|_| rng.below(7) as f64).collect();
                let best = permutations(k)
                    .iter()
                    .map(|p| (0..k).map(|i| cost[i * k + p[i]]).fold(0.0, f64::max))
                    .fold(f64::INFINITY, f64::min);
                let (value, assignment) = bottleneck_assignment(k, &cost);
                assert_eq!(value, best, "k = {k}, cost = {cost:?}");
                let mut cols = assignment.clone();
                cols.sort_unstable();
                assert_eq!(cols, (0..k).collect::<Vec<_>>());
                let achieved = (0..k)
                    .map(|i| cost[i * k + assignment[i]])
                    .fold(0.0, f64::max);
                assert_eq!(achieved, best);
                // Among the bottleneck-optimal matchings, the least total.
                let sum = |p: &[usize]| (0..k).map(|i| cost[i * k + p[i]]).sum::<f64>();
                let least = permutations(k)
                    .iter()
                    .filter(|p| (0..k).all(|i| cost[i * k + p[i]] <= best))
                    .map(|p| sum(p))
                    .fold(f64::INFINITY, f64::min);
                assert_eq!(sum(&assignment), least);
            }
        }
    }

    #[test]
    fn hungarian_minimizes_the_sum() {
        let mut rng = super::super::rng::Rng::new(11);
        for k in 1..=6 {
            for _ in 0..30 {
                let cost: Vec<f64> = (0..k * k).map(|_| rng.unit() * 9.0).collect();
                let sum = |p: &[usize]| (0..k).map(|i| cost[i * k + p[i]]).sum::<f64>();
                let least = permutations(k)
                    .iter()
                    .map(|p| sum(p))
                    .fold(f64::INFINITY, f64::min);
                assert!((sum(&hungarian(k, &cost)) - least).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn bottleneck_is_not_min_sum() {
        // Min-sum picks the diagonal (0 + 10 = 10) whose worst pair is 10; the bottleneck
        // matching takes the anti-diagonal (6 + 6 = 12) whose worst pair is 6.
        let cost = [0.0, 6.0, 6.0, 10.0];
        assert_eq!(bottleneck_assignment(2, &cost), (6.0, vec![1, 0]));
    }
}
