//! Int8 codes: every face and query as 8-bit integers times a scale of its own, and the bound
//! that turns their integer dot product into a sound prefilter.
//!
//! A vector `x` is stored as `x = a·c + r`: a scale `a` (float32, `max|xᵢ| / 127`), codes
//! `cᵢ = round(xᵢ / a)` in `[-127, 127]`, and a residual `r` of which only an upper bound on its
//! norm `ρ ≥ ‖r‖` is kept. A query is coded the same way: `q = b·d + e`, `ε ≥ ‖e‖`. Then, with
//! `I = c·d` the exact integer dot product,
//!
//! ```text
//! x·q = a·b·I + b·(r·d) + x·e,   so   |x·q − a·b·I| ≤ ρ·b·‖d‖ + ‖x‖·ε
//! ```
//!
//! Divided by `b·‖x‖`, every term is free of the vectors' scales, which is what the per-face
//! numbers hold: `α = a/‖x‖` and `β ≥ ρ/‖x‖`. A face can reach a query's current N-th score only
//! if `I·α + β·‖d‖ + ‖x‖·v + ‖x‖⁻¹·r ≥ c`, where [`CodeLimit`] folds the N-th score, the query's
//! numbers and a margin for the float32 evaluation of the test itself into `v`, `r` and `c`
//! (cosine: `v = r = 0`). Faces that pass are re-scored in f64 as in the float32 path, so the
//! codes decide only how much is re-scored, never a result (ARCHITECTURE.md: Invariants).
//!
//! The residual is computed exactly: `a` is a float32 and `cᵢ` has 7 bits, so `a·cᵢ` and
//! `xᵢ − a·cᵢ` are exact in f64 (their bits span fewer than 53 places); only the sums of squares
//! round, and the bounds are widened by their worst-case error.
//!
//! Layout ([`FaceCodes`]): faces in order of `α` (so that a block of them shares one nearly
//! exact integer threshold), in panels of [`LANES`], each panel `dim/4` lines of 64 bytes, line
//! `g` holding dimensions `4g..4g+4` of its 16 faces as `c + 128` (unsigned). That line is one
//! AVX-512 VNNI operand, and 16 consecutive lines are one AMX tile, so every level reads the
//! same bytes. Codes are padded with zeros to a multiple of [`STEP`] dimensions.

use super::SAFE_NORM2;

/// Faces per panel: one 512-bit register of 32-bit sums.
pub const LANES: usize = 16;
/// Dimensions per AMX tile step; codes are zero-padded to a multiple of it.
pub const STEP: usize = 64;
/// Largest dimension coded: the sums `255·127·D` stay below 2³¹.
pub const MAX_DIM: usize = 65_536;
/// The bound of every integer threshold ([`CodeLimit::threshold`]).
pub const THRESHOLD_LIMIT: i32 = 1 << 30;
/// Unit roundoff of float32.
const U32: f64 = f32::EPSILON as f64 / 2.0;
/// Relative margin on every test: the float32 evaluation of a test has at most a dozen
/// roundings of terms no larger than [`CodeLimit`]'s magnitude bound.
const TEST_MARGIN: f64 = 32.0 * U32;

/// One 64-byte line: a group of 4 dimensions of a panel's 16 faces, or 64 bytes of a query row.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub struct Line(pub [u8; 64]);

/// Dimensions a coded vector of `dim` takes, padded.
pub fn padded_dim(dim: usize) -> usize {
    dim.max(1).next_multiple_of(STEP)
}

/// Whether vectors of `dim` can be coded.
pub fn codable(dim: usize) -> bool {
    (1..=MAX_DIM).contains(&dim)
}

/// What coding one vector found out about it (exact-real bounds, as f64).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coded {
    /// The scale `a` (a float32 value).
    pub scale: f32,
    /// `‖x‖`, computed in f64, and bounds on the exact norm around it.
    pub norm: f64,
    norm_lo: f64,
    /// `‖x‖²` as computed.
    pub norm2: f64,
    /// An upper bound on `‖x − a·c‖`.
    pub residual_hi: f64,
}

