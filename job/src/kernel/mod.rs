//! The similarity kernel: scores blocks of faces against every query, fused with per-query top-N.
//!
//! A block of faces is packed once into dimension-major panels and every query passes over it in
//! tiles ([`tile`]): a shard is streamed once for all histories, and each (query, face) pair costs
//! one float32 fused multiply-add per dimension on the widest vectors the CPU has
//! ([`dispatch::Level`]). Float32 only prunes. The tile tests each pair against the query's current
//! N-th score widened by a proven bound on the float32 error ([`Limit`]); the few pairs that pass
//! are re-scored in f64, and only the f64 score decides membership and order. So the chosen set,
//! order and scores are those of an f64 computation on the stored values (ARCHITECTURE.md: Similarity). Faces
//! and queries whose norms fall outside the range where the bound holds take the f64 path
//! directly.

pub mod codes;
pub mod dispatch;
pub mod floors;
pub mod int8;
pub mod synthetic;
pub mod tile;

use crate::query::{Match, Method, Query};
use crate::topn::TopN;
use codes::{CodeLimit, FaceCodes, QueryCodes, Ranges};
pub use dispatch::Level;
pub use floors::Floors;
pub use int8::CodeLevel;
use int8::{ROWS, Sums};
pub use tile::Limit;

/// Faces per block: packed, a block of 128-d faces (128 KiB) stays in L2 while every query
/// tile passes over it.
const BLOCK: usize = 256;
/// Queries scanned together over a batch: 1024 rows of 128-d queries (512 KiB) stay in L2 with
/// the packed block; all 4096 at once spill to L3 and cost a few percent per query.
const QUERY_CHUNK: usize = 1024;
/// Squared norms inside this range keep float32 products away from overflow and underflow.
const SAFE_NORM2: std::ops::RangeInclusive<f32> = 1e-30..=1e30;
/// Unit roundoff of float32.
const U: f64 = f32::EPSILON as f64 / 2.0;
/// Panels × query tiles whose integer sums are computed together (1 KiB each).
const CODED_CHUNK: usize = 64;
/// Deferred candidates scored together ([`exact_sums`]).
const DEFERRED_LANES: usize = 4;
/// Deferred candidates that are scored at once, before the chunk's end.
const DEFERRED_FLUSH: usize = 32;
/// Panels (of 16 faces) of a worker's first coded batch that [`Scanner::warm_up`] ranks.
const WARM_UP_PANELS: usize = 128;
/// Panels whose integer sums the warm-up holds at once.
const WARM_UP_STEP: usize = 16;

/// The four f64 sums of an exact score.
#[derive(Clone, Copy, Default)]
struct ExactSums {
    dot: f64,
    nx: f64,
    nq: f64,
    d2: f64,
}

impl ExactSums {
    /// The score `query` gives, unless the face lies beyond its max distance.
    fn within(self, query: &Query) -> Option<f64> {
        let (score, dist) = self.score(query.method);
        (!query.max_distance.is_some_and(|max| dist > max)).then_some(score)
    }

    /// `(score, euclidean distance)` by `method`.
    fn score(self, method: Method) -> (f64, f64) {
        let dist = self.d2.sqrt();
        let score = match method {
            Method::Cosine => self.dot / (self.nx.sqrt() * self.nq.sqrt()),
            Method::Euclidean => 1.0 / (1.0 + dist),
        };
        (score, dist)
    }
}

/// The exact (f64) sums of `K` pairs of stored float32 vectors `(xs[k], qs[k])`, all of one
/// length, at once: the dot product, the squared distance when `D2` and `‖x‖²` when `NX` (zero
/// otherwise, and `‖q‖²` always: the caller knows them, [`exact_norm2`]). Each pair's sums run
/// in index order, as the f64 reference's do (ARCHITECTURE.md: Invariants): near-ties are
/// ranked by these very bits, so a pair gets the same bits whatever `K` and whichever sums are
/// asked for. The `K` pairs are independent chains, which the CPU overlaps: one pair alone
/// waits on each addition's latency.
#[inline(always)]
fn exact_sums<const K: usize, const D2: bool, const NX: bool>(
    xs: [&[f32]; K],
    qs: [&[f32]; K],
) -> [ExactSums; K] {
    let mut sums = [ExactSums::default(); K];
    let len = xs[0].len();
    for k in 0..K {
        assert!(xs[k].len() == len && qs[k].len() == len);
    }
    for i in 0..len {
        for k in 0..K {
            let (a, b) = (xs[k][i] as f64, qs[k][i] as f64);
            let s = &mut sums[k];
            s.dot += a * b;
            if NX {
                s.nx += a * a;
            }
            if D2 {
                s.d2 += (a - b) * (a - b);
            }
        }
    }
    sums
}

/// `Σ x_i²` in f64 in index order: the bits [`exact_sums`] would sum, for a vector whose norm
/// is used against many others (a query's, a resident face's).
pub(crate) fn exact_norm2(x: &[f32]) -> f64 {
    x.iter().fold(0.0, |s, &a| s + a as f64 * a as f64)
}

/// A panel's faces ranked for one query by the approximate score its integer sums `row` give
/// (x·q ≈ a·b·I = α·‖x‖·b·I: the cosine ranks by α·I, the distance by ‖x‖² − 2·x·q), and the
/// lanes whose score beats `least`.
#[inline(always)]
fn warm_up_closeness(
    method: Method,
    b: f32,
    row: &[i32; codes::LANES],
    alpha: &[f32; codes::LANES],
    norm: &[f32; codes::LANES],
    least: f32,
) -> ([f32; codes::LANES], u16) {
    let mut closeness = [0.0f32; codes::LANES];
    let mut over = 0u16;
    for l in 0..codes::LANES {
        let sum = row[l] as f32;
        let c = match method {
            Method::Cosine => alpha[l] * sum,
            Method::Euclidean => norm[l] * (2.0 * alpha[l] * b * sum - norm[l]),
        };
        closeness[l] = c;
        over |= u16::from(c > least) << l;
    }
    (closeness, over)
}

