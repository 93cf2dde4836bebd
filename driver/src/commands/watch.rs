//! `facematch watch`: answer histories as they arrive (LISTEN/NOTIFY), with the dataset held in
//! memory — the engine of `facematch serve` without the web server, for a headless host.

use super::common::{DatabaseArgs, S3Args, default_workers, parse_dataset};
use crate::batch::RunOptions;
use crate::batch::watch::{WatchEvent, watch};
use crate::output::{print_json_line, tables};
use crate::runner::resident::ResidentRunner;
use anyhow::{Result, bail};
use clap::Args;
use std::time::Duration;

/// How the engine of `watch` and `serve` runs: the dataset, threads, leases, passes.
#[derive(Debug, Args)]
pub struct EngineArgs {
    /// Dataset `name` or `name@vN` to answer with (default: the current one, followed as new
    /// versions become current).
    #[arg(long, env = "FACEMATCH_DATASET")]
    pub dataset: Option<String>,
    /// Timely worker threads scanning the dataset held in memory.
    #[arg(long, short, default_value_t = default_workers())]
    pub workers: usize,
    /// Histories per pass over the dataset (arrivals during a pass go into the next).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub batch_size: u64,
    /// Seconds a claim lasts without a heartbeat before another run may requeue it.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub lease_secs: u64,
    /// Attempts before a history whose runs keep dying ends in ERROR.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..))]
    pub max_attempts: i32,
    /// How often to look for work without a notification (histories of runs whose lease
    /// expired), e.g. 5s.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub poll: Duration,
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(flatten)]
    pub s3: S3Args,
}

impl EngineArgs {
    /// The runner (nothing loaded yet) and the options of every run.
    pub fn engine(&self) -> Result<(ResidentRunner, RunOptions)> {
        if self.workers == 0 {
            bail!("--workers must be at least 1");
        }
        if self.poll.is_zero() {
            bail!("--poll must be positive");
        }
        let options = RunOptions {
            dataset: parse_dataset(self.dataset.as_deref())?,
            lease: Duration::from_secs(self.lease_secs),
            max_attempts: self.max_attempts,
            s3: self.s3.options(),
            batch_size: Some(self.batch_size as usize),
            ..RunOptions::default()
        };
        Ok((
            ResidentRunner::new(self.workers, self.s3.options()),
            options,
        ))
    }
}

/// `facematch watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    engine: EngineArgs,
}

/// Watches until SIGTERM or SIGINT, printing each run.
pub fn exec(args: WatchArgs, json: bool) -> Result<()> {
    crate::signals::install();
    let (runner, options) = args.engine.engine()?;
    watch(
        &args.engine.db.url()?,
        &runner,
        &options,
        args.engine.poll,
        &crate::signals::stop_requested,
        &mut |event| print_event(&event, json),
    )
}

/// One line (or one line of JSON) per event.
fn print_event(event: &WatchEvent<'_>, json: bool) {
    match event {
        WatchEvent::Ready { dataset } if json => {
            let _ = print_json_line(&serde_json::json!({ "ready": true, "dataset": dataset }));
        }
        WatchEvent::Ready { dataset } => match dataset {
            Some(dataset) => println!("watching for histories; {dataset} is in memory"),
            None => println!("watching for histories; no dataset yet (waiting for one)"),
        },
        WatchEvent::Ran(summary) if json => {
            let _ = print_json_line(summary);
        }
        WatchEvent::Ran(summary) => print!("{}", tables::run_summary(summary)),
        WatchEvent::Failed(error) => eprintln!("error: {error:#}"),
    }
}
