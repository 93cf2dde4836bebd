//! Immediate runs: a long-lived loop that answers histories as they arrive instead of at the next
//! scheduled window (`facematch watch`, and the engine of `facematch serve`).
//!
//! It LISTENs on the channels the schema's triggers notify (`store::notify`): every history that
//! becomes PENDING — through `submit`, the HTTP API or an application's plain INSERT — wakes it,
//! and it runs whatever is pending through [`run_pending_on`], the very claim, run and finish
//! code of `facematch run`. Histories that arrive during a run wait for the next one, which
//! starts as soon as this one ends (their notification is queued meanwhile), so bursts batch
//! themselves: a hundred searches submitted at once are one or two passes. It also wakes every
//! `poll` without a notification, to rescue the histories of runs whose lease expired.
//!
//! The runner is given the current dataset version ahead of time ([`Runner::prepare`]) at the
//! start and whenever another version becomes current, so a resident runner loads it before a
//! search has to wait for it.

use super::{RunOptions, RunSummary, requeue_dead_runs, run_pending_on};
use crate::runner::Runner;
use crate::store::{self, Access, datasets, histories, notify};
use anyhow::{Context, Result};
use std::time::Duration;

/// What the loop tells its caller.
#[derive(Debug)]
pub enum WatchEvent<'a> {
    /// It is listening; the current dataset (if any) is ready.
    Ready {
        /// `name@vN` of the current version, if there is one.
        dataset: Option<String>,
    },
    /// A run answered what was pending.
    Ran(&'a RunSummary),
    /// Something failed; the loop goes on (the next notification or poll tries again).
    Failed(&'a anyhow::Error),
}

/// Watches `database_url` until `stop()` says so, running pending histories on `runner` with
/// `options` as they arrive; `report` hears what happened.
pub fn watch(
    database_url: &str,
    runner: &dyn Runner,
    options: &RunOptions,
    poll: Duration,
    stop: &dyn Fn() -> bool,
    report: &mut dyn FnMut(WatchEvent<'_>),
) -> Result<()> {
    let mut listener =
        notify::Listener::connect(database_url, &[notify::PENDING, notify::DATASET])?;
    let mut client = store::connect_checked(database_url, Access::Write)?;
    let dataset = prepare_current(&mut client, runner, options).unwrap_or_else(|e| {
        report(WatchEvent::Failed(&e));
        None
    });
    report(WatchEvent::Ready { dataset });
    let mut dataset_changed = false;
    while !stop() {
        if dataset_changed && let Err(e) = prepare_current(&mut client, runner, options) {
            report(WatchEvent::Failed(&e));
        }
        match run_if_pending(&mut client, database_url, runner, options) {
            Ok(Some(summary)) => report(WatchEvent::Ran(&summary)),
            Ok(None) => {}
            Err(e) => {
                report(WatchEvent::Failed(&e));
                if client.is_closed()
                    && let Ok(fresh) = store::connect_checked(database_url, Access::Write)
                {
                    client = fresh;
                }
            }
        }
        match wait(&mut listener, poll, stop) {
            Ok(woken) => dataset_changed = woken.dataset_changed,
            Err(e) => report(WatchEvent::Failed(&e)),
        }
    }
    Ok(())
}

/// Runs what is claimable now, if anything (after rescuing the histories of dead runs); None
/// when there was nothing, so an idle watcher records no empty runs.
fn run_if_pending(
    client: &mut postgres::Client,
    database_url: &str,
    runner: &dyn Runner,
    options: &RunOptions,
) -> Result<Option<RunSummary>> {
    requeue_dead_runs(client, options.max_attempts)?;
    if histories::count_claimable(client, &options.scope)? == 0 {
        return Ok(None);
    }
    run_pending_on(client, database_url, runner, options).map(Some)
}

/// Hands the runner the version a run would scan now; returns its label (None: no dataset yet).
fn prepare_current(
    client: &mut postgres::Client,
    runner: &dyn Runner,
    options: &RunOptions,
) -> Result<Option<String>> {
    let dataset = match datasets::resolve(client, options.dataset.as_ref()) {
        Ok(dataset) => dataset,
        // No dataset registered yet: histories wait, and a new version's notice wakes us.
        Err(_) if options.dataset.is_none() && datasets::list(client)?.is_empty() => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let (storage, manifest) = dataset.load_manifest(&options.s3)?;
    runner
        .prepare(storage.root_uri(), &manifest)
        .with_context(|| format!("loading {}", dataset.label()))?;
    Ok(Some(dataset.label()))
}

/// Why the loop woke.
#[derive(Debug, Default)]
struct Woken {
    /// A dataset version became current.
    dataset_changed: bool,
}

/// Waits up to `poll` for a notification, in short slices so that `stop` is heard within a
/// fraction of a second. After a lost connection it waits the poll out (a database that is gone
/// is not asked again at once) and the loop's next pass runs anyway: anything may have arrived
/// while it was down.
fn wait(listener: &mut notify::Listener, poll: Duration, stop: &dyn Fn() -> bool) -> Result<Woken> {
    const SLICE: Duration = Duration::from_millis(200);
    let mut waited = Duration::ZERO;
    while waited < poll && !stop() {
        let slice = SLICE.min(poll - waited);
        let notices = match listener.wait(slice) {
            Ok(notices) => notices,
            Err(e) => {
                std::thread::sleep(poll - waited);
                return Err(e.context("the listening connection was lost"));
            }
        };
        if !notices.is_empty() {
            return Ok(Woken {
                dataset_changed: notices.iter().any(|n| n.channel == notify::DATASET),
            });
        }
        waited += slice;
    }
    Ok(Woken::default())
}
