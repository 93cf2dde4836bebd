//! One batch run: requeue dead runs, pin a dataset version, claim PENDING histories, execute the
//! dataflow on a [`Runner`], write results (or errors) back, and record the run in `job_runs`.

use crate::histories::{self, ClaimScope};
use crate::registry;
use crate::runner::{ClusterStatus, RunContext, Runner, WorkerLost};
use anyhow::Result;
use facematch_datasets::{DatasetRef, S3Options};
use facematch_job::JobSpec;
use serde::Serialize;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Dataset to scan (default: the current one).
    pub dataset: Option<DatasetRef>,
    /// Which histories to claim.
    pub scope: ClaimScope,
    /// How long a claim lasts without a heartbeat.
    pub lease: Duration,
    /// Attempts before a history whose runs keep dying ends in ERROR.
    pub max_attempts: i32,
    /// S3 access for the dataset.
    pub s3: S3Options,
    /// Print the planner's estimate before claiming (it is made anyway for remote runners).
    pub print_plan: bool,
    /// Run on a remote cluster even when this machine would finish first.
    pub force: bool,
}

/// The planner refused the run: nothing was claimed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PlanRefused(pub String);

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            dataset: None,
            scope: ClaimScope::default(),
            lease: Duration::from_secs(300),
            max_attempts: 3,
            s3: S3Options::default(),
            print_plan: false,
            force: false,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunSummary {
    /// `job_runs.id` (None when there was nothing to do).
    pub run_id: Option<i64>,
    /// Runner label.
    pub runner: String,
    /// Dataset version scanned.
    pub dataset: String,
    /// Histories claimed.
    pub claimed: usize,
    /// Histories FINISHED.
    pub finished: u64,
    /// Histories ERROR (rejected at claim or failed run).
    pub errored: u64,
    /// Histories whose dead runs were requeued before this one.
    pub requeued: u64,
    /// Histories of this run put back to PENDING because a worker process was lost.
    pub requeued_after_failure: u64,
    /// Faces read.
    pub faces_scanned: u64,
    /// (history, face) pairs scored.
    pub pairs_scored: u64,
    /// Milliseconds claiming.
    pub claim_ms: u64,
    /// Milliseconds in the dataflow.
    pub scan_ms: u64,
    /// Milliseconds writing results.
    pub write_ms: u64,
    /// Why the run failed, if it did.
    pub error: Option<String>,
    /// Ids of the histories this run ended (finished or errored), ascending.
    pub history_ids: Vec<i64>,
    /// The planner's estimate.
    pub plan: Option<crate::planner::Plan>,
}

