//! Test harness of the end-to-end tests: a database of their own in the real PostgreSQL that
//! `make test` starts, a real S3-protocol server (s3s-fs) served in-process over TCP, and the real
//! `facematch` binary run as a child process against both.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod bad_images;
pub mod faults;
pub mod moto;
pub mod network;
pub mod reference;
pub mod server;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "facematch-test";
pub const SECRET_KEY: &str = "facematch-test-secret";
pub const REGION: &str = "us-east-1";
/// The bucket every test environment gets.
pub const BUCKET: &str = "faces";

/// One kind of question an application asks: how the test histories vary.
#[derive(Debug, Clone, Copy)]
pub struct HistoryKind {
    pub method: &'static str,
    pub filter: &'static str,
    pub max_results: usize,
    pub exclude_self: bool,
    pub max_distance: Option<f64>,
}

impl HistoryKind {
    /// The reference's query for this kind about `face`.
    pub fn reference(&self, face: &reference::RefFace) -> reference::RefQuery {
        reference::RefQuery {
            method: self.method,
            filter: self.filter,
            max_results: self.max_results,
            exclude: self.exclude_self.then_some(face.id),
            max_distance: self.max_distance,
            encoding: face.encoding.clone(),
        }
    }
}

/// The four kinds test histories cycle through: cosine over all sources, euclidean over
/// actors, cosine over users keeping the face itself, euclidean within a distance.
pub const HISTORY_KINDS: [HistoryKind; 4] = [
    HistoryKind {
        method: "cosine",
        filter: "all",
        max_results: 10,
        exclude_self: true,
        max_distance: None,
    },
    HistoryKind {
        method: "euclidean",
        filter: "actor",
        max_results: 25,
        exclude_self: true,
        max_distance: None,
    },
    HistoryKind {
        method: "cosine",
        filter: "user",
        max_results: 5,
        exclude_self: false,
        max_distance: None,
    },
    HistoryKind {
        method: "euclidean",
        filter: "all",
        max_results: 50,
        exclude_self: true,
        max_distance: Some(0.9),
    },
];

/// A database created for one test and dropped when it ends.
pub struct TestDb {
    admin_url: String,
    name: String,
    /// URL of the test's database.
    pub url: String,
}

impl TestDb {
    /// Creates a fresh database in the server named by `FACEMATCH_TEST_DATABASE_URL`.
    pub fn create() -> TestDb {
        let admin_url = std::env::var("FACEMATCH_TEST_DATABASE_URL").expect(
            "FACEMATCH_TEST_DATABASE_URL is not set: run the tests with `make test`, which starts a \
             throwaway PostgreSQL, or point it at a server where databases may be created",
        );
        TestDb::create_on(admin_url)
    }

    /// Creates a fresh database in the server at `admin_url`.
    pub fn create_on(admin_url: String) -> TestDb {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "fmtest_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        let mut admin = postgres::Client::connect(&admin_url, postgres::NoTls)
            .expect("connect to the test server");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create the test database");
        let (base, _) = admin_url
            .rsplit_once('/')
            .expect("a URL ending in /database");
        let url = format!("{base}/{name}");
        TestDb {
            admin_url,
            name,
            url,
        }
    }

