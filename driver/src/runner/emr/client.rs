//! The EMR API as the runner and `facematch emr` use it: a synchronous face over aws-sdk-emr
//! (the driver is synchronous; each call runs on a runtime of its own).

use anyhow::{Context, Result, anyhow};
use aws_sdk_emr::types::{ClusterState, InstanceGroupType, StepState};
use serde::Serialize;
use std::future::Future;

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

    /// A client that never reaches AWS on its own (static placeholder credentials, no
    /// credential chain): what a dry run serialises requests with.
    pub fn offline(region: &str) -> Result<Emr> {
        let config = aws_sdk_emr::Config::builder()
            .behavior_version(aws_sdk_emr::config::BehaviorVersion::latest())
            .region(aws_sdk_emr::config::Region::new(region.to_string()))
            .credentials_provider(aws_sdk_emr::config::Credentials::new(
                "dry-run",
                "dry-run",
                None,
                None,
                "facematch",
            ))
            .build();
        Emr::from_client(aws_sdk_emr::Client::from_conf(config))
    }

    /// The client.
    pub fn client(&self) -> &aws_sdk_emr::Client {
        &self.client
    }

    pub(super) fn call<F: Future>(&self, future: F) -> F::Output {
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

/// An interceptor that keeps a request's serialised body and stops the call there.
#[derive(Debug)]
pub struct CaptureBody(pub std::sync::Arc<std::sync::Mutex<Option<Vec<u8>>>>);

impl aws_sdk_emr::config::Intercept for CaptureBody {
    fn name(&self) -> &'static str {
        "facematch dry run"
    }

    fn read_after_serialization(
        &self,
        context: &aws_sdk_emr::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _: &aws_sdk_emr::config::RuntimeComponents,
        _: &mut aws_sdk_emr::config::ConfigBag,
    ) -> Result<(), aws_sdk_emr::error::BoxError> {
        let body = context.request().body().bytes().map(<[u8]>::to_vec);
        if let Ok(mut slot) = self.0.lock() {
            *slot = body;
        }
        Err("dry run: stopped before sending".into())
    }
}
