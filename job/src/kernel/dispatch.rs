//! Which instruction set the kernel runs on, chosen at run time so one binary runs on any x86-64
//! host (an EMR node included): the fastest of the levels the CPU has, as measured once per
//! process. `FACEMATCH_KERNEL=portable|avx2|avx512` forces any level the CPU has, wider or
//! narrower than the measured one (tests force each one).

/// A kernel instruction-set level, from the most portable to the widest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Plain Rust for the baseline target (SSE2 on x86-64), any CPU.
    Portable,
    /// AVX2 + FMA: 8-lane float32, fused multiply-add.
    Avx2,
    /// AVX-512F and VL (+ FMA): 16-lane float32, 32 vector registers.
    Avx512,
}

impl Level {
    /// Every level, most portable first.
    pub const ALL: [Level; 3] = [Level::Portable, Level::Avx2, Level::Avx512];

    /// Whether this CPU can run the level.
    pub fn available(self) -> bool {
        match self {
            Level::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The fastest level this CPU runs (measured once per process: wider is not always faster —
    /// AMD's Zen 4 runs 512-bit FMAs as two 256-bit halves), or the one `FACEMATCH_KERNEL`
    /// names if it is available.
    pub fn detect() -> Level {
        static FASTEST: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
        let best = *FASTEST.get_or_init(|| {
            let available: Vec<Level> = Level::ALL.into_iter().filter(|l| l.available()).collect();
            super::fastest(&available)
        });
        forced("FACEMATCH_KERNEL", best, Level::available)
    }
}

/// The level the environment variable `var` names if this CPU runs it, else `best` (with a
/// warning when it names one that cannot run here).
pub(super) fn forced<L>(var: &str, best: L, available: fn(L) -> bool) -> L
where
    L: std::str::FromStr + std::fmt::Display + Copy,
{
    let Ok(name) = std::env::var(var) else {
        return best;
    };
    match name.parse::<L>() {
        Ok(level) if available(level) => level,
        _ => {
            tracing::warn!(
                requested = name,
                using = %best,
                "{var} names no level this CPU runs"
            );
            best
        }
    }
}

impl std::str::FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Level, String> {
        match s {
            "portable" => Ok(Level::Portable),
            "avx2" => Ok(Level::Avx2),
            "avx512" => Ok(Level::Avx512),
            _ => Err(format!(
                "unknown kernel level {s:?} (portable, avx2, avx512)"
            )),
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Level::Portable => "portable",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        })
    }
}
