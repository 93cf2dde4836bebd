//! `--runner hosts:N[xW] --pool URI`: worker processes on machines you manage — EC2 instances,
//! a rack, a laptop and a desktop — each running `facematch worker --pool URI --serve --host
//! ADDRESS` under its own supervisor (systemd, a container), waiting on the pool between runs.
//!
//! The driver runs no worker itself. It publishes the job in a fresh rendezvous under the pool
//! (`runs/<run>`), points the pool at it, and assembles the cluster from the first N workers
//! that join (every worker is a joiner here, so the driver publishes the member list that
//! process 0 would). Then it watches: the output, the job's failure on its data, and every
//! process's heartbeat ([`crate::cluster::liveness`]). A worker that stops beating — dead, or cut
//! off by the network — ends the run within the peer timeout; the driver marks the run given up,
//! so the others exit instead of waiting for it, and the histories go back to PENDING.

use super::{Capacity, DataFailure, RunContext, Runner, WorkerLost};
use crate::cluster::{Pool, Rendezvous, Watcher};
use anyhow::Result;
use facematch_datasets::S3Options;
use facematch_job::{Work, WorkOutput};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// N worker processes × W threads on hosts that serve `pool`.
pub struct HostsRunner {
    /// The pool the hosts' workers wait on (a folder they share or `s3://bucket/prefix`).
    pub pool: String,
    /// Worker processes the run needs (≥ 1).
    pub processes: usize,
    /// Timely threads per process (≥ 1): the driver's count rules.
    pub threads: usize,
    /// How long to wait for `processes` workers to join.
    pub connect_timeout: Duration,
    /// How long a worker may go without a heartbeat.
    pub peer_timeout: Duration,
    /// S3 access for the pool.
    pub s3: S3Options,
    /// Polled while waiting: SIGINT or SIGTERM gives the run up.
    pub cancelled: Box<dyn Fn() -> bool + Send + Sync>,
}

/// How often the driver looks at the rendezvous.
const POLL: Duration = Duration::from_millis(100);

impl Runner for HostsRunner {
    fn label(&self) -> String {
        format!("hosts:{}x{}", self.processes, self.threads)
    }

    fn capacity(&self) -> Capacity {
        Capacity {
            threads: self.processes * self.threads,
            startup: Duration::from_secs(1),
            remote: true,
        }
    }

    fn execute(&self, work: Arc<Work>, context: &dyn RunContext) -> Result<WorkOutput> {
        let pool = Pool::open(&self.pool, &self.s3)?;
        let name = format!(
            "run-{}-{}",
            context.run_id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis())
        );
        let rendezvous = Rendezvous::open(&pool.run_uri(&name), &self.s3)?;
        rendezvous.publish_spec(&work)?;
        pool.point_at(rendezvous.uri(), &self.s3)?;
        let outcome = self
            .assemble(&pool, &rendezvous)
            .and_then(|()| self.watch(&rendezvous));
        if let Err(e) = &outcome
            && !super::is_data_failure(e)
        {
            // The workers still in the run stop waiting for it, and nobody joins it any more.
            if let Err(abandon) = rendezvous.abandon(&format!("{e:#}")) {
                context.warn(&format!(
                    "could not mark run {} given up ({abandon:#}); its workers exit after the \
                     peer timeout",
                    rendezvous.uri()
                ));
            }
        }
        outcome
    }
}

impl HostsRunner {
    /// Publishes the member list once `processes` workers have joined.
    fn assemble(&self, pool: &Pool, rendezvous: &Rendezvous) -> Result<()> {
        let started = Instant::now();
        loop {
            let missing =
                match rendezvous.try_assemble(self.processes, self.threads, self.peer_timeout)? {
                    Ok(members) => {
                        tracing::info!(
                            peers = ?members.peers.iter().map(|p| &p.address).collect::<Vec<_>>(),
                            "cluster assembled"
                        );
                        return Ok(());
                    }
                    Err(missing) => missing,
                };
            if (self.cancelled)() {
                return Err(WorkerLost("interrupted while waiting for workers".into()).into());
            }
            if started.elapsed() >= self.connect_timeout {
                return Err(WorkerLost(format!(
                    "only {} of {} worker process(es) joined {} within {:?}: start `facematch \
                     worker --pool {} --serve --host ADDRESS` on the hosts (or ask for fewer)",
                    self.processes - missing.len(),
                    self.processes,
                    rendezvous.uri(),
                    self.connect_timeout,
                    pool.uri()
                ))
                .into());
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits for the output, the job's failure, a lost worker or a signal.
    fn watch(&self, rendezvous: &Rendezvous) -> Result<WorkOutput> {
        let mut watcher = Watcher::new();
        loop {
            if let Some(failure) = rendezvous.failure()? {
                return Err(DataFailure(failure).into());
            }
            if let Some(reason) = rendezvous.unavailable()? {
                return Err(WorkerLost(reason).into());
            }
            if rendezvous.is_finished()? {
                return rendezvous.output();
            }
            if let Some(lost) = watcher.lost(rendezvous)? {
                return Err(WorkerLost(lost).into());
            }
            if (self.cancelled)() {
                return Err(WorkerLost("interrupted".into()).into());
            }
            std::thread::sleep(POLL);
        }
    }
}
