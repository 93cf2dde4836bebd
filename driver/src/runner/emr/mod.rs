//! `--runner emr` (ARCHITECTURE.md: Where it runs): the job runs on an AWS EMR cluster — one
//! started for the run (RunJobFlow) or a running one (`--cluster-id`, pooling as mrjob has).
//!
//! The driver stages the worker binary (for a build, the worker bundle), a bootstrap script and
//! the run's rendezvous (the work's spec) under an S3 prefix. The bootstrap action installs it
//! on every node and starts
//! pool workers on the core and task nodes — the processes runner's joiner command. The step
//! runs process 0 — the processes runner's process 0 command. The driver then watches the
//! cluster, the step and the rendezvous ([`supervise`]) and records what it sees in `job_runs`.
//! Staging layout under the prefix: `bin/` (binary, script), `runs/<run>/` (rendezvous),
//! `pools/<cluster-id>/current` (the run a cluster's workers join next), `logs/` (EMR logs).

pub mod binary;
pub mod client;
pub mod request;
pub mod supervise;

use super::{Capacity, RemoteJob, RunContext, Runner, WorkerLost};
use crate::cluster::{Pool, Rendezvous};
use anyhow::{Context, Result, anyhow, bail};
pub use client::{ClusterReport, Emr, StepReport};
use facematch_datasets::{S3Options, Storage};
use facematch_job::{Work, WorkOutput};
use request::Staged;
use sha2::Digest;
use std::sync::Arc;
use std::time::Duration;
use supervise::{Watch, supervise};

/// Everything `--runner emr` needs to know.
#[derive(Debug, Clone)]
pub struct EmrOptions {
    /// `s3://bucket/prefix` for the binary, the runs, the pools and (by default) the logs.
    pub prefix: String,
    /// Use this running cluster instead of starting one.
    pub cluster_id: Option<String>,
    /// The executable the cluster runs for a search (built for its OS); default: this one.
    pub binary: Option<std::path::PathBuf>,
    /// The worker bundle the cluster runs for a build; default: `make worker-bundle`'s.
    pub bundle: Option<std::path::PathBuf>,
    /// Cluster name.
    pub name: String,
    /// EMR release, e.g. `emr-7.5.0`.
    pub release_label: String,
    /// Primary node instance type.
    pub primary_type: String,
    /// Core node instance type.
    pub core_type: String,
    /// Core nodes (one worker process each).
    pub core_nodes: usize,
    /// Timely threads per worker process.
    pub threads: usize,
    /// The ports the worker processes listen on (what the security groups open).
    pub port_range: crate::cluster::PortRange,
    /// EMR service role.
    pub service_role: String,
    /// EC2 instance profile of the nodes.
    pub instance_profile: String,
    /// EMR security configuration name.
    pub security_configuration: Option<String>,
    /// Subnet to start the nodes in.
    pub subnet_id: Option<String>,
    /// Security group of the primary node.
    pub primary_security_group: Option<String>,
    /// Security group of the core and task nodes.
    pub core_security_group: Option<String>,
    /// Service-access security group (private subnets).
    pub service_access_security_group: Option<String>,
    /// EC2 key pair for SSH.
    pub key_name: Option<String>,
    /// Where EMR writes its logs.
    pub log_uri: String,
    /// Tags on the cluster.
    pub tags: Vec<(String, String)>,
    /// Auto-termination after this much idle time.
    pub idle_timeout: Duration,
    /// The whole run's limit, start-up included.
    pub timeout: Duration,
    /// First polling interval (doubles up to `poll_max`).
    pub poll: Duration,
    /// Longest polling interval.
    pub poll_max: Duration,
    /// How long process 0 waits for the others once it runs.
    pub connect_timeout: Duration,
    /// How long a worker process may go without a heartbeat before the run is given up.
    pub peer_timeout: Duration,
    /// How long a pool worker waits for a run before its loop restarts it.
    pub join_timeout: Duration,
    /// Keep a cluster this run started after a success (for `--cluster-id` runs later).
    pub keep_alive: bool,
    /// What the planner assumes a new cluster takes to start.
    pub startup: Duration,
    /// EMR endpoint override (emulators).
    pub endpoint: Option<String>,
    /// Region (default: the AWS chain, then us-east-1).
    pub region: Option<String>,
    /// S3 access for staging and the rendezvous.
    pub s3: S3Options,
}

