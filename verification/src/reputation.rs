//! A node's reputation: an integer score in basis points, 10,000 = spotless, that the scheduler
//! charges against (`scheduler::NodeView::reputation_bps`: a lower score costs a placement up to
//! 0.50 of price, see docs/scheduling.md).
//!
//! # The formula
//!
//! | outcome | new score | why |
//! |---|---|---|
//! | [`Outcome::Passed`] | `min(10000, s + 100)` | trust is regained slowly: 50 clean checks undo one halving from 10,000 |
//! | [`Outcome::Failed`] | `floor(s / 2)` | a proven failure costs half, so repeated cheating sinks fast (7 failures: below 100) |
//! | [`Outcome::Disputed`] | `floor(s / 2)` | provisional: while a tie-breaker runs, either side of a mismatch may be the faulty one, so both are held at a failed score and get no preference meanwhile |
//! | [`Outcome::Cleared { taken }`](Outcome::Cleared) | `min(10000, s + taken)` | the tie-breaker agreed with this node: what the dispute took ([`dispute_cost`]) is given back |
//!
//! A node that loses a dispute keeps the halving the dispute applied: one halving in total, the
//! same as a direct failure, not two. `Failed` is for checks with no second opinion to wait for
//! (a Freivalds check, a benchmark far below the claimed model). Scores are integers, so replaying
//! the same outcomes from 10,000 gives the same score on every replica. Inputs above 10,000 are
//! treated as 10,000.

use serde::{Deserialize, Serialize};

/// The score of a node with a clean record, and the most any node has.
pub const SPOTLESS: u16 = 10_000;

/// What one passed check adds.
pub const PASS_REWARD: u16 = 100;

/// What happened to a node in one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Its work (or its recomputation, for a verifier) agreed.
    Passed,
    /// Its work was shown wrong without a dispute to wait for.
    Failed,
    /// Its digest disagreed with the other side's and a tie-breaker is deciding.
    Disputed,
    /// The tie-breaker agreed with it: `taken` is what [`Outcome::Disputed`] took from it
    /// ([`dispute_cost`] of its score before).
    Cleared {
        /// The points the dispute took.
        taken: u16,
    },
}

/// The score after `outcome`, from `score` (see the module's table).
pub fn apply(score: u16, outcome: Outcome) -> u16 {
    let score = score.min(SPOTLESS);
    match outcome {
        Outcome::Passed => score.saturating_add(PASS_REWARD).min(SPOTLESS),
        Outcome::Failed | Outcome::Disputed => score / 2,
        Outcome::Cleared { taken } => score.saturating_add(taken).min(SPOTLESS),
    }
}

/// What [`Outcome::Disputed`] takes from `score`: the hub records it with the dispute, to give it
/// back through [`Outcome::Cleared`] if the tie-breaker sides with the node.
pub fn dispute_cost(score: u16) -> u16 {
    let score = score.min(SPOTLESS);
    score - apply(score, Outcome::Disputed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_adds_100_up_to_spotless() {
        assert_eq!(apply(9_000, Outcome::Passed), 9_100);
        assert_eq!(apply(9_950, Outcome::Passed), SPOTLESS);
        assert_eq!(apply(SPOTLESS, Outcome::Passed), SPOTLESS);
        assert_eq!(apply(0, Outcome::Passed), 100);
    }

    #[test]
    fn a_failure_halves_rounding_down() {
        assert_eq!(apply(SPOTLESS, Outcome::Failed), 5_000);
        assert_eq!(apply(5_001, Outcome::Failed), 2_500);
        assert_eq!(apply(1, Outcome::Failed), 0);
        assert_eq!(apply(0, Outcome::Failed), 0);
        // Seven failures from spotless leave a score under 100.
        let score = (0..7).fold(SPOTLESS, |s, _| apply(s, Outcome::Failed));
        assert_eq!(score, 78);
    }

    #[test]
    fn fifty_passes_undo_one_failure() {
        let failed = apply(SPOTLESS, Outcome::Failed);
        let recovered = (0..50).fold(failed, |s, _| apply(s, Outcome::Passed));
        assert_eq!(recovered, SPOTLESS);
        assert_eq!(apply(failed, Outcome::Passed), 5_100);
    }

    #[test]
    fn a_cleared_dispute_gives_back_what_it_took() {
        for before in [SPOTLESS, 9_999, 5_001, 1, 0] {
            let taken = dispute_cost(before);
            let during = apply(before, Outcome::Disputed);
            assert_eq!(during, before - taken);
            assert_eq!(
                apply(during, Outcome::Cleared { taken }),
                before,
                "from {before}"
            );
        }
        // Passes during the dispute are kept, up to spotless.
        let taken = dispute_cost(9_000);
        let during = apply(apply(9_000, Outcome::Disputed), Outcome::Passed);
        assert_eq!(apply(during, Outcome::Cleared { taken }), 9_100);
        assert_eq!(apply(SPOTLESS, Outcome::Cleared { taken: 5_000 }), SPOTLESS);
    }

    #[test]
    fn a_lost_dispute_costs_one_halving_like_a_failure() {
        assert_eq!(
            apply(8_000, Outcome::Disputed),
            apply(8_000, Outcome::Failed)
        );
    }

    #[test]
    fn scores_above_spotless_are_capped() {
        assert_eq!(apply(u16::MAX, Outcome::Passed), SPOTLESS);
        assert_eq!(apply(u16::MAX, Outcome::Failed), 5_000);
        assert_eq!(dispute_cost(u16::MAX), 5_000);
    }

    #[test]
    fn outcomes_serialize_for_the_hubs_records() {
        assert_eq!(
            serde_json::to_string(&Outcome::Cleared { taken: 5 }).unwrap(),
            r#"{"cleared":{"taken":5}}"#
        );
        assert_eq!(
            serde_json::to_string(&Outcome::Passed).unwrap(),
            r#""passed""#
        );
    }
}
