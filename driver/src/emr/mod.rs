//! `--runner emr` (SPEC section 6): the job runs on an AWS EMR cluster — one started for the run
//! (RunJobFlow) or a running one (`--cluster-id`, pooling as mrjob has).
//!
//! The driver stages the worker binary, a bootstrap script and the run's rendezvous (the job
//! spec) under an S3 prefix. The bootstrap action installs the binary on every node and starts
//! pool workers on the core and task nodes — the processes runner's joiner command. The step
//! runs process 0 — the processes runner's process 0 command. The driver then watches the
//! cluster, the step and the rendezvous ([`supervise`]) and records what it sees in `job_runs`.
//! Staging layout under the prefix: `bin/` (binary, script), `runs/<run>/` (rendezvous),
//! `pools/<cluster-id>/current` (the run a cluster's workers join next), `logs/` (EMR logs).

pub mod cli;
pub mod request;
pub mod supervise;

use crate::cluster::{Pool, Rendezvous};
use crate::runner::{Capacity, ClusterStatus, RunContext, Runner};
use anyhow::{Context, Result, anyhow, bail};
use aws_sdk_emr::types::{ClusterState, InstanceGroupType, StepState};
use facematch_datasets::{S3Options, Storage};
use facematch_job::{JobOutput, JobSpec};
use request::Staged;
use serde::Serialize;
use sha2::Digest;
use std::future::Future;
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
    /// The executable the cluster runs (built for its OS); default: this one.
    pub binary: Option<std::path::PathBuf>,
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

/// An EMR client and the runtime its calls run on (the driver is synchronous).
pub struct Emr {
    client: aws_sdk_emr::Client,
    runtime: tokio::runtime::Runtime,
}

impl Emr {
    /// A client from the AWS chain, with an optional endpoint and region.
    pub fn connect(endpoint: Option<&str>, region: Option<&str>) -> Result<Emr> {
        let runtime = runtime()?;
        let config = runtime.block_on(async {
            let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
            if let Some(region) = region {
                loader = loader.region(aws_config::Region::new(region.to_string()));
            }
            if let Some(endpoint) = endpoint {
                loader = loader.endpoint_url(endpoint);
            }
            loader.load().await
        });
        let mut builder = aws_sdk_emr::config::Builder::from(&config);
        if config.region().is_none() {
            builder = builder.region(aws_config::Region::new("us-east-1"));
        }
        Ok(Emr {
            client: aws_sdk_emr::Client::from_conf(builder.build()),
            runtime,
        })
    }

    /// Wraps a client (tests pass a mocked one).
    pub fn from_client(client: aws_sdk_emr::Client) -> Result<Emr> {
        Ok(Emr {
            client,
            runtime: runtime()?,
        })
    }

    /// The client.
    pub fn client(&self) -> &aws_sdk_emr::Client {
        &self.client
    }

    fn call<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// A cluster's state and, if any, why it changed.
    pub fn cluster_state(&self, cluster_id: &str) -> Result<(ClusterState, Option<String>)> {
        let out = self
            .call(self.client.describe_cluster().cluster_id(cluster_id).send())
            .with_context(|| format!("DescribeCluster {cluster_id}"))?;
        let status = out.cluster().and_then(|c| c.status());
        let state = status
            .and_then(|s| s.state())
            .cloned()
            .ok_or_else(|| anyhow!("DescribeCluster {cluster_id}: no state"))?;
        let reason = status
            .and_then(|s| s.state_change_reason())
            .and_then(|r| r.message())
            .map(str::to_string);
        Ok((state, reason))
    }

