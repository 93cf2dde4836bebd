//! Hosts of their own on one machine: Linux network namespaces, each with its own address on a
//! veth link to a bridge in the test's namespace, where the driver, Postgres and the S3 server
//! stay. A worker process per namespace serves a pool as a host you manage would
//! (`facematch worker --pool s3://… --serve --host ADDRESS`), so timely's traffic and every S3
//! request of the workers cross the links. Used by tests/hosts.rs (searches) and tests/builds.rs
//! (a build on hosts).
//!
//! Namespaces need root (CAP_SYS_ADMIN and CAP_NET_ADMIN): [`Network::create`] says why not
//! elsewhere; as root, failing to build the network is a failure.

use super::{ACCESS_KEY, REGION, SECRET_KEY, TestEnv};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The bridge's subnet: the driver is `.1`, worker host `i` is `.11 + i`.
pub const SUBNET: &str = "10.213.0";
/// Worker hosts.
pub const HOSTS: usize = 3;
/// Runs `ip`/`tc` with `args`; panics with its message unless it succeeds.
pub fn sh(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program}: {e}");
        });
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Namespaces joined by a bridge in the test's namespace; deleted (and their processes killed)
/// when dropped.
pub struct Network {
    tag: String,
    bridge: String,
    workers: Vec<Option<Child>>,
}

impl Network {
    /// The network, or why it cannot exist here (not root).
    pub fn create() -> Result<Network, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("network namespaces need root (CAP_SYS_ADMIN, CAP_NET_ADMIN)".into());
        }
        remove_leftovers();
        let tag = format!("{:05}", std::process::id() % 100_000);
        let network = Network {
            bridge: format!("fmb{tag}"),
            tag,
            workers: Vec::new(),
        };
        let bridge = network.bridge.as_str();
        sh("ip", &["link", "add", bridge, "type", "bridge"]);
        sh(
            "ip",
            &["addr", "add", &format!("{SUBNET}.1/24"), "dev", bridge],
        );
        sh("ip", &["link", "set", bridge, "up"]);
        for host in 0..HOSTS {
            let (ns, outside, inside) = (network.ns(host), network.link(host), network.peer(host));
            sh("ip", &["netns", "add", &ns]);
            sh(
                "ip",
                &[
                    "link", "add", &outside, "type", "veth", "peer", "name", &inside,
                ],
            );
            sh("ip", &["link", "set", &inside, "netns", &ns]);
            sh("ip", &["link", "set", &outside, "master", bridge]);
            sh("ip", &["link", "set", &outside, "up"]);
            let address = format!("{}/24", network.address(host));
            sh("ip", &["-n", &ns, "addr", "add", &address, "dev", &inside]);
            sh("ip", &["-n", &ns, "link", "set", &inside, "up"]);
            sh("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        }
        Ok(network)
    }

    pub fn ns(&self, host: usize) -> String {
        format!("fm{}-{host}", self.tag)
    }

    /// The host's link, seen from the test's namespace (a port of the bridge).
    pub fn link(&self, host: usize) -> String {
        format!("fmh{}{host}", self.tag)
    }

    pub fn peer(&self, host: usize) -> String {
        format!("fmn{}{host}", self.tag)
    }

    pub fn address(&self, host: usize) -> String {
        format!("{SUBNET}.{}", 11 + host)
    }

    /// Starts a serving pool worker on every host, running `binary` (the portable worker binary
    /// for searches, the unpacked worker bundle's for builds), logging to `logs/worker-<host>.log`.
    pub fn start_workers(&mut self, env: &TestEnv, logs: &Path, binary: &Path) {
        std::fs::create_dir_all(logs).unwrap();
        self.workers = (0..HOSTS)
            .map(|host| {
                let log = std::fs::File::create(logs.join(format!("worker-{host}.log"))).unwrap();
                // `ip netns exec` execs the worker: the child's pid is the worker's.
                let child = Command::new("ip")
                    .args(["netns", "exec", &self.ns(host)])
                    .arg(binary)
                    .args([
                        "worker",
                        "--pool",
                        "s3://faces/pool",
                        "--serve",
                        "--threads",
                        "1",
                    ])
                    .args(["--host", &self.address(host), "--port-range", "42000-42063"])
                    .args(["--connect-timeout", "30"])
                    .env_clear()
                    .env("PATH", "/usr/bin:/bin")
                    .env("AWS_ENDPOINT_URL", &env.s3.endpoint)
                    .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
                    .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
                    .env("AWS_REGION", REGION)
                    .env("AWS_EC2_METADATA_DISABLED", "true")
                    // The machine's OpenBLAS settings, as every host of one instance type has
                    // them: another kernel choice changes the ResNet's last bits.
                    .envs(std::env::vars().filter(|(k, _)| k.starts_with("OPENBLAS_")))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .unwrap();
                Some(child)
            })
            .collect();
    }

    /// Waits up to `limit` for every worker to exit; their exit codes.
    pub fn wait_workers(&mut self, limit: Duration) -> Vec<Option<i32>> {
        let deadline = Instant::now() + limit;
        let mut codes = vec![None; self.workers.len()];
        loop {
            for (host, worker) in self.workers.iter_mut().enumerate() {
                if let Some(child) = worker
                    && let Some(status) = child.try_wait().unwrap()
                {
                    codes[host] = Some(status.code().unwrap_or(-1));
                    *worker = None;
                }
            }
            if self.workers.iter().all(Option::is_none) || Instant::now() >= deadline {
                return codes;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop_workers(&mut self) {
        for child in self.workers.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.workers.clear();
    }

    /// Slows the link into every host to `rate` (a token bucket; the kernel here has no netem).
    pub fn slow_links(&self, rate: &str) {
        for host in 0..HOSTS {
            let link = self.link(host);
            let tbf = ["rate", rate, "burst", "32kb", "latency", "300ms"];
            let mut args = vec!["qdisc", "add", "dev", &link, "root", "tbf"];
            args.extend(tbf);
            sh("tc", &args);
        }
    }

    pub fn restore_links(&self) {
        for host in 0..HOSTS {
            let link = self.link(host);
            let _ = Command::new("tc")
                .args(["qdisc", "del", "dev", &link, "root"])
                .output();
            sh("ip", &["link", "set", &link, "up"]);
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.stop_workers();
        for host in 0..HOSTS {
            // Deleting a namespace deletes the veth pair with it.
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(host)])
                .output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

/// Namespaces and bridges an earlier run of this test left behind (killed before its Drop): they
/// hold the subnet.
fn remove_leftovers() {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(ns) = line.split_whitespace().next()
            && ns.starts_with("fm")
            && ns.contains('-')
        {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
    let out = Command::new("ip")
        .args(["-o", "link", "show", "type", "bridge"])
        .output()
        .unwrap();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(name) = line.split(": ").nth(1)
            && name.starts_with("fmb")
        {
            let _ = Command::new("ip").args(["link", "del", name]).output();
        }
    }
}

/// The hosts (addresses without ports) of a run's members, sorted, from the `cluster.json` its
/// process 0 published in the rendezvous folder `run`.
pub fn member_hosts(run: &Path) -> Vec<String> {
    let members: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("cluster.json")).unwrap()).unwrap();
    let mut hosts: Vec<String> = members["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let address = p["address"].as_str().unwrap();
            address.rsplit_once(':').unwrap().0.to_string()
        })
        .collect();
    hosts.sort();
    hosts
}
