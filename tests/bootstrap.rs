//! The EMR bootstrap action, run for real: the very script `--runner emr` stages, executed by
//! bash as a user other than root (EMR runs bootstrap actions as `hadoop`), with Debian's AWS CLI
//! v2 — the CLI EMR nodes have — against s3s-fs, on a fake node layout (`instance.json`,
//! `job-flow.json` under a folder the script is pointed at). The primary branch installs and
//! stops; the core branch leaves a serving pool worker that joins the next run; a binary the node
//! cannot start fails the bootstrap with the loader's message.

mod common;

use common::{ACCESS_KEY, BUCKET, REGION, SECRET_KEY, TestEnv};
use facematch_driver::cluster::{WorkerFlags, joiner_args};
use facematch_driver::runner::emr::request::BOOTSTRAP_SCRIPT;
use facematch_job::JobOutput;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The unprivileged user the script runs as when the tests run as root (as CI does).
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// One fake node: its root (`mnt/var/lib/info`), install and log folders, open to the
/// unprivileged user.
struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new(is_master: bool) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let info = dir.path().join("root/mnt/var/lib/info");
        std::fs::create_dir_all(&info).unwrap();
        std::fs::write(
            info.join("instance.json"),
            format!("{{\"isMaster\": {is_master}, \"instanceGroupId\": \"ig-1\"}}"),
        )
        .unwrap();
        std::fs::write(
            info.join("job-flow.json"),
            r#"{"jobFlowId": "j-BOOTTEST", "x": 1}"#,
        )
        .unwrap();
        for sub in ["bin", "home", "lib"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        // Every folder the script writes to belongs to the user it runs as, as on a node.
        for entry in walk(dir.path()) {
            std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        Node { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs the bootstrap script as EMR would: the binary's URI, then the serving pool worker's
    /// arguments as the driver builds them (`cluster::joiner_args`).
    fn bootstrap(&self, env: &TestEnv, binary_uri: &str) -> Output {
        let flags = WorkerFlags {
            threads: 1,
            host: "127.0.0.1".into(),
            connect_timeout: Duration::from_secs(60),
            ports: None,
            peer_timeout: Duration::from_secs(30),
        };
        let mut args = vec![binary_uri.to_string()];
        args.extend(joiner_args(
            "s3://faces/emr/pools/{cluster-id}",
            &flags,
            true,
        ));
        let script = self.path("bootstrap.sh");
        std::fs::write(&script, BOOTSTRAP_SCRIPT).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut cmd = if is_root() {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={NOBODY}"),
                &format!("--regid={NOBODY}"),
                "--clear-groups",
                "bash",
            ]);
            c
        } else {
            Command::new("bash")
        };
        cmd.arg(&script)
            .args(&args)
            .env_clear()
            // An EMR node's PATH: its AWS CLI v2 is /usr/bin/aws (Debian's awscli here), not
            // whichever `aws` this machine's own PATH finds first.
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", self.path("home"))
            .env("AWS_ENDPOINT_URL", &env.s3.endpoint)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_REGION", REGION)
            .env("AWS_DEFAULT_REGION", REGION)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("FACEMATCH_NODE_ROOT", self.path("root"))
            .env("FACEMATCH_INSTALL_DIR", self.path("bin"))
            .env("FACEMATCH_BUNDLE_DIR", self.path("lib/facematch"))
            .env("FACEMATCH_LOG_DIR", self.path("log"));
        cmd.output()
            .expect("bash and the AWS CLI (awscli, installed by make setup)")
    }

    /// The pool worker loop the core branch left running, if any.
    fn worker_loop(&self) -> Option<i32> {
        let pid = std::fs::read_to_string(self.path("log/worker.pid")).ok()?;
        pid.trim().parse().ok()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // The loop is its own session: stop it and the worker under it together.
        if let Some(pid) = self.worker_loop() {
            // SAFETY: kill(2) on the process group the script started for this test.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut all = vec![dir.to_path_buf()];
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.path().is_dir() {
            all.extend(walk(&entry.path()));
        }
    }
    all
}

fn stage(env: &TestEnv, key: &str, path: &Path) -> String {
    env.s3.put(key, std::fs::read(path).unwrap());
    format!("s3://{BUCKET}/{key}")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn owner_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn the_primary_node_installs_the_binary_and_starts_no_worker() {
    let env = TestEnv::new();
    let worker = common::portable_worker();
    let uri = stage(&env, "emr/bin/facematch-portable", &worker);
    let node = Node::new(true);
    let out = node.bootstrap(&env, &uri);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("installed facematch"), "{}", text(&out));
    assert_eq!(
        std::fs::read(node.path("bin/facematch")).unwrap(),
        std::fs::read(&worker).unwrap()
    );
    assert!(
        node.worker_loop().is_none(),
        "the primary node runs process 0 as the step"
    );
}

/// For a build the driver stages the worker bundle: the script unpacks it and links the command
/// to its binary, which starts with the bundle's libraries and finds the bundle's models.
#[cfg(feature = "photos")]
#[test]
fn a_build_node_installs_the_worker_bundle_which_encodes_with_its_own_models() {
    let env = TestEnv::new();
    let (archive, _) = common::worker_bundle();
    let uri = stage(
        &env,
        "emr/bin/facematch-bundle-0123456789abcdef.tar.gz",
        &archive,
    );
    let node = Node::new(true);
    let out = node.bootstrap(&env, &uri);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("installed facematch"), "{}", text(&out));
    let installed = node.path("bin/facematch");
    let target = std::fs::read_link(&installed).expect("the command is a link into the bundle");
    assert_eq!(
        target,
        node.path("lib/facematch/facematch-bundle/facematch")
    );
    assert!(
        node.path("lib/facematch/facematch-bundle/lib/libopenblas.so.0")
            .is_file()
    );
    // Through the link, with no models named: the bundle's own, and the same faces as here.
    let photo = common::test_photos().join("obama.jpg");
    let encode = |exe: &Path, models: Option<PathBuf>| {
        let mut cmd = Command::new(exe);
        cmd.args(["--json", "encode"]).arg(&photo).env_clear();
        if let Some(models) = models {
            cmd.env("FACEMATCH_MODELS", models);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let photos: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        photos[0]["faces"].clone()
    };
    let faces = encode(&installed, None);
    assert_eq!(faces.as_array().map(Vec::len), Some(1), "{faces}");
    assert_eq!(
        faces,
        encode(
            Path::new(env!("CARGO_BIN_EXE_facematch")),
            Some(common::models_dir())
        )
    );
}

#[test]
fn a_core_node_serves_the_pool_and_joins_the_next_run() {
    let env = TestEnv::new();
    let worker = common::portable_worker();
    let uri = stage(&env, "emr/bin/facematch-portable", &worker);
    env.ok(&[
        "dataset",
        "synth",
        "--name",
        "boot",
        "--identities",
        "100",
        "--per-identity",
        "10",
        "--dim",
        "16",
        "--shards",
        "3",
        "--seed",
        "9",
    ]);
    let node = Node::new(false);
    let out = node.bootstrap(&env, &uri);
    assert!(out.status.success(), "{}", text(&out));
    let loop_pid = node
        .worker_loop()
        .expect("the core branch starts a worker loop");
    if is_root() {
        assert_eq!(
            owner_of(loop_pid as u32),
            Some(NOBODY),
            "it runs as the bootstrap user"
        );
    }

    // The next run: a job in a rendezvous the cluster's pool names, with process 0 started as
    // the step would start it. The bootstrap's worker must join as process 1.
    let manifest = env.s3.get("datasets/boot/v1/manifest.json");
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let query: Vec<f32> = (0..16).map(|i| ((i * 7 % 5) as f32) - 2.0).collect();
    let spec = serde_json::json!({
        "root_uri": "s3://faces/datasets",
        "s3": { "endpoint": env.s3.endpoint, "region": REGION, "path_style": true },
        "manifest": manifest,
        "queries": [{
            "history_id": 1, "encoding": query, "method": "Cosine", "filter": "All",
            "max_results": 5, "exclude_self": null, "max_distance": null
        }],
    });
    // The rendezvous carries a job tagged with its kind.
    let spec = serde_json::json!({ "search": spec });
    let run_with = |run: &str, processes: &str| -> JobOutput {
        env.s3.put(
            &format!("emr/runs/{run}/spec.json"),
            spec.to_string().into_bytes(),
        );
        env.s3.put(
            "emr/pools/j-BOOTTEST/current",
            format!("s3://faces/emr/runs/{run}").into_bytes(),
        );
        let step = env.run(&[
            "worker",
            "--rendezvous",
            &format!("s3://faces/emr/runs/{run}"),
            "--process",
            "0",
            "--processes",
            processes,
            "--threads",
            "1",
            "--host",
            "127.0.0.1",
            "--connect-timeout",
            "60",
        ]);
        assert!(step.status.success(), "process 0 of {run}: {}", text(&step));
        let output: serde_json::Value =
            serde_json::from_slice(&env.s3.get(&format!("emr/runs/{run}/output.json"))).unwrap();
        serde_json::from_value(output["search"].clone()).expect("a search output")
    };
    let with_node = run_with("run-1", "2");
    let members: serde_json::Value =
        serde_json::from_slice(&env.s3.get("emr/runs/run-1/cluster.json")).unwrap();
    let joiner = members["peers"][1]["pid"].as_u64().unwrap() as u32;
    if is_root() {
        assert_eq!(owner_of(joiner), Some(NOBODY), "{members}");
    }
    assert_eq!(with_node.faces_scanned, 1000);
    assert_eq!(with_node.results[&1].len(), 5);
    // Process 0 alone gives the same answer.
    let alone = run_with("run-2", "1");
    assert_eq!(with_node.results, alone.results);
    // And the node's worker is still serving, ready for another run.
    assert!(
        Path::new(&format!("/proc/{joiner}")).exists(),
        "the serving worker exited"
    );
    let log = std::fs::read_to_string(node.path("log/worker.log")).unwrap_or_default();
    assert!(!log.contains("worker exited"), "{log}");
}

#[test]
fn a_binary_the_node_cannot_start_fails_the_bootstrap() {
    let env = TestEnv::new();
    let build = tempfile::tempdir().unwrap();
    let c = |args: &[&str]| {
        let out = Command::new("cc")
            .args(args)
            .current_dir(build.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "cc {args:?}: {}", text(&out));
    };
    std::fs::write(
        build.path().join("gone.c"),
        "int gone(void) { return 1; }\n",
    )
    .unwrap();
    std::fs::write(
        build.path().join("main.c"),
        "int gone(void);\nint main(void) { return gone(); }\n",
    )
    .unwrap();
    c(&["-shared", "-fPIC", "-o", "libnotonthisnode.so", "gone.c"]);
    c(&["-o", "needs-a-library", "main.c", "-L.", "-lnotonthisnode"]);
    std::fs::remove_file(build.path().join("libnotonthisnode.so")).unwrap();
    let uri = stage(
        &env,
        "emr/bin/needs-a-library",
        &build.path().join("needs-a-library"),
    );
    let node = Node::new(false);
    let started = Instant::now();
    let out = node.bootstrap(&env, &uri);
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot start on this node"), "{stderr}");
    assert!(
        stderr.contains("libnotonthisnode.so"),
        "the loader's message: {stderr}"
    );
    assert!(
        node.worker_loop().is_none(),
        "no worker loop for a binary that cannot run"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}
