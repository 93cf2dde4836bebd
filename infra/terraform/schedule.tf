# The scheduled run, AWS's equivalent of `facematch schedule` (ARCHITECTURE.md: Where it runs): EventBridge
# Scheduler starts a Step Functions execution each period, which creates a cluster, runs one
# batch on it, and terminates it — also when the batch fails (the Catch always terminates).
#
# The batch step runs on the primary node: `facematch run --runner emr --cluster-id <itself>`
# claims the PENDING histories and adds timely process 0 as a second step (hence step concurrency
# 2); the core nodes' bootstrap-started workers join through the cluster's pool. A cluster that
# fails to start ends itself (TERMINATED_WITH_ERRORS), so CreateCluster's Catch goes straight to
# Fail; and an idle cluster auto-terminates whatever happens to the execution.

locals {
  pool_args = [
    var.worker_binary_uri, "worker", "--pool", "${local.prefix_uri}/pools/{cluster-id}", "--serve",
    "--threads", tostring(var.worker_threads), "--host", "auto", "--connect-timeout", "600",
    "--port-range", local.port_range,
  ]
  # The database password comes from the RDS-managed secret at run time, never from state, and
  # reaches facematch as libpq's PGPASSWORD, not in the URL (nothing to escape). python3 ships
  # with the EMR 7 nodes (Amazon Linux 2023); jq does not.
  # The user goes into the URL, so percent-encoded; the password verbatim, as the secret holds it.
  read_user     = "python3 -c 'import json,sys,urllib.parse; sys.stdout.write(urllib.parse.quote(json.load(sys.stdin)[\"username\"], safe=\"\"))'"
  read_password = "python3 -c 'import json,sys; sys.stdout.write(json.load(sys.stdin)[\"password\"])'"
  # The server forces TLS (rds.force_ssl); the run checks its certificate against the RDS CA bundle
  # and its name (sslmode=verify-full).
  fetch_ca_bundle = startswith(var.db_ca_bundle_url, "s3://") ? "aws s3 cp --quiet '${var.db_ca_bundle_url}' \"$ca\"" : "curl -fsS --retry 3 -o \"$ca\" '${var.db_ca_bundle_url}'"
  batch_script = join("\n", [
    "set -euo pipefail",
    "ca=$(mktemp)",
    local.fetch_ca_bundle,
    "secret=$(aws secretsmanager get-secret-value --secret-id '${aws_db_instance.main.master_user_secret[0].secret_arn}' --query SecretString --output text)",
    "user=$(printf %s \"$secret\" | ${local.read_user})",
    "PGPASSWORD=$(printf %s \"$secret\" | ${local.read_password})",
    "export PGPASSWORD",
    "unset secret",
    "export DATABASE_URL=\"postgres://$user@${aws_db_instance.main.address}:5432/facematch?sslmode=verify-full&sslrootcert=$ca\"",
    "cluster=$(python3 -c 'import json; print(json.load(open(\"/mnt/var/lib/info/job-flow.json\"))[\"jobFlowId\"])')",
    join(" ", [
      "exec /usr/local/bin/facematch run --runner emr --cluster-id \"$cluster\" --emr-prefix '${local.prefix_uri}'",
      "--workers ${var.worker_threads} --emr-port-range ${local.port_range} --emr-timeout ${var.batch_timeout_seconds}s --force",
    ]),
  ])
  cluster_request = {
    Name                  = "${local.name}-scheduled"
    ReleaseLabel          = var.emr_release_label
    LogUri                = "${local.prefix_uri}/logs/"
    ServiceRole           = aws_iam_role.emr_service.arn
    JobFlowRole           = aws_iam_instance_profile.emr_instance.name
    SecurityConfiguration = aws_emr_security_configuration.main.name
    VisibleToAllUsers     = true
    StepConcurrencyLevel  = 2
    AutoTerminationPolicy = { IdleTimeout = 900 }
    Tags = concat(
      [{ Key = "facematch", Value = "worker" }, { Key = "environment", Value = var.environment }],
      [for key, value in local.emr_managed_tag : { Key = key, Value = value }],
    )
    Instances = {
      KeepJobFlowAliveWhenNoSteps   = true
      TerminationProtected          = false
      Ec2SubnetId                   = aws_subnet.private[0].id
      EmrManagedMasterSecurityGroup = aws_security_group.emr_primary.id
      EmrManagedSlaveSecurityGroup  = aws_security_group.emr_core.id
      ServiceAccessSecurityGroup    = aws_security_group.emr_service_access.id
      InstanceGroups = [
        { Name = "primary", InstanceRole = "MASTER", InstanceType = var.primary_instance_type, InstanceCount = 1 },
        { Name = "core", InstanceRole = "CORE", InstanceType = var.core_instance_type, InstanceCount = var.core_instance_count },
      ]
    }
    BootstrapActions = [{
      Name                  = "facematch workers"
      ScriptBootstrapAction = { Path = var.bootstrap_script_uri, Args = local.pool_args }
    }]
  }
  terminate = {
    Type       = "Task"
    Resource   = "arn:${local.partition}:states:::elasticmapreduce:terminateCluster.sync"
    Parameters = { "ClusterId.$" = "$.cluster.ClusterId" }
    Retry      = [{ ErrorEquals = ["States.ALL"], IntervalSeconds = 10, MaxAttempts = 5, BackoffRate = 2 }]
    ResultPath = null
  }
}

