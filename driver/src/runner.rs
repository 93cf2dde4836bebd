//! Where the dataflow runs, behind one trait (SPEC section 1): the claim/write code in
//! [`crate::run`] hands a [`JobSpec`] to a [`Runner`] and gets worker 0's [`JobOutput`] back,
//! whichever runner executed it.

use anyhow::{Result, anyhow};
use facematch_job::{JobOutput, JobSpec, run_job};
use std::str::FromStr;
use std::sync::Arc;

/// Executes one pass of the job somewhere.
pub trait Runner {
    /// What `run_params` and `job_runs` record, e.g. `inline:2`.
    fn label(&self) -> String;
    /// Runs the dataflow to completion and returns its output (results for every query).
    fn execute(&self, spec: Arc<JobSpec>) -> Result<JobOutput>;
}

/// One process, `workers` timely worker threads.
#[derive(Debug, Clone)]
pub struct InlineRunner {
    /// Worker threads (≥ 1).
    pub workers: usize,
}

impl Runner for InlineRunner {
    fn label(&self) -> String {
        format!("inline:{}", self.workers)
    }

    fn execute(&self, spec: Arc<JobSpec>) -> Result<JobOutput> {
        let output = run_job(
            spec,
            facematch_job::timely::Config::process(self.workers.max(1)),
        )?;
        output.ok_or_else(|| anyhow!("worker 0 returned no output"))
    }
}

/// The runners a user can pick with `--runner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerKind {
    /// [`InlineRunner`].
    Inline,
}

impl FromStr for RunnerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "inline" => Ok(RunnerKind::Inline),
            other => Err(format!("unknown runner {other:?} (available: inline)")),
        }
    }
}

impl RunnerKind {
    /// Builds the runner with `workers` threads per process.
    pub fn build(self, workers: usize) -> Box<dyn Runner> {
        match self {
            RunnerKind::Inline => Box::new(InlineRunner { workers }),
        }
    }
}