    /// Every table's rows, as text: what "nothing changed" is compared on.
    pub fn snapshot(&self) -> Vec<String> {
        let mut client = self.client();
        let tables: Vec<String> = client
            .query(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut rows = vec![format!("tables: {tables:?}")];
        for table in tables {
            for row in client
                .query(
                    &format!("SELECT t::text FROM \"{table}\" t ORDER BY 1"),
                    &[],
                )
                .unwrap()
            {
                rows.push(format!("{table}: {}", row.get::<_, String>(0)));
            }
        }
        rows
    }

    /// A new connection to the test's database.
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).expect("connect to the test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = postgres::Client::connect(&self.admin_url, postgres::NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// s3s-fs serving a temporary folder over TCP, on its own runtime thread, for the test's life,
/// behind a fault-injecting layer that lets every request through until told otherwise.
pub struct S3Server {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The faults injected in front of the server (none unless set).
    pub faults: std::sync::Arc<faults::Faults>,
    root: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
}

impl S3Server {
    /// Starts the server on 127.0.0.1 with one bucket, [`BUCKET`].
    pub fn start() -> S3Server {
        S3Server::start_on("127.0.0.1")
    }

    /// Starts the server on address `ip` (another host's reach) with one bucket, [`BUCKET`].
    pub fn start_on(ip: &str) -> S3Server {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        use hyper_util::server::conn::auto::Builder as ConnBuilder;
        use s3s::auth::SimpleAuth;
        use s3s::service::S3ServiceBuilder;

        let root = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(root.path().join(BUCKET)).expect("bucket folder");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs root");
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind((ip, 0)))
            .expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let faults = std::sync::Arc::new(faults::Faults::default());
        let injector = faults.clone();
        runtime.spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            while let Ok((socket, _)) = listener.accept().await {
                let (service, faults) = (service.clone(), injector.clone());
                let layer = hyper::service::service_fn(move |request| {
                    faults::serve(faults.clone(), service.clone(), request)
                });
                let conn = http
                    .serve_connection(TokioIo::new(socket), layer)
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        S3Server {
            endpoint,
            faults,
            root,
            runtime,
        }
    }

    /// An aws-sdk-s3 client for this server (explicit region and static credentials).
    pub fn client(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Keys under `prefix` in [`BUCKET`], listed through the S3 API.
    pub fn list(&self, prefix: &str) -> Vec<String> {
        let client = self.client();
        self.runtime.block_on(async {
            let out = client
                .list_objects_v2()
                .bucket(BUCKET)
                .prefix(prefix)
                .send()
                .await
                .expect("list objects");
            out.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string))
                .collect()
        })
    }

    /// Deletes one object through the S3 API.
    pub fn delete(&self, key: &str) {
        let client = self.client();
        self.runtime.block_on(async {
            client
                .delete_object()
                .bucket(BUCKET)
                .key(key)
                .send()
                .await
                .expect("delete object");
        });
    }

    /// Writes one object through the S3 API.
    pub fn put(&self, key: &str, data: Vec<u8>) {
        let client = self.client();
        self.runtime.block_on(async {
            client
                .put_object()
                .bucket(BUCKET)
                .key(key)
                .body(data.into())
                .send()
                .await
                .expect("put object");
        });
    }

    /// Reads one object through the S3 API.
    pub fn get(&self, key: &str) -> Vec<u8> {
        let client = self.client();
        self.runtime.block_on(async {
            let out = client
                .get_object()
                .bucket(BUCKET)
                .key(key)
                .send()
                .await
                .unwrap_or_else(|e| panic!("get {key}: {e:?}"));
            out.body.collect().await.expect("object body").to_vec()
        })
    }

    /// The folder behind the bucket.
    pub fn root(&self) -> &Path {
        self.root.path()
    }
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// dlib's models, as `make setup` fetches them.
/// The portable worker binary `make test` builds (`scripts/worker-binary.sh`, dev profile): the
/// search-only `facematch` that needs nothing but the C library.
pub fn portable_worker() -> PathBuf {
    let path = std::env::var_os("FACEMATCH_PORTABLE_WORKER").map(PathBuf::from).expect(
        "FACEMATCH_PORTABLE_WORKER is not set: run the tests with `make test`, which builds the \
         portable worker binary first (or `PROFILE=dev scripts/worker-binary.sh` and point the \
         variable at target/worker/facematch-dev)",
    );
    assert!(path.is_file(), "{} does not exist", path.display());
    path
}

/// The worker bundle `make test` builds (`scripts/worker-bundle.sh`, dev profile): the archive
/// `--runner emr` stages for a build, and beside it the folder it unpacks to.
pub fn worker_bundle() -> (PathBuf, PathBuf) {
    let archive = std::env::var_os("FACEMATCH_WORKER_BUNDLE")
        .map(PathBuf::from)
        .expect(
            "FACEMATCH_WORKER_BUNDLE is not set: run the tests with `make test`, which builds the \
         worker bundle first (or `PROFILE=dev scripts/worker-bundle.sh` and point the variable \
         at target/worker/facematch-bundle-dev.tar.gz)",
        );
    assert!(archive.is_file(), "{} does not exist", archive.display());
    let name = archive.to_string_lossy();
    let dir = PathBuf::from(name.strip_suffix(".tar.gz").expect("a .tar.gz"));
    assert!(
        dir.join("facematch").is_file(),
        "{} is not unpacked",
        dir.display()
    );
    (archive, dir)
}

/// `objdump ARGS FILE`'s output (binutils reads the ELF file independently of facematch's parser).
pub fn objdump(args: &[&str], file: &Path) -> String {
    let out = Command::new("objdump")
        .args(args)
        .arg(file)
        .output()
        .expect("objdump (binutils, installed by make setup)");
    assert!(
        out.status.success(),
        "objdump {args:?} {} failed",
        file.display()
    );
    String::from_utf8(out.stdout).expect("objdump prints text")
}

/// The libraries `file` needs (its `NEEDED` entries, as `objdump -p` prints them).
pub fn needed_libraries(file: &Path) -> Vec<String> {
    objdump(&["-p"], file)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("NEEDED"))
        .map(|lib| lib.trim().to_string())
        .collect()
}

/// Every versioned glibc symbol in `objdump -T` output: (major, minor, the line).
pub fn glibc_versions(objdump_t: &str) -> Vec<(u32, u32, String)> {
    objdump_t
        .lines()
        .filter_map(|line| {
            let at = line.find("GLIBC_")?;
            let version: String = line[at + 6..]
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
            let major = parts.next()?;
            let minor = parts.next().unwrap_or(0);
            Some((major, minor, line.trim().to_string()))
        })
        .collect()
}

pub fn models_dir() -> PathBuf {
    std::env::var_os("FACEMATCH_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".local/models"))
}

/// The face_recognition 1.3.0 test photos, as `make setup` fetches them.
pub fn test_photos() -> PathBuf {
    workspace().join(".local/photos/face_recognition")
}

/// One test's world: its database, the S3 server and a scratch folder.
pub struct TestEnv {
    pub db: TestDb,
    pub s3: S3Server,
    pub scratch: tempfile::TempDir,
}

impl TestEnv {
    /// A fresh database (migrated through the CLI) and S3 server.
    pub fn new() -> TestEnv {
        TestEnv::with_s3(S3Server::start())
    }

    /// A fresh database (migrated through the CLI) and the S3 server `s3`.
    pub fn with_s3(s3: S3Server) -> TestEnv {
        TestEnv::with(TestDb::create(), s3)
    }

    /// The database `db` (migrated through the CLI) and the S3 server `s3`.
    pub fn with(db: TestDb, s3: S3Server) -> TestEnv {
        let env = TestEnv {
            db,
            s3,
            scratch: tempfile::tempdir().unwrap(),
        };
        env.ok(&["db", "migrate"]);
        env
    }

    /// Histories for `faces`, inserted with SQL as an application would (hundreds of CLI calls
    /// would dominate a test's time), cycling through the four [`HISTORY_KINDS`]. Returns their
    /// ids.
    pub fn insert_histories(&self, faces: &[i64]) -> Vec<i64> {
        let mut client = self.db.client();
        let insert = client
            .prepare(
                "INSERT INTO histories (in_face_id, similarity_method, face_source_filter,
                                        max_results, exclude_self, max_distance)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .unwrap();
        faces
            .iter()
            .enumerate()
            .map(|(i, face)| {
                let k = &HISTORY_KINDS[i % HISTORY_KINDS.len()];
                let n = k.max_results as i32;
                client
                    .query_one(
                        &insert,
                        &[
                            face,
                            &k.method,
                            &k.filter,
                            &n,
                            &k.exclude_self,
                            &k.max_distance,
                        ],
                    )
                    .unwrap()
                    .get(0)
            })
            .collect()
    }

    /// `count` histories in one INSERT, as a busy application's backlog: history `g` asks about
    /// face `first_face + (g × stride) mod faces` with kind `g mod 4` of [`HISTORY_KINDS`].
    /// Returns (id, query face, kind) in insertion order.
    pub fn insert_backlog(
        &self,
        count: i64,
        (first_face, faces): (i64, i64),
        stride: i64,
    ) -> Vec<(i64, i64, usize)> {
        let column =
            |f: fn(&HistoryKind) -> String| HISTORY_KINDS.iter().map(f).collect::<Vec<_>>();
        let methods = column(|k| k.method.to_string());
        let filters = column(|k| k.filter.to_string());
        let ns: Vec<i32> = HISTORY_KINDS.iter().map(|k| k.max_results as i32).collect();
        let excludes: Vec<bool> = HISTORY_KINDS.iter().map(|k| k.exclude_self).collect();
        let distances: Vec<Option<f64>> = HISTORY_KINDS.iter().map(|k| k.max_distance).collect();
        self.db
            .client()
            .query(
                "INSERT INTO histories (in_face_id, similarity_method, face_source_filter,
                                        max_results, exclude_self, max_distance)
                 SELECT $1::bigint + (g * $3::bigint) % $2::bigint, ($4::text[])[g % 4 + 1], ($5::text[])[g % 4 + 1],
                        ($6::int[])[g % 4 + 1], ($7::bool[])[g % 4 + 1], ($8::float8[])[g % 4 + 1]
                   FROM generate_series(0, $9::bigint - 1) g ORDER BY g
                 RETURNING id, in_face_id",
                &[
                    &first_face,
                    &faces,
                    &stride,
                    &methods,
                    &filters,
                    &ns,
                    &excludes,
                    &distances,
                    &count,
                ],
            )
            .unwrap()
            .iter()
            .enumerate()
            .map(|(g, row)| (row.get(0), row.get(1), g % HISTORY_KINDS.len()))
            .collect()
    }

    /// Each history's (status, attempts, item count, finished) in `ids` order.
    pub fn history_states(&self, ids: &[i64]) -> Vec<(String, i32, i64, bool)> {
        self.db
            .client()
            .query(
                "SELECT status, attempts,
                        (SELECT count(*) FROM history_items i WHERE i.history_id = h.id),
                        finished_at IS NOT NULL
                   FROM histories h WHERE id = ANY($1) ORDER BY array_position($1, id)",
                &[&ids],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()
    }

    /// The `facematch` command with this environment: database, S3 endpoint and credentials, and
    /// datasets written under `s3://faces/datasets`.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_of(Path::new(env!("CARGO_BIN_EXE_facematch")), args)
    }

    /// [`TestEnv::command`] running the executable `exe` (another build of facematch).
    pub fn command_of(&self, exe: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .env_remove("RUST_LOG")
            .env("DATABASE_URL", &self.db.url)
            .env("FACEMATCH_DATASET_ROOT", format!("s3://{BUCKET}/datasets"))
            .env("AWS_ENDPOINT_URL", &self.s3.endpoint)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_REGION", REGION)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("FACEMATCH_MODELS", models_dir())
            .env("FACEMATCH_IMAGE_STORE", self.path("image-store"))
            .env_remove("AWS_PROFILE")
            .env_remove("FACEMATCH_DATASET");
        cmd
    }

    /// `facematch dataset synth` of `identities` × `per_identity` faces of dimension `dim` in
    /// `shards` shards from `seed`, with `extra` flags; asserts success.
    pub fn synth(
        &self,
        name: &str,
        [identities, per_identity, dim, shards, seed]: [u32; 5],
        extra: &[&str],
    ) {
        let numbers = [identities, per_identity, dim, shards, seed].map(|n| n.to_string());
        let mut args = vec!["dataset", "synth", "--name", name];
        for (flag, value) in [
            "--identities",
            "--per-identity",
            "--dim",
            "--shards",
            "--seed",
        ]
        .into_iter()
        .zip(&numbers)
        {
            args.extend([flag, value.as_str()]);
        }
        args.extend(extra);
        self.ok(&args);
    }

    /// Runs `facematch ARGS` and returns its output, whatever the exit status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("start facematch")
    }

