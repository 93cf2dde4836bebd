//! Bounded top-N selection in the result order of ARCHITECTURE.md (Similarity): score descending, then face id
//! ascending.

use crate::query::Match;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Rank order: `Less` means better (higher score, then lower face id).
pub fn rank_cmp(a: &Match, b: &Match) -> Ordering {
    b.score.total_cmp(&a.score).then(a.face_id.cmp(&b.face_id))
}

#[derive(Debug, Clone, Copy)]
struct Worst(Match);

impl PartialEq for Worst {
    fn eq(&self, other: &Self) -> bool {
        rank_cmp(&self.0, &other.0) == Ordering::Equal
    }
}
impl Eq for Worst {}
impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Worst {
    fn cmp(&self, other: &Self) -> Ordering {
        rank_cmp(&self.0, &other.0)
    }
}

/// Keeps the best `n` matches seen; the heap's top is the worst kept one.
#[derive(Debug, Clone)]
pub struct TopN {
    n: usize,
    heap: BinaryHeap<Worst>,
}

impl TopN {
    /// An empty selection of at most `n`.
    pub fn new(n: usize) -> TopN {
        TopN {
            n,
            heap: BinaryHeap::with_capacity(n + 1),
        }
    }

    /// The score a candidate must reach to possibly enter (−∞ until full).
    #[inline]
    pub fn threshold(&self) -> f64 {
        if self.heap.len() < self.n {
            f64::NEG_INFINITY
        } else {
            self.heap.peek().map_or(f64::NEG_INFINITY, |w| w.0.score)
        }
    }

    /// Offers a match; keeps it if it ranks among the best `n`.
    pub fn offer(&mut self, m: Match) {
        if self.n == 0 {
            return;
        }
        if self.heap.len() < self.n {
            self.heap.push(Worst(m));
        } else if let Some(worst) = self.heap.peek()
            && rank_cmp(&m, &worst.0) == Ordering::Less
        {
            self.heap.pop();
            self.heap.push(Worst(m));
        }
    }

    /// The kept matches, best first.
    pub fn into_sorted(self) -> Vec<Match> {
        let mut v: Vec<Match> = self.heap.into_iter().map(|w| w.0).collect();
        v.sort_by(rank_cmp);
        v
    }
}

/// Order key of a score: ascending key = descending score (−0 and +0 alike), so differential's
/// sorted values come best first, and an atomic minimum keeps the best ([`crate::kernel::Floors`]).
pub fn score_key(score: f64) -> u64 {
    let bits = if score == 0.0 {
        0.0f64.to_bits()
    } else {
        score.to_bits()
    };
    let ordered = if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    };
    !ordered
}

/// Inverse of [`score_key`].
pub fn score_from_key(key: u64) -> f64 {
    let ordered = !key;
    let bits = if ordered >> 63 == 1 {
        ordered & !(1 << 63)
    } else {
        !ordered
    };
    f64::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn score_keys_order_descending_and_invert() {
        let scores = [
            1.0,
            0.5,
            1e-300,
            0.0,
            -1e-300,
            -0.25,
            -1.0,
            f64::MIN_POSITIVE,
            f64::NEG_INFINITY,
        ];
        for s in scores {
            assert_eq!(score_from_key(score_key(s)), s);
        }
        let mut sorted = scores;
        sorted.sort_by(|a, b| b.total_cmp(a));
        let mut by_key = scores;
        by_key.sort_by_key(|s| score_key(*s));
        assert_eq!(sorted, by_key);
        assert_eq!(score_key(-0.0), score_key(0.0));
    }

    proptest! {
        #[test]
        fn equals_sort_and_truncate(scores in proptest::collection::vec(-3i32..3, 0..60), n in 1usize..12) {
            let matches: Vec<Match> = scores.iter().enumerate()
                .map(|(i, s)| Match { face_id: (i as i64 * 7919) % 61, source: b'A', score: *s as f64 / 2.0 })
                .collect();
            let mut top = TopN::new(n);
            matches.iter().for_each(|m| top.offer(*m));
            let mut expected = matches.clone();
            expected.sort_by(rank_cmp);
            expected.truncate(n);
            prop_assert_eq!(top.into_sorted(), expected);
        }
    }
}
