//! Where the dataflow runs, behind one trait (ARCHITECTURE.md: Code map): [`crate::batch`] hands a
//! [`JobSpec`] to a [`Runner`] and gets worker 0's [`JobOutput`] back, whichever runner executed
//! it, so the claim and write code never cares where the job ran.
//!
//! This module names no runner. Each one lives in its own room — [`inline`] (threads in this
//! process), [`processes`] (worker processes on this machine), [`hosts`] (worker processes on
//! machines you manage, waiting on a pool), [`emr`] (an AWS EMR cluster), [`resident`] (threads in
//! this process over a dataset held in memory, for `serve` and `watch`) — and the command line
//! picks one (`commands::run`).

pub mod emr;
pub mod hosts;
pub mod inline;
pub mod processes;
pub mod resident;

use anyhow::Result;
use facematch_job::{JobOutput, JobSpec, Work, WorkOutput};
use std::sync::Arc;
use std::time::Duration;

/// The job failed on its data — a shard missing or corrupt, a query the dataset cannot answer:
/// an answer for the run's histories, which end in ERROR with it. Every other error of
/// [`Runner::execute`] is the machinery's (ARCHITECTURE.md: Invariants) and sends them back to
/// PENDING for another run.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DataFailure(pub String);

/// A worker process died or could not start, or the cluster went away: one of the machinery's
/// failures (the histories did nothing wrong), named for what was lost.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WorkerLost(pub String);

/// A search dataflow's failure in the runners' terms: a bad shard or spec is a [`DataFailure`],
/// the runtime's or storage's failure the machinery's.
pub fn search_failure(error: facematch_job::dataflow::JobError) -> anyhow::Error {
    use facematch_job::dataflow::JobError;
    match error {
        JobError::Shards(_) | JobError::Invalid(_) => DataFailure(error.to_string()).into(),
        JobError::Runtime(_) | JobError::Unavailable(_) => anyhow::Error::from(error),
    }
}

/// Whether `error` is the job's answer (ERROR) rather than the machinery's failure (PENDING).
pub fn is_data_failure(error: &anyhow::Error) -> bool {
    error.downcast_ref::<DataFailure>().is_some()
}

/// Where a job on a remote cluster is, in the terms `job_runs` records: the cluster, the unit of
/// work that runs process 0 on it (an EMR step), their last states, and who started the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RemoteJob {
    /// Cluster id (EMR `j-…`).
    pub cluster_id: String,
    /// The unit of work running process 0 (EMR `s-…`).
    pub step_id: Option<String>,
    /// Last cluster state seen.
    pub cluster_state: String,
    /// Last step state seen.
    pub step_state: Option<String>,
    /// Whether this run started the cluster (and so terminates it).
    pub started_here: bool,
}

/// The run a runner executes for.
pub trait RunContext {
    /// `job_runs.id`.
    fn run_id(&self) -> i64;
    /// Records where a remote job is (called on every change).
    fn record(&self, job: &RemoteJob);
    /// Reports something a person must act on that did not change the outcome, e.g. a cluster
    /// that could not be terminated after the job succeeded.
    fn warn(&self, message: &str) {
        tracing::warn!(run_id = self.run_id(), "{message}");
    }
}

/// What the planner needs to know about a runner.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Capacity {
    /// Timely worker threads in all.
    pub threads: usize,
    /// Time before the first face is scored (cluster start-up).
    pub startup: Duration,
    /// Whether it runs on machines other than this one.
    pub remote: bool,
}

/// Executes one pass of the job somewhere.
pub trait Runner {
    /// What `run_params` and `job_runs` record, e.g. `inline:2`.
    fn label(&self) -> String;
    /// Parallelism and start-up, for the planner.
    fn capacity(&self) -> Capacity;
    /// Checks, before anything is claimed, that this runner can run a job on the dataset at
    /// `dataset_root`.
    fn check(&self, _dataset_root: &str) -> Result<()> {
        Ok(())
    }
    /// Checks, before a build starts, that this runner's workers can read the photos at
    /// `photos_root` and write beside the dataset at `dataset_root`, and run the face pipeline.
    fn check_build(&self, _photos_root: &str, _dataset_root: &str) -> Result<()> {
        Ok(())
    }
    /// Gets ready, ahead of the next pass, to scan the version `manifest` under `dataset_root`
    /// (a runner holding the dataset in memory loads it now; the others have nothing to do).
    fn prepare(&self, _dataset_root: &str, _manifest: &facematch_datasets::Manifest) -> Result<()> {
        Ok(())
    }
    /// Runs the work to completion and returns process 0's output.
    fn execute(&self, work: Arc<Work>, context: &dyn RunContext) -> Result<WorkOutput>;

    /// Runs one search pass: results for every query.
    fn search(&self, spec: &JobSpec, context: &dyn RunContext) -> Result<JobOutput> {
        match self.execute(Arc::new(Work::Search(spec.clone())), context)? {
            WorkOutput::Search(output) => Ok(output),
            #[allow(unreachable_patterns)]
            other => anyhow::bail!("a search returned the output of a {}", other.kind()),
        }
    }

    /// Runs one attempt of a photo build: the parts of its chunks written.
    #[cfg(feature = "photos")]
    fn build(
        &self,
        spec: facematch_job::build::BuildSpec,
        context: &dyn RunContext,
    ) -> Result<facematch_job::build::BuildOutput> {
        match self.execute(Arc::new(Work::Build(spec)), context)? {
            WorkOutput::Build(output) => Ok(output),
            other => anyhow::bail!("a build returned the output of a {}", other.kind()),
        }
    }
}
