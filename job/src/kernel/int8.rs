//! The integer kernels: exact 32-bit sums `I = c·d` of a tile of coded queries against panels of
//! coded faces ([`super::codes`]), on the widest integer unit the CPU has. Every level computes
//! the same integers, so the level changes only the speed.
//!
//! - [`CodeLevel::Amx`]: Intel AMX (`TDPBSUD`, 16 queries × 16 faces × 64 dimensions per
//!   instruction), written in inline assembly because Rust has no stable AMX intrinsics.
//! - [`CodeLevel::Vnni`]: AVX-512 VNNI (`VPDPBUSD`, 16 faces × 4 dimensions per instruction).
//! - [`CodeLevel::Avx2`] and [`CodeLevel::Portable`]: the same plain Rust, vectorised by the
//!   compiler for AVX2 or for the baseline target.
//!
//! Sums are written as tiles of 16 query rows × 16 face lanes ([`Sums`]), one per panel and
//! query tile.

use super::codes::{FaceCodes, LANES, QueryCodes, STEP};

/// Query rows per tile.
pub const ROWS: usize = 16;

/// An integer kernel level, from the most portable to the widest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CodeLevel {
    /// Plain Rust for the baseline target, any CPU.
    Portable,
    /// The same code compiled for AVX2.
    Avx2,
    /// AVX-512 with VNNI: `VPDPBUSD`.
    Vnni,
    /// Intel AMX tiles: `TDPBSUD`.
    Amx,
}

impl CodeLevel {
    /// Every level, most portable first.
    pub const ALL: [CodeLevel; 4] = [
        CodeLevel::Portable,
        CodeLevel::Avx2,
        CodeLevel::Vnni,
        CodeLevel::Amx,
    ];

    /// Whether this CPU (and, for AMX, the operating system) can run the level.
    pub fn available(self) -> bool {
        match self {
            CodeLevel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            CodeLevel::Avx2 => is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            CodeLevel::Vnni => {
                is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
            CodeLevel::Amx => amx::enabled(),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The widest level available, or the one `FACEMATCH_CODE_KERNEL` names if it is available.
    /// Wider is faster here: the levels differ by how many products one instruction makes.
    pub fn detect() -> CodeLevel {
        let best = CodeLevel::ALL
            .into_iter()
            .rev()
            .find(|l| l.available())
            .unwrap_or(CodeLevel::Portable);
        super::dispatch::forced("FACEMATCH_CODE_KERNEL", best, CodeLevel::available)
    }
}

impl std::str::FromStr for CodeLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<CodeLevel, String> {
        match s {
            "portable" => Ok(CodeLevel::Portable),
            "avx2" => Ok(CodeLevel::Avx2),
            "vnni" => Ok(CodeLevel::Vnni),
            "amx" => Ok(CodeLevel::Amx),
            _ => Err(format!(
                "unknown integer kernel level {s:?} (portable, avx2, vnni, amx)"
            )),
        }
    }
}

impl std::fmt::Display for CodeLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CodeLevel::Portable => "portable",
            CodeLevel::Avx2 => "avx2",
            CodeLevel::Vnni => "vnni",
            CodeLevel::Amx => "amx",
        })
    }
}

/// The sums of one panel and one tile of 16 queries: `[query row][face lane]`, laid out as an
/// AMX result tile.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub struct Sums(pub [[i32; LANES]; ROWS]);

impl Default for Sums {
    fn default() -> Sums {
        Sums([[0; LANES]; ROWS])
    }
}

/// Query tiles of `queries`: 16 rows each, the last one possibly partial.
pub fn tiles(queries: &QueryCodes) -> usize {
    queries.len().div_ceil(ROWS)
}

