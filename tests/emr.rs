//! `--runner emr` against moto_server (the EMR API; ARCHITECTURE.md: Testing) with the dataset, the staged
//! binary and the rendezvous on a real S3-protocol server (s3s-fs). No EMR cluster exists here,
//! so this test plays the cluster: it reads the step and the bootstrap action back from moto and
//! runs their worker commands itself — the same commands the processes runner executes — and
//! the driver must finish the run from them, record the cluster in `job_runs` and terminate it.

mod common;

use common::TestEnv;
use common::moto::MotoServer;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Ten histories of varied kinds, inserted as an application would.
fn insert_histories(env: &TestEnv) -> Vec<i64> {
    let mut client = env.db.client();
    (0..10)
        .map(|i| {
            let method = if i % 2 == 0 { "cosine" } else { "euclidean" };
            let filter = ["all", "actor", "user"][i % 3];
            client
                .query_one(
                    "INSERT INTO histories (in_face_id, similarity_method, face_source_filter, max_results)
                     VALUES ($1, $2, $3, $4) RETURNING id",
                    &[&(1 + i as i64 * 997), &method, &filter, &(5 + i as i32)],
                )
                .unwrap()
                .get(0)
        })
        .collect()
}

fn statuses(env: &TestEnv, ids: &[i64]) -> Vec<(String, i32)> {
    env.db
        .client()
        .query(
            "SELECT status, attempts FROM histories WHERE id = ANY($1) ORDER BY id",
            &[&ids],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

struct Emr<'a> {
    env: &'a TestEnv,
    moto: MotoServer,
    runtime: tokio::runtime::Runtime,
    binary: std::path::PathBuf,
}

impl Emr<'_> {
    /// `facematch run --runner emr …` with EMR on moto. The binary staged is the default: the
    /// portable worker binary beside this (full) facematch.
    fn run_command(&self, extra: &[&str]) -> Command {
        let mut args = vec![
            "--json",
            "run",
            "--runner",
            "emr",
            "-w",
            "2",
            "--emr-prefix",
            "s3://faces/emr",
            "--emr-core-nodes",
            "2",
            "--emr-tag",
            "team=faces",
            "--emr-subnet",
            "subnet-0facade",
            "--emr-security-configuration",
            "facematch-at-rest",
            "--emr-poll",
            "100ms",
            "--emr-poll-max",
            "400ms",
        ];
        args.extend(extra);
        let mut cmd = self.env.command(&args);
        cmd.env("FACEMATCH_EMR_ENDPOINT", &self.moto.endpoint);
        cmd
    }

    /// `what` claimed nothing (the histories PENDING, no attempt used) and started no cluster.
    fn assert_untouched(&self, ids: &[i64], what: &str) {
        assert!(
            statuses(self.env, ids)
                .iter()
                .all(|s| *s == ("PENDING".into(), 0)),
            "{what} claimed histories"
        );
        assert!(self.clusters().is_empty(), "{what} started a cluster");
    }

    fn clusters(&self) -> Vec<String> {
        let client = self.moto.emr();
        self.runtime.block_on(async {
            client
                .list_clusters()
                .send()
                .await
                .unwrap()
                .clusters()
                .iter()
                .filter_map(|c| c.id().map(str::to_string))
                .collect()
        })
    }

    /// Waits for a cluster not among `known` and returns its id. moto lists a new cluster before it has stored the request's tags; every cluster facematch
    /// starts has some, so the wait lasts until they are there too.
    fn wait_for_cluster(&self, known: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(new) = self
                .clusters()
                .into_iter()
                .find(|c| !known.contains(&c.as_str()))
                && self.has_tags(&new)
            {
                return new;
            }
            assert!(Instant::now() < deadline, "no cluster was created");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What moto says of cluster `id` now.
    fn describe(&self, id: &str) -> Option<aws_sdk_emr::types::Cluster> {
        let client = self.moto.emr();
        self.runtime.block_on(async {
            let out = client.describe_cluster().cluster_id(id).send().await.ok()?;
            out.cluster().cloned()
        })
    }

    fn has_tags(&self, id: &str) -> bool {
        self.describe(id).is_some_and(|c| !c.tags().is_empty())
    }

    fn state(&self, id: &str) -> String {
        self.describe(id)
            .and_then(|c| c.status().and_then(|s| s.state()).cloned())
            .map(|s| s.as_str().to_string())
            .expect("moto knows the cluster and its state")
    }
}

fn spawn_worker(env: &TestEnv, args: &[String]) -> Child {
    env.command(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn an_emr_run_submits_the_cluster_runs_its_commands_and_terminates_it() {
    let env = TestEnv::new();
    let emr = Emr {
        env: &env,
        moto: MotoServer::start(),
        runtime: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
        binary: common::portable_worker(),
    };
    env.ok(&[
        "dataset",
        "synth",
        "--name",
        "faces",
        "--identities",
        "1000",
        "--per-identity",
        "10",
        "--dim",
        "32",
        "--shards",
        "5",
        "--seed",
        "5",
    ]);
    let inline_ids = insert_histories(&env);
    env.ok(&["run", "--runner", "inline", "-w", "1"]);
    let expected = env.history_items(&inline_ids);
    assert!(expected.iter().all(|h| !h.is_empty()));

    // The planner: 10k faces × 10 histories take milliseconds here; a cluster takes minutes.
    let ids = insert_histories(&env);
    let refused = emr.run_command(&[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("plan: 10000 faces × 10 histories × 2·32"),
        "{stderr}"
    );
    assert!(stderr.contains("refusing emr:2x2:c7i.2xlarge"), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    emr.assert_untouched(&ids, "a refused run");

    // A dry run prints the RunJobFlow request as EMR would receive it (the SDK's own JSON),
    // and calls nothing: no cluster, no staging, no claim.
    let dry = emr.run_command(&["--emr-dry-run"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&dry.stderr);
    assert!(dry.status.success(), "{stderr}");
    let request: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(request["Name"], "facematch");
    assert_eq!(request["Instances"]["Ec2SubnetId"], "subnet-0facade");
    assert_eq!(request["SecurityConfiguration"], "facematch-at-rest");
    let tags = request["Tags"].as_array().unwrap();
    assert!(
        tags.iter().any(|t| t["Key"] == "for-use-with-amazon-emr-managed-policies"
            && t["Value"] == "true"),
        "{request}"
    );
    let step_args = request["Steps"][0]["HadoopJarStep"]["Args"].to_string();
    assert!(
        step_args.contains("\"--port-range\",\"42000-42063\""),
        "{step_args}"
    );
    emr.assert_untouched(&ids, "a dry run");
    assert!(env.s3.list("emr/").is_empty(), "a dry run stages nothing");

    // A binary a stock EMR node cannot start (the full facematch links dlib) is refused before
    // anything is claimed or started, naming what it needs.
    let full = emr
        .run_command(&["--force", "--emr-binary", env!("CARGO_BIN_EXE_facematch")])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&full.stderr);
    assert_eq!(full.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("libdlib"), "{stderr}");
    assert!(stderr.contains("make worker-binary"), "{stderr}");
    emr.assert_untouched(&ids, "a refused binary");

    // --force: the driver stages, calls RunJobFlow and waits.
    let driver = emr
        .run_command(&["--force", "--emr-timeout", "120s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let cluster_id = emr.wait_for_cluster(&[]);
    let client = emr.moto.emr();
    let (cluster, groups, bootstrap, steps) = emr.runtime.block_on(async {
        let cluster = client
            .describe_cluster()
            .cluster_id(&cluster_id)
            .send()
            .await
            .unwrap();
        let groups = client
            .list_instance_groups()
            .cluster_id(&cluster_id)
            .send()
            .await
            .unwrap();
        let bootstrap = client
            .list_bootstrap_actions()
            .cluster_id(&cluster_id)
            .send()
            .await
            .unwrap();
        let steps = client
            .list_steps()
            .cluster_id(&cluster_id)
            .send()
            .await
            .unwrap();
        (cluster, groups, bootstrap, steps)
    });
    // The request, as EMR kept it.
    let cluster = cluster.cluster().unwrap();
    assert_eq!(cluster.name(), Some("facematch"));
    assert_eq!(cluster.release_label(), Some("emr-7.5.0"));
    assert_eq!(cluster.log_uri(), Some("s3://faces/emr/logs/"));
    assert_eq!(cluster.security_configuration(), Some("facematch-at-rest"));
    assert_eq!(cluster.service_role(), Some("EMR_DefaultRole"));
    assert_eq!(
        cluster
            .ec2_instance_attributes()
            .and_then(|a| a.ec2_subnet_id()),
        Some("subnet-0facade")
    );
    assert_eq!(
        cluster.auto_terminate(),
        Some(true),
        "no steps left → the cluster ends"
    );
    let tags: Vec<(String, String)> = cluster
        .tags()
        .iter()
        .map(|t| (t.key().unwrap().to_string(), t.value().unwrap().to_string()))
        .collect();
    assert!(
        tags.contains(&("facematch".into(), "worker".into())),
        "{tags:?}"
    );
    assert!(tags.contains(&("team".into(), "faces".into())), "{tags:?}");
    assert!(
        tags.contains(&(
            "for-use-with-amazon-emr-managed-policies".into(),
            "true".into()
        )),
        "AmazonEMRServicePolicy_v2 acts only on tagged clusters: {tags:?}"
    );
    let mut shape: Vec<(String, i32, String)> = groups
        .instance_groups()
        .iter()
        .map(|g| {
            (
                g.instance_group_type().unwrap().as_str().to_string(),
                g.requested_instance_count().unwrap(),
                g.instance_type().unwrap().to_string(),
            )
        })
        .collect();
    shape.sort();
    assert_eq!(
        shape,
        [
            ("CORE".into(), 2, "c7i.2xlarge".into()),
            ("MASTER".into(), 1, "m7i.xlarge".into())
        ]
    );
    let action = &bootstrap.bootstrap_actions()[0];
    let script = action.script_path().unwrap();
    assert!(
        script.starts_with("s3://faces/emr/bin/bootstrap-"),
        "{script}"
    );
    let bootstrap_args: Vec<String> = action.args().to_vec();
    let step = &steps.steps()[0];
    let step_config = step.config().unwrap();
    assert_eq!(step_config.jar(), Some("command-runner.jar"));
    assert_eq!(
        step.action_on_failure().map(|a| a.as_str()),
        Some("TERMINATE_CLUSTER")
    );
    let step_args: Vec<String> = step_config.args().to_vec();
    assert_eq!(step_args[0], "/usr/local/bin/facematch");
    assert_eq!(
        step_args[1..4],
        ["worker", "--rendezvous", step_args[3].as_str()]
    );
    assert!(
        step_args[3].starts_with("s3://faces/emr/runs/run-"),
        "{step_args:?}"
    );
    let tail: Vec<&str> = step_args[4..].iter().map(String::as_str).collect();
    assert_eq!(
        tail,
        [
            "--process",
            "0",
            "--processes",
            "3",
            "--threads",
            "2",
            "--host",
            "auto",
            "--connect-timeout",
            "300",
            "--port-range",
            "42000-42063",
            "--peer-timeout",
            "30"
        ]
    );
    // Staged: the binary byte for byte, the script, the spec, and the pool pointer.
    let binary_uri = &bootstrap_args[0];
    let binary_key = binary_uri.strip_prefix("s3://faces/").unwrap();
    assert_eq!(env.s3.get(binary_key), std::fs::read(&emr.binary).unwrap());
    let script_text = env.s3.get(script.strip_prefix("s3://faces/").unwrap());
    let script_text = String::from_utf8(script_text).unwrap();
    assert_eq!(
        script_text,
        facematch_driver::runner::emr::request::BOOTSTRAP_SCRIPT,
        "the script tests/bootstrap.rs runs"
    );
    let run_prefix = step_args[3].strip_prefix("s3://faces/").unwrap();
    assert!(!env.s3.list(&format!("{run_prefix}/spec.json")).is_empty());
    let current = env.s3.get(&format!("emr/pools/{cluster_id}/current"));
    assert_eq!(String::from_utf8(current).unwrap(), step_args[3]);
    let worker_args = &bootstrap_args[1..];
    assert_eq!(
        worker_args,
        [
            "worker",
            "--pool",
            "s3://faces/emr/pools/{cluster-id}",
            "--serve",
            "--threads",
            "2",
            "--host",
            "auto",
            "--connect-timeout",
            "600",
            "--port-range",
            "42000-42063"
        ]
    );

    // Play the cluster: the step on the primary node, the bootstrap's worker on each core node,
    // with the cluster id substituted as the bootstrap script does.
    let mut step_process = spawn_worker(&env, &step_args[1..]);
    let mut pool_workers = Vec::new();
    for _ in 0..2 {
        let args: Vec<String> = worker_args
            .iter()
            .map(|a| a.replace("{cluster-id}", &cluster_id))
            .collect();
        pool_workers.push(spawn_worker(&env, &args));
    }
    let status = step_process.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(step_process.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    if !status.success() {
        let mut logs = String::new();
        for worker in &mut pool_workers {
            worker.kill().unwrap();
            worker.wait().unwrap();
            std::io::Read::read_to_string(worker.stderr.as_mut().unwrap(), &mut logs).unwrap();
        }
        panic!("process 0 failed: {stderr}\npool workers:\n{logs}");
    }
    // The pool workers serve the node's whole life: still up, waiting for the next run.
    std::thread::sleep(Duration::from_millis(500));
    for worker in &mut pool_workers {
        assert!(
            worker.try_wait().unwrap().is_none(),
            "a serving worker exited"
        );
        worker.kill().unwrap();
        worker.wait().unwrap();
    }
    let out = driver.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("plan: 10000 faces"), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["finished"], 10, "{summary}");
    assert_eq!(summary["faces_scanned"], 10_000, "{summary}");
    assert_eq!(summary["plan"]["threads"], 6, "{summary}");

    // Results byte-identical to inline; the cluster recorded and terminated.
    assert_eq!(env.history_items(&ids), expected);
    assert_eq!(emr.state(&cluster_id), "TERMINATED");
    let row = env
        .db
        .client()
        .query_one(
            "SELECT runner, status, cluster_id, step_id, cluster_state, step_state, cluster_started_here
               FROM job_runs ORDER BY id DESC LIMIT 1",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "emr:2x2:c7i.2xlarge");
    assert_eq!(row.get::<_, String>(1), "FINISHED");
    assert_eq!(
        row.get::<_, Option<String>>(2).as_deref(),
        Some(cluster_id.as_str())
    );
    assert_eq!(row.get::<_, Option<String>>(3).as_deref(), step.id());
    assert_eq!(
        row.get::<_, Option<String>>(4).as_deref(),
        Some("TERMINATED")
    );
    assert_eq!(row.get::<_, Option<String>>(5).as_deref(), Some("RUNNING"));
    assert_eq!(row.get::<_, Option<bool>>(6), Some(true));

    // Nobody plays the cluster this time: the limit ends the run, the cluster is terminated
    // and the histories go back to PENDING with one attempt used, with no items.
    let ids = insert_histories(&env);
    let started = Instant::now();
    let out = emr
        .run_command(&["--force", "--emr-timeout", "2s"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(30));
    let second = emr.wait_for_cluster(&[&cluster_id]);
    assert_eq!(emr.state(&second), "TERMINATED");
    assert!(
        statuses(&env, &ids)
            .iter()
            .all(|s| *s == ("PENDING".into(), 1))
    );
    assert!(env.history_items(&ids).iter().all(Vec::is_empty));
    let error: String = env
        .db
        .client()
        .query_one("SELECT error FROM job_runs ORDER BY id DESC LIMIT 1", &[])
        .unwrap()
        .get(0);
    assert!(error.contains("timed out after 2s"), "{error}");

    // Ctrl-C while the cluster starts, and SIGTERM (a scheduler or systemd stopping the driver):
    // the driver terminates the cluster and gives the histories back, at once.
    let mut known = vec![cluster_id.clone(), second.clone()];
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let ids = insert_histories(&env);
        let driver = emr
            .run_command(&["--force", "--emr-timeout", "120s"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let known_ids: Vec<&str> = known.iter().map(String::as_str).collect();
        let cluster = emr.wait_for_cluster(&known_ids);
        let sent = Instant::now();
        // SAFETY: kill(2) on the child this test spawned.
        assert_eq!(unsafe { libc::kill(driver.id() as i32, signal) }, 0);
        let out = driver.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "signal {signal}: {stderr}");
        assert!(sent.elapsed() < Duration::from_secs(20), "signal {signal}");
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let error = summary["error"].as_str().unwrap_or_default();
        assert!(error.contains("interrupted"), "signal {signal}: {summary}");
        assert_eq!(emr.state(&cluster), "TERMINATED", "signal {signal}");
        assert!(
            statuses(&env, &ids)
                .iter()
                .all(|s| *s == ("PENDING".into(), 1)),
            "signal {signal}"
        );
        known.push(cluster);
    }

    // `facematch emr status|terminate` on a cluster someone left running.
    let manual = emr.runtime.block_on(async {
        client
            .run_job_flow()
            .name("facematch-pool")
            .release_label("emr-7.5.0")
            .instances(
                aws_sdk_emr::types::JobFlowInstancesConfig::builder()
                    .keep_job_flow_alive_when_no_steps(true)
                    .build(),
            )
            .send()
            .await
            .unwrap()
            .job_flow_id()
            .unwrap()
            .to_string()
    });
    let emr_env = |args: &[&str]| {
        let mut cmd = env.command(args);
        cmd.env("FACEMATCH_EMR_ENDPOINT", &emr.moto.endpoint);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let status = emr_env(&["emr", "status"]);
    assert!(
        status.contains(&manual) && status.contains("WAITING"),
        "{status}"
    );
    assert!(
        !status.contains(&cluster_id),
        "terminated clusters are not listed: {status}"
    );
    let status = emr_env(&["--json", "emr", "status", &cluster_id]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status[0]["state"], "TERMINATED");
    assert_eq!(status[0]["steps"][0]["id"], step.id().unwrap());
    emr_env(&["emr", "terminate", &manual]);
    assert_eq!(emr.state(&manual), "TERMINATED");
}
