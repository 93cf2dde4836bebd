//! Worker processes of a timely cluster (SPEC section 6): how N processes find each other without
//! a hand-written hostfile, and what one worker process (`facematch worker`) does.
//!
//! The rendezvous is a folder or S3 prefix per run. The driver writes `spec.json` there. Each
//! process binds a free port and registers its `host:port` and pid: at `peers/<index>` when it
//! was started with its position, or under `joiners/` when any position will do (hosts an EMR
//! bootstrap action started do not know theirs). Process 0 waits — bounded — until every
//! position is taken, filling the open ones with joiners, and publishes the ordered list
//! (`cluster.json`); only then does anyone start timely. A process that never comes is therefore
//! named in an error instead of timely retrying its connection forever. Process 0 writes
//! `output.json` when the dataflow is done.
//!
//! A pool is a longer-lived prefix whose `current` names the run to join: a cluster's workers
//! wait there between runs. On hosts you manage, a hostfile (one `host:port` per line, in process
//! order) replaces the registration; the job folder still carries the spec and the output.

use anyhow::{Context, Result, anyhow, bail};
use facematch_datasets::{S3Options, Storage};
use facematch_job::dataflow::JobError;
use facematch_job::{JobOutput, JobSpec};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One run's meeting place.
pub struct Rendezvous {
    storage: Storage,
}

/// The ordered member list process 0 publishes.
const MEMBERS: &str = "cluster.json";
/// Process 0's output.
const OUTPUT: &str = "output.json";
/// Why the job failed on its data.
const FAILURE: &str = "failure.txt";
/// A pool's pointer to its current run.
const CURRENT: &str = "current";

/// A registered process.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Peer {
    /// `host:port` its timely listens on.
    pub address: String,
    /// Its process id (on its host).
    pub pid: u32,
}

impl Rendezvous {
    /// Opens the rendezvous at `uri` (a folder, `file://` or `s3://bucket/prefix`).
    pub fn open(uri: &str, s3: &S3Options) -> Result<Rendezvous> {
        Ok(Rendezvous {
            storage: Storage::open(uri, s3)?,
        })
    }

    /// Canonical URI.
    pub fn uri(&self) -> &str {
        self.storage.root_uri()
    }

    /// Writes the job every process runs.
    pub fn publish_spec(&self, spec: &JobSpec) -> Result<()> {
        self.put_json("spec.json", spec)
    }

    /// Reads the job.
    pub fn spec(&self) -> Result<JobSpec> {
        self.get_json("spec.json", "job spec")
    }

    fn put_json(&self, key: &str, value: &impl serde::Serialize) -> Result<()> {
        self.storage.put(key, serde_json::to_vec(value)?.into())?;
        Ok(())
    }

    fn get_json<T: serde::de::DeserializeOwned>(&self, key: &str, what: &str) -> Result<T> {
        let bytes = self.storage.get(key)?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: unreadable {what}", self.storage.uri_of(key)))
    }

    /// Registers process `index` (started with its position) at `address`.
    pub fn register(&self, index: usize, address: &str) -> Result<()> {
        self.put_text(&format!("peers/{index}"), address)
    }

    /// Registers a process that takes whichever position process 0 gives it.
    pub fn register_joiner(&self, address: &str) -> Result<()> {
        let name = format!(
            "{}-{}",
            address.replace([':', '/'], "_"),
            std::process::id()
        );
        self.put_text(&format!("joiners/{name}"), address)
    }

    fn put_text(&self, key: &str, address: &str) -> Result<()> {
        let text = format!("{address}\n{}\n", std::process::id());
        self.storage.put(key, text.into_bytes().into())?;
        Ok(())
    }

