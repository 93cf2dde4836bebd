//! `--runner inline`: the dataflow on timely worker threads inside this process.

use super::{Capacity, RunContext, Runner, search_failure};
use anyhow::{Result, anyhow};
use facematch_job::{Work, WorkOutput, run_job};
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

    fn execute(&self, work: Arc<Work>, _: &dyn RunContext) -> Result<WorkOutput> {
        let config = facematch_job::timely::Config::process(self.workers.max(1));
        match &*work {
            Work::Search(spec) => {
                let output = run_job(Arc::new(spec.clone()), config).map_err(search_failure)?;
                let output = output.ok_or_else(|| anyhow!("worker 0 returned no output"))?;
                Ok(WorkOutput::Search(output))
            }
            #[cfg(feature = "photos")]
            Work::Build(spec) => {
                let output = facematch_job::build::run_build(Arc::new(spec.clone()), config)?;
                let output = output.ok_or_else(|| anyhow!("worker 0 returned no output"))?;
                Ok(WorkOutput::Build(output))
            }
        }
    }
}
