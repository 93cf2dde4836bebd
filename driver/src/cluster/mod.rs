//! Worker processes of a timely cluster (ARCHITECTURE.md: Where it runs): how N processes find
//! each other without a hand-written hostfile, and what one worker process (`facematch worker`)
//! does.
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
//!
//! [`rendezvous`] is one run's meeting place, [`pool`] the pointer a cluster's workers wait on,
//! [`hostfile`] the alternative to registering, [`command`] the worker command lines every
//! runner starts, and [`worker`] what `facematch worker` does with them. Nothing here knows
//! Postgres or which runner started the process.

pub mod command;
pub mod hostfile;
pub mod pool;
pub mod rendezvous;
pub mod worker;

pub use command::{PortRange, WorkerFlags, indexed_args, joiner_args, reserve_port};
pub use hostfile::read_hostfile;
pub use pool::Pool;
pub use rendezvous::{Members, Peer, Rendezvous};
pub use worker::{Position, RunSource, WorkerOptions, host_name, run_worker_process};
