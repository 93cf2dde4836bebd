//! Each query's floor: the N-th best exact score offered so far, which a face must reach to
//! matter. A scanner alone keeps its own; the workers of one process share one.
//!
//! Every worker keeps its own top-N; besides, every score a worker computes exactly for a face
//! the query takes goes into one shared top-N of scores per query. The workers scan different
//! faces, each face once, so the N-th of those scores is one N different faces reach: no face
//! below it can enter the final top-N. With two workers that is the N-th best of both halves
//! seen so far, higher than either worker's own: a worker prunes with what the other found,
//! and the N-th score climbs as if one worker had seen every face so far (a 100-search pass
//! over 1M faces on two workers re-scored 16.0K pairs instead of 19.6K). A floor only ever
//! rises, and a face scoring exactly the floor is still a candidate (ties go to the smaller
//! id), so the results are those of a scan without it; only the number of pairs re-scored
//! changes.

use crate::topn::{score_from_key, score_key};
use std::collections::BinaryHeap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// One floor per query (in the job's query order), starting at −∞, held as its
/// [`score_key`] (the lower the key, the higher the floor), and per query the best N scores
/// offered.
#[derive(Debug)]
pub struct Floors {
    floors: Vec<AtomicU64>,
    /// Per query, its N and the keys of the best N scores offered, the lowest score on top.
    tops: Vec<(usize, Mutex<BinaryHeap<u64>>)>,
}

impl Floors {
    /// Floors at −∞ for queries that keep `ns` matches each.
    pub fn new(ns: impl IntoIterator<Item = usize>) -> Floors {
        let tops: Vec<(usize, Mutex<BinaryHeap<u64>>)> = ns
            .into_iter()
            .map(|n| (n, Mutex::new(BinaryHeap::with_capacity(n + 1))))
            .collect();
        Floors {
            floors: (0..tops.len())
                .map(|_| AtomicU64::new(score_key(f64::NEG_INFINITY)))
                .collect(),
            tops,
        }
    }

    /// Query `q`'s floor.
    pub fn get(&self, q: usize) -> f64 {
        score_from_key(self.floors[q].load(Ordering::Relaxed))
    }

    /// Raises query `q`'s floor to `to` if that is higher.
    pub fn raise(&self, q: usize, to: f64) {
        self.raise_key(q, score_key(to));
    }

    fn raise_key(&self, q: usize, to: u64) {
        // A read first: the line stays shared among the workers until a floor really rises.
        if self.floors[q].load(Ordering::Relaxed) > to {
            self.floors[q].fetch_min(to, Ordering::Relaxed);
        }
    }

    /// Face scored `score` for query `q` (which takes it: its filter, not itself, within its max
    /// distance). Each face may be offered once per pass, by one worker: the floor becomes the
    /// N-th best score offered, once N were. A score at or below the floor changes nothing.
    pub fn offer(&self, q: usize, score: f64) {
        let key = score_key(score);
        let (n, top) = &self.tops[q];
        if *n == 0 || key >= self.floors[q].load(Ordering::Relaxed) {
            return;
        }
        let mut top = top.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        top.push(key);
        if top.len() > *n {
            top.pop();
        }
        if top.len() == *n
            && let Some(&nth) = top.peek()
        {
            self.raise_key(q, nth);
        }
    }

    /// Queries.
    pub fn len(&self) -> usize {
        self.floors.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.floors.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_only_rise() {
        let floors = Floors::new([3, 3]);
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

    #[test]
    fn a_floor_is_the_nth_best_score_offered() {
        let floors = Floors::new([3, 0]);
        // Two workers' offers, interleaved: the floor is the 3rd best of all, once 3 came.
        for (score, want) in [
            (0.2, f64::NEG_INFINITY),
            (0.9, f64::NEG_INFINITY),
            (0.5, 0.2),
            (0.1, 0.2),
            (0.7, 0.5),
            (0.6, 0.6),
            (0.95, 0.7),
        ] {
            floors.offer(0, score);
            assert_eq!(floors.get(0), want, "offered {score}");
        }
        // A raise above the offers wins; later offers below it change nothing.
        floors.raise(0, 0.8);
        floors.offer(0, 0.75);
        assert_eq!(floors.get(0), 0.8);
        floors.offer(0, 0.99);
        assert_eq!(floors.get(0), 0.9, "0.99, 0.95 and 0.9");
        // A query keeping nothing has no floor from offers.
        floors.offer(1, 0.5);
        assert_eq!(floors.get(1), f64::NEG_INFINITY);
    }
}
