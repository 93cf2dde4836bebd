//! One run's meeting place: the job (`spec.json`), the registrations (`peers/<index>`,
//! `joiners/`), the member list process 0 publishes (`cluster.json`), each process's heartbeat
//! (`alive/<index>`), and how the run ended (`output.json`, `failure.txt`, or the driver's
//! `abandoned.txt`).

use anyhow::{Context, Result, bail};
use facematch_datasets::{S3Options, Storage};
use facematch_job::{Work, WorkOutput};
use std::time::{Duration, Instant};

/// One run's meeting place.
#[derive(Clone)]
pub struct Rendezvous {
    storage: Storage,
}

/// The job every process runs.
const SPEC: &str = "spec.json";
/// The ordered member list process 0 publishes.
const MEMBERS: &str = "cluster.json";
/// Process 0's output.
const OUTPUT: &str = "output.json";
/// Why the job failed on its data.
const FAILURE: &str = "failure.txt";
/// Why the job could not be done now: storage did not answer for a shard (not the data's fault).
const UNAVAILABLE: &str = "unavailable.txt";
/// Why the driver gave the run up (its workers stop waiting for it).
const ABANDONED: &str = "abandoned.txt";
/// What a process writes as its last heartbeat once its share is done.
pub const BEAT_DONE: &str = "done";

/// The cluster process 0 (or the driver) publishes: every process in order, the timely threads
/// each one runs (timely needs the same number in every process, so the assembler's count
/// rules), and how long a process may go without a heartbeat before the run is given up.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Members {
    /// Timely worker threads per process.
    pub threads: usize,
    /// The processes, in process order.
    pub peers: Vec<Peer>,
    /// Milliseconds without a heartbeat after which a process counts as lost
    /// ([`super::liveness`]).
    #[serde(default = "default_peer_timeout_ms")]
    pub peer_timeout_ms: u64,
}

fn default_peer_timeout_ms() -> u64 {
    super::liveness::DEFAULT_PEER_TIMEOUT.as_millis() as u64
}

