//! `--runner hosts` on hosts of its own: Linux network namespaces, each with its own address on
//! a veth link to a bridge, one worker process per namespace (the portable worker binary, as a
//! host would run it: `facematch worker --pool s3://… --serve --host ADDRESS`), and the driver,
//! Postgres and the S3 server on the bridge's address in the test's own namespace. Timely's
//! traffic between the workers and every S3 request cross the links.
//!
//! The results must be bit-identical to inline. Then, with the links slowed (a token bucket) so
//! that a run lasts seconds, one host's link goes down mid-run: no TCP reset reaches anyone, so
//! only the heartbeats can tell. The run must end within a bounded time with the histories back
//! to PENDING (attempts + 1) and nothing partial written, every worker process must exit (the
//! cut-off one because it cannot reach the rendezvous, the others because the driver gave the
//! run up), and the next run on restarted workers finishes the histories identically.
//!
//! Namespaces need root (CAP_SYS_ADMIN and CAP_NET_ADMIN); elsewhere the test says so and
//! returns. As root, failing to build the network is a failure.

mod common;

use common::TestEnv;
use common::network::{HOSTS, Network, SUBNET, sh};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The run's peer timeout, in seconds.
const PEER_TIMEOUT: u64 = 4;

/// `--json run` on the hosts serving the pool (`--force`: the planner rightly says this machine
/// alone would be done before a cluster of any kind has started).
fn hosts_run(env: &TestEnv) -> Command {
    let peer_timeout = PEER_TIMEOUT.to_string();
    let mut cmd = env.command(&[
        "--json",
        "run",
        "--dataset",
        "net",
        "--runner",
        "hosts:3",
        "-w",
        "1",
        "--pool",
        "s3://faces/pool",
        "--force",
        "--connect-timeout",
        "60",
        "--peer-timeout",
    ]);
    cmd.arg(peer_timeout);
    cmd
}