/// The staging keys of a run's binary and bootstrap script, under the prefix.
struct StagedKeys {
    binary: String,
    bootstrap: String,
}

/// Runs the job on EMR.
pub struct EmrRunner {
    /// Options.
    pub options: EmrOptions,
    emr: Emr,
    cancelled: Box<dyn Fn() -> bool + Send + Sync>,
    /// The executable staged for the nodes' searches, once checked.
    binary: std::sync::OnceLock<std::path::PathBuf>,
    /// The worker bundle staged for the nodes' builds, once checked.
    bundle: std::sync::OnceLock<std::path::PathBuf>,
}

impl EmrRunner {
    /// Connects to EMR; Ctrl-C or SIGTERM (a scheduler or systemd stopping the driver)
    /// terminates what the run started.
    pub fn new(options: EmrOptions) -> Result<EmrRunner> {
        let emr = Emr::connect(options.endpoint.as_deref(), options.region.as_deref())?;
        crate::signals::install();
        Ok(EmrRunner::with_client(
            options,
            emr,
            Box::new(crate::signals::stop_requested),
        ))
    }

    /// A runner on `emr`, cancelled when `cancelled` says so (tests).
    pub fn with_client(
        options: EmrOptions,
        emr: Emr,
        cancelled: Box<dyn Fn() -> bool + Send + Sync>,
    ) -> EmrRunner {
        EmrRunner {
            options,
            emr,
            cancelled,
            binary: std::sync::OnceLock::new(),
            bundle: std::sync::OnceLock::new(),
        }
    }

    /// The portable executable the nodes run ([`binary::resolve`]), checked once.
    pub fn binary(&self) -> Result<&std::path::Path> {
        if let Some(path) = self.binary.get() {
            return Ok(path);
        }
        let path = binary::resolve(self.options.binary.as_deref())?;
        Ok(self.binary.get_or_init(|| path))
    }

    /// The worker bundle a build's nodes run ([`binary::resolve_bundle`]), checked once.
    pub fn bundle(&self) -> Result<&std::path::Path> {
        if let Some(path) = self.bundle.get() {
            return Ok(path);
        }
        let path = binary::resolve_bundle(self.options.bundle.as_deref())?;
        Ok(self.bundle.get_or_init(|| path))
    }

    /// What the nodes install for `work`: the portable binary for a search, the worker bundle
    /// (the face pipeline and its libraries) for a build.
    fn executable_for(&self, work: &Work) -> Result<&std::path::Path> {
        match work {
            Work::Search(_) => self.binary(),
            #[allow(unreachable_patterns)]
            _ => self.bundle(),
        }
    }

    fn staging(&self) -> Result<Storage> {
        Ok(Storage::open(&self.options.prefix, &self.options.s3)?)
    }

    /// Uploads the binary or bundle (once per content) and the bootstrap script, and publishes
    /// the work.
    pub fn stage(&self, work: &Work, run_id: i64) -> Result<Staged> {
        let staging = self.staging()?;
        let path = self.executable_for(work)?;
        let binary = std::fs::read(path)
            .with_context(|| format!("cannot read the worker binary {}", path.display()))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let (staged, keys) = self.locations(&binary, &format!("run-{run_id}-{nanos}"));
        if !staging.exists(&keys.binary)? {
            staging.put(&keys.binary, binary.into())?;
        }
        staging.put(
            &keys.bootstrap,
            request::BOOTSTRAP_SCRIPT.as_bytes().to_vec().into(),
        )?;
        Rendezvous::open(&staged.rendezvous, &self.options.s3)?.publish_spec(work)?;
        Ok(staged)
    }

