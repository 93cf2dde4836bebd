//! `facematch worker`: find the run, take a position, connect to the others, run this process's
//! share of the job, and (process 0) publish the output or the job's failure.

use super::{Heartbeat, Members, Pool, PortRange, Rendezvous, read_hostfile, reserve_port};
use anyhow::{Result, bail};
use facematch_datasets::S3Options;
use facematch_job::dataflow::JobError;
use facematch_job::{Work, WorkOutput};
use std::sync::Arc;
use std::time::Duration;

/// Where a worker process finds its run.
#[derive(Debug, Clone)]
pub enum RunSource {
    /// The run's own rendezvous.
    Rendezvous(String),
    /// A pool whose `current` names the run: one run (`serve` false, then the process exits),
    /// or one run after another for the life of the process (`serve`).
    Pool {
        /// The pool's URI.
        uri: String,
        /// Keep serving runs instead of exiting after one.
        serve: bool,
    },
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
    /// The ports this process may listen on.
    pub ports: Option<PortRange>,
    /// Process 0's peer timeout for the run it assembles ([`super::liveness`]); the others take
    /// the one the member list carries.
    pub peer_timeout: Duration,
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

/// Joins the cluster, runs this process's share of the job, and (process 0) publishes the output;
/// a serving pool worker does so for one run after another until it is stopped.
pub fn run_worker_process(options: &WorkerOptions) -> Result<()> {
    check_options(options)?;
    let (uri, serve) = match &options.run {
        RunSource::Rendezvous(uri) => {
            return run_share(options, Rendezvous::open(uri, &options.s3)?);
        }
        RunSource::Pool { uri, serve } => (uri, *serve),
    };
    let pool = Pool::open(uri, &options.s3)?;
    if !serve {
        return match pool.next_run(&options.s3, Some(options.connect_timeout), None)? {
            Some(rendezvous) => run_share(options, rendezvous),
            None => {
                tracing::info!(pool = pool.uri(), "no run to join");
                Ok(())
            }
        };
    }
    let mut last: Option<String> = None;
    loop {
        let Some(rendezvous) = pool.next_run(&options.s3, None, last.as_deref())? else {
            continue;
        };
        last = Some(rendezvous.uri().to_string());
        // One run failing (a lost peer, a corrupt shard) does not end the node's service.
        if let Err(e) = run_share(options, rendezvous) {
            eprintln!("error: run {}: {e:#}", last.as_deref().unwrap_or_default());
        }
    }
}

/// This process's share of the run at `rendezvous`.
fn run_share(options: &WorkerOptions, rendezvous: Rendezvous) -> Result<()> {
    let spec = rendezvous.spec()?;
    let Some(place) = find_peers(options, &rendezvous)? else {
        tracing::info!(
            run = rendezvous.uri(),
            "every position is taken: not needed"
        );
        return Ok(());
    };
    tracing::info!(place.process, ?place.addresses, place.threads, "joining the cluster");
    let process = place.process;
    let heartbeat = Heartbeat::start(&rendezvous, process, place.peer_timeout);
    exit_when_a_peer_goes(rendezvous.uri());
    let connected = exit_unless_connected(options.connect_timeout, place.addresses.join(", "));
    let config = cluster_config(place.threads, process, place.addresses);
    drop(place.reserved); // timely binds the port now
    let output = match spec {
        Work::Search(spec) => {
            match facematch_job::dataflow::run_job_connected(Arc::new(spec), config, connected) {
                Ok(output) => output.map(WorkOutput::Search),
                // The data is at fault, not the cluster: say so, so the histories end in ERROR.
                Err(e @ (JobError::Shards(_) | JobError::Invalid(_))) => {
                    rendezvous.publish_failure(&e.to_string())?;
                    return Err(e.into());
                }
                // Storage would not serve a shard: the run ends now and requeues.
                Err(e @ JobError::Unavailable(_)) => {
                    rendezvous.publish_unavailable(&e.to_string())?;
                    return Err(e.into());
                }
                Err(e) => return Err(e.into()),
            }
        }
        #[cfg(feature = "photos")]
        Work::Build(spec) => {
            use facematch_job::build::{BuildError, run_build_connected};
            match run_build_connected(Arc::new(spec), config, connected) {
                Ok(output) => output.map(WorkOutput::Build),
                // Models that will not load, a part that cannot be written: the build stops
                // (its parts stay for the next attempt), and the driver says why.
                Err(e @ BuildError::Fatal(_)) => {
                    rendezvous.publish_failure(&e.to_string())?;
                    return Err(e.into());
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    match (process, output) {
        (0, Some(output)) => rendezvous.publish_output(&output)?,
        (0, None) => bail!("process 0 returned no output"),
        _ => {}
    }
    heartbeat.finish();
    Ok(())
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

/// A peer that goes away mid-run (it died, or gave the run up first) makes timely panic on every
/// thread that talks to it, one poisoned queue after another: the process says so in one line and
/// exits as one that gave the run up (code 2) instead.
fn exit_when_a_peer_goes(run: &str) {
    static RUN: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    if let Ok(mut current) = RUN.lock() {
        *current = run.to_string();
    }
    INSTALLED.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or_default();
            if message.starts_with("timely communication error") {
                let run = RUN.lock().map(|r| r.clone()).unwrap_or_default();
                eprintln!("error: giving the run up: a peer of run {run} went away ({message})");
                std::process::exit(2);
            }
            default(info);
        }));
    });
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

/// Where this process stands in the cluster.
struct Place {
    /// Its index.
    process: usize,
    /// Every process's `host:port`, in order.
    addresses: Vec<String>,
    /// Timely threads per process: process 0's.
    threads: usize,
    /// This process's port, held until timely binds it.
    reserved: Option<super::command::ReservedPort>,
    /// How long it may go without a heartbeat: the run's.
    peer_timeout: Duration,
}

/// This process's place, from the hostfile or the rendezvous; `None` when a joiner finds every
/// position taken.
fn find_peers(options: &WorkerOptions, rendezvous: &Rendezvous) -> Result<Option<Place>> {
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
        return Ok(Some(Place {
            process,
            addresses,
            threads: options.threads,
            reserved: None,
            peer_timeout: options.peer_timeout,
        }));
    }
    // Bind to learn a free port, then hand it to timely, which binds it again.
    let reserved = reserve_port(&options.host, options.ports)?;
    let port = reserved.port();
    let address = format!("{}:{port}", options.host);
    let wait = options.connect_timeout * 2;
    let members = match options.position {
        Position::Index { process, processes } => {
            rendezvous.register(process, &address)?;
            if process == 0 {
                rendezvous.assemble(
                    processes,
                    options.threads,
                    options.peer_timeout,
                    options.connect_timeout,
                )?
            } else {
                rendezvous.members(wait)?
            }
        }
        Position::Join => {
            rendezvous.register_joiner(&address)?;
            rendezvous.members(wait)?
        }
    };
    let peer_timeout = members.peer_timeout();
    let Members { threads, peers, .. } = members;
    let Some(process) = peers.iter().position(|p| p.address == address) else {
        return Ok(None);
    };
    if let Position::Index { process: given, .. } = options.position
        && given != process
    {
        bail!("process 0 placed this process ({address}) at {process}, not {given}");
    }
    if threads != options.threads {
        tracing::warn!(
            threads,
            asked = options.threads,
            "process 0 runs another thread count; using its"
        );
    }
    Ok(Some(Place {
        process,
        addresses: peers.into_iter().map(|p| p.address).collect(),
        threads,
        reserved: Some(reserved),
        peer_timeout,
    }))
}
