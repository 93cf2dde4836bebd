//! `dataset build` as a cluster job: the same photos give the same version bit for bit inline,
//! on 2 worker processes and on 3 single-threaded ones; a build whose driver or worker is killed
//! with SIGKILL is resumed by the same command without encoding its finished chunks again, and
//! ends equal to an uninterrupted build; while a build runs, its faces are invisible, the face-id
//! lock stays free for `faces add`, and `faces add` of a new photo goes through; on hosts of their
//! own (network namespaces) running the worker bundle, and on EMR's stand-in, a build equals an
//! inline one. Real binary, real PostgreSQL, real worker processes over TCP, dlib's real models on
//! dlib's example photos.

mod common;

use common::network::{Network, SUBNET};
use common::{TestEnv, alive, json_summary, local_workers, test_photos};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

/// dlib's example photos: small group photos with 1 to 13 faces each (44 in all).
fn example_photos() -> Vec<(String, Vec<u8>)> {
    let dir = test_photos().parent().unwrap().join("dlib_examples");
    let mut photos: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("dlib's example photos (make setup)")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("20") || n.starts_with("Tom_Cruise"))
        .map(|n| {
            let bytes = std::fs::read(dir.join(&n)).unwrap();
            (n, bytes)
        })
        .collect();
    photos.sort();
    assert_eq!(photos.len(), 10, "dlib's example photos (make setup)");
    photos
}

/// A photo folder: the example photos `rounds` times over (each round's copies made distinct by
/// trailing bytes, so they are new photos with the same pixels), a byte-identical copy of one
/// and an undecodable file.
fn write_corpus(root: &Path, rounds: usize) -> usize {
    let photos = example_photos();
    let mut written = 0;
    for round in 0..rounds {
        for (name, bytes) in &photos {
            let mut bytes = bytes.clone();
            if round > 0 {
                bytes.extend(format!("round {round}").as_bytes());
            }
            let path = root.join(format!("r{round}/{name}"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
            written += 1;
        }
    }
    std::fs::write(root.join("r0/z_copy.jpg"), &photos[0].1).unwrap();
    std::fs::write(root.join("r0/zz_broken.jpg"), b"not a jpeg").unwrap();
    written + 2
}

/// The build command for `photos` into dataset `name` under `root` on `runner`.
fn build_args<'a>(
    photos: &'a str,
    root: &'a str,
    runner: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "--json",
        "dataset",
        "build",
        "--images",
        photos,
        "--name",
        "people",
        "--dataset-root",
        root,
        "--runner",
        runner,
        "--chunk-photos",
        "3",
        "--shard-rows",
        "7",
        "--actors-from-dirs",
    ];
    args.extend_from_slice(extra);
    args
}

/// What a finished version is made of: its shards (path, rows, sha256) and every face the
/// database holds for it (id, photo relative to the folder, box, detector, encoding bits).
#[derive(Debug, PartialEq)]
struct Version {
    shards: Vec<(String, u64, String)>,
    faces: Vec<(i64, Face)>,
}

/// A face without its id: photo (relative to the folder), box, detector, encoding bits.
type Face = (String, Vec<i32>, String, Vec<u32>);

fn version(env: &TestEnv, folder: &Path) -> Version {
    version_under(env, &format!("file://{}/", folder.display()))
}

/// [`version`] of photos whose URIs start with `prefix`.
fn version_under(env: &TestEnv, prefix: &str) -> Version {
    let shown: Value =
        serde_json::from_str(&env.ok(&["--json", "dataset", "show", "people@v1"])).unwrap();
    let shards = shown["manifest"]["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["path"].as_str().unwrap().to_string(),
                s["rows"].as_u64().unwrap(),
                s["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let faces = env
        .db
        .client()
        .query(
            "SELECT id, image_uri, bbox, detector, encoding FROM faces ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| {
            let uri: String = r.get(1);
            let encoding: Vec<f32> = r.get(4);
            (
                r.get(0),
                (
                    uri.strip_prefix(prefix).unwrap_or(&uri).to_string(),
                    r.get(2),
                    r.get(3),
                    encoding.iter().map(|v| v.to_bits()).collect(),
                ),
            )
        })
        .collect();
    Version { shards, faces }
}

/// A fresh database and S3 server, with the photo folder and dataset root in its scratch space.
fn fresh(rounds: usize) -> (TestEnv, PathBuf, String, usize) {
    let env = TestEnv::new();
    let folder = env.path("photos");
    let photos = write_corpus(&folder, rounds);
    let root = env.path("datasets").display().to_string();
    (env, folder, root, photos)
}

/// The tests of this file take turns: each keeps the cores busy with worker processes, and the
/// `faces add` timing below must not share them with another test's build.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn succeed(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    json_summary(out)
}

