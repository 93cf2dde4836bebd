//! Worker processes of a timely cluster (SPEC section 6): how N processes find each other without
//! a hand-written hostfile, and what one worker process (`facematch worker`) does.
//!
//! The rendezvous is a folder or S3 prefix per run. The driver writes `spec.json` there. Each
//! process binds a free port, writes `peers/<index>` (its `host:port` and pid), and waits —
//! bounded — until all N have registered; only then does it start timely with the ordered address
//! list. A process that never comes is therefore named in an error instead of timely retrying its
//! connection forever. Process 0 writes `output.json` when the dataflow is done.
//!
//! On hosts you manage, a hostfile (one `host:port` per line, in process order) replaces the
//! registration; the job folder still carries the spec and the output.

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

/// A registered process.
#[derive(Debug, Clone, PartialEq, Eq)]
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

    /// Registers process `index` at `address`.
    pub fn register(&self, index: usize, address: &str) -> Result<()> {
        let text = format!("{address}\n{}\n", std::process::id());
        self.storage
            .put(&format!("peers/{index}"), text.into_bytes().into())?;
        Ok(())
    }

    /// The processes registered so far, by index (one listing, then one read per registration).
    pub fn registered(&self, processes: usize) -> Result<Vec<Option<Peer>>> {
        let mut peers = vec![None; processes];
        for key in self.storage.list("peers/")? {
            let Some(index) = key
                .strip_prefix("peers/")
                .and_then(|i| i.parse::<usize>().ok())
                .filter(|i| *i < processes)
            else {
                continue;
            };
            let text = String::from_utf8_lossy(&self.storage.get(&key)?).into_owned();
            let mut lines = text.lines();
            let address = lines.next().unwrap_or_default().trim().to_string();
            let pid = lines
                .next()
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or(0);
            if address.is_empty() {
                bail!("{}: no address", self.storage.uri_of(&key));
            }
            peers[index] = Some(Peer { address, pid });
        }
        Ok(peers)
    }

    /// Waits until all `processes` have registered and returns their addresses in process order;
    /// after `timeout`, fails naming the processes that never came.
    pub fn addresses(&self, processes: usize, timeout: Duration) -> Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            let peers = self.registered(processes)?;
            if peers.iter().all(Option::is_some) {
                return Ok(peers.into_iter().flatten().map(|p| p.address).collect());
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

    /// Records why the job itself failed (a shard missing or corrupt): an answer for the
    /// histories, unlike a process that died.
    pub fn publish_failure(&self, message: &str) -> Result<()> {
        self.storage
            .put("failure.txt", message.as_bytes().to_vec().into())?;
        Ok(())
    }

    /// The job's failure, if one was recorded.
    pub fn failure(&self) -> Result<Option<String>> {
        if !self.storage.exists("failure.txt")? {
            return Ok(None);
        }
        Ok(Some(
            String::from_utf8_lossy(&self.storage.get("failure.txt")?).into_owned(),
        ))
    }

    /// Writes process 0's output.
    pub fn publish_output(&self, output: &JobOutput) -> Result<()> {
        self.put_json("output.json", output)
    }

    /// Reads process 0's output.
    pub fn output(&self) -> Result<JobOutput> {
        self.get_json("output.json", "job output")
    }
}

/// What one worker process is told.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The run's rendezvous.
    pub rendezvous: String,
    /// This process's index (0 writes the output).
    pub process: usize,
    /// Number of processes.
    pub processes: usize,
    /// Timely worker threads in this process.
    pub threads: usize,
    /// Host name or address the others reach this process at.
    pub host: String,
    /// How long to wait for the other processes.
    pub connect_timeout: Duration,
    /// S3 access (rendezvous and dataset).
    pub s3: S3Options,
    /// The processes' addresses, instead of registering in the rendezvous.
    pub hostfile: Option<std::path::PathBuf>,
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
    if options.process >= options.processes || options.threads == 0 {
        bail!(
            "process {} of {} with {} thread(s) is not a valid cluster position",
            options.process,
            options.processes,
            options.threads
        );
    }
    let rendezvous = Rendezvous::open(&options.rendezvous, &options.s3)?;
    let spec = rendezvous.spec()?;
    let addresses = match &options.hostfile {
        Some(path) => {
            let addresses = read_hostfile(path)?;
            if addresses.len() != options.processes {
                bail!(
                    "hostfile {} lists {} process(es), --processes says {}",
                    path.display(),
                    addresses.len(),
                    options.processes
                );
            }
            addresses
        }
        None => {
            // Bind to learn a free port, then hand it to timely, which binds it again.
            let port = std::net::TcpListener::bind((options.host.as_str(), 0))
                .with_context(|| format!("cannot listen on {}", options.host))?
                .local_addr()?
                .port();
            rendezvous.register(options.process, &format!("{}:{port}", options.host))?;
            rendezvous.addresses(options.processes, options.connect_timeout)?
        }
    };
    tracing::info!(process = options.process, ?addresses, "joining the cluster");
    let config = facematch_job::timely::Config {
        communication: facematch_job::timely::CommunicationConfig::Cluster {
            threads: options.threads,
            process: options.process,
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
    match (options.process, output) {
        (0, Some(output)) => rendezvous.publish_output(&output),
        (0, None) => Err(anyhow!("process 0 returned no output")),
        _ => Ok(()),
    }
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
            .addresses(3, Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(
            err.contains("worker process(es) 1 of 3 never registered"),
            "{err}"
        );
        rendezvous.register(1, "127.0.0.1:4001").unwrap();
        assert_eq!(
            rendezvous.addresses(3, Duration::from_secs(1)).unwrap(),
            ["127.0.0.1:4000", "127.0.0.1:4001", "127.0.0.1:4002"]
        );
        let peers = rendezvous.registered(3).unwrap();
        assert_eq!(peers[1].as_ref().unwrap().pid, std::process::id());
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
