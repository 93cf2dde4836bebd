//! One batch run, step by step: requeue the histories of dead runs, pin a dataset version, plan
//! (and maybe refuse) the run, then pass after pass claim PENDING histories, execute the
//! dataflow on a [`Runner`] and write the results (or errors) back while a heartbeat keeps the
//! claim alive — until the last commit, so a long write cannot outlive the lease — and record
//! the run in `job_runs`.
//! [`planner`] estimates a run; [`schedule`] runs batches on a period; [`watch`] runs them as
//! histories arrive.
//!
//! This is the only code that moves histories through their states during a run, and it does
//! so only through [`crate::store::histories`]; it never knows which runner executed the job
//! beyond the [`Runner`] trait (ARCHITECTURE.md: Invariants).

mod heartbeat;
pub mod planner;
mod recorder;
pub mod schedule;
pub mod watch;

use crate::runner::{Runner, is_data_failure};
use crate::store::datasets::{self, DatasetRow};
use crate::store::histories::{self, Claim, ClaimScope};
use crate::store::job_runs::{self, RunTotals};
use anyhow::Result;
use facematch_datasets::{DatasetRef, Manifest, S3Options};
use facematch_job::{JobOutput, JobSpec};
use heartbeat::with_heartbeat;
use recorder::JobRunRecorder;
use serde::Serialize;
use std::sync::Arc;
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
    /// Histories per pass (None: [`DEFAULT_BATCH_SIZE`] on local runners, all on remote ones).
    pub batch_size: Option<usize>,
}

/// The planner refused the run: nothing was claimed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PlanRefused(pub String);

impl PlanRefused {
    /// Why `plan` refuses runner `label`.
    fn new(label: &str, plan: &planner::Plan) -> PlanRefused {
        PlanRefused(format!(
            "refusing {label}: this machine alone would finish in {:.1} s, before the cluster \
             has started (≈ {:.0} s); run inline, or pass --force",
            plan.local_secs, plan.startup_secs
        ))
    }
}

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
            batch_size: None,
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
    /// Histories claimed, over all passes.
    pub claimed: usize,
    /// Passes over the dataset: each claims at most `--batch-size` histories, answers them and
    /// writes them back before the next claims more.
    pub passes: u32,
    /// Histories FINISHED.
    pub finished: u64,
    /// Histories ERROR (rejected at claim or failed run).
    pub errored: u64,
    /// Histories whose dead runs were requeued before this one.
    pub requeued: u64,
    /// Histories of this run put back to PENDING because a worker process was lost.
    pub requeued_after_failure: u64,
    /// Histories taken from this run before their results were written (its lease had expired,
    /// e.g. the driver was paused): their results were dropped, and another run answers them.
    pub lost: u64,
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
    pub plan: Option<planner::Plan>,
    /// What a person must act on that did not change the outcome (a cluster left running).
    pub warnings: Vec<String>,
}

impl RunSummary {
    /// Counts one pass's claim in.
    fn add_claim(&mut self, claim: &Claim) {
        self.passes += 1;
        self.claimed += claim.queries.len() + claim.rejected.len();
        self.errored += claim.rejected.len() as u64;
        let ids = claim.queries.iter().map(|q| q.history_id);
        self.history_ids
            .extend(ids.chain(claim.rejected.iter().map(|(id, _)| *id)));
    }
}

/// Runs every PENDING history that exists now (within `options.scope`) on `runner`, in passes
/// of at most the batch size: each pass claims, scans the dataset once and writes back.
pub fn run_pending(
    database_url: &str,
    runner: &dyn Runner,
    options: &RunOptions,
) -> Result<RunSummary> {
    let mut client = crate::store::connect_checked(database_url, crate::store::Access::Write)?;
    run_pending_on(&mut client, database_url, runner, options)
}