/// Codes `x` into `codes` (`codes.len() ≥ x.len()`, the rest left as is). None when the vector
/// is outside the range where the bound holds (a value not finite, a squared norm outside the
/// float32 path's safe range): such a face or query is always scored exactly.
pub fn quantize(x: &[f32], codes: &mut [i8]) -> Option<Coded> {
    // Sums in 8 lanes, so that the loops vectorize (the bounds below hold in any order); a NaN
    // or an infinity makes the squared norm NaN or infinite.
    const L: usize = 8;
    let (mut max, mut norm2) = ([0.0f64; L], [0.0f64; L]);
    for chunk in x.chunks(L) {
        for (i, &v) in chunk.iter().enumerate() {
            let v = v as f64;
            max[i] = max[i].max(v.abs());
            norm2[i] += v * v;
        }
    }
    let max = max.into_iter().fold(0.0f64, f64::max);
    let norm2: f64 = norm2.into_iter().sum();
    if !norm2.is_finite() || !SAFE_NORM2.contains(&(norm2 as f32)) || !codable(x.len()) {
        return None;
    }
    let scale = (max / 127.0) as f32;
    let a = scale as f64;
    // Any integer code is sound (the residual below is exact); the nearest one keeps it small.
    let inv = 1.0 / a;
    let mut residual2 = [0.0f64; L];
    for (xs, cs) in x.chunks(L).zip(codes.chunks_mut(L)) {
        for (i, (&v, code)) in xs.iter().zip(cs.iter_mut()).enumerate() {
            let y = v as f64 * inv;
            // Rounding half away from zero by truncation: no libm call on the baseline target.
            let c = ((y + 0.5f64.copysign(y)) as i32).clamp(-127, 127) as f64;
            *code = c as i8;
            // Exact: a has 24 significant bits and c 7, and where c ≠ 0, |v| ≥ a/2.
            let r = v as f64 - a * c;
            residual2[i] += r * r;
        }
    }
    let residual2: f64 = residual2.into_iter().sum();
    // Each sum of n squares (exact products of ≤ 32-bit numbers rounded once) is within
    // (n + 1)·u of the exact sum in any order; the square root adds half an ulp.
    let rel = (x.len() + 4) as f64 * f64::EPSILON;
    let norm = norm2.sqrt();
    Some(Coded {
        scale,
        norm,
        norm_lo: norm * (1.0 - rel),
        norm2,
        residual_hi: residual2.sqrt() * (1.0 + rel),
    })
}

/// The smallest float32 at least `v`.
fn f32_up(v: f64) -> f32 {
    let f = v as f32;
    if (f as f64) < v { f.next_up() } else { f }
}

/// The largest float32 at most `v`.
fn f32_down(v: f64) -> f32 {
    let f = v as f32;
    if (f as f64) > v { f.next_down() } else { f }
}

/// A batch of faces' codes in the kernels' layout, with the per-face numbers of the test.
pub struct FaceCodes {
    dim: usize,
    /// Lines per panel (`padded_dim / 4`).
    lines: usize,
    faces: usize,
    /// `[panel][line]`.
    panels: Vec<Line>,
    /// Per face, padded to whole panels: `a/‖x‖`, an upper bound on `ρ/‖x‖`, `‖x‖` and `1/‖x‖`
    /// (zero for faces that are not coded).
    alpha: Vec<f32>,
    beta: Vec<f32>,
    norm: Vec<f32>,
    inv_norm: Vec<f32>,
    /// Per position: `‖x‖²` summed in f64 in index order, the bits [`super::Scanner`]'s exact
    /// re-scoring would sum each time (so a candidate's cosine costs one chain, not three).
    exact_norm2: Vec<f64>,
    /// Per panel: the lanes holding a coded face.
    coded: Vec<u16>,
    /// Faces with codes: positions `0..coded_faces` (the others follow).
    coded_faces: usize,
    /// The batch index of the face at each position (faces are placed in order of `α`);
    /// empty once [`FaceCodes::take_order`] handed it over (positions are indices).
    order: Vec<u32>,
    /// The extremes of the per-face numbers over all coded faces, and per block of
    /// [`BLOCK_PANELS`] panels.
    ranges: Ranges,
    block_ranges: Vec<Ranges>,
}

/// Panels per block: faces are placed in order of `α`, so a block's faces have nearly the
/// same `α` and its integer thresholds ([`CodeLimit::threshold`]) are nearly exact.
pub const BLOCK_PANELS: usize = 64;

/// The extremes of the per-face numbers of a batch's coded faces: what a [`CodeLimit`]'s
/// margin and its integer threshold ([`CodeLimit::threshold`]) are made of.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranges {
    /// Smallest and largest `α`.
    pub alpha: (f32, f32),
    /// Largest `β`.
    pub beta_max: f32,
    /// Smallest and largest `‖x‖`.
    pub norm: (f32, f32),
    /// Smallest and largest `1/‖x‖`.
    pub inv_norm: (f32, f32),
}

impl Ranges {
    const EMPTY: Ranges = Ranges {
        alpha: (f32::INFINITY, 0.0),
        beta_max: 0.0,
        norm: (f32::INFINITY, 0.0),
        inv_norm: (f32::INFINITY, 0.0),
    };

    fn add(&mut self, (alpha, beta, norm, inv_norm): (f32, f32, f32, f32)) {
        let widen = |r: &mut (f32, f32), v: f32| *r = (r.0.min(v), r.1.max(v));
        widen(&mut self.alpha, alpha);
        widen(&mut self.norm, norm);
        widen(&mut self.inv_norm, inv_norm);
        self.beta_max = self.beta_max.max(beta);
    }
}

