//! The EMR runner's lifecycle against a mocked EMR control plane (`aws-smithy-mocks`): no EMR
//! exists on this machine, so DescribeCluster/DescribeStep answers are scripted here. The staging
//! and the rendezvous are real (a local folder), and so is the runner's polling, recording and
//! terminating. What the cluster's own processes do is tested through the processes runner
//! (tests/processes.rs), which runs the same worker commands, and the request shape against
//! moto_server (tests/emr.rs).

mod common;

use aws_sdk_emr::Client;
use aws_sdk_emr::operation::add_job_flow_steps::AddJobFlowStepsOutput;
use aws_sdk_emr::operation::describe_cluster::DescribeClusterOutput;
use aws_sdk_emr::operation::describe_step::DescribeStepOutput;
use aws_sdk_emr::operation::list_instance_groups::ListInstanceGroupsOutput;
use aws_sdk_emr::operation::list_steps::ListStepsOutput;
use aws_sdk_emr::operation::run_job_flow::RunJobFlowError;
use aws_sdk_emr::operation::run_job_flow::RunJobFlowOutput;
use aws_sdk_emr::operation::terminate_job_flows::{
    TerminateJobFlowsError, TerminateJobFlowsOutput,
};
use aws_sdk_emr::types::error::InternalServerError;
use aws_sdk_emr::types::{
    Cluster, ClusterState, ClusterStatus as EmrClusterStatus, FailureDetails, InstanceGroup,
    InstanceGroupType, Step, StepState, StepStatus, StepSummary,
};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use facematch_datasets::{Manifest, S3Options};
use facematch_driver::cluster::Rendezvous;
use facematch_driver::runner::emr::{Emr, EmrOptions, EmrRunner};
use facematch_driver::runner::{RemoteJob, RunContext, Runner, WorkerLost, is_data_failure};
use facematch_job::{JobOutput, JobSpec, Match};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Records what the runner reports, as `job_runs` would, and what it warns about.
#[derive(Default)]
struct Recorded(Mutex<Vec<RemoteJob>>, Mutex<Vec<String>>);

impl RunContext for Recorded {
    fn run_id(&self) -> i64 {
        7
    }
    fn record(&self, status: &RemoteJob) {
        self.0.lock().unwrap().push(status.clone());
    }
    fn warn(&self, message: &str) {
        self.1.lock().unwrap().push(message.to_string());
    }
}

impl Recorded {
    fn steps(&self) -> Vec<Option<String>> {
        let mut seen: Vec<Option<String>> = Vec::new();
        for s in self.0.lock().unwrap().iter() {
            if seen.last() != Some(&s.step_state) {
                seen.push(s.step_state.clone());
            }
        }
        seen
    }
    fn last(&self) -> RemoteJob {
        self.0.lock().unwrap().last().cloned().unwrap()
    }
}

/// Scripted states: poll i sees `cluster[i]` and `step[i]` (the last ones repeat).
struct Script {
    cluster: Vec<ClusterState>,
    step: Vec<StepState>,
    polls: AtomicUsize,
    /// Where the step publishes its output when it reports COMPLETED (what process 0 does).
    prefix: PathBuf,
    output: Option<JobOutput>,
    terminated: AtomicBool,
    /// TerminateJobFlows fails (a throttled or broken API after the job is done).
    terminate_fails: bool,
    /// RunJobFlow is rejected (a bad subnet, a missing role: EMR's validation).
    run_job_flow_rejected: bool,
}

impl Script {
    fn at<T: Clone>(states: &[T], i: usize) -> T {
        states[i.min(states.len() - 1)].clone()
    }
}

