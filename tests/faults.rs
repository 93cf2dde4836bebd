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
    env.synth("f", [2000, 10, 32, 4, 9], &[]);
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
    let second = common::json_summary(&env.run(&["--json", "run", "-w", "1"]));
    assert_eq!(second["requeued"], 0, "{second}");
    assert_eq!(second["claimed"], 0, "{second}");
    let out = slow.wait_with_output().unwrap();
    let first = common::json_summary(&out);
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
    let second = common::json_summary(&env.run(&["--json", "run", "-w", "1"]));
    assert_eq!(second["requeued"], 600, "the lease ran out: {second}");
    assert_eq!(second["finished"], 600, "{second}");
    // SAFETY: kill(2) on the pid of a child this test spawned.
    assert_eq!(unsafe { libc::kill(paused.id() as i32, libc::SIGCONT) }, 0);
    let out = paused.wait_with_output().unwrap();
    let late = common::json_summary(&out);
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
    env.synth("big", [15000, 10, 128, 8, 5], &[]);
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
    let next = common::json_summary(&env.run(&["--json", "run", "-w", "2"]));
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

#[test]
fn runs_through_a_faulty_s3_give_the_clean_results_and_requeue_when_it_is_gone() {
    let env = TestEnv::new();
    // 12 shards: every run makes dozens of requests.
    env.synth("s3f", [3000, 10, 48, 12, 13], &[]);
    let faces: Vec<i64> = (0..40).map(|i| 1 + i * 701).collect();
    let reference = env.insert_histories(&faces);
    env.ok(&["run", "-w", "1"]);
    let expected = env.history_items(&reference);

    // One request in five fails — 500, 503 SlowDown, a dropped connection, a body cut short —
    // on every runner: retried with backoff, the results are the clean run's.
    let faults = &env.s3.faults;
    faults.set_per_mille(200);
    let before = faults.requests();
    for runner in ["inline", "processes:2", "processes:3x2"] {
        let ids = env.insert_histories(&faces);
        let out = env.run(&["--json", "run", "--runner", runner, "-w", "1"]);
        let done = common::json_summary(&out);
        assert!(out.status.success(), "{runner}: {done}");
        assert_eq!(done["finished"], 40, "{runner}: {done}");
        assert_eq!(env.history_items(&ids), expected, "{runner} through faults");
    }
    let injected = faults.injected();
    let requests = faults.requests() - before;
    println!(
        "S3 faults survived: {} of {requests} requests ({})",
        injected.iter().sum::<u64>(),
        common::faults::KINDS
            .iter()
            .zip(injected)
            .map(|(kind, n)| format!("{kind}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(
        injected.iter().all(|n| *n > 0),
        "every kind of fault was injected: {injected:?}"
    );

    // Storage gone for the shards (the manifest still loads): past the retries the run gives
    // its histories back with the cause — never ERROR, nothing written.
    faults.set_target(Some("shard-"));
    faults.set_per_mille(1000);
    let ids = env.insert_histories(&faces);
    let out = env.run(&["--json", "run", "-w", "1"]);
    let gone = common::json_summary(&out);
    assert_eq!(out.status.code(), Some(3), "{gone}");
    assert_eq!(gone["requeued_after_failure"], 40, "{gone}");
    assert!(
        gone["error"]
            .as_str()
            .unwrap_or_default()
            .contains("unavailable after retries"),
        "{gone}"
    );
    assert!(
        env.history_states(&ids)
            .iter()
            .all(|s| *s == ("PENDING".to_string(), 1, 0, false)),
        "{:?}",
        env.history_states(&ids)
    );
    // Back again: the next run answers them as the clean run did.
    faults.set_per_mille(0);
    env.ok(&["run", "-w", "1"]);
    assert_eq!(env.history_items(&ids), expected);
}

/// A PostgreSQL of the test's own (`facematch db start --dir`), which the test may restart.
struct OwnServer {
    dir: tempfile::TempDir,
}

impl OwnServer {
    fn start() -> (OwnServer, String) {
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        // As root the server runs as `postgres`, which must reach its folder.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let server = OwnServer { dir };
        let url = server.db(&["start"]);
        let admin = format!("{}/postgres", url.rsplit_once('/').unwrap().0);
        (server, admin)
    }

    fn db(&self, verb: &[&str]) -> String {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_facematch"))
            .arg("db")
            .args(verb)
            .arg("--dir")
            .arg(self.dir.path().join("pg"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "db {verb:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `pg_ctl stop -m fast`, then a start on the same port: every connection is cut.
    fn restart(&self) -> Duration {
        let started = Instant::now();
        self.db(&["stop"]);
        self.db(&["start"]);
        started.elapsed()
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = std::process::Command::new(env!("CARGO_BIN_EXE_facematch"))
            .args(["db", "stop", "--dir"])
            .arg(self.dir.path().join("pg"))
            .output();
    }
}

/// Waits until a write transaction of a run is open: its items inserted, not yet committed.
fn wait_for_open_write(env: &TestEnv) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // The server may still be coming back from the first restart.
        let open = postgres::Client::connect(&env.db.url, postgres::NoTls).and_then(|mut db| {
            db.query_one(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE state = 'idle in transaction' AND query LIKE 'INSERT INTO history_items%'",
                &[],
            )
            .map(|row| row.get::<_, i64>(0))
        });
        if open.is_ok_and(|n| n > 0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no write transaction was ever open"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn postgres_restarted_mid_run_costs_nothing() {
    let (server, admin) = OwnServer::start();
    let env = TestEnv::with(common::TestDb::create_on(admin), common::S3Server::start());
    env.synth("pg", [3000, 10, 48, 6, 21], &[]);
    let faces: Vec<i64> = (0..300).map(|i| 1 + i * 97).collect();
    let reference = env.insert_histories(&faces);
    env.ok(&["run", "-w", "1"]);
    let expected = env.history_items(&reference);

    // Restarted while the run scans, and again inside its first write transaction (items
    // inserted, not committed): the heartbeat and the write reconnect, the lease (4 s) never
    // runs out, the cut transaction leaves nothing, and the run writes it again and goes on to
    // its next passes.
    let ids = env.insert_histories(&faces);
    let run = env
        .command(&[
            "--json",
            "run",
            "-w",
            "1",
            "--lease-secs",
            "4",
            "--batch-size",
            "100",
        ])
        .env("FACEMATCH_FAULT", "pause-in-write:3000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The first pass's hundred.
    wait_running(&env, &ids[..100]);
    let first = server.restart();
    wait_for_open_write(&env);
    let second = server.restart();
    let out = run.wait_with_output().unwrap();
    let done = common::json_summary(&out);
    assert!(
        out.status.success(),
        "{done}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(done["finished"], 300, "{done}");
    assert_eq!(done["passes"], 3, "{done}");
    assert_eq!(done["lost"], 0, "{done}");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("lost the database"),
        "the write never saw its connection cut: {log}"
    );
    assert_eq!(env.history_items(&ids), expected);
    assert!(
        env.history_states(&ids)
            .iter()
            .all(|s| s.0 == "FINISHED" && s.1 == 1),
        "{:?}",
        &env.history_states(&ids)[..3]
    );
    println!("postgres restarted twice mid-run ({first:.1?}, {second:.1?}): all 300 finished");
}

/// A tmpfs of `size` mounted at `dir` for the guard's life.
struct SmallDisk {
    dir: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(dir: &std::path::Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0777"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount tmpfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk {
            dir: dir.to_path_buf(),
        }
    }

    /// Every file and folder (with a trailing `/`) under the disk, relative to it.
    fn files(&self) -> Vec<String> {
        fn walk(dir: &std::path::Path, root: &std::path::Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    out.push(format!("{}/", path.strip_prefix(root).unwrap().display()));
                    walk(&path, root, out);
                } else {
                    out.push(path.strip_prefix(root).unwrap().display().to_string());
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.dir, &self.dir, &mut out);
        out.sort();
        out
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.dir).output();
    }
}

#[test]
fn a_full_disk_while_writing_a_version_changes_nothing() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED: mounting a small tmpfs needs root");
        return;
    }
    let env = TestEnv::new();
    let disk = SmallDisk::mount(&env.path("disk"), "2m");
    let root = disk.dir.display().to_string();
    let synth = |identities: &str, dim: &str| {
        env.run(&[
            "--json",
            "dataset",
            "synth",
            "--name",
            "full",
            "--identities",
            identities,
            "--per-identity",
            "10",
            "--dim",
            dim,
            "--shards",
            "4",
            "--seed",
            "3",
            "--dataset-root",
            &root,
        ])
    };
    let first = synth("100", "8");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let files = disk.files();
    assert!(
        files.iter().any(|f| f.ends_with("manifest.json")),
        "{files:?}"
    );

    // 50,000 faces × 128 floats do not fit in 2 MB.
    let second = synth("5000", "128");
    let said = String::from_utf8_lossy(&second.stderr).to_string();
    assert!(!second.status.success(), "the second version cannot fit");
    assert!(
        said.contains("No space left on device") && said.contains(&root),
        "says what and where: {said}"
    );
    assert_eq!(disk.files(), files, "no stray files, nothing of v2 left");
    let versions: serde_json::Value =
        serde_json::from_str(&env.ok(&["--json", "dataset", "list"])).unwrap();
    let versions: Vec<(i64, bool)> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_i64().unwrap(),
                v["current"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        versions,
        vec![(1, true)],
        "no version registered; v1 still current"
    );
    // And v1 still answers.
    let face = env.insert_histories(&[1]);
    env.ok(&["run", "-w", "1", "--dataset", "full"]);
    assert_eq!(env.history_states(&face)[0].0, "FINISHED");
}