/// [`run_pending`] on the open connection `client` (a long-lived process keeps one; it is
/// replaced if the database goes away mid-run). `database_url` is for the heartbeat.
pub fn run_pending_on(
    client: &mut postgres::Client,
    database_url: &str,
    runner: &dyn Runner,
    options: &RunOptions,
) -> Result<RunSummary> {
    let mut summary = RunSummary {
        runner: runner.label(),
        ..RunSummary::default()
    };
    summary.requeued = requeue_dead_runs(client, options.max_attempts)?;
    let dataset = datasets::resolve(client, options.dataset.as_ref())?;
    let (storage, manifest) = dataset.load_manifest(&options.s3)?;
    summary.dataset = dataset.label();
    runner.check(storage.root_uri())?;
    summary.plan = plan_or_refuse(client, runner, options, &manifest, &summary.runner)?;

    let run_id = job_runs::start(client, &summary.runner, dataset.id, &summary.dataset)?;
    summary.run_id = Some(run_id);
    let batch_size = options.batch_size.or_else(|| {
        // A pass on a remote runner costs a cluster's start-up: by default it takes everything.
        (!runner.capacity().remote).then_some(DEFAULT_BATCH_SIZE)
    });
    let scope = ClaimScope {
        up_to: histories::newest_id(client)?,
        ..options.scope.clone()
    };
    let root_uri = storage.root_uri().to_string();
    let label = summary.runner.clone();
    // The heartbeat covers every pass's write too: the lease must outlive the last commit.
    with_heartbeat(database_url, run_id, options.lease, || -> Result<()> {
        while let Some(take) = next_take(options.scope.limit, batch_size, summary.claimed) {
            let claim_started = Instant::now();
            let claim = with_reconnect(client, database_url, |client| {
                let scope = ClaimScope {
                    limit: take,
                    ..scope.clone()
                };
                claim(client, run_id, options, &scope, &dataset, &manifest, &label)
            })?;
            summary.claim_ms += claim_started.elapsed().as_millis() as u64;
            if claim.is_empty() {
                break;
            }
            summary.add_claim(&claim);
            if claim.queries.is_empty() {
                continue;
            }
            let spec = Arc::new(JobSpec {
                root_uri: root_uri.clone(),
                s3: options.s3.clone(),
                manifest: manifest.clone(),
                queries: claim.queries,
            });
            let scan_started = Instant::now();
            let (outcome, warnings) = execute(database_url, runner, run_id, spec.clone());
            summary.warnings.extend(warnings);
            summary.scan_ms += scan_started.elapsed().as_millis() as u64;
            fault_point_before_write();
            let write_started = Instant::now();
            let outcome = Outcome::of(outcome);
            with_reconnect(client, database_url, |client| {
                write_back(client, run_id, options, &spec, &outcome, &mut summary)
            })?;
            summary.write_ms += write_started.elapsed().as_millis() as u64;
            // A failed pass ends the run: the next pass would fail the same way. What is not
            // claimed yet stays PENDING, its attempts untouched.
            if summary.error.is_some() || crate::signals::stop_requested() {
                break;
            }
        }
        Ok(())
    })?;
    // Sorted once: a concurrent run's requeue can hand a later pass older ids.
    summary.history_ids.sort_unstable();
    with_reconnect(client, database_url, |client| {
        let released = histories::release(client, run_id)?;
        if released > 0 {
            tracing::warn!(run_id, released, "released histories claimed but never run");
        }
        record_run(client, run_id, &summary)
    })?;
    Ok(summary)
}

/// Histories per pass on local runners when `--batch-size` is not given: large enough that
/// reading the shards again costs little next to scoring (10,000 queries × 1M faces is ~40 s on
/// one thread), small enough that a pass's queries and results stay a few megabytes.
pub const DEFAULT_BATCH_SIZE: usize = 10_000;

/// How many histories the next pass may claim (`Some(None)`: no bound), or None when the run
/// has claimed its `limit` already.
fn next_take(limit: Option<i64>, batch_size: Option<usize>, claimed: usize) -> Option<Option<i64>> {
    let left = limit.map(|limit| (limit - claimed as i64).max(0));
    if left == Some(0) {
        return None;
    }
    let batch = batch_size.map(|b| b as i64);
    Some(match (left, batch) {
        (Some(l), Some(b)) => Some(l.min(b)),
        (l, b) => l.or(b),
    })
}

/// Runs `step`, and again on a new connection while the old one was lost (the server
/// restarted, a failover): waits for the database with backoff for up to a minute. The writes
/// are safe to repeat — each history moves only from RUNNING under this run.
fn with_reconnect<T>(
    client: &mut postgres::Client,
    database_url: &str,
    mut step: impl FnMut(&mut postgres::Client) -> Result<T>,
) -> Result<T> {
    use backon::BackoffBuilder;
    let mut waits = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_total_delay(Some(Duration::from_secs(60)))
        .with_max_times(usize::MAX)
        .build();
    loop {
        match step(client) {
            Err(e) if client.is_closed() => {
                tracing::warn!("lost the database ({e:#}); reconnecting");
                loop {
                    let Some(wait) = waits.next() else {
                        return Err(e.context("the database did not come back within a minute"));
                    };
                    std::thread::sleep(wait);
                    match crate::store::connect_checked(database_url, crate::store::Access::Write) {
                        Ok(fresh) => {
                            *client = fresh;
                            break;
                        }
                        Err(again) => tracing::debug!("still no database: {again:#}"),
                    }
                }
            }
            other => return other,
        }
    }
}

