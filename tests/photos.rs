//! From photos to searches, end to end: `dataset build` over a local folder and over S3 (s3s-fs)
//! with 1 and 2 timely workers, bad photos recorded while the build completes, dedupe by sha256,
//! `faces add`, `search --image` and `stats`, all through the real binary, a real PostgreSQL and
//! dlib's real models on the face_recognition 1.3.0 test photos (fetched by `make setup`).

mod common;

use common::bad_images::{bmp, faceless_bmp, png_bomb};
use common::{TestEnv, test_photos, workspace};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The good photos of the folder, under the actor folder they are in.
const GOOD: [(&str, &str); 5] = [
    ("obama", "obama.jpg"),
    ("obama", "obama2.jpg"),
    ("obama", "obama3.jpg"),
    ("obama", "obama_partial_face.jpg"),
    ("biden", "biden.jpg"),
];

/// The bad photos: file name and the stage it must fail at.
const BAD: [(&str, &str); 5] = [
    ("bad/empty.jpg", "decode"),
    ("bad/not_an_image.jpg", "decode"),
    ("bad/truncated.jpg", "decode"),
    ("bad/bomb.png", "decode"),
    ("bad/no_face.bmp", "no_face"),
];

/// A photo folder: five good photos in actor folders, a byte-identical copy of one, five bad
/// photos, and a text file that is not a photo at all (ignored).
fn photo_files() -> Vec<(String, Vec<u8>)> {
    let read =
        |name: &str| std::fs::read(test_photos().join(name)).expect("sample photo (make setup)");
    let mut files: Vec<(String, Vec<u8>)> = GOOD
        .iter()
        .map(|(actor, name)| (format!("{actor}/{name}"), read(name)))
        .collect();
    files.push(("obama/z_copy_of_obama.jpg".into(), read("obama.jpg")));
    let obama2 = read("obama2.jpg");
    files.extend([
        ("bad/empty.jpg".into(), Vec::new()),
        (
            "bad/not_an_image.jpg".into(),
            b"these are not the pixels you are looking for".to_vec(),
        ),
        (
            "bad/truncated.jpg".into(),
            obama2[..obama2.len() / 3].to_vec(),
        ),
        ("bad/bomb.png".into(), png_bomb()),
        ("bad/no_face.bmp".into(), faceless_bmp(320, 240)),
        ("README.txt".into(), b"not a photo".to_vec()),
    ]);
    files
}

fn write_folder(root: &Path, files: &[(String, Vec<u8>)]) {
    for (key, bytes) in files {
        let path = root.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

fn json(env: &TestEnv, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&env.ok(&all)).expect("JSON output")
}

fn build(env: &TestEnv, images: &str, name: &str, workers: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "dataset",
        "build",
        "--images",
        images,
        "--name",
        name,
        "-w",
        workers,
        "--actors-from-dirs",
    ];
    args.extend_from_slice(extra);
    json(env, &args)
}

/// A face as the database holds it.
#[derive(Debug, Clone, PartialEq)]
struct DbFace {
    id: i64,
    source: String,
    actor: Option<String>,
    image_uri: String,
    sha256: String,
    bbox: Vec<i32>,
    encoding: Vec<f32>,
}

/// Faces first registered by `name`'s versions, in id order.
fn faces_of(env: &TestEnv, name: &str) -> Vec<DbFace> {
    env.db
        .client()
        .query(
            "SELECT f.id, f.source, a.name, f.image_uri, f.image_sha256, f.bbox, f.encoding
               FROM faces f JOIN datasets d ON d.id = f.first_dataset_id
               LEFT JOIN actors a ON a.id = f.actor_id
              WHERE d.name = $1 ORDER BY f.id",
            &[&name],
        )
        .unwrap()
        .iter()
        .map(|r| DbFace {
            id: r.get(0),
            source: r.get(1),
            actor: r.get(2),
            image_uri: r.get(3),
            sha256: r.get(4),
            bbox: r.get(5),
            encoding: r.get(6),
        })
        .collect()
}

