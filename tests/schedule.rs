//! `facematch schedule`: two real schedulers on one database, histories arriving while they run,
//! every window run by exactly one scheduler and every history answered exactly once; SIGTERM
//! ends them cleanly; `--once` runs a window only if nobody has.

mod common;

use common::TestEnv;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn insert(env: &TestEnv, count: i64, offset: i64) -> Vec<i64> {
    let mut client = env.db.client();
    (0..count)
        .map(|i| {
            client
                .query_one(
                    "INSERT INTO histories (in_face_id, max_results) VALUES ($1, 5) RETURNING id",
                    &[&(1 + (offset + i) * 7 % 2000)],
                )
                .unwrap()
                .get(0)
        })
        .collect()
}

fn scheduler(env: &TestEnv) -> Child {
    env.command(&["--json", "schedule", "--every", "1s", "-w", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The windows a scheduler's JSON output says it ran, with the histories its run claimed.
fn windows_run(stdout: &[u8]) -> BTreeMap<String, i64> {
    serde_json::Deserializer::from_slice(stdout)
        .into_iter::<Value>()
        .map(|v| v.unwrap())
        .filter(|v| v["ran"] == true)
        .map(|v| {
            let claimed = v["run"]["claimed"].as_i64().unwrap_or(0);
            (v["window"].as_str().unwrap().to_string(), claimed)
        })
        .collect()
}

#[test]
fn two_schedulers_never_run_a_window_or_a_history_twice() {
    let env = TestEnv::new();
    env.ok(&[
        "dataset",
        "synth",
        "--identities",
        "200",
        "--per-identity",
        "10",
        "--dim",
        "32",
        "--shards",
        "2",
    ]);
    let mut ids = insert(&env, 300, 0);
    let schedulers = [scheduler(&env), scheduler(&env)];
    // More work arrives while they run, over several windows.
    for round in 0..4 {
        std::thread::sleep(Duration::from_millis(600));
        ids.extend(insert(&env, 25, 300 + round * 25));
    }
    let mut client = env.db.client();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let done: i64 = client
            .query_one(
                "SELECT count(*) FROM histories WHERE id = ANY($1) AND status = 'FINISHED'",
                &[&ids],
            )
            .unwrap()
            .get(0);
        if done == ids.len() as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {} finished",
            ids.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut outputs = Vec::new();
    for child in schedulers {
        // SAFETY: kill(2) with SIGTERM on a child this test started.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "SIGTERM ends a scheduler cleanly: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        outputs.push(windows_run(&out.stdout));
    }

    // No window was run by both, and together they ran exactly the windows recorded.
    let (a, b) = (&outputs[0], &outputs[1]);
    assert!(a.keys().all(|k| !b.contains_key(k)), "{a:?} / {b:?}");
    let recorded: BTreeSet<String> = client
        .query(
            "SELECT window_key FROM schedule_windows WHERE status = 'FINISHED'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let ran: BTreeSet<String> = a.keys().chain(b.keys()).cloned().collect();
    assert_eq!(ran, recorded);
    assert!(
        recorded.len() >= 2,
        "work arrived over several windows: {recorded:?}"
    );
    // Every history was answered exactly once: one run each, the runs' claims add up, 5 items each.
    let claimed: i64 = a.values().chain(b.values()).sum();
    assert_eq!(claimed, ids.len() as i64);
    let rows = client
        .query(
            "SELECT h.attempts, (SELECT count(*) FROM history_items i WHERE i.history_id = h.id),
                    EXISTS (SELECT 1 FROM schedule_windows w WHERE w.run_id = h.run_id)
               FROM histories h WHERE h.id = ANY($1)",
            &[&ids],
        )
        .unwrap();
    for row in rows {
        assert_eq!(
            (
                row.get::<_, i32>(0),
                row.get::<_, i64>(1),
                row.get::<_, bool>(2)
            ),
            (1, 5, true)
        );
    }
    let running: i64 = client
        .query_one(
            "SELECT count(*) FROM histories WHERE status <> 'FINISHED'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(running, 0);

    // --once (for cron): runs the current window if nobody has, else says so.
    insert(&env, 3, 900);
    let first: Value =
        serde_json::from_str(&env.ok(&["--json", "schedule", "--every", "100000h", "--once"]))
            .unwrap();
    let second: Value =
        serde_json::from_str(&env.ok(&["--json", "schedule", "--every", "100000h", "--once"]))
            .unwrap();
    assert_eq!(
        (first["ran"].as_bool(), second["ran"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(first["window"], second["window"]);
    assert_eq!(first["run"]["finished"], 3);
}