/// Requeues the histories of runs whose lease expired; returns how many went back to PENDING.
fn requeue_dead_runs(client: &mut postgres::Client, max_attempts: i32) -> Result<u64> {
    let (requeued, gave_up) = histories::requeue_expired(client, max_attempts)?;
    if requeued + gave_up > 0 {
        tracing::warn!(
            requeued,
            gave_up,
            "requeued histories of runs that stopped responding"
        );
    }
    Ok(requeued)
}

/// The planner's estimate, printed when asked for; an error when a remote runner would be
/// slower than this machine and the run is not forced. Nothing is claimed before this.
fn plan_or_refuse(
    client: &mut postgres::Client,
    runner: &dyn Runner,
    options: &RunOptions,
    manifest: &Manifest,
    label: &str,
) -> Result<Option<planner::Plan>> {
    let pending = histories::count_claimable(client, &options.scope)?;
    // Measuring the rate takes ~50 ms: only when someone reads the plan or it may refuse.
    if pending == 0 || !(options.print_plan || runner.capacity().remote) {
        return Ok(None);
    }
    let local_threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let plan = planner::plan(
        manifest.count,
        pending,
        manifest.dim,
        runner.capacity(),
        local_threads,
        planner::measure_rate(manifest.dim),
    );
    if options.print_plan {
        eprintln!("{}", plan.describe(label));
    }
    if plan.slower_than_local && !options.force {
        return Err(PlanRefused::new(label, &plan).into());
    }
    Ok(Some(plan))
}

/// Claims one pass's histories within `scope`; the invalid ones are already ERROR.
fn claim(
    client: &mut postgres::Client,
    run_id: i64,
    options: &RunOptions,
    scope: &ClaimScope,
    dataset: &DatasetRow,
    manifest: &Manifest,
    runner_label: &str,
) -> Result<Claim> {
    let claim = histories::claim(
        client,
        run_id,
        scope,
        &dataset.label(),
        manifest.dim,
        runner_label,
        options.lease,
    )?;
    for (id, message) in &claim.rejected {
        tracing::warn!(history = id, "rejected: {message}");
    }
    Ok(claim)
}

/// Runs the job on `runner`; returns its outcome and what the runner warned about.
fn execute(
    database_url: &str,
    runner: &dyn Runner,
    run_id: i64,
    spec: Arc<JobSpec>,
) -> (Result<JobOutput>, Vec<String>) {
    let context = JobRunRecorder::new(database_url, run_id);
    let outcome = runner.search(&spec, &context);
    (outcome, context.warnings())
}

/// Where the tests inject a fault between the scan and the write (ARCHITECTURE.md: Testing),
/// through `FACEMATCH_FAULT`: `stop-before-write` stops this process (SIGSTOP, as a paused VM
/// or a suspended laptop would be) until someone sends SIGCONT; `pause-before-write:MS` sleeps
/// MS milliseconds with the heartbeat running (a slow write). Unset, nothing happens.
fn fault_point_before_write() {
    match injected_fault().as_deref() {
        Some("stop-before-write") => {
            // SAFETY: raise(2) with a valid signal number.
            unsafe {
                libc::raise(libc::SIGSTOP);
            }
        }
        Some(fault) => pause_if(fault, "pause-before-write:"),
        None => {}
    }
}

/// The tests' fault inside the write: `pause-in-write:MS` sleeps MS milliseconds once per
/// process, with the first chunk's transaction open and uncommitted (where a restarted server
/// cuts the write in half).
fn fault_point_in_write() {
    // Called for every chunk written: the environment is read once, by the first.
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Some(fault) = injected_fault() {
            pause_if(&fault, "pause-in-write:");
        }
    });
}

/// `FACEMATCH_FAULT`, when set.
fn injected_fault() -> Option<String> {
    std::env::var("FACEMATCH_FAULT").ok()
}

