//! The processes runner: real `facematch worker` processes that find each other through a
//! rendezvous folder and exchange data over TCP as one timely cluster. Results must be
//! byte-identical to inline whatever the processes, threads and shard layout; a worker killed with
//! SIGKILL mid-run must end the run at once with the histories back to PENDING and no partial
//! results, and the next run must finish them identically.

mod common;

use common::TestEnv;
use std::time::{Duration, Instant};

/// Submits one batch of varied histories and returns their ids.
fn submit_batch(env: &TestEnv, faces: &[i64]) -> Vec<i64> {
    let variants: [&[&str]; 4] = [
        &["--method", "cosine", "--max-results", "10"],
        &[
            "--method",
            "euclidean",
            "--filter",
            "actor",
            "--max-results",
            "25",
        ],
        &[
            "--method",
            "cosine",
            "--filter",
            "user",
            "--max-results",
            "5",
            "--include-self",
        ],
        &[
            "--method",
            "euclidean",
            "--max-distance",
            "0.9",
            "--max-results",
            "50",
        ],
    ];
    let mut ids = Vec::new();
    for (i, face) in faces.iter().enumerate() {
        let mut args = vec!["submit".to_string(), "--face".into(), face.to_string()];
        args.extend(variants[i % variants.len()].iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ids.push(env.ok(&args).trim().parse().unwrap());
    }
    ids
}

fn synth(env: &TestEnv, name: &str, identities: &str, shards: &str) {
    env.ok(&[
        "dataset",
        "synth",
        "--name",
        name,
        "--identities",
        identities,
        "--per-identity",
        "10",
        "--dim",
        "48",
        "--shards",
        shards,
        "--seed",
        "11",
        "--no-current",
    ]);
}

/// `--json run` of `dataset` on `runner`, one thread per process unless the runner says.
fn run_args<'a>(dataset: &'a str, runner: &'a str) -> Vec<&'a str> {
    vec![
        "--json",
        "run",
        "--dataset",
        dataset,
        "--runner",
        runner,
        "-w",
        "1",
    ]
}

/// The run succeeded, finished the 8 histories `ids` over the 30,000 faces once each, and gave
/// them exactly the `expected` items.
fn assert_run_gave(
    env: &TestEnv,
    out: &std::process::Output,
    ids: &[i64],
    expected: &[Vec<(i32, i64, u64)>],
    what: &str,
) {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["finished"], 8, "{what}: {summary}");
    assert_eq!(summary["faces_scanned"], 30_000, "{what}: every face once");
    assert_eq!(env.history_items(ids), expected, "{what}");
}

#[test]
fn any_processes_threads_and_shard_layout_give_the_inline_results() {
    let env = TestEnv::new();
    synth(&env, "seven", "3000", "7");
    synth(&env, "three", "3000", "3");
    let faces: Vec<i64> = (0..8).map(|i| 1 + i * 3701).collect();

    let inline_ids = submit_batch(&env, &faces);
    env.ok(&["run", "--dataset", "seven", "--runner", "inline", "-w", "1"]);
    let expected = env.history_items(&inline_ids);
    assert!(expected.iter().all(|h| !h.is_empty()));

    // The last two find each other through a hostfile instead of the rendezvous registration.
    for (runner, dataset, discovery) in [
        ("processes:1", "seven", None),
        ("processes:2", "seven", None),
        ("processes:3x2", "seven", None),
        ("processes:2x2", "three", None),
        ("processes:4", "three", None),
        ("processes:2", "seven", Some("--hostfile")),
        ("processes:3x2", "three", Some("--hostfile")),
    ] {
        let ids = submit_batch(&env, &faces);
        let mut args = run_args(dataset, runner);
        args.extend(discovery);
        let out = env.run(&args);
        assert_run_gave(
            &env,
            &out,
            &ids,
            &expected,
            &format!("{runner} over {dataset}"),
        );
        let label: String = env
            .db
            .client()
            .query_one("SELECT runner FROM job_runs ORDER BY id DESC LIMIT 1", &[])
            .unwrap()
            .get(0);
        assert!(label.starts_with("processes:"), "{label}");
        assert_eq!(label.ends_with("+hostfile"), discovery.is_some(), "{label}");
    }

    // A shard gone from storage is the data's fault, not a lost worker: ERROR naming the shard,
    // as inline, and nothing goes back to PENDING.
    env.s3.delete("datasets/three/v1/shard-00001.parquet");
    let ids = submit_batch(&env, &faces[..2]);
    let out = env.run(&[
        "run",
        "--dataset",
        "three",
        "--runner",
        "processes:2",
        "-w",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let mut client = env.db.client();
    for id in ids {
        let row = client
            .query_one("SELECT status, output FROM histories WHERE id = $1", &[&id])
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "ERROR");
        let output: String = row.get(1);
        assert!(output.contains("shard-00001.parquet"), "{output}");
    }
}

/// The portable worker binary (no face pipeline, only the C library) run as every worker process
/// of the full driver gives the inline results bit for bit, reading the dataset from S3 through an
/// endpoint given by host name.
#[test]
fn the_portable_worker_binary_gives_the_inline_results() {
    let worker = common::portable_worker();
    let worker = worker.to_str().unwrap();
    let env = TestEnv::new();
    synth(&env, "seven", "3000", "7");
    let faces: Vec<i64> = (0..8).map(|i| 2 + i * 3701).collect();
    let inline_ids = submit_batch(&env, &faces);
    env.ok(&["run", "--dataset", "seven", "--runner", "inline", "-w", "1"]);
    let expected = env.history_items(&inline_ids);
    assert!(expected.iter().all(|h| !h.is_empty()));
    let by_name = env.s3.endpoint.replace("127.0.0.1", "localhost");
    assert_ne!(by_name, env.s3.endpoint);
    for runner in ["processes:2", "processes:3x2"] {
        let ids = submit_batch(&env, &faces);
        let mut args = run_args("seven", runner);
        args.extend(["--worker-binary", worker]);
        let out = env
            .command(&args)
            .env("AWS_ENDPOINT_URL", &by_name)
            .output()
            .unwrap();
        assert_run_gave(
            &env,
            &out,
            &ids,
            &expected,
            &format!("{runner} with {worker}"),
        );
    }
    // The flag is what starts the workers: a binary that is not there fails the run at once,
    // naming it, and the histories go back to PENDING (the machine failed, not they).
    let ids = submit_batch(&env, &faces[..1]);
    let out = env.run(&[
        "run",
        "--dataset",
        "seven",
        "--runner",
        "processes:2",
        "--worker-binary",
        "/nonexistent/facematch",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("/nonexistent/facematch"), "{stdout}");
    let row = env
        .db
        .client()
        .query_one(
            "SELECT status, attempts FROM histories WHERE id = $1",
            &[&ids[0]],
        )
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, i32>(1)),
        ("PENDING".to_string(), 1)
    );
}

