//! The similarity kernel: scores a batch of faces against every query, fused with per-query top-N.
//!
//! Faces are scored in float32 (the storage type) to prune; anything that could enter a query's
//! top-N — every face whose float32 score is within a proven error bound of the current N-th best —
//! is re-scored in f64 and only the f64 score decides membership and order. So the chosen set,
//! order and scores are those of an f64 computation on the stored values (SPEC section 3), while
//! the vast majority of faces never leave float32. Faces or queries whose norms fall outside the
//! range where the float32 bound holds take the f64 path directly.

use crate::query::{Match, Method, Query};
use crate::topn::TopN;

/// Faces per block: a block of 128-d faces (32 KiB) stays in L1/L2 while every query passes over it.
const BLOCK: usize = 64;
/// Squared norms inside this range keep float32 products away from overflow and underflow.
const SAFE_NORM2: std::ops::RangeInclusive<f32> = 1e-30..=1e30;

/// Exact (f64) similarity of stored float32 vectors: `(score, euclidean distance)`.
pub fn exact_score(method: Method, x: &[f32], q: &[f32]) -> (f64, f64) {
    let mut dot = 0.0f64;
    let mut nx = 0.0f64;
    let mut nq = 0.0f64;
    let mut d2 = 0.0f64;
    for (&a, &b) in x.iter().zip(q) {
        let (a, b) = (a as f64, b as f64);
        dot += a * b;
        nx += a * a;
        nq += b * b;
        d2 += (a - b) * (a - b);
    }
    let dist = d2.sqrt();
    let score = match method {
        Method::Cosine => dot / (nx.sqrt() * nq.sqrt()),
        Method::Euclidean => 1.0 / (1.0 + dist),
    };
    (score, dist)
}

#[inline]
fn dot32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    acc.iter().sum::<f32>() + tail
}

#[inline]
fn dist2_32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            let d = x[i] - y[i];
            acc[i] += d * d;
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ra.iter().zip(rb) {
        let d = x - y;
        tail += d * d;
    }
    acc.iter().sum::<f32>() + tail
}

struct Prepared {
    query: Query,
    norm32: f32,
    /// Whether float32 pruning is sound for this query (its norm is in the safe range).
    prunable: bool,
    top: TopN,
}

/// Scores batches of faces against a fixed set of queries and keeps each query's top-N.
pub struct Scanner {
    dim: usize,
    /// Absolute bound on |float32 score − f64 score| (and the relative bound on distances), with margin.
    eps: f32,
    queries: Vec<Prepared>,
    scored_pairs: u64,
    rescored: u64,
}

impl Scanner {
    /// Prepares `queries` (all of dimension `dim`) for scanning.
    pub fn new(queries: &[Query], dim: usize) -> Scanner {
        let queries = queries
            .iter()
            .map(|q| {
                let norm2 = dot32(&q.encoding, &q.encoding);
                Prepared {
                    norm32: norm2.sqrt(),
                    prunable: SAFE_NORM2.contains(&norm2),
                    top: TopN::new(q.max_results),
                    query: q.clone(),
                }
            })
            .collect();
        // Rounding of a D-term float32 dot product or sum of squares is at most ~D·u relative
        // (u = 2^-24); cosine adds the two norms, euclidean maps it through 1/(1+d). 4D+16 units of
        // f32::EPSILON (= 2u) is a safe over-estimate for both.
        let eps = (4.0 * dim as f32 + 16.0) * f32::EPSILON;
        Scanner {
            dim,
            eps,
            queries,
            scored_pairs: 0,
            rescored: 0,
        }
    }

    /// Number of (query, face) pairs scored so far.
    pub fn scored_pairs(&self) -> u64 {
        self.scored_pairs
    }

    /// Number of pairs re-scored in f64.
    pub fn rescored(&self) -> u64 {
        self.rescored
    }

    /// Scores a batch: `face_ids[i]`, `sources[i]` and `values[i*dim..(i+1)*dim]` describe face i.
    pub fn scan(&mut self, face_ids: &[i64], sources: &[u8], values: &[f32]) {
        let dim = self.dim;
        debug_assert_eq!(values.len(), face_ids.len() * dim);
        let mut norms = [0.0f32; BLOCK];
        for start in (0..face_ids.len()).step_by(BLOCK) {
            let end = (start + BLOCK).min(face_ids.len());
            let block = &values[start * dim..end * dim];
            for (i, x) in block.chunks_exact(dim).enumerate() {
                norms[i] = dot32(x, x);
            }
            for p in &mut self.queries {
                self.rescored += Self::scan_block(
                    p,
                    dim,
                    self.eps,
                    &face_ids[start..end],
                    &sources[start..end],
                    block,
                    &norms,
                );
                self.scored_pairs += (end - start) as u64;
            }
        }
    }

    /// Scores one block for one query; returns how many faces needed the f64 path.
    #[inline]
    fn scan_block(
        p: &mut Prepared,
        dim: usize,
        eps: f32,
        ids: &[i64],
        sources: &[u8],
        block: &[f32],
        norms: &[f32],
    ) -> u64 {
        let q = &p.query;
        let mut exact = 0;
        let qv = &q.encoding[..];
        for (i, x) in block.chunks_exact(dim).enumerate() {
            if !q.filter.accepts(sources[i]) || q.exclude_face == Some(ids[i]) {
                continue;
            }
            if p.prunable && SAFE_NORM2.contains(&norms[i]) {
                let threshold = p.top.threshold();
                let (score32, dist32) = match q.method {
                    Method::Cosine => {
                        let s = dot32(x, qv) / (norms[i].sqrt() * p.norm32);
                        let d = if q.max_distance.is_some() {
                            dist2_32(x, qv).sqrt()
                        } else {
                            0.0
                        };
                        (s, d)
                    }
                    Method::Euclidean => {
                        let d = dist2_32(x, qv).sqrt();
                        (1.0 / (1.0 + d), d)
                    }
                };
                if ((score32 + eps) as f64) < threshold {
                    continue;
                }
                if let Some(max) = q.max_distance
                    && dist32 as f64 > max * (1.0 + eps as f64) + eps as f64
                {
                    continue;
                }
            }
            exact += 1;
            let (score, dist) = exact_score(q.method, x, qv);
            if q.max_distance.is_some_and(|max| dist > max) {
                continue;
            }
            p.top.offer(Match {
                face_id: ids[i],
                source: sources[i],
                score,
            });
        }
        exact
    }

    /// Each query's kept matches, best first, keyed by history id.
    pub fn into_results(self) -> Vec<(i64, Vec<Match>)> {
        self.queries
            .into_iter()
            .map(|p| (p.query.history_id, p.top.into_sorted()))
            .collect()
    }
}
