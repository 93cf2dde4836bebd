//! Faults a batch worker meets in production, with the real driver, Postgres and S3 server:
//! a run paused past its lease (and one whose write is merely slow). Each case asserts that
//! nothing is lost, nothing is written twice and nothing is left half-written.
//!
//! The pause is placed by `FACEMATCH_FAULT` (the driver's one fault point, between the scan and
//! the write: ARCHITECTURE.md, Testing); the fault itself — SIGSTOP, a lease running out, a
//! second run taking over — is real.

mod common;

use common::TestEnv;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn summary(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON summary ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `--json run` with a one-second lease and the fault `fault`, started in the background.
fn spawn_run(env: &TestEnv, fault: &str) -> Child {
    env.command(&["--json", "run", "-w", "1", "--lease-secs", "1"])
        .env("FACEMATCH_FAULT", fault)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until every history of `ids` is RUNNING.
fn wait_running(env: &TestEnv, ids: &[i64]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !env.history_states(ids).iter().all(|s| s.0 == "RUNNING") {
        assert!(
            Instant::now() < deadline,
            "the run never claimed its histories"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until process `pid` is stopped (state `T` in /proc).
fn wait_stopped(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next());
        if state == Some('T') {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the run never reached its fault point: {stat}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_run_paused_past_its_lease_writes_nothing_and_another_run_answers_its_histories() {
    let env = TestEnv::new();
    env.ok(&[
        "dataset",
        "synth",
        "--name",
        "f",
        "--identities",
        "2000",
        "--per-identity",
        "10",
        "--dim",
        "32",
        "--shards",
        "4",
        "--seed",
        "9",
    ]);
    // 600 histories: three write transactions of 256.
    let faces: Vec<i64> = (0..600).map(|i| 1 + i * 31).collect();
    let reference = env.insert_histories(&faces);
    env.ok(&["run", "-w", "1"]);
    let expected = env.history_items(&reference);
    assert!(expected.iter().all(|items| !items.is_empty()));

    // 1. A slow write under a one-second lease: the heartbeat runs until the last commit, so a
    // second run started meanwhile finds nothing expired and takes nothing.
    let ids = env.insert_histories(&faces);
    let slow = spawn_run(&env, "pause-before-write:3000");
    wait_running(&env, &ids);
    std::thread::sleep(Duration::from_millis(1500));
    let second = summary(&env.run(&["--json", "run", "-w", "1"]));
    assert_eq!(second["requeued"], 0, "{second}");
    assert_eq!(second["claimed"], 0, "{second}");
    let out = slow.wait_with_output().unwrap();
    let first = summary(&out);
    assert!(out.status.success(), "{first}");
    assert_eq!(first["finished"], 600, "{first}");
    assert_eq!(first["lost"], 0, "{first}");
    assert_eq!(env.history_items(&ids), expected);

    // 2. A run stopped (SIGSTOP, its heartbeat with it) past its lease after the scan: a second
    // run requeues and answers its histories; when the first one wakes up, the fence keeps it
    // from writing anything, and it says what it lost.
    let ids = env.insert_histories(&faces);
    let paused = spawn_run(&env, "stop-before-write");
    wait_stopped(paused.id());
    assert!(env.history_states(&ids).iter().all(|s| s.0 == "RUNNING"));
    std::thread::sleep(Duration::from_millis(1500));
    let second = summary(&env.run(&["--json", "run", "-w", "1"]));
    assert_eq!(second["requeued"], 600, "the lease ran out: {second}");
    assert_eq!(second["finished"], 600, "{second}");
    // SAFETY: kill(2) on the pid of a child this test spawned.
    assert_eq!(unsafe { libc::kill(paused.id() as i32, libc::SIGCONT) }, 0);
    let out = paused.wait_with_output().unwrap();
    let late = summary(&out);
    assert!(out.status.success(), "{late}");
    assert_eq!(late["finished"], 0, "{late}");
    assert_eq!(late["lost"], 600, "{late}");
    let warnings = late["warnings"].to_string();
    assert!(
        warnings.contains("lost 600 histories before writing their results"),
        "{warnings}"
    );
    // Every history answered once, by the second run: its N items, none twice, attempts 2.
    assert_eq!(env.history_items(&ids), expected, "items from one run only");
    assert!(
        env.history_states(&ids)
            .iter()
            .all(|s| s.0 == "FINISHED" && s.1 == 2 && s.3),
        "{:?}",
        &env.history_states(&ids)[..3]
    );
}

#[test]
fn a_driver_killed_mid_run_takes_its_workers_with_it_and_the_next_run_rescues_its_histories() {
    let env = TestEnv::new();
    // 150k faces × 600 histories: seconds of scanning on two worker processes.
    env.ok(&[
        "dataset",
        "synth",
        "--name",
        "big",
        "--identities",
        "15000",
        "--per-identity",
        "10",
        "--dim",
        "128",
        "--shards",
        "8",
        "--seed",
        "5",
    ]);
    let faces: Vec<i64> = (0..600).map(|i| 1 + i * 241).collect();
    let ids = env.insert_histories(&faces);
    let tmp = env.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let started = Instant::now();
    let mut driver = env
        .command(&[
            "run",
            "--runner",
            "processes:2",
            "-w",
            "1",
            "--lease-secs",
            "2",
        ])
        .env("TMPDIR", &tmp)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let workers = common::local_workers(&tmp, 2, started + Duration::from_secs(60));
    driver.kill().unwrap(); // SIGKILL: no handler, no cleanup
    driver.wait().unwrap();
    let killed = Instant::now();
    while workers.iter().any(|pid| common::alive(*pid)) {
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "the worker processes outlived their driver"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let gone = killed.elapsed();
    // Killed, not finished: the job never published its output.
    let run = std::fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("facematch-run-")
        })
        .expect("the run's folder");
    assert!(run.path().join("run/cluster.json").exists());
    assert!(
        !run.path().join("run/output.json").exists(),
        "the workers ran the job to its end after their driver died"
    );
    // The claim stays RUNNING until its lease runs out; then the next run rescues it.
    assert!(env.history_states(&ids).iter().all(|s| s.0 == "RUNNING"));
    std::thread::sleep(Duration::from_millis(2500));
    let next = summary(&env.run(&["--json", "run", "-w", "2"]));
    assert_eq!(next["requeued"], 600, "{next}");
    assert_eq!(next["finished"], 600, "{next}");
    assert!(
        env.history_states(&ids)
            .iter()
            .all(|s| s.0 == "FINISHED" && s.1 == 2 && s.2 > 0),
        "{:?}",
        &env.history_states(&ids)[..3]
    );
    println!("driver SIGKILL: both worker processes gone {gone:.2?} after it");
}