    /// Where a run named `run` stages `binary`, the bootstrap script and its rendezvous under
    /// the prefix (the binary and the script are content-addressed), and their keys.
    fn locations(&self, binary: &[u8], run: &str) -> (Staged, StagedKeys) {
        let prefix = self.options.prefix.trim_end_matches('/');
        let digest = hex::encode(sha2::Sha256::digest(binary));
        let script_digest = hex::encode(sha2::Sha256::digest(request::BOOTSTRAP_SCRIPT));
        // The bootstrap action tells a bundle by its ending; gzip's magic bytes tell it here.
        let binary_key = if binary.starts_with(&[0x1f, 0x8b]) {
            format!(
                "bin/facematch-bundle-{}{}",
                &digest[..16],
                binary::BUNDLE_SUFFIX
            )
        } else {
            format!("bin/facematch-{}", &digest[..16])
        };
        let keys = StagedKeys {
            binary: binary_key,
            bootstrap: format!("bin/bootstrap-{}.sh", &script_digest[..16]),
        };
        let staged = Staged {
            binary: format!("{prefix}/{}", keys.binary),
            bootstrap: format!("{prefix}/{}", keys.bootstrap),
            rendezvous: format!("{prefix}/runs/{run}"),
            pools: format!("{prefix}/pools"),
        };
        (staged, keys)
    }

    /// The RunJobFlow request a run would send, as the JSON AWS would receive, without
    /// calling AWS or staging anything (`--emr-dry-run`).
    pub fn dry_run(options: EmrOptions) -> Result<serde_json::Value> {
        let region = options.region.clone().unwrap_or_else(|| "us-east-1".into());
        let runner = EmrRunner::with_client(options, Emr::offline(&region)?, Box::new(|| false));
        let binary = std::fs::read(runner.binary()?)?;
        let (staged, _) = runner.locations(&binary, "run-<id>-<time>");
        let captured = std::sync::Arc::new(std::sync::Mutex::new(None));
        let request = request::run_job_flow(runner.emr.client(), &runner.options, &staged)
            .customize()
            .interceptor(client::CaptureBody(captured.clone()));
        // The capture stops the call right after serialisation: nothing leaves this machine.
        let sent = runner.emr.call(request.send());
        let body = captured
            .lock()
            .map_err(|_| anyhow!("capture poisoned"))?
            .take()
            .ok_or_else(|| anyhow!("RunJobFlow was not serialised: {sent:?}"))?;
        Ok(serde_json::from_slice(&body)?)
    }

    /// Starts the cluster (or adds the step to the running one) and points its pool at the run.
    fn launch(&self, staged: &Staged) -> Result<RemoteJob> {
        let options = &self.options;
        if (self.cancelled)() {
            return Err(WorkerLost("interrupted before the cluster was started".into()).into());
        }
        match &options.cluster_id {
            None => {
                let request = request::run_job_flow(self.emr.client(), options, staged);
                let out = self.emr.call(request.send()).context("RunJobFlow")?;
                let cluster_id = out
                    .job_flow_id()
                    .ok_or_else(|| anyhow!("RunJobFlow returned no cluster id"))?
                    .to_string();
                tracing::info!(cluster = cluster_id, "started EMR cluster");
                let step_id = self.point_pool_and_find_step(staged, &cluster_id);
                match step_id {
                    Ok(step_id) => Ok(RemoteJob {
                        cluster_id,
                        step_id: Some(step_id),
                        cluster_state: "STARTING".into(),
                        step_state: None,
                        started_here: true,
                    }),
                    Err(e) => {
                        // Started but not watchable: do not leave it running.
                        if let Err(t) = self.emr.terminate(&cluster_id) {
                            tracing::error!("could not terminate cluster {cluster_id}: {t:#}");
                        }
                        Err(e)
                    }
                }
            }
            Some(cluster_id) => {
                let processes = self.emr.processes_of(cluster_id)?;
                Pool::open(&staged.pool_of(cluster_id), &options.s3)?
                    .point_at(&staged.rendezvous, &options.s3)?;
                let out = self
                    .emr
                    .call(
                        self.emr
                            .client()
                            .add_job_flow_steps()
                            .job_flow_id(cluster_id)
                            .steps(request::step(options, staged, processes, false))
                            .send(),
                    )
                    .with_context(|| format!("AddJobFlowSteps {cluster_id}"))?;
                let step_id =
                    out.step_ids().first().cloned().ok_or_else(|| {
                        anyhow!("AddJobFlowSteps {cluster_id} returned no step id")
                    })?;
                Ok(RemoteJob {
                    cluster_id: cluster_id.clone(),
                    step_id: Some(step_id),
                    cluster_state: String::new(),
                    step_state: None,
                    started_here: false,
                })
            }
        }
    }
}

