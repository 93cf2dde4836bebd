//! The worker command lines: the same `facematch worker …` arguments whether the processes
//! runner starts them on this machine or an EMR step and bootstrap action on a cluster.

use anyhow::{Result, bail};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// TCP ports a worker process may listen on (`--port-range 42000-42063`): what a firewall between
/// the hosts opens. Without one, a process takes any free port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub from: u16,
    /// Last port (inclusive).
    pub to: u16,
}

impl FromStr for PortRange {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let parsed = s.split_once('-').and_then(|(a, b)| {
            Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?))
        });
        match parsed {
            Some((from, to)) if from > 0 && from <= to => Ok(PortRange { from, to }),
            _ => bail!("expected a port range FROM-TO with 0 < FROM <= TO <= 65535, got {s:?}"),
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.from, self.to)
    }
}

/// What every worker process of a run is told alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerFlags {
    /// Timely threads per process (a joiner takes process 0's instead, should they differ).
    pub threads: usize,
    /// The address the others reach it at, or `auto` (the host name).
    pub host: String,
    /// How long it waits for the others.
    pub connect_timeout: Duration,
    /// The ports it may listen on.
    pub ports: Option<PortRange>,
    /// How long a process may go without a heartbeat: process 0 publishes it for the run.
    pub peer_timeout: Duration,
}

impl WorkerFlags {
    fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--threads".into(),
            self.threads.to_string(),
            "--host".into(),
            self.host.clone(),
            "--connect-timeout".into(),
            self.connect_timeout.as_secs().max(1).to_string(),
        ];
        if let Some(ports) = self.ports {
            args.extend(["--port-range".into(), ports.to_string()]);
        }
        args
    }
}

/// The command line of process `process` started with its position; process 0 assembles the
/// cluster and writes the output (the processes runner's process 0 and an EMR cluster's step).
pub fn indexed_args(
    rendezvous: &str,
    process: usize,
    processes: usize,
    flags: &WorkerFlags,
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
    args.extend(flags.args());
    if process == 0 {
        args.extend([
            "--peer-timeout".into(),
            flags.peer_timeout.as_secs().max(1).to_string(),
        ]);
    }
    args
}

/// The command line of a process that joins whatever run its pool names: the processes runner's
/// other processes (one run, then exit) and the workers an EMR bootstrap action starts (`serve`:
/// one run after another, for the life of the node).
pub fn joiner_args(pool: &str, flags: &WorkerFlags, serve: bool) -> Vec<String> {
    let mut args = vec!["worker".to_string(), "--pool".into(), pool.into()];
    if serve {
        args.push("--serve".into());
    }
    args.extend(flags.args());
    args
}

/// A port held for this process until timely binds it.
#[derive(Debug)]
pub struct ReservedPort {
    /// Bound, not listening; dropping it frees the port.
    _bound: socket2::Socket,
    port: u16,
}

impl ReservedPort {
    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Binds `host` on the first free port of `ports` (any free port without a range), without
/// listening. Holding the bound socket until every process of a host has picked its port keeps
/// two of them from picking the same one of a range; since it does not listen, a peer that
/// connects before timely binds the port is refused (and timely retries) rather than accepted by
/// a socket about to close.
pub fn reserve_port(host: &str, ports: Option<PortRange>) -> Result<ReservedPort> {
    let addresses: Vec<std::net::SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(host, 0))
        .map_err(|e| anyhow::anyhow!("cannot resolve {host}: {e}"))?
        .collect();
    let Some(address) = addresses.first().copied() else {
        bail!("{host} has no address");
    };
    let candidates: Vec<u16> = match ports {
        Some(range) => (range.from..=range.to).collect(),
        None => vec![0],
    };
    for port in candidates {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(address),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        let mut at = address;
        at.set_port(port);
        if socket.bind(&at.into()).is_ok() {
            let port = socket.local_addr()?.as_socket().map_or(port, |a| a.port());
            return Ok(ReservedPort {
                _bound: socket,
                port,
            });
        }
    }
    match ports {
        Some(range) => bail!("no free port on {host} in {range} (--port-range)"),
        None => bail!("cannot listen on {host}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_parse_and_bound_the_port() {
        let range: PortRange = "42000-42003".parse().unwrap();
        assert_eq!((range.from, range.to), (42000, 42003));
        assert_eq!(range.to_string(), "42000-42003");
        for bad in ["42003-42000", "0-10", "42000", "a-b", "1-70000"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
        // Hold two adjacent ports: a range starting there gives the next free one after them.
        let bind = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port));
        let (start, held) = (0..100)
            .find_map(|_| {
                let first = bind(0).ok()?;
                let port = first.local_addr().ok()?.port();
                let second = bind(port.checked_add(1)?).ok()?;
                Some((port, [first, second]))
            })
            .expect("two adjacent free ports");
        let range = PortRange {
            from: start,
            to: start.saturating_add(20),
        };
        let first = reserve_port("127.0.0.1", Some(range)).unwrap();
        let port = first.port();
        assert!(port >= start + 2 && port <= range.to, "{port} in {range}");
        // A second process of the same host, while the first holds its port, gets another.
        let second = reserve_port("127.0.0.1", Some(range)).unwrap();
        assert!(second.port() > port);
        // Held, not listening: a connection is refused (timely retries), not accepted and lost.
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
        let full = PortRange {
            from: start,
            to: start + 1,
        };
        let err = reserve_port("127.0.0.1", Some(full))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no free port"), "{err}");
        drop(held);
    }
}
