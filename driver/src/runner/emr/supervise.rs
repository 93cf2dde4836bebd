//! Watching a run on EMR until it ends: DescribeCluster and DescribeStep with backoff, the run's
//! rendezvous for its output and its processes' heartbeats (a node cut off from the others
//! leaves the step running but stuck), and a limit; whatever happens, the cluster the run
//! started is terminated (success, failure, timeout, Ctrl-C).

use super::Emr;
use crate::cluster::{Rendezvous, Watcher};
use crate::runner::{DataFailure, RemoteJob, RunContext, WorkerLost};
use anyhow::Result;
use aws_sdk_emr::types::{ClusterState, StepState};
use facematch_job::WorkOutput;
use std::time::{Duration, Instant};

/// How to watch.
#[derive(Debug, Clone, Copy)]
pub struct Watch {
    /// First polling interval; it doubles up to `poll_max`.
    pub poll: Duration,
    /// Longest polling interval.
    pub poll_max: Duration,
    /// The whole run's limit, start-up included.
    pub timeout: Duration,
    /// Leave a cluster this run started running after a success (pooling).
    pub keep_alive: bool,
}

/// Watches `status` (cluster and step ids filled in) until the run ends, then terminates the
/// cluster if this run started it. `cancelled` is polled between calls (Ctrl-C).
pub fn supervise(
    emr: &Emr,
    mut status: RemoteJob,
    rendezvous: &Rendezvous,
    watch: Watch,
    context: &dyn RunContext,
    cancelled: &dyn Fn() -> bool,
) -> Result<WorkOutput> {
    let outcome = watch_until_done(emr, &mut status, rendezvous, watch, context, cancelled);
    if status.started_here && (outcome.is_err() || !watch.keep_alive) {
        match emr.terminate(&status.cluster_id) {
            Ok(()) => {
                status.cluster_state = emr
                    .cluster_state(&status.cluster_id)
                    .map(|(state, _)| state.as_str().to_string())
                    .unwrap_or_else(|_| "TERMINATING".into());
                context.record(&status);
            }
            // The outcome stands — results already computed are written — and the person
            // running facematch is told what to clean up.
            Err(e) => context.warn(&format!(
                "could not terminate cluster {}: {e:#}; terminate it with `facematch emr \
                 terminate {}`",
                status.cluster_id, status.cluster_id
            )),
        }
    }
    outcome
}

fn watch_until_done(
    emr: &Emr,
    status: &mut RemoteJob,
    rendezvous: &Rendezvous,
    watch: Watch,
    context: &dyn RunContext,
    cancelled: &dyn Fn() -> bool,
) -> Result<WorkOutput> {
    let started = Instant::now();
    let mut interval = watch.poll;
    let mut watcher = Watcher::new();
    loop {
        let seen = observe(emr, status, context)?;
        if let Some(outcome) = verdict(status, &seen, rendezvous, &mut watcher)? {
            return outcome;
        }
        if started.elapsed() >= watch.timeout {
            return Err(WorkerLost(format!(
                "timed out after {:?} (cluster {} {}, step {})",
                watch.timeout,
                status.cluster_id,
                seen.cluster.as_str(),
                seen.step.as_str()
            ))
            .into());
        }
        // Sleep in short slices so Ctrl-C and the limit are noticed at once.
        let wake = Instant::now() + interval.min(watch.timeout.saturating_sub(started.elapsed()));
        while Instant::now() < wake {
            if cancelled() {
                return Err(WorkerLost(format!(
                    "interrupted (cluster {} {})",
                    status.cluster_id,
                    seen.cluster.as_str()
                ))
                .into());
            }
            std::thread::sleep(Duration::from_millis(20).min(interval));
        }
        interval = (interval * 2).min(watch.poll_max);
    }
}

/// What one poll of the cluster and the step found.
struct Seen {
    cluster: ClusterState,
    cluster_reason: Option<String>,
    step: StepState,
    step_failure: Option<String>,
}

/// Describes the cluster and the step, and records their states when they changed.
fn observe(emr: &Emr, status: &mut RemoteJob, context: &dyn RunContext) -> Result<Seen> {
    let step_id = status.step_id.clone().unwrap_or_default();
    let (cluster, cluster_reason) = emr.cluster_state(&status.cluster_id)?;
    let (step, step_failure) = emr.step_state(&status.cluster_id, &step_id)?;
    let changed = status.cluster_state != cluster.as_str()
        || status.step_state.as_deref() != Some(step.as_str());
    if changed {
        status.cluster_state = cluster.as_str().to_string();
        status.step_state = Some(step.as_str().to_string());
        tracing::info!(
            cluster = status.cluster_id,
            cluster_state = status.cluster_state,
            step_state = step.as_str(),
            "EMR"
        );
        context.record(status);
    }
    Ok(Seen {
        cluster,
        cluster_reason,
        step,
        step_failure,
    })
}

/// How the run ended, if it has: the rendezvous says first whether the job itself ended (its
/// output, or the failure of the job on its data); otherwise a process that stopped beating, or
/// a step or a cluster that ended without an output, is a lost worker.
fn verdict(
    status: &RemoteJob,
    seen: &Seen,
    rendezvous: &Rendezvous,
    watcher: &mut Watcher,
) -> Result<Option<Result<WorkOutput>>> {
    if let Some(failure) = rendezvous.failure()? {
        return Ok(Some(Err(DataFailure(failure).into())));
    }
    if let Some(reason) = rendezvous.unavailable()? {
        return Ok(Some(Err(WorkerLost(reason).into())));
    }
    if rendezvous.is_finished()? {
        return Ok(Some(rendezvous.output()));
    }
    if let Some(lost) = watcher.lost(rendezvous)? {
        return Ok(Some(Err(WorkerLost(format!(
            "{lost} (cluster {})",
            status.cluster_id
        ))
        .into())));
    }
    let step_id = status.step_id.as_deref().unwrap_or_default();
    let lost = match seen.step {
        StepState::Completed => Some(format!(
            "step {step_id} completed without publishing an output at {}",
            rendezvous.uri()
        )),
        StepState::Failed | StepState::Cancelled | StepState::Interrupted => Some(format!(
            "step {step_id} on cluster {} ended {}{}",
            status.cluster_id,
            seen.step.as_str(),
            seen.step_failure
                .as_ref()
                .map(|f| format!(": {f}"))
                .unwrap_or_default()
        )),
        _ if matches!(
            seen.cluster,
            ClusterState::Terminating
                | ClusterState::Terminated
                | ClusterState::TerminatedWithErrors
        ) =>
        {
            Some(format!(
                "cluster {} is {}{}",
                status.cluster_id,
                seen.cluster.as_str(),
                seen.cluster_reason
                    .as_ref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ))
        }
        _ => None,
    };
    Ok(lost.map(|message| Err(WorkerLost(message).into())))
}
