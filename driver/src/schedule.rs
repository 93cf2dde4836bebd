//! `facematch schedule`: batch runs on a fixed period (SPEC section 6).
//!
//! Time is cut into windows aligned on the period (`every=5m@2026-11-22T22:30:00Z`). A scheduler
//! takes a window by inserting its key into `schedule_windows`; the primary key lets exactly one
//! scheduler win, so several schedulers on one database (for availability) never run a window
//! twice, and the claim (`FOR UPDATE SKIP LOCKED`) never gives a history to two runs. SIGTERM or
//! Ctrl-C lets the current window finish, then the scheduler exits.

use crate::run::{RunOptions, RunSummary, run_pending};
use crate::runner::Runner;
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
    let mut client = crate::db::connect_migrated(database_url)?;
    let taken = client.execute(
        "INSERT INTO schedule_windows (window_key, scheduler) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[&window.key, &me],
    )? == 1;
    if !taken {
        return Ok(WindowReport {
            window: window.key.clone(),
            ran: false,
            run: None,
        });
    }
    // An idle window is recorded without a run (no empty job_runs rows every few seconds).
    let work: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM histories WHERE status = 'PENDING'
                              OR (status = 'RUNNING' AND lease_expires_at < now()))",
            &[],
        )?
        .get(0);
    if !work {
        client.execute(
            "UPDATE schedule_windows SET status = 'FINISHED', histories = 0, finished_at = now()
              WHERE window_key = $1",
            &[&window.key],
        )?;
        return Ok(WindowReport {
            window: window.key.clone(),
            ran: true,
            run: None,
        });
    }
    let outcome = run_pending(database_url, runner, options);
    let (status, error, run_id, histories) = match &outcome {
        Ok(summary) => (
            if summary.error.is_some() {
                "ERROR"
            } else {
                "FINISHED"
            },
            summary.error.clone(),
            summary.run_id,
            summary.claimed as i32,
        ),
        Err(e) => ("ERROR", Some(format!("{e:#}")), None, 0),
    };
    client.execute(
        "UPDATE schedule_windows SET status = $2, error = $3, run_id = $4, histories = $5, finished_at = now()
          WHERE window_key = $1",
        &[&window.key, &status, &error, &run_id, &histories],
    )?;
    Ok(WindowReport {
        window: window.key.clone(),
        ran: true,
        run: Some(outcome?),
    })
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
