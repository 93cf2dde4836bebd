//! End to end through the real `facematch` binary, a real PostgreSQL (a database per test, in the
//! server `make test` starts) and a real S3-protocol server (s3s-fs in-process, over TCP): import a
//! dataset to S3, submit histories, run them with 1 and 4 timely workers, and check every row the
//! run wrote against the f64 reference; claim safety under concurrent runs; failures that must end
//! every claimed history in ERROR with nothing partial left behind.

mod common;

use common::reference::{RefFace, RefQuery, assert_same, top_n};
use common::{BUCKET, TestEnv};
use facematch_datasets::synth::SynthSpec;
use std::collections::{BTreeMap, HashSet};

const DIM: usize = 32;
const FIRST_ID: i64 = 1000;

/// 150 identities × 10 faces (every 5th identity a user), written as CSV; returns the faces.
fn write_csv(env: &TestEnv, name: &str) -> Vec<RefFace> {
    let spec = SynthSpec {
        identities: 150,
        per_identity: 10,
        dim: DIM,
        seed: 5,
        first_id: FIRST_ID,
        spread: 0.5,
    };
    let faces: Vec<RefFace> = spec
        .faces()
        .map(|f| RefFace {
            id: f.face_id,
            source: f.source.code(),
            encoding: f.encoding,
        })
        .collect();
    let mut csv = String::from("face_id,source,encoding\n");
    for f in &faces {
        let values: Vec<String> = f.encoding.iter().map(f32::to_string).collect();
        csv.push_str(&format!("{},{},{}\n", f.id, f.source, values.join(" ")));
    }
    std::fs::write(env.path(name), csv).unwrap();
    faces
}

/// Imports the CSV to S3 as `e2e@v1` in shards of 200 and returns the faces.
fn import_dataset(env: &TestEnv) -> Vec<RefFace> {
    let faces = write_csv(env, "faces.csv");
    let csv = env.path("faces.csv");
    env.ok(&[
        "dataset",
        "import",
        csv.to_str().unwrap(),
        "--name",
        "e2e",
        "--shard-rows",
        "200",
    ]);
    faces
}

/// A history to submit, with the reference query it stands for.
struct Search {
    face: i64,
    method: &'static str,
    filter: &'static str,
    n: usize,
    max_distance: Option<f64>,
    include_self: bool,
}

const SEARCHES: [Search; 6] = [
    Search {
        face: 1005,
        method: "cosine",
        filter: "all",
        n: 10,
        max_distance: None,
        include_self: false,
    },
    Search {
        face: 1012,
        method: "euclidean",
        filter: "actor",
        n: 25,
        max_distance: None,
        include_self: false,
    },
    Search {
        face: 1044,
        method: "cosine",
        filter: "user",
        n: 5,
        max_distance: None,
        include_self: true,
    },
    Search {
        face: 1100,
        method: "euclidean",
        filter: "all",
        n: 1000,
        max_distance: Some(0.9),
        include_self: false,
    },
    Search {
        face: 1203,
        method: "cosine",
        filter: "all",
        n: 1,
        max_distance: None,
        include_self: false,
    },
    Search {
        face: 1340,
        method: "euclidean",
        filter: "user",
        n: 3,
        max_distance: Some(0.0),
        include_self: true,
    },
];

impl Search {
    fn submit(&self, env: &TestEnv) -> i64 {
        let face = self.face.to_string();
        let n = self.n.to_string();
        let mut args = vec![
            "submit",
            "--face",
            &face,
            "--method",
            self.method,
            "--filter",
            self.filter,
            "--max-results",
            &n,
        ];
        let distance = self.max_distance.map(|d| d.to_string());
        if let Some(d) = &distance {
            args.extend(["--max-distance", d]);
        }
        if self.include_self {
            args.push("--include-self");
        }
        env.ok(&args)
            .trim()
            .parse()
            .expect("submit prints the history id")
    }

