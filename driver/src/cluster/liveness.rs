//! Heartbeats: how a run notices a process that stopped answering.
//!
//! TCP does not tell. A host cut off by a partition (a link down, a firewall dropping packets)
//! sends no reset, and timely's other processes wait for its data forever. So while its share
//! runs, every process writes a counter to `alive/<index>` in the rendezvous ([`Heartbeat`]),
//! and two sides act on it:
//!
//! - the process itself exits (code 2) when the driver gave the run up (`abandoned.txt`), or
//!   when its own beats have not reached the rendezvous for the run's peer timeout — it is the
//!   one cut off — instead of hanging with its ports and memory held;
//! - whoever watches the run (the driver) names a process whose beat has not changed for the
//!   peer timeout ([`Watcher`]), by its own clock, so the hosts' clocks need not agree.
//!
//! The peer timeout is the run's, published in the member list ([`super::Members`]).

use super::Rendezvous;
use super::rendezvous::BEAT_DONE;
use anyhow::Result;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// The peer timeout when none is given: long enough for a loaded node's pauses, short
/// against a run's `--emr-timeout`.
pub const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_secs(30);

/// Exit code of a worker process that gave its run up (as for peers that never connected).
const EXIT_GAVE_UP: i32 = 2;

/// A process's heartbeat for the life of its share of a run. [`Heartbeat::finish`] writes the
/// last beat ([`BEAT_DONE`]); dropped without it (the share failed), it only stops, and the
/// silence tells the watcher.
pub struct Heartbeat {
    stop: Arc<AtomicBool>,
    /// Dropping it wakes the beating thread to stop.
    wake: Option<mpsc::Sender<()>>,
    /// Says when the beating thread has stopped.
    stopped: mpsc::Receiver<()>,
    rendezvous: Rendezvous,
    process: usize,
}

