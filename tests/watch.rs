//! `facematch watch`: histories an application INSERTs with plain SQL are answered without
//! anyone starting `facematch run` — woken by the schema's NOTIFY, over the dataset held in
//! memory — and every history that ends is announced on `facematch_history_done`, after its
//! items are committed. A new current version is picked up at the next pass; SIGTERM ends it.

mod common;

use common::reference::{self, RefFace};
use common::{HISTORY_KINDS, TestEnv};
use postgres::fallible_iterator::FallibleIterator;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// The faces `dataset synth` registered for version `version` of `live`, for the reference.
fn faces_of(env: &TestEnv, version: i32) -> Vec<RefFace> {
    env.ref_faces(
        "JOIN datasets d ON d.id = f.first_dataset_id WHERE d.name = 'live' AND d.version = $1 ORDER BY f.id",
        &[&version],
    )
}

/// The watcher, killed if the test ends without stopping it.
struct Watcher(Child);

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `facematch --json watch`, its stdout lines sent to the returned receiver once it is ready.
fn watch(env: &TestEnv) -> (Watcher, std::sync::mpsc::Receiver<Value>) {
    let mut child = env
        .command(&["--json", "watch", "-w", "2", "--poll", "1s"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let lines = BufReader::new(out).lines().map_while(Result::ok);
        for value in lines.filter_map(|l| serde_json::from_str::<Value>(&l).ok()) {
            let _ = tx.send(value);
        }
    });
    let child = Watcher(child);
    let ready = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("watch never said it was ready");
    assert_eq!(ready["ready"], true, "{ready}");
    (child, rx)
}

/// Waits for `count` notifications on `facematch_history_done`; for each, reads (at that
/// moment) how many items the history has. Returns id → (status, items at notification).
fn done_notifications(
    listener: &mut postgres::Client,
    reader: &mut postgres::Client,
    count: usize,
) -> BTreeMap<i64, (String, i64, usize)> {
    let mut seen: BTreeMap<i64, (String, i64, usize)> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.values().map(|v| v.2).sum::<usize>() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "only {} of {count} histories were announced: {seen:?}",
            seen.len()
        );
        let mut notifications = listener.notifications();
        let Some(n) = notifications.timeout_iter(left).next().unwrap() else {
            continue;
        };
        assert_eq!(n.channel(), "facematch_history_done");
        let payload: Value = serde_json::from_str(n.payload()).unwrap();
        let id = payload["id"].as_i64().unwrap();
        let status = payload["status"].as_str().unwrap().to_string();
        let items: i64 = reader
            .query_one(
                "SELECT count(*) FROM history_items WHERE history_id = $1",
                &[&id],
            )
            .unwrap()
            .get(0);
        let entry = seen.entry(id).or_insert((status.clone(), items, 0));
        entry.2 += 1;
    }
    seen
}

#[test]
fn histories_inserted_by_sql_are_answered_and_announced_without_a_run() {
    let env = TestEnv::new();
    env.synth("live", [200, 10, 32, 4, 3], &[]);
    let faces = faces_of(&env, 1);
    let mut listener = env.db.client();
    listener
        .batch_execute("LISTEN facematch_history_done")
        .unwrap();
    let mut reader = env.db.client();
    let (mut child, runs) = watch(&env);

    // An application's INSERTs, the four kinds of question, and one with a bad method.
    let asked: Vec<i64> = (0..12).map(|i| faces[i * 97 % faces.len()].id).collect();
    let ids = env.insert_histories(&asked);
    let bad: i64 = env
        .db
        .client()
        .query_one(
            "INSERT INTO histories (in_face_id, similarity_method) VALUES ($1, 'manhattan') RETURNING id",
            &[&faces[0].id],
        )
        .unwrap()
        .get(0);
    let seen = done_notifications(&mut listener, &mut reader, ids.len() + 1);

    assert_eq!(seen[&bad].0, "ERROR", "{seen:?}");
    let items = env.history_items(&ids);
    for (i, id) in ids.iter().enumerate() {
        let (status, items_then, times) = &seen[id];
        assert_eq!(status, "FINISHED", "history {id}");
        assert_eq!(*times, 1, "history {id} announced {times} times");
        // The notification comes after the commit: the items were already there.
        assert_eq!(*items_then as usize, items[i].len(), "history {id}");
        let face = faces.iter().find(|f| f.id == asked[i]).unwrap();
        let want = reference::top_n(&faces, &HISTORY_KINDS[i % 4].reference(face));
        let got: Vec<(i64, f64)> = items[i]
            .iter()
            .map(|(_, f, s)| (*f, f64::from_bits(*s)))
            .collect();
        reference::assert_same(&got, &want, &format!("history {id}"));
    }
    let states = env.history_states(&ids);
    assert!(
        states.iter().all(|s| s.0 == "FINISHED" && s.1 == 1),
        "{states:?}"
    );
    // No `run` was started: every answer came from watch's runs, on its resident runner.
    let params: Vec<String> = env
        .db
        .client()
        .query(
            "SELECT run_params FROM histories WHERE id = ANY($1)",
            &[&ids],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        params
            .iter()
            .all(|p| p.contains("runner=resident:2") && p.contains("dataset=live@v1")),
        "{params:?}"
    );
    let first_runs: Vec<Value> = runs.try_iter().collect();
    assert!(!first_runs.is_empty(), "watch printed no run");

    // A new current version (more faces): the next pass answers with it.
    env.synth("live", [300, 10, 32, 4, 4], &["--first-id", "100000"]);
    let faces = faces_of(&env, 2);
    assert_eq!(faces.len(), 3000);
    let later = env.insert_histories(&[faces[faces.len() - 1].id]);
    let seen = done_notifications(&mut listener, &mut reader, 1);
    assert_eq!(seen[&later[0]].0, "FINISHED");
    let run_params: String = env
        .db
        .client()
        .query_one(
            "SELECT run_params FROM histories WHERE id = $1",
            &[&later[0]],
        )
        .unwrap()
        .get(0);
    assert!(run_params.contains("dataset=live@v2"), "{run_params}");
    let face = faces.last().unwrap();
    let want = reference::top_n(&faces, &HISTORY_KINDS[0].reference(face));
    let got: Vec<(i64, f64)> = env.history_items(&later)[0]
        .iter()
        .map(|(_, f, s)| (*f, f64::from_bits(*s)))
        .collect();
    reference::assert_same(&got, &want, "the history after the new version");

    // An idle watcher records no runs: nothing new in job_runs over a few polls.
    let runs_before: i64 = reader
        .query_one("SELECT count(*) FROM job_runs", &[])
        .unwrap()
        .get(0);
    std::thread::sleep(Duration::from_millis(2500));
    let runs_after: i64 = reader
        .query_one("SELECT count(*) FROM job_runs", &[])
        .unwrap()
        .get(0);
    assert_eq!(runs_before, runs_after, "an idle watcher recorded runs");

    // SIGTERM: it stops within a poll and exits cleanly.
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.0.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "watch ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "watch exited with {status}");
}