/// (photo key relative to the folder, box) → encoding: what must not depend on workers or storage.
fn by_photo(faces: &[DbFace], root_uri: &str) -> BTreeMap<(String, Vec<i32>), Vec<f32>> {
    faces
        .iter()
        .map(|f| {
            let key = f
                .image_uri
                .strip_prefix(root_uri)
                .unwrap_or_else(|| panic!("{} is not under {root_uri}", f.image_uri))
                .trim_start_matches('/')
                .to_string();
            ((key, f.bbox.clone()), f.encoding.clone())
        })
        .collect()
}

/// The faces in a version's shards, read back through `dataset export`.
fn exported(env: &TestEnv, dataset: &str) -> BTreeMap<i64, Vec<f32>> {
    env.ok(&[
        "dataset",
        "export",
        "--dataset",
        dataset,
        "--format",
        "csv",
        "-o",
        "-",
    ])
    .lines()
    .skip(1)
    .map(|line| {
        let mut fields = line.split(',');
        let id = fields.next().unwrap().parse().unwrap();
        let _source = fields.next().unwrap();
        let encoding = fields
            .next()
            .unwrap()
            .split(' ')
            .map(|v| v.parse().unwrap())
            .collect();
        (id, encoding)
    })
    .collect()
}

fn distance(a: &[f32], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - y).powi(2))
        .sum::<f64>()
        .sqrt()
}