#[test]
fn a_build_is_the_same_inline_on_2_processes_and_on_3_single_threaded_ones() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut versions = Vec::new();
    for (runner, workers) in [
        ("inline", "2"),
        ("processes:2", "1"),
        ("processes:3x1", "1"),
    ] {
        let (env, folder, root, photos) = fresh(1);
        let folder_arg = folder.display().to_string();
        let mut args = build_args(&folder_arg, &root, runner, &["-w", workers]);
        args.push("--no-current");
        let report = succeed(&env.run(&args));
        assert_eq!(report["photos"], photos as u64, "{report}");
        assert_eq!(
            (report["encoded"].as_u64(), report["faces"].as_u64()),
            (Some(10), Some(44)),
            "{runner}: {report}"
        );
        assert_eq!(report["duplicates"], 1, "{runner}: {report}");
        assert_eq!(report["failures"].as_array().unwrap().len(), 1, "{report}");
        assert_eq!(report["failed"], 1, "{report}");
        assert_eq!(report["dataset"], "people@v1", "{report}");
        let expected_label = if runner == "processes:2" {
            "processes:2x1"
        } else {
            runner
        };
        let label = report["runner"].as_str().unwrap();
        assert!(label.starts_with(expected_label), "{label}");
        let version = version(&env, &folder);
        // Faces numbered consecutively in photo order, 7 to a shard, the last shard the rest.
        let ids: Vec<i64> = version.faces.iter().map(|f| f.0).collect();
        assert_eq!(ids, (ids[0]..ids[0] + 44).collect::<Vec<_>>());
        let mut photos_in_order: Vec<&str> = version.faces.iter().map(|f| f.1.0.as_str()).collect();
        photos_in_order.dedup();
        let mut sorted = photos_in_order.clone();
        sorted.sort();
        assert_eq!(photos_in_order, sorted, "ids follow the sorted photo list");
        let rows: Vec<u64> = version.shards.iter().map(|s| s.1).collect();
        assert_eq!(rows, [7, 7, 7, 7, 7, 7, 2], "{runner}");
        // The staging area is gone with the build.
        let staging = Path::new(&root).join("people/.builds");
        let left: Vec<_> = walk(&staging);
        assert!(left.is_empty(), "{runner} left {left:?}");
        versions.push((runner, version));
    }
    let (first, reference) = &versions[0];
    for (runner, version) in &versions[1..] {
        assert_eq!(
            version, reference,
            "{runner} made another version than {first}: the same photos must give the same \
             shards (bytes), ids, boxes and encodings"
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let path = e.path();
            if path.is_dir() {
                walk(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

/// The parts a build under `root` has written so far.
fn parts(root: &str) -> Vec<PathBuf> {
    walk(&Path::new(root).join("people/.builds"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/parts/chunk-"))
        .collect()
}

/// Photos in the parts written (each part's photo list).
fn photos_in_parts(root: &str) -> usize {
    parts(root)
        .iter()
        .map(|p| {
            let part: Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
            part["photos"].as_array().unwrap().len()
        })
        .sum()
}

/// Starts the build in the background, its worker processes' rendezvous under `tmp`.
fn spawn_build(env: &TestEnv, args: &[&str], tmp: &Path) -> Child {
    std::fs::create_dir_all(tmp).unwrap();
    env.command(args)
        .env("TMPDIR", tmp)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the build")
}

fn wait_for_parts(root: &str, at_least: usize, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while parts(root).len() < at_least {
        assert!(
            Instant::now() < deadline,
            "no {at_least} parts within 120 s"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the build ended before it wrote {at_least} parts"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn one(env: &TestEnv, sql: &str) -> i64 {
    env.db.client().query_one(sql, &[]).unwrap().get(0)
}

#[test]
fn a_killed_build_resumes_without_encoding_its_finished_chunks_and_ends_as_an_uninterrupted_one() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const ROUNDS: usize = 8;
    // The uninterrupted build everything is compared with.
    let (reference_env, reference_folder, reference_root, photos) = fresh(ROUNDS);
    let folder = reference_folder.display().to_string();
    let reference_report = succeed(&reference_env.run(&build_args(
        &folder,
        &reference_root,
        "inline",
        &["-w", "2"],
    )));
    assert_eq!(reference_report["faces"], 44 * ROUNDS as u64);
    let reference = version(&reference_env, &reference_folder);

    // 1. The driver is killed (SIGKILL) mid-build; its worker dies with it. One worker process
    //    leaves a core to the `faces add` below.
    let (env, env_folder, root, _) = fresh(ROUNDS);
    let folder = env_folder.display().to_string();
    let args = build_args(&folder, &root, "processes:1x1", &[]);
    let tmp = env.path("tmp");
    // The photo `faces add` adds below, and the models read once, as on a machine in use.
    let new_photo = env.path("biden-small.png");
    small_copy("biden.jpg", 400, &new_photo);
    env.ok(&["encode", new_photo.to_str().unwrap()]);
    let mut driver = spawn_build(&env, &args, &tmp);
    let workers = local_workers(&tmp, 1, Instant::now() + Duration::from_secs(60));
    wait_for_parts(&root, 4, &mut driver);

    let deadline = Instant::now() + Duration::from_secs(60);
    while one(
        &env,
        "SELECT coalesce(max(registered_photos), 0)::bigint FROM dataset_builds",
    ) == 0
    {
        assert!(Instant::now() < deadline, "no chunk registered within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    // While it runs: what it registered is invisible, the face-id lock is free within a second
    // every time it is asked, and `faces add` of a new photo goes through with a fresh id.
    let mut waits = Vec::new();
    for _ in 0..10 {
        let mut client = env.db.client();
        let mut tx = client.transaction().unwrap();
        let asked = Instant::now();
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('facematch.face_ids'))",
            &[],
        )
        .unwrap();
        waits.push(asked.elapsed());
        tx.commit().unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let longest = waits.iter().max().unwrap();
    assert!(
        *longest < Duration::from_secs(1),
        "face-id lock waits {waits:?}"
    );
    let added_at = Instant::now();
    let added: Value =
        serde_json::from_str(&env.ok(&["--json", "faces", "add", new_photo.to_str().unwrap()]))
            .unwrap();
    let add_secs = added_at.elapsed().as_secs_f64();
    assert!(
        driver.try_wait().unwrap().is_none(),
        "faces add finished only after the build ({add_secs:.1} s)"
    );
    eprintln!("faces add during the build: {add_secs:.2} s; face-id lock waits {waits:?}");
    // Models loaded, photo read, encoded and registered, beside a busy worker.
    assert!(
        add_secs < 1.0,
        "faces add took {add_secs:.2} s during the build"
    );
    let added_id = added[0]["face_id"].as_i64().unwrap();
    assert_eq!(
        one(&env, "SELECT count(*) FROM faces"),
        1,
        "only the added face is visible while the build runs"
    );
    assert_eq!(one(&env, "SELECT count(*) FROM datasets"), 0);

    kill(driver.id() as i32);
    let _ = driver.wait();
    wait_until_dead(&workers);
    let done_parts = parts(&root).len();
    let done_photos = photos_in_parts(&root);
    assert!(
        done_parts >= 4 && done_photos < photos,
        "{done_parts} parts"
    );
    let row = env
        .db
        .client()
        .query_one(
            "SELECT status, resumable, registered_photos FROM dataset_builds",
            &[],
        )
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, bool>(1)),
        ("RUNNING".to_string(), true),
        "a killed build stays resumable"
    );
    assert_eq!(
        one(&env, "SELECT count(*) FROM datasets"),
        0,
        "no version yet"
    );

    // The same command again resumes it: only the chunks without a part are encoded.
    let resumed = succeed(&env.run(&args));
    assert_eq!(resumed["resumed"], true, "{resumed}");
    assert_eq!(resumed["chunks_reused"], done_parts as u64, "{resumed}");
    let undecodable = 1;
    let copy = 1;
    let expected_now = photos - done_photos;
    let encoded_now = resumed["photos_encoded_now"].as_u64().unwrap() as usize;
    assert!(
        encoded_now <= expected_now && encoded_now + undecodable + copy >= expected_now,
        "{encoded_now} encoded now, {expected_now} photos were left: {resumed}"
    );
    for key in ["encoded", "faces", "known", "duplicates"] {
        assert_eq!(resumed[key], reference_report[key], "{key}: {resumed}");
    }
    let mut resumed_version = version(&env, &env_folder);
    resumed_version.faces.retain(|f| f.0 != added_id);
    assert_eq!(
        resumed_version.shards.len(),
        reference.shards.len(),
        "{resumed}"
    );
    // The added face took an id in the middle of the build's: the build's ids skip it, so
    // compare everything but the ids, and the ids as a set with one gap.
    assert_eq!(
        strip_ids(&resumed_version),
        strip_ids(&reference),
        "the resumed build holds the same faces in the same order"
    );
    let ids: Vec<i64> = resumed_version.faces.iter().map(|f| f.0).collect();
    assert!(ids.windows(2).all(|w| w[1] > w[0]));
    assert_eq!(
        ids.last().unwrap() - ids[0],
        ids.len() as i64,
        "one id in the build's range went to the face added meanwhile"
    );

    // 2. A worker process is killed mid-build: the build stops with an error that says how to go
    //    on, and `--resume` finishes it, equal to the uninterrupted build (ids included: nothing
    //    was added meanwhile).
    let (env, env_folder, root, _) = fresh(ROUNDS);
    let folder = env_folder.display().to_string();
    let args = build_args(&folder, &root, "processes:2x1", &[]);
    let tmp = env.path("tmp");
    let mut driver = spawn_build(&env, &args, &tmp);
    let workers = local_workers(&tmp, 2, Instant::now() + Duration::from_secs(60));
    wait_for_parts(&root, 4, &mut driver);
    kill(workers[1]);
    let out = driver.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("worker process") && stderr.contains("run the same command again"),
        "{stderr}"
    );
    wait_until_dead(&workers);
    let done_parts = parts(&root).len();
    assert_eq!(
        env.db
            .client()
            .query_one("SELECT status, resumable FROM dataset_builds", &[])
            .map(|r| (r.get::<_, String>(0), r.get::<_, bool>(1)))
            .unwrap(),
        ("ERROR".to_string(), true)
    );
    let mut resume_args = args.clone();
    resume_args.push("--resume");
    let resumed = succeed(&env.run(&resume_args));
    assert_eq!(resumed["chunks_reused"], done_parts as u64, "{resumed}");
    assert_eq!(
        version(&env, &env_folder),
        reference,
        "a build resumed after a lost worker equals an uninterrupted one, bit for bit"
    );
    assert_eq!(
        one(&env, "SELECT count(*) FROM build_faces")
            + one(&env, "SELECT count(*) FROM build_images"),
        0,
        "nothing staged is left"
    );
    // Nothing to resume any more.
    let out = env.run(&resume_args);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no interrupted build of people"),
        "{stderr}"
    );
}

/// `name` from the sample photos scaled to `side` pixels on its longest side, as a PNG at `to`.
fn small_copy(name: &str, side: u32, to: &Path) {
    let bytes = std::fs::read(test_photos().join(name)).unwrap();
    let photo = facematch_datasets::face::decode_image(name, &bytes, Default::default()).unwrap();
    let scale = f64::from(side) / f64::from(photo.width().max(photo.height()));
    image::imageops::resize(
        &photo,
        (f64::from(photo.width()) * scale).round() as u32,
        (f64::from(photo.height()) * scale).round() as u32,
        image::imageops::FilterType::Triangle,
    )
    .save(to)
    .unwrap();
}

/// A version without face ids: (photo, box, detector, encoding) in id order, and the shards'
/// row counts.
fn strip_ids(version: &Version) -> (Vec<u64>, Vec<Face>) {
    (
        version.shards.iter().map(|s| s.1).collect(),
        version.faces.iter().map(|f| f.1.clone()).collect(),
    )
}

fn kill(pid: i32) {
    // SAFETY: kill(2) with a pid this test started.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

fn wait_until_dead(pids: &[i32]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| alive(*p) && !zombie(*p)) {
        assert!(
            Instant::now() < deadline,
            "workers {pids:?} outlived the build"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

#[test]
fn an_interrupted_build_is_resumed_only_as_asked_and_fresh_gives_it_up() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (env, folder, root, _) = fresh(1);
    let folder = folder.display().to_string();
    // Workers that cannot start: the build stops before any part, and stays resumable.
    let mut broken = build_args(&folder, &root, "processes:2x1", &[]);
    broken.extend(["--worker-binary", "/nonexistent/facematch"]);
    let out = env.run(&broken);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot start worker process") && stderr.contains("resume"),
        "{stderr}"
    );
    let first = one(&env, "SELECT id FROM dataset_builds WHERE resumable");

    // Other settings are refused, naming both, and change nothing.
    let before = env.db.snapshot();
    let out = env.run(&five(build_args(&folder, &root, "inline", &[])));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("build {first} of people was interrupted"))
            && stderr.contains("\"shard_rows\":7")
            && stderr.contains("\"shard_rows\":5")
            && stderr.contains("--fresh"),
        "{stderr}"
    );
    assert_eq!(
        env.db.snapshot(),
        before,
        "a refused resume changes nothing"
    );

    // --fresh gives it up and builds anew, with the other settings.
    let report = succeed(&env.run(&five(build_args(&folder, &root, "inline", &["--fresh"]))));
    assert_eq!(report["resumed"], false, "{report}");
    assert_eq!(report["faces"], 44, "{report}");
    let row = env
        .db
        .client()
        .query_one(
            "SELECT status, resumable, error FROM dataset_builds WHERE id = $1",
            &[&first],
        )
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, bool>(1)),
        ("ERROR".to_string(), false)
    );
    assert!(row.get::<_, String>(2).contains("--fresh"));
    assert!(parts(&root).is_empty(), "no staging area is left");
    // The same command again starts a new version: the photos are known, nothing to encode.
    let again = succeed(&env.run(&five(build_args(&folder, &root, "inline", &[]))));
    assert_eq!(
        (
            again["resumed"].as_bool(),
            again["photos_encoded_now"].as_u64()
        ),
        (Some(false), Some(0)),
        "{again}"
    );
}

/// `args` asking for 5 faces per shard instead of 7.
fn five(mut args: Vec<&str>) -> Vec<&str> {
    let at = args.iter().position(|a| *a == "--shard-rows").unwrap();
    args[at + 1] = "5";
    args
}

/// The corpus of [`write_corpus`] uploaded to the S3 server under `photos/`: its URI.
fn upload_corpus(env: &TestEnv, rounds: usize) -> (String, usize) {
    let folder = env.path("photos");
    let photos = write_corpus(&folder, rounds);
    let mut stack = vec![folder.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let key = path.strip_prefix(&folder).unwrap().display().to_string();
                env.s3
                    .put(&format!("photos/{key}"), std::fs::read(&path).unwrap());
            }
        }
    }
    (format!("s3://{}/photos", common::BUCKET), photos)
}