    fn reference(&self, faces: &[RefFace]) -> Vec<(i64, f64)> {
        let query = faces
            .iter()
            .find(|f| f.id == self.face)
            .expect("query face in the dataset");
        top_n(
            faces,
            &RefQuery {
                method: self.method,
                filter: self.filter,
                max_results: self.n,
                exclude: (!self.include_self).then_some(self.face),
                max_distance: self.max_distance,
                encoding: query.encoding.clone(),
            },
        )
    }

    fn run_params(&self, runner: &str) -> String {
        format!(
            "method={}, filter={}, max_results={}, exclude_self={}, max_distance={}, dataset=e2e@v1, runner={runner}",
            self.method,
            self.filter,
            self.n,
            !self.include_self,
            self.max_distance
                .map_or("none".to_string(), |d| d.to_string()),
        )
    }
}

/// The rows of `history_items` for a history, in rank order, checking ranks are 1..=k.
fn items(client: &mut postgres::Client, history: i64) -> Vec<(i64, f64)> {
    let rows = client
        .query("SELECT rank, face_id, similarity_score FROM history_items WHERE history_id = $1 ORDER BY rank", &[&history])
        .unwrap();
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(
            row.get::<_, i32>(0),
            i as i32 + 1,
            "history {history}: ranks must be 1..=k"
        );
    }
    rows.iter().map(|r| (r.get(1), r.get(2))).collect()
}

fn run_json(env: &TestEnv, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json", "run", "--dataset", "e2e"];
    all.extend(args);
    serde_json::from_str(&env.ok(&all)).expect("run --json prints a summary")
}

#[test]
fn s3_dataset_runs_with_1_and_4_workers_equal_the_reference() {
    let env = TestEnv::new();
    let faces = import_dataset(&env);

    // The dataset really is on the S3 server: manifest and 8 shards, listed through the S3 API.
    let mut keys = env.s3.list("datasets/e2e/v1/");
    keys.sort();
    let mut expected: Vec<String> = (0..8)
        .map(|i| format!("datasets/e2e/v1/shard-{i:05}.parquet"))
        .collect();
    expected.insert(0, "datasets/e2e/v1/manifest.json".into());
    expected.sort();
    assert_eq!(keys, expected);
    let mut db = env.db.client();
    let row = db
        .query_one(
            "SELECT face_count, shard_count, dim, manifest_uri FROM datasets WHERE name = 'e2e'",
            &[],
        )
        .unwrap();
    assert_eq!(
        (
            row.get::<_, i64>(0),
            row.get::<_, i32>(1),
            row.get::<_, i32>(2)
        ),
        (1500, 8, DIM as i32)
    );
    assert_eq!(
        row.get::<_, String>(3),
        format!("s3://{BUCKET}/datasets/e2e/v1/manifest.json")
    );
    let registered: i64 = db
        .query_one(
            "SELECT count(*) FROM faces WHERE cardinality(encoding) = $1",
            &[&(DIM as i32)],
        )
        .unwrap()
        .get(0);
    assert_eq!(registered, 1500, "every imported face has its faces row");

    for workers in [1, 4] {
        let ids: Vec<i64> = SEARCHES.iter().map(|s| s.submit(&env)).collect();
        for id in &ids {
            let status: String = db
                .query_one("SELECT status FROM histories WHERE id = $1", &[id])
                .unwrap()
                .get(0);
            assert_eq!(status, "PENDING");
        }
        let w = workers.to_string();
        let summary = run_json(&env, &["-w", &w]);
        assert_eq!(summary["claimed"], 6, "{summary}");
        assert_eq!(summary["finished"], 6, "{summary}");
        assert_eq!(summary["faces_scanned"], 1500, "{summary}");
        let run_id = summary["run_id"].as_i64().unwrap();
        let runner = format!("inline:{workers}");

        for (search, id) in SEARCHES.iter().zip(&ids) {
            let h = db
                .query_one(
                    "SELECT status, output, run_params, run_id, created_at <= started_at AND started_at <= finished_at,
                            lease_expires_at IS NULL
                       FROM histories WHERE id = $1",
                    &[id],
                )
                .unwrap();
            assert_eq!(h.get::<_, String>(0), "FINISHED", "history {id}");
            assert_eq!(h.get::<_, Option<String>>(1), None, "no output on success");
            assert_eq!(h.get::<_, String>(2), search.run_params(&runner));
            assert_eq!(h.get::<_, i64>(3), run_id);
            assert_eq!(
                h.get::<_, Option<bool>>(4),
                Some(true),
                "created ≤ started ≤ finished, all set"
            );
            assert!(h.get::<_, bool>(5), "the lease is released");
            let want = search.reference(&faces);
            assert!(
                !want.is_empty(),
                "history {id}: the reference has no rows for face {}",
                search.face
            );
            assert_same(
                &items(&mut db, *id),
                &want,
                &format!("history {id} ({runner})"),
            );
        }
        let run = db
            .query_one("SELECT status, runner, dataset, histories, faces_scanned, finished_at IS NOT NULL FROM job_runs WHERE id = $1", &[&run_id])
            .unwrap();
        assert_eq!(run.get::<_, String>(0), "FINISHED");
        assert_eq!(run.get::<_, String>(1), runner);
        assert_eq!(run.get::<_, Option<String>>(2).as_deref(), Some("e2e@v1"));
        assert_eq!(run.get::<_, i32>(3), 6);
        assert_eq!(run.get::<_, Option<i64>>(4), Some(1500));
        assert!(run.get::<_, bool>(5));
    }
    // A run with nothing pending changes nothing.
    let summary = run_json(&env, &[]);
    assert_eq!(summary["claimed"], 0);
}

