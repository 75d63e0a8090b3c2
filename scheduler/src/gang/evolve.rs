//! The memetic loop: a small population of partitions, recombined by group-preserving crossover,
//! each offspring improved by local search and then realized exactly.
//!
//! This follows the structure of the paper's scheduler (§3: an evolutionary algorithm over balanced
//! partitions with local-search heuristics; its reference implementation runs a genetic algorithm
//! of 100 individuals and 4,900 offspring, five-point crossover with a size repair, and a
//! cyclic-partitioning local search, each offspring evaluated by the coarsened-graph cost). The
//! parts differ where cheaper or exact tools exist: offspring inherit whole groups (a group is the
//! unit the data-parallel cost is defined on, so keeping groups intact keeps what made a parent
//! good), the local search is annealing on the layout grid ([`super::search`]), every individual's
//! order and pairings are the exact optimum of its partition ([`super::realize`]), and the
//! population starts from constructed partitions rather than random ones, so a small population
//! and a budget of milliseconds suffice.

use super::{
    construct::{Start, bench_of, dp_clusters, grow_group, pp_chains, random_stages},
    costs::PairCosts,
    realize::realize,
    rng::Rng,
    search::Search,
};

/// Share of the budget spent improving the initial population; the rest goes to offspring.
const INITIAL_SHARE: f64 = 0.3;
/// Local-search moves per offspring (fewer when the budget is smaller).
const CHILD_MOVES: usize = 10_000;
/// Random swaps sampled to calibrate each annealing run's temperature.
const CALIBRATION_MOVES: usize = 64;
/// Costs closer than this (seconds) are equal.
const TIE: f64 = 1e-9;
/// Annealing temperatures as multiples of the typical uphill step. Offspring start cooler: they
/// inherit good groups, which a hot start would scatter again.
const T_START: f64 = 0.2;
const T_START_CHILD: f64 = 0.05;
const T_END: f64 = 5e-4;

struct Individual {
    stages: Vec<Vec<usize>>,
    total: f64,
    /// The partition in canonical form, to keep duplicates out of the population.
    key: Vec<Vec<usize>>,
}

impl Individual {
    fn new(costs: &PairCosts, stages: Vec<Vec<usize>>) -> Self {
        let total = costs.total(&stages);
        let mut key: Vec<Vec<usize>> = stages
            .iter()
            .map(|g| {
                let mut g = g.clone();
                g.sort_unstable();
                g
            })
            .collect();
        key.sort_unstable();
        Self { stages, total, key }
    }
}

pub(crate) struct Solver<'a> {
    costs: &'a PairCosts,
    d_pp: usize,
    d_dp: usize,
    rng: Rng,
    /// Move evaluations left.
    budget: usize,
}

impl<'a> Solver<'a> {
    pub(crate) fn new(
        costs: &'a PairCosts,
        d_pp: usize,
        d_dp: usize,
        seed: u64,
        budget: usize,
    ) -> Self {
        Self {
            costs,
            d_pp,
            d_dp,
            rng: Rng::new(seed),
            budget,
        }
    }

