//! The web app as a person uses it, in a real browser: Debian's chromium, driven headless by
//! Playwright (`playwright-core`, which `make setup` installs under `.local/node`), against a real
//! `facematch serve`. Upload obama2.jpg, watch the search go from its first status to FINISHED
//! live, and read the grid: the first five crops must be the other Obama photos, every crop an
//! image that loaded, and the page must have logged no error. The screenshot is kept in
//! `target/test-artifacts/search.png`.

mod common;

use common::server::{Server, build_test_photos};
use common::{TestEnv, test_photos, workspace};
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::Command;

#[test]
fn a_photo_uploaded_in_chromium_finds_the_other_obama_photos() {
    let env = TestEnv::new();
    build_test_photos(&env);
    // Each pass waits a second before writing, so the page shows the search unfinished first
    // and has to follow it to FINISHED through its event stream.
    let server = Server::start(&env, &[], &[("FACEMATCH_FAULT", "pause-before-write:1000")]);
    let artifacts = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("../test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("search.png");
    let _ = std::fs::remove_file(&screenshot);

    let out = Command::new("node")
        .arg(workspace().join("tests/browser/search.cjs"))
        .arg(&server.url)
        .arg(test_photos().join("obama2.jpg"))
        .arg(&screenshot)
        .env("NODE_PATH", workspace().join(".local/node/node_modules"))
        .output()
        .expect("node (make setup installs it)");
    assert!(
        out.status.success(),
        "the browser run failed:\n{}\n{}\nserver:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.stderr()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("no report from the browser ({e}):\n{stdout}"));

    assert_eq!(
        report["consoleErrors"],
        Value::Array(vec![]),
        "the page logged errors: {report}"
    );
    let seen: Vec<&str> = report["statusesSeen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().trim())
        .collect();
    assert!(
        matches!(seen[0], "PENDING" | "RUNNING"),
        "the page first showed {seen:?}"
    );
    assert_eq!(seen[1], "FINISHED");
    let cards = report["cards"].as_array().unwrap();
    // The folder's seven faces but the query's own: the five other Obamas, then Biden.
    assert_eq!(cards.len(), 6, "{report}");
    assert!(
        cards[5]["photo"].as_str().unwrap().ends_with("/biden.jpg"),
        "{report}"
    );
    let first_five: BTreeSet<String> = cards[..5]
        .iter()
        .map(|c| {
            c["photo"]
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
        "obama.jpg",
        "obama3.jpg",
        "obama_partial_face.jpg",
        "obama_partial_face2.jpg",
    ]
    .map(String::from)
    .into();
    assert_eq!(first_five, others, "{report}");
    assert!(
        cards.iter().all(|c| c["cropWidth"] == 160),
        "a crop did not load: {report}"
    );
    assert_eq!(report["queryCrop"], 160);
    // The page's results are the API's.
    let id: i64 = report["url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let faces: Vec<i64> = env.history_items(&[id])[0]
        .iter()
        .map(|(_, f, _)| *f)
        .collect();
    let shown: Vec<i64> = cards.iter().map(|c| c["face"].as_i64().unwrap()).collect();
    assert_eq!(shown, faces);

    let png = std::fs::read(&screenshot).expect("the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    eprintln!("screenshot: {}", screenshot.display());
    assert!(server.stop().success());
}
