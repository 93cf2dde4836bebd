//! The bad-input corpus: one table of inputs facematch must refuse — command-line values,
//! import files, manifests, shards, names, connection strings, images — each with the exit code
//! and the words it must say, and each checked to leave the database and the storage exactly as
//! they were.

mod common;

use common::TestEnv;
use std::path::Path;

/// One input and what facematch must answer.
struct Case {
    what: &'static str,
    args: Vec<String>,
    code: i32,
    says: &'static str,
}

fn case(what: &'static str, args: &[&str], code: i32, says: &'static str) -> Case {
    Case {
        what,
        args: args.iter().map(|s| s.to_string()).collect(),
        code,
        says,
    }
}

/// A NumPy `.npy` file: `descr` (e.g. `<f4`), `shape`, raw little-endian `data`.
fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

/// Every object in the bucket with its bytes: what "storage unchanged" is compared on.
fn storage(env: &TestEnv) -> Vec<(String, Vec<u8>)> {
    let mut objects: Vec<(String, Vec<u8>)> = env
        .s3
        .list("")
        .into_iter()
        .map(|key| {
            let bytes = env.s3.get(&key);
            (key, bytes)
        })
        .collect();
    objects.sort();
    objects
}

/// A dataset version `name` of its own, made for one corruption: the same faces as `base`
/// (face ids are global).
fn version(env: &TestEnv, name: &str) {
    env.synth(name, [50, 2, 8, 2, 2], &["--no-current"]);
}

/// Rewrites the manifest of `name@v1` through `change`.
fn edit_manifest(env: &TestEnv, name: &str, change: impl FnOnce(&mut serde_json::Value)) {
    let key = format!("datasets/{name}/v1/manifest.json");
    let mut manifest: serde_json::Value = serde_json::from_slice(&env.s3.get(&key)).unwrap();
    change(&mut manifest);
    env.s3.put(&key, serde_json::to_vec(&manifest).unwrap());
}

fn shard_key(name: &str) -> String {
    format!("datasets/{name}/v1/shard-00000.parquet")
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}