/// The runs under the pool, as folders of the S3 server's bucket.
fn runs(bucket: &Path) -> Vec<PathBuf> {
    let mut runs: Vec<PathBuf> = std::fs::read_dir(bucket.join("pool/runs"))
        .map(|dir| dir.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    runs.sort();
    runs
}

fn log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn hosts_in_their_own_network_namespaces_match_inline_and_survive_a_partition() {
    let mut network = match Network::create() {
        Ok(network) => network,
        Err(why) => {
            println!("SKIPPED: {why}");
            return;
        }
    };
    let env = TestEnv::with_s3(common::S3Server::start_on(&format!("{SUBNET}.1")));
    let bucket = env.s3.root().join(common::BUCKET);
    // 30,000 faces in 6 shards: two per host.
    env.synth("net", [3000, 10, 48, 6, 11], &[]);
    let faces: Vec<i64> = (0..8).map(|i| 1 + i * 3701).collect();
    let inline_ids = env.insert_histories(&faces);
    env.ok(&["run", "--dataset", "net", "--runner", "inline", "-w", "1"]);
    let expected = env.history_items(&inline_ids);
    assert!(expected.iter().all(|h| !h.is_empty()));

    // 1. Three hosts, bit-identical to inline.
    let logs = env.path("logs");
    network.start_workers(&env, &logs, &common::portable_worker());
    let ids = env.insert_histories(&faces);
    let out = hosts_run(&env).output().unwrap();
    let first = common::json_summary(&out);
    assert!(
        out.status.success(),
        "{first}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(first["finished"], 8, "{first}");
    assert_eq!(first["faces_scanned"], 30_000, "every face once: {first}");
    assert_eq!(
        env.history_items(&ids),
        expected,
        "hosts:3 gives the inline results"
    );
    let run = runs(&bucket).pop().expect("the run's rendezvous");
    let hosts: Vec<String> = (0..HOSTS).map(|h| network.address(h)).collect();
    assert_eq!(
        common::network::member_hosts(&run),
        hosts,
        "one process per host, none on the driver's address"
    );
    let label: String = env
        .db
        .client()
        .query_one("SELECT runner FROM job_runs ORDER BY id DESC LIMIT 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(label, "hosts:3x1");

    // 1b. One S3 request in five fails — 500, 503 SlowDown, a dropped connection, a body cut
    // short — for the driver and the three hosts alike (pool, rendezvous, heartbeats, shards):
    // retried with backoff, the results are the clean run's.
    let faults = &env.s3.faults;
    let (requests_before, injected_before) = (faults.requests(), faults.injected());
    faults.set_per_mille(200);
    let ids = env.insert_histories(&faces);
    let out = hosts_run(&env).output().unwrap();
    faults.set_per_mille(0);
    let faulty = common::json_summary(&out);
    assert!(
        out.status.success(),
        "{faulty}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(faulty["finished"], 8, "{faulty}");
    assert_eq!(
        env.history_items(&ids),
        expected,
        "hosts:3 through S3 faults gives the inline results"
    );
    let injected: Vec<u64> = faults
        .injected()
        .iter()
        .zip(injected_before)
        .map(|(now, before)| now - before)
        .collect();
    println!(
        "hosts:3 through S3 faults: {} of {} requests failed ({}), results identical",
        injected.iter().sum::<u64>(),
        faults.requests() - requests_before,
        common::faults::KINDS
            .iter()
            .zip(&injected)
            .map(|(kind, n)| format!("{kind}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(injected.iter().sum::<u64>() > 0, "faults were injected");

    // 2. The same questions again, over slow links, and host 1 cut off mid-run.
    network.slow_links("4mbit");
    let ids = env.insert_histories(&faces);
    let before = runs(&bucket).len();
    let driver = hosts_run(&env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let run = loop {
        // Every process beating: timely is running.
        if let Some(run) = runs(&bucket).get(before)
            && (0..HOSTS).all(|i| run.join(format!("alive/{i}")).exists())
        {
            break run.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the run never started on the hosts"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !run.join("output.json").exists(),
        "the run finished before the partition: slow the links further"
    );
    // Process 1 is the second address in joiner order (10.213.0.12).
    let cut = 1;
    sh("ip", &["link", "set", &network.link(cut), "down"]);
    let partitioned = Instant::now();

    let out = driver.wait_with_output().unwrap();
    let ended = partitioned.elapsed();
    let second = common::json_summary(&out);
    assert_eq!(out.status.code(), Some(3), "{second}");
    let error = second["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("worker process 1 of 3 ({}:", network.address(cut)))
            && error.contains("stopped answering"),
        "{second}"
    );
    // The peer timeout, then a few polls.
    assert!(
        ended < Duration::from_secs(PEER_TIMEOUT + 10),
        "bounded: {ended:?}"
    );
    assert!(
        env.history_states(&ids)
            .iter()
            .all(|s| *s == ("PENDING".to_string(), 1, 0, false)),
        "back to PENDING, attempts + 1, no items: {:?}",
        env.history_states(&ids)
    );
    assert!(
        run.join("abandoned.txt").exists(),
        "the run is marked given up"
    );
    assert!(!run.join("output.json").exists());

    // No worker is left behind: the cut-off one cannot reach the rendezvous, the others were
    // told the run is given up.
    let codes = network.wait_workers(Duration::from_secs(PEER_TIMEOUT + 10));
    let exited = partitioned.elapsed();
    let logs_text = (0..HOSTS)
        .map(|h| {
            format!(
                "worker {h}:\n{}",
                log(&logs.join(format!("worker-{h}.log")))
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        codes,
        vec![Some(2); HOSTS],
        "every worker exits (code 2), in {exited:?}\n{logs_text}"
    );
    println!(
        "partition: the driver ended the run after {ended:.1?}, every worker had exited after {exited:.1?}"
    );
    let cut_log = log(&logs.join(format!("worker-{cut}.log")));
    assert!(cut_log.contains("this host is cut off"), "{cut_log}");
    // The others: told by the driver, or (whichever comes first) by the connection of a peer
    // that has just exited.
    for host in [0, 2] {
        let text = log(&logs.join(format!("worker-{host}.log")));
        assert!(
            text.contains("the driver gave run") || text.contains("went away"),
            "worker {host}: {text}"
        );
    }

    // 3. The link back, fresh workers (a host's supervisor restarts them): the next run
    // finishes the same histories, identically.
    network.restore_links();
    network.start_workers(&env, &env.path("logs-after"), &common::portable_worker());
    let out = hosts_run(&env).output().unwrap();
    let third = common::json_summary(&out);
    assert!(out.status.success(), "{third}");
    assert_eq!(third["finished"], 8, "{third}");
    assert_eq!(env.history_items(&ids), expected);
    assert!(
        env.history_states(&ids)
            .iter()
            .all(|s| s.0 == "FINISHED" && s.1 == 2)
    );
}