impl std::fmt::Debug for FaceCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaceCodes")
            .field("dim", &self.dim)
            .field("faces", &self.faces)
            .finish()
    }
}

impl FaceCodes {
    /// Codes the faces `values` (row-major, `dim` each; `dim` must be [`codable`]), placed in
    /// order of `α` (the faces without codes last).
    pub fn new(values: &[f32], dim: usize) -> FaceCodes {
        assert!(codable(dim), "cannot code {dim}-d faces");
        let faces = values.len() / dim;
        let panels = faces.div_ceil(LANES);
        let lines = padded_dim(dim) / 4;
        let padded = panels * LANES;
        let mut rows = vec![0i8; faces * dim];
        let coded: Vec<Option<Coded>> = values
            .chunks_exact(dim)
            .zip(rows.chunks_exact_mut(dim))
            .map(|(x, row)| quantize(x, row))
            .collect();
        let alpha = |c: &Coded| (c.scale as f64 / c.norm) as f32;
        let mut order: Vec<u32> = (0..faces as u32).collect();
        order.sort_by(|&a, &b| match (&coded[a as usize], &coded[b as usize]) {
            (Some(x), Some(y)) => alpha(x).total_cmp(&alpha(y)),
            (x, y) => y.is_some().cmp(&x.is_some()),
        });
        let mut codes = FaceCodes {
            dim,
            lines,
            faces,
            // Code 0 everywhere (stored as 128), so padding adds nothing to a sum.
            panels: vec![Line([128; 64]); panels * lines],
            alpha: vec![0.0; padded],
            beta: vec![0.0; padded],
            norm: vec![0.0; padded],
            inv_norm: vec![0.0; padded],
            exact_norm2: vec![0.0; faces],
            coded: vec![0; panels],
            coded_faces: coded.iter().filter(|c| c.is_some()).count(),
            order,
            ranges: Ranges::EMPTY,
            block_ranges: vec![Ranges::EMPTY; panels.div_ceil(BLOCK_PANELS)],
        };
        for position in 0..faces {
            let f = codes.order[position] as usize;
            codes.exact_norm2[position] = super::exact_norm2(&values[f * dim..(f + 1) * dim]);
            let Some(c) = &coded[f] else {
                continue;
            };
            let (panel, lane) = (position / LANES, position % LANES);
            for (d, &code) in rows[f * dim..(f + 1) * dim].iter().enumerate() {
                codes.panels[panel * lines + d / 4].0[lane * 4 + d % 4] = (code as i16 + 128) as u8;
            }
            let numbers = (
                alpha(c),
                f32_up(c.residual_hi / c.norm_lo * (1.0 + 1e-12)),
                c.norm as f32,
                (1.0 / c.norm) as f32,
            );
            (
                codes.alpha[position],
                codes.beta[position],
                codes.norm[position],
                codes.inv_norm[position],
            ) = numbers;
            codes.coded[panel] |= 1 << lane;
            codes.ranges.add(numbers);
            codes.block_ranges[panel / BLOCK_PANELS].add(numbers);
        }
        codes
    }

    /// The batch index of the face at `position`.
    #[inline]
    pub fn index(&self, position: usize) -> usize {
        match self.order.get(position) {
            Some(&index) => index as usize,
            None => position,
        }
    }

    /// `‖x‖²` of the face at `position`, summed in f64 in index order.
    #[inline]
    pub fn exact_norm2(&self, position: usize) -> f64 {
        self.exact_norm2[position]
    }

    /// Hands over the batch index of the face at each position and indexes faces by position
    /// from then on: for an owner that places its faces in the codes' order, so that the faces
    /// re-scored together (neighbours in the codes) are neighbours in memory too.
    pub fn take_order(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.order)
    }

    /// The extremes of the per-face numbers of block `b` (panels `b·BLOCK_PANELS..`).
    pub fn block_ranges(&self, b: usize) -> &Ranges {
        &self.block_ranges[b]
    }

    /// Faces coded (including those outside the safe range, which have no codes).
    pub fn len(&self) -> usize {
        self.faces
    }

    /// Whether there are no faces.
    pub fn is_empty(&self) -> bool {
        self.faces == 0
    }

    /// The dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of panels.
    pub fn panels(&self) -> usize {
        self.coded.len()
    }

    /// Lines per panel.
    pub fn lines(&self) -> usize {
        self.lines
    }

    /// The lines of panel `p`.
    pub fn panel(&self, p: usize) -> &[Line] {
        &self.panels[p * self.lines..(p + 1) * self.lines]
    }

    /// The lanes of panel `p` holding a coded face.
    pub fn coded_lanes(&self, p: usize) -> u16 {
        self.coded[p]
    }

    /// The positions of the faces without codes (placed last), which must be scored exactly.
    pub fn uncoded(&self) -> std::ops::Range<usize> {
        self.coded_faces..self.faces
    }

    /// Whether the face at `position` has codes (otherwise it must be scored exactly).
    pub fn is_coded(&self, position: usize) -> bool {
        self.coded[position / LANES] & (1 << (position % LANES)) != 0
    }

    /// The per-face numbers of panel `p`: `(α, β, ‖x‖, 1/‖x‖)`.
    pub fn lanes(&self, p: usize) -> PanelNumbers<'_> {
        let r = p * LANES..(p + 1) * LANES;
        PanelNumbers {
            alpha: lanes(&self.alpha[r.clone()]),
            beta: lanes(&self.beta[r.clone()]),
            norm: lanes(&self.norm[r.clone()]),
            inv_norm: lanes(&self.inv_norm[r]),
        }
    }

    /// The extremes of the per-face numbers (over no faces when none is coded).
    pub fn ranges(&self) -> &Ranges {
        &self.ranges
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.panels.len() * 64 + self.alpha.len() * 16 + self.coded.len() * 2 + self.order.len() * 4
    }
}

