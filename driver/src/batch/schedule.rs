//! `facematch schedule`: batch runs on a fixed period (ARCHITECTURE.md: Where it runs).
//!
//! Time is cut into windows aligned on the period (`every=5m@2026-11-22T22:30:00Z`). A scheduler
//! takes a window by inserting its key into `schedule_windows`; the primary key lets exactly one
//! scheduler win, so several schedulers on one database (for availability) never run a window
//! twice, and the claim (`FOR UPDATE SKIP LOCKED`) never gives a history to two runs. SIGTERM or
//! Ctrl-C lets the current window finish, then the scheduler exits.

use super::{RunOptions, RunSummary, run_pending};
use crate::runner::Runner;
use crate::store::windows::{self, WindowEnd};
use anyhow::Result;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One window: its key and the time it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Unique key: period and start.
    pub key: String,
    /// Seconds since the epoch at which the window starts.
    pub start: u64,
    /// Seconds since the epoch at which the next window starts.
    pub end: u64,
}

/// The window holding `now` (seconds since the epoch) for a period of `every`.
pub fn window_at(now: u64, every: Duration) -> Window {
    let period = every.as_secs().max(1);
    let start = now - now % period;
    let stamp = chrono::DateTime::from_timestamp(start as i64, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| start.to_string());
    Window {
        key: format!(
            "every={}@{stamp}",
            humantime::format_duration(Duration::from_secs(period))
        ),
        start,
        end: start + period,
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What happened in one window.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WindowReport {
    /// The window's key.
    pub window: String,
    /// Whether this scheduler ran it (false: another one had it).
    pub ran: bool,
    /// The run, when this scheduler ran the window and there was work.
    pub run: Option<RunSummary>,
}

/// Runs the current window if no scheduler has yet; returns what happened.
pub fn run_window(
    database_url: &str,
    runner: &dyn Runner,
    options: &RunOptions,
    window: &Window,
) -> Result<WindowReport> {
    let me = format!(
        "{}:{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into()),
        std::process::id()
    );
    let mut client = crate::store::connect_checked(database_url, crate::store::Access::Write)?;
    let report = |ran, run| WindowReport {
        window: window.key.clone(),
        ran,
        run,
    };
    if !windows::take(&mut client, &window.key, &me)? {
        return Ok(report(false, None));
    }
    // An idle window is recorded without a run (no empty job_runs rows every few seconds).
    if !windows::has_work(&mut client)? {
        let end = WindowEnd {
            status: "FINISHED",
            error: None,
            run_id: None,
            histories: 0,
        };
        windows::finish(&mut client, &window.key, end)?;
        return Ok(report(true, None));
    }
    let outcome = run_pending(database_url, runner, options);
    let error = match &outcome {
        Ok(summary) => summary.error.clone(),
        Err(e) => Some(format!("{e:#}")),
    };
    let summary = outcome.as_ref().ok();
    let end = WindowEnd {
        status: if error.is_some() { "ERROR" } else { "FINISHED" },
        error: error.as_deref(),
        run_id: summary.and_then(|s| s.run_id),
        histories: summary.map_or(0, |s| s.claimed),
    };
    windows::finish(&mut client, &window.key, end)?;
    Ok(report(true, Some(outcome?)))
}

/// Runs a window every `every` until SIGTERM/SIGINT (or once, with `once`); calls `report` after
/// each window.
pub fn schedule(
    database_url: &str,
    runner: &dyn Runner,
    options: &RunOptions,
    every: Duration,
    once: bool,
    mut report: impl FnMut(&WindowReport),
) -> Result<()> {
    crate::signals::install();
    loop {
        let window = window_at(now_secs(), every);
        match run_window(database_url, runner, options, &window) {
            Ok(done) => report(&done),
            // A failed window is recorded; the scheduler keeps going (the database may be back).
            Err(e) if !once => tracing::error!(window = window.key, "window failed: {e:#}"),
            Err(e) => return Err(e),
        }
        if once {
            return Ok(());
        }
        while now_secs() < window.end {
            if crate::signals::stop_requested() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if crate::signals::stop_requested() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_align_on_the_period() {
        let every = Duration::from_secs(300);
        let w = window_at(1_795_000_123, every);
        assert_eq!((w.start, w.end), (1_794_999_900, 1_795_000_200));
        assert_eq!(w.key, "every=5m@2026-11-18T11:05:00Z");
        assert_eq!(window_at(w.start, every), w);
        assert_eq!(window_at(w.end - 1, every), w);
        assert_ne!(window_at(w.end, every).key, w.key);
    }
}
