//! Seeded synthetic encodings and queries: the kernel's level calibration, the planner's rate
//! probe and `facematch bench` all score these, so their numbers describe the same work.

use crate::query::{MaxResults, Method, Query, SourceFilter};

/// Seeded uniform values in [−1, 1) (xorshift64*): reproducible on every machine.
pub struct SeededValues(u64);

impl SeededValues {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> SeededValues {
        SeededValues(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next `count` values.
    pub fn take(&mut self, count: usize) -> Vec<f32> {
        (0..count)
            .map(|_| {
                self.0 ^= self.0 >> 12;
                self.0 ^= self.0 << 25;
                self.0 ^= self.0 >> 27;
                let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
                (v >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }
}

/// `count` top-`n` queries of `method` over every face, cycling through `encodings` (rows of
/// `dim`); history ids 0, 1, ….
pub fn queries(
    encodings: &[f32],
    dim: usize,
    count: usize,
    method: Method,
    n: MaxResults,
) -> Vec<Query> {
    encodings
        .chunks_exact(dim)
        .cycle()
        .take(count)
        .enumerate()
        .map(|(i, e)| Query {
            history_id: i as i64,
            encoding: e.to_vec(),
            method,
            filter: SourceFilter::All,
            max_results: n,
            exclude_self: None,
            max_distance: None,
        })
        .collect()
}