    /// A step's state and, if it failed, why.
    pub fn step_state(
        &self,
        cluster_id: &str,
        step_id: &str,
    ) -> Result<(StepState, Option<String>)> {
        let out = self
            .call(
                self.client
                    .describe_step()
                    .cluster_id(cluster_id)
                    .step_id(step_id)
                    .send(),
            )
            .with_context(|| format!("DescribeStep {cluster_id} {step_id}"))?;
        let status = out.step().and_then(|s| s.status());
        let state = status
            .and_then(|s| s.state())
            .cloned()
            .ok_or_else(|| anyhow!("DescribeStep {step_id}: no state"))?;
        let failure = status.and_then(|s| s.failure_details()).map(|f| {
            [f.reason(), f.message(), f.log_file()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("; ")
        });
        Ok((state, failure))
    }

    /// Terminates clusters.
    pub fn terminate(&self, cluster_id: &str) -> Result<()> {
        self.call(
            self.client
                .terminate_job_flows()
                .job_flow_ids(cluster_id)
                .send(),
        )
        .with_context(|| format!("TerminateJobFlows {cluster_id}"))?;
        tracing::info!(cluster = cluster_id, "terminating");
        Ok(())
    }

    /// Worker processes a running cluster offers: the primary node plus its running core and
    /// task instances.
    pub fn processes_of(&self, cluster_id: &str) -> Result<usize> {
        let out = self
            .call(
                self.client
                    .list_instance_groups()
                    .cluster_id(cluster_id)
                    .send(),
            )
            .with_context(|| format!("ListInstanceGroups {cluster_id}"))?;
        let workers: i32 = out
            .instance_groups()
            .iter()
            .filter(|g| {
                matches!(
                    g.instance_group_type(),
                    Some(InstanceGroupType::Core | InstanceGroupType::Task)
                )
            })
            .map(|g| g.running_instance_count().unwrap_or(0))
            .sum();
        Ok(1 + workers.max(0) as usize)
    }

    /// A cluster's state, reason and steps, for `facematch emr status`.
    pub fn status(&self, cluster_id: &str) -> Result<ClusterReport> {
        let (state, reason) = self.cluster_state(cluster_id)?;
        let out = self
            .call(self.client.list_steps().cluster_id(cluster_id).send())
            .with_context(|| format!("ListSteps {cluster_id}"))?;
        let steps = out
            .steps()
            .iter()
            .map(|s| StepReport {
                id: s.id().unwrap_or_default().to_string(),
                name: s.name().unwrap_or_default().to_string(),
                state: s
                    .status()
                    .and_then(|s| s.state())
                    .map_or("?", |s| s.as_str())
                    .to_string(),
            })
            .collect();
        Ok(ClusterReport {
            cluster_id: cluster_id.to_string(),
            state: state.as_str().to_string(),
            reason,
            steps,
        })
    }

    /// The facematch clusters not terminated yet.
    pub fn active_clusters(&self) -> Result<Vec<String>> {
        let out = self
            .call(
                self.client
                    .list_clusters()
                    .cluster_states(ClusterState::Starting)
                    .cluster_states(ClusterState::Bootstrapping)
                    .cluster_states(ClusterState::Running)
                    .cluster_states(ClusterState::Waiting)
                    .send(),
            )
            .context("ListClusters")?;
        Ok(out
            .clusters()
            .iter()
            .filter(|c| c.name().is_some_and(|n| n.starts_with("facematch")))
            .filter_map(|c| c.id().map(str::to_string))
            .collect())
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime for EMR")
}

/// What `facematch emr status` prints.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterReport {
    /// Cluster id.
    pub cluster_id: String,
    /// Cluster state.
    pub state: String,
    /// Why it last changed state.
    pub reason: Option<String>,
    /// Its steps, newest first.
    pub steps: Vec<StepReport>,
}

/// One step of a cluster.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// Step id.
    pub id: String,
    /// Step name.
    pub name: String,
    /// Step state.
    pub state: String,
}

/// Runs the job on EMR.
pub struct EmrRunner {
    /// Options.
    pub options: EmrOptions,
    emr: Emr,
    cancelled: Box<dyn Fn() -> bool + Send + Sync>,
}

impl EmrRunner {
    /// Connects to EMR; Ctrl-C terminates what the run started.
    pub fn new(options: EmrOptions) -> Result<EmrRunner> {
        let emr = Emr::connect(options.endpoint.as_deref(), options.region.as_deref())?;
        crate::signals::install();
        Ok(EmrRunner::with_client(
            options,
            emr,
            Box::new(crate::signals::interrupted),
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
        }
    }

    fn staging(&self) -> Result<Storage> {
        Ok(Storage::open(&self.options.prefix, &self.options.s3)?)
    }

    /// Uploads the binary (once per content) and the bootstrap script, and publishes the job.
    pub fn stage(&self, spec: &JobSpec, run_id: i64) -> Result<Staged> {
        let staging = self.staging()?;
        let path = match &self.options.binary {
            Some(path) => path.clone(),
            None => std::env::current_exe().context("cannot find the facematch executable")?,
        };
        let binary = std::fs::read(&path)
            .with_context(|| format!("cannot read the worker binary {}", path.display()))?;
        let digest = hex::encode(sha2::Sha256::digest(&binary));
        let binary_key = format!("bin/facematch-{}", &digest[..16]);
        if !staging.exists(&binary_key)? {
            staging.put(&binary_key, binary.into())?;
        }
        let script = request::BOOTSTRAP_SCRIPT.as_bytes();
        let script_digest = hex::encode(sha2::Sha256::digest(script));
        let script_key = format!("bin/bootstrap-{}.sh", &script_digest[..16]);
        staging.put(&script_key, script.to_vec().into())?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let rendezvous = staging.uri_of(&format!("runs/run-{run_id}-{nanos}"));
        Rendezvous::open(&rendezvous, &self.options.s3)?.publish_spec(spec)?;
        Ok(Staged {
            binary: staging.uri_of(&binary_key),
            bootstrap: staging.uri_of(&script_key),
            rendezvous,
            pools: staging.uri_of("pools"),
        })
    }

    /// Starts the cluster (or adds the step to the running one) and points its pool at the run.
    fn launch(&self, staged: &Staged) -> Result<ClusterStatus> {
        let options = &self.options;
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
                    Ok(step_id) => Ok(ClusterStatus {
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
                    .point_at(&staged.rendezvous)?;
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
                Ok(ClusterStatus {
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
        Pool::open(&staged.pool_of(cluster_id), &self.options.s3)?.point_at(&staged.rendezvous)?;
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
        Ok(())
    }

    fn execute(&self, spec: Arc<JobSpec>, context: &dyn RunContext) -> Result<JobOutput> {
        let staged = self.stage(&spec, context.run_id())?;
        let status = self.launch(&staged)?;
        context.record(&status);
        let rendezvous = Rendezvous::open(&staged.rendezvous, &self.options.s3)?;
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
    }
}