/// `--runner emr` for a build, against moto_server (no EMR cluster can exist here, so the test
/// plays it, as tests/emr.rs does for a search): the driver stages the worker bundle — not the
/// portable binary, which has no face pipeline — and the test unpacks the staged archive as the
/// bootstrap action does (tests/bootstrap.rs runs that script for real) and runs the step and
/// the core nodes' pool workers from it. The version must equal an inline build's bit for bit,
/// and photos the cluster cannot read are refused before anything starts.
#[test]
fn a_build_on_emr_stages_the_worker_bundle_and_equals_an_inline_build() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let datasets = format!("s3://{}/datasets", common::BUCKET);
    let inline = TestEnv::new();
    let (photos, count) = upload_corpus(&inline, 1);
    let args = build_args(&photos, &datasets, "inline", &["-w", "2"]);
    let report = succeed(&inline.run(&args));
    assert_eq!(report["photos"], count as u64, "{report}");
    let expected = version_under(&inline, &format!("{photos}/"));
    drop(inline);

    let env = TestEnv::new();
    let moto = common::moto::MotoServer::start();
    let emr_args = [
        "-w",
        "1",
        "--emr-prefix",
        "s3://faces/emr",
        "--emr-core-nodes",
        "2",
        "--emr-poll",
        "100ms",
        "--emr-poll-max",
        "400ms",
        "--emr-timeout",
        "300s",
    ];
    let emr_command = |photos: &str| {
        let mut cmd = env.command(&build_args(photos, &datasets, "emr", &emr_args));
        cmd.env("FACEMATCH_EMR_ENDPOINT", &moto.endpoint);
        cmd
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = moto.emr();
    let clusters = || -> Vec<String> {
        runtime.block_on(async {
            let out = client.list_clusters().send().await.unwrap();
            out.clusters()
                .iter()
                .filter_map(|c| c.id().map(str::to_string))
                .collect()
        })
    };

    // Photos in a local folder cannot reach a cluster: refused before a build or a cluster.
    let local = env.path("local-photos");
    write_corpus(&local, 1);
    let out = emr_command(&local.display().to_string()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("reads the photos from S3"), "{stderr}");
    assert!(clusters().is_empty(), "a refused build started a cluster");
    let builds: i64 = env
        .db
        .client()
        .query_one("SELECT count(*) FROM dataset_builds", &[])
        .unwrap()
        .get(0);
    assert_eq!(builds, 0, "a refused build recorded a build");

    let (photos, _) = upload_corpus(&env, 1);
    let driver = emr_command(&photos)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    // moto lists a cluster before its steps are stored; the step names the run.
    let (cluster_id, bootstrap_args, step_args) = loop {
        assert!(Instant::now() < deadline, "no cluster was started");
        std::thread::sleep(Duration::from_millis(100));
        let Some(id) = clusters().into_iter().next() else {
            continue;
        };
        let found = runtime.block_on(async {
            let actions = client
                .list_bootstrap_actions()
                .cluster_id(&id)
                .send()
                .await
                .ok()?;
            let steps = client.list_steps().cluster_id(&id).send().await.ok()?;
            let action = actions.bootstrap_actions().first()?.args().to_vec();
            let step = steps.steps().first()?.config()?.args().to_vec();
            Some((action, step))
        });
        if let Some((action, step)) = found {
            break (id, action, step);
        }
    };
    // Staged: the bundle, byte for byte, under a name the bootstrap action unpacks.
    let (archive, _) = common::worker_bundle();
    let key = bootstrap_args[0]
        .strip_prefix("s3://faces/")
        .unwrap()
        .to_string();
    assert!(
        key.starts_with("emr/bin/facematch-bundle-") && key.ends_with(".tar.gz"),
        "{key}"
    );
    let staged = env.s3.get(&key);
    assert!(
        staged == std::fs::read(&archive).unwrap(),
        "the staged bundle differs"
    );
    let node = env.path("node");
    std::fs::create_dir_all(&node).unwrap();
    std::fs::write(node.join("bundle.tar.gz"), staged).unwrap();
    let untar = std::process::Command::new("tar")
        .args(["-xzf", "bundle.tar.gz"])
        .current_dir(&node)
        .output()
        .unwrap();
    assert!(
        untar.status.success(),
        "{}",
        String::from_utf8_lossy(&untar.stderr)
    );
    let exe = node.join("facematch-bundle/facematch");

    // Play the cluster from the bundle: the step, and a pool worker per core node.
    let spawn = |args: &[String]| -> Child {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        env.command_of(&exe, &args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    assert_eq!(step_args[0], "/usr/local/bin/facematch");
    let mut step = spawn(&step_args[1..]);
    let worker_args: Vec<String> = bootstrap_args[1..]
        .iter()
        .map(|a| a.replace("{cluster-id}", &cluster_id))
        .collect();
    let mut pool: Vec<Child> = (0..2).map(|_| spawn(&worker_args)).collect();
    let status = step.wait().unwrap();
    for worker in &mut pool {
        let _ = worker.kill();
        let _ = worker.wait();
    }
    let out = driver.wait_with_output().unwrap();
    let mut step_log = String::new();
    std::io::Read::read_to_string(step.stderr.as_mut().unwrap(), &mut step_log).unwrap();
    assert!(status.success(), "process 0: {step_log}");
    let report = succeed(&out);
    assert_eq!(report["encoded"], 10, "{report}");
    assert_eq!(report["faces"], 44, "{report}");
    assert!(
        report["runner"].as_str().unwrap().starts_with("emr:"),
        "{report}"
    );
    assert_eq!(report["workers"], 3, "3 processes of 1 thread: {report}");
    assert_eq!(version_under(&env, &format!("{photos}/")), expected);
    let state = runtime.block_on(async {
        let out = client
            .describe_cluster()
            .cluster_id(&cluster_id)
            .send()
            .await
            .unwrap();
        out.cluster()
            .and_then(|c| c.status())
            .and_then(|s| s.state())
            .cloned()
    });
    assert_eq!(
        state.map(|s| s.as_str().to_string()).as_deref(),
        Some("TERMINATED")
    );
}

/// `--runner hosts:3` for a build, on hosts of their own (network namespaces,
/// tests/common/network.rs): each host runs the unpacked worker bundle's `facematch worker --pool
/// s3://… --serve` with a bare environment — nothing of the face pipeline but what the bundle
/// carries, its models included — and reads the photos from the S3 server across its link. The
/// version must equal an inline build's bit for bit, with one worker process on each host.
#[test]
fn a_build_on_hosts_in_their_own_network_namespaces_runs_the_worker_bundle_and_equals_an_inline_build()
 {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut network = match Network::create() {
        Ok(network) => network,
        Err(why) => {
            println!("SKIPPED: {why}");
            return;
        }
    };
    let datasets = format!("s3://{}/datasets", common::BUCKET);
    let inline = TestEnv::new();
    let (photos, count) = upload_corpus(&inline, 1);
    succeed(&inline.run(&build_args(&photos, &datasets, "inline", &["-w", "2"])));
    let expected = version_under(&inline, &format!("{photos}/"));
    drop(inline);

    let env = TestEnv::with_s3(common::S3Server::start_on(&format!("{SUBNET}.1")));
    let (photos, _) = upload_corpus(&env, 1);
    let (_, bundle) = common::worker_bundle();
    let logs = env.path("logs");
    network.start_workers(&env, &logs, &bundle.join("facematch"));
    let hosts = [
        "-w",
        "1",
        "--pool",
        "s3://faces/pool",
        "--connect-timeout",
        "60",
    ];
    let out = env.run(&build_args(&photos, &datasets, "hosts:3", &hosts));
    let worker_logs: Vec<String> = (0..common::network::HOSTS)
        .map(|h| std::fs::read_to_string(logs.join(format!("worker-{h}.log"))).unwrap_or_default())
        .collect();
    assert!(
        out.status.success(),
        "{}\n{worker_logs:#?}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json_summary(&out);
    assert_eq!(report["photos"], count as u64, "{report}");
    assert_eq!(report["runner"], "hosts:3x1", "{report}");
    assert_eq!(
        version_under(&env, &format!("{photos}/")),
        expected,
        "hosts:3 running the worker bundle builds what inline builds"
    );
    let runs = env.s3.root().join(common::BUCKET).join("pool/runs");
    let run = std::fs::read_dir(&runs)
        .expect("the build's rendezvous under the pool")
        .flatten()
        .next()
        .expect("one run")
        .path();
    let want: Vec<String> = (0..common::network::HOSTS)
        .map(|h| network.address(h))
        .collect();
    assert_eq!(
        common::network::member_hosts(&run),
        want,
        "one worker process on each host"
    );
}