fn lanes(v: &[f32]) -> &[f32; LANES] {
    v.try_into().expect("a panel has LANES faces")
}

/// One panel's per-face numbers.
#[derive(Clone, Copy)]
pub struct PanelNumbers<'a> {
    /// `a/‖x‖`.
    pub alpha: &'a [f32; LANES],
    /// At least `ρ/‖x‖`.
    pub beta: &'a [f32; LANES],
    /// `‖x‖`.
    pub norm: &'a [f32; LANES],
    /// `1/‖x‖`.
    pub inv_norm: &'a [f32; LANES],
}

/// One query's codes and the numbers its limits are made of.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueryNumbers {
    /// The scale `b`.
    pub scale: f64,
    /// `‖d‖`, rounded up to a float32.
    pub code_norm: f32,
    /// `‖q‖` and `‖q‖²` as computed in f64.
    pub norm: f64,
    pub norm2: f64,
    /// An upper bound on `‖q − b·d‖`.
    pub residual_hi: f64,
}

/// The queries of one scan, coded: rows of `padded_dim` signed codes, padded with zero rows to
/// a multiple of 16 (one AMX tile of rows).
pub struct QueryCodes {
    /// Bytes per row.
    stride: usize,
    rows: Vec<Line>,
    /// Per query: its numbers, or None if it is outside the range where the bound holds (every
    /// face is then a candidate for it).
    numbers: Vec<Option<QueryNumbers>>,
    /// Where each query's integer sums start, `−128·Σd`, so that summing `d·(c + 128)` gives
    /// `d·c`: one AMX tile per 16 queries, each row its query's start 16 times (zero for
    /// padding rows).
    start_tiles: Vec<super::int8::Sums>,
}

impl QueryCodes {
    /// Codes `queries` (each of `dim` values; `dim` must be [`codable`]).
    pub fn new<'a>(queries: impl ExactSizeIterator<Item = &'a [f32]>, dim: usize) -> QueryCodes {
        assert!(codable(dim), "cannot code {dim}-d queries");
        let stride = padded_dim(dim);
        let count = queries.len();
        let padded = count.next_multiple_of(16);
        let mut codes = QueryCodes {
            stride,
            rows: vec![Line([0; 64]); padded * stride / 64],
            numbers: Vec::with_capacity(count),
            start_tiles: vec![super::int8::Sums::default(); padded / 16],
        };
        let mut row = vec![0i8; dim];
        for (i, q) in queries.enumerate() {
            let numbers = quantize(q, &mut row).map(|coded| {
                let norm2: i64 = row.iter().map(|&c| c as i64 * c as i64).sum();
                QueryNumbers {
                    scale: coded.scale as f64,
                    code_norm: f32_up((norm2 as f64).sqrt() * (1.0 + 1e-12)),
                    norm: coded.norm,
                    norm2: coded.norm2,
                    residual_hi: coded.residual_hi,
                }
            });
            if numbers.is_some() {
                let bytes = codes.row_mut(i);
                for (b, &c) in bytes.iter_mut().zip(&row) {
                    *b = c as u8;
                }
                let sum: i64 = row.iter().map(|&c| c as i64).sum();
                codes.start_tiles[i / 16].0[i % 16] = [(-128 * sum) as i32; LANES];
            }
            codes.numbers.push(numbers);
        }
        codes
    }

    /// Where the integer sums start, as AMX tiles, one per 16 queries.
    pub fn start_tiles(&self) -> &[super::int8::Sums] {
        &self.start_tiles
    }

    fn row_mut(&mut self, i: usize) -> &mut [u8] {
        let per = self.stride / 64;
        let lines = &mut self.rows[i * per..(i + 1) * per];
        // SAFETY: `Line` is 64 plain bytes with no padding, so `per` lines are `stride` bytes.
        unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr() as *mut u8, per * 64) }
    }

    /// Queries coded.
    pub fn len(&self) -> usize {
        self.numbers.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.numbers.is_empty()
    }

    /// Bytes per row.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Row `i`'s signed codes (`stride` bytes; zero past the dimension and for padding rows).
    pub fn row(&self, i: usize) -> &[i8] {
        let per = self.stride / 64;
        let lines = &self.rows[i * per..(i + 1) * per];
        // SAFETY: as in `row_mut`; i8 and u8 have the same layout.
        unsafe { std::slice::from_raw_parts(lines.as_ptr() as *const i8, per * 64) }
    }

    /// Where the integer sum of row `i` starts.
    pub fn start(&self, i: usize) -> i32 {
        self.start_tiles[i / 16].0[i % 16][0]
    }

    /// Query `i`'s numbers (None: not coded, every face is its candidate).
    pub fn numbers(&self, i: usize) -> Option<&QueryNumbers> {
        self.numbers[i].as_ref()
    }
}

