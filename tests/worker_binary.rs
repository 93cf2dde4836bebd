//! The portable worker binary (`make worker-binary`; `make test` builds it in the dev profile):
//! what `--runner emr` stages must start on a stock EMR 7.x node (Amazon Linux 2023, glibc
//! 2.34), so it may link nothing but the C library and no glibc symbol newer than 2.34 — checked
//! here from the binary itself. Without the face pipeline, it says so when asked for it.
//! (That it computes the inline results as a worker process is tests/processes.rs.)

mod common;

use common::TestEnv;
// What EMR staging accepts; objdump and ldd below check the binary independently of its parser.
use facematch_driver::runner::emr::binary::C_LIBRARY;
use std::process::Command;

fn objdump(args: &[&str]) -> String {
    common::objdump(args, &common::portable_worker())
}

#[test]
fn it_links_only_the_c_library() {
    let needed = common::needed_libraries(&common::portable_worker());
    assert!(needed.iter().any(|l| l == "libc.so.6"), "{needed:?}");
    for lib in &needed {
        assert!(
            C_LIBRARY.contains(&lib.as_str()),
            "it needs {lib}: {needed:?}"
        );
    }
    // The full binary is the control: it does link the face pipeline's libraries.
    let full = Command::new("objdump")
        .args(["-p", env!("CARGO_BIN_EXE_facematch")])
        .output()
        .unwrap();
    let full = String::from_utf8_lossy(&full.stdout);
    assert!(full.contains("libdlib"), "the default build links dlib");
    // And ldd, resolving them on this machine, finds nothing else.
    let ldd = Command::new("ldd")
        .arg(common::portable_worker())
        .output()
        .unwrap();
    let ldd = String::from_utf8_lossy(&ldd.stdout).into_owned();
    for line in ldd.lines().filter(|l| l.contains(".so")) {
        let name = line.split_whitespace().next().unwrap_or("");
        let name = name.rsplit('/').next().unwrap_or(name);
        assert!(
            C_LIBRARY.contains(&name) || name.starts_with("linux-vdso"),
            "ldd: {line}\n{ldd}"
        );
    }
}

#[test]
fn no_glibc_symbol_is_newer_than_2_34() {
    let mut versions = common::glibc_versions(&objdump(&["-T"]));
    assert!(versions.len() > 10, "no versioned glibc symbols found");
    versions.sort();
    let (major, minor, line) = versions.last().unwrap();
    assert!(
        (*major, *minor) <= (2, 34),
        "the newest glibc symbol is {major}.{minor} (EMR 7.x has 2.34): {line}"
    );
}

#[test]
fn the_face_pipeline_verbs_name_the_missing_feature() {
    let env = TestEnv::new();
    let worker = common::portable_worker();
    let photo = env.path("photo.jpg");
    std::fs::write(&photo, b"not needed").unwrap();
    let photo = photo.to_str().unwrap();
    let cases: [&[&str]; 5] = [
        &["encode", photo],
        &["faces", "add", photo],
        &["dataset", "build", "--images", photo],
        &["search", "--image", photo],
        &["submit", "--image", photo],
    ];
    for args in cases {
        let out = env.command_of(&worker, args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("`photos` feature"),
            "{args:?} does not name the feature: {stderr}"
        );
    }
    // Nothing was written: no history, no face.
    let mut client = env.db.client();
    for table in ["histories", "faces"] {
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "{table}");
    }
    // What it is for works: the search verbs are all there.
    let help = Command::new(&worker).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for verb in [
        "run", "search", "submit", "show", "schedule", "worker", "dataset", "emr",
    ] {
        assert!(help.contains(&format!("  {verb} ")), "no {verb}:\n{help}");
    }
}

/// Everything a search needs works in the portable binary alone, as the driver too: a dataset
/// made, listed, shown, exported and imported again, a search, a queued history run inline and
/// shown, a scheduled window — with the same results as the full binary.
#[test]
fn the_portable_binary_runs_every_search_verb() {
    let env = TestEnv::new();
    let worker = common::portable_worker();
    let portable = |args: &[&str]| -> String {
        let out = env.command_of(&worker, args).output().unwrap();
        assert!(
            out.status.success(),
            "portable {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    portable(&[
        "dataset",
        "synth",
        "--name",
        "small",
        "--identities",
        "200",
        "--per-identity",
        "5",
        "--dim",
        "32",
        "--shards",
        "3",
        "--seed",
        "5",
    ]);
    assert!(portable(&["dataset", "list"]).contains("small@v1"));
    assert!(portable(&["dataset", "show", "small"]).contains("shard-00002.parquet"));
    let csv = env.path("small.csv");
    portable(&[
        "dataset",
        "export",
        "--dataset",
        "small",
        "-o",
        csv.to_str().unwrap(),
    ]);
    portable(&[
        "dataset",
        "import",
        csv.to_str().unwrap(),
        "--name",
        "again",
        "--no-current",
    ]);
    let query = [
        "--face",
        "17",
        "--method",
        "euclidean",
        "--max-results",
        "7",
    ];

    let search = |output: String| -> Vec<(i64, f64)> {
        let view: serde_json::Value = serde_json::from_str(&output).unwrap();
        assert_eq!(view["status"], "FINISHED", "{view}");
        view["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| (i["face_id"].as_i64().unwrap(), i["score"].as_f64().unwrap()))
            .collect()
    };
    let mut args = vec!["--json", "search", "--dataset", "small", "-w", "1"];
    args.extend(query);
    let from_portable = search(portable(&args));
    let from_full = search(env.ok(&args));
    assert_eq!(from_portable.len(), 7);
    assert_eq!(
        from_portable, from_full,
        "the same results from both binaries"
    );
    // The imported copy holds the same faces: the same answer over it.
    args[3] = "again";
    assert_eq!(search(portable(&args)), from_full);

    let mut submit = vec!["submit"];
    submit.extend(query);
    let id = portable(&submit).trim().to_string();
    portable(&["run", "--dataset", "small", "-w", "1"]);
    assert_eq!(search(portable(&["--json", "show", &id])), from_full);
    let id = portable(&submit).trim().to_string();
    let window: serde_json::Value = serde_json::from_str(&portable(&[
        "--json",
        "schedule",
        "--every",
        "100000h",
        "--once",
        "--dataset",
        "small",
        "-w",
        "1",
    ]))
    .unwrap();
    assert_eq!(window["run"]["finished"], 1, "{window}");
    assert_eq!(search(portable(&["--json", "show", &id])), from_full);
    assert!(portable(&["stats", "--dataset", "small"]).contains("mean encoding of small@v1"));
    for verb in [
        &["emr", "--help"][..],
        &["worker", "--help"],
        &["bench", "--help"],
    ] {
        portable(verb);
    }
}