impl EmrRunner {
    /// Points a new cluster's pool at the run (the nodes read it only once bootstrapped, minutes
    /// from now) and finds the id of the step RunJobFlow added.
    fn point_pool_and_find_step(&self, staged: &Staged, cluster_id: &str) -> Result<String> {
        Pool::open(&staged.pool_of(cluster_id), &self.options.s3)?
            .point_at(&staged.rendezvous, &self.options.s3)?;
        let steps = self
            .emr
            .call(self.emr.client().list_steps().cluster_id(cluster_id).send())
            .with_context(|| format!("ListSteps {cluster_id}"))?;
        steps
            .steps()
            .first()
            .and_then(|s| s.id())
            .map(str::to_string)
            .ok_or_else(|| anyhow!("cluster {cluster_id} lists no step"))
    }
}

impl Runner for EmrRunner {
    fn label(&self) -> String {
        match &self.options.cluster_id {
            Some(id) => format!("emr:{id}"),
            None => format!(
                "emr:{}x{}:{}",
                self.options.core_nodes, self.options.threads, self.options.core_type
            ),
        }
    }

    fn capacity(&self) -> Capacity {
        let (processes, startup) = match &self.options.cluster_id {
            // A running cluster only has to schedule the step and connect.
            Some(_) => (1 + self.options.core_nodes, Duration::from_secs(30)),
            None => (1 + self.options.core_nodes, self.options.startup),
        };
        Capacity {
            threads: processes * self.options.threads,
            startup,
            remote: true,
        }
    }

    fn check(&self, dataset_root: &str) -> Result<()> {
        if !dataset_root.starts_with("s3://") {
            bail!(
                "--runner emr reads the dataset from S3, but it is at {dataset_root}; \
                 export or build it under an s3:// root"
            );
        }
        if !self.options.prefix.starts_with("s3://") {
            bail!(
                "--emr-prefix must be an s3://bucket/prefix, got {}",
                self.options.prefix
            );
        }
        self.binary().map(|_| ())
    }

    fn check_build(&self, photos_root: &str, dataset_root: &str) -> Result<()> {
        if !photos_root.starts_with("s3://") {
            bail!(
                "--runner emr reads the photos from S3, but they are at {photos_root}; \
                 upload them under an s3:// prefix"
            );
        }
        self.check(dataset_root)?;
        self.bundle().map(|_| ())
    }

    fn execute(&self, work: Arc<Work>, context: &dyn RunContext) -> Result<WorkOutput> {
        let staged = self.stage(&work, context.run_id())?;
        let rendezvous = Rendezvous::open(&staged.rendezvous, &self.options.s3)?;
        let outcome = self.launch(&staged).and_then(|status| {
            context.record(&status);
            supervise(
                &self.emr,
                status,
                &rendezvous,
                Watch {
                    poll: self.options.poll,
                    poll_max: self.options.poll_max,
                    timeout: self.options.timeout,
                    keep_alive: self.options.keep_alive,
                },
                context,
                &*self.cancelled,
            )
        });
        // A run given up frees its pool: workers waiting to join it stop, the next run may go.
        if let Err(e) = &outcome
            && !super::is_data_failure(e)
            && let Err(abandon) = rendezvous.abandon(&format!("{e:#}"))
        {
            tracing::warn!("cannot mark {} given up: {abandon:#}", rendezvous.uri());
        }
        outcome
    }
}
