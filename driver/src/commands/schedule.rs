//! `facematch schedule`: the PENDING histories as one batch every period.

use super::run::RunArgs;
use crate::batch::schedule::schedule;
use crate::output::{print_json, tables};
use crate::store::histories::ClaimScope;
use anyhow::{Result, bail};
use clap::Args;
use std::time::Duration;

/// `facematch schedule`.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// The period, e.g. 30s, 5m, 1h.
    #[arg(long, value_parser = humantime::parse_duration)]
    every: Duration,
    /// Run the current window (if no scheduler has) and exit: for cron.
    #[arg(long)]
    once: bool,
    #[command(flatten)]
    run: RunArgs,
}

/// Runs windows until SIGTERM or SIGINT (or one, with `--once`), printing each.
pub fn exec(args: ScheduleArgs, json: bool) -> Result<()> {
    if args.every.is_zero() {
        bail!("--every must be positive");
    }
    let runner = args.run.runner()?;
    let options = args.run.options(ClaimScope::default())?;
    schedule(
        &args.run.db.url()?,
        runner.as_ref(),
        &options,
        args.every,
        args.once,
        |done| {
            if json {
                let _ = print_json(done);
            } else if let Some(summary) = &done.run {
                print!("window {}: {}", done.window, tables::run_summary(summary));
            } else if done.ran {
                println!("window {}: nothing pending", done.window);
            } else {
                println!("window {}: already run by another scheduler", done.window);
            }
        },
    )
}