fn options(prefix: &Path, cluster_id: Option<&str>) -> EmrOptions {
    // What a stock EMR node can start: the portable worker binary `make test` builds.
    let binary = common::portable_worker();
    std::fs::create_dir_all(prefix).unwrap();
    EmrOptions {
        prefix: prefix.display().to_string(),
        cluster_id: cluster_id.map(str::to_string),
        binary: Some(binary),
        bundle: None,
        name: "facematch".into(),
        release_label: "emr-7.5.0".into(),
        primary_type: "m7i.xlarge".into(),
        core_type: "c7i.2xlarge".into(),
        core_nodes: 2,
        threads: 4,
        port_range: "42000-42063".parse().unwrap(),
        service_role: "svc".into(),
        instance_profile: "profile".into(),
        security_configuration: None,
        subnet_id: None,
        primary_security_group: None,
        core_security_group: None,
        service_access_security_group: None,
        key_name: None,
        log_uri: format!("{}/logs/", prefix.display()),
        tags: vec![],
        idle_timeout: Duration::from_secs(900),
        timeout: Duration::from_secs(20),
        poll: Duration::from_millis(5),
        poll_max: Duration::from_millis(20),
        connect_timeout: Duration::from_secs(30),
        peer_timeout: Duration::from_secs(30),
        join_timeout: Duration::from_secs(60),
        keep_alive: false,
        startup: Duration::from_secs(420),
        endpoint: None,
        region: None,
        s3: S3Options::default(),
    }
}

fn spec() -> JobSpec {
    JobSpec {
        root_uri: "s3://bucket/datasets".into(),
        s3: S3Options::default(),
        manifest: Manifest {
            format_version: 1,
            name: "d".into(),
            version: 1,
            dim: 4,
            embedder: "synthetic".into(),
            count: 0,
            shards: vec![],
            created_at: "2026-11-23T00:00:00Z".into(),
        },
        queries: vec![],
    }
}

fn output() -> JobOutput {
    let mut output = JobOutput {
        faces_scanned: 1000,
        pairs_scored: 3000,
        ..JobOutput::default()
    };
    output.results.insert(
        5,
        vec![Match {
            face_id: 120_001,
            source: b'A',
            score: 0.812_345_678_901_234_5,
        }],
    );
    output
}