#[test]
fn search_and_show_print_the_results() {
    let env = TestEnv::new();
    let faces = import_dataset(&env);
    let out = env.ok(&["--json", "search", "--face", "1005", "--max-results", "3"]);
    let view: serde_json::Value = serde_json::from_str(&out).unwrap();
    let got: Vec<(i64, f64)> = view["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| (i["face_id"].as_i64().unwrap(), i["score"].as_f64().unwrap()))
        .collect();
    let search = Search {
        face: 1005,
        method: "cosine",
        filter: "all",
        n: 3,
        max_distance: None,
        include_self: false,
    };
    assert_same(&got, &search.reference(&faces), "search");
    let id = view["id"].as_i64().unwrap().to_string();
    let table = env.ok(&["show", &id]);
    assert!(
        table.contains("FINISHED") && table.contains(&got[0].0.to_string()),
        "{table}"
    );
}

#[test]
fn concurrent_runs_never_process_a_history_twice() {
    let env = TestEnv::new();
    import_dataset(&env);
    let mut db = env.db.client();
    // 90 histories written straight into the table, as an application would.
    db.execute(
        "INSERT INTO histories (in_face_id, similarity_method, max_results)
         SELECT $1::bigint + g * 13, CASE WHEN g % 2 = 0 THEN 'cosine' ELSE 'euclidean' END, 1 + g % 7
           FROM generate_series(0, 89) g",
        &[&FIRST_ID],
    )
    .unwrap();

    // Round 1: three runs that each claim at most 25, started together; round 2: three that claim all.
    let mut claimed_by: BTreeMap<i64, i64> = BTreeMap::new();
    for limit in [Some("25"), None] {
        let children: Vec<_> = (0..3)
            .map(|_| {
                let mut args = vec!["--json", "run", "--dataset", "e2e", "-w", "1"];
                if let Some(l) = limit {
                    args.extend(["--limit", l]);
                }
                env.command(&args)
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut total = 0;
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success());
            let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let claimed = summary["claimed"].as_u64().unwrap();
            if let Some(l) = limit {
                assert!(claimed <= l.parse().unwrap());
            }
            total += claimed;
            for id in summary["history_ids"].as_array().unwrap() {
                let previous =
                    claimed_by.insert(id.as_i64().unwrap(), summary["run_id"].as_i64().unwrap());
                assert_eq!(previous, None, "history {id} ended by two runs");
            }
        }
        if limit.is_some() {
            assert_eq!(total, 75, "three runs of 25 over 90 pending");
        }
    }
    assert_eq!(claimed_by.len(), 90);
    // The database agrees: each history FINISHED once, by the run that reported it, with exactly
    // its N rows; and the runs' own counts add up to 90.
    for row in db.query("SELECT id, status, run_id, max_results, (SELECT count(*) FROM history_items WHERE history_id = h.id) FROM histories h", &[]).unwrap() {
        let id: i64 = row.get(0);
        assert_eq!(row.get::<_, String>(1), "FINISHED");
        assert_eq!(Some(row.get::<_, i64>(2)), claimed_by.get(&id).copied());
        assert_eq!(row.get::<_, i64>(4), row.get::<_, i32>(3) as i64);
    }
    let total: i64 = db
        .query_one("SELECT sum(histories) FROM job_runs", &[])
        .unwrap()
        .get(0);
    assert_eq!(total, 90);
}

#[test]
fn a_shard_missing_from_s3_ends_every_claimed_history_in_error() {
    let env = TestEnv::new();
    import_dataset(&env);
    let missing = "datasets/e2e/v1/shard-00003.parquet";
    env.s3.delete(missing);
    let ids: Vec<i64> = SEARCHES[..3].iter().map(|s| s.submit(&env)).collect();

    let out = env.run(&["run", "--dataset", "e2e", "-w", "2"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "exit code 3 when histories end in ERROR"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("e2e/v1/shard-00003.parquet"),
        "{stdout}\n{stderr}"
    );

    let mut db = env.db.client();
    for id in &ids {
        let row = db
            .query_one(
                "SELECT status, output, finished_at IS NOT NULL FROM histories WHERE id = $1",
                &[id],
            )
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "ERROR", "history {id}");
        let output: String = row.get(1);
        assert!(
            output.contains("e2e/v1/shard-00003.parquet"),
            "history {id}: {output}"
        );
        assert!(row.get::<_, bool>(2), "finished_at set on ERROR");
        assert!(
            items(&mut db, *id).is_empty(),
            "an ERROR history has no items"
        );
    }
    let running: i64 = db
        .query_one(
            "SELECT count(*) FROM histories WHERE status = 'RUNNING'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(running, 0);
    let run = db
        .query_one("SELECT status, error FROM job_runs", &[])
        .unwrap();
    assert_eq!(run.get::<_, String>(0), "ERROR");
    let error: String = run.get(1);
    assert!(error.contains("shard-00003"), "job_runs.error: {error}");
}

#[test]
fn bad_history_values_are_rejected_at_submit_and_end_in_error_when_written_directly() {
    let env = TestEnv::new();
    import_dataset(&env);
    // Through the CLI: refused with the reason, nothing inserted.
    for (args, reason) in [
        (
            vec!["--method", "manhattan"],
            "unknown similarity method \"manhattan\"",
        ),
        (
            vec!["--filter", "robots"],
            "unknown face source filter \"robots\"",
        ),
        (vec!["--max-results", "0"], "out of range"),
        (vec!["--max-results", "1001"], "out of range"),
    ] {
        let mut all = vec!["submit", "--face", "1005"];
        all.extend(args);
        let out = env.run(&all);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(reason), "{stderr}");
    }
    let out = env.run(&["submit", "--face", "99"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("face 99 does not exist"));
    let mut db = env.db.client();
    let count: i64 = db
        .query_one("SELECT count(*) FROM histories", &[])
        .unwrap()
        .get(0);
    assert_eq!(count, 0);

    // Straight into the table: each bad one ends in ERROR with its reason; the good one finishes.
    let mut ids = Vec::new();
    for (method, filter, n) in [
        ("manhattan", "all", 10),
        ("cosine", "robots", 10),
        ("cosine", "all", 0),
        ("cosine", "all", 5000),
        ("cosine", "all", 4),
    ] {
        let id: i64 = db
            .query_one(
                "INSERT INTO histories (in_face_id, similarity_method, face_source_filter, max_results)
                 VALUES (1005, $1, $2, $3) RETURNING id",
                &[&method, &filter, &n],
            )
            .unwrap()
            .get(0);
        ids.push(id);
    }
    let out = env.run(&["run", "--dataset", "e2e"]);
    assert_eq!(out.status.code(), Some(3));
    let reasons = ["manhattan", "robots", "max_results 0", "max_results 5000"];
    for (id, reason) in ids.iter().zip(reasons) {
        let row = db
            .query_one(
                "SELECT status, output, finished_at IS NOT NULL FROM histories WHERE id = $1",
                &[id],
            )
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "ERROR");
        assert!(
            row.get::<_, String>(1).contains(reason),
            "{}",
            row.get::<_, String>(1)
        );
        assert!(row.get::<_, bool>(2));
    }
    let good: String = db
        .query_one("SELECT status FROM histories WHERE id = $1", &[&ids[4]])
        .unwrap()
        .get(0);
    assert_eq!(good, "FINISHED");
    assert_eq!(items(&mut db, ids[4]).len(), 4);
}

#[test]
fn the_database_refuses_illegal_status_changes() {
    let env = TestEnv::new();
    import_dataset(&env);
    let mut db = env.db.client();
    let err = db
        .execute(
            "INSERT INTO histories (in_face_id, status) VALUES (1005, 'FINISHED')",
            &[],
        )
        .unwrap_err();
    // The trigger's message is in the server error, which Debug shows (Display only says "db error").
    assert!(format!("{err:?}").contains("must be PENDING"), "{err:?}");
    let id: i64 = db
        .query_one(
            "INSERT INTO histories (in_face_id) VALUES (1005) RETURNING id",
            &[],
        )
        .unwrap()
        .get(0);
    for status in ["FINISHED", "ERROR"] {
        let err = db
            .execute(
                "UPDATE histories SET status = $1 WHERE id = $2",
                &[&status, &id],
            )
            .unwrap_err();
        assert!(
            format!("{err:?}").contains("illegal status change"),
            "{err:?}"
        );
    }
}

#[test]
fn a_bad_import_leaves_database_and_storage_as_they_were() {
    let env = TestEnv::new();
    let path = env.path("old.dat");
    std::fs::write(
        &path,
        "\"1\",\"A\",\"0.1 0.2 0.3\"\n\"2\",\"U\",\"0.3 0.2 0.1\"\n\"3\",\"A\",\"0.1 zero 0.3\"\n",
    )
    .unwrap();
    let out = env.run(&["dataset", "import", path.to_str().unwrap(), "--name", "old"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("old.dat:3"), "{stderr}");
    let mut db = env.db.client();
    let (datasets, faces): (i64, i64) = {
        let r = db
            .query_one(
                "SELECT (SELECT count(*) FROM datasets), (SELECT count(*) FROM faces)",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((datasets, faces), (0, 0));
    assert!(env.s3.list("datasets/").is_empty());

    // Fixed, it imports (the old format, both variants of field 2), and exports back identically.
    std::fs::write(
        &path,
        "\"1\",\"A\",\"0.1 0.2 0.3\"\n\"2\",\"face_2.jpg\",\"0.3 0.2 0.1\"\n",
    )
    .unwrap();
    env.ok(&["dataset", "import", path.to_str().unwrap(), "--name", "old"]);
    let exported = env.path("back.dat");
    env.ok(&[
        "dataset",
        "export",
        "--dataset",
        "old@v1",
        "--format",
        "dat",
        "-o",
        exported.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(exported).unwrap(),
        "\"1\",\"A\",\"0.1 0.2 0.3\"\n\"2\",\"A\",\"0.3 0.2 0.1\"\n"
    );
    let image: Option<String> = db
        .query_one("SELECT image_uri FROM faces WHERE id = 2", &[])
        .unwrap()
        .get(0);
    assert_eq!(image.as_deref(), Some("face_2.jpg"));
    let ids: HashSet<i64> = db
        .query("SELECT id FROM faces", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, HashSet::from([1, 2]));
}

#[test]
fn encode_prints_boxes_and_encodings_and_names_bad_images() {
    let photos = common::test_photos();
    let obama = photos.join("obama.jpg");
    let biden = photos.join("biden.jpg");
    let empty = std::env::temp_dir().join(format!("facematch-empty-{}.jpg", std::process::id()));
    std::fs::write(&empty, b"").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_facematch"))
        .env("FACEMATCH_MODELS", common::models_dir())
        .args(["--json", "encode"])
        .args([&obama, &empty, &biden])
        .output()
        .unwrap();
    std::fs::remove_file(&empty).unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a bad image makes the command fail"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is empty (zero bytes)") && stderr.contains("facematch-empty"),
        "{stderr}"
    );
    let results: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let faces = |i: usize| results[i]["faces"].as_array().unwrap().clone();
    assert_eq!(faces(0).len(), 1);
    assert_eq!(
        faces(0)[0]["top_right_bottom_left"],
        serde_json::json!([142, 617, 409, 349])
    );
    assert_eq!(faces(1).len(), 0, "the bad image is reported, not encoded");
    assert_eq!(faces(2).len(), 1, "and the photos after it still are");
    let encoding = |i: usize| -> Vec<f64> {
        faces(i)[0]["encoding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    let (a, b) = (encoding(0), encoding(2));
    assert_eq!(a.len(), 128);
    let d = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!(d > 0.6, "Obama and Biden are different people: {d}");
}

#[test]
fn known_face_ids_must_keep_their_encoding_across_versions() {
    let env = TestEnv::new();
    import_dataset(&env);
    let csv = env.path("faces.csv");
    // The same faces again, as a new dataset: allowed, nothing duplicated.
    env.ok(&[
        "dataset",
        "import",
        csv.to_str().unwrap(),
        "--name",
        "again",
        "--shard-rows",
        "500",
    ]);
    let mut db = env.db.client();
    let count =
        |db: &mut postgres::Client, sql: &str| -> i64 { db.query_one(sql, &[]).unwrap().get(0) };
    assert_eq!(count(&mut db, "SELECT count(*) FROM faces"), 1500);
    assert_eq!(count(&mut db, "SELECT count(*) FROM datasets"), 2);
    // One face changed: refused, naming it; no version, no files, no faces added.
    let text = std::fs::read_to_string(&csv).unwrap();
    let changed = text.replacen("\n1007,A,", "\n1007,A,0.5 ", 1);
    let changed: String = changed
        .lines()
        .map(|l| {
            if l.starts_with("1007,") {
                l.rsplit_once(' ').unwrap().0.to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = env.path("changed.csv");
    std::fs::write(
        &path,
        format!("{changed}\n5000,U,{}\n", vec!["0.25"; DIM].join(" ")),
    )
    .unwrap();
    let out = env.run(&[
        "dataset",
        "import",
        path.to_str().unwrap(),
        "--name",
        "changed",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("1007") && stderr.contains("different"),
        "{stderr}"
    );
    assert_eq!(count(&mut db, "SELECT count(*) FROM datasets"), 2);
    assert_eq!(count(&mut db, "SELECT count(*) FROM faces"), 1500);
    assert!(env.s3.list("datasets/changed/").is_empty());
}
