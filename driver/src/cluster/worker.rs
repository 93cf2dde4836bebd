//! `facematch worker`: find the run, take a position, connect to the others, run this process's
//! share of the job, and (process 0) publish the output or the job's failure.

use super::{Pool, Rendezvous, read_hostfile};
use anyhow::{Context, Result, anyhow, bail};
use facematch_datasets::S3Options;
use facematch_job::dataflow::JobError;
use std::sync::Arc;
use std::time::Duration;

/// Where a worker process finds its run.
#[derive(Debug, Clone)]
pub enum RunSource {
    /// The run's own rendezvous.
    Rendezvous(String),
    /// A pool whose `current` names the run.
    Pool(String),
}

/// Which position a worker process takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Process `process` of `processes` (process 0 publishes the member list and the output).
    Index {
        /// 0-based index.
        process: usize,
        /// Cluster size.
        processes: usize,
    },
    /// Whichever position process 0 assigns.
    Join,
}

/// What one worker process is told.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Where the run is.
    pub run: RunSource,
    /// Its position in the cluster.
    pub position: Position,
    /// Timely worker threads in this process.
    pub threads: usize,
    /// Host name or address the others reach this process at.
    pub host: String,
    /// How long to wait for the other processes (and, joining a pool, for a run).
    pub connect_timeout: Duration,
    /// S3 access (rendezvous and dataset).
    pub s3: S3Options,
    /// The processes' addresses, instead of registering in the rendezvous.
    pub hostfile: Option<std::path::PathBuf>,
}

/// This machine's host name (what `--host auto` advertises; on EC2 it resolves to the private
/// address inside the VPC).
pub fn host_name() -> Result<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into the buffer we own.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        bail!("cannot read this machine's host name");
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// Joins the cluster, runs this process's share of the job, and (process 0) publishes the output.
pub fn run_worker_process(options: &WorkerOptions) -> Result<()> {
    check_options(options)?;
    let Some(rendezvous) = find_run(options)? else {
        return Ok(());
    };
    let spec = rendezvous.spec()?;
    let Some((process, addresses)) = find_peers(options, &rendezvous)? else {
        tracing::info!(
            run = rendezvous.uri(),
            "every position is taken: not needed"
        );
        return Ok(());
    };
    tracing::info!(process, ?addresses, "joining the cluster");
    let connected = exit_unless_connected(options.connect_timeout, addresses.join(", "));
    let config = cluster_config(options.threads, process, addresses);
    let output = match facematch_job::dataflow::run_job_connected(Arc::new(spec), config, connected)
    {
        Ok(output) => output,
        // The data is at fault, not the cluster: say so, so the histories end in ERROR.
        Err(e @ (JobError::Shards(_) | JobError::Invalid(_))) => {
            rendezvous.publish_failure(&e.to_string())?;
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    match (process, output) {
        (0, Some(output)) => rendezvous.publish_output(&output),
        (0, None) => Err(anyhow!("process 0 returned no output")),
        _ => Ok(()),
    }
}

fn check_options(options: &WorkerOptions) -> Result<()> {
    if options.threads == 0 {
        bail!("--threads must be at least 1");
    }
    if let Position::Index { process, processes } = options.position
        && process >= processes
    {
        bail!("process {process} of {processes} is not a valid cluster position");
    }
    Ok(())
}

/// The run's rendezvous; `None` when a pool names no unfinished run within the timeout.
fn find_run(options: &WorkerOptions) -> Result<Option<Rendezvous>> {
    match &options.run {
        RunSource::Rendezvous(uri) => Ok(Some(Rendezvous::open(uri, &options.s3)?)),
        RunSource::Pool(uri) => {
            let pool = Pool::open(uri, &options.s3)?;
            let run = pool.next_run(&options.s3, options.connect_timeout)?;
            if run.is_none() {
                tracing::info!(pool = pool.uri(), "no run to join");
            }
            Ok(run)
        }
    }
}

/// Timely's configuration for process `process` of the cluster at `addresses`.
fn cluster_config(
    threads: usize,
    process: usize,
    addresses: Vec<String>,
) -> facematch_job::timely::Config {
    facematch_job::timely::Config {
        communication: facematch_job::timely::CommunicationConfig::Cluster {
            threads,
            process,
            addresses,
            report: false,
            zerocopy: false,
        },
        worker: facematch_job::timely::WorkerConfig::default(),
    }
}

/// Everyone registered, but one may still die before connecting, and timely would then wait
/// forever: the process exits (code 2) unless the returned callback is called within `timeout`.
fn exit_unless_connected(timeout: Duration, peers: String) -> impl FnOnce() {
    let (connected, wait) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if wait.recv_timeout(timeout) == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
            eprintln!("error: could not connect to every peer ({peers}) within {timeout:?}");
            std::process::exit(2);
        }
    });
    move || {
        let _ = connected.send(());
    }
}

/// This process's index and every process's address in order, from the hostfile or the
/// rendezvous; `None` when a joiner finds every position taken.
fn find_peers(
    options: &WorkerOptions,
    rendezvous: &Rendezvous,
) -> Result<Option<(usize, Vec<String>)>> {
    if let Some(path) = &options.hostfile {
        let Position::Index { process, processes } = options.position else {
            bail!("--hostfile needs --process and --processes");
        };
        let addresses = read_hostfile(path)?;
        if addresses.len() != processes {
            bail!(
                "hostfile {} lists {} process(es), --processes says {processes}",
                path.display(),
                addresses.len()
            );
        }
        return Ok(Some((process, addresses)));
    }
    // Bind to learn a free port, then hand it to timely, which binds it again.
    let port = std::net::TcpListener::bind((options.host.as_str(), 0))
        .with_context(|| format!("cannot listen on {}", options.host))?
        .local_addr()?
        .port();
    let address = format!("{}:{port}", options.host);
    let members = match options.position {
        Position::Index { process, processes } => {
            rendezvous.register(process, &address)?;
            if process == 0 {
                rendezvous.assemble(processes, options.connect_timeout)?
            } else {
                rendezvous.members(options.connect_timeout * 2)?
            }
        }
        Position::Join => {
            rendezvous.register_joiner(&address)?;
            rendezvous.members(options.connect_timeout * 2)?
        }
    };
    let Some(process) = members.iter().position(|p| p.address == address) else {
        return Ok(None);
    };
    if let Position::Index { process: given, .. } = options.position
        && given != process
    {
        bail!("process 0 placed this process ({address}) at {process}, not {given}");
    }
    Ok(Some((
        process,
        members.into_iter().map(|p| p.address).collect(),
    )))
}