/// Sleeps the milliseconds of `fault` when it is `prefix` followed by a number.
fn pause_if(fault: &str, prefix: &str) {
    if let Some(ms) = fault.strip_prefix(prefix).and_then(|ms| ms.parse().ok()) {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

/// How the job ended, in the terms the write needs (kept to write again after a reconnect).
enum Outcome {
    /// The results.
    Done(JobOutput),
    /// The job failed on its data: the histories' answer.
    DataFailure(String),
    /// The machinery failed: the histories go back to PENDING.
    MachineryFailure(String),
}

impl Outcome {
    fn of(result: Result<JobOutput>) -> Outcome {
        match result {
            Ok(output) => Outcome::Done(output),
            Err(e) if is_data_failure(&e) => Outcome::DataFailure(format!("{e:#}")),
            Err(e) => Outcome::MachineryFailure(format!("{e:#}")),
        }
    }
}

/// Writes the run's outcome: every history's results and FINISHED in one transaction per chunk;
/// or, when the job failed on its data, ERROR with the reason; or, for any failure of the
/// machinery (a lost worker, a cluster that would not start, storage or an API out of reach),
/// PENDING again — the histories did nothing wrong — until their attempts run out.
fn write_back(
    client: &mut postgres::Client,
    run_id: i64,
    options: &RunOptions,
    spec: &JobSpec,
    outcome: &Outcome,
    summary: &mut RunSummary,
) -> Result<()> {
    let ids: Vec<i64> = spec.queries.iter().map(|q| q.history_id).collect();
    match outcome {
        Outcome::Done(output) => {
            let written =
                histories::finish(client, run_id, &output.results, &mut fault_point_in_write)?;
            // Counted only once the write went through: a write repeated after a reconnect
            // must not count the pass twice.
            summary.faces_scanned += output.faces_scanned;
            summary.pairs_scored += output.pairs_scored;
            summary.finished += written.finished;
            summary.lost += written.lost.len() as u64;
            if !written.lost.is_empty() {
                summary.warnings.push(lost_message(run_id, &written.lost));
            }
        }
        Outcome::DataFailure(e) => {
            let message = format!("run {run_id} failed: {e}");
            summary.errored += histories::fail(client, run_id, &ids, &message)?;
            summary.error = Some(message);
        }
        Outcome::MachineryFailure(e) => {
            let message = format!("run {run_id} failed: {e}");
            let (requeued, errored) =
                histories::requeue(client, run_id, &ids, options.max_attempts, &message)?;
            summary.requeued_after_failure += requeued;
            summary.errored += errored;
            summary.error = Some(message);
        }
    }
    Ok(())
}

/// What a run that lost histories before writing them says.
fn lost_message(run_id: i64, lost: &[i64]) -> String {
    let shown: Vec<String> = lost.iter().take(10).map(i64::to_string).collect();
    let more = if lost.len() > shown.len() {
        format!(" and {} more", lost.len() - shown.len())
    } else {
        String::new()
    };
    format!(
        "run {run_id} lost {} histories before writing their results — its lease had expired \
         and another run took them over, which answers them — ids {}{more}",
        lost.len(),
        shown.join(", ")
    )
}

/// Ends the run's `job_runs` row with what it did.
fn record_run(client: &mut postgres::Client, run_id: i64, summary: &RunSummary) -> Result<()> {
    job_runs::finish(
        client,
        run_id,
        RunTotals {
            error: summary.error.as_deref(),
            histories: summary.claimed,
            faces_scanned: summary.faces_scanned,
            pairs_scored: summary.pairs_scored,
            claim_ms: summary.claim_ms,
            scan_ms: summary.scan_ms,
            write_ms: summary.write_ms,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::Capacity;

    #[test]
    fn passes_take_at_most_the_batch_and_stop_at_the_limit() {
        assert_eq!(next_take(None, Some(1000), 0), Some(Some(1000)));
        assert_eq!(next_take(None, Some(1000), 5000), Some(Some(1000)));
        assert_eq!(next_take(None, None, 0), Some(None));
        assert_eq!(next_take(Some(2500), Some(1000), 2000), Some(Some(500)));
        assert_eq!(next_take(Some(2500), None, 0), Some(Some(2500)));
        assert_eq!(next_take(Some(2500), Some(1000), 2500), None);
    }

    #[test]
    fn the_refusal_reads_as_one_sentence() {
        let cluster = Capacity {
            threads: 64,
            startup: Duration::from_secs(420),
            remote: true,
        };
        let plan = planner::plan(1_000_000, 16, 128, cluster, 2, 2e9);
        assert!(plan.slower_than_local);
        let message = PlanRefused::new("emr:2x2:c7i.2xlarge", &plan).to_string();
        assert_eq!(
            message,
            "refusing emr:2x2:c7i.2xlarge: this machine alone would finish in 1.0 s, before the \
             cluster has started (≈ 420 s); run inline, or pass --force"
        );
    }
}
