//! The EMR flags of `run`/`search`/`schedule` (`--emr-*`, with environment fall-backs that the
//! Terraform outputs map onto) and `facematch emr status|terminate`.

use crate::output::print_json;
use crate::runner::emr::{Emr, EmrOptions};
use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use facematch_datasets::S3Options;
use std::path::PathBuf;
use std::time::Duration;

/// Where and how `--runner emr` runs.
#[derive(Debug, Clone, Args)]
pub struct EmrArgs {
    /// emr: s3://bucket/prefix for the staged binary, the runs and the logs (Terraform output
    /// `facematch_emr_prefix`).
    #[arg(long, env = "FACEMATCH_EMR_PREFIX")]
    pub emr_prefix: Option<String>,
    /// emr: run on this running cluster (j-…) instead of starting one.
    #[arg(long, env = "FACEMATCH_EMR_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// emr: the facematch executable the cluster runs, built for its OS (default: this one).
    #[arg(long, env = "FACEMATCH_EMR_BINARY")]
    pub emr_binary: Option<PathBuf>,
    /// emr: the worker bundle a build's cluster runs (`make worker-bundle`; default: the one in
    /// target/worker/ beside this executable).
    #[arg(long, env = "FACEMATCH_EMR_BUNDLE")]
    pub emr_bundle: Option<PathBuf>,
    /// emr: EMR release.
    #[arg(long, env = "FACEMATCH_EMR_RELEASE", default_value = "emr-7.5.0")]
    pub emr_release: String,
    /// emr: core nodes (one worker process each; the primary node runs process 0).
    #[arg(long, env = "FACEMATCH_EMR_CORE_NODES", default_value_t = 2)]
    pub emr_core_nodes: usize,
    /// emr: instance type of the primary node.
    #[arg(long, env = "FACEMATCH_EMR_PRIMARY_TYPE", default_value = "m7i.xlarge")]
    pub emr_primary_type: String,
    /// emr: instance type of the core nodes.
    #[arg(long, env = "FACEMATCH_EMR_CORE_TYPE", default_value = "c7i.2xlarge")]
    pub emr_core_type: String,
    /// emr: EMR service role (Terraform output `emr_service_role`).
    #[arg(
        long,
        env = "FACEMATCH_EMR_SERVICE_ROLE",
        default_value = "EMR_DefaultRole"
    )]
    pub emr_service_role: String,
    /// emr: instance profile of the nodes (Terraform output `emr_instance_profile`).
    #[arg(
        long,
        env = "FACEMATCH_EMR_INSTANCE_PROFILE",
        default_value = "EMR_EC2_DefaultRole"
    )]
    pub emr_instance_profile: String,
    /// emr: security configuration (Terraform output `emr_security_configuration`).
    #[arg(long, env = "FACEMATCH_EMR_SECURITY_CONFIGURATION")]
    pub emr_security_configuration: Option<String>,
    /// emr: subnet for the nodes (Terraform output `emr_subnet_id`).
    #[arg(long, env = "FACEMATCH_EMR_SUBNET")]
    pub emr_subnet: Option<String>,
    /// emr: security group of the primary node (Terraform output `emr_primary_security_group`).
    #[arg(long, env = "FACEMATCH_EMR_PRIMARY_SG")]
    pub emr_primary_sg: Option<String>,
    /// emr: security group of the core nodes (Terraform output `emr_core_security_group`).
    #[arg(long, env = "FACEMATCH_EMR_CORE_SG")]
    pub emr_core_sg: Option<String>,
    /// emr: service-access security group (Terraform output `emr_service_access_security_group`).
    #[arg(long, env = "FACEMATCH_EMR_SERVICE_SG")]
    pub emr_service_sg: Option<String>,
    /// emr: EC2 key pair for SSH to the nodes.
    #[arg(long, env = "FACEMATCH_EMR_KEY_NAME")]
    pub emr_key_name: Option<String>,
    /// emr: tag the cluster, KEY=VALUE (repeatable).
    #[arg(long = "emr-tag", value_parser = parse_tag)]
    pub emr_tags: Vec<(String, String)>,
    /// emr: give up (and terminate) after this long, start-up included.
    #[arg(long, default_value = "2h", value_parser = positive_duration)]
    pub emr_timeout: Duration,
    /// emr: first polling interval (doubles up to --emr-poll-max).
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    pub emr_poll: Duration,
    /// emr: longest polling interval.
    #[arg(long, default_value = "60s", value_parser = positive_duration)]
    pub emr_poll_max: Duration,
    /// emr: an idle cluster terminates itself after this long.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub emr_idle_timeout: Duration,
    /// emr: keep the cluster this run starts after a success (use it with --cluster-id).
    #[arg(long)]
    pub emr_keep_alive: bool,
    /// emr: print the RunJobFlow request a run would send, as JSON, and exit; nothing is
    /// claimed, staged or started, and AWS is not called.
    #[arg(long)]
    pub emr_dry_run: bool,
    /// emr: the planner's estimate of a new cluster's start-up.
    #[arg(long, default_value = "7m", value_parser = humantime::parse_duration)]
    pub emr_startup: Duration,
    /// emr: the TCP ports the worker processes listen on, FROM-TO (Terraform output
    /// `emr_port_range`: what the cluster's security groups open between the nodes).
    #[arg(long, env = "FACEMATCH_EMR_PORT_RANGE", default_value = "42000-42063")]
    pub emr_port_range: crate::cluster::PortRange,
    /// emr: EMR endpoint (emulators; `AWS_ENDPOINT_URL` is honoured too).
    #[arg(long, env = "FACEMATCH_EMR_ENDPOINT")]
    pub emr_endpoint: Option<String>,
}

