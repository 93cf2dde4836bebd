//! `facematch serve` through its HTTP API, as an application uses it: a real server process
//! over a dataset built from the face_recognition photos, a real Postgres and S3 server, every
//! endpoint and its errors (each a JSON message, each leaving the database and the image store
//! as they were), server-sent events following a search, the token and the bind address.

mod common;

use common::reference::{self, RefFace, RefQuery};
use common::server::{Server, build_test_photos};
use common::{TestEnv, test_photos};
use reqwest::StatusCode;
use reqwest::blocking::{Client, multipart};
use serde_json::{Value, json};
use sha2::Digest;
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

fn http() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// `POST /api/searches` with `body` as JSON.
fn post_search(client: &Client, server: &Server, body: &Value) -> reqwest::blocking::Response {
    client
        .post(server.at("/api/searches"))
        .json(body)
        .send()
        .unwrap()
}

fn photo_form(name: &str, bytes: Vec<u8>) -> multipart::Form {
    multipart::Form::new().part(
        "photo",
        multipart::Part::bytes(bytes).file_name(name.to_string()),
    )
}

/// The photos, faces and stored files: what a failed upload must leave as it was.
fn footprint(env: &TestEnv) -> (i64, i64, Vec<String>) {
    let mut client = env.db.client();
    let faces = client
        .query_one("SELECT count(*) FROM faces", &[])
        .unwrap()
        .get(0);
    let images = client
        .query_one("SELECT count(*) FROM images", &[])
        .unwrap()
        .get(0);
    let mut files: Vec<String> = walk(&env.path("image-store"));
    files.sort();
    (faces, images, files)
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flat_map(|e| {
            let path = e.unwrap().path();
            if path.is_dir() {
                walk(&path)
            } else {
                vec![path.display().to_string()]
            }
        })
        .collect()
}

/// Asserts a JSON error with `status` whose message contains `needle`.
fn assert_error(response: reqwest::blocking::Response, status: StatusCode, needle: &str) {
    assert_eq!(response.status(), status);
    let body: Value = response.json().expect("errors are JSON");
    let message = body["error"].as_str().expect("an error message");
    assert!(
        message.contains(needle),
        "{message:?} does not say {needle:?}"
    );
}

