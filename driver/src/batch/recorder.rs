//! The [`RunContext`] a run hands its runner: it records where a remote job is in the run's
//! `job_runs` row, on a connection of its own (the run's is busy with the claim).

use crate::runner::{RemoteJob, RunContext};
use crate::store::job_runs::{self, RemotePlacement};
use anyhow::Result;
use std::sync::Mutex;

/// Records a remote runner's cluster and step for run `run_id`.
pub struct JobRunRecorder {
    url: String,
    run_id: i64,
    client: Mutex<Option<postgres::Client>>,
    warnings: Mutex<Vec<String>>,
}

impl JobRunRecorder {
    /// A recorder for run `run_id`; it connects on first use.
    pub fn new(url: &str, run_id: i64) -> JobRunRecorder {
        JobRunRecorder {
            url: url.to_string(),
            run_id,
            client: Mutex::new(None),
            warnings: Mutex::new(Vec::new()),
        }
    }

    /// What the runner warned about, in order.
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.lock().map(|w| w.clone()).unwrap_or_default()
    }

    fn try_record(&self, job: &RemoteJob) -> Result<()> {
        let mut guard = self
            .client
            .lock()
            .map_err(|_| anyhow::anyhow!("recorder poisoned"))?;
        if guard.is_none() {
            *guard = Some(crate::store::connect(&self.url)?);
        }
        if let Some(client) = guard.as_mut() {
            job_runs::record_placement(
                client,
                self.run_id,
                RemotePlacement {
                    cluster_id: &job.cluster_id,
                    step_id: job.step_id.as_deref(),
                    cluster_state: &job.cluster_state,
                    step_state: job.step_state.as_deref(),
                    started_here: job.started_here,
                },
            )?;
        }
        Ok(())
    }
}

impl RunContext for JobRunRecorder {
    fn run_id(&self) -> i64 {
        self.run_id
    }

    fn warn(&self, message: &str) {
        tracing::error!(run_id = self.run_id, "{message}");
        if let Ok(mut warnings) = self.warnings.lock() {
            warnings.push(message.to_string());
        }
    }

    fn record(&self, job: &RemoteJob) {
        // The run goes on without the record: it is for people watching, not for correctness.
        if let Err(e) = self.try_record(job) {
            tracing::warn!(
                run_id = self.run_id,
                "cannot record the cluster state: {e:#}"
            );
        }
    }
}
