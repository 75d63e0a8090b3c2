//! The open-loop travelling-salesman path over the coarsened graph (equation (3)): the order of the
//! pipeline stages that minimizes the sum of the stage-boundary costs. Unlike a tour, the path does
//! not return to its start and may start anywhere; weights may be asymmetric.

/// Exact (Held–Karp dynamic programming, O(2^m · m²)) up to this many stages; about 1.4 M steps,
/// well under a millisecond. Pipelines deeper than this use the heuristic below.
const EXACT_STAGES: usize = 12;

/// The cheapest Hamiltonian path through `m` nodes with weights `w[a · m + b]` for a → b, as the
/// node order.
pub(crate) fn open_path(m: usize, w: &[f64]) -> Vec<usize> {
    debug_assert_eq!(w.len(), m * m);
    if m <= 2 {
        let mut order: Vec<usize> = (0..m).collect();
        if m == 2 && w[1] > w[2] {
            order.reverse();
        }
        return order;
    }
    if m <= EXACT_STAGES {
        held_karp(m, w)
    } else {
        nearest_neighbour_or_opt(m, w)
    }
}

/// The cost of a path.
pub(crate) fn path_cost(m: usize, w: &[f64], order: &[usize]) -> f64 {
    order.windows(2).map(|e| w[e[0] * m + e[1]]).sum()
}

fn held_karp(m: usize, w: &[f64]) -> Vec<usize> {
    let full = (1usize << m) - 1;
    // best[mask · m + last]: cheapest path visiting exactly `mask`, ending at `last`.
    let mut best = vec![f64::INFINITY; (full + 1) * m];
    let mut parent = vec![usize::MAX; (full + 1) * m];
    for v in 0..m {
        best[(1 << v) * m + v] = 0.0;
    }
    for mask in 1..=full {
        for last in (0..m).filter(|&v| mask & (1 << v) != 0) {
            let here = best[mask * m + last];
            if here == f64::INFINITY {
                continue;
            }
            for next in (0..m).filter(|&v| mask & (1 << v) == 0) {
                let to = (mask | (1 << next)) * m + next;
                let cost = here + w[last * m + next];
                if cost < best[to] {
                    best[to] = cost;
                    parent[to] = last;
                }
            }
        }
    }
    let mut last = (0..m)
        .min_by(|&a, &b| best[full * m + a].total_cmp(&best[full * m + b]))
        .unwrap_or(0);
    let mut order = Vec::with_capacity(m);
    let mut mask = full;
    while mask != 0 {
        order.push(last);
        let previous = parent[mask * m + last];
        mask &= !(1 << last);
        last = previous;
    }
    order.reverse();
    order
}

/// Nearest neighbour from every start, each improved by or-opt (move a run of 1–3 stages elsewhere,
/// in either direction) until no move helps; the best path wins.
fn nearest_neighbour_or_opt(m: usize, w: &[f64]) -> Vec<usize> {
    let mut best: Option<(f64, Vec<usize>)> = None;
    for start in 0..m {
        let mut order = vec![start];
        let mut used = vec![false; m];
        used[start] = true;
        while order.len() < m {
            let last = order[order.len() - 1];
            let next = (0..m)
                .filter(|&v| !used[v])
                .min_by(|&a, &b| w[last * m + a].total_cmp(&w[last * m + b]))
                .unwrap_or(last);
            used[next] = true;
            order.push(next);
        }
        or_opt(m, w, &mut order);
        let cost = path_cost(m, w, &order);
        if best.as_ref().is_none_or(|(b, _)| cost < *b) {
            best = Some((cost, order));
        }
    }
    best.map(|(_, order)| order).unwrap_or_default()
}

fn or_opt(m: usize, w: &[f64], order: &mut Vec<usize>) {
    let mut current = path_cost(m, w, order);
    let mut improved = true;
    while improved {
        improved = false;
        for len in 1..=3.min(m - 1) {
            for from in 0..=m - len {
                for to in 0..=m - len {
                    if to == from {
                        continue;
                    }
                    for reverse in [false, true] {
                        let mut candidate = order.clone();
                        let mut run: Vec<usize> = candidate.drain(from..from + len).collect();
                        if reverse {
                            run.reverse();
                        }
                        let at = to.min(candidate.len());
                        candidate.splice(at..at, run);
                        let cost = path_cost(m, w, &candidate);
                        if cost < current - 1e-12 {
                            *order = candidate;
                            current = cost;
                            improved = true;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gang::rng::Rng;

    fn brute_force(m: usize, w: &[f64]) -> f64 {
        fn go(m: usize, w: &[f64], order: &mut Vec<usize>, used: &mut Vec<bool>, best: &mut f64) {
            if order.len() == m {
                *best = best.min(path_cost(m, w, order));
                return;
            }
            for v in 0..m {
                if !used[v] {
                    used[v] = true;
                    order.push(v);
                    go(m, w, order, used, best);
                    order.pop();
                    used[v] = false;
                }
            }
        }
        let mut best = f64::INFINITY;
        go(m, w, &mut Vec::new(), &mut vec![false; m], &mut best);
        best
    }

    #[test]
    fn exact_and_heuristic_paths_match_brute_force_on_small_graphs() {
        let mut rng = Rng::new(3);
        for m in 1..=7 {
            for _ in 0..20 {
                let w: Vec<f64> = (0..m * m).map(|_| rng.unit() * 10.0).collect();
                let best = brute_force(m, &w);
                let exact = open_path(m, &w);
                assert!((path_cost(m, &w, &exact) - best).abs() < 1e-9);
                let mut sorted = exact.clone();
                sorted.sort_unstable();
                assert_eq!(sorted, (0..m).collect::<Vec<_>>());
                if m >= 2 {
                    let heuristic = nearest_neighbour_or_opt(m, &w);
                    assert!(path_cost(m, &w, &heuristic) >= best - 1e-9);
                }
            }
        }
    }

    #[test]
    fn heuristic_finds_a_line() {
        // Points on a line, shuffled: the optimal open path walks the line end to end.
        let m = 16;
        let mut pos: Vec<f64> = (0..m).map(|i| i as f64).collect();
        Rng::new(1).shuffle(&mut pos);
        let w: Vec<f64> = (0..m * m)
            .map(|e| (pos[e / m] - pos[e % m]).abs())
            .collect();
        let order = open_path(m, &w);
        assert_eq!(path_cost(m, &w, &order), (m - 1) as f64);
    }
}