impl Members {
    /// How long a process may go without a heartbeat.
    pub fn peer_timeout(&self) -> Duration {
        Duration::from_millis(self.peer_timeout_ms)
    }
}

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
    pub fn publish_spec(&self, work: &Work) -> Result<()> {
        self.put_json(SPEC, work)
    }

    /// Reads the job.
    pub fn spec(&self) -> Result<Work> {
        let bytes = self.storage.get(SPEC)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            if !cfg!(feature = "photos") && e.to_string().contains("unknown variant `build`") {
                anyhow::anyhow!(
                    "{}: the run is a photo build, and this worker binary has no face pipeline \
                     (the portable search worker): start the worker bundle (`make \
                     worker-bundle`) for builds",
                    self.storage.uri_of(SPEC)
                )
            } else {
                anyhow::Error::from(e).context(format!(
                    "{}: unreadable job spec",
                    self.storage.uri_of(SPEC)
                ))
            }
        })
    }

    /// Whether the job has been published.
    pub fn has_spec(&self) -> Result<bool> {
        Ok(self.storage.exists(SPEC)?)
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
        for (index, key) in self.by_index("peers/", processes)? {
            peers[index] = Some(self.read_peer(&key)?);
        }
        Ok(peers)
    }

    /// The keys `<prefix><index>` with an index below `processes`, and their index.
    fn by_index(&self, prefix: &str, processes: usize) -> Result<Vec<(usize, String)>> {
        Ok(self
            .storage
            .list(prefix)?
            .into_iter()
            .filter_map(|key| {
                let index = key.strip_prefix(prefix)?.parse::<usize>().ok()?;
                (index < processes).then_some((index, key))
            })
            .collect())
    }

    /// The joiners registered so far, in a stable order.
    fn joiners(&self) -> Result<Vec<Peer>> {
        let mut keys = self.storage.list("joiners/")?;
        keys.sort();
        keys.iter().map(|key| self.read_peer(key)).collect()
    }

    /// Process 0: waits until all `processes` positions are taken — by processes started with
    /// their index, the rest by joiners in registration-name order — and publishes the ordered
    /// list every process reads, with its own `threads` and `peer_timeout`. After `timeout` it
    /// fails naming the positions still open.
    pub fn assemble(
        &self,
        processes: usize,
        threads: usize,
        peer_timeout: Duration,
        timeout: Duration,
    ) -> Result<Members> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.try_assemble(processes, threads, peer_timeout)? {
                Ok(members) => return Ok(members),
                Err(missing) if Instant::now() >= deadline => bail!(
                    "worker process(es) {} of {processes} never registered at {} within {:?}",
                    list(&missing),
                    self.uri(),
                    timeout
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// One attempt of [`Rendezvous::assemble`]: the published members, or the positions still
    /// open.
    pub fn try_assemble(
        &self,
        processes: usize,
        threads: usize,
        peer_timeout: Duration,
    ) -> Result<std::result::Result<Members, Vec<usize>>> {
        let mut peers = self.registered(processes)?;
        let mut joiners = self.joiners()?.into_iter();
        for slot in peers.iter_mut().filter(|p| p.is_none()) {
            *slot = joiners.next();
        }
        let missing: Vec<usize> = (0..processes).filter(|i| peers[*i].is_none()).collect();
        if !missing.is_empty() {
            return Ok(Err(missing));
        }
        let members = Members {
            threads,
            peers: peers.into_iter().flatten().collect(),
            peer_timeout_ms: peer_timeout.as_millis() as u64,
        };
        self.put_json(MEMBERS, &members)?;
        Ok(Ok(members))
    }

    /// Every other process: waits (bounded) for the list process 0 publishes.
    pub fn members(&self, timeout: Duration) -> Result<Members> {
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

    /// The published member list, if there is one yet.
    pub fn try_members(&self) -> Result<Option<Members>> {
        if !self.storage.exists(MEMBERS)? {
            return Ok(None);
        }
        self.get_json(MEMBERS, "cluster member list").map(Some)
    }

    /// Writes process `process`'s heartbeat (a counter, or [`BEAT_DONE`]).
    pub fn beat(&self, process: usize, beat: &str) -> Result<()> {
        self.storage
            .put(&format!("alive/{process}"), beat.as_bytes().to_vec().into())?;
        Ok(())
    }

    /// Every process's last heartbeat, by index (`None`: none yet, or unreadable just now).
    pub fn beats(&self, processes: usize) -> Result<Vec<Option<String>>> {
        let mut beats = vec![None; processes];
        for (index, key) in self.by_index("alive/", processes)? {
            // One beat that cannot be read now is no news, not the end of the look.
            if let Ok(beat) = self.storage.get(&key) {
                beats[index] = Some(String::from_utf8_lossy(&beat).into_owned());
            }
        }
        Ok(beats)
    }

    /// Whether the run is over (an output or a failure was published, or the driver gave up).
    pub fn is_finished(&self) -> Result<bool> {
        Ok(self.storage.exists(OUTPUT)?
            || self.storage.exists(FAILURE)?
            || self.storage.exists(UNAVAILABLE)?
            || self.storage.exists(ABANDONED)?)
    }

    /// Marks the run given up by its driver, with the reason: nobody joins it any more.
    pub fn abandon(&self, reason: &str) -> Result<()> {
        self.storage
            .put(ABANDONED, reason.as_bytes().to_vec().into())?;
        Ok(())
    }

    /// Why the driver gave the run up, if it did.
    pub fn abandoned(&self) -> Result<Option<String>> {
        self.text_if_any(ABANDONED)
    }

    /// Records why the job itself failed (a shard missing or corrupt): an answer for the
    /// histories, unlike a process that died.
    pub fn publish_failure(&self, message: &str) -> Result<()> {
        self.storage
            .put(FAILURE, message.as_bytes().to_vec().into())?;
        Ok(())
    }

    /// Records that the job could not be done now (storage unavailable for a shard): the run
    /// requeues, unlike a failure of the data.
    pub fn publish_unavailable(&self, message: &str) -> Result<()> {
        self.storage
            .put(UNAVAILABLE, message.as_bytes().to_vec().into())?;
        Ok(())
    }

    /// Why the job could not be done now, if recorded.
    pub fn unavailable(&self) -> Result<Option<String>> {
        self.text_if_any(UNAVAILABLE)
    }

    /// The job's failure, if one was recorded.
    pub fn failure(&self) -> Result<Option<String>> {
        self.text_if_any(FAILURE)
    }

    fn text_if_any(&self, key: &str) -> Result<Option<String>> {
        if !self.storage.exists(key)? {
            return Ok(None);
        }
        Ok(Some(
            String::from_utf8_lossy(&self.storage.get(key)?).into_owned(),
        ))
    }

    /// Writes process 0's output.
    pub fn publish_output(&self, output: &WorkOutput) -> Result<()> {
        self.put_json(OUTPUT, output)
    }

    /// Reads process 0's output.
    pub fn output(&self) -> Result<WorkOutput> {
        self.get_json(OUTPUT, "job output")
    }
}

/// `0, 2, 5`.
fn list(indices: &[usize]) -> String {
    indices
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ")
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
            .assemble(3, 2, Duration::from_secs(9), Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(
            err.contains("worker process(es) 1 of 3 never registered"),
            "{err}"
        );
        // A joiner takes the open position; a second one is not needed.
        rendezvous.register_joiner("127.0.0.1:4001").unwrap();
        let members = rendezvous
            .assemble(3, 2, Duration::from_secs(9), Duration::from_secs(1))
            .unwrap();
        assert_eq!(members.peer_timeout(), Duration::from_secs(9));
        assert_eq!(members.threads, 2);
        let addresses: Vec<&str> = members.peers.iter().map(|p| p.address.as_str()).collect();
        assert_eq!(
            addresses,
            ["127.0.0.1:4000", "127.0.0.1:4001", "127.0.0.1:4002"]
        );
        assert_eq!(members.peers[1].pid, std::process::id());
        assert_eq!(rendezvous.members(Duration::from_secs(1)).unwrap(), members);
    }
}