/// A duration such as `10s` or `2h`, more than zero (a zero poll would be a busy loop).
fn positive_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be more than 0 (e.g. 500ms, 10s)".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

impl EmrArgs {
    /// The runner's options; `threads` is the timely threads per process.
    pub fn options(
        &self,
        threads: usize,
        peer_timeout: Duration,
        s3: &S3Options,
    ) -> Result<EmrOptions> {
        let Some(prefix) = self.emr_prefix.clone() else {
            bail!("--runner emr needs --emr-prefix s3://bucket/prefix (or FACEMATCH_EMR_PREFIX)");
        };
        if self.emr_core_nodes == 0 {
            bail!("--emr-core-nodes must be at least 1");
        }
        let prefix = prefix.trim_end_matches('/').to_string();
        let mut tags = vec![("facematch".to_string(), "worker".to_string())];
        tags.extend(self.emr_tags.iter().cloned());
        Ok(EmrOptions {
            log_uri: format!("{prefix}/logs/"),
            prefix,
            cluster_id: self.cluster_id.clone(),
            binary: self.emr_binary.clone(),
            bundle: self.emr_bundle.clone(),
            name: "facematch".into(),
            release_label: self.emr_release.clone(),
            primary_type: self.emr_primary_type.clone(),
            core_type: self.emr_core_type.clone(),
            core_nodes: self.emr_core_nodes,
            threads,
            port_range: self.emr_port_range,
            service_role: self.emr_service_role.clone(),
            instance_profile: self.emr_instance_profile.clone(),
            security_configuration: self.emr_security_configuration.clone(),
            subnet_id: self.emr_subnet.clone(),
            primary_security_group: self.emr_primary_sg.clone(),
            core_security_group: self.emr_core_sg.clone(),
            service_access_security_group: self.emr_service_sg.clone(),
            key_name: self.emr_key_name.clone(),
            tags,
            idle_timeout: self.emr_idle_timeout,
            timeout: self.emr_timeout,
            poll: self.emr_poll,
            poll_max: self.emr_poll_max.max(self.emr_poll),
            connect_timeout: Duration::from_secs(300),
            peer_timeout,
            join_timeout: Duration::from_secs(600),
            keep_alive: self.emr_keep_alive,
            startup: self.emr_startup,
            endpoint: self.emr_endpoint.clone(),
            region: s3.region.clone(),
            s3: s3.clone(),
        })
    }
}

/// Which EMR API to talk to.
#[derive(Debug, Args)]
pub struct EmrApiArgs {
    /// EMR endpoint (emulators).
    #[arg(long, env = "FACEMATCH_EMR_ENDPOINT")]
    emr_endpoint: Option<String>,
    /// AWS region (default: the AWS chain, then us-east-1).
    #[arg(long, env = "AWS_REGION")]
    region: Option<String>,
}