/// The run's rendezvous under `prefix/runs/` (named by the runner).
fn run_folder(prefix: &Path) -> Option<PathBuf> {
    std::fs::read_dir(prefix.join("runs"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .next()
}

struct Outcome {
    result: anyhow::Result<JobOutput>,
    recorded: Recorded,
    script: Arc<Script>,
    terminate_calls: usize,
    run_job_flow_calls: usize,
    add_step_calls: usize,
    elapsed: Duration,
}

fn run(
    script: Script,
    cluster_id: Option<&str>,
    timeout: Duration,
    cancel_after: Option<usize>,
) -> Outcome {
    let script = Arc::new(script);
    let prefix = script.prefix.clone();
    let s = script.clone();
    let describe_cluster = mock!(Client::describe_cluster).then_output(move || {
        let state = Script::at(&s.cluster, s.polls.load(Ordering::SeqCst));
        let state = if s.terminated.load(Ordering::SeqCst) {
            ClusterState::Terminating
        } else {
            state
        };
        DescribeClusterOutput::builder()
            .cluster(
                Cluster::builder()
                    .id("j-MOCK")
                    .status(EmrClusterStatus::builder().state(state).build())
                    .build(),
            )
            .build()
    });
    let s = script.clone();
    let describe_step = mock!(Client::describe_step).then_output(move || {
        let i = s.polls.fetch_add(1, Ordering::SeqCst);
        let state = Script::at(&s.step, i);
        let mut status = StepStatus::builder().state(state.clone());
        if state == StepState::Completed
            && let (Some(output), Some(run)) = (&s.output, run_folder(&s.prefix))
        {
            Rendezvous::open(run.to_str().unwrap(), &S3Options::default())
                .unwrap()
                .publish_output(&facematch_job::WorkOutput::Search(output.clone()))
                .unwrap();
        }
        if state == StepState::Failed {
            status = status.failure_details(
                FailureDetails::builder()
                    .reason("Unknown error")
                    .message("worker exited 101")
                    .log_file("s3://bucket/logs/j-MOCK/steps/s-MOCK/stderr.gz")
                    .build(),
            );
        }
        DescribeStepOutput::builder()
            .step(Step::builder().id("s-MOCK").status(status.build()).build())
            .build()
    });
    // moto keeps no auto-termination policy, so its shape is checked here, on the request sent.
    let run_job_flow = mock!(Client::run_job_flow).match_requests(|req| {
        req.auto_termination_policy().and_then(|p| p.idle_timeout()) == Some(900)
            && req
                .instances()
                .and_then(|i| i.keep_job_flow_alive_when_no_steps())
                == Some(false)
            && req.steps()[0].action_on_failure().map(|a| a.as_str()) == Some("TERMINATE_CLUSTER")
            && req.tags().iter().any(|t| {
                t.key() == Some("for-use-with-amazon-emr-managed-policies")
                    && t.value() == Some("true")
            })
    });
    let run_job_flow = if script.run_job_flow_rejected {
        run_job_flow.then_error(|| {
            RunJobFlowError::InternalServerError(
                InternalServerError::builder()
                    .message("The subnet ID subnet-typo does not exist")
                    .build(),
            )
        })
    } else {
        run_job_flow.then_output(|| RunJobFlowOutput::builder().job_flow_id("j-MOCK").build())
    };
    let list_steps = mock!(Client::list_steps).then_output(|| {
        ListStepsOutput::builder()
            .steps(
                StepSummary::builder()
                    .id("s-MOCK")
                    .name("facematch process 0")
                    .build(),
            )
            .build()
    });
    // A running cluster's step is sized to its nodes: 1 primary + 3 running core instances.
    let add_steps = mock!(Client::add_job_flow_steps)
        .match_requests(|req| {
            let args = req.steps()[0]
                .hadoop_jar_step()
                .map(|s| s.args().join(" "))
                .unwrap_or_default();
            req.job_flow_id() == Some("j-POOLED")
                && args.contains("worker --rendezvous")
                && args.contains("--process 0 --processes 4")
        })
        .then_output(|| AddJobFlowStepsOutput::builder().step_ids("s-MOCK").build());
    let groups = mock!(Client::list_instance_groups).then_output(|| {
        ListInstanceGroupsOutput::builder()
            .instance_groups(
                InstanceGroup::builder()
                    .instance_group_type(InstanceGroupType::Master)
                    .running_instance_count(1)
                    .build(),
            )
            .instance_groups(
                InstanceGroup::builder()
                    .instance_group_type(InstanceGroupType::Core)
                    .running_instance_count(3)
                    .build(),
            )
            .build()
    });
    let s = script.clone();
    let terminate = if script.terminate_fails {
        mock!(Client::terminate_job_flows).then_error(|| {
            TerminateJobFlowsError::InternalServerError(
                InternalServerError::builder().message("throttled").build(),
            )
        })
    } else {
        mock!(Client::terminate_job_flows).then_output(move || {
            s.terminated.store(true, Ordering::SeqCst);
            TerminateJobFlowsOutput::builder().build()
        })
    };
    let client = mock_client!(
        aws_sdk_emr,
        RuleMode::MatchAny,
        [
            &describe_cluster,
            &describe_step,
            &run_job_flow,
            &list_steps,
            &add_steps,
            &groups,
            &terminate
        ]
    );
    let mut opts = options(&prefix, cluster_id);
    opts.timeout = timeout;
    let polls = script.clone();
    let cancelled: Box<dyn Fn() -> bool + Send + Sync> =
        Box::new(move || cancel_after.is_some_and(|n| polls.polls.load(Ordering::SeqCst) >= n));
    let runner = EmrRunner::with_client(opts, Emr::from_client(client).unwrap(), cancelled);
    let recorded = Recorded::default();
    let started = Instant::now();
    let result = runner.search(&spec(), &recorded);
    Outcome {
        result,
        recorded,
        script,
        terminate_calls: terminate.num_calls(),
        run_job_flow_calls: run_job_flow.num_calls(),
        add_step_calls: add_steps.num_calls(),
        elapsed: started.elapsed(),
    }
}

fn script(dir: &Path, cluster: &[ClusterState], step: &[StepState], output: bool) -> Script {
    Script {
        cluster: cluster.to_vec(),
        step: step.to_vec(),
        polls: AtomicUsize::new(0),
        prefix: dir.join("emr"),
        output: output.then(output_value),
        terminated: AtomicBool::new(false),
        terminate_fails: false,
        run_job_flow_rejected: false,
    }
}

fn output_value() -> JobOutput {
    output()
}

use ClusterState as C;
use StepState as S;

#[test]
fn a_completed_step_returns_process_0s_output_and_terminates_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        script(
            dir.path(),
            &[
                C::Starting,
                C::Bootstrapping,
                C::Running,
                C::Running,
                C::Running,
            ],
            &[S::Pending, S::Pending, S::Pending, S::Running, S::Completed],
            true,
        ),
        None,
        Duration::from_secs(20),
        None,
    );
    let output = out.result.unwrap();
    assert_eq!(output.results, output_value().results);
    assert_eq!(
        output.results[&5][0].score.to_bits(),
        0.812_345_678_901_234_5f64.to_bits()
    );
    assert_eq!(out.run_job_flow_calls, 1);
    assert_eq!(
        out.terminate_calls, 1,
        "the cluster this run started is terminated"
    );
    // job_runs saw the cluster, the step, and every state it went through.
    assert_eq!(
        out.recorded.steps(),
        [
            None,
            Some("PENDING".into()),
            Some("RUNNING".into()),
            Some("COMPLETED".into())
        ]
    );
    let last = out.recorded.last();
    assert_eq!(last.cluster_id, "j-MOCK");
    assert_eq!(last.step_id.as_deref(), Some("s-MOCK"));
    assert!(last.started_here);
    assert_eq!(last.cluster_state, "TERMINATING");
    // Staged: the binary (content-addressed), the bootstrap script and the job spec.
    let prefix = out.script.prefix.clone();
    let bins: Vec<String> = std::fs::read_dir(prefix.join("bin"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(bins.iter().any(|b| b.starts_with("facematch-")), "{bins:?}");
    assert!(
        bins.iter()
            .any(|b| b.starts_with("bootstrap-") && b.ends_with(".sh"))
    );
    let run = run_folder(&prefix).unwrap();
    assert!(run.join("spec.json").exists());
    // The pool of the new cluster points at this run (what its bootstrap-started workers join).
    let current = std::fs::read_to_string(prefix.join("pools/j-MOCK/current")).unwrap();
    assert!(
        current.ends_with(run.file_name().unwrap().to_str().unwrap()),
        "{current}"
    );
}

#[test]
fn a_failed_step_is_a_lost_worker_with_emrs_reason_and_the_cluster_is_terminated() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        script(
            dir.path(),
            &[C::Starting, C::Running],
            &[S::Pending, S::Running, S::Failed],
            false,
        ),
        None,
        Duration::from_secs(20),
        None,
    );
    let err = out.result.unwrap_err();
    assert!(err.downcast_ref::<WorkerLost>().is_some(), "{err:#}");
    let message = format!("{err:#}");
    assert!(
        message.contains("step s-MOCK on cluster j-MOCK ended FAILED"),
        "{message}"
    );
    assert!(message.contains("worker exited 101"), "{message}");
    assert!(message.contains("stderr.gz"), "{message}");
    assert_eq!(out.terminate_calls, 1);
    assert_eq!(out.recorded.last().step_state.as_deref(), Some("FAILED"));
}