fn reference() -> Value {
    let path = workspace().join("datasets/tests/fixtures/face_recognition_1.3.0_test_images.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Checks a first build's report and the failures it recorded.
fn check_first_build(env: &TestEnv, report: &Value, failed_under: &str) {
    assert_eq!(
        report["photos"], 11,
        "11 photos; README.txt is not one: {report}"
    );
    assert_eq!(report["encoded"], 5, "{report}");
    assert_eq!(report["faces"], 5, "{report}");
    assert_eq!(report["duplicates"], 1, "{report}");
    assert_eq!(report["known"], 0, "{report}");
    let failures: BTreeMap<String, (String, String)> = report["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let image = f["image"].as_str().unwrap();
            let key = image
                .strip_prefix(failed_under)
                .unwrap_or_else(|| panic!("{image} not under {failed_under}"))
                .trim_start_matches('/');
            (
                key.to_string(),
                (
                    f["stage"].as_str().unwrap().to_string(),
                    f["message"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect();
    let expected: BTreeMap<String, String> = BAD
        .iter()
        .map(|(k, s)| (k.to_string(), s.to_string()))
        .collect();
    assert_eq!(
        failures
            .iter()
            .map(|(k, (s, _))| (k.clone(), s.clone()))
            .collect::<BTreeMap<_, _>>(),
        expected
    );
    for (key, needle) in [
        ("bad/empty.jpg", "zero bytes"),
        ("bad/not_an_image.jpg", "not an image"),
        ("bad/truncated.jpg", "truncated or corrupt JPEG"),
        ("bad/bomb.png", "50000×50000"),
        ("bad/no_face.bmp", "no face"),
    ] {
        let message = &failures[key].1;
        assert!(
            message.contains(needle) && message.contains(key),
            "{key}: {message}"
        );
    }
    // The same failures are in the database, for this build.
    let build_id = report["build_id"].as_i64().unwrap();
    let mut client = env.db.client();
    let recorded: BTreeSet<(String, String)> = client
        .query(
            "SELECT image_uri, stage FROM build_failures WHERE build_id = $1",
            &[&build_id],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        recorded,
        failures
            .iter()
            .map(|(k, (s, _))| (format!("{failed_under}/{k}"), s.clone()))
            .collect()
    );
    let row = client
        .query_one(
            "SELECT status, encoded, failed, faces, dataset_id IS NOT NULL FROM dataset_builds WHERE id = $1",
            &[&build_id],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "FINISHED");
    assert_eq!(
        (
            row.get::<_, i32>(1),
            row.get::<_, i32>(2),
            row.get::<_, i64>(3)
        ),
        (5, 5, 5)
    );
    assert!(row.get::<_, bool>(4));
}

#[test]
fn a_local_folder_builds_the_same_faces_on_1_and_2_workers_and_a_rebuild_encodes_nothing() {
    let env = TestEnv::new();
    let folder = env.path("photos");
    write_folder(&folder, &photo_files());
    let folder_uri = format!("file://{}", folder.display());
    let root = env.path("datasets");
    let root = root.to_str().unwrap();

    // Two faces per shard: the 2-worker build writes its three shards from both workers.
    let small_shards = ["--dataset-root", root, "--shard-rows", "2"];
    let one = build(&env, folder.to_str().unwrap(), "one", "1", &small_shards);
    let two = build(&env, folder.to_str().unwrap(), "two", "2", &small_shards);
    check_first_build(&env, &one, &folder_uri);
    check_first_build(&env, &two, &folder_uri);
    assert_eq!(
        (one["dataset"].as_str(), two["dataset"].as_str()),
        (Some("one@v1"), Some("two@v1"))
    );

    let (faces_one, faces_two) = (faces_of(&env, "one"), faces_of(&env, "two"));
    assert_eq!(faces_one.len(), 5);
    assert_eq!(
        by_photo(&faces_one, &folder_uri),
        by_photo(&faces_two, &folder_uri),
        "2 workers give the same boxes and encodings as 1"
    );
    // Ids are consecutive in photo order (sorted keys), whatever the number of workers.
    for faces in [&faces_one, &faces_two] {
        let keys: Vec<&str> = faces
            .iter()
            .map(|f| f.image_uri.rsplit('/').next().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "biden.jpg",
                "obama.jpg",
                "obama2.jpg",
                "obama3.jpg",
                "obama_partial_face.jpg"
            ]
        );
        let ids: Vec<i64> = faces.iter().map(|f| f.id - faces[0].id).collect();
        assert_eq!(ids, [0, 1, 2, 3, 4]);
        assert!(
            faces[0].id >= 120_000,
            "photo faces are numbered like the old system's user faces"
        );
        for f in faces.iter() {
            assert_eq!(f.source, "A");
            let expected_actor = if f.image_uri.ends_with("biden.jpg") {
                "biden"
            } else {
                "obama"
            };
            assert_eq!(
                f.actor.as_deref(),
                Some(expected_actor),
                "--actors-from-dirs"
            );
            let bytes = std::fs::read(f.image_uri.strip_prefix("file://").unwrap()).unwrap();
            assert_eq!(f.sha256, facematch_datasets::shard::sha256_hex(&bytes));
        }
    }
    // The shards hold exactly what the database holds, in the same layout whatever the workers.
    for name in ["one@v1", "two@v1"] {
        let shown = json(&env, &["dataset", "show", name]);
        let rows: Vec<i64> = shown["manifest"]["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["rows"].as_i64().unwrap())
            .collect();
        assert_eq!(rows, [2, 2, 1], "{name}");
    }
    for (name, faces) in [("one@v1", &faces_one), ("two@v1", &faces_two)] {
        let in_shards = exported(&env, name);
        let in_db: BTreeMap<i64, Vec<f32>> =
            faces.iter().map(|f| (f.id, f.encoding.clone())).collect();
        assert_eq!(in_shards, in_db, "{name}");
    }

    // Parity with Python face_recognition: same box, encoding within 1e-3 (measured: ≤ 6e-7).
    let reference = reference();
    for face in &faces_one {
        let file = face.image_uri.rsplit('/').next().unwrap();
        let expected = &reference["images"][file]["faces"][0];
        let trbl: Vec<i32> =
            serde_json::from_value(expected["top_right_bottom_left"].clone()).unwrap();
        assert_eq!(
            face.bbox,
            [trbl[3], trbl[0], trbl[1], trbl[2]],
            "{file}: box"
        );
        let encoding: Vec<f64> = serde_json::from_value(expected["encoding_5pt"].clone()).unwrap();
        let d = distance(&face.encoding, &encoding);
        assert!(d < 1e-3, "{file}: distance to the reference {d}");
    }

    // A second build of the same folder encodes nothing and makes no version; the photos that
    // could not be decoded are tried (and recorded) again, the faceless one is known.
    let again = build(&env, folder.to_str().unwrap(), "one", "2", &small_shards);
    assert_eq!(again["encoded"], 0, "{again}");
    assert_eq!(again["faces"], 0, "{again}");
    assert_eq!(
        again["known"], 7,
        "5 photos with a face, the faceless one, and the copy of obama.jpg (known before it \
         could repeat anything): {again}"
    );
    assert_eq!(again["duplicates"], 0, "{again}");
    assert_eq!(again["failures"].as_array().unwrap().len(), 4, "{again}");
    assert_eq!(again["failed"], 4, "{again}");
    assert_eq!(again["dataset"], Value::Null);
    let versions: i64 = env
        .db
        .client()
        .query_one("SELECT count(*) FROM datasets WHERE name = 'one'", &[])
        .unwrap()
        .get(0);
    assert_eq!(versions, 1);

    // A new photo makes a new version: the old shards plus one with the new face.
    let mut new_photo = std::fs::read(test_photos().join("obama3.jpg")).unwrap();
    new_photo.extend(b"trailing bytes make it a different file");
    std::fs::write(folder.join("obama/obama3_again.jpg"), new_photo).unwrap();
    let third = build(&env, folder.to_str().unwrap(), "one", "2", &small_shards);
    assert_eq!(
        (third["encoded"].as_i64(), third["faces"].as_i64()),
        (Some(1), Some(1)),
        "{third}"
    );
    assert_eq!(third["dataset"], "one@v2");
    let v1: Value = json(&env, &["dataset", "show", "one@v1"]);
    let v2: Value = json(&env, &["dataset", "show", "one@v2"]);
    let paths = |v: &Value| -> Vec<String> {
        v["manifest"]["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["path"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(v2["manifest"]["count"], 6);
    assert_eq!(
        paths(&v2)[..paths(&v1).len()],
        paths(&v1)[..],
        "v2 reuses v1's shards"
    );
    assert_eq!(paths(&v2).len(), paths(&v1).len() + 1);
    let v2_faces = exported(&env, "one@v2");
    assert_eq!(v2_faces.len(), 6);
    let last = faces_of(&env, "one").last().cloned().unwrap();
    assert!(last.image_uri.ends_with("obama3_again.jpg"));
    assert_eq!(
        last.id,
        faces_one[4].id.max(faces_two[4].id) + 1,
        "ids continue after every id in use"
    );
    let obama3 = faces_one
        .iter()
        .find(|f| f.image_uri.ends_with("/obama3.jpg"))
        .unwrap();
    assert_eq!(
        last.encoding, obama3.encoding,
        "the same pixels give the same encoding"
    );
}

#[test]
fn an_s3_prefix_builds_the_same_faces_as_a_local_folder() {
    let env = TestEnv::new();
    let files = photo_files();
    for (key, bytes) in &files {
        env.s3.put(&format!("photos/{key}"), bytes.clone());
    }
    let folder = env.path("photos");
    write_folder(&folder, &files);

    let s3 = build(&env, "s3://faces/photos", "from_s3", "2", &[]);
    check_first_build(&env, &s3, "s3://faces/photos");
    let local_root = env.path("datasets");
    let local = build(
        &env,
        folder.to_str().unwrap(),
        "from_folder",
        "1",
        &["--dataset-root", local_root.to_str().unwrap()],
    );
    check_first_build(&env, &local, &format!("file://{}", folder.display()));
    assert_eq!(
        by_photo(&faces_of(&env, "from_s3"), "s3://faces/photos"),
        by_photo(
            &faces_of(&env, "from_folder"),
            &format!("file://{}", folder.display())
        ),
    );
    // The version is on S3: shards and manifest listed through the S3 API, and readable.
    let objects = env.s3.list("datasets/from_s3/v1/");
    assert!(
        objects.iter().any(|k| k.ends_with("manifest.json")),
        "{objects:?}"
    );
    assert!(
        objects.iter().any(|k| k.ends_with(".parquet")),
        "{objects:?}"
    );
    assert_eq!(exported(&env, "from_s3@v1").len(), 5);

    // The same build through an S3 failing one request in five (500, 503 SlowDown, dropped
    // connections, bodies cut short; tests/common/faults.rs): the same faces, bit for bit.
    env.s3.faults.set_per_mille(200);
    let requests = env.s3.faults.requests();
    build(&env, "s3://faces/photos", "through_faults", "2", &[]);
    let injected: u64 = env.s3.faults.injected().iter().sum();
    env.s3.faults.set_per_mille(0);
    println!(
        "photo build survived {injected} S3 faults in {} requests",
        env.s3.faults.requests() - requests
    );
    assert!(injected > 0);
    assert_eq!(
        by_photo(&faces_of(&env, "through_faults"), "s3://faces/photos"),
        by_photo(&faces_of(&env, "from_s3"), "s3://faces/photos"),
    );
    assert_eq!(
        exported(&env, "through_faults@v1")
            .into_values()
            .collect::<Vec<_>>(),
        exported(&env, "from_s3@v1")
            .into_values()
            .collect::<Vec<_>>(),
    );

    // A photo on S3 added as a user face, kept in an image store on S3.
    let mut upload = files[1].1.clone();
    upload.extend(b"uploaded");
    env.s3.put("uploads/me.jpg", upload.clone());
    let added = json(
        &env,
        &[
            "faces",
            "add",
            "--image-store",
            "s3://faces/store",
            "--user",
            "carol",
            "s3://faces/uploads/me.jpg",
        ],
    );
    assert_eq!(
        (added[0]["known"].as_bool(), added[0]["source"].as_str()),
        (Some(false), Some("U")),
        "{added}"
    );
    let sha = facematch_datasets::shard::sha256_hex(&upload);
    let stored = format!("store/{}/{sha}.jpg", &sha[..2]);
    assert_eq!(env.s3.list("store/"), std::slice::from_ref(&stored));
    assert_eq!(added[0]["image_uri"], format!("s3://faces/{stored}"));
}

#[test]
fn faces_add_search_by_photo_and_stats() {
    let env = TestEnv::new();
    let root = env.path("datasets");
    let built = build(
        &env,
        test_photos().to_str().unwrap(),
        "sample",
        "2",
        &["--dataset-root", root.to_str().unwrap()],
    );
    assert_eq!(built["dataset"], "sample@v1", "{built}");

    // One Obama photo finds the other five Obama photos (32bit.png is one too) before Biden.
    let result = json(
        &env,
        &[
            "search",
            "--image",
            test_photos().join("obama.jpg").to_str().unwrap(),
            "--max-results",
            "6",
        ],
    );
    assert_eq!(result["status"], "FINISHED", "{result}");
    let found: Vec<String> = result["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            i["label"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    let others: BTreeSet<String> = [
        "32bit.png",
        "obama2.jpg",
        "obama3.jpg",
        "obama_partial_face.jpg",
        "obama_partial_face2.jpg",
    ]
    .map(String::from)
    .into();
    assert_eq!(
        found[..5].iter().cloned().collect::<BTreeSet<_>>(),
        others,
        "{result}"
    );
    assert_eq!(found[5], "biden.jpg", "{result}");
    let mut client = env.db.client();
    let obama_face: i64 = client
        .query_one(
            "SELECT id FROM faces WHERE image_uri LIKE '%/obama.jpg'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        result["in_face_id"], obama_face,
        "a known photo is not encoded or added again"
    );
    let count = |client: &mut postgres::Client| -> i64 {
        client
            .query_one("SELECT count(*) FROM faces", &[])
            .unwrap()
            .get(0)
    };
    let faces_before = count(&mut client);

    // A new photo of a user: one face, source U, its photo kept in the image store.
    let mut photo = std::fs::read(test_photos().join("biden.jpg")).unwrap();
    photo.extend(b"a user's upload");
    let upload = env.path("upload.jpg");
    std::fs::write(&upload, &photo).unwrap();
    let added = json(
        &env,
        &["faces", "add", "--user", "alice", upload.to_str().unwrap()],
    );
    assert_eq!(added.as_array().unwrap().len(), 1, "{added}");
    assert_eq!(
        (added[0]["source"].as_str(), added[0]["known"].as_bool()),
        (Some("U"), Some(false))
    );
    let sha = facematch_datasets::shard::sha256_hex(&photo);
    let row = client
        .query_one(
            "SELECT f.source, u.username, f.image_sha256, f.image_uri, f.bbox FROM faces f JOIN users u ON u.id = f.user_id WHERE f.id = $1",
            &[&added[0]["face_id"].as_i64().unwrap()],
        )
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        ("U".into(), "alice".into())
    );
    assert_eq!(row.get::<_, String>(2), sha);
    let stored = row.get::<_, String>(3);
    assert_eq!(
        std::fs::read(stored.strip_prefix("file://").unwrap()).unwrap(),
        photo,
        "kept as uploaded"
    );
    assert_eq!(
        row.get::<_, Vec<i32>>(4),
        [419, 241, 740, 562],
        "biden.jpg's box"
    );
    assert_eq!(count(&mut client), faces_before + 1);

    // The same bytes again: known, not encoded, nothing new.
    let again = json(
        &env,
        &["faces", "add", "--user", "alice", upload.to_str().unwrap()],
    );
    assert_eq!(
        (again[0]["face_id"].clone(), again[0]["known"].as_bool()),
        (added[0]["face_id"].clone(), Some(true))
    );
    assert_eq!(count(&mut client), faces_before + 1);

    // No face, or one bad photo among good ones: a clear error and nothing written.
    let faceless = env.path("faceless.bmp");
    std::fs::write(&faceless, faceless_bmp(200, 150)).unwrap();
    let mut other = std::fs::read(test_photos().join("obama2.jpg")).unwrap();
    other.extend(b"another upload");
    let good = env.path("good.jpg");
    std::fs::write(&good, other).unwrap();
    for images in [vec![&faceless], vec![&good, &faceless]] {
        let mut args = vec!["faces", "add", "--user", "bob"];
        args.extend(images.iter().map(|p| p.to_str().unwrap()));
        let out = env.run(&args);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("faceless.bmp") && stderr.contains("no face found"),
            "{stderr}"
        );
    }
    assert_eq!(count(&mut client), faces_before + 1);
    let bob: i64 = client
        .query_one("SELECT count(*) FROM users WHERE username = 'bob'", &[])
        .unwrap()
        .get(0);
    assert_eq!(bob, 0);
    let store_files = walk(&env.path("image-store"));
    assert_eq!(
        store_files.len(),
        1,
        "only alice's photo is stored: {store_files:?}"
    );

    // A photo with two faces (Obama and Biden side by side): both, or the largest with --largest.
    let pair = env.path("pair.bmp");
    std::fs::write(&pair, side_by_side("obama.jpg", "biden.jpg")).unwrap();
    let both = json(
        &env,
        &["faces", "add", "--actor", "pair", pair.to_str().unwrap()],
    );
    let boxes: Vec<Vec<i64>> = both
        .as_array()
        .unwrap()
        .iter()
        .map(|f| serde_json::from_value(f["bbox"].clone()).unwrap())
        .collect();
    assert_eq!(boxes.len(), 2, "{both}");
    let area = |b: &Vec<i64>| (b[2] - b[0] + 1) * (b[3] - b[1] + 1);
    let mut same_pixels = std::fs::read(&pair).unwrap();
    same_pixels.extend(b"same pixels, another file");
    let pair2 = env.path("pair2.bmp");
    std::fs::write(&pair2, same_pixels).unwrap();
    let largest = json(
        &env,
        &["faces", "add", "--largest", pair2.to_str().unwrap()],
    );
    assert_eq!(largest.as_array().unwrap().len(), 1, "{largest}");
    let kept: Vec<i64> = serde_json::from_value(largest[0]["bbox"].clone()).unwrap();
    assert_eq!(area(&kept), boxes.iter().map(area).max().unwrap());
    assert!(
        kept[0] >= 910,
        "Biden's face, on the right, is the larger: {kept:?}"
    );
    assert_eq!(count(&mut client), faces_before + 4);

    // stats: counts per source, and the mean encoding equals an f64 mean of the exported shards.
    let stats = json(&env, &["stats"]);
    assert_eq!(stats["faces"], faces_before + 4);
    let sources: BTreeMap<String, i64> = stats["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["source"].as_str().unwrap().to_string(),
                s["faces"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        sources,
        BTreeMap::from([("A".into(), faces_before + 2), ("U".into(), 2)]),
        "the pair's two actor faces; alice's and the anonymous upload's user faces"
    );
    let shards = exported(&env, "sample@v1");
    let mut mean = vec![0f64; 128];
    for encoding in shards.values() {
        for (m, v) in mean.iter_mut().zip(encoding) {
            *m += f64::from(*v) / shards.len() as f64;
        }
    }
    let reported: Vec<f64> = serde_json::from_value(stats["mean_encoding"].clone()).unwrap();
    assert_eq!(stats["dataset_faces"], shards.len());
    for (a, b) in reported.iter().zip(&mean) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
}

/// Two test photos side by side (top-aligned, black elsewhere) as one BMP.
fn side_by_side(left: &str, right: &str) -> Vec<u8> {
    let decode = |name: &str| {
        let bytes = std::fs::read(test_photos().join(name)).unwrap();
        facematch_datasets::face::decode_image(name, &bytes, Default::default()).unwrap()
    };
    let (a, b) = (decode(left), decode(right));
    let (width, height) = (a.width() + b.width(), a.height().max(b.height()));
    bmp(width, height, |x, y| {
        let (image, x) = if x < a.width() {
            (&a, x)
        } else {
            (&b, x - a.width())
        };
        if y < image.height() {
            image.get_pixel(x, y).0
        } else {
            [0, 0, 0]
        }
    })
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.path().is_dir() {
                files.extend(walk(&entry.path()));
            } else {
                files.push(entry.path());
            }
        }
    }
    files
}

/// Sample photo `name` scaled to fit `side` pixels and turned `degrees` about its centre onto a
/// canvas that holds all of it (black where nothing of the photo is), bilinear, as a BMP.
fn turned(name: &str, side: u32, degrees: f64) -> Vec<u8> {
    let bytes = std::fs::read(test_photos().join(name)).unwrap();
    let photo = facematch_datasets::face::decode_image(name, &bytes, Default::default()).unwrap();
    let scale = f64::from(side) / f64::from(photo.width().max(photo.height()));
    let small = image::imageops::resize(
        &photo,
        (f64::from(photo.width()) * scale).round() as u32,
        (f64::from(photo.height()) * scale).round() as u32,
        image::imageops::FilterType::Triangle,
    );
    let (w, h) = (f64::from(small.width()), f64::from(small.height()));
    let (sin, cos) = degrees.to_radians().sin_cos();
    let (out_w, out_h) = (
        (w * cos.abs() + h * sin.abs()).ceil(),
        (w * sin.abs() + h * cos.abs()).ceil(),
    );
    bmp(out_w as u32, out_h as u32, |x, y| {
        // Where this output pixel comes from in the photo (the inverse rotation).
        let (dx, dy) = (
            f64::from(x) + 0.5 - out_w / 2.0,
            f64::from(y) + 0.5 - out_h / 2.0,
        );
        let sx = cos * dx - sin * dy + w / 2.0 - 0.5;
        let sy = sin * dx + cos * dy + h / 2.0 - 0.5;
        if sx < 0.0 || sy < 0.0 || sx > w - 1.0 || sy > h - 1.0 {
            return [0, 0, 0];
        }
        let (x0, y0) = (sx.floor() as u32, sy.floor() as u32);
        let (x1, y1) = (
            (x0 + 1).min(small.width() - 1),
            (y0 + 1).min(small.height() - 1),
        );
        let (fx, fy) = (sx - sx.floor(), sy - sy.floor());
        let at = |x: u32, y: u32, c: usize| f64::from(small.get_pixel(x, y).0[c]);
        std::array::from_fn(|c| {
            let top = at(x0, y0, c) * (1.0 - fx) + at(x1, y0, c) * fx;
            let bottom = at(x0, y1, c) * (1.0 - fx) + at(x1, y1, c) * fx;
            (top * (1.0 - fy) + bottom * fy).round() as u8
        })
    })
}

/// Each face of `dataset`'s photos as (photo key, detector), in id order.
fn detectors_of(env: &TestEnv, dataset: &str) -> Vec<(String, Option<String>)> {
    env.db
        .client()
        .query(
            "SELECT f.image_uri, f.detector FROM faces f JOIN datasets d ON d.id = f.first_dataset_id
              WHERE d.name = $1 ORDER BY f.id",
            &[&dataset],
        )
        .unwrap()
        .iter()
        .map(|r| {
            let uri: String = r.get(0);
            let key = uri.rsplit('/').next().unwrap_or_default().to_string();
            (key, r.get(1))
        })
        .collect()
}

#[test]
fn auto_detection_asks_the_cnn_only_where_hog_finds_no_face() {
    let env = TestEnv::new();
    let dir = env.path("turned");
    write_folder(
        &dir,
        &[
            (
                "biden.jpg".into(),
                std::fs::read(test_photos().join("biden.jpg")).unwrap(),
            ),
            (
                "obama2.jpg".into(),
                std::fs::read(test_photos().join("obama2.jpg")).unwrap(),
            ),
            // Turned 50°: past what HOG's frontal detector finds; dlib's CNN still finds it.
            ("turned.bmp".into(), turned("obama.jpg", 600, 50.0)),
        ],
    );
    let folder = dir.to_str().unwrap();
    let hog = json(
        &env,
        &[
            "dataset",
            "build",
            "--images",
            folder,
            "--name",
            "hog",
            "--detector",
            "hog",
        ],
    );
    assert_eq!(hog["faces"], 2, "HOG misses the turned face: {hog}");
    let auto = json(
        &env,
        &["dataset", "build", "--images", folder, "--name", "auto"],
    );
    assert_eq!(
        auto["faces"], 3,
        "auto is the default and finds all three: {auto}"
    );
    let found = detectors_of(&env, "auto");
    let detector = |key: &str| {
        found
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, d)| d.clone().unwrap_or_default())
            .collect::<Vec<_>>()
    };
    assert_eq!(detector("turned.bmp"), ["cnn"], "{found:?}");
    assert_eq!(detector("biden.jpg"), ["hog"], "{found:?}");
    assert_eq!(detector("obama2.jpg"), ["hog"], "{found:?}");
    // The photos HOG handles never reach the CNN: their faces are the HOG build's, bit for bit.
    let hog_faces = by_photo(&faces_of(&env, "hog"), "");
    let auto_faces: BTreeMap<_, _> = by_photo(&faces_of(&env, "auto"), "")
        .into_iter()
        .filter(|((key, _), _)| !key.ends_with("turned.bmp"))
        .collect();
    assert_eq!(auto_faces, hog_faces);
}
