//! Where the dataflow runs, behind one trait (SPEC section 1): the claim/write code in
//! [`crate::run`] hands a [`JobSpec`] to a [`Runner`] and gets worker 0's [`JobOutput`] back,
//! whichever runner executed it.

use crate::cluster::{Pool, Rendezvous, indexed_args, joiner_args};
use anyhow::{Context, Result, anyhow};
use facematch_datasets::S3Options;
use facematch_job::{JobOutput, JobSpec, run_job};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// A worker process died or failed: the run's histories may be retried (they did nothing wrong).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WorkerLost(pub String);

/// Where a remote runner's job is, as `job_runs` records it while the run goes on.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ClusterStatus {
    /// Cluster id (EMR `j-…`).
    pub cluster_id: String,
    /// The step running process 0.
    pub step_id: Option<String>,
    /// Last cluster state seen.
    pub cluster_state: String,
    /// Last step state seen.
    pub step_state: Option<String>,
    /// Whether this run started the cluster (and so terminates it).
    pub started_here: bool,
}

/// The run a runner executes for.
pub trait RunContext {
    /// `job_runs.id`.
    fn run_id(&self) -> i64;
    /// Records where the job is (called on every change).
    fn record(&self, status: &ClusterStatus);
}

/// What the planner needs to know about a runner.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Capacity {
    /// Timely worker threads in all.
    pub threads: usize,
    /// Time before the first face is scored (cluster start-up).
    pub startup: std::time::Duration,
    /// Whether it runs on machines other than this one.
    pub remote: bool,
}

/// Executes one pass of the job somewhere.
pub trait Runner {
    /// What `run_params` and `job_runs` record, e.g. `inline:2`.
    fn label(&self) -> String;
    /// Parallelism and start-up, for the planner.
    fn capacity(&self) -> Capacity;
    /// Checks, before anything is claimed, that this runner can run a job on the dataset at
    /// `dataset_root`.
    fn check(&self, _dataset_root: &str) -> Result<()> {
        Ok(())
    }
    /// Runs the dataflow to completion and returns its output (results for every query).
    fn execute(&self, spec: Arc<JobSpec>, context: &dyn RunContext) -> Result<JobOutput>;
}

/// One process, `workers` timely worker threads.
#[derive(Debug, Clone)]
pub struct InlineRunner {
    /// Worker threads (≥ 1).
    pub workers: usize,
}

impl Runner for InlineRunner {
    fn label(&self) -> String {
        format!("inline:{}", self.workers)
    }

    fn capacity(&self) -> Capacity {
        Capacity {
            threads: self.workers.max(1),
            startup: Duration::ZERO,
            remote: false,
        }
    }

    fn execute(&self, spec: Arc<JobSpec>, _: &dyn RunContext) -> Result<JobOutput> {
        let output = run_job(
            spec,
            facematch_job::timely::Config::process(self.workers.max(1)),
        )?;
        output.ok_or_else(|| anyhow!("worker 0 returned no output"))
    }
}

/// N local worker processes × W threads on 127.0.0.1, one timely cluster, found through a
/// rendezvous folder; the very command a cluster host runs (`facematch worker`).
#[derive(Debug, Clone)]
pub struct ProcessesRunner {
    /// Worker processes (≥ 1).
    pub processes: usize,
    /// Timely threads per process (≥ 1).
    pub threads: usize,
    /// How long processes wait for each other.
    pub connect_timeout: Duration,
    /// S3 access for the dataset.
    pub s3: S3Options,
    /// Give the processes a hostfile instead of letting them register in the rendezvous.
    pub hostfile: bool,
}

impl Runner for ProcessesRunner {
    fn label(&self) -> String {
        let discovery = if self.hostfile { "+hostfile" } else { "" };
        format!("processes:{}x{}{discovery}", self.processes, self.threads)
    }

    fn capacity(&self) -> Capacity {
        Capacity {
            threads: self.processes * self.threads,
            startup: Duration::from_millis(100),
            remote: false,
        }
    }