    /// Runs `facematch ARGS`, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "facematch {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Each history's items as (rank, face id, score bits), in `ids` order: equal means
    /// byte-identical results.
    pub fn history_items(&self, ids: &[i64]) -> Vec<Vec<(i32, i64, u64)>> {
        let mut by_history: std::collections::BTreeMap<i64, Vec<(i32, i64, u64)>> =
            Default::default();
        for row in self
            .db
            .client()
            .query(
                "SELECT history_id, rank, face_id, similarity_score FROM history_items
                  WHERE history_id = ANY($1) ORDER BY history_id, rank",
                &[&ids],
            )
            .unwrap()
        {
            by_history.entry(row.get(0)).or_default().push((
                row.get(1),
                row.get(2),
                row.get::<_, f64>(3).to_bits(),
            ));
        }
        ids.iter()
            .map(|id| by_history.remove(id).unwrap_or_default())
            .collect()
    }

    /// The faces `SELECT id, source, encoding FROM faces f …` returns (`tail` is the rest of the
    /// statement: joins, conditions, order), for the reference.
    pub fn ref_faces(
        &self,
        tail: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Vec<reference::RefFace> {
        self.db
            .client()
            .query(
                &format!("SELECT f.id, f.source, f.encoding FROM faces f {tail}"),
                params,
            )
            .unwrap()
            .iter()
            .map(|r| reference::RefFace {
                id: r.get(0),
                source: r.get::<_, String>(1).chars().next().unwrap(),
                encoding: r.get(2),
            })
            .collect()
    }

    /// A path in the scratch folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }
}

/// The pids of the `processes` worker processes a processes-runner run with `TMPDIR=tmp` started,
/// in process order, once process 0 has published them.
pub fn local_workers(tmp: &Path, processes: usize, deadline: Instant) -> Vec<i32> {
    loop {
        assert!(
            Instant::now() < deadline,
            "the worker processes never registered"
        );
        let runs: Vec<_> = std::fs::read_dir(tmp)
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("facematch-run-")
            })
            .collect();
        // Process 0 publishes the member list (address and pid, in process order) once every
        // process has registered.
        if let Some(run) = runs.first() {
            let members = std::fs::read(run.path().join("run/cluster.json")).unwrap_or_default();
            if let Ok(members) = serde_json::from_slice::<serde_json::Value>(&members) {
                let peers = members["peers"].as_array().cloned().unwrap_or_default();
                let pids: Vec<i32> = peers
                    .iter()
                    .filter_map(|m| m["pid"].as_i64())
                    .map(|p| p as i32)
                    .collect();
                assert_eq!(pids.len(), processes, "{members:?}");
                return pids;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether process `pid` exists.
pub fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// The JSON summary a `--json` command printed, or a panic showing what it printed instead.
pub fn json_summary(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON summary ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Runs `cmd` to the end and returns its output and its peak resident set size in bytes: the
/// last `VmHWM` of `/proc/PID/status` read while it ran (every 10 ms). Not `wait4`'s
/// `ru_maxrss`, which counts the forked test process's own memory from before the exec.
pub fn output_with_peak_rss(cmd: &mut Command) -> (Output, u64) {
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the command");
    let pid = child.id();
    let peak = std::sync::atomic::AtomicU64::new(0);
    let done = std::sync::atomic::AtomicBool::new(false);
    let output = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status"));
                let hwm_kb = status.ok().and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("VmHWM:"))
                        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                });
                if let Some(kb) = hwm_kb {
                    peak.fetch_max(kb * 1024, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let output = child.wait_with_output().expect("wait for the command");
        done.store(true, Ordering::Relaxed);
        output
    });
    (output, peak.into_inner())
}
