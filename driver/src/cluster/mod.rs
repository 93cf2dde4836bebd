//! Worker processes of a timely cluster (ARCHITECTURE.md: Where it runs): how N processes find
//! each other without a hand-written hostfile, and what one worker process (`facematch worker`)
//! does.
//!
//! The rendezvous is a folder or S3 prefix per run. The driver writes `spec.json` there. Each
//! process binds a free port and registers its `host:port` and pid: at `peers/<index>` when it
//! was started with its position, or under `joiners/` when any position will do (hosts an EMR
//! bootstrap action started do not know theirs). Process 0 — or the driver, when every process
//! is a joiner (`--runner hosts`) — waits, bounded, until every position is taken, filling the
//! open ones with joiners, and publishes the ordered list (`cluster.json`); only then does
//! anyone start timely. A process that never comes is therefore
//! named in an error instead of timely retrying its connection forever. Process 0 writes
//! `output.json` when the dataflow is done.
//!
//! A pool is a longer-lived prefix whose `current` names the run to join: a cluster's workers
//! (an EMR cluster's, or those you start on hosts you manage) wait there between runs. A
//! hostfile (one `host:port` per line, in process order) can replace the registration; the job
//! folder still carries the spec and the output.
//!
//! While a run's share is running every process beats in the rendezvous, and a process that
//! stops beating — dead, or cut off by the network, which TCP alone never reports — ends the run
//! within a bounded time instead of leaving the others waiting for it.
//!
//! [`rendezvous`] is one run's meeting place, [`pool`] the pointer a cluster's workers wait on,
//! [`liveness`] the heartbeats, [`hostfile`] the alternative to registering, [`command`] the
//! worker command lines every runner starts, and [`worker`] what `facematch worker` does with
//! them. Nothing here knows
//! Postgres or which runner started the process.

pub mod command;
pub mod hostfile;
pub mod liveness;
pub mod pool;
pub mod rendezvous;
pub mod worker;

pub use command::{PortRange, WorkerFlags, indexed_args, joiner_args, reserve_port};
pub use hostfile::read_hostfile;
pub use liveness::{DEFAULT_PEER_TIMEOUT, Heartbeat, Watcher};
pub use pool::Pool;
pub use rendezvous::{Members, Peer, Rendezvous};
pub use worker::{Position, RunSource, WorkerOptions, host_name, run_worker_process};