#[test]
fn every_bad_input_is_refused_with_a_clear_message_and_changes_nothing() {
    let env = TestEnv::new();
    env.ok(&[
        "dataset",
        "synth",
        "--name",
        "base",
        "--identities",
        "50",
        "--per-identity",
        "2",
        "--dim",
        "8",
        "--seed",
        "2",
    ]);
    let dir = env.scratch.path().join("inputs");
    std::fs::create_dir_all(&dir).unwrap();

    // Import files.
    let dat_dim = write(
        &dir,
        "dim.dat",
        b"\"1\",\"A\",\"0.1 0.2 0.3\"\n\"2\",\"A\",\"0.1 0.2\"\n",
    );
    let csv_nan = write(
        &dir,
        "nan.csv",
        b"face_id,source,encoding\n1,A,0.1 0.2\n2,A,NaN 0.2\n",
    );
    let jsonl_inf = write(
        &dir,
        "inf.jsonl",
        b"{\"face_id\":1,\"source\":\"A\",\"encoding\":[1,2]}\n{\"face_id\":2,\"source\":\"A\",\"encoding\":[1e39,2]}\n",
    );
    let empty = write(&dir, "empty.csv", b"face_id,source,encoding\n");
    let zero = write(
        &dir,
        "zero.jsonl",
        b"{\"face_id\":1,\"source\":\"A\",\"encoding\":[0,0]}\n",
    );
    let twice = write(
        &dir,
        "twice.dat",
        b"\"1\",\"A\",\"0.1 0.2\"\n\"1\",\"A\",\"0.3 0.2\"\n",
    );
    let no_column = write(&dir, "column.csv", b"id,source,vector\n1,A,0.1 0.2\n");
    let malformed = write(
        &dir,
        "bad.jsonl",
        b"{\"face_id\":1,\"source\":\"A\",\"encoding\":[1,2]\n",
    );
    let mut huge_line = b"{\"face_id\":1,\"source\":\"A\",\"encoding\":[".to_vec();
    huge_line.extend(std::iter::repeat_n(b'7', 50 * 1024 * 1024));
    let huge = write(&dir, "huge.jsonl", &huge_line);
    let f16 = write(
        &dir,
        "half.npy",
        &npy("<f2", &[2, 2], &[0, 60, 0, 60, 0, 60, 0, 60]),
    );
    let f32_rows: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let rows3 = write(&dir, "rows.npy", &npy("<f4", &[3, 2], &f32_rows));
    let short_ids = write(&dir, "ids.txt", b"10\n11\n");
    let truncated_npy = write(&dir, "cut.npy", &npy("<f4", &[3, 2], &f32_rows[..10]));
    let missing = dir.join("nowhere.csv").display().to_string();
    let good = write(&dir, "good.csv", b"face_id,source,encoding\n1,A,0.1 0.2\n");

    // Manifests and shards, one version each, corrupted on S3.
    for name in [
        "sum", "gone", "abs", "up", "future", "wrongdim", "flip", "cut",
    ] {
        version(&env, name);
    }
    edit_manifest(&env, "sum", |m| {
        m["shards"][0]["sha256"] = "00".repeat(32).into()
    });
    env.s3.delete(&shard_key("gone"));
    edit_manifest(&env, "abs", |m| {
        m["shards"][0]["path"] = "/etc/passwd".into()
    });
    edit_manifest(&env, "up", |m| {
        m["shards"][0]["path"] = "datasets/up/v1/../../../../etc/passwd".into()
    });
    edit_manifest(&env, "future", |m| m["format_version"] = 99.into());
    edit_manifest(&env, "wrongdim", |m| m["dim"] = 16.into());
    let mut shard = env.s3.get(&shard_key("flip"));
    let middle = shard.len() / 2;
    shard[middle] ^= 0x40;
    env.s3.put(&shard_key("flip"), shard);
    let shard = env.s3.get(&shard_key("cut"));
    env.s3
        .put(&shard_key("cut"), shard[..shard.len() - 100].to_vec());
    let export = |name: &str| -> Vec<String> {
        [
            "dataset",
            "export",
            "--dataset",
            &format!("{name}@v1"),
            "--format",
            "csv",
            "-o",
            &dir.join(format!("{name}.csv")).display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };

    let mut cases = vec![
        // Command-line values.
        case(
            "unknown method",
            &["submit", "--face", "1", "--method", "manhattan"],
            1,
            "manhattan",
        ),
        case(
            "unknown filter",
            &["submit", "--face", "1", "--filter", "robots"],
            1,
            "robots",
        ),
        case(
            "N = 0",
            &["submit", "--face", "1", "--max-results", "0"],
            1,
            "max_results 0 is out of range (1..=1000)",
        ),
        case(
            "N = 1001",
            &["submit", "--face", "1", "--max-results", "1001"],
            1,
            "1001",
        ),
        case(
            "negative distance",
            &["submit", "--face", "1", "--max-distance=-1"],
            1,
            "max_distance -1 must be a finite number",
        ),
        case(
            "NaN distance",
            &["submit", "--face", "1", "--max-distance", "NaN"],
            1,
            "max_distance NaN must be a finite number",
        ),
        case(
            "unknown face",
            &["submit", "--face", "99999999"],
            1,
            "99999999",
        ),
        case(
            "SQL in a filter",
            &["submit", "--face", "1", "--filter", "' OR 1=1 --"],
            1,
            "OR 1=1",
        ),
        case("zero lease", &["run", "--lease-secs", "0"], 2, "lease-secs"),
        case(
            "zero attempts",
            &["run", "--max-attempts", "0"],
            2,
            "max-attempts",
        ),
        case("zero limit", &["run", "--limit", "0"], 2, "limit"),
        case(
            "zero poll",
            &["run", "--runner", "emr", "--emr-poll", "0s"],
            2,
            "must be more than 0",
        ),
        case(
            "no workers",
            &["run", "-w", "0"],
            1,
            "--workers must be at least 1",
        ),
        case(
            "zero processes",
            &["run", "--runner", "processes:0"],
            1,
            "unknown runner",
        ),
        case(
            "hosts without a pool",
            &["run", "--runner", "hosts:2"],
            1,
            "needs --pool",
        ),
        case("unknown dataset", &["run", "--dataset", "nope"], 1, "nope"),
        case("unknown version", &["run", "--dataset", "base@v9"], 1, "v9"),
        case(
            "reversed port range",
            &["worker", "--pool", "/tmp/p", "--port-range", "9-3"],
            2,
            "port range",
        ),
        case(
            "zero peer timeout",
            &["worker", "--pool", "/tmp/p", "--peer-timeout", "0"],
            2,
            "peer-timeout",
        ),
        // Import files.
        case(
            "dat: wrong dimension",
            &["dataset", "import", &dat_dim, "--name", "i1"],
            1,
            "dim.dat:2",
        ),
        case(
            "csv: NaN",
            &["dataset", "import", &csv_nan, "--name", "i2"],
            1,
            "nan.csv:2",
        ),
        case(
            "jsonl: inf",
            &["dataset", "import", &jsonl_inf, "--name", "i3"],
            1,
            "inf.jsonl:2",
        ),
        case(
            "csv: no rows",
            &["dataset", "import", &empty, "--name", "i4"],
            1,
            "holds no faces",
        ),
        case(
            "jsonl: zero vector",
            &["dataset", "import", &zero, "--name", "i5"],
            1,
            "zero vector",
        ),
        case(
            "dat: id twice",
            &["dataset", "import", &twice, "--name", "i6"],
            1,
            "appears twice",
        ),
        case(
            "csv: header",
            &["dataset", "import", &no_column, "--name", "i7"],
            1,
            "header has no column",
        ),
        case(
            "jsonl: malformed",
            &["dataset", "import", &malformed, "--name", "i8"],
            1,
            "malformed JSON",
        ),
        case(
            "jsonl: a 50 MB line",
            &["dataset", "import", &huge, "--name", "i9"],
            1,
            "huge.jsonl:1",
        ),
        case(
            "npy: float16",
            &["dataset", "import", &f16, "--name", "i10"],
            1,
            "half.npy",
        ),
        case(
            "npy: ids shorter than rows",
            &[
                "dataset", "import", &rows3, "--ids", &short_ids, "--name", "i11",
            ],
            1,
            "ids",
        ),
        case(
            "npy: truncated",
            &["dataset", "import", &truncated_npy, "--name", "i12"],
            1,
            "cut.npy",
        ),
        case(
            "import: no such file",
            &["dataset", "import", &missing, "--name", "i13"],
            1,
            "nowhere.csv",
        ),
        case(
            "import: unknown format",
            &[
                "dataset", "import", &csv_nan, "--format", "xls", "--name", "i14",
            ],
            1,
            "unknown import format",
        ),
        // Names.
        case(
            "name with a quote and SQL",
            &[
                "dataset",
                "import",
                &good,
                "--name",
                "x'; DROP TABLE faces;--",
            ],
            1,
            "bad dataset name",
        ),
        case(
            "name with a space",
            &["dataset", "import", &good, "--name", "my faces"],
            1,
            "bad dataset name",
        ),
        case(
            "name in unicode",
            &["dataset", "import", &good, "--name", "visages-été"],
            1,
            "bad dataset name",
        ),
        case(
            "name climbing out",
            &["dataset", "import", &good, "--name", "../etc"],
            1,
            "bad dataset name",
        ),
        // A password in the connection string is never printed.
        case(
            "password in the URL",
            &[
                "dataset",
                "list",
                "--database-url",
                "postgres://u:hunter2@127.0.0.1:1/x",
            ],
            1,
            "u:***@127.0.0.1:1",
        ),
    ];
    // Manifests and shards.
    for (what, name, says) in [
        ("shard checksum", "sum", "sha256"),
        ("missing shard", "gone", "shard-00000.parquet"),
        ("absolute shard path", "abs", "must be relative"),
        ("shard path with ..", "up", "must be relative"),
        ("future format_version", "future", "format version 99"),
        ("manifest dim", "wrongdim", "dim"),
        ("flipped byte", "flip", "shard-00000.parquet"),
        ("truncated shard", "cut", "shard-00000.parquet"),
    ] {
        let args = export(name);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cases.push(case(what, &args, 1, says));
    }
    #[cfg(feature = "photos")]
    {
        let text = write(
            &dir,
            "notes.jpg",
            b"these are not the pixels you are looking for",
        );
        let zero_bytes = write(&dir, "zero.jpg", b"");
        let photo = std::fs::read(common::test_photos().join("obama.jpg")).unwrap();
        let truncated = write(&dir, "half.jpg", &photo[..photo.len() / 3]);
        let bomb = write(&dir, "bomb.png", &common::bad_images::png_bomb());
        let faceless = write(&dir, "wall.bmp", &common::bad_images::faceless_bmp(64, 64));
        for (what, path, says) in [
            ("photo: text", text, "notes.jpg"),
            ("photo: zero bytes", zero_bytes, "zero.jpg"),
            ("photo: truncated", truncated, "half.jpg"),
            ("photo: 50k×50k header", bomb, "bomb.png"),
            ("photo: no face", faceless, "wall.bmp"),
        ] {
            cases.push(Case {
                what,
                args: vec![
                    "faces".into(),
                    "add".into(),
                    "--actor".into(),
                    "x".into(),
                    path,
                ],
                code: 1,
                says,
            });
        }
    }

    let database = env.db.snapshot();
    let objects = storage(&env);
    let mut failures = Vec::new();
    for case in &cases {
        let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
        let out = env.run(&args);
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.code() != Some(case.code) || !said.contains(case.says) {
            failures.push(format!(
                "{}: exit {:?} (want {}), said: {}",
                case.what,
                out.status.code(),
                case.code,
                said.trim()
            ));
        }
        if said.contains("hunter2") {
            failures.push(format!("{}: printed the password", case.what));
        }
        if env.db.snapshot() != database {
            failures.push(format!("{}: changed the database", case.what));
        }
        if storage(&env) != objects {
            failures.push(format!("{}: changed the storage", case.what));
        }
    }
    println!("bad-input corpus: {} cases", cases.len());
    assert!(cases.len() >= 40, "{} cases", cases.len());
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