/// The sums of every query against panels `panels` of `faces`, into `out[k·T + t]` for the
/// k-th panel and query tile `t` (of `T = tiles(queries)`); rows past the last query are
/// unspecified.
pub fn sums(
    level: CodeLevel,
    queries: &QueryCodes,
    faces: &FaceCodes,
    panels: std::ops::Range<usize>,
    out: &mut [Sums],
) {
    assert!(panels.end <= faces.panels() && out.len() >= panels.len() * tiles(queries));
    assert_eq!(queries.stride(), faces.lines() * 4);
    assert!(
        level.available(),
        "integer kernel level {level} is not available"
    );
    if queries.is_empty() {
        return;
    }
    match level {
        CodeLevel::Portable => generic_dispatch(queries, faces, panels, out),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: checked available above.
        CodeLevel::Avx2 => unsafe { generic_avx2(queries, faces, panels, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: checked available above.
        CodeLevel::Vnni => unsafe { vnni::sums(queries, faces, panels, out) },
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        // SAFETY: checked available above (which asked the kernel for the tile state).
        CodeLevel::Amx => unsafe { amx::sums(queries, faces, panels, out) },
        #[allow(unreachable_patterns)]
        _ => generic_dispatch(queries, faces, panels, out),
    }
}

/// Lines of a panel that hold real dimensions (the rest are zero padding).
fn used_lines(faces: &FaceCodes) -> usize {
    faces.dim().div_ceil(4)
}

/// `kernel::<R>(args…)` with `R` the smallest of 1, 2, 4, 8, 16 that holds `rows`.
macro_rules! by_rows {
    ($rows:expr, $kernel:ident($($arg:expr),*)) => {
        match $rows {
            1 => $kernel::<1>($($arg),*),
            2 => $kernel::<2>($($arg),*),
            3 | 4 => $kernel::<4>($($arg),*),
            5..=8 => $kernel::<8>($($arg),*),
            _ => $kernel::<16>($($arg),*),
        }
    };
}

/// For each panel, each query tile: `one(first row, rows, panel, out)`; the levels pick their
/// kernel by the tile's rows ([`by_rows`]), so a few queries cost a few rows.
#[inline(always)]
fn each_tile(
    queries: &QueryCodes,
    panels: std::ops::Range<usize>,
    out: &mut [Sums],
    mut one: impl FnMut(usize, usize, usize, &mut Sums),
) {
    let tiles = tiles(queries);
    for (k, p) in panels.enumerate() {
        for t in 0..tiles {
            let first = t * ROWS;
            let rows = ROWS.min(queries.len() - first);
            one(first, rows, p, &mut out[k * tiles + t]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn generic_avx2(
    queries: &QueryCodes,
    faces: &FaceCodes,
    panels: std::ops::Range<usize>,
    out: &mut [Sums],
) {
    generic_dispatch(queries, faces, panels, out)
}

#[inline(always)]
fn generic_dispatch(
    queries: &QueryCodes,
    faces: &FaceCodes,
    panels: std::ops::Range<usize>,
    out: &mut [Sums],
) {
    each_tile(queries, panels, out, |first, rows, p, sums| {
        by_rows!(rows, generic(queries, first, faces, p, sums))
    })
}

/// Plain Rust: for each line of the panel, each query row, the 16 lanes' 4-byte dot products.
#[inline(always)]
fn generic<const R: usize>(
    queries: &QueryCodes,
    first: usize,
    faces: &FaceCodes,
    p: usize,
    sums: &mut Sums,
) {
    let lines = used_lines(faces);
    let rows: [&[i8]; R] = std::array::from_fn(|r| queries.row(first + r));
    let mut acc: [[i32; LANES]; R] = std::array::from_fn(|r| [queries.start(first + r); LANES]);
    for (g, line) in faces.panel(p)[..lines].iter().enumerate() {
        for (acc, row) in acc.iter_mut().zip(&rows) {
            let d = &row[4 * g..4 * g + 4];
            for (lane, sum) in acc.iter_mut().enumerate() {
                let x = &line.0[4 * lane..4 * lane + 4];
                *sum += d[0] as i32 * x[0] as i32
                    + d[1] as i32 * x[1] as i32
                    + d[2] as i32 * x[2] as i32
                    + d[3] as i32 * x[3] as i32;
            }
        }
    }
    sums.0[..R].copy_from_slice(&acc);
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::*;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn sums(
        queries: &QueryCodes,
        faces: &FaceCodes,
        panels: std::ops::Range<usize>,
        out: &mut [Sums],
    ) {
        each_tile(queries, panels, out, |first, rows, p, sums| {
            // SAFETY: this function runs only where the CPU has AVX-512 VNNI.
            unsafe { by_rows!(rows, kernel(queries, first, faces, p, sums)) }
        })
    }

    /// `R` accumulators of 16 lanes; each line of the panel is loaded once and multiplied by
    /// every row's 4 codes broadcast (`VPDPBUSD` with the faces unsigned, the queries signed).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn kernel<const R: usize>(
        queries: &QueryCodes,
        first: usize,
        faces: &FaceCodes,
        p: usize,
        sums: &mut Sums,
    ) {
        let lines = used_lines(faces);
        let rows: [*const i32; R] =
            std::array::from_fn(|r| queries.row(first + r).as_ptr() as *const i32);
        let mut acc: [__m512i; R] =
            std::array::from_fn(|r| _mm512_set1_epi32(queries.start(first + r)));
        for (g, line) in faces.panel(p)[..lines].iter().enumerate() {
            // SAFETY: a Line is 64 aligned bytes; a row has 4·lines bytes, so 4g + 4 fits.
            unsafe {
                let x = _mm512_load_si512(line.0.as_ptr() as *const __m512i);
                for (acc, row) in acc.iter_mut().zip(&rows) {
                    let d = _mm512_set1_epi32(row.add(g).read_unaligned());
                    *acc = _mm512_dpbusd_epi32(*acc, x, d);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            // SAFETY: a Sums row is 64 aligned bytes.
            unsafe { _mm512_store_si512(sums.0[r].as_mut_ptr() as *mut __m512i, *acc) };
        }
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod amx {
    use super::*;

    /// Whether the CPU has AMX-TILE and AMX-INT8 and Linux lets this process use the tile
    /// state (asked once; the permission is the whole process's).
    pub(super) fn enabled() -> bool {
        static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *ENABLED.get_or_init(|| {
            if std::arch::x86_64::__cpuid(0).eax < 7 {
                return false;
            }
            let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
            let (tile, int8) = (leaf7.edx & (1 << 24) != 0, leaf7.edx & (1 << 25) != 0);
            if !(tile && int8) {
                return false;
            }
            const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
            const XFEATURE_XTILEDATA: libc::c_long = 18;
            // SAFETY: arch_prctl with these arguments only changes this process's permissions.
            let asked = unsafe {
                libc::syscall(
                    libc::SYS_arch_prctl,
                    ARCH_REQ_XCOMP_PERM,
                    XFEATURE_XTILEDATA,
                )
            };
            asked == 0
        })
    }

    /// What the assembly reads from memory (few registers are left for it): the tile
    /// configuration (palette 1, eight tiles of 16 rows × 64 bytes) first, then the operands.
    #[repr(C, align(64))]
    struct Params {
        config: [u8; 64],
        /// Query rows, their start tiles, query tiles, steps of 64 dimensions, bytes of a
        /// query tile and of a face panel, and how far ahead of a panel (bytes) to prefetch.
        a: *const i8,
        starts: *const Sums,
        tiles: usize,
        steps: usize,
        tile_bytes: usize,
        panel_bytes: usize,
        prefetch: usize,
    }

    /// Panels fetched ahead (up to 128 dimensions). Tile registers are not renamed: a panel's
    /// loads wait for the previous panel's products, so without the hint every panel's cache
    /// misses stall the products (about 10% of a 100-query pass over 1M faces here).
    const PREFETCH_PANELS: usize = 8;

    const CONFIG: [u8; 64] = {
        let mut c = [0u8; 64];
        c[0] = 1;
        let mut tile = 0;
        while tile < 8 {
            c[16 + 2 * tile] = 64;
            c[48 + tile] = 16;
            tile += 1;
        }
        c
    };

    /// Every query tile against each panel, with `TDPBSUD` (queries signed × faces unsigned).
    /// A tile's sums start from its rows' starts (a loaded tile) and are stored to `out`. Up
    /// to 128 dimensions (one or two steps) a panel's face tiles are loaded once and every
    /// query tile passes under them, alternating between two sets of registers so that one
    /// tile's store overlaps the next one's products, and the panel [`PREFETCH_PANELS`] ahead
    /// is prefetched; longer codes load both for each step.
    /// The configuration is loaded and the tiles released inside each assembly block, so no
    /// tile state outlives it. Rows past the last query are zero codes (computed, unused).
    ///
    /// # Safety
    /// [`enabled`] must have returned true.
    pub(super) unsafe fn sums(
        queries: &QueryCodes,
        faces: &FaceCodes,
        panels: std::ops::Range<usize>,
        out: &mut [Sums],
    ) {
        if panels.is_empty() {
            return;
        }
        let steps = queries.stride() / STEP;
        let params = Params {
            config: CONFIG,
            a: queries.row(0).as_ptr(),
            starts: queries.start_tiles().as_ptr(),
            tiles: tiles(queries),
            steps,
            tile_bytes: ROWS * queries.stride(),
            panel_bytes: steps * 1024,
            prefetch: PREFETCH_PANELS * steps * 1024,
        };
        let b = faces.panel(panels.start).as_ptr() as *const u8;
        let c = out.as_mut_ptr();
        // SAFETY (both blocks): the query tiles are `tiles` × 16 rows of `stride` bytes
        // (QueryCodes pads its rows to whole tiles), read 64 bytes per step inside each row;
        // the starts are one 1 KiB tile per query tile; a panel is `steps` × 1 KiB of face
        // lines, `panels.len()` of them inside `faces`; `out` holds `panels.len() · tiles`
        // sums of 1 KiB (asserted by the caller).
        unsafe {
            match steps {
                1 | 2 => std::arch::asm!(
                    "ldtilecfg [{p}]",
                    "2:",
                    "tileloadd tmm6, [{b} + {s64}*1]",
                    "cmp qword ptr [{p} + 88], 1",
                    "je 5f",
                    "tileloadd tmm7, [{b} + {s64}*1 + 1024]",
                    "5:",
                    "mov {pf}, [{p} + 112]",
                    "add {pf}, {b}",
                    "mov {k}, [{p} + 104]",
                    "8:",
                    "prefetcht2 [{pf}]",
                    "add {pf}, 64",
                    "sub {k}, 64",
                    "jnz 8b",
                    "mov {qa}, [{p} + 64]",
                    "mov {st}, [{p} + 72]",
                    "mov {t}, [{p} + 80]",
                    "3:",
                    "tileloadd tmm0, [{st} + {s64}*1]",
                    "tileloadd tmm1, [{qa} + {stride}*1]",
                    "tdpbsud tmm0, tmm1, tmm6",
                    "cmp qword ptr [{p} + 88], 1",
                    "je 6f",
                    "tileloadd tmm2, [{qa} + {stride}*1 + 64]",
                    "tdpbsud tmm0, tmm2, tmm7",
                    "6:",
                    "tilestored [{c} + {s64}*1], tmm0",
                    "add {c}, 1024",
                    "add {st}, 1024",
                    "add {qa}, [{p} + 96]",
                    "dec {t}",
                    "jz 4f",
                    "tileloadd tmm3, [{st} + {s64}*1]",
                    "tileloadd tmm4, [{qa} + {stride}*1]",
                    "tdpbsud tmm3, tmm4, tmm6",
                    "cmp qword ptr [{p} + 88], 1",
                    "je 7f",
                    "tileloadd tmm5, [{qa} + {stride}*1 + 64]",
                    "tdpbsud tmm3, tmm5, tmm7",
                    "7:",
                    "tilestored [{c} + {s64}*1], tmm3",
                    "add {c}, 1024",
                    "add {st}, 1024",
                    "add {qa}, [{p} + 96]",
                    "dec {t}",
                    "jnz 3b",
                    "4:",
                    "add {b}, [{p} + 104]",
                    "dec {n}",
                    "jnz 2b",
                    "tilerelease",
                    p = in(reg) &params,
                    s64 = in(reg) 64usize,
                    stride = in(reg) queries.stride(),
                    qa = out(reg) _,
                    st = out(reg) _,
                    t = out(reg) _,
                    pf = out(reg) _,
                    k = out(reg) _,
                    b = inout(reg) b => _,
                    c = inout(reg) c => _,
                    n = inout(reg) panels.len() => _,
                    options(nostack),
                ),
                _ => std::arch::asm!(
                    "ldtilecfg [{p}]",
                    "2:",
                    "mov {qa}, [{p} + 64]",
                    "mov {st}, [{p} + 72]",
                    "mov {t}, [{p} + 80]",
                    "3:",
                    "tileloadd tmm0, [{st} + {s64}*1]",
                    "mov {fb}, {b}",
                    "mov {q}, {qa}",
                    "mov {k}, [{p} + 88]",
                    "4:",
                    "tileloadd tmm1, [{q} + {stride}*1]",
                    "tileloadd tmm2, [{fb} + {s64}*1]",
                    "tdpbsud tmm0, tmm1, tmm2",
                    "add {q}, 64",
                    "add {fb}, 1024",
                    "dec {k}",
                    "jnz 4b",
                    "tilestored [{c} + {s64}*1], tmm0",
                    "add {c}, 1024",
                    "add {st}, 1024",
                    "add {qa}, [{p} + 96]",
                    "dec {t}",
                    "jnz 3b",
                    "mov {b}, {fb}",
                    "dec {n}",
                    "jnz 2b",
                    "tilerelease",
                    p = in(reg) &params,
                    s64 = in(reg) 64usize,
                    stride = in(reg) queries.stride(),
                    qa = out(reg) _,
                    st = out(reg) _,
                    t = out(reg) _,
                    fb = out(reg) _,
                    q = out(reg) _,
                    k = out(reg) _,
                    b = inout(reg) b => _,
                    c = inout(reg) c => _,
                    n = inout(reg) panels.len() => _,
                    options(nostack),
                ),
            }
        }
    }

    #[test]
    fn the_assembly_reads_the_params_where_they_are() {
        assert_eq!(std::mem::offset_of!(Params, a), 64);
        assert_eq!(std::mem::offset_of!(Params, starts), 72);
        assert_eq!(std::mem::offset_of!(Params, tiles), 80);
        assert_eq!(std::mem::offset_of!(Params, steps), 88);
        assert_eq!(std::mem::offset_of!(Params, tile_bytes), 96);
        assert_eq!(std::mem::offset_of!(Params, panel_bytes), 104);
        assert_eq!(std::mem::offset_of!(Params, prefetch), 112);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every available level computes `c·d` exactly, for every row count and odd dimensions.
    #[test]
    fn every_level_computes_the_exact_integer_sums() {
        let mut seeded = crate::kernel::synthetic::SeededValues::new(7);
        for dim in [1, 3, 64, 100, 128, 200, 300] {
            let faces_n = 53;
            let values = seeded.take(faces_n * dim);
            let faces = FaceCodes::new(&values, dim);
            let qvalues: Vec<Vec<f32>> = (0..21).map(|_| seeded.take(dim)).collect();
            let code = |f: usize, d: usize| -> i32 {
                faces.panel(f / LANES)[d / 4].0[(f % LANES) * 4 + d % 4] as i32 - 128
            };
            for level in CodeLevel::ALL.into_iter().filter(|l| l.available()) {
                for count in [1, 2, 3, 8, 16, 21] {
                    let queries =
                        QueryCodes::new(qvalues[..count].iter().map(|q| q.as_slice()), dim);
                    let t = tiles(&queries);
                    let mut out = vec![Sums::default(); faces.panels() * t];
                    sums(level, &queries, &faces, 0..faces.panels(), &mut out);
                    for q in 0..count {
                        let row = queries.row(q);
                        for f in 0..faces_n {
                            let want: i32 = (0..dim).map(|d| row[d] as i32 * code(f, d)).sum();
                            let got = out[(f / LANES) * t + q / ROWS].0[q % ROWS][f % LANES];
                            assert_eq!(got, want, "{level} dim {dim}: {count} queries, {q} × {f}");
                        }
                    }
                    // A range of panels lands at the start of `out`.
                    let mut part = vec![Sums::default(); 2 * t];
                    sums(level, &queries, &faces, 1..3, &mut part);
                    for i in 0..2 * t {
                        let rows = ROWS.min(count - (i % t) * ROWS);
                        assert!(
                            part[i].0[..rows] == out[t + i].0[..rows],
                            "{level} dim {dim}: panels 1..3"
                        );
                    }
                }
            }
        }
    }
}