/// Polls `GET /api/searches/{id}` until it has ended.
fn wait_finished(server: &Server, id: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let view: Value = http()
            .get(server.at(&format!("/api/searches/{id}")))
            .send()
            .unwrap()
            .json()
            .unwrap();
        if view["status"] == "FINISHED" || view["status"] == "ERROR" {
            return view;
        }
        assert!(Instant::now() < deadline, "search {id} never ended: {view}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The faces of the dataset version (an upload's faces are registered, not in a version).
fn version_faces(env: &TestEnv) -> Vec<RefFace> {
    env.ref_faces("WHERE f.first_dataset_id IS NOT NULL ORDER BY f.id", &[])
}

/// A photo no dataset holds: obama.jpg mirrored (a JPEG under the 1 MB limit of the test).
fn new_photo() -> Vec<u8> {
    let original = image::open(test_photos().join("obama.jpg")).unwrap();
    let mut out = std::io::Cursor::new(Vec::new());
    original
        .fliph()
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .unwrap();
    out.into_inner()
}

#[test]
fn the_api_answers_every_endpoint_and_says_what_was_wrong() {
    let env = TestEnv::new();
    build_test_photos(&env);
    let server = Server::start(&env, &["--upload-limit-mb", "1"], &[]);
    let client = http();

    // Health and the OpenAPI document.
    let health: Value = client
        .get(server.at("/health"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health["database"], "ok");
    assert_eq!(health["dataset"], "photos@v1");
    let doc: Value = client
        .get(server.at("/api/openapi.json"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    for path in [
        "/api/photos",
        "/api/searches/{id}/events",
        "/api/searches/events",
        "/api/stats",
        "/health",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }

    // A known photo answers with its faces, without encoding anything.
    let obama2 = std::fs::read(test_photos().join("obama2.jpg")).unwrap();
    let sha = hex::encode(sha2::Sha256::digest(&obama2));
    let before = footprint(&env);
    let known = client
        .post(server.at("/api/photos"))
        .multipart(photo_form("obama2.jpg", obama2))
        .send()
        .unwrap();
    assert_eq!(known.status(), StatusCode::OK);
    let known: Value = known.json().unwrap();
    assert_eq!(known["known"], true);
    assert_eq!(known["sha256"], sha);
    let faces = known["faces"].as_array().unwrap();
    assert_eq!(faces.len(), 1);
    assert_eq!(faces[0]["encoding"].as_array().unwrap().len(), 128);
    assert_eq!(footprint(&env), before, "a known photo changed something");
    let query_face = faces[0]["face_id"].as_i64().unwrap();

    // A new photo: encoded, stored, registered; its encoding is `facematch encode`'s.
    let photo = new_photo();
    std::fs::write(env.path("mirrored.jpg"), &photo).unwrap();
    let created = client
        .post(server.at("/api/photos"))
        .multipart(photo_form("mirrored.jpg", photo.clone()))
        .send()
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().unwrap();
    assert_eq!(created["known"], false);
    let encoded: Value = serde_json::from_str(&env.ok(&[
        "--json",
        "encode",
        env.path("mirrored.jpg").to_str().unwrap(),
    ]))
    .unwrap();
    let want = &encoded[0]["faces"][0]["encoding"];
    let got = &created["faces"][0]["encoding"];
    let (want, got): (Vec<f64>, Vec<f64>) = (
        serde_json::from_value(want.clone()).unwrap(),
        serde_json::from_value(got.clone()).unwrap(),
    );
    assert_eq!(want.len(), 128);
    for (w, g) in want.iter().zip(&got) {
        assert!((w - g).abs() < 1e-6, "upload encoding {g} vs encode's {w}");
    }
    let after_new = footprint(&env);
    assert_eq!(after_new.0, before.0 + 1, "one new face");
    assert_eq!(
        after_new.2.len(),
        before.2.len() + 1,
        "the photo is kept in the image store"
    );
    // The same photo again is known: same face, nothing new.
    let again: Value = client
        .post(server.at("/api/photos"))
        .multipart(photo_form("again.jpg", photo))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(again["known"], true);
    assert_eq!(again["faces"][0]["face_id"], created["faces"][0]["face_id"]);
    assert_eq!(footprint(&env), after_new);
    let by_sha: Value = client
        .get(server.at(&format!(
            "/api/photos/{}",
            created["sha256"].as_str().unwrap()
        )))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(by_sha["faces"], created["faces"]);

    // Bad uploads: each a clear JSON error, nothing stored.
    let text = multipart::Form::new().text("user", "alice");
    assert_error(
        client
            .post(server.at("/api/photos"))
            .multipart(text)
            .send()
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "`photo`",
    );
    assert_error(
        client
            .post(server.at("/api/photos"))
            .multipart(photo_form("notes.jpg", b"not a photo at all".to_vec()))
            .send()
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "notes.jpg",
    );
    let mut blank = std::io::Cursor::new(Vec::new());
    image::RgbImage::new(200, 200)
        .write_to(&mut blank, image::ImageFormat::Png)
        .unwrap();
    assert_error(
        client
            .post(server.at("/api/photos"))
            .multipart(photo_form("blank.png", blank.into_inner()))
            .send()
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "no face",
    );
    let huge = vec![0xffu8; 2 * 1024 * 1024];
    assert_error(
        client
            .post(server.at("/api/photos"))
            .multipart(photo_form("huge.jpg", huge))
            .send()
            .unwrap(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "upload",
    );
    assert_eq!(footprint(&env), after_new, "a bad upload stored something");
    assert_error(
        client.get(server.at("/api/photos/abc")).send().unwrap(),
        StatusCode::BAD_REQUEST,
        "sha256",
    );
    assert_error(
        client
            .get(server.at(&format!("/api/photos/{}", "0".repeat(64))))
            .send()
            .unwrap(),
        StatusCode::NOT_FOUND,
        "sha256",
    );

    // A search: queued, answered by the engine, equal to the f64 reference.
    let created = post_search(
        &client,
        &server,
        &json!({ "face_id": query_face, "method": "euclidean", "max_results": 6 }),
    );
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().unwrap();
    let id = created["id"].as_i64().unwrap();
    let view = wait_finished(&server, id);
    assert_eq!(view["status"], "FINISHED", "{view}");
    assert!(
        view["run_params"]
            .as_str()
            .unwrap()
            .contains("runner=resident:2"),
        "{view}"
    );
    let faces = version_faces(&env);
    let query = faces.iter().find(|f| f.id == query_face).unwrap();
    let want = reference::top_n(
        &faces,
        &RefQuery {
            method: "euclidean",
            filter: "all",
            max_results: 6,
            exclude: Some(query_face),
            max_distance: None,
            encoding: query.encoding.clone(),
        },
    );
    let got: Vec<(i64, f64)> = view["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["face_id"].as_i64().unwrap(), i["score"].as_f64().unwrap()))
        .collect();
    reference::assert_same(&got, &want, "the API's search");
    let first = &view["items"][0];
    assert!(first["match_percent"].as_f64().unwrap() > 0.0);
    assert!(
        first["image_uri"]
            .as_str()
            .unwrap()
            .contains("face_recognition"),
        "{first}"
    );

    // Search errors.
    let post = |body: Value| post_search(&client, &server, &body);
    assert_error(
        post(json!({ "face_id": 987654321 })),
        StatusCode::NOT_FOUND,
        "face 987654321",
    );
    assert_error(
        post(json!({ "face_id": query_face, "max_results": 0 })),
        StatusCode::BAD_REQUEST,
        "max_results",
    );
    assert_error(
        post(json!({ "face_id": query_face, "method": "manhattan" })),
        StatusCode::BAD_REQUEST,
        "manhattan",
    );
    assert_error(
        post(json!({ "face_id": query_face, "colour": "red" })),
        StatusCode::BAD_REQUEST,
        "colour",
    );
    assert_error(
        client
            .post(server.at("/api/searches"))
            .body("{")
            .header("content-type", "application/json")
            .send()
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "not a search request",
    );
    assert_error(
        client.get(server.at("/api/searches/99999")).send().unwrap(),
        StatusCode::NOT_FOUND,
        "99999",
    );
    assert_error(
        client.get(server.at("/api/searches/abc")).send().unwrap(),
        StatusCode::BAD_REQUEST,
        "abc",
    );
    assert_error(
        client.get(server.at("/api/nothing-here")).send().unwrap(),
        StatusCode::NOT_FOUND,
        "/api/nothing-here",
    );

    // A method an endpoint does not take is a JSON error too.
    assert_error(
        client.get(server.at("/api/searches")).send().unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
        "GET",
    );
    assert_error(
        client
            .delete(server.at(&format!("/api/searches/{id}")))
            .send()
            .unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
        "DELETE",
    );

    // Stats: the database's counts and the version's mean encoding, in f64.
    let stats: Value = client
        .get(server.at("/api/stats"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(stats["faces"], after_new.0);
    assert_eq!(stats["dataset"], "photos@v1");
    let version = version_faces(&env);
    assert_eq!(stats["dataset_faces"], version.len());
    let mean = stats["mean_encoding"].as_array().unwrap();
    for (d, m) in mean.iter().enumerate() {
        let want = version
            .iter()
            .map(|f| f64::from(f.encoding[d]))
            .sum::<f64>()
            / version.len() as f64;
        assert!(
            (m.as_f64().unwrap() - want).abs() < 1e-9,
            "mean[{d}] {m} vs {want}"
        );
    }

    // Crops by face id only: a JPEG of the face; a path never reaches the file system.
    let crop = client
        .get(server.at(&format!("/faces/{query_face}/crop")))
        .send()
        .unwrap();
    assert_eq!(crop.status(), StatusCode::OK);
    assert_eq!(crop.headers()["content-type"], "image/jpeg");
    let crop = image::load_from_memory(&crop.bytes().unwrap()).unwrap();
    assert_eq!((crop.width(), crop.height()), (160, 160));
    for bad in [
        "/faces/..%2F..%2Fetc%2Fpasswd/crop",
        "/faces/1e3/crop",
        "/photos/..%2F..%2Fetc%2Fpasswd/view",
    ] {
        let status = client.get(server.at(bad)).send().unwrap().status();
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND,
            "{bad}: {status}"
        );
    }

    // A face imported as an encoding has no photo: its crop is a labelled placeholder.
    let encoding: Vec<f32> = (0..128).map(|i| ((i % 7) as f32 - 3.0) / 10.0).collect();
    std::fs::write(
        env.path("imported.jsonl"),
        format!(
            "{}\n",
            json!({ "face_id": 5_000_000, "source": "U", "encoding": encoding })
        ),
    )
    .unwrap();
    env.ok(&[
        "dataset",
        "import",
        env.path("imported.jsonl").to_str().unwrap(),
        "--name",
        "imported",
        "--no-current",
    ]);
    let placeholder = client.get(server.at("/faces/5000000/crop")).send().unwrap();
    assert_eq!(placeholder.status(), StatusCode::OK);
    assert_eq!(placeholder.headers()["content-type"], "image/svg+xml");
    let svg = placeholder.text().unwrap();
    assert!(
        svg.contains("face 5000000") && svg.contains("no photo"),
        "{svg}"
    );
    assert_error(
        client
            .get(server.at("/faces/777777777/crop"))
            .send()
            .unwrap(),
        StatusCode::NOT_FOUND,
        "777777777",
    );

    // The report: one self-contained file, every crop inline.
    let report = env.path("report.html");
    let printed = env.ok(&["report", &id.to_string(), "-o", report.to_str().unwrap()]);
    assert_eq!(printed.trim(), report.to_str().unwrap());
    let html = std::fs::read_to_string(&report).unwrap();
    let crops: Vec<&str> = html
        .split("src=\"data:image/jpeg;base64,")
        .skip(1)
        .collect();
    assert_eq!(crops.len(), 1 + 6, "the query's crop and six results");
    assert!(
        !html.contains("src=\"/") && !html.contains("href=\"/"),
        "the report links to the server"
    );
    use base64::Engine;
    let first = crops[0].split('"').next().unwrap();
    let jpeg = base64::engine::general_purpose::STANDARD
        .decode(first)
        .unwrap();
    let decoded = image::load_from_memory(&jpeg).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (160, 160));
    let unknown = env.run(&[
        "report",
        "99999",
        "-o",
        env.path("none.html").to_str().unwrap(),
    ]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("search 99999 does not exist"));
    assert!(!env.path("none.html").exists());

    // The search form with a group photo: the browser is sent to pick one of its faces.
    let no_redirects = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let group =
        std::fs::read(common::workspace().join(".local/photos/dlib_examples/bald_guys.jpg"))
            .unwrap();
    let form = photo_form("bald_guys.jpg", group)
        .text("method", "cosine")
        .text("max_results", "5");
    let picked = no_redirects
        .post(server.at("/search"))
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(picked.status(), StatusCode::SEE_OTHER);
    let to = picked.headers()["location"].to_str().unwrap().to_string();
    assert!(
        to.starts_with("/photos/") && to.contains("max_results=5"),
        "{to}"
    );
    let pick_page = client.get(server.at(&to)).send().unwrap().text().unwrap();
    let boxes: Vec<&str> = pick_page
        .split("name=\"face_id\" value=\"")
        .skip(1)
        .collect();
    assert!(
        boxes.len() >= 2,
        "a group photo shows its faces to pick from:\n{pick_page}"
    );
    let chosen = boxes[1].split('"').next().unwrap().to_string();
    let form = multipart::Form::new()
        .text("face_id", chosen)
        .text("max_results", "5");
    let started = no_redirects
        .post(server.at("/search"))
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(started.status(), StatusCode::SEE_OTHER);
    let to = started.headers()["location"].to_str().unwrap().to_string();
    let picked_id: i64 = to.strip_prefix("/searches/").unwrap().parse().unwrap();
    assert_eq!(
        wait_finished(&server, picked_id)["items"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    let empty = no_redirects
        .post(server.at("/search"))
        .multipart(multipart::Form::new().text("method", "cosine"))
        .send()
        .unwrap();
    assert_eq!(empty.status(), StatusCode::BAD_REQUEST);
    assert!(empty.text().unwrap().contains("choose a photo"));

    // The pages render.
    for page in [
        "/",
        "/searches",
        &format!("/searches/{id}"),
        "/datasets",
        &format!("/photos/{sha}"),
    ] {
        let response = client.get(server.at(page)).send().unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{page}");
        assert!(response.text().unwrap().contains("</html>"), "{page}");
    }
    let missing = client.get(server.at("/no/such/page")).send().unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    let status = server.stop();
    assert!(status.success(), "serve exited with {status}");
}

/// Reads the `status` events of search `id`'s own stream until it ends.
fn read_events(server: &Server, id: i64) -> Vec<String> {
    read_stream(server, &format!("/api/searches/{id}/events"))
        .into_iter()
        .map(|(of, status)| {
            assert_eq!(of, id);
            status
        })
        .collect()
}

#[test]
fn server_sent_events_follow_every_status_change() {
    let env = TestEnv::new();
    env.synth("events", [100, 5, 16, 2, 1], &[]);
    // Each pass waits 1.5 s between scanning and writing: long enough to see RUNNING.
    let server = Server::start(&env, &[], &[("FACEMATCH_FAULT", "pause-before-write:1500")]);
    let submit = || -> i64 {
        let created: Value = post_search(&http(), &server, &json!({ "face_id": 1 }))
            .json()
            .unwrap();
        created["id"].as_i64().unwrap()
    };
    let first = submit();
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.history_states(&[first])[0].0 != "RUNNING" {
        assert!(
            Instant::now() < deadline,
            "the first search was never claimed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Submitted while the engine is busy: PENDING until the next pass.
    let second = submit();
    assert_eq!(
        read_events(&server, second),
        ["PENDING", "RUNNING", "FINISHED"]
    );
    // A search that has ended: one event, then the stream closes.
    assert_eq!(read_events(&server, first), ["FINISHED"]);
    assert_error(
        http()
            .get(server.at("/api/searches/424242/events"))
            .send()
            .unwrap(),
        StatusCode::NOT_FOUND,
        "424242",
    );
    // SIGTERM while a page follows a search still PENDING: the pass under way is written,
    // the stream ends, the server exits.
    let third = submit();
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.history_states(&[third])[0].0 != "RUNNING" {
        assert!(
            Instant::now() < deadline,
            "the third search was never claimed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let waiting = submit();
    let follower = {
        let url = server.at(&format!("/api/searches/{waiting}/events"));
        std::thread::spawn(move || {
            let response = http().get(url).send().unwrap();
            BufReader::new(response)
                .lines()
                .map_while(Result::ok)
                .filter(|l| l.starts_with("data: "))
                .count()
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let stopped = Instant::now();
    assert!(server.stop().success());
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "serve took {:?} to stop",
        stopped.elapsed()
    );
    assert_eq!(
        follower.join().unwrap(),
        1,
        "the stream ended after the PENDING event"
    );
    let states = env.history_states(&[third, waiting]);
    assert_eq!(
        (states[0].0.as_str(), states[1].0.as_str()),
        ("FINISHED", "PENDING"),
        "{states:?}"
    );
}

/// Reads `status` events from the stream at `path` until it ends: `(id, status)` in order.
fn read_stream(server: &Server, path: &str) -> Vec<(i64, String)> {
    let response = http().get(server.at(path)).send().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    BufReader::new(response)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| line.strip_prefix("data: ").map(str::to_string))
        .map(|data| {
            let event: Value = serde_json::from_str(&data).unwrap();
            (
                event["id"].as_i64().unwrap(),
                event["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Searches submitted together in one request: all or none queued, answered by one pass, and
/// followed to the end on one event stream.
#[test]
fn a_batch_is_queued_in_one_request_answered_together_and_followed_on_one_stream() {
    let env = TestEnv::new();
    env.synth("batch", [100, 5, 16, 2, 1], &[]);
    let faces = env.ref_faces("ORDER BY f.id", &[]);
    // Each pass waits before writing: long enough for a stream to see RUNNING.
    let server = Server::start(&env, &[], &[("FACEMATCH_FAULT", "pause-before-write:500")]);
    let client = http();
    let post = |body: Value| post_search(&client, &server, &body);
    let histories = || -> i64 {
        env.db
            .client()
            .query_one("SELECT count(*) FROM histories", &[])
            .unwrap()
            .get(0)
    };

    // A batch with one bad search queues none of them, and says which one was wrong.
    let before = env.db.snapshot();
    let (a, b) = (faces[3].id, faces[77].id);
    assert_error(
        post(json!([{ "face_id": a }, { "face_id": 987654321 }, { "face_id": b }])),
        StatusCode::NOT_FOUND,
        "search 2 of 3: face 987654321 does not exist",
    );
    assert_error(
        post(json!([{ "face_id": a }, { "face_id": b, "method": "manhattan" }])),
        StatusCode::BAD_REQUEST,
        "search 2 of 2",
    );
    assert_error(
        post(json!([{ "face_id": a }, { "face": b }])),
        StatusCode::BAD_REQUEST,
        "not an array of search requests",
    );
    assert_error(post(json!([])), StatusCode::BAD_REQUEST, "1 to 1000");
    let too_many: Vec<Value> = (0..1001).map(|_| json!({ "face_id": a })).collect();
    assert_error(
        post(json!(too_many)),
        StatusCode::BAD_REQUEST,
        "1001 searches",
    );
    assert_eq!(
        env.db.snapshot(),
        before,
        "a refused batch changed the database"
    );
    assert_eq!(histories(), 0);

    // Five searches, of both methods and every filter, in one request.
    let asked: Vec<(i64, &str, &str, usize)> = vec![
        (faces[0].id, "cosine", "all", 7),
        (faces[123].id, "euclidean", "all", 5),
        (faces[250].id, "cosine", "actor", 3),
        (faces[333].id, "euclidean", "user", 4),
        (faces[499].id, "cosine", "all", 1),
    ];
    let body: Vec<Value> = asked
        .iter()
        .map(|(face, method, filter, n)| {
            json!({ "face_id": face, "method": method, "filter": filter, "max_results": n })
        })
        .collect();
    let created = post(json!(body));
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().unwrap();
    let ids: Vec<i64> = created["searches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(s["status"], "PENDING");
            s["id"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(ids.len(), 5);
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids in the order asked: {ids:?}"
    );
    let events_path = created["events"].as_str().unwrap().to_string();
    let stream = read_stream(&server, &events_path);
    // Every search's first event is its status when the stream opened; each ends FINISHED,
    // after RUNNING unless it had finished before the stream opened, and the stream ends there.
    for id in &ids {
        let mine: Vec<&str> = stream
            .iter()
            .filter(|(i, _)| i == id)
            .map(|(_, s)| s.as_str())
            .collect();
        assert!(
            matches!(
                mine.as_slice(),
                ["PENDING", "RUNNING", "FINISHED"] | ["RUNNING", "FINISHED"] | ["FINISHED"]
            ),
            "search {id}: {mine:?} in {stream:?}"
        );
    }
    assert_eq!(
        stream.last().map(|(_, s)| s.as_str()),
        Some("FINISHED"),
        "{stream:?}"
    );
    // One pass answered them all, each equal to the f64 reference.
    let runs: Vec<i64> = env
        .db
        .client()
        .query(
            "SELECT DISTINCT run_id FROM histories WHERE id = ANY($1)",
            &[&ids],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(runs.len(), 1, "answered by runs {runs:?}");
    for (id, (face, method, filter, n)) in ids.iter().zip(&asked) {
        let query = faces.iter().find(|f| f.id == *face).unwrap();
        let want = reference::top_n(
            &faces,
            &RefQuery {
                method,
                filter,
                max_results: *n,
                exclude: Some(*face),
                max_distance: None,
                encoding: query.encoding.clone(),
            },
        );
        let view = wait_finished(&server, *id);
        let got: Vec<(i64, f64)> = view["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| (i["face_id"].as_i64().unwrap(), i["score"].as_f64().unwrap()))
            .collect();
        reference::assert_same(&got, &want, &format!("search {id}"));
    }

    // The stream of searches that have all ended: their statuses, then it closes.
    assert_eq!(
        read_stream(&server, &events_path),
        ids.iter()
            .map(|id| (*id, "FINISHED".to_string()))
            .collect::<Vec<_>>()
    );
    // Ids it cannot follow.
    assert_error(
        client
            .get(server.at(&format!("/api/searches/events?ids={},424242", ids[0])))
            .send()
            .unwrap(),
        StatusCode::NOT_FOUND,
        "search 424242 does not exist",
    );
    assert_error(
        client
            .get(server.at("/api/searches/events?ids=1,x"))
            .send()
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "\"x\" is not a search id",
    );
    let thousand_and_one: Vec<String> = (1..=1001).map(|i| i.to_string()).collect();
    assert_error(
        client
            .get(server.at(&format!(
                "/api/searches/events?ids={}",
                thousand_and_one.join(",")
            )))
            .send()
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "1001 ids",
    );
    assert!(server.stop().success());
}

#[test]
fn only_loopback_goes_without_a_token() {
    let env = TestEnv::new();
    env.synth("guarded", [10, 2, 16, 1, 1], &[]);
    let open = env.run(&["serve", "--bind", "0.0.0.0:0"]);
    assert!(!open.status.success());
    let stderr = String::from_utf8_lossy(&open.stderr);
    assert!(
        stderr.contains("--token") && stderr.contains("0.0.0.0"),
        "{stderr}"
    );

    let server = Server::start(&env, &["--token", "s3cret"], &[]);
    let client = http();
    assert_error(
        client.get(server.at("/api/stats")).send().unwrap(),
        StatusCode::UNAUTHORIZED,
        "token",
    );
    assert_error(
        client
            .get(server.at("/api/stats"))
            .bearer_auth("wrong")
            .send()
            .unwrap(),
        StatusCode::UNAUTHORIZED,
        "token",
    );
    assert_eq!(
        client.get(server.at("/")).send().unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        client
            .get(server.at("/api/stats"))
            .bearer_auth("s3cret")
            .send()
            .unwrap()
            .status(),
        StatusCode::OK
    );
    // The health check stays open (load balancers probe it).
    assert_eq!(
        client.get(server.at("/health")).send().unwrap().status(),
        StatusCode::OK
    );
    // A browser opens a page once with ?token=: the token moves into a cookie.
    let no_redirects = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let opened = no_redirects
        .get(server.at("/searches?token=s3cret"))
        .send()
        .unwrap();
    assert_eq!(opened.status(), StatusCode::SEE_OTHER);
    let cookie = opened.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.starts_with("facematch_token=s3cret;") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let with_cookie = client
        .get(server.at("/searches"))
        .header("cookie", cookie.split(';').next().unwrap())
        .send()
        .unwrap();
    assert_eq!(with_cookie.status(), StatusCode::OK);
    assert!(server.stop().success());
}