    /// Runs the whole search and returns the best layout found.
    ///
    /// The population is the four constructed starts (chains and clusters, each from the densest
    /// device and from a random one). Small, because each individual already carries a local
    /// search: with a budget of milliseconds, more individuals would mean fewer moves for each and
    /// fewer offspring.
    pub(crate) fn run(mut self) -> Vec<Vec<usize>> {
        let n = self.costs.len();
        let (costs, d_pp, d_dp) = (self.costs, self.d_pp, self.d_dp);
        let rng = &mut self.rng;
        let starts = [
            pp_chains(costs, d_pp, d_dp, Start::Densest, rng),
            dp_clusters(costs, d_pp, d_dp, Start::Densest, rng),
            pp_chains(costs, d_pp, d_dp, Start::Random, rng),
            dp_clusters(costs, d_pp, d_dp, Start::Random, rng),
        ];
        let initial_moves = (self.budget as f64 * INITIAL_SHARE) as usize / starts.len();
        let mut population: Vec<Individual> = Vec::with_capacity(starts.len());
        for start in starts {
            let individual = self.improve(start, initial_moves, T_START);
            if population.iter().all(|p| p.key != individual.key) {
                population.push(individual);
            }
        }
        // Crossover needs two distinct parents; the constructions may have agreed. Every
        // improvement spends budget, so this ends.
        while population.len() < 2 && self.budget > 0 {
            let start = random_stages(n, self.d_pp, self.d_dp, &mut self.rng);
            let individual = self.improve(start, initial_moves, T_START);
            if population.iter().all(|p| p.key != individual.key) {
                population.push(individual);
            }
        }
        while self.budget > 0 && population.len() >= 2 {
            let a = self.tournament(&population);
            // A different second parent, so crossover has two partitions to mix.
            let b = (a + 1 + self.rng.below(population.len() - 1)) % population.len();
            let child = self.crossover(&population[a], &population[b]);
            let moves = CHILD_MOVES.min(self.budget);
            let child = self.improve(child, moves, T_START_CHILD);
            let worst = (0..population.len())
                .max_by(|&x, &y| population[x].total.total_cmp(&population[y].total))
                .unwrap_or(0);
            if child.total < population[worst].total
                && population.iter().all(|p| p.key != child.key)
            {
                population[worst] = child;
            }
        }
        population
            .into_iter()
            .min_by(|x, y| x.total.total_cmp(&y.total))
            .map(|best| best.stages)
            .unwrap_or_default()
    }

    /// Realizes `stages`' partition exactly, anneals the layout for up to `moves` moves, and
    /// realizes the best partition the walk found.
    fn improve(&mut self, stages: Vec<Vec<usize>>, moves: usize, t_start: f64) -> Individual {
        let n = self.costs.len();
        let start = Individual::new(self.costs, realize(self.costs, &stages));
        let calibration = CALIBRATION_MOVES.min(self.budget);
        let moves = moves.min(self.budget - calibration);
        self.budget -= calibration + moves;
        if moves == 0 {
            return start;
        }
        let mut search = Search::new(self.costs, &start.stages, bench_of(n, &start.stages));
        let scale = search.typical_uphill(&mut self.rng, calibration);
        if scale <= 0.0 {
            return start;
        }
        let walked = Individual::new(
            self.costs,
            search.anneal(&mut self.rng, moves, t_start * scale, T_END * scale),
        );
        // Realizing can only help the cost; on a tie, the walked layout keeps the pairings the
        // walk built towards its next improvement. The walk never returns a state worse than
        // its start.
        let realized = Individual::new(self.costs, realize(self.costs, &walked.stages));
        if realized.total < walked.total - TIE {
            realized
        } else {
            walked
        }
    }

    /// Binary tournament on cost.
    fn tournament(&mut self, population: &[Individual]) -> usize {
        let a = self.rng.below(population.len());
        let b = self.rng.below(population.len());
        if population[a].total <= population[b].total {
            a
        } else {
            b
        }
    }

    /// Group-preserving crossover: about half of `a`'s groups, then every group of `b` that does
    /// not clash with them, then the remaining groups grown greedily from the devices left over.
    fn crossover(&mut self, a: &Individual, b: &Individual) -> Vec<Vec<usize>> {
        let mut free = vec![true; self.costs.len()];
        let mut groups: Vec<Vec<usize>> = Vec::with_capacity(self.d_pp);
        let keep = 1 + self.rng.below(self.d_pp.saturating_sub(1).max(1));
        let mut from_a: Vec<&Vec<usize>> = a.stages.iter().collect();
        self.rng.shuffle(&mut from_a);
        for group in from_a.into_iter().take(keep) {
            take_if_free(group, &mut free, &mut groups);
        }
        let mut from_b: Vec<&Vec<usize>> = b.stages.iter().collect();
        self.rng.shuffle(&mut from_b);
        for group in from_b {
            if groups.len() < self.d_pp {
                take_if_free(group, &mut free, &mut groups);
            }
        }
        while groups.len() < self.d_pp {
            groups.push(grow_group(
                self.costs,
                &mut free,
                self.d_dp,
                Start::Random,
                &mut self.rng,
            ));
        }
        groups
    }
}

/// Adds `group` if none of its devices is taken yet.
fn take_if_free(group: &[usize], free: &mut [bool], groups: &mut Vec<Vec<usize>>) {
    if group.iter().all(|&d| free[d]) {
        for &d in group {
            free[d] = false;
        }
        groups.push(group.to_vec());
    }
}
