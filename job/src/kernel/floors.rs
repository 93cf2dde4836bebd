//! Scores the workers of one process share: each query's best known N-th score.
//!
//! Every worker keeps its own top-N, and a face can only enter the final top-N if it scores at
//! least the N-th best any single worker has seen: that worker's N faces are all in the merge.
//! So a worker that found good matches early lets the others prune with its N-th score instead
//! of their own, lower one. A floor only ever rises, and a face scoring exactly the floor is
//! still a candidate (ties go to the smaller id), so the results are those of a scan without
//! it; only the number of pairs re-scored changes.

use crate::topn::{score_from_key, score_key};
use std::sync::atomic::{AtomicU64, Ordering};

/// One floor per query (in the job's query order), starting at −∞, held as its
/// [`score_key`]: the lower the key, the higher the floor.
#[derive(Debug)]
pub struct Floors(Vec<AtomicU64>);

impl Floors {
    /// Floors at −∞ for `queries` queries.
    pub fn new(queries: usize) -> Floors {
        Floors(
            (0..queries)
                .map(|_| AtomicU64::new(score_key(f64::NEG_INFINITY)))
                .collect(),
        )
    }

    /// Query `q`'s floor.
    pub fn get(&self, q: usize) -> f64 {
        score_from_key(self.0[q].load(Ordering::Relaxed))
    }

    /// Raises query `q`'s floor to `to` if that is higher.
    pub fn raise(&self, q: usize, to: f64) {
        let to = score_key(to);
        // A read first: the line stays shared among the workers until a floor really rises.
        if self.0[q].load(Ordering::Relaxed) > to {
            self.0[q].fetch_min(to, Ordering::Relaxed);
        }
    }

    /// Queries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_only_rise() {
        let floors = Floors::new(2);
        assert_eq!(floors.get(0), f64::NEG_INFINITY);
        // Through every sign and magnitude, a floor follows the highest score it was raised to.
        for (to, want) in [
            (-1.0, -1.0),
            (-0.5, -0.5),
            (-1.0, -0.5),
            (1e-300, 1e-300),
            (0.5, 0.5),
            (0.25, 0.5),
        ] {
            floors.raise(0, to);
            assert_eq!(floors.get(0), want, "raised to {to}");
        }
        assert_eq!(floors.get(1), f64::NEG_INFINITY);
    }
}
