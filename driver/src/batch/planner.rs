//! The planner (ARCHITECTURE.md: Where it runs): before a run, estimate how long it takes on the
//! chosen runner — faces × histories × 2·D flops at the scan rate this build measures on this
//! machine, plus the runner's start-up — and refuse a remote cluster when this machine alone
//! would finish before the cluster has even started.

use crate::runner::Capacity;
use facematch_job::Method;
use facematch_job::kernel::Scanner;
use facematch_job::kernel::synthetic::{self, SeededValues};
use serde::Serialize;
use std::time::{Duration, Instant};

/// The estimate printed before a run.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Faces in the dataset.
    pub faces: u64,
    /// Histories the run would claim.
    pub histories: u64,
    /// Encoding dimension.
    pub dim: usize,
    /// faces × histories × 2·D.
    pub flops: f64,
    /// Scan rate of one thread, measured now (flop/s).
    pub rate_per_thread: f64,
    /// Threads of the chosen runner that run at once (local runners: at most this machine's).
    pub threads: usize,
    /// Start-up of the chosen runner (seconds).
    pub startup_secs: f64,
    /// Estimated time on the chosen runner (seconds).
    pub estimate_secs: f64,
    /// Threads this machine has.
    pub local_threads: usize,
    /// Estimated time on this machine alone, inline on every core (seconds).
    pub local_secs: f64,
    /// The chosen runner is remote and this machine would finish before it starts.
    pub slower_than_local: bool,
}

/// Measures the scan rate of one thread (flop/s): 64 queries against as many synthetic faces as
/// fill about 50 ms, through the same kernel a run uses.
pub fn measure_rate(dim: usize) -> f64 {
    let dim = dim.max(1);
    let block = 4096;
    let mut values = SeededValues::new(3);
    let queries = synthetic::queries(&values.take(64 * dim), dim, 64, Method::Euclidean, 10);
    let values = values.take(block * dim);
    let sources = vec![b'A'; block];
    let mut scanner = Scanner::new(&queries, dim);
    let started = Instant::now();
    let mut faces = 0u64;
    let mut first_id = 0i64;
    while faces < block as u64 || started.elapsed() < Duration::from_millis(50) {
        let ids: Vec<i64> = (first_id..first_id + block as i64).collect();
        scanner.scan(&ids, &sources, &values);
        first_id += block as i64;
        faces += block as u64;
    }
    let flops = faces as f64 * queries.len() as f64 * 2.0 * dim as f64;
    flops / started.elapsed().as_secs_f64()
}

/// Estimates a run of `histories` over `faces` faces on a runner of `capacity`, against this
/// machine's `local_threads`, at `rate_per_thread` flop/s.
pub fn plan(
    faces: u64,
    histories: u64,
    dim: usize,
    capacity: Capacity,
    local_threads: usize,
    rate_per_thread: f64,
) -> Plan {
    let flops = faces as f64 * histories as f64 * 2.0 * dim as f64;
    let scan = |threads: usize| flops / (rate_per_thread * threads.max(1) as f64);
    let startup_secs = capacity.startup.as_secs_f64();
    // Local processes share this machine's cores, however many threads they start.
    let threads = if capacity.remote {
        capacity.threads
    } else {
        capacity.threads.min(local_threads)
    };
    let estimate_secs = startup_secs + scan(threads);
    let local_secs = scan(local_threads);
    Plan {
        faces,
        histories,
        dim,
        flops,
        rate_per_thread,
        threads,
        startup_secs,
        estimate_secs,
        local_threads,
        local_secs,
        slower_than_local: capacity.remote && local_secs < startup_secs,
    }
}

impl Plan {
    /// One line for a person.
    pub fn describe(&self, runner: &str) -> String {
        format!(
            "plan: {} faces × {} histories × 2·{} = {:.3} GFLOP; at {:.2} GFLOP/s per thread \
             (measured now) ≈ {:.1} s on {runner} (threads: {}{}); this machine alone \
             (threads: {}) ≈ {:.1} s",
            self.faces,
            self.histories,
            self.dim,
            self.flops / 1e9,
            self.rate_per_thread / 1e9,
            self.estimate_secs,
            self.threads,
            if self.startup_secs > 0.5 {
                format!(", {:.0} s of it start-up", self.startup_secs)
            } else {
                String::new()
            },
            self.local_threads,
            self.local_secs,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_is_refused_when_this_machine_finishes_before_it_starts() {
        let emr = Capacity {
            threads: 64,
            startup: Duration::from_secs(420),
            remote: true,
        };
        // 1M faces × 256 histories × 256 flop = 65.5 GFLOP; at 2 GFLOP/s × 2 threads: 16 s.
        let small = plan(1_000_000, 256, 128, emr, 2, 2e9);
        assert!((small.local_secs - 16.384).abs() < 1e-9, "{small:?}");
        assert!(small.slower_than_local);
        assert!((small.estimate_secs - (420.0 + 65.536 / 128.0)).abs() < 1e-9);
        // 100M faces × 10k histories: the cluster is worth starting.
        let big = plan(100_000_000, 10_000, 128, emr, 2, 2e9);
        assert!(!big.slower_than_local, "{big:?}");
        assert!(big.estimate_secs < big.local_secs);
        // Local runners are never refused.
        let inline = Capacity {
            threads: 2,
            startup: Duration::ZERO,
            remote: false,
        };
        assert!(!plan(1, 1, 128, inline, 2, 2e9).slower_than_local);
        // Four local processes on two cores run two at a time.
        let four = Capacity {
            threads: 4,
            ..inline
        };
        let local = plan(1_000_000, 256, 128, four, 2, 2e9);
        assert_eq!(local.threads, 2);
        assert!((local.estimate_secs - local.local_secs).abs() < 1e-9);
    }

    #[test]
    fn the_measured_rate_is_plausible() {
        let rate = measure_rate(128);
        // Anything from a slow debug kernel to several times a core's float32 peak is a bug.
        assert!(rate > 1e7 && rate < 1e12, "{rate}");
    }
}