    fn execute(&self, spec: Arc<JobSpec>, _: &dyn RunContext) -> Result<JobOutput> {
        let dir = std::env::temp_dir().join(format!(
            "facematch-run-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let result = self.run_in(&dir, &spec);
        let _ = std::fs::remove_dir_all(&dir);
        result
    }
}

impl ProcessesRunner {
    /// The arguments of worker process `index` (the very commands an EMR cluster runs: process 0
    /// as its step, the others as its bootstrap-started workers). `dir` holds the pool and, in
    /// `dir/run`, the run's rendezvous.
    fn worker_args(&self, dir: &std::path::Path, index: usize) -> Vec<String> {
        let rendezvous = dir.join("run").display().to_string();
        let hostfile = dir.join("hosts").display().to_string();
        match (index, self.hostfile) {
            (_, true) => {
                let mut args = indexed_args(
                    &rendezvous,
                    index,
                    self.processes,
                    self.threads,
                    LOCALHOST,
                    self.connect_timeout,
                );
                args.extend(["--hostfile".into(), hostfile]);
                args
            }
            (0, false) => indexed_args(
                &rendezvous,
                0,
                self.processes,
                self.threads,
                LOCALHOST,
                self.connect_timeout,
            ),
            (_, false) => joiner_args(
                &dir.display().to_string(),
                self.threads,
                LOCALHOST,
                self.connect_timeout,
            ),
        }
    }

    fn run_in(&self, dir: &std::path::Path, spec: &JobSpec) -> Result<JobOutput> {
        let rendezvous = Rendezvous::open(&dir.join("run").display().to_string(), &self.s3)?;
        rendezvous.publish_spec(spec)?;
        Pool::open(&dir.display().to_string(), &self.s3)?.point_at(rendezvous.uri())?;
        let exe = std::env::current_exe().context("cannot find the facematch executable")?;
        if self.hostfile {
            // Free ports picked here; a port taken in between makes that worker fail, and the run
            // with it (as a cluster host whose port is busy would).
            let mut lines = String::new();
            for _ in 0..self.processes {
                let port = std::net::TcpListener::bind((LOCALHOST, 0))?
                    .local_addr()?
                    .port();
                lines.push_str(&format!("{LOCALHOST}:{port}\n"));
            }
            std::fs::write(dir.join("hosts"), lines)?;
        }
        let mut children: Vec<(usize, Child)> = Vec::new();
        for index in 0..self.processes {
            let log = std::fs::File::create(dir.join(format!("worker-{index}.log")))?;
            let child = Command::new(&exe)
                .args(self.worker_args(dir, index))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .with_context(|| format!("cannot start worker process {index}"));
            match child {
                Ok(child) => children.push((index, child)),
                Err(e) => {
                    stop_all(&mut children);
                    return Err(e);
                }
            }
        }
        // Watch every process: the first one to fail ends the run at once (timely would leave
        // the others waiting for it forever).
        loop {
            let mut running = 0;
            for (index, child) in children.iter_mut() {
                match child.try_wait()? {
                    None => running += 1,
                    Some(status) if status.success() => {}
                    Some(status) => {
                        let index = *index;
                        stop_all(&mut children);
                        if let Some(failure) = rendezvous.failure()? {
                            return Err(anyhow!(failure));
                        }
                        let log = std::fs::read_to_string(dir.join(format!("worker-{index}.log")))
                            .unwrap_or_default();
                        let last = log
                            .lines()
                            .rev()
                            .find(|l| !l.trim().is_empty())
                            .unwrap_or("");
                        return Err(WorkerLost(format!(
                            "worker process {index} of {} failed ({status}){}",
                            self.processes,
                            if last.is_empty() {
                                String::new()
                            } else {
                                format!(": {last}")
                            }
                        ))
                        .into());
                    }
                }
            }
            if running == 0 {
                return rendezvous.output();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Where local worker processes listen.
const LOCALHOST: &str = "127.0.0.1";

/// Kills and reaps every process still running.
fn stop_all(children: &mut [(usize, Child)]) {
    for (_, child) in children.iter_mut() {
        let _ = child.kill();
    }
    for (_, child) in children.iter_mut() {
        let _ = child.wait();
    }
}

/// The runners a user can pick with `--runner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerKind {
    /// [`InlineRunner`].
    Inline,
    /// [`ProcessesRunner`] with this many processes and, if given, threads per process.
    Processes(usize, Option<usize>),
    /// [`crate::emr::EmrRunner`].
    Emr,
}

impl FromStr for RunnerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let usage =
            || format!("unknown runner {s:?} (available: inline, processes:N, processes:NxW, emr)");
        match s.split_once(':') {
            None if s == "inline" => Ok(RunnerKind::Inline),
            None if s == "emr" => Ok(RunnerKind::Emr),
            Some(("processes", shape)) => {
                let positive = |v: &str| v.parse::<usize>().ok().filter(|n| *n > 0);
                match shape.split_once('x') {
                    None => positive(shape).map(|n| RunnerKind::Processes(n, None)),
                    Some((n, w)) => positive(n)
                        .zip(positive(w))
                        .map(|(n, w)| RunnerKind::Processes(n, Some(w))),
                }
                .ok_or_else(usage)
            }
            _ => Err(usage()),
        }
    }
}

impl RunnerKind {
    /// Builds the runner; `workers` is the thread count per process unless the kind names one;
    /// `emr` gives the EMR runner's options.
    pub fn build(
        self,
        workers: usize,
        s3: &S3Options,
        hostfile: bool,
        emr: &dyn Fn() -> Result<crate::emr::EmrOptions>,
    ) -> Result<Box<dyn Runner>> {
        Ok(match self {
            RunnerKind::Inline => Box::new(InlineRunner { workers }),
            RunnerKind::Processes(processes, threads) => Box::new(ProcessesRunner {
                processes,
                threads: threads.unwrap_or(workers).max(1),
                connect_timeout: Duration::from_secs(30),
                s3: s3.clone(),
                hostfile,
            }),
            RunnerKind::Emr => Box::new(crate::emr::EmrRunner::new(emr()?)?),
        })
    }
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
        for bad in [
            "processes:0",
            "processes:2x0",
            "processes:",
            "emr:2",
            "processes:x2",
        ] {
            assert!(bad.parse::<RunnerKind>().is_err(), "{bad}");
        }
    }
}