/// Runs every claimable PENDING history (within `options.scope`) in one pass on `runner`.
pub fn run_pending(
    database_url: &str,
    runner: &dyn Runner,
    options: &RunOptions,
) -> Result<RunSummary> {
    let mut client = crate::db::connect_migrated(database_url)?;
    let mut summary = RunSummary {
        runner: runner.label(),
        ..RunSummary::default()
    };
    let (requeued, gave_up) = histories::requeue_expired(&mut client, options.max_attempts)?;
    summary.requeued = requeued;
    if requeued + gave_up > 0 {
        tracing::warn!(
            requeued,
            gave_up,
            "requeued histories of runs that stopped responding"
        );
    }

    let dataset = registry::resolve(&mut client, options.dataset.as_ref())?;
    let (storage, manifest) = dataset.load_manifest(&options.s3)?;
    summary.dataset = dataset.label();
    runner.check(storage.root_uri())?;
    let pending = histories::count_claimable(&mut client, &options.scope)?;
    // Measuring the rate takes ~50 ms: only when someone reads the plan or it may refuse.
    if pending > 0 && (options.print_plan || runner.capacity().remote) {
        let local_threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let plan = crate::planner::plan(
            manifest.count,
            pending,
            manifest.dim,
            runner.capacity(),
            local_threads,
            crate::planner::measure_rate(manifest.dim),
        );
        if options.print_plan {
            eprintln!("{}", plan.describe(&summary.runner));
        }
        if plan.slower_than_local && !options.force {
            return Err(PlanRefused(format!(
                "refusing {}: this machine alone would finish in {:.1} s, before the cluster                  has started (≈ {:.0} s); run inline, or pass --force",
                summary.runner, plan.local_secs, plan.startup_secs
            ))
            .into());
        }
        summary.plan = Some(plan);
    }

    let claim_started = Instant::now();
    let run_id: i64 = client
        .query_one(
            "INSERT INTO job_runs (runner, dataset_id, dataset) VALUES ($1, $2, $3) RETURNING id",
            &[&summary.runner, &dataset.id, &summary.dataset],
        )?
        .get(0);
    let claim = histories::claim(
        &mut client,
        run_id,
        &options.scope,
        &summary.dataset,
        manifest.dim,
        &summary.runner,
        options.lease,
    )?;
    summary.run_id = Some(run_id);
    summary.claimed = claim.queries.len() + claim.rejected.len();
    summary.errored = claim.rejected.len() as u64;
    summary.history_ids = claim
        .queries
        .iter()
        .map(|q| q.history_id)
        .chain(claim.rejected.iter().map(|(id, _)| *id))
        .collect();
    summary.history_ids.sort_unstable();
    summary.claim_ms = claim_started.elapsed().as_millis() as u64;
    for (id, message) in &claim.rejected {
        tracing::warn!(history = id, "rejected: {message}");
    }

    let ids: Vec<i64> = claim.queries.iter().map(|q| q.history_id).collect();
    if !ids.is_empty() {
        let spec = Arc::new(JobSpec {
            root_uri: storage.root_uri().to_string(),
            s3: options.s3.clone(),
            manifest,
            queries: claim.queries,
        });
        let scan_started = Instant::now();
        let context = JobRunRecorder::new(database_url, run_id);
        let outcome = with_heartbeat(database_url, run_id, options.lease, || {
            runner.execute(spec, &context)
        });
        summary.scan_ms = scan_started.elapsed().as_millis() as u64;
        let write_started = Instant::now();
        match outcome {
            Ok(output) => {
                summary.faces_scanned = output.faces_scanned;
                summary.pairs_scored = output.pairs_scored;
                summary.finished = histories::finish(&mut client, run_id, &output.results)?;
            }
            // A lost worker is not the histories' fault: they go back to PENDING for another
            // run (until their attempts run out). Anything else is an answer: ERROR.
            Err(e) if e.downcast_ref::<WorkerLost>().is_some() => {
                let message = format!("run {run_id} failed: {e:#}");
                let (requeued, errored) =
                    histories::requeue(&mut client, run_id, &ids, options.max_attempts, &message)?;
                summary.requeued_after_failure = requeued;
                summary.errored += errored;
                summary.error = Some(message);
            }
            Err(e) => {
                let message = format!("run {run_id} failed: {e:#}");
                summary.errored += histories::fail(&mut client, run_id, &ids, &message)?;
                summary.error = Some(message);
            }
        }
        summary.write_ms = write_started.elapsed().as_millis() as u64;
    }

    client.execute(
        "UPDATE job_runs SET status = $2, error = $3, histories = $4, faces_scanned = $5, pairs_scored = $6,
                claim_ms = $7, scan_ms = $8, write_ms = $9, finished_at = now()
          WHERE id = $1",
        &[
            &run_id,
            &if summary.error.is_some() { "ERROR" } else { "FINISHED" },
            &summary.error,
            &(summary.claimed as i32),
            &(summary.faces_scanned as i64),
            &(summary.pairs_scored as i64),
            &(summary.claim_ms as i64),
            &(summary.scan_ms as i64),
            &(summary.write_ms as i64),
        ],
    )?;
    Ok(summary)
}

/// Records a remote runner's cluster and step in the run's `job_runs` row, on a connection of
/// its own (the run's is busy with the claim).
struct JobRunRecorder {
    url: String,
    run_id: i64,
    client: std::sync::Mutex<Option<postgres::Client>>,
}

impl JobRunRecorder {
    fn new(url: &str, run_id: i64) -> JobRunRecorder {
        JobRunRecorder {
            url: url.to_string(),
            run_id,
            client: std::sync::Mutex::new(None),
        }
    }

    fn try_record(&self, status: &ClusterStatus) -> Result<()> {
        let mut guard = self
            .client
            .lock()
            .map_err(|_| anyhow::anyhow!("recorder poisoned"))?;
        if guard.is_none() {
            *guard = Some(crate::db::connect(&self.url)?);
        }
        if let Some(client) = guard.as_mut() {
            client.execute(
                "UPDATE job_runs SET cluster_id = $2, step_id = $3, cluster_state = $4,
                        step_state = $5, cluster_started_here = $6
                  WHERE id = $1",
                &[
                    &self.run_id,
                    &status.cluster_id,
                    &status.step_id,
                    &status.cluster_state,
                    &status.step_state,
                    &status.started_here,
                ],
            )?;
        }
        Ok(())
    }
}

impl RunContext for JobRunRecorder {
    fn run_id(&self) -> i64 {
        self.run_id
    }

    fn record(&self, status: &ClusterStatus) {
        if let Err(e) = self.try_record(status) {
            tracing::warn!(
                run_id = self.run_id,
                "cannot record the cluster state: {e:#}"
            );
        }
    }
}

/// Runs `work` while a side thread keeps the run's lease alive, so no other run requeues its
/// histories while it is making progress.
fn with_heartbeat<T>(
    database_url: &str,
    run_id: i64,
    lease: Duration,
    work: impl FnOnce() -> T,
) -> T {
    let (stop, stopped) = mpsc::channel::<()>();
    let url = database_url.to_string();
    let beat = std::thread::spawn(move || {
        let Ok(mut client) = crate::db::connect(&url) else {
            tracing::warn!(
                run_id,
                "heartbeat cannot connect; the lease will not be extended"
            );
            return;
        };
        let period = (lease / 3).max(Duration::from_millis(200));
        while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
            if let Err(e) = histories::heartbeat(&mut client, run_id, lease) {
                tracing::warn!(run_id, "heartbeat failed: {e:#}");
            }
        }
    });
    let result = work();
    let _ = stop.send(());
    let _ = beat.join();
    result
}
