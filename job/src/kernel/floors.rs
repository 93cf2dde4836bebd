//! Scores the workers of one process share: each query's best known N-th score.
//!
//! Every worker keeps its own top-N, and a face can only enter the final top-N if it scores at
//! least the N-th best any single worker has seen: that worker's N faces are all in the merge.
//! So a worker that found good matches early lets the others prune with its N-th score instead
//! of their own, lower one. A floor only ever rises, and a face scoring exactly the floor is
//! still a candidate (ties go to the smaller id), so the results are those of a scan without
//! it; only the number of pairs re-scored changes.

use std::sync::atomic::{AtomicU64, Ordering};

/// One floor per query (in the job's query order), starting at −∞.
#[derive(Debug)]
pub struct Floors(Vec<AtomicU64>);

/// `score`'s bits in an order `u64` compares the same way (scores are never NaN).
fn key(score: f64) -> u64 {
    let bits = score.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    }
}

fn score(key: u64) -> f64 {
    f64::from_bits(if key >> 63 == 1 {
        key & !(1 << 63)
    } else {
        !key
    })
}

impl Floors {
    /// Floors at −∞ for `queries` queries.
    pub fn new(queries: usize) -> Floors {
        Floors(
            (0..queries)
                .map(|_| AtomicU64::new(key(f64::NEG_INFINITY)))
                .collect(),
        )
    }

    /// Query `q`'s floor.
    pub fn get(&self, q: usize) -> f64 {
        score(self.0[q].load(Ordering::Relaxed))
    }

    /// Raises query `q`'s floor to `to` if that is higher.
    pub fn raise(&self, q: usize, to: f64) {
        let to = key(to);
        // A read first: the line stays shared among the workers until a floor really rises.
        if self.0[q].load(Ordering::Relaxed) < to {
            self.0[q].fetch_max(to, Ordering::Relaxed);
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
    fn keys_order_like_scores_and_floors_only_rise() {
        let scores = [f64::NEG_INFINITY, -1.0, -0.0, 0.0, 1e-300, 0.5, 1.0];
        for w in scores.windows(2) {
            assert!(key(w[0]) <= key(w[1]), "{w:?}");
            assert_eq!(score(key(w[0])).to_bits(), w[0].to_bits());
        }
        let floors = Floors::new(2);
        assert_eq!(floors.get(0), f64::NEG_INFINITY);
        floors.raise(0, 0.5);
        floors.raise(0, 0.25);
        assert_eq!((floors.get(0), floors.get(1)), (0.5, f64::NEG_INFINITY));
    }
}