impl EmrApiArgs {
    fn connect(&self) -> Result<Emr> {
        Emr::connect(self.emr_endpoint.as_deref(), self.region.as_deref())
    }
}

/// `facematch emr …`.
#[derive(Debug, Subcommand)]
pub enum EmrCommand {
    /// A cluster's state and steps; without an id, the facematch clusters still up.
    Status {
        /// Cluster id (j-…).
        cluster_id: Option<String>,
        #[command(flatten)]
        api: EmrApiArgs,
    },
    /// Terminate clusters.
    Terminate {
        /// Cluster ids (j-…).
        #[arg(required = true)]
        cluster_ids: Vec<String>,
        #[command(flatten)]
        api: EmrApiArgs,
    },
}

/// Runs `facematch emr …`.
pub fn exec(cmd: EmrCommand, json: bool) -> Result<()> {
    match cmd {
        EmrCommand::Status { cluster_id, api } => {
            let emr = api.connect()?;
            let ids = match cluster_id {
                Some(id) => vec![id],
                None => emr.active_clusters()?,
            };
            let reports = ids
                .iter()
                .map(|id| emr.status(id))
                .collect::<Result<Vec<_>>>()?;
            if json {
                return print_json(&reports);
            }
            if reports.is_empty() {
                println!("no facematch clusters are up");
            }
            for report in &reports {
                let reason = report
                    .reason
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                println!("{} {}{reason}", report.cluster_id, report.state);
                for step in &report.steps {
                    println!("  {} {} {}", step.id, step.state, step.name);
                }
            }
        }
        EmrCommand::Terminate { cluster_ids, api } => {
            let emr = api.connect()?;
            for id in &cluster_ids {
                emr.terminate(id)?;
                if !json {
                    println!("{id}: terminating");
                }
            }
            if json {
                return print_json(&cluster_ids);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::DEFAULT_PEER_TIMEOUT;
    use crate::runner::emr::request::{Staged, bootstrap_args, cluster_tags};
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        emr: EmrArgs,
    }

    /// The scheduled run's state machine (infra/terraform/schedule.tf) starts clusters without
    /// the driver, so its bootstrap arguments and tags must be the ones the driver sends. Both
    /// sides are checked against one file: this test the driver's, emr.tftest.hcl Terraform's.
    #[test]
    fn the_terraform_state_machine_starts_the_workers_the_driver_would() {
        let fixture: serde_json::Value = serde_json::from_str(include_str!(
            "../../../infra/terraform/tests/driver-request.json"
        ))
        .expect("driver-request.json parses");
        let text = |key: &str| fixture[key].as_str().expect(key).to_string();
        let prefix = text("prefix");
        let cli = Cli::parse_from(["facematch", "--emr-prefix", &prefix]);
        let threads = fixture["threads"].as_u64().expect("threads") as usize;
        let options = cli
            .emr
            .options(threads, DEFAULT_PEER_TIMEOUT, &S3Options::default())
            .unwrap();
        let staged = Staged {
            binary: text("binary_uri"),
            bootstrap: format!("{prefix}/bin/bootstrap.sh"),
            rendezvous: format!("{prefix}/runs/run-1"),
            pools: format!("{prefix}/pools"),
        };
        let expected: Vec<String> =
            serde_json::from_value(fixture["bootstrap_args"].clone()).expect("bootstrap_args");
        assert_eq!(bootstrap_args(&options, &staged), expected);
        let mut sent: Vec<serde_json::Value> = cluster_tags(&options)
            .into_iter()
            .map(|(key, value)| serde_json::json!({ "Key": key, "Value": value }))
            .collect();
        let mut listed = fixture["tags"].as_array().expect("tags").clone();
        let by_key = |t: &serde_json::Value| t["Key"].as_str().unwrap_or_default().to_string();
        sent.sort_by_key(by_key);
        listed.sort_by_key(by_key);
        assert_eq!(sent, listed, "the tags the driver sends on RunJobFlow");
    }
}