    fn read_peer(&self, key: &str) -> Result<Peer> {
        let text = String::from_utf8_lossy(&self.storage.get(key)?).into_owned();
        let mut lines = text.lines();
        let address = lines.next().unwrap_or_default().trim().to_string();
        let pid = lines
            .next()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0);
        if address.is_empty() {
            bail!("{}: no address", self.storage.uri_of(key));
        }
        Ok(Peer { address, pid })
    }

    /// The processes registered with their position so far, by index.
    pub fn registered(&self, processes: usize) -> Result<Vec<Option<Peer>>> {
        let mut peers = vec![None; processes];
        for key in self.storage.list("peers/")? {
            let index = key
                .strip_prefix("peers/")
                .and_then(|i| i.parse::<usize>().ok())
                .filter(|i| *i < processes);
            if let Some(index) = index {
                peers[index] = Some(self.read_peer(&key)?);
            }
        }
        Ok(peers)
    }

    /// The joiners registered so far, in a stable order.
    fn joiners(&self) -> Result<Vec<Peer>> {
        let mut keys = self.storage.list("joiners/")?;
        keys.sort();
        keys.iter().map(|key| self.read_peer(key)).collect()
    }

    /// Process 0: waits until all `processes` positions are taken — by processes started with
    /// their index, the rest by joiners in registration-name order — and publishes the ordered
    /// list every process reads. After `timeout` it fails naming the positions still open.
    pub fn assemble(&self, processes: usize, timeout: Duration) -> Result<Vec<Peer>> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut peers = self.registered(processes)?;
            let mut joiners = self.joiners()?.into_iter();
            for slot in peers.iter_mut().filter(|p| p.is_none()) {
                *slot = joiners.next();
            }
            if peers.iter().all(Option::is_some) {
                let peers: Vec<Peer> = peers.into_iter().flatten().collect();
                self.put_json(MEMBERS, &peers)?;
                return Ok(peers);
            }
            if Instant::now() >= deadline {
                let missing: Vec<String> = peers
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.is_none())
                    .map(|(i, _)| i.to_string())
                    .collect();
                bail!(
                    "worker process(es) {} of {processes} never registered at {} within {:?}",
                    missing.join(", "),
                    self.uri(),
                    timeout
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every other process: waits (bounded) for the list process 0 publishes.
    pub fn members(&self, timeout: Duration) -> Result<Vec<Peer>> {
        let deadline = Instant::now() + timeout;
        while !self.storage.exists(MEMBERS)? {
            if Instant::now() >= deadline {
                bail!(
                    "process 0 never published the cluster at {} within {timeout:?}",
                    self.uri()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.get_json(MEMBERS, "cluster member list")
    }

    /// Whether the run is over (an output or a failure was published).
    pub fn is_finished(&self) -> Result<bool> {
        Ok(self.storage.exists(OUTPUT)? || self.storage.exists(FAILURE)?)
    }

    /// Records why the job itself failed (a shard missing or corrupt): an answer for the
    /// histories, unlike a process that died.
    pub fn publish_failure(&self, message: &str) -> Result<()> {
        self.storage
            .put(FAILURE, message.as_bytes().to_vec().into())?;
        Ok(())
    }

    /// The job's failure, if one was recorded.
    pub fn failure(&self) -> Result<Option<String>> {
        if !self.storage.exists(FAILURE)? {
            return Ok(None);
        }
        Ok(Some(
            String::from_utf8_lossy(&self.storage.get(FAILURE)?).into_owned(),
        ))
    }

    /// Writes process 0's output.
    pub fn publish_output(&self, output: &JobOutput) -> Result<()> {
        self.put_json(OUTPUT, output)
    }

    /// Reads process 0's output.
    pub fn output(&self) -> Result<JobOutput> {
        self.get_json(OUTPUT, "job output")
    }
}

/// A long-lived meeting place whose `current` names the run to join: what the workers an EMR
/// bootstrap action starts wait on, so a running cluster serves one run after another.
pub struct Pool {
    storage: Storage,
}

impl Pool {
    /// Opens the pool at `uri` (a folder or `s3://bucket/prefix`).
    pub fn open(uri: &str, s3: &S3Options) -> Result<Pool> {
        Ok(Pool {
            storage: Storage::open(uri, s3)?,
        })
    }

    /// Canonical URI.
    pub fn uri(&self) -> &str {
        self.storage.root_uri()
    }

    /// Makes `rendezvous` the run the pool's workers join next.
    pub fn point_at(&self, rendezvous: &str) -> Result<()> {
        self.storage
            .put(CURRENT, rendezvous.as_bytes().to_vec().into())?;
        Ok(())
    }

    /// Waits up to `timeout` for a current run that is not over yet.
    pub fn next_run(&self, s3: &S3Options, timeout: Duration) -> Result<Option<Rendezvous>> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.storage.exists(CURRENT)? {
                let uri = String::from_utf8_lossy(&self.storage.get(CURRENT)?)
                    .trim()
                    .to_string();
                let rendezvous = Rendezvous::open(&uri, s3).with_context(|| {
                    format!("{}: bad run pointer", self.storage.uri_of(CURRENT))
                })?;
                if rendezvous.storage.exists("spec.json")? && !rendezvous.is_finished()? {
                    return Ok(Some(rendezvous));
                }
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

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

/// The command line of process `process` started with its position; process 0 assembles the
/// cluster and writes the output (the processes runner's process 0 and an EMR cluster's step).
pub fn indexed_args(
    rendezvous: &str,
    process: usize,
    processes: usize,
    threads: usize,
    host: &str,
    connect_timeout: Duration,
) -> Vec<String> {
    let mut args = vec![
        "worker".to_string(),
        "--rendezvous".into(),
        rendezvous.into(),
        "--process".into(),
        process.to_string(),
        "--processes".into(),
        processes.to_string(),
    ];
    args.extend(common_args(threads, host, connect_timeout));
    args
}

/// The command line of a process that joins whatever run its pool names (the processes
/// runner's other processes and the workers an EMR bootstrap action starts).
pub fn joiner_args(
    pool: &str,
    threads: usize,
    host: &str,
    connect_timeout: Duration,
) -> Vec<String> {
    let mut args = vec!["worker".to_string(), "--pool".into(), pool.into()];
    args.extend(common_args(threads, host, connect_timeout));
    args
}

fn common_args(threads: usize, host: &str, connect_timeout: Duration) -> [String; 6] {
    [
        "--threads".into(),
        threads.to_string(),
        "--host".into(),
        host.into(),
        "--connect-timeout".into(),
        connect_timeout.as_secs().max(1).to_string(),
    ]
}

/// Reads a hostfile: one `host:port` per line in process order; blank lines and `#` comments are
/// skipped.
pub fn read_hostfile(path: &std::path::Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read hostfile {}", path.display()))?;
    let mut addresses = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let valid = line
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !valid {
            bail!(
                "hostfile {}:{}: expected host:port, got {line:?}",
                path.display(),
                n + 1
            );
        }
        addresses.push(line.to_string());
    }
    Ok(addresses)
}

/// Joins the cluster, runs this process's share of the job, and (process 0) publishes the output.
pub fn run_worker_process(options: &WorkerOptions) -> Result<()> {
    if options.threads == 0 {
        bail!("--threads must be at least 1");
    }
    if let Position::Index { process, processes } = options.position
        && process >= processes
    {
        bail!("process {process} of {processes} is not a valid cluster position");
    }
    let rendezvous = match &options.run {
        RunSource::Rendezvous(uri) => Rendezvous::open(uri, &options.s3)?,
        RunSource::Pool(uri) => {
            let pool = Pool::open(uri, &options.s3)?;
            match pool.next_run(&options.s3, options.connect_timeout)? {
                Some(rendezvous) => rendezvous,
                None => {
                    tracing::info!(pool = pool.uri(), "no run to join");
                    return Ok(());
                }
            }
        }
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
    let config = facematch_job::timely::Config {
        communication: facematch_job::timely::CommunicationConfig::Cluster {
            threads: options.threads,
            process,
            addresses: addresses.clone(),
            report: false,
            zerocopy: false,
        },
        worker: facematch_job::timely::WorkerConfig::default(),
    };
    // Everyone registered, but one may still die before connecting: timely would then wait forever.
    let (connected, wait) = std::sync::mpsc::channel::<()>();
    let timeout = options.connect_timeout;
    let peers = addresses.join(", ");
    std::thread::spawn(move || {
        if wait.recv_timeout(timeout) == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
            eprintln!("error: could not connect to every peer ({peers}) within {timeout:?}");
            std::process::exit(2);
        }
    });
    let output =
        match facematch_job::dataflow::run_job_connected(Arc::new(spec), config, move || {
            let _ = connected.send(());
        }) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_that_never_registers_is_named_after_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let rendezvous =
            Rendezvous::open(dir.path().to_str().unwrap(), &S3Options::default()).unwrap();
        rendezvous.register(0, "127.0.0.1:4000").unwrap();
        rendezvous.register(2, "127.0.0.1:4002").unwrap();
        let started = Instant::now();
        let err = rendezvous
            .assemble(3, Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(
            err.contains("worker process(es) 1 of 3 never registered"),
            "{err}"
        );
        // A joiner takes the open position; a second one is not needed.
        rendezvous.register_joiner("127.0.0.1:4001").unwrap();
        let members = rendezvous.assemble(3, Duration::from_secs(1)).unwrap();
        let addresses: Vec<&str> = members.iter().map(|p| p.address.as_str()).collect();
        assert_eq!(
            addresses,
            ["127.0.0.1:4000", "127.0.0.1:4001", "127.0.0.1:4002"]
        );
        assert_eq!(members[1].pid, std::process::id());
        assert_eq!(rendezvous.members(Duration::from_secs(1)).unwrap(), members);
    }

    #[test]
    fn hostfiles_list_addresses_in_order_and_name_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        std::fs::write(
            &path,
            "# the cluster\nworker-a:2101\n\n10.0.0.7:2101  # b\n",
        )
        .unwrap();
        assert_eq!(
            read_hostfile(&path).unwrap(),
            ["worker-a:2101", "10.0.0.7:2101"]
        );
        std::fs::write(&path, "worker-a:2101\nworker-b\n").unwrap();
        let err = read_hostfile(&path).unwrap_err().to_string();
        assert!(err.contains("hosts:2") && err.contains("worker-b"), "{err}");
    }
}