impl Heartbeat {
    /// Starts beating for process `process` at `rendezvous`, several times per `peer_timeout`.
    pub fn start(rendezvous: &Rendezvous, process: usize, peer_timeout: Duration) -> Heartbeat {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        // Milliseconds since `started` of the last beat the rendezvous took.
        let last_ok = Arc::new(AtomicU64::new(0));
        let interval = (peer_timeout / 6).clamp(Duration::from_millis(100), Duration::from_secs(5));
        let (wake, asleep) = mpsc::channel::<()>();
        let (has_stopped, stopped) = mpsc::channel::<()>();
        {
            let (stop, last_ok, rendezvous) = (stop.clone(), last_ok.clone(), rendezvous.clone());
            std::thread::spawn(move || {
                let mut count: u64 = 0;
                loop {
                    count += 1;
                    if rendezvous.beat(process, &count.to_string()).is_ok() {
                        last_ok.store(started.elapsed().as_millis() as u64, Ordering::SeqCst);
                    }
                    if let Ok(Some(reason)) = rendezvous.abandoned()
                        && !stop.load(Ordering::SeqCst)
                    {
                        give_up(&format!(
                            "the driver gave run {} up: {reason}",
                            rendezvous.uri()
                        ));
                    }
                    if asleep.recv_timeout(interval) != Err(mpsc::RecvTimeoutError::Timeout) {
                        break;
                    }
                }
                let _ = has_stopped.send(());
            });
        }
        {
            // A separate thread: a beat stuck in a dead connection must not stop the count.
            let (stop, uri) = (stop.clone(), rendezvous.uri().to_string());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let since =
                        started.elapsed() - Duration::from_millis(last_ok.load(Ordering::SeqCst));
                    if since > peer_timeout {
                        give_up(&format!(
                            "no heartbeat reached {uri} for {since:.1?} (peer timeout \
                             {peer_timeout:?}): this host is cut off"
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
        Heartbeat {
            stop,
            wake: Some(wake),
            stopped,
            rendezvous: rendezvous.clone(),
            process,
        }
    }
}

impl Heartbeat {
    /// The share is done: stops, and tells a watcher not to take the silence that follows for
    /// a loss.
    pub fn finish(mut self) {
        self.halt();
        // The last counter must not land after the final beat (bounded: a beat stuck on a dead
        // connection does not hold the process).
        let _ = self.stopped.recv_timeout(Duration::from_secs(10));
        let _ = self.rendezvous.beat(self.process, BEAT_DONE);
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake.take();
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Ends this worker process: its timely threads may be blocked on a peer that will never
/// answer, and nothing short of the process ending frees them.
fn give_up(why: &str) -> ! {
    eprintln!("error: giving the run up: {why}");
    std::process::exit(EXIT_GAVE_UP);
}

/// The driver's side: watches a run's heartbeats and names a process that stopped answering.
#[derive(Default)]
pub struct Watcher {
    members: Option<super::Members>,
    /// Each process's last beat and when this watcher first saw it.
    seen: Vec<(Option<String>, Instant)>,
}

impl Watcher {
    /// A watcher that has seen nothing yet.
    pub fn new() -> Watcher {
        Watcher::default()
    }

    /// One look at the heartbeats: what went wrong if a process's beat has not changed (or
    /// could not be read) for the run's peer timeout. Before the member list is published there
    /// is nothing to watch (the assembly has its own timeout).
    pub fn lost(&mut self, rendezvous: &Rendezvous) -> Result<Option<String>> {
        if self.members.is_none() {
            let Some(members) = rendezvous.try_members()? else {
                return Ok(None);
            };
            self.seen = vec![(None, Instant::now()); members.peers.len()];
            self.members = Some(members);
        }
        let Some(members) = &self.members else {
            return Ok(None);
        };
        let timeout = members.peer_timeout();
        let processes = members.peers.len();
        let beats = rendezvous.beats(processes).unwrap_or_else(|e| {
            // No news is not a loss: a read that fails now (a throttled store, an object read
            // while it is replaced) is tried again at the next look, and a process that really
            // stopped still runs out its timeout.
            tracing::debug!("cannot read the heartbeats at {}: {e:#}", rendezvous.uri());
            vec![None; processes]
        });
        for (index, beat) in beats.into_iter().enumerate() {
            if beat.as_deref() == Some(BEAT_DONE) {
                continue;
            }
            let (last, since) = &mut self.seen[index];
            if beat.is_some() && *last != beat {
                *last = beat;
                *since = Instant::now();
            } else if since.elapsed() > timeout {
                let peer = &members.peers[index];
                return Ok(Some(format!(
                    "worker process {index} of {processes} ({}, pid {}) stopped answering: no \
                     heartbeat at {} for {timeout:?}",
                    peer.address,
                    peer.pid,
                    rendezvous.uri()
                )));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use facematch_datasets::S3Options;

    #[test]
    fn a_process_whose_beat_stops_is_named_and_a_finished_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let rendezvous =
            Rendezvous::open(dir.path().to_str().unwrap(), &S3Options::default()).unwrap();
        rendezvous.register(0, "10.0.0.1:42000").unwrap();
        rendezvous.register(1, "10.0.0.2:42000").unwrap();
        rendezvous.register(2, "10.0.0.3:42000").unwrap();
        let peer_timeout = Duration::from_millis(600);
        rendezvous
            .assemble(3, 1, peer_timeout, Duration::from_secs(1))
            .unwrap();
        let mut watcher = Watcher::new();
        // Process 0 beats for real, process 1 beats once and goes silent, process 2 finishes.
        let beating = Heartbeat::start(&rendezvous, 0, peer_timeout);
        rendezvous.beat(1, "1").unwrap();
        Heartbeat::start(&rendezvous, 2, peer_timeout).finish();
        assert_eq!(rendezvous.beats(3).unwrap()[2].as_deref(), Some(BEAT_DONE));
        let started = Instant::now();
        let lost = loop {
            if let Some(lost) = watcher.lost(&rendezvous).unwrap() {
                break lost;
            }
            assert!(started.elapsed() < Duration::from_secs(5), "never noticed");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(started.elapsed() >= peer_timeout, "{:?}", started.elapsed());
        assert!(
            lost.starts_with("worker process 1 of 3 (10.0.0.2:42000, pid "),
            "{lost}"
        );
        drop(beating);
    }
}