#[test]
fn a_job_failure_published_by_process_0_is_not_a_lost_worker() {
    let dir = tempfile::tempdir().unwrap();
    let script = script(dir.path(), &[C::Running], &[S::Running], false);
    let prefix = script.prefix.clone();
    // Process 0 found a corrupt shard: it writes failure.txt while the step still runs.
    let writer = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(run) = run_folder(&prefix) {
                Rendezvous::open(run.to_str().unwrap(), &S3Options::default())
                    .unwrap()
                    .publish_failure("shard shard-00001.parquet: checksum mismatch")
                    .unwrap();
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let out = run(script, None, Duration::from_secs(20), None);
    writer.join().unwrap();
    let err = out.result.unwrap_err();
    assert!(err.downcast_ref::<WorkerLost>().is_none(), "{err:#}");
    assert!(is_data_failure(&err), "the data's fault: {err:#}");
    assert!(format!("{err:#}").contains("checksum mismatch"));
    assert_eq!(out.terminate_calls, 1);
}

#[test]
fn a_run_that_outlives_its_limit_is_terminated() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        script(
            dir.path(),
            &[C::Starting, C::Bootstrapping],
            &[S::Pending],
            false,
        ),
        None,
        Duration::from_millis(400),
        None,
    );
    let err = out.result.unwrap_err();
    assert!(err.downcast_ref::<WorkerLost>().is_some());
    assert!(
        format!("{err:#}").contains("timed out after 400ms"),
        "{err:#}"
    );
    assert!(out.elapsed < Duration::from_secs(5), "{:?}", out.elapsed);
    assert_eq!(out.terminate_calls, 1);
    // Backoff: at 5 ms doubling to 20 ms, 400 ms is ~20 polls, not hundreds.
    let polls = out.script.polls.load(Ordering::SeqCst);
    assert!((5..60).contains(&polls), "{polls} polls");
}