/// Waits for the run folder under `tmp` in which every one of `processes` has registered, and
/// returns their pids in process order.
#[test]
fn a_worker_killed_mid_run_requeues_its_histories_and_the_next_run_finishes_them() {
    let env = TestEnv::new();
    // 150k faces × 600 histories: seconds of scanning, so the kill lands mid-run.
    env.synth("big", [15000, 10, 128, 8, 5], &[]);
    let faces: Vec<i64> = (0..600).map(|i| 1 + i * 241).collect();
    let ids = env.insert_histories(&faces);
    // The first 10 histories already died in an earlier run: with --max-attempts 2 this is their
    // last chance, so they end in ERROR with the reason; the others go back to PENDING.
    let (last_chance, retried) = ids.split_at(10);
    env.db
        .client()
        .execute(
            "UPDATE histories SET attempts = 1 WHERE id = ANY($1)",
            &[&last_chance],
        )
        .unwrap();

    let tmp = env.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let started = Instant::now();
    let run = env
        .command(&[
            "run",
            "--runner",
            "processes:2",
            "-w",
            "1",
            "--max-attempts",
            "2",
        ])
        .env("TMPDIR", &tmp)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pids = common::local_workers(&tmp, 2, started + Duration::from_secs(60));
    // SAFETY: kill(2) on a pid this test's child spawned.
    assert_eq!(unsafe { libc::kill(pids[1], libc::SIGKILL) }, 0);
    let out = run.wait_with_output().unwrap();
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "the run fails: {stdout}");
    assert!(
        stdout.contains("worker process 1 of 2 failed") && stdout.contains("signal: 9"),
        "{stdout}"
    );
    assert!(elapsed < Duration::from_secs(60), "no hang: {elapsed:?}");
    assert!(
        !common::alive(pids[0]) && !common::alive(pids[1]),
        "no worker is left behind"
    );

    let mut client = env.db.client();
    let requeued = env.history_states(retried);
    assert_eq!(requeued.len(), 590);
    assert!(
        requeued
            .iter()
            .all(|s| *s == ("PENDING".to_string(), 1, 0, false)),
        "back to PENDING, one attempt, no partial items"
    );
    let given_up = env.history_states(last_chance);
    assert!(
        given_up
            .iter()
            .all(|s| *s == ("ERROR".to_string(), 2, 0, true)),
        "{given_up:?}"
    );
    let output: String = client
        .query_one(
            "SELECT output FROM histories WHERE id = $1",
            &[&last_chance[0]],
        )
        .unwrap()
        .get(0);
    assert!(
        output.contains("worker process 1") && output.contains("gave up after 2 attempts"),
        "{output}"
    );
    let run_row = client
        .query_one(
            "SELECT status, error FROM job_runs ORDER BY id DESC LIMIT 1",
            &[],
        )
        .unwrap();
    assert_eq!(run_row.get::<_, String>(0), "ERROR");
    assert!(run_row.get::<_, String>(1).contains("worker process 1"));

    // The next run finishes them, identically to an inline run of the same questions.
    env.ok(&["run", "--runner", "processes:2", "-w", "1"]);
    let after_retry = env.history_items(retried);
    let attempts: Vec<i32> = client
        .query(
            "SELECT attempts FROM histories WHERE id = ANY($1)",
            &[&retried],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(attempts.iter().all(|a| *a == 2));
    let inline_ids = env.insert_histories(&faces);
    env.ok(&["run", "--runner", "inline", "-w", "2"]);
    assert_eq!(after_retry, env.history_items(&inline_ids[10..]));
}