/// The faces a query's warm-up keeps: the `keep` closest by the approximate score. Offers are
/// appended and cut back to the best `keep` when twice that many have come, so an offer costs
/// O(1) however large N is; `least` (what an offer must beat) is the last cut's `keep`-th.
struct WarmUpPicks {
    keep: usize,
    kept: Vec<(f32, u32)>,
    least: f32,
}

impl WarmUpPicks {
    fn new(keep: usize) -> WarmUpPicks {
        WarmUpPicks {
            keep,
            kept: Vec::with_capacity(2 * keep),
            least: f32::NEG_INFINITY,
        }
    }

    /// Keeps the face at `position` (whose closeness beat `least`).
    fn offer(&mut self, closeness: f32, position: u32) {
        self.kept.push((closeness, position));
        if self.kept.len() == 2 * self.keep {
            self.cut();
        }
    }

    /// Keeps the best `keep`.
    fn cut(&mut self) {
        if self.kept.len() > self.keep {
            self.kept
                .select_nth_unstable_by(self.keep - 1, |x, y| y.0.total_cmp(&x.0));
            self.kept.truncate(self.keep);
            self.least = self.kept[self.keep - 1].0;
        }
    }

    /// The positions of the best `keep` faces offered.
    fn into_positions(mut self) -> Vec<u32> {
        self.cut();
        self.kept
            .into_iter()
            .map(|(_, position)| position)
            .collect()
    }
}

/// Asks the cache for `values` ahead of their use (a hint: no effect elsewhere than x86-64).
#[inline(always)]
fn prefetch(values: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in values.chunks(16) {
        // SAFETY: a prefetch only hints the cache, and the address lies inside `values`.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr() as *const i8
            )
        };
    }
}

/// Float32 dot product with 16 independent partial sums (so it vectorizes); its error is within
/// the same γ bound as the tile's.
#[inline(always)]
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
    sum16(acc) + tail
}

/// [`dot32`] with fused multiply-adds when `FMA` (inside a function compiled for FMA).
#[inline(always)]
fn dot_lanes<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    if !FMA {
        return dot32(a, b);
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: FMA is true only in code compiled into the AVX2 and AVX-512 levels' wrappers,
    // which run only on CPUs with AVX2 and FMA.
    unsafe {
        dot_avx2(a, b)
    }
    #[cfg(not(target_arch = "x86_64"))]
    dot_fma(a, b)
}

/// [`dot32`] with fused multiply-adds, where there are no intrinsics for it below.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn dot_fma(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] = x[i].mul_add(y[i], acc[i]);
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail = x.mul_add(*y, tail);
    }
    sum16(acc) + tail
}

/// The sum of 16 partial sums as a tree of vector adds: a plain sum is 16 dependent adds, the
/// longest chain in a one-query scan.
#[inline(always)]
fn sum16(mut acc: [f32; 16]) -> f32 {
    for i in 0..8 {
        acc[i] += acc[i + 8];
    }
    for i in 0..4 {
        acc[i] += acc[i + 4];
    }
    (acc[0] + acc[2]) + (acc[1] + acc[3])
}

/// [`dot_lanes`] in AVX2 intrinsics: four independent 8-lane sums. Left to the auto-vectorizer,
/// the one-query loop came out in 2- and 4-lane pieces and ran at half of memory speed.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY: every load reads 8 floats at i + 8k + 8 ≤ n.
    unsafe {
        while i + 32 <= n {
            for (k, acc) in acc.iter_mut().enumerate() {
                let (x, y) = (
                    _mm256_loadu_ps(pa.add(i + 8 * k)),
                    _mm256_loadu_ps(pb.add(i + 8 * k)),
                );
                *acc = _mm256_fmadd_ps(x, y, *acc);
            }
            i += 32;
        }
        while i + 8 <= n {
            let (x, y) = (_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)));
            acc[0] = _mm256_fmadd_ps(x, y, acc[0]);
            i += 8;
        }
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let v = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    let v = _mm_add_ps(v, _mm_movehl_ps(v, v));
    let mut sum = _mm_cvtss_f32(_mm_add_ss(v, _mm_movehdup_ps(v)));
    for (x, y) in a[i..n].iter().zip(&b[i..n]) {
        sum = x.mul_add(*y, sum);
    }
    sum
}

#[inline(always)]
fn norm2_32(x: &[f32]) -> f32 {
    dot32(x, x)
}

struct Prepared {
    query: Query,
    /// `Σ q_i²` in f64 in index order ([`exact_norm2`]).
    exact_nq: f64,
    /// Float32 squared norm and norm.
    nq: f32,
    qn: f32,
    /// Whether float32 pruning is sound for this query (its norm is in the safe range).
    prunable: bool,
    top: TopN,
}

/// One packed block, shared by every query tile.
#[derive(Default)]
struct Block {
    /// Faces in the block (the panels are padded past it).
    faces: usize,
    /// `[panel][d][lane]`.
    panels: Vec<f32>,
    /// Per face (padded): float32 squared norm and norm.
    nx: Vec<f32>,
    xn: Vec<f32>,
    /// Per face: pruning is sound for it (in the safe range; padding is not).
    valid: Vec<bool>,
    /// Largest norm among the valid faces.
    xmax: f32,
}

