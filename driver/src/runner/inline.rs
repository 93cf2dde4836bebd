//! `--runner inline`: the dataflow on timely worker threads inside this process.

use super::{Capacity, DataFailure, RunContext, Runner};
use anyhow::{Result, anyhow};
use facematch_job::dataflow::JobError;
use facematch_job::{JobOutput, JobSpec, run_job};
use std::sync::Arc;
use std::time::Duration;

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

    fn capacity(&self) -> Capacity {
        Capacity {
            threads: self.workers.max(1),
            startup: Duration::ZERO,
            remote: false,
        }
    }

    fn execute(&self, spec: Arc<JobSpec>, _: &dyn RunContext) -> Result<JobOutput> {
        let output = run_job(
            spec,
            facematch_job::timely::Config::process(self.workers.max(1)),
        )
        .map_err(|e| match e {
            JobError::Shards(_) | JobError::Invalid(_) => DataFailure(e.to_string()).into(),
            JobError::Runtime(_) | JobError::Unavailable(_) => anyhow::Error::from(e),
        })?;
        output.ok_or_else(|| anyhow!("worker 0 returned no output"))
    }
}