/// The test of one query against faces: face `f` is a candidate when
/// `I·α + β·w + ‖x‖·v + ‖x‖⁻¹·r ≥ c` (with the panel's numbers of `f`), evaluated in float32.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CodeLimit {
    /// Factor on `β` (`‖d‖`).
    pub w: f32,
    /// Factor on `‖x‖`.
    pub v: f32,
    /// Factor on `1/‖x‖`.
    pub r: f32,
    /// Threshold.
    pub c: f32,
}

impl CodeLimit {
    /// Every face is a candidate.
    pub const ALWAYS: CodeLimit = CodeLimit {
        w: 0.0,
        v: 0.0,
        r: 0.0,
        c: f32::NEG_INFINITY,
    };

    /// Cosine: the faces whose score `x·q/(‖x‖‖q‖)` may be at least `t`.
    ///
    /// `x·q ≤ a·b·I + ρ·b·‖d‖ + ‖x‖·ε`, so `score ≥ t` implies, divided by `b·‖x‖`,
    /// `I·α + β·‖d‖ ≥ (t·‖q‖ − ε)/b`.
    pub fn cosine(q: &QueryNumbers, dim: usize, t: f64) -> CodeLimit {
        let b = q.scale;
        let w = q.code_norm as f64;
        let c = (t * q.norm - q.residual_hi) / b;
        let magnitude =
            w * (1.0 + 2.0 * beta_max(dim)) + (t.abs() * q.norm + q.residual_hi) / b + c.abs();
        CodeLimit {
            w: q.code_norm,
            v: 0.0,
            r: 0.0,
            c: f32_down(c - TEST_MARGIN * magnitude),
        }
    }

    /// Euclidean distance: the faces within `sqrt(d2)` of the query.
    ///
    /// `‖x − q‖² = ‖x‖² + ‖q‖² − 2·x·q ≤ d2` implies, with the bound on `x·q` and divided by
    /// `2·b·‖x‖`, `I·α + β·‖d‖ − ‖x‖/(2b) + (d2 − ‖q‖²)/(2b·‖x‖) ≥ −ε/b`. `ranges` bound the
    /// faces' `‖x‖` and `1/‖x‖`, for the margin.
    pub fn distance(q: &QueryNumbers, dim: usize, d2: f64, ranges: &Ranges) -> CodeLimit {
        let (norm_max, inv_norm_max) = (ranges.norm.1, ranges.inv_norm.1);
        let b = q.scale;
        let w = q.code_norm as f64;
        let v = -1.0 / (2.0 * b);
        let r = (d2 - q.norm2) / (2.0 * b);
        let c = -q.residual_hi / b;
        let (xmax, imax) = (norm_max as f64 * 1.01, inv_norm_max as f64 * 1.01);
        let magnitude = w * (1.0 + 2.0 * beta_max(dim))
            + xmax * v.abs()
            + imax * (d2 + q.norm2) / (2.0 * b)
            + c.abs();
        CodeLimit {
            w: q.code_norm,
            v: v as f32,
            r: r as f32,
            c: f32_down(c - TEST_MARGIN * magnitude),
        }
    }

    /// The smallest integer sum `I` with which any face within `ranges` can pass: below it,
    /// `I·α + β·w + ‖x‖·v + ‖x‖⁻¹·r < c` for every such face, so a row of sums under it
    /// needs no float test. Within ±[`THRESHOLD_LIMIT`]: every sum of codes lies strictly
    /// inside (127·127·[`MAX_DIM`] < 2³⁰), so `-THRESHOLD_LIMIT` lets every face pass and
    /// `sum − threshold` cannot overflow.
    pub fn threshold(&self, ranges: &Ranges) -> i32 {
        if self.c == f32::NEG_INFINITY || ranges.alpha.1 <= 0.0 {
            return -THRESHOLD_LIMIT;
        }
        let (w, v, r) = (self.w as f64, self.v as f64, self.r as f64);
        // The largest the other terms can be over the batch: α·I must make up the rest.
        let norm = if v >= 0.0 {
            ranges.norm.1 as f64 * v
        } else {
            ranges.norm.0 as f64 * v
        };
        let inv = if r >= 0.0 {
            ranges.inv_norm.1 as f64 * r
        } else {
            ranges.inv_norm.0 as f64 * r
        };
        let rest = self.c as f64 - ranges.beta_max as f64 * w.max(0.0) - norm - inv;
        // I ≥ rest/α, smallest over the batch's α: the largest α if rest ≥ 0, else the
        // smallest. Lowered by one and a relative hair for the roundings of this division.
        let alpha = if rest >= 0.0 {
            ranges.alpha.1
        } else {
            ranges.alpha.0
        } as f64;
        let t = rest / alpha;
        let t = (t - t.abs() * 1e-9 - 1.0).floor();
        t.clamp(-THRESHOLD_LIMIT as f64, THRESHOLD_LIMIT as f64) as i32
    }
}

