//! The worker command lines: the same `facematch worker …` arguments whether the processes
//! runner starts them on this machine or an EMR step and bootstrap action on a cluster.

use std::time::Duration;

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