#[test]
fn ctrl_c_terminates_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        script(dir.path(), &[C::Running], &[S::Running], false),
        None,
        Duration::from_secs(20),
        Some(3),
    );
    let err = out.result.unwrap_err();
    assert!(format!("{err:#}").contains("interrupted"), "{err:#}");
    assert_eq!(out.terminate_calls, 1);
}

#[test]
fn a_cluster_that_dies_under_the_run_is_a_lost_worker() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        script(
            dir.path(),
            &[C::Running, C::TerminatedWithErrors],
            &[S::Running],
            false,
        ),
        None,
        Duration::from_secs(20),
        None,
    );
    let err = out.result.unwrap_err();
    assert!(err.downcast_ref::<WorkerLost>().is_some());
    assert!(
        format!("{err:#}").contains("TERMINATED_WITH_ERRORS"),
        "{err:#}"
    );
}

#[test]
fn a_running_cluster_gets_a_step_sized_to_its_nodes_and_is_left_running() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        script(
            dir.path(),
            &[C::Waiting, C::Running],
            &[S::Pending, S::Completed],
            true,
        ),
        Some("j-POOLED"),
        Duration::from_secs(20),
        None,
    );
    out.result.unwrap();
    assert_eq!(out.run_job_flow_calls, 0);
    assert_eq!(out.add_step_calls, 1);
    assert_eq!(
        out.terminate_calls, 0,
        "a cluster this run did not start stays up"
    );
    assert!(!out.recorded.last().started_here);
    let current =
        std::fs::read_to_string(out.script.prefix.join("pools/j-POOLED/current")).unwrap();
    assert!(current.contains("/runs/run-7-"), "{current}");
}

/// The job succeeded but the cluster could not be terminated: the results still count, and the
/// person running facematch is told what to terminate.
#[test]
fn results_survive_a_cluster_that_cannot_be_terminated() {
    let dir = tempfile::tempdir().unwrap();
    let mut script = script(dir.path(), &[C::Running], &[S::Running, S::Completed], true);
    script.terminate_fails = true;
    let out = run(script, None, Duration::from_secs(20), None);
    let output = out.result.expect("the computed results are returned");
    assert_eq!(output.results, output_value().results);
    assert_eq!(out.terminate_calls, 1);
    let warnings = out.recorded.1.lock().unwrap().clone();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("could not terminate cluster j-MOCK")
            && warnings[0].contains("facematch emr terminate j-MOCK"),
        "{warnings:?}"
    );
}

/// EMR rejecting the request is the machinery's failure, not the histories': they are retried.
#[test]
fn a_rejected_run_job_flow_is_not_the_datas_fault() {
    let dir = tempfile::tempdir().unwrap();
    let mut script = script(dir.path(), &[C::Starting], &[S::Pending], false);
    script.run_job_flow_rejected = true;
    let out = run(script, None, Duration::from_secs(20), None);
    let err = out.result.unwrap_err();
    assert!(!is_data_failure(&err), "{err:#}");
    assert!(format!("{err:#}").contains("RunJobFlow"), "{err:#}");
    assert_eq!((out.run_job_flow_calls, out.terminate_calls), (1, 0));
    // The run is marked given up, so nothing waits to join it.
    let run = run_folder(&dir.path().join("emr")).expect("the run was staged");
    assert!(run.join("abandoned.txt").exists());
}

/// Ctrl-C or SIGTERM before RunJobFlow: no cluster is started at all.
#[test]
fn a_stop_before_the_cluster_starts_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let script = script(dir.path(), &[C::Starting], &[S::Pending], false);
    let out = run(script, None, Duration::from_secs(20), Some(0));
    let err = out.result.unwrap_err();
    assert!(err.downcast_ref::<WorkerLost>().is_some(), "{err:#}");
    assert!(format!("{err:#}").contains("before the cluster was started"));
    assert_eq!((out.run_job_flow_calls, out.terminate_calls), (0, 0));
}
