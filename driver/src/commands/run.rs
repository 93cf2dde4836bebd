//! `facematch run`: claim every PENDING history and answer them all in one pass. Also the run
//! flags `search` and `schedule` share, and the choice of runner (`--runner`).

use super::EXIT_HISTORY_ERROR;
use super::common::{DatabaseArgs, S3Args, default_workers, parse_dataset};
use super::emr::EmrArgs;
use crate::batch::{RunOptions, run_pending};
use crate::cluster::DEFAULT_PEER_TIMEOUT;
use crate::output::{print_json, tables};
use crate::runner::Runner;
use crate::runner::emr::EmrRunner;
use crate::runner::hosts::HostsRunner;
use crate::runner::inline::InlineRunner;
use crate::runner::processes::ProcessesRunner;
use crate::store::histories::ClaimScope;
use anyhow::{Result, bail};
use clap::Args;
use facematch_datasets::S3Options;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

/// Where a dataflow runs (`--runner` and what each runner needs): the flags a batch run and a
/// photo build share.
#[derive(Debug, Args)]
pub struct RunnerArgs {
    /// Where the dataflow runs: inline, processes:N[xW] (worker processes here), hosts:N[xW]
    /// (the workers serving --pool on hosts you manage) or emr.
    #[arg(long, default_value = "inline")]
    pub runner: String,
    /// Timely worker threads per process.
    #[arg(long, short, default_value_t = default_workers())]
    pub workers: usize,
    /// processes runner: hand the workers a hostfile instead of letting them register.
    #[arg(long)]
    pub hostfile: bool,
    /// processes runner: the executable the worker processes run (default: this one), e.g. the
    /// portable binary of `make worker-binary`.
    #[arg(long, env = "FACEMATCH_WORKER_BINARY")]
    pub worker_binary: Option<PathBuf>,
    /// hosts runner: the pool the hosts' `facematch worker --pool … --serve` wait on (a shared
    /// folder or s3://bucket/prefix).
    #[arg(long, env = "FACEMATCH_POOL")]
    pub pool: Option<String>,
    /// processes and hosts runners: seconds to wait for every worker process to join.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_timeout: u64,
    /// Seconds a worker process may go without a heartbeat before the run is given up (a
    /// process cut off by the network exits after as long).
    #[arg(
        long,
        default_value_t = DEFAULT_PEER_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub peer_timeout: u64,
    #[command(flatten)]
    pub emr: Box<EmrArgs>,
}

/// How and where a batch runs (`facematch run`, and the run flags of `search` and `schedule`).
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub cluster: RunnerArgs,
    /// Dataset `name` or `name@vN` (default: the current one).
    #[arg(long, env = "FACEMATCH_DATASET")]
    pub dataset: Option<String>,
    /// Claim at most this many histories (oldest first).
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    pub limit: Option<i64>,
    /// Histories per pass over the dataset: each pass claims at most this many, answers and
    /// writes them before the next claims more, so memory and claims stay bounded however many
    /// are pending [default: 10000 on inline and processes, all at once on hosts and emr].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub batch_size: Option<u64>,
    /// Seconds a claim lasts without a heartbeat before another run may requeue it.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub lease_secs: u64,
    /// Attempts before a history whose runs keep dying ends in ERROR.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..))]
    pub max_attempts: i32,
    /// Run on a cluster even when the planner says this machine alone would finish first.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(flatten)]
    pub s3: S3Args,
}

impl RunArgs {
    /// The run's options, claiming within `scope` (and at most `--limit`).
    pub fn options(&self, scope: ClaimScope) -> Result<RunOptions> {
        if self.cluster.workers == 0 {
            bail!("--workers must be at least 1");
        }
        Ok(RunOptions {
            dataset: parse_dataset(self.dataset.as_deref())?,
            scope: ClaimScope {
                limit: self.limit,
                ..scope
            },
            lease: Duration::from_secs(self.lease_secs),
            max_attempts: self.max_attempts,
            s3: self.s3.options(),
            print_plan: true,
            force: self.force,
            batch_size: self.batch_size.map(|b| b as usize),
        })
    }

    /// The runner `--runner` names.
    pub fn runner(&self) -> Result<Box<dyn Runner>> {
        self.cluster.runner(&self.s3.options())
    }
}