resource "aws_sfn_state_machine" "scheduled_run" {
  name     = "${local.name}-scheduled-run"
  role_arn = aws_iam_role.state_machine.arn
  definition = jsonencode({
    Comment        = "facematch scheduled batch: create cluster → run batch → terminate (always)"
    StartAt        = "CreateCluster"
    TimeoutSeconds = var.run_timeout_seconds
    States = {
      CreateCluster = {
        Type       = "Task"
        Resource   = "arn:${local.partition}:states:::elasticmapreduce:createCluster.sync"
        Parameters = local.cluster_request
        ResultPath = "$.cluster"
        Catch      = [{ ErrorEquals = ["States.ALL"], ResultPath = "$.error", Next = "Failed" }]
        Next       = "RunBatch"
      }
      RunBatch = {
        Type     = "Task"
        Resource = "arn:${local.partition}:states:::elasticmapreduce:addStep.sync"
        Parameters = {
          "ClusterId.$" = "$.cluster.ClusterId"
          Step = {
            Name            = "facematch scheduled batch"
            ActionOnFailure = "CONTINUE"
            HadoopJarStep   = { Jar = "command-runner.jar", Args = ["bash", "-c", local.batch_script] }
          }
        }
        ResultPath = "$.step"
        Catch      = [{ ErrorEquals = ["States.ALL"], ResultPath = "$.error", Next = "TerminateAfterFailure" }]
        Next       = "Terminate"
      }
      Terminate             = merge(local.terminate, { End = true })
      TerminateAfterFailure = merge(local.terminate, { Next = "Failed" })
      Failed                = { Type = "Fail", Error = "FacematchBatchFailed", Cause = "see the execution's error and the cluster's step logs" }
    }
  })
  logging_configuration {
    log_destination        = "${aws_cloudwatch_log_group.scheduled_run.arn}:*"
    include_execution_data = true
    level                  = "ALL"
  }
  tracing_configuration {
    enabled = true
  }
}

resource "aws_cloudwatch_log_group" "scheduled_run" {
  name              = "/facematch/${local.name}/scheduled-run"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.data.arn
}

resource "aws_iam_role" "state_machine" {
  name               = "${local.name}-scheduled-run"
  assume_role_policy = data.aws_iam_policy_document.service_assume["states"].json
}

