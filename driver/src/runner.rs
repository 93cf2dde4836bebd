//! Where the dataflow runs, behind one trait (SPEC section 1): the claim/write code in
//! [`crate::run`] hands a [`JobSpec`] to a [`Runner`] and gets worker 0's [`JobOutput`] back,
//! whichever runner executed it.

use crate::cluster::Rendezvous;
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

/// Executes one pass of the job somewhere.
pub trait Runner {
    /// What `run_params` and `job_runs` record, e.g. `inline:2`.
    fn label(&self) -> String;
    /// Runs the dataflow to completion and returns its output (results for every query).
    fn execute(&self, spec: Arc<JobSpec>) -> Result<JobOutput>;
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

    fn execute(&self, spec: Arc<JobSpec>) -> Result<JobOutput> {
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

    fn execute(&self, spec: Arc<JobSpec>) -> Result<JobOutput> {
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
    /// The arguments of worker process `index` (what a cluster host or an EMR step runs).
    pub fn worker_args(&self, rendezvous: &str, index: usize) -> Vec<String> {
        vec![
            "worker".into(),
            "--rendezvous".into(),
            rendezvous.into(),
            "--process".into(),
            index.to_string(),
            "--processes".into(),
            self.processes.to_string(),
            "--threads".into(),
            self.threads.to_string(),
            "--connect-timeout".into(),
            self.connect_timeout.as_secs().max(1).to_string(),
        ]
    }

    fn run_in(&self, dir: &std::path::Path, spec: &JobSpec) -> Result<JobOutput> {
        let rendezvous = Rendezvous::open(&dir.display().to_string(), &self.s3)?;
        rendezvous.publish_spec(spec)?;
        let exe = std::env::current_exe().context("cannot find the facematch executable")?;
        let hostfile = dir.join("hosts");
        if self.hostfile {
            // Free ports picked here; a port taken in between makes that worker fail, and the run
            // with it (as a cluster host whose port is busy would).
            let mut lines = String::new();
            for _ in 0..self.processes {
                let port = std::net::TcpListener::bind("127.0.0.1:0")?
                    .local_addr()?
                    .port();
                lines.push_str(&format!("127.0.0.1:{port}\n"));
            }
            std::fs::write(&hostfile, lines)?;
        }
        let mut children: Vec<(usize, Child)> = Vec::new();
        for index in 0..self.processes {
            let log = std::fs::File::create(dir.join(format!("worker-{index}.log")))?;
            let mut args = self.worker_args(&dir.display().to_string(), index);
            if self.hostfile {
                args.extend(["--hostfile".into(), hostfile.display().to_string()]);
            }
            let child = Command::new(&exe)
                .args(args)
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
}

impl FromStr for RunnerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let usage =
            || format!("unknown runner {s:?} (available: inline, processes:N, processes:NxW)");
        match s.split_once(':') {
            None if s == "inline" => Ok(RunnerKind::Inline),
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
    /// Builds the runner; `workers` is the thread count per process unless the kind names one.
    pub fn build(self, workers: usize, s3: &S3Options, hostfile: bool) -> Box<dyn Runner> {
        match self {
            RunnerKind::Inline => Box::new(InlineRunner { workers }),
            RunnerKind::Processes(processes, threads) => Box::new(ProcessesRunner {
                processes,
                threads: threads.unwrap_or(workers).max(1),
                connect_timeout: Duration::from_secs(30),
                s3: s3.clone(),
                hostfile,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_names_parse() {
        assert_eq!("inline".parse(), Ok(RunnerKind::Inline));
        assert_eq!("processes:3".parse(), Ok(RunnerKind::Processes(3, None)));
        assert_eq!(
            "processes:2x4".parse(),
            Ok(RunnerKind::Processes(2, Some(4)))
        );
        for bad in [
            "processes:0",
            "processes:2x0",
            "processes:",
            "emr",
            "processes:x2",
        ] {
            assert!(bad.parse::<RunnerKind>().is_err(), "{bad}");
        }
    }
}