/// An upper bound on every face's `β`: `ρ ≤ (a/2)·√D` and `a ≤ ‖x‖/127` (to a float32
/// rounding).
fn beta_max(dim: usize) -> f64 {
    (dim as f64).sqrt() / 254.0 * 1.001
}

/// The test of [`CodeLimit`] for the 16 lanes of one panel: the bit mask of the lanes that are
/// candidates. `FMA` fuses the multiply-adds (inside a function compiled for FMA).
#[inline(always)]
pub fn test_lanes<const FMA: bool>(
    sums: &[i32; LANES],
    lanes: &PanelNumbers<'_>,
    limit: &CodeLimit,
) -> u16 {
    let mut mask = 0u16;
    for (i, &sum) in sums.iter().enumerate() {
        let s = sum as f32 * lanes.alpha[i];
        let s = if FMA {
            let s = lanes.beta[i].mul_add(limit.w, s);
            let s = lanes.norm[i].mul_add(limit.v, s);
            lanes.inv_norm[i].mul_add(limit.r, s)
        } else {
            s + lanes.beta[i] * limit.w + lanes.norm[i] * limit.v + lanes.inv_norm[i] * limit.r
        };
        mask |= u16::from(s >= limit.c) << i;
    }
    mask
}

/// [`test_lanes`] for the rows of a tile in AVX-512, each row first compared as integers
/// with its limit's [`CodeLimit::threshold`]: a row with no sum at or above it (nearly all)
/// costs a compare; the others the float test, with the panel's numbers loaded when first
/// needed. `distances` says whether any row's limit has `v` or `r` (a euclidean or
/// max-distance test); without, those two terms are zero and skipped. Returns the masks in
/// `masks` and whether any is non-zero.
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub unsafe fn test_rows_avx512(
    sums: &[[i32; LANES]],
    lanes: &PanelNumbers<'_>,
    limits: &[CodeLimit],
    thresholds: &[i32],
    distances: bool,
    masks: &mut [u16],
) -> bool {
    use std::arch::x86_64::*;
    // SAFETY: every pointer is to 16 f32 or i32 (arrays of LANES).
    unsafe {
        // Nearly always no row has a sum at its threshold: per row a subtraction and a
        // maximum (in two independent chains), then one compare for the tile, no branch; the
        // thresholds' bound keeps the differences from overflowing. The rare tile where a row
        // reaches its threshold is compared again row by row below; keeping which rows reached
        // here made the common case slower (a test and a shift per row).
        let difference = |row: &[i32; LANES], threshold: i32| {
            _mm512_sub_epi32(
                _mm512_loadu_si512(row.as_ptr() as *const __m512i),
                _mm512_set1_epi32(threshold),
            )
        };
        let (mut even, mut odd) = (_mm512_set1_epi32(i32::MIN), _mm512_set1_epi32(i32::MIN));
        let rows = sums.len().min(thresholds.len());
        for r in (0..rows - rows % 2).step_by(2) {
            even = _mm512_max_epi32(even, difference(&sums[r], thresholds[r]));
            odd = _mm512_max_epi32(odd, difference(&sums[r + 1], thresholds[r + 1]));
        }
        if rows % 2 == 1 {
            even = _mm512_max_epi32(even, difference(&sums[rows - 1], thresholds[rows - 1]));
        }
        let most = _mm512_max_epi32(even, odd);
        if _mm512_cmpge_epi32_mask(most, _mm512_setzero_si512()) == 0 {
            return false;
        }
        float_test_rows_avx512(sums, lanes, limits, thresholds, distances, masks)
    }
}