data "aws_iam_policy_document" "state_machine" {
  source_policy_documents = [data.aws_iam_policy_document.emr_cleanup_role.json]
  statement {
    sid       = "CreateClusters"
    actions   = ["elasticmapreduce:RunJobFlow"]
    resources = ["*"] # RunJobFlow takes no resource ARN
  }
  statement {
    sid = "DriveClusters"
    actions = [
      "elasticmapreduce:DescribeCluster",
      "elasticmapreduce:TerminateJobFlows",
      "elasticmapreduce:AddJobFlowSteps",
      "elasticmapreduce:DescribeStep",
      "elasticmapreduce:CancelSteps",
      "elasticmapreduce:AddTags",
      # RunJobFlow with an AutoTerminationPolicy (emr-auto-termination-policy: permissions).
      "elasticmapreduce:PutAutoTerminationPolicy",
    ]
    resources = ["arn:${local.partition}:elasticmapreduce:${var.region}:${local.account_id}:cluster/*"]
  }
  statement {
    sid       = "PassClusterRoles"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.emr_service.arn, aws_iam_role.emr_instance.arn]
  }
  # The .sync integrations watch EMR through managed EventBridge rules.
  statement {
    sid       = "SyncRules"
    actions   = ["events:PutTargets", "events:PutRule", "events:DescribeRule"]
    resources = ["arn:${local.partition}:events:${var.region}:${local.account_id}:rule/StepFunctionsGetEventForEMR*"]
  }
  statement {
    sid = "Logs"
    actions = [
      "logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery", "logs:DeleteLogDelivery",
      "logs:ListLogDeliveries", "logs:PutResourcePolicy", "logs:DescribeResourcePolicies", "logs:DescribeLogGroups",
    ]
    resources = ["*"] # CloudWatch Logs vended delivery supports no resource-level permissions
  }
  statement {
    sid       = "Tracing"
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules", "xray:GetSamplingTargets"]
    resources = ["*"] # X-Ray supports no resource-level permissions
  }
}

resource "aws_iam_role_policy" "state_machine" {
  #checkov:skip=CKV_AWS_290:the "*" resources are RunJobFlow, CloudWatch vended log delivery and X-Ray, which have no resource-level permissions
  #checkov:skip=CKV_AWS_355:same: those actions accept only "*" as resource
  name   = "scheduled-run"
  role   = aws_iam_role.state_machine.id
  policy = data.aws_iam_policy_document.state_machine.json
}

resource "aws_iam_role" "scheduler" {
  name               = "${local.name}-scheduler"
  assume_role_policy = data.aws_iam_policy_document.service_assume["scheduler"].json
}

data "aws_iam_policy_document" "scheduler" {
  statement {
    sid       = "StartScheduledRun"
    actions   = ["states:StartExecution"]
    resources = [aws_sfn_state_machine.scheduled_run.arn]
  }
  # The schedule is encrypted with the key (kms_key_arn below); EventBridge Scheduler decrypts it
  # with the execution role when it fires (EventBridge Scheduler: encryption at rest, customer
  # managed keys).
  statement {
    sid       = "DecryptSchedule"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.data.arn]
  }
}

resource "aws_iam_role_policy" "scheduler" {
  name   = "start-scheduled-run"
  role   = aws_iam_role.scheduler.id
  policy = data.aws_iam_policy_document.scheduler.json
}

resource "aws_scheduler_schedule" "scheduled_run" {
  name                = "${local.name}-scheduled-run"
  schedule_expression = var.schedule_expression
  state               = var.schedule_enabled ? "ENABLED" : "DISABLED"
  kms_key_arn         = aws_kms_key.data.arn
  flexible_time_window {
    mode = "OFF"
  }
  target {
    arn      = aws_sfn_state_machine.scheduled_run.arn
    role_arn = aws_iam_role.scheduler.arn
    retry_policy {
      maximum_retry_attempts = 0 # a missed window's histories stay PENDING for the next one
    }
  }
}