/// Scores batches of faces against a fixed set of queries and keeps each query's top-N.
pub struct Scanner {
    dim: usize,
    level: Level,
    /// Bound on the relative error of a float32 dot product of `dim` terms (γ_dim), with margin.
    gamma: f64,
    queries: Vec<Prepared>,
    /// The query encodings, row-major, padded with zero rows to a whole number of tiles.
    matrix: Vec<f32>,
    block: Block,
    /// The chunk of queries being scanned.
    active: std::ops::Range<usize>,
    /// The integer level for coded batches, the queries' codes (made at the first coded
    /// batch) and the sums' buffer.
    code_level: CodeLevel,
    query_codes: Option<QueryCodes>,
    sums: Vec<Sums>,
    code_limits: Vec<(CodeLimit, i32)>,
    /// Candidates of the coded chunk being scanned, scored at its end: (query, position).
    deferred: Vec<(usize, usize)>,
    /// Whether the first coded batch gave the floors their warm-up ([`Scanner::warm_up`]).
    warmed: bool,
    /// Whether any query has a distance test (euclidean, or a max distance), whose coded
    /// limits need the faces' norms.
    distances: bool,
    /// Each query's floor: the N-th best of every exact score offered (by this scanner, and
    /// by the other workers of this process when shared, [`Scanner::with_floors`]) and of its
    /// warm-up. It is never below the scanner's own N-th score, all of whose faces were offered.
    floors: std::sync::Arc<Floors>,
    scored_pairs: u64,
    rescored: u64,
}

impl Scanner {
    /// Prepares `queries` (all of dimension `dim`) for scanning on the widest level this CPU has.
    pub fn new(queries: &[Query], dim: usize) -> Scanner {
        Scanner::with_level(queries, dim, Level::detect())
    }

    /// Prepares `queries` for scanning on `level` (which must be [`Level::available`]).
    pub fn with_level(queries: &[Query], dim: usize, level: Level) -> Scanner {
        assert!(level.available(), "kernel level {level} is not available");
        let prepared: Vec<Prepared> = queries
            .iter()
            .map(|q| {
                let nq = norm2_32(&q.encoding);
                Prepared {
                    exact_nq: exact_norm2(&q.encoding),
                    nq,
                    qn: nq.sqrt(),
                    prunable: SAFE_NORM2.contains(&nq),
                    top: TopN::new(q.max_results as usize),
                    query: q.clone(),
                }
            })
            .collect();
        let tile = query_tile(level);
        let mut matrix = vec![0.0f32; queries.len().div_ceil(tile) * tile * dim];
        for (i, q) in queries.iter().enumerate() {
            matrix[i * dim..(i + 1) * dim].copy_from_slice(&q.encoding);
        }
        let n = dim as f64 * U;
        Scanner {
            dim,
            level,
            gamma: n / (1.0 - n),
            queries: prepared,
            matrix,
            block: Block::default(),
            active: 0..0,
            code_level: CodeLevel::detect(),
            query_codes: None,
            sums: Vec::new(),
            code_limits: Vec::new(),
            deferred: Vec::new(),
            warmed: false,
            distances: queries
                .iter()
                .any(|q| q.method == Method::Euclidean || q.max_distance.is_some()),
            floors: std::sync::Arc::new(Floors::new(
                queries.iter().map(|q| q.max_results as usize),
            )),
            scored_pairs: 0,
            rescored: 0,
        }
    }

    /// Uses `level` (which must be [`CodeLevel::available`]) for coded batches.
    pub fn with_code_level(mut self, level: CodeLevel) -> Scanner {
        assert!(
            level.available(),
            "integer kernel level {level} is not available"
        );
        self.code_level = level;
        self
    }

    /// The integer level coded batches use.
    pub fn code_level(&self) -> CodeLevel {
        self.code_level
    }

    /// Shares `floors` (one per query, in this scanner's query order) with the other workers
    /// of this process: each prunes with the N-th best score any of them offered ([`Floors`]).
    pub fn with_floors(mut self, floors: std::sync::Arc<Floors>) -> Scanner {
        assert_eq!(floors.len(), self.queries.len(), "one floor per query");
        self.floors = floors;
        self
    }

    /// The score a face must reach to matter for query `q`: its floor.
    fn threshold(&self, q: usize) -> f64 {
        self.floors.get(q)
    }

    /// The instruction-set level in use.
    pub fn level(&self) -> Level {
        self.level
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
        assert_eq!(values.len(), face_ids.len() * dim);
        assert_eq!(sources.len(), face_ids.len());
        if self.queries.is_empty() || dim == 0 {
            self.scored_pairs += (face_ids.len() * self.queries.len()) as u64;
            return;
        }
        // Queries in chunks whose rows stay in L2 while a block passes under them; each chunk
        // goes over the whole batch. Balanced and in whole tiles: a last chunk of a few queries
        // would pack every block again for almost nothing.
        let nq = self.queries.len();
        let chunk = nq
            .div_ceil(nq.div_ceil(QUERY_CHUNK))
            .next_multiple_of(query_tile(self.level));
        for first in (0..nq).step_by(chunk) {
            self.active = first..(first + chunk).min(nq);
            self.scan_chunk(face_ids, sources, values);
        }
    }