/// The rare part of [`test_rows_avx512`], out of line: each row compared again with its
/// threshold, and the float test of those that reach it.
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline(never)]
unsafe fn float_test_rows_avx512(
    sums: &[[i32; LANES]],
    lanes: &PanelNumbers<'_>,
    limits: &[CodeLimit],
    thresholds: &[i32],
    distances: bool,
    masks: &mut [u16],
) -> bool {
    use std::arch::x86_64::*;
    let mut any = false;
    // SAFETY: every pointer is to 16 f32 or i32 (arrays of LANES).
    unsafe {
        for (((row, limit), threshold), mask) in sums
            .iter()
            .zip(limits)
            .zip(thresholds)
            .zip(masks.iter_mut())
        {
            let i = _mm512_loadu_si512(row.as_ptr() as *const __m512i);
            if _mm512_cmpge_epi32_mask(i, _mm512_set1_epi32(*threshold)) == 0 {
                *mask = 0;
                continue;
            }
            let i = _mm512_cvtepi32_ps(i);
            let mut s = _mm512_mul_ps(i, _mm512_loadu_ps(lanes.alpha.as_ptr()));
            s = _mm512_fmadd_ps(
                _mm512_loadu_ps(lanes.beta.as_ptr()),
                _mm512_set1_ps(limit.w),
                s,
            );
            if distances {
                s = _mm512_fmadd_ps(
                    _mm512_loadu_ps(lanes.norm.as_ptr()),
                    _mm512_set1_ps(limit.v),
                    s,
                );
                s = _mm512_fmadd_ps(
                    _mm512_loadu_ps(lanes.inv_norm.as_ptr()),
                    _mm512_set1_ps(limit.r),
                    s,
                );
            }
            *mask = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(s, _mm512_set1_ps(limit.c));
            any |= *mask != 0;
        }
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn exact_dot(x: &[f32], q: &[f32]) -> f64 {
        x.iter().zip(q).map(|(a, b)| *a as f64 * *b as f64).sum()
    }

    fn int_dot(c: &[i8], d: &[i8]) -> i64 {
        c.iter().zip(d).map(|(a, b)| *a as i64 * *b as i64).sum()
    }

    fn vectors() -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
        (1usize..300).prop_flat_map(|dim| {
            let value = prop_oneof![
                8 => -1.0f32..1.0,
                1 => -1e-3f32..1e-3,
                1 => -50.0f32..50.0,
                1 => Just(0.0f32),
            ];
            (
                proptest::collection::vec(value.clone(), dim),
                proptest::collection::vec(value, dim),
            )
        })
    }

    proptest! {
        /// The exact dot product of the stored values always lies within the codes' bound.
        #[test]
        fn the_exact_dot_lies_within_the_bound((x, q) in vectors()) {
            let dim = x.len();
            let (mut c, mut d) = (vec![0i8; dim], vec![0i8; dim]);
            let (Some(cx), Some(cq)) = (quantize(&x, &mut c), quantize(&q, &mut d)) else {
                return Ok(());
            };
            let i = int_dot(&c, &d) as f64;
            let approx = cx.scale as f64 * cq.scale as f64 * i;
            let dn: f64 = d.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
            let bound = cx.residual_hi * cq.scale as f64 * dn + cx.norm * cq.residual_hi;
            let exact = exact_dot(&x, &q);
            // The bound is tight (1-d vectors meet it exactly); `approx` itself is rounded once
            // in f64, relative to its own size.
            let rounding = 4.0 * f64::EPSILON * (exact.abs() + approx.abs());
            prop_assert!((exact - approx).abs() <= bound * (1.0 + 1e-9) + rounding,
                "exact {exact} approx {approx} bound {bound}");
            for &v in &c {
                prop_assert!((-127..=127).contains(&v));
            }
        }

        /// Every face whose f64 cosine reaches t passes the float32 test, at any t.
        #[test]
        fn the_cosine_test_keeps_every_face_at_or_above_the_threshold(
            (x, q) in vectors(), slack in prop_oneof![Just(0.0), -0.1f64..0.0]
        ) {
            check_test(&x, &q, |exact_cos, _| exact_cos + slack, |numbers, dim, t, _| {
                CodeLimit::cosine(numbers, dim, t)
            })?;
        }

        /// Every face within distance D passes the euclidean test, at any D.
        #[test]
        fn the_distance_test_keeps_every_face_within_the_distance(
            (x, q) in vectors(), slack in prop_oneof![Just(0.0), 0.0f64..0.1]
        ) {
            check_test(&x, &q, |_, d| d + slack, |numbers, dim, d, codes| {
                CodeLimit::distance(numbers, dim, d * d, codes.ranges())
            })?;
        }
    }

    /// Codes `x` as a face and `q` as a query, sets the limit at `at(cos, dist)` (where the
    /// exact values would just pass) and checks the face passes.
    fn check_test(
        x: &[f32],
        q: &[f32],
        at: impl Fn(f64, f64) -> f64,
        limit: impl Fn(&QueryNumbers, usize, f64, &FaceCodes) -> CodeLimit,
    ) -> Result<(), TestCaseError> {
        let dim = x.len();
        let faces = FaceCodes::new(x, dim);
        let queries = QueryCodes::new(std::iter::once(q), dim);
        let Some(numbers) = queries.numbers(0) else {
            return Ok(());
        };
        if !faces.is_coded(0) {
            return Ok(());
        }
        let dot = exact_dot(x, q);
        let nx = exact_dot(x, x).sqrt();
        let nq = exact_dot(q, q).sqrt();
        let cos = dot / (nx * nq);
        let dist = (nx * nx + nq * nq - 2.0 * dot).max(0.0).sqrt();
        let codes: Vec<i8> = (0..dim)
            .map(|d| (faces.panel(0)[d / 4].0[d % 4] as i16 - 128) as i8)
            .collect();
        let sum = int_dot(&codes, &queries.row(0)[..dim]) as i32;
        let limit = limit(numbers, dim, at(cos, dist), &faces);
        prop_assert!(
            sum >= limit.threshold(faces.ranges()),
            "sum {sum} under the integer threshold of {limit:?}"
        );
        let mut sums = [0i32; LANES];
        sums[0] = sum;
        for fma in [false, true] {
            let mask = if fma {
                test_lanes::<true>(&sums, &faces.lanes(0), &limit)
            } else {
                test_lanes::<false>(&sums, &faces.lanes(0), &limit)
            };
            prop_assert!(
                mask & 1 == 1,
                "cos {cos} dist {dist} limit {limit:?} sum {sum}"
            );
        }
        Ok(())
    }

    #[test]
    fn the_bound_is_tight_on_unit_encodings() {
        // 128-d unit vectors like face encodings: the interval on the cosine is a few hundredths.
        let mut values = crate::kernel::synthetic::SeededValues::new(1);
        let mut unit = || {
            let v = values.take(128);
            let n = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            v.iter()
                .map(|x| (*x as f64 / n) as f32)
                .collect::<Vec<f32>>()
        };
        let (x, q) = (unit(), unit());
        let (mut c, mut d) = (vec![0i8; 128], vec![0i8; 128]);
        let (cx, cq) = (quantize(&x, &mut c).unwrap(), quantize(&q, &mut d).unwrap());
        let dn: f64 = d.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        let bound = cx.residual_hi * cq.scale as f64 * dn + cx.norm * cq.residual_hi;
        assert!(bound < 0.03, "bound {bound}");
    }

    #[test]
    fn vectors_outside_the_safe_range_are_not_coded() {
        let mut codes = [0i8; 3];
        assert!(quantize(&[0.0, 0.0, 0.0], &mut codes).is_none());
        assert!(quantize(&[f32::NAN, 1.0, 0.0], &mut codes).is_none());
        assert!(quantize(&[1e20, 0.0, 0.0], &mut codes).is_none());
        assert!(quantize(&[1.0, -0.5, 0.25], &mut codes).is_some());
        assert_eq!(codes, [127, -64, 32]);
        // The face without codes is placed last.
        let mut faces = FaceCodes::new(&[0.0, 0.0, 1.0, 2.0], 2);
        assert!(faces.is_coded(0) && !faces.is_coded(1));
        assert_eq!(faces.uncoded(), 1..2);
        assert_eq!((faces.index(0), faces.index(1)), (1, 0));
        assert_eq!(faces.coded_lanes(0), 0b01);
        // Once the order is handed over, positions are indices.
        assert_eq!(faces.take_order(), vec![1, 0]);
        assert_eq!((faces.index(0), faces.index(1)), (0, 1));
    }

    #[test]
    fn the_layout_interleaves_four_dimensions_of_sixteen_faces() {
        let dim = 5;
        let values: Vec<f32> = (0..17 * dim).map(|v| 1.0 + (v % 7) as f32).collect();
        let faces = FaceCodes::new(&values, dim);
        assert_eq!((faces.panels(), faces.lines()), (2, STEP / 4));
        let mut row = [0i8; 5];
        let mut seen: Vec<usize> = (0..17).map(|p| faces.index(p)).collect();
        seen.sort();
        assert_eq!(
            seen,
            (0..17).collect::<Vec<_>>(),
            "every face has one position"
        );
        for position in 0..17 {
            let f = faces.index(position);
            let coded = quantize(&values[f * dim..(f + 1) * dim], &mut row).unwrap();
            let (panel, lane) = (position / LANES, position % LANES);
            for (d, &code) in row.iter().enumerate() {
                let byte = faces.panel(panel)[d / 4].0[lane * 4 + d % 4];
                assert_eq!(byte as i16 - 128, code as i16, "face {f} dim {d}");
            }
            // Padding dimensions hold code 0.
            assert_eq!(faces.panel(panel)[1].0[lane * 4 + 1], 128);
            let alpha = faces.lanes(panel).alpha[lane];
            assert_eq!(alpha, (coded.scale as f64 / coded.norm) as f32);
            if position > 0 {
                let before = faces.lanes((position - 1) / LANES).alpha[(position - 1) % LANES];
                assert!(before <= alpha, "placed in order of alpha");
            }
        }
        assert_eq!(faces.coded_lanes(1), 1);
    }
}
