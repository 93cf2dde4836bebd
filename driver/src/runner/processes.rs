//! `--runner processes:N[xW]`: N `facematch worker` processes on this machine, one timely cluster
//! over TCP on 127.0.0.1, found through a rendezvous folder — the very commands a cluster host
//! runs ([`crate::cluster`]): process 0 with its position, the others as pool joiners.

use super::{Capacity, DataFailure, RunContext, Runner, WorkerLost};
use crate::cluster::{Pool, Rendezvous, Watcher, WorkerFlags, indexed_args, joiner_args};
use anyhow::{Context, Result};
use facematch_datasets::S3Options;
use facematch_job::{Work, WorkOutput};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// N local worker processes × W threads on 127.0.0.1.
#[derive(Debug, Clone)]
pub struct ProcessesRunner {
    /// Worker processes (≥ 1).
    pub processes: usize,
    /// Timely threads per process (≥ 1).
    pub threads: usize,
    /// How long processes wait for each other.
    pub connect_timeout: Duration,
    /// How long a process may go without a heartbeat (a stopped or hung process ends the run).
    pub peer_timeout: Duration,
    /// S3 access for the dataset.
    pub s3: S3Options,
    /// Give the processes a hostfile instead of letting them register in the rendezvous.
    pub hostfile: bool,
    /// The executable the worker processes run (default: this one), e.g. the portable worker
    /// binary of `make worker-binary`.
    pub worker_binary: Option<PathBuf>,
}

/// Where local worker processes listen.
const LOCALHOST: &str = "127.0.0.1";

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

    fn execute(&self, work: Arc<Work>, _: &dyn RunContext) -> Result<WorkOutput> {
        let dir = std::env::temp_dir().join(format!(
            "facematch-run-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let result = self.run_in(&dir, &work);
        let _ = std::fs::remove_dir_all(&dir);
        result
    }
}

impl ProcessesRunner {
    /// The arguments of worker process `index` (the very commands an EMR cluster runs: process 0
    /// as its step, the others as its bootstrap-started workers). `dir` holds the pool and, in
    /// `dir/run`, the run's rendezvous.
    fn worker_args(&self, dir: &Path, index: usize) -> Vec<String> {
        let rendezvous = dir.join("run").display().to_string();
        let flags = WorkerFlags {
            threads: self.threads,
            host: LOCALHOST.into(),
            connect_timeout: self.connect_timeout,
            ports: None,
            peer_timeout: self.peer_timeout,
        };
        match (index, self.hostfile) {
            (_, true) => {
                let mut args = indexed_args(&rendezvous, index, self.processes, &flags);
                args.extend(["--hostfile".into(), dir.join("hosts").display().to_string()]);
                args
            }
            (0, false) => indexed_args(&rendezvous, 0, self.processes, &flags),
            (_, false) => joiner_args(&dir.display().to_string(), &flags, false),
        }
    }

    fn run_in(&self, dir: &Path, work: &Work) -> Result<WorkOutput> {
        let rendezvous = Rendezvous::open(&dir.join("run").display().to_string(), &self.s3)?;
        rendezvous.publish_spec(work)?;
        Pool::open(&dir.display().to_string(), &self.s3)?.point_at(rendezvous.uri(), &self.s3)?;
        if self.hostfile {
            write_hostfile(&dir.join("hosts"), self.processes)?;
        }
        let mut children = self.start_workers(dir)?;
        let outcome = self.watch(dir, &mut children, &rendezvous);
        stop_all(&mut children);
        outcome
    }

    /// Starts every worker process, each logging to `dir/worker-<index>.log`.
    fn start_workers(&self, dir: &Path) -> Result<Vec<(usize, Child)>> {
        let exe = match &self.worker_binary {
            Some(path) => path.clone(),
            None => std::env::current_exe().context("cannot find the facematch executable")?,
        };
        let mut children: Vec<(usize, Child)> = Vec::new();
        for index in 0..self.processes {
            let started = std::fs::File::create(dir.join(format!("worker-{index}.log")))
                .map_err(anyhow::Error::from)
                .and_then(|log| {
                    let mut command = Command::new(&exe);
                    die_with_this_thread(&mut command);
                    command
                        .args(self.worker_args(dir, index))
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(log)
                        .spawn()
                        .with_context(|| {
                            format!("cannot start worker process {index} ({})", exe.display())
                        })
                });
            match started {
                Ok(child) => children.push((index, child)),
                // The machine could not start a worker: not the histories' fault.
                Err(e) => {
                    stop_all(&mut children);
                    return Err(WorkerLost(format!("{e:#}")).into());
                }
            }
        }
        Ok(children)
    }

    /// Waits for every process: the first one to fail ends the run at once (timely would leave
    /// the others waiting for it forever).
    fn watch(
        &self,
        dir: &Path,
        children: &mut [(usize, Child)],
        rendezvous: &Rendezvous,
    ) -> Result<WorkOutput> {
        // A process can be alive and stuck (stopped, or waiting on a peer that is): its
        // heartbeat tells.
        let mut watcher = Watcher::new();
        let mut looked = std::time::Instant::now();
        loop {
            let mut running = 0;
            for (index, child) in children.iter_mut() {
                match child.try_wait()? {
                    None => running += 1,
                    Some(status) if status.success() => {}
                    Some(status) => {
                        // The caller stops the others.
                        let index = *index;
                        if let Some(failure) = rendezvous.failure()? {
                            return Err(DataFailure(failure).into());
                        }
                        return Err(self.lost(dir, index, status).into());
                    }
                }
            }
            if running == 0 {
                return rendezvous.output();
            }
            if looked.elapsed() >= Duration::from_millis(250) {
                looked = std::time::Instant::now();
                if let Some(lost) = watcher.lost(rendezvous)? {
                    return Err(WorkerLost(lost).into());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Worker process `index` ended with `status`: the error names it and its last log line.
    fn lost(&self, dir: &Path, index: usize, status: ExitStatus) -> WorkerLost {
        let log =
            std::fs::read_to_string(dir.join(format!("worker-{index}.log"))).unwrap_or_default();
        let last = log
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| format!(": {l}"))
            .unwrap_or_default();
        WorkerLost(format!(
            "worker process {index} of {} failed ({status}){last}",
            self.processes
        ))
    }
}

/// Free ports picked now, one `127.0.0.1:port` line per process. A port taken in between makes
/// that worker fail, and the run with it (as a cluster host whose port is busy would).
fn write_hostfile(path: &Path, processes: usize) -> Result<()> {
    let mut lines = String::new();
    for _ in 0..processes {
        let port = std::net::TcpListener::bind((LOCALHOST, 0))?
            .local_addr()?
            .port();
        lines.push_str(&format!("{LOCALHOST}:{port}\n"));
    }
    std::fs::write(path, lines).with_context(|| format!("cannot write {}", path.display()))
}

/// A worker must not outlive the driver: killed with SIGKILL, the driver cannot stop it, so the
/// kernel does (PR_SET_PDEATHSIG) when the thread that started it — the one running the
/// batch — ends.
fn die_with_this_thread(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe functions
    // (prctl, getppid, _exit).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The driver may have died between fork and prctl.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
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