    /// Scores a batch like [`Scanner::scan`], pruning with the batch's int8 codes (`codes` must
    /// be `FaceCodes::new(values, dim)`): the integer sums of every query against every face,
    /// tested against each query's [`CodeLimit`]; the faces that pass, and those without codes,
    /// are re-scored in f64. The results are those of [`Scanner::scan`].
    pub fn scan_coded(
        &mut self,
        face_ids: &[i64],
        sources: &[u8],
        values: &[f32],
        codes: &FaceCodes,
    ) {
        let dim = self.dim;
        assert_eq!(values.len(), face_ids.len() * dim);
        assert_eq!(sources.len(), face_ids.len());
        assert_eq!((codes.len(), codes.dim()), (face_ids.len(), dim));
        let faces = Faces {
            ids: face_ids,
            sources,
            values,
        };
        self.scored_pairs += (face_ids.len() * self.queries.len()) as u64;
        if self.queries.is_empty() {
            return;
        }
        let queries = match self.query_codes.take() {
            Some(q) => q,
            None => QueryCodes::new(
                self.queries.iter().map(|p| p.query.encoding.as_slice()),
                dim,
            ),
        };
        // Faces without codes (outside the safe range) are scored exactly against every query.
        for position in codes.uncoded() {
            for q in 0..self.queries.len() {
                self.rescored += self.consider(q, &faces, codes.index(position));
            }
        }
        if !self.warmed {
            self.warmed = true;
            self.warm_up(&faces, codes, &queries);
        }
        // Panels per chunk: the sums of a chunk (1 KiB per panel and query tile) stay within
        // L1/L2 until the tests read them, and a chunk lies within one block.
        let tiles = int8::tiles(&queries);
        let chunk_panels =
            (1usize << (CODED_CHUNK / tiles).max(1).ilog2()).min(codes::BLOCK_PANELS);
        let mut sums = std::mem::take(&mut self.sums);
        sums.resize(chunk_panels * tiles, Sums::default());
        let mut limits = std::mem::take(&mut self.code_limits);
        limits.clear();
        limits.extend((0..self.queries.len()).map(|q| (self.code_limit(q, &queries, codes), 0)));
        let mut made_for: Vec<f64> = (0..self.queries.len()).map(|q| self.threshold(q)).collect();
        let mut block = usize::MAX;
        let fused = fused_epilogue(self.code_level);
        for start in (0..codes.panels()).step_by(chunk_panels) {
            let chunk = start..(start + chunk_panels).min(codes.panels());
            if start / codes::BLOCK_PANELS != block {
                block = start / codes::BLOCK_PANELS;
                self.enter_block(&queries, codes, block, &mut limits, &mut made_for);
            }
            let ranges = codes.block_ranges(block);
            match fused {
                Epilogue::Plain => self.coded_chunk::<false, false>(
                    &faces,
                    codes,
                    ranges,
                    &queries,
                    chunk,
                    &mut sums,
                    &mut limits,
                ),
                #[cfg(target_arch = "x86_64")]
                // SAFETY: fused_epilogue checked that this CPU has AVX2 and FMA.
                Epilogue::Avx2 => unsafe {
                    self.coded_chunk_avx2(
                        &faces,
                        codes,
                        ranges,
                        &queries,
                        chunk,
                        &mut sums,
                        &mut limits,
                    )
                },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: fused_epilogue checked that this CPU has AVX-512F and FMA.
                Epilogue::Avx512 => unsafe {
                    self.coded_chunk_avx512(
                        &faces,
                        codes,
                        ranges,
                        &queries,
                        chunk,
                        &mut sums,
                        &mut limits,
                    )
                },
            }
        }
        self.sums = sums;
        self.code_limits = limits;
        self.query_codes = Some(queries);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn coded_chunk_avx2(
        &mut self,
        faces: &Faces,
        codes: &FaceCodes,
        ranges: &Ranges,
        queries: &QueryCodes,
        chunk: std::ops::Range<usize>,
        sums: &mut [Sums],
        limits: &mut [(CodeLimit, i32)],
    ) {
        self.coded_chunk::<true, false>(faces, codes, ranges, queries, chunk, sums, limits)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vl,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn coded_chunk_avx512(
        &mut self,
        faces: &Faces,
        codes: &FaceCodes,
        ranges: &Ranges,
        queries: &QueryCodes,
        chunk: std::ops::Range<usize>,
        sums: &mut [Sums],
        limits: &mut [(CodeLimit, i32)],
    ) {
        self.coded_chunk::<true, true>(faces, codes, ranges, queries, chunk, sums, limits)
    }

    /// Gives every query an N-th score to prune with before the scan starts. Scanned in the
    /// order it lies in, a query's N-th score rises from nothing: in its first thousands of
    /// faces nearly every face beats it and is re-scored in f64, most of a query's re-scoring in
    /// a pass. Instead, the integer sums of the batch's first [`WARM_UP_PANELS`] panels rank
    /// its faces by the approximate score they give; the 2N ranked first are scored exactly,
    /// and the N-th best exact score is a floor (N faces the query takes score at least that,
    /// so its N-th score will too; a face at the floor still passes). Twice N, because the
    /// approximation misorders close faces: the N-th of 2N exact scores is rarely below the
    /// sample's true N-th. These faces are scanned again with the rest, so nothing is offered
    /// twice. The floor is shared with the other workers.
    fn warm_up(&mut self, faces: &Faces, codes: &FaceCodes, queries: &QueryCodes) {
        let panels = codes.panels().min(WARM_UP_PANELS);
        let tiles = int8::tiles(queries);
        if panels == 0 || tiles == 0 {
            return;
        }
        let mut picks: Vec<WarmUpPicks> = self
            .queries
            .iter()
            .map(|p| WarmUpPicks::new(2 * p.query.max_results as usize))
            .collect();
        let step = WARM_UP_STEP.min(panels);
        let mut sums = vec![Sums::default(); step * tiles];
        for first in (0..panels).step_by(step) {
            let range = first..(first + step).min(panels);
            int8::sums(self.code_level, queries, codes, range.clone(), &mut sums);
            for (q, picks) in picks.iter_mut().enumerate() {
                let Some(numbers) = queries.numbers(q) else {
                    continue;
                };
                if picks.keep == 0 {
                    continue;
                }
                let (method, b) = (self.queries[q].query.method, numbers.scale as f32);
                for p in range.clone() {
                    let row = &sums[(p - first) * tiles + q / ROWS].0[q % ROWS];
                    let lanes = codes.lanes(p);
                    let (closeness, over) =
                        warm_up_closeness(method, b, row, lanes.alpha, lanes.norm, picks.least);
                    let mut over = over & codes.coded_lanes(p);
                    while over != 0 {
                        let lane = over.trailing_zeros() as usize;
                        over &= over - 1;
                        let position = p * codes::LANES + lane;
                        if self.admits(q, faces, codes.index(position)) {
                            picks.offer(closeness[lane], position as u32);
                        }
                    }
                }
            }
        }
        for (q, picks) in picks.into_iter().enumerate() {
            let n = self.queries[q].query.max_results as usize;
            let positions = picks.into_positions();
            self.rescored += positions.len() as u64;
            if n == 0 || positions.len() < n {
                continue;
            }
            let pairs: Vec<(usize, usize)> = positions
                .iter()
                .map(|&position| (q, position as usize))
                .collect();
            for &(_, position) in &pairs {
                prefetch(faces.vector(codes.index(position), self.dim));
            }
            let query = &self.queries[q].query;
            let mut scores: Vec<f64> = Vec::with_capacity(pairs.len());
            for group in pairs.chunks(DEFERRED_LANES) {
                let sums = self.coded_exact(faces, codes, group);
                scores.extend(sums[..group.len()].iter().filter_map(|s| s.within(query)));
            }
            if scores.len() < n {
                continue;
            }
            scores.select_nth_unstable_by(n - 1, |x, y| y.total_cmp(x));
            self.floors.raise(q, scores[n - 1]);
        }
    }

    /// Brings every query's coded limit up to date (it changes only when the query's N-th
    /// score rose: here through a consider, or through another worker's floor) and computes its
    /// integer threshold for block `block`, whose faces' numbers are narrower than the batch's.
    /// `limits` holds, per query, the limit, its threshold and the N-th score it was made for.
    fn enter_block(
        &self,
        queries: &QueryCodes,
        codes: &FaceCodes,
        block: usize,
        limits: &mut [(CodeLimit, i32)],
        made_for: &mut [f64],
    ) {
        let ranges = codes.block_ranges(block);
        for (q, (limit, threshold)) in limits.iter_mut().enumerate() {
            let t = self.threshold(q);
            if t != made_for[q] {
                made_for[q] = t;
                *limit = self.code_limit(q, queries, codes);
            }
            *threshold = limit.threshold(ranges);
        }
    }

    /// One chunk of panels (inside one block, whose numbers are `ranges`) against every query:
    /// the integer sums, then per panel each query's test (`limits`: each query's limit and its
    /// integer threshold), the passing faces considered exactly (each tightening that query's
    /// limit for the faces after it).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn coded_chunk<const FMA: bool, const AVX512: bool>(
        &mut self,
        faces: &Faces,
        codes: &FaceCodes,
        ranges: &Ranges,
        queries: &QueryCodes,
        chunk: std::ops::Range<usize>,
        sums: &mut [Sums],
        limits: &mut [(CodeLimit, i32)],
    ) {
        let nq = self.queries.len();
        let tiles = int8::tiles(queries);
        int8::sums(self.code_level, queries, codes, chunk.clone(), sums);
        let mut masks = [0u16; ROWS];
        let mut tile_limits = [CodeLimit::ALWAYS; ROWS];
        let mut thresholds = [-codes::THRESHOLD_LIMIT; ROWS];
        for t in 0..tiles {
            let first = t * ROWS;
            let rows = ROWS.min(nq - first);
            for r in 0..rows {
                (tile_limits[r], thresholds[r]) = limits[first + r];
            }
            for (k, p) in chunk.clone().enumerate() {
                let tile = &sums[k * tiles + t].0[..rows];
                let lanes = codes.lanes(p);
                let any = if AVX512 {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: AVX512 is true only in the AVX-512 wrapper's instance.
                    unsafe {
                        codes::test_rows_avx512(
                            tile,
                            &lanes,
                            &tile_limits[..rows],
                            &thresholds[..rows],
                            self.distances,
                            &mut masks[..rows],
                        )
                    }
                    #[cfg(not(target_arch = "x86_64"))]
                    unreachable!()
                } else {
                    let mut any = false;
                    for r in 0..rows {
                        masks[r] = if tile[r].iter().any(|&i| i >= thresholds[r]) {
                            codes::test_lanes::<FMA>(&tile[r], &lanes, &tile_limits[r])
                        } else {
                            0
                        };
                        any |= masks[r] != 0;
                    }
                    any
                };
                if !any {
                    continue;
                }
                let coded = codes.coded_lanes(p);
                for r in 0..rows {
                    let mut mask = masks[r] & coded;
                    let q = first + r;
                    // Once a query has an N-th score its candidates are rare and few of them
                    // would tighten its limit: they wait for the chunk's end, where their
                    // vectors' cache misses overlap. Before that, each one tightens it.
                    if mask != 0 && self.threshold(q) > f64::NEG_INFINITY {
                        while mask != 0 {
                            let position = p * codes::LANES + mask.trailing_zeros() as usize;
                            mask &= mask - 1;
                            let f = codes.index(position);
                            if self.admits(q, faces, f) {
                                self.deferred.push((q, position));
                                // Its vector is read at the chunk's end: fetched meanwhile.
                                prefetch(faces.vector(f, self.dim));
                            }
                        }
                    }
                    while mask != 0 {
                        let position = p * codes::LANES + mask.trailing_zeros() as usize;
                        mask &= mask - 1;
                        self.rescored += self.consider(q, faces, codes.index(position));
                        let limit = self.code_limit(q, queries, codes);
                        let updated = (limit, limit.threshold(ranges));
                        limits[q] = updated;
                        (tile_limits[r], thresholds[r]) = updated;
                    }
                }
                // Early in a scan a query's limit tightens quickly: a long wait would let
                // through candidates a fresher limit refuses.
                if self.deferred.len() >= DEFERRED_FLUSH {
                    self.consider_deferred(faces, queries, codes, ranges, limits);
                    for r in 0..rows {
                        (tile_limits[r], thresholds[r]) = limits[first + r];
                    }
                }
            }
        }
        if !self.deferred.is_empty() {
            self.consider_deferred(faces, queries, codes, ranges, limits);
        }
    }

    /// The coded test of query `q` (like [`Scanner::limit`] for float32) for the faces of
    /// `codes`: a face passes unless its f64 score is provably below the query's N-th score or
    /// outside its max distance.
    fn code_limit(&self, q: usize, queries: &QueryCodes, codes: &FaceCodes) -> CodeLimit {
        let Some(numbers) = queries.numbers(q) else {
            return CodeLimit::ALWAYS;
        };
        let p = &self.queries[q];
        let t = self.threshold(q);
        let dim = self.dim;
        let ranges = codes.ranges();
        let distance = |d2: f64| CodeLimit::distance(numbers, dim, d2, ranges);
        match p.query.method {
            Method::Cosine if t == f64::NEG_INFINITY => match p.query.max_distance {
                Some(max) => distance(max * max),
                None => CodeLimit::ALWAYS,
            },
            Method::Cosine => CodeLimit::cosine(numbers, dim, t),
            Method::Euclidean => match euclidean_reach(t, p.query.max_distance) {
                Some(d2) => distance(d2),
                None => CodeLimit::ALWAYS,
            },
        }
    }

    /// [`Scanner::scan`] for the queries of `self.active`.
    fn scan_chunk(&mut self, face_ids: &[i64], sources: &[u8], values: &[f32]) {
        let dim = self.dim;
        for start in (0..face_ids.len()).step_by(BLOCK) {
            let end = (start + BLOCK).min(face_ids.len());
            let faces = Faces {
                ids: &face_ids[start..end],
                sources: &sources[start..end],
                values: &values[start * dim..end * dim],
            };
            // Fewer queries than a tile: packing would not pay, each face row is scored as is.
            let rows = self.queries.len() < query_tile(self.level);
            match self.level {
                Level::Portable => self.process_block::<4, 8, false>(&faces, rows),
                #[cfg(target_arch = "x86_64")]
                // SAFETY: with_level checked that this CPU has AVX2 and FMA.
                Level::Avx2 => unsafe { self.process_block_avx2(&faces, rows) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: with_level checked that this CPU has AVX-512F/VL and FMA.
                Level::Avx512 => unsafe { self.process_block_avx512(&faces, rows) },
                #[cfg(not(target_arch = "x86_64"))]
                _ => self.process_block::<4, 8, false>(&faces, rows),
            }
            self.scored_pairs += ((end - start) * self.active.len()) as u64;
        }
    }

    fn panel_width(&self) -> usize {
        match self.level {
            Level::Portable => 8,
            Level::Avx2 => 16,
            Level::Avx512 => 16,
        }
    }

    /// One block at one level: norms (and packing), the faces outside the safe range exactly,
    /// then the rows or the tiles. Compiled into each level's target-feature wrapper.
    #[inline(always)]
    fn process_block<const QT: usize, const W: usize, const FMA: bool>(
        &mut self,
        faces: &Faces,
        rows: bool,
    ) {
        self.prepare_block::<FMA>(faces.values, !rows);
        // Faces outside the safe range are scored exactly against every query.
        for f in 0..faces.ids.len() {
            if !self.block.valid[f] {
                for q in self.active.clone() {
                    self.rescored += self.consider(q, faces, f);
                }
            }
        }
        if rows {
            self.scan_rows::<FMA>(faces)
        } else {
            self.scan_block::<QT, W, FMA>(faces)
        }
    }

    /// Packs the block and computes its faces' norms.
    #[inline(always)]
    fn prepare_block<const FMA: bool>(&mut self, values: &[f32], pack: bool) {
        let dim = self.dim;
        let w = self.panel_width();
        let faces = values.len() / dim;
        let padded = faces.div_ceil(w) * w;
        let block = &mut self.block;
        if pack {
            tile::pack(values, dim, w, &mut block.panels);
        }
        block.faces = faces;
        block.nx.clear();
        block.xn.clear();
        block.valid.clear();
        block.xmax = 0.0;
        for x in values.chunks_exact(dim) {
            let nx = dot_lanes::<FMA>(x, x);
            let valid = SAFE_NORM2.contains(&nx);
            let xn = nx.sqrt();
            block.nx.push(nx);
            block.xn.push(xn);
            block.valid.push(valid);
            if valid {
                block.xmax = block.xmax.max(xn);
            }
        }
        block.nx.resize(padded, 0.0);
        block.xn.resize(padded, 0.0);
        block.valid.resize(padded, false);
    }

    /// The pruning test of query `q` for the current block: the pair passes unless its f64
    /// score is provably below the query's current N-th score (or outside its max distance).
    fn limit(&self, q: usize) -> Limit {
        let p = &self.queries[q];
        let t = self.threshold(q);
        if !p.prunable {
            return Limit::ALWAYS;
        }
        let g = self.gamma;
        let (nq, qn) = (p.nq as f64, p.qn as f64);
        match p.query.method {
            // s = dot/(|x||q|) ≥ t ⇒ fl(dot) ≥ (t − m)·fl(|x|)·fl(|q|): the dot's error is at most
            // γ|x||q| and the norms' relative error about γ; m = 4γ + 16u covers both with the
            // roundings of the test itself.
            Method::Cosine => {
                if t == f64::NEG_INFINITY {
                    // Until N faces are kept, a max distance is the only test there is.
                    return match p.query.max_distance {
                        Some(max) => self.distance_limit(nq, qn, max * max),
                        None => Limit::ALWAYS,
                    };
                }
                let m = 4.0 * g + 16.0 * U;
                Limit {
                    s: 1.0,
                    u: 0.0,
                    v: ((t - m) * qn * (1.0 + 4.0 * U)).min((t - m) * qn * (1.0 - 4.0 * U)) as f32,
                    c: 0.0,
                }
            }
            // s = 1/(1+d) ≥ t ⇔ d² ≤ D², D = 1/t − 1 (and d ≤ max distance). In float32,
            // e = nx + nq − 2·dot has absolute error at most (γ + 3u)(|x| + |q|)²; the test
            // 2·dot ≥ nx + nq − D² − E keeps every face whose exact d² ≤ D², with E = 2(γ + 4u)
            // (xmax + |q|)² plus the rounding of the constant itself.
            Method::Euclidean => match euclidean_reach(t, p.query.max_distance) {
                Some(d2) => self.distance_limit(nq, qn, d2),
                None => Limit::ALWAYS,
            },
        }
    }

    /// The test `d² ≤ d2` in the dot domain: 2·dot ≥ nx + nq − d2 − E.
    fn distance_limit(&self, nq: f64, qn: f64, d2: f64) -> Limit {
        let reach = self.block.xmax as f64 + qn;
        let e = 2.0 * (self.gamma + 4.0 * U) * reach * reach + 8.0 * U * (nq + d2);
        Limit {
            s: 2.0,
            u: 1.0,
            v: 0.0,
            c: (nq - d2 - e) as f32,
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn process_block_avx2(&mut self, faces: &Faces, rows: bool) {
        self.process_block::<6, 16, true>(faces, rows)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vl,fma")]
    unsafe fn process_block_avx512(&mut self, faces: &Faces, rows: bool) {
        self.process_block::<8, 16, true>(faces, rows)
    }

    /// Each face row against each query, unpacked (a handful of queries): one pass over the
    /// block at memory speed.
    #[inline(always)]
    fn scan_rows<const FMA: bool>(&mut self, faces: &Faces) {
        let dim = self.dim;
        let nq = self.queries.len();
        let mut limits: Vec<Limit> = (0..nq).map(|q| self.limit(q)).collect();
        for (f, x) in faces.values.chunks_exact(dim).enumerate() {
            if !self.block.valid[f] {
                continue;
            }
            let (nx, xn) = (self.block.nx[f], self.block.xn[f]);
            for (q, limit) in limits.iter_mut().enumerate() {
                let dot = dot_lanes::<FMA>(x, &self.matrix[q * dim..(q + 1) * dim]);
                if dot * limit.s >= nx * limit.u + xn * limit.v + limit.c {
                    self.rescored += self.consider(q, faces, f);
                    *limit = self.limit(q);
                }
            }
        }
    }

    /// Every query tile over every panel of the packed block; the pairs that pass their limit
    /// are considered exactly.
    #[inline(always)]
    fn scan_block<const QT: usize, const W: usize, const FMA: bool>(&mut self, faces: &Faces) {
        let dim = self.dim;
        let panels = faces.ids.len().div_ceil(W);
        let mut limits = [Limit::ALWAYS; QT];
        for q0 in self.active.clone().step_by(QT) {
            let live = QT.min(self.active.end - q0);
            for (i, limit) in limits.iter_mut().enumerate() {
                // Padding rows never pass (their masks are ignored anyway).
                *limit = if i < live {
                    self.limit(q0 + i)
                } else {
                    Limit::ALWAYS
                };
            }
            for p in 0..panels {
                let masks = tile::tile::<QT, W, FMA>(
                    dim,
                    &self.matrix[q0 * dim..(q0 + QT) * dim],
                    &self.block.panels[p * dim * W..(p + 1) * dim * W],
                    &self.block.nx[p * W..(p + 1) * W],
                    &self.block.xn[p * W..(p + 1) * W],
                    &limits,
                );
                for (i, &mask) in masks.iter().enumerate().take(live) {
                    let mut mask = mask;
                    while mask != 0 {
                        let lane = mask.trailing_zeros() as usize;
                        mask &= mask - 1;
                        let f = p * W + lane;
                        if f < faces.ids.len() && self.block.valid[f] {
                            self.rescored += self.consider(q0 + i, faces, f);
                            limits[i] = self.limit(q0 + i);
                        }
                    }
                }
            }
        }
    }

    /// Scores face `f` of the block exactly for query `q` and offers it; returns 1 if it was
    /// re-scored in f64.
    #[inline(never)]
    fn consider(&mut self, q: usize, faces: &Faces, f: usize) -> u64 {
        if !self.admits(q, faces, f) {
            return 0;
        }
        let x = faces.vector(f, self.dim);
        let [mut sums] = exact_sums::<1, true, true>([x], [&self.queries[q].query.encoding]);
        sums.nq = self.queries[q].exact_nq;
        self.offer(q, faces, f, sums);
        1
    }

    /// Whether query `q` takes face `f` at all: its source filter, and not itself.
    #[inline(always)]
    fn admits(&self, q: usize, faces: &Faces, f: usize) -> bool {
        let query = &self.queries[q].query;
        query.filter.accepts(faces.sources[f]) && query.exclude_self != Some(faces.ids[f])
    }

    /// Offers face `f`, of exact sums `sums`, to query `q` (unless beyond its max distance),
    /// and shares the query's N-th score with the other workers.
    fn offer(&mut self, q: usize, faces: &Faces, f: usize, sums: ExactSums) {
        let p = &mut self.queries[q];
        let Some(score) = sums.within(&p.query) else {
            return;
        };
        let (face_id, source) = (faces.ids[f], faces.sources[f]);
        p.top.offer(Match {
            face_id,
            source,
            score,
        });
        self.floors.offer(q, score);
    }

    /// The exact sums of a group of 1 to [`DEFERRED_LANES`] (query, position) pairs of a coded
    /// batch, in the group's order, with the faces' and the queries' squared norms known
    /// ([`exact_norm2`]); distances only when a query needs them. A short group is padded with
    /// its last pair (the sums past it are to be ignored): a group costs the time of one pair's
    /// chain of additions, so that is no dearer than scoring its pairs one by one.
    #[inline(always)]
    fn coded_exact(
        &self,
        faces: &Faces,
        codes: &FaceCodes,
        group: &[(usize, usize)],
    ) -> [ExactSums; DEFERRED_LANES] {
        let pairs: [(usize, usize); DEFERRED_LANES] =
            std::array::from_fn(|k| group[k.min(group.len() - 1)]);
        let xs = pairs.map(|(_, position)| faces.vector(codes.index(position), self.dim));
        let qs = pairs.map(|(q, _)| self.queries[q].query.encoding.as_slice());
        let mut sums = if self.distances {
            exact_sums::<DEFERRED_LANES, true, false>(xs, qs)
        } else {
            exact_sums::<DEFERRED_LANES, false, false>(xs, qs)
        };
        for (s, (q, position)) in sums.iter_mut().zip(pairs) {
            s.nx = codes.exact_norm2(position);
            s.nq = self.queries[q].exact_nq;
        }
        sums
    }

    /// Considers the candidates deferred during a chunk (`self.deferred`: query and position in
    /// the codes): scored [`DEFERRED_LANES`] at a time and offered in the order they were
    /// found; then their queries' coded limits are brought up to date for the chunks after.
    fn consider_deferred(
        &mut self,
        faces: &Faces,
        queries: &QueryCodes,
        codes: &FaceCodes,
        ranges: &Ranges,
        limits: &mut [(CodeLimit, i32)],
    ) {
        let deferred = std::mem::take(&mut self.deferred);
        for group in deferred.chunks(DEFERRED_LANES) {
            let sums = self.coded_exact(faces, codes, group);
            for (&(q, position), sums) in group.iter().zip(sums) {
                self.offer(q, faces, codes.index(position), sums);
            }
        }
        self.rescored += deferred.len() as u64;
        for &(q, _) in &deferred {
            let limit = self.code_limit(q, queries, codes);
            limits[q] = (limit, limit.threshold(ranges));
        }
        self.deferred = deferred;
        self.deferred.clear();
    }

    /// Each query's kept matches, best first, keyed by history id.
    pub fn into_results(self) -> Vec<(i64, Vec<Match>)> {
        self.queries
            .into_iter()
            .map(|p| (p.query.history_id, p.top.into_sorted()))
            .collect()
    }
}

/// The level that scans a calibration block fastest (~20 ms in all); levels give identical
/// results, so the choice only affects speed. Portable never beats a vector level, so it is only
/// the answer when there is no other. Rounds alternate the levels and each keeps its best time:
/// timing one level after the other let a noisy neighbour or a cold start pick the slower one.
fn fastest(levels: &[Level]) -> Level {
    let vector: Vec<Level> = levels
        .iter()
        .copied()
        .filter(|l| *l != Level::Portable)
        .collect();
    if vector.len() <= 1 {
        return vector.first().copied().unwrap_or(Level::Portable);
    }
    let (dim, faces, queries) = (128, 4096, 48);
    let mut values = synthetic::SeededValues::new(7);
    let queries = synthetic::queries(
        &values.take(queries * dim),
        dim,
        queries,
        Method::Cosine,
        10,
    );
    let values = values.take(faces * dim);
    let ids: Vec<i64> = (0..faces as i64).collect();
    let sources = vec![b'A'; faces];
    let mut best = vec![std::time::Duration::MAX; vector.len()];
    for _round in 0..6 {
        for (level, best) in vector.iter().zip(&mut best) {
            let mut scanner = Scanner::with_level(&queries, dim, *level);
            let started = std::time::Instant::now();
            scanner.scan(&ids, &sources, &values);
            *best = (*best).min(started.elapsed());
            std::hint::black_box(scanner.into_results());
        }
    }
    let fastest = (0..vector.len()).min_by_key(|&i| best[i]).unwrap_or(0);
    vector[fastest]
}

/// Queries per tile at `level` (the query matrix is padded to a multiple of it); must match the
/// `QT` each level's `scan_block` is instantiated with.
fn query_tile(level: Level) -> usize {
    match level {
        Level::Portable => 4,
        Level::Avx2 => 6,
        Level::Avx512 => 8,
    }
}

/// The squared distance a euclidean query's candidates must be within: the N-th score `t`'s
/// (`s = 1/(1+d)`, so `d = 1/t − 1`) and the max distance, whichever is tighter; None while
/// neither limits anything.
fn euclidean_reach(t: f64, max_distance: Option<f64>) -> Option<f64> {
    let mut d2 = if t > 0.0 {
        let d = 1.0 / t - 1.0;
        d * d
    } else {
        f64::INFINITY
    };
    if let Some(max) = max_distance {
        d2 = d2.min(max * max);
    }
    (d2 != f64::INFINITY).then_some(d2)
}

/// How the coded test is compiled: with fused multiply-adds on the widest vectors there are.
#[derive(Debug, Clone, Copy)]
enum Epilogue {
    Plain,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

/// The epilogue for an integer level: a portable level keeps the portable test, the others the
/// widest float unit the CPU has.
fn fused_epilogue(level: CodeLevel) -> Epilogue {
    #[cfg(target_arch = "x86_64")]
    if level != CodeLevel::Portable && is_x86_feature_detected!("fma") {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl") {
            return Epilogue::Avx512;
        }
        if is_x86_feature_detected!("avx2") {
            return Epilogue::Avx2;
        }
    }
    let _ = level;
    Epilogue::Plain
}

/// One block of faces as the caller gave it.
struct Faces<'a> {
    ids: &'a [i64],
    sources: &'a [u8],
    values: &'a [f32],
}

impl<'a> Faces<'a> {
    /// Face `f`'s encoding (`dim` values).
    fn vector(&self, f: usize, dim: usize) -> &'a [f32] {
        &self.values[f * dim..(f + 1) * dim]
    }
}