impl RunnerArgs {
    /// The runner `--runner` names, reaching S3 with `s3`.
    pub fn runner(&self, s3: &S3Options) -> Result<Box<dyn Runner>> {
        let s3 = s3.clone();
        let kind = self
            .runner
            .parse::<RunnerKind>()
            .map_err(anyhow::Error::msg)?;
        Ok(match kind {
            RunnerKind::Inline => Box::new(InlineRunner {
                workers: self.workers,
            }),
            RunnerKind::Processes(processes, threads) => Box::new(ProcessesRunner {
                processes,
                threads: threads.unwrap_or(self.workers).max(1),
                connect_timeout: Duration::from_secs(self.connect_timeout),
                peer_timeout: self.peer_timeout(),
                s3,
                hostfile: self.hostfile,
                worker_binary: self.worker_binary.clone(),
            }),
            RunnerKind::Hosts(processes, threads) => {
                let Some(pool) = self.pool.clone() else {
                    bail!(
                        "--runner hosts needs --pool: the folder or s3://bucket/prefix the hosts' \
                         `facematch worker --pool … --serve` wait on"
                    );
                };
                crate::signals::install();
                Box::new(HostsRunner {
                    pool,
                    processes,
                    threads: threads.unwrap_or(self.workers).max(1),
                    connect_timeout: Duration::from_secs(self.connect_timeout),
                    peer_timeout: self.peer_timeout(),
                    s3,
                    cancelled: Box::new(crate::signals::stop_requested),
                })
            }
            RunnerKind::Emr => Box::new(EmrRunner::new(self.emr.options(
                self.workers,
                self.peer_timeout(),
                &s3,
            )?)?),
        })
    }
}

impl RunnerArgs {
    fn peer_timeout(&self) -> Duration {
        Duration::from_secs(self.peer_timeout)
    }
}

/// The runners a user can pick with `--runner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunnerKind {
    /// [`InlineRunner`].
    Inline,
    /// [`ProcessesRunner`] with this many processes and, if given, threads per process.
    Processes(usize, Option<usize>),
    /// [`HostsRunner`], likewise.
    Hosts(usize, Option<usize>),
    /// [`EmrRunner`].
    Emr,
}

impl FromStr for RunnerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let usage = || {
            format!(
                "unknown runner {s:?} (available: inline, processes:N, processes:NxW, hosts:N, \
                 hosts:NxW, emr)"
            )
        };
        match s.split_once(':') {
            None if s == "inline" => Ok(RunnerKind::Inline),
            None if s == "emr" => Ok(RunnerKind::Emr),
            Some((kind @ ("processes" | "hosts"), shape)) => {
                let positive = |v: &str| v.parse::<usize>().ok().filter(|n| *n > 0);
                let shape = match shape.split_once('x') {
                    None => positive(shape).map(|n| (n, None)),
                    Some((n, w)) => positive(n).zip(positive(w)).map(|(n, w)| (n, Some(w))),
                };
                let (n, w) = shape.ok_or_else(usage)?;
                Ok(if kind == "hosts" {
                    RunnerKind::Hosts(n, w)
                } else {
                    RunnerKind::Processes(n, w)
                })
            }
            _ => Err(usage()),
        }
    }
}

/// Runs one batch and prints its summary; exit 3 when a history ended in ERROR.
pub fn exec(args: RunArgs, json: bool) -> Result<ExitCode> {
    let cluster = &args.cluster;
    if cluster.emr.emr_dry_run {
        if cluster.runner != "emr" {
            bail!("--emr-dry-run goes with --runner emr");
        }
        let request = EmrRunner::dry_run(cluster.emr.options(
            cluster.workers,
            cluster.peer_timeout(),
            &args.s3.options(),
        )?)?;
        print_json(&request)?;
        return Ok(ExitCode::SUCCESS);
    }
    let runner = args.runner()?;
    let options = args.options(ClaimScope::default())?;
    let summary = run_pending(&args.db.url()?, runner.as_ref(), &options)?;
    if json {
        print_json(&summary)?;
    } else {
        print!("{}", tables::run_summary(&summary));
    }
    if summary.errored > 0 || summary.error.is_some() {
        return Ok(ExitCode::from(EXIT_HISTORY_ERROR));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_names_parse() {
        assert_eq!("inline".parse(), Ok(RunnerKind::Inline));
        assert_eq!("emr".parse(), Ok(RunnerKind::Emr));
        assert_eq!("processes:3".parse(), Ok(RunnerKind::Processes(3, None)));
        assert_eq!(
            "processes:2x4".parse(),
            Ok(RunnerKind::Processes(2, Some(4)))
        );
        assert_eq!("hosts:3".parse(), Ok(RunnerKind::Hosts(3, None)));
        assert_eq!("hosts:3x2".parse(), Ok(RunnerKind::Hosts(3, Some(2))));
        for bad in [
            "processes:0",
            "processes:2x0",
            "processes:",
            "emr:2",
            "processes:x2",
            "hosts",
            "hosts:0",
        ] {
            assert!(bad.parse::<RunnerKind>().is_err(), "{bad}");
        }
    }
}
