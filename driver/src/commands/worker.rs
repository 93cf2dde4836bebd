//! `facematch worker`: join a timely cluster as one worker process — what `--runner processes`,
//! a cluster host or an EMR step starts.

use super::common::S3Args;
use crate::cluster::{
    DEFAULT_PEER_TIMEOUT, PortRange, Position, RunSource, WorkerOptions, host_name,
    run_worker_process,
};
use anyhow::{Result, bail};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

/// `facematch worker`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("run").required(true).args(["rendezvous", "pool"])))]
pub struct WorkerArgs {
    /// The run's rendezvous: a folder or s3://bucket/prefix holding spec.json.
    #[arg(long)]
    rendezvous: Option<String>,
    /// A pool (folder or s3://bucket/prefix) whose `current` names the run to join; without a
    /// run there within --connect-timeout the process exits 0.
    #[arg(long)]
    pool: Option<String>,
    /// This process's index, 0-based (process 0 assembles the cluster and writes the output).
    /// Without it the process joins at whichever position process 0 gives it.
    #[arg(long, requires = "processes")]
    process: Option<usize>,
    /// Number of processes in the cluster (with --process).
    #[arg(long)]
    processes: Option<usize>,
    /// Timely worker threads in this process.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Address the other processes reach this one at; `auto` is this machine's host name.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Seconds to wait for the other processes before giving up, naming the missing ones.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    connect_timeout: u64,
    /// The processes' host:port, one per line in process order, instead of registering in the
    /// rendezvous (which then only carries the job and its output).
    #[arg(long, requires = "process")]
    hostfile: Option<PathBuf>,
    /// With --pool: serve one run after another until stopped, instead of exiting after one
    /// (what an EMR node's bootstrap starts).
    #[arg(long, requires = "pool")]
    serve: bool,
    /// The TCP ports this process may listen on, FROM-TO (what the firewall between the hosts
    /// opens); default: any free port.
    #[arg(long)]
    port_range: Option<PortRange>,
    /// Process 0: seconds a process of the run may go without a heartbeat before the run is
    /// given up (a process cut off by the network exits after as long without reaching the
    /// rendezvous).
    #[arg(
        long,
        default_value_t = DEFAULT_PEER_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    peer_timeout: u64,
    #[command(flatten)]
    s3: S3Args,
}

/// Runs this process's share of the job.
pub fn exec(args: WorkerArgs) -> Result<()> {
    let run = match (args.rendezvous, args.pool) {
        (Some(uri), _) => RunSource::Rendezvous(uri),
        (None, Some(uri)) => RunSource::Pool {
            uri,
            serve: args.serve,
        },
        (None, None) => bail!("give --rendezvous or --pool"),
    };
    let position = match (args.process, args.processes) {
        (Some(process), Some(processes)) => Position::Index { process, processes },
        _ => Position::Join,
    };
    let host = if args.host == "auto" {
        host_name()?
    } else {
        args.host
    };
    run_worker_process(&WorkerOptions {
        run,
        position,
        threads: args.threads,
        host,
        connect_timeout: Duration::from_secs(args.connect_timeout),
        s3: args.s3.options(),
        hostfile: args.hostfile,
        ports: args.port_range,
        peer_timeout: Duration::from_secs(args.peer_timeout),
    })
}
