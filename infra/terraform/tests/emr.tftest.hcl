# `terraform test` of the EMR-facing configuration against a mocked AWS provider (no account,
# no network; `make infra-check` runs it when it finds a provider mirror). The plan runs check
# what the cluster needs of its network, keys, policies and the scheduled run's state machine;
# the last run applies the mocks to check that each resource is given the document it should.
#
# Under a mocked provider, computed attributes are unknown during plan unless overridden, and a
# data source that depends on a resource being created is read only at apply: so the overrides
# below name the IDs and ARNs the plan assertions compare, and the plan runs look at the inputs
# of the aws_iam_policy_document data sources (their statements), not at their JSON.

mock_provider "aws" {
  override_during = plan
  source          = "./tests/mocks"
  mock_resource "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:us-east-1:123456789012:key/mock", key_id = "mock" }
  }
}

override_resource {
  target          = aws_security_group.emr_primary
  override_during = plan
  values          = { id = "sg-primary" }
}

override_resource {
  target          = aws_security_group.emr_core
  override_during = plan
  values          = { id = "sg-core" }
}

override_resource {
  target          = aws_security_group.emr_service_access
  override_during = plan
  values          = { id = "sg-service" }
}

override_resource {
  target          = aws_security_group.database
  override_during = plan
  values          = { id = "sg-database" }
}

override_resource {
  target          = aws_subnet.private
  override_during = plan
  values          = { id = "subnet-private" }
}

override_resource {
  target          = aws_iam_role.emr_service
  override_during = plan
  values = {
    id   = "facematch-dev-emr-service"
    arn  = "arn:aws:iam::123456789012:role/facematch-dev-emr-service"
    name = "facematch-dev-emr-service"
  }
}

override_resource {
  target          = aws_iam_role.emr_instance
  override_during = plan
  values          = { arn = "arn:aws:iam::123456789012:role/facematch-dev-emr-instance" }
}

override_resource {
  target          = aws_sfn_state_machine.scheduled_run
  override_during = plan
  values          = { arn = "arn:aws:states:us-east-1:123456789012:stateMachine:facematch-dev-scheduled-run" }
}

override_resource {
  target          = aws_iam_role.scheduler
  override_during = plan
  values = {
    id  = "facematch-dev-scheduler"
    arn = "arn:aws:iam::123456789012:role/facematch-dev-scheduler"
  }
}

override_resource {
  target          = aws_s3_bucket.data
  override_during = plan
  values          = { id = "fm-test", arn = "arn:aws:s3:::fm-test" }
}

override_resource {
  target          = aws_s3_bucket.logs
  override_during = plan
  values          = { id = "fm-test-logs", arn = "arn:aws:s3:::fm-test-logs" }
}

override_resource {
  target          = aws_db_instance.main
  override_during = plan
  values = {
    address = "db.example.internal"
    master_user_secret = [{
      secret_arn    = "arn:aws:secretsmanager:us-east-1:123456789012:secret:rds-mock"
      kms_key_id    = "arn:aws:kms:us-east-1:123456789012:key/mock"
      secret_status = "active"
    }]
  }
}

variables {
  bucket_name          = "fm-test"
  worker_binary_uri    = "s3://fm-test/facematch/bin/facematch-abc"
  bootstrap_script_uri = "s3://fm-test/facematch/bin/bootstrap-abc.sh"
}

run "managed_policy_tags" {
  command = plan

  assert {
    condition = length(aws_subnet.private) == 2 && alltrue([
      for subnet in aws_subnet.private : lookup(subnet.tags, "for-use-with-amazon-emr-managed-policies", "") == "true"
    ])
    error_message = "Every private subnet must carry for-use-with-amazon-emr-managed-policies = true (AmazonEMRServicePolicy_v2 launches only into tagged subnets)."
  }

  assert {
    condition = alltrue([
      for group in [aws_security_group.emr_primary, aws_security_group.emr_core, aws_security_group.emr_service_access] :
      lookup(group.tags, "for-use-with-amazon-emr-managed-policies", "") == "true"
    ])
    error_message = "The primary, core and service-access security groups must carry for-use-with-amazon-emr-managed-policies = true."
  }

  assert {
    condition = contains(
      jsondecode(aws_sfn_state_machine.scheduled_run.definition).States.CreateCluster.Parameters.Tags,
      { Key = "for-use-with-amazon-emr-managed-policies", Value = "true" },
    )
    error_message = "The scheduled cluster's RunJobFlow Tags must include for-use-with-amazon-emr-managed-policies = true."
  }
}

run "cluster_egress" {
  command = plan

  assert {
    condition = toset([
      for rule in aws_vpc_security_group_egress_rule.cluster :
      "${rule.security_group_id}>${rule.referenced_security_group_id}"
      if rule.ip_protocol == "-1" && rule.from_port == null && rule.to_port == null
    ]) == toset(["sg-primary>sg-primary", "sg-primary>sg-core", "sg-core>sg-primary", "sg-core>sg-core"])
    error_message = "The primary and core groups need all-traffic egress to each other and to themselves."
  }

  assert {
    condition = toset([
      for rule in aws_vpc_security_group_egress_rule.service_access : rule.referenced_security_group_id
      if rule.security_group_id == "sg-service" && rule.ip_protocol == "tcp" && rule.from_port == 8443 && rule.to_port == 8443
    ]) == toset(["sg-primary", "sg-core"])
    error_message = "The service-access group needs egress on TCP 8443 to the primary and the core groups."
  }

  assert {
    condition = (
      aws_vpc_security_group_ingress_rule.service_access_from_primary.security_group_id == "sg-service" &&
      aws_vpc_security_group_ingress_rule.service_access_from_primary.referenced_security_group_id == "sg-primary" &&
      aws_vpc_security_group_ingress_rule.service_access_from_primary.ip_protocol == "tcp" &&
      aws_vpc_security_group_ingress_rule.service_access_from_primary.from_port == 9443 &&
      aws_vpc_security_group_ingress_rule.service_access_from_primary.to_port == 9443
    )
    error_message = "The service-access group needs ingress on TCP 9443 from the primary group (EMR 5.30.0 and later)."
  }

  assert {
    condition = (
      aws_vpc_security_group_egress_rule.primary_to_service_access.security_group_id == "sg-primary" &&
      aws_vpc_security_group_egress_rule.primary_to_service_access.referenced_security_group_id == "sg-service" &&
      aws_vpc_security_group_egress_rule.primary_to_service_access.ip_protocol == "tcp" &&
      aws_vpc_security_group_egress_rule.primary_to_service_access.from_port == 9443 &&
      aws_vpc_security_group_egress_rule.primary_to_service_access.to_port == 9443
    )
    error_message = "The primary group needs egress on TCP 9443 to the service-access group (the other end of its ingress)."
  }

  assert {
    condition = toset([
      for rule in aws_vpc_security_group_egress_rule.https : rule.security_group_id
      if rule.cidr_ipv4 == "0.0.0.0/0" && rule.ip_protocol == "tcp" && rule.from_port == 443 && rule.to_port == 443
    ]) == toset(["sg-primary", "sg-core", "sg-service"])
    error_message = "Every EMR group keeps its HTTPS egress."
  }

  assert {
    condition = (
      aws_vpc_security_group_egress_rule.postgres.security_group_id == "sg-primary" &&
      aws_vpc_security_group_egress_rule.postgres.referenced_security_group_id == "sg-database" &&
      aws_vpc_security_group_egress_rule.postgres.from_port == 5432 &&
      aws_vpc_security_group_egress_rule.postgres.to_port == 5432
    )
    error_message = "The primary group keeps its PostgreSQL egress to the database group."
  }
}

run "timely_ports" {
  command = plan

  assert {
    condition     = var.timely_port_range == { from = 42000, to = 42063 } && output.emr_port_range == "42000-42063"
    error_message = "timely_port_range defaults to 42000-42063 and emr_port_range reports it as FROM-TO."
  }

  assert {
    condition = length(aws_vpc_security_group_ingress_rule.timely) == 4 && alltrue([
      for rule in aws_vpc_security_group_ingress_rule.timely :
      rule.ip_protocol == "tcp" && rule.from_port == var.timely_port_range.from && rule.to_port == var.timely_port_range.to
    ])
    error_message = "The timely ingress rules open exactly timely_port_range."
  }

  assert {
    condition = length(aws_vpc_security_group_egress_rule.timely) == 4 && alltrue([
      for rule in aws_vpc_security_group_egress_rule.timely :
      rule.ip_protocol == "tcp" && rule.from_port == var.timely_port_range.from && rule.to_port == var.timely_port_range.to
    ])
    error_message = "The timely egress rules open exactly timely_port_range."
  }
}

run "timely_ports_follow_the_variable" {
  command = plan

  variables {
    timely_port_range = { from = 50000, to = 51023 }
  }

  assert {
    condition = alltrue(concat(
      [for rule in aws_vpc_security_group_ingress_rule.timely : rule.from_port == 50000 && rule.to_port == 51023],
      [for rule in aws_vpc_security_group_egress_rule.timely : rule.from_port == 50000 && rule.to_port == 51023],
    ))
    error_message = "The timely rules must follow timely_port_range."
  }

  assert {
    condition = (
      output.emr_port_range == "50000-51023" &&
      slice(jsondecode(aws_sfn_state_machine.scheduled_run.definition).States.CreateCluster.Parameters.BootstrapActions[0].ScriptBootstrapAction.Args, 11, 13) == ["--port-range", "50000-51023"] &&
      strcontains(jsondecode(aws_sfn_state_machine.scheduled_run.definition).States.RunBatch.Parameters.Step.HadoopJarStep.Args[2], " --emr-port-range 50000-51023 ")
    )
    error_message = "The workers' --port-range, the batch's --emr-port-range and emr_port_range must follow timely_port_range."
  }
}

run "kms_key_policy" {
  command = plan

  # The EBS set of key permissions for EMR's service role, CreateGrant only for AWS resources.
  assert {
    condition = alltrue([
      for action in ["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKeyWithoutPlaintext", "kms:ReEncrypt*"] :
      anytrue([
        for statement in data.aws_iam_policy_document.kms.statement :
        contains(statement.actions, action) && coalesce(statement.effect, "Allow") == "Allow" &&
        anytrue([for principal in statement.principals : principal.type == "AWS" && contains(principal.identifiers, aws_iam_role.emr_service.arn)])
      ])
    ])
    error_message = "The key policy must allow the EMR service role kms:Decrypt, DescribeKey, GenerateDataKeyWithoutPlaintext and ReEncrypt*."
  }

  assert {
    condition = anytrue([
      for statement in data.aws_iam_policy_document.kms.statement :
      toset(statement.actions) == toset(["kms:CreateGrant"]) && coalesce(statement.effect, "Allow") == "Allow" &&
      anytrue([for principal in statement.principals : principal.type == "AWS" && contains(principal.identifiers, aws_iam_role.emr_service.arn)]) &&
      anytrue([for condition in statement.condition : condition.test == "Bool" && condition.variable == "kms:GrantIsForAWSResource" && toset(condition.values) == toset(["true"])])
    ])
    error_message = "The key policy must allow the EMR service role kms:CreateGrant only with kms:GrantIsForAWSResource = true."
  }

  # CloudWatch Logs encrypts the state machine's log group with the key.
  assert {
    condition = anytrue([
      for statement in data.aws_iam_policy_document.kms.statement :
      contains(statement.actions, "kms:GenerateDataKey*") && contains(statement.actions, "kms:Decrypt*") &&
      anytrue([for principal in statement.principals : principal.type == "Service" && contains(principal.identifiers, "logs.us-east-1.amazonaws.com")]) &&
      anytrue([
        for condition in statement.condition :
        condition.variable == "kms:EncryptionContext:aws:logs:arn" && anytrue([
          for pattern in condition.values :
          startswith("arn:aws:logs:us-east-1:123456789012:log-group:${aws_cloudwatch_log_group.scheduled_run.name}", trimsuffix(pattern, "*"))
        ])
      ])
    ])
    error_message = "The key policy must let logs.<region>.amazonaws.com use the key for the scheduled run's log group (encryption-context condition)."
  }

  assert {
    condition     = aws_cloudwatch_log_group.scheduled_run.kms_key_id == aws_kms_key.data.arn
    error_message = "The scheduled run's log group is encrypted with the key."
  }

  # The service role's own policy allows the same on the key.
  assert {
    condition = (
      anytrue([
        for statement in data.aws_iam_policy_document.emr_service_kms.statement :
        toset(statement.resources) == toset([aws_kms_key.data.arn]) &&
        length(setsubtract(["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKeyWithoutPlaintext", "kms:ReEncrypt*"], statement.actions)) == 0
      ]) &&
      anytrue([
        for statement in data.aws_iam_policy_document.emr_service_kms.statement :
        toset(statement.actions) == toset(["kms:CreateGrant"]) && toset(statement.resources) == toset([aws_kms_key.data.arn]) &&
        anytrue([for condition in statement.condition : condition.test == "Bool" && condition.variable == "kms:GrantIsForAWSResource" && toset(condition.values) == toset(["true"])])
      ]) &&
      aws_iam_role_policy.emr_service_kms.role == aws_iam_role.emr_service.id
    )
    error_message = "The EMR service role's own policy must allow the EBS set of key permissions and CreateGrant for AWS resources on the key."
  }

  # EventBridge Scheduler decrypts the schedule with its execution role.
  assert {
    condition = (
      aws_scheduler_schedule.scheduled_run.kms_key_arn == aws_kms_key.data.arn &&
      aws_scheduler_schedule.scheduled_run.target[0].role_arn == aws_iam_role.scheduler.arn &&
      aws_iam_role_policy.scheduler.role == aws_iam_role.scheduler.id &&
      anytrue([
        for statement in data.aws_iam_policy_document.scheduler.statement :
        contains(statement.actions, "kms:Decrypt") && contains(statement.resources, aws_kms_key.data.arn)
      ])
    )
    error_message = "The scheduler's execution role must be allowed kms:Decrypt on the schedule's key."
  }
}

run "cluster_creation_permissions" {
  command = plan

  assert {
    condition = alltrue([
      for document in [data.aws_iam_policy_document.driver, data.aws_iam_policy_document.state_machine] :
      anytrue([
        for statement in document.statement :
        contains(statement.actions, "elasticmapreduce:PutAutoTerminationPolicy") &&
        contains(statement.resources, "arn:aws:elasticmapreduce:us-east-1:123456789012:cluster/*")
      ])
    ])
    error_message = "The driver and the state machine create clusters with an AutoTerminationPolicy: they need elasticmapreduce:PutAutoTerminationPolicy."
  }

  assert {
    condition = anytrue([
      for statement in data.aws_iam_policy_document.emr_cleanup_role.statement :
      toset(statement.actions) == toset(["iam:CreateServiceLinkedRole"]) &&
      toset(statement.resources) == toset(["arn:aws:iam::123456789012:role/aws-service-role/elasticmapreduce.amazonaws.com*/AWSServiceRoleForEMRCleanup*"]) &&
      anytrue([for condition in statement.condition : condition.variable == "iam:AWSServiceName" && contains(condition.values, "elasticmapreduce.amazonaws.com")])
    ])
    error_message = "iam:CreateServiceLinkedRole for AWSServiceRoleForEMRCleanup, conditioned on iam:AWSServiceName = elasticmapreduce.amazonaws.com."
  }
}

run "scheduled_run_definition" {
  command = plan

  assert {
    condition     = can(jsondecode(aws_sfn_state_machine.scheduled_run.definition).States.CreateCluster.Parameters)
    error_message = "The state machine definition must be JSON with a CreateCluster state."
  }

  assert {
    condition = jsondecode(aws_sfn_state_machine.scheduled_run.definition).States.CreateCluster.Parameters.Tags == [
      { Key = "facematch", Value = "worker" },
      { Key = "environment", Value = "dev" },
      { Key = "for-use-with-amazon-emr-managed-policies", Value = "true" },
    ]
    error_message = "The cluster's Tags: facematch = worker (the instance role's step permissions), environment, and the EMR managed-policy tag."
  }

  assert {
    condition     = jsondecode(aws_sfn_state_machine.scheduled_run.definition).States.CreateCluster.Parameters.BootstrapActions[0].ScriptBootstrapAction.Args == jsondecode(file("tests/driver-request.json")).bootstrap_args
    error_message = "The bootstrap action's worker arguments must be the ones the driver sends (tests/driver-request.json, which the driver's own test checks)."
  }

  assert {
    condition = alltrue([
      for tag in jsondecode(file("tests/driver-request.json")).tags :
      contains(jsondecode(aws_sfn_state_machine.scheduled_run.definition).States.CreateCluster.Parameters.Tags, tag)
    ])
    error_message = "The cluster carries every tag the driver sends (tests/driver-request.json)."
  }

  assert {
    condition = (
      !strcontains(jsondecode(aws_sfn_state_machine.scheduled_run.definition).States.RunBatch.Parameters.Step.HadoopJarStep.Args[2], "jq") &&
      !strcontains(jsondecode(aws_sfn_state_machine.scheduled_run.definition).States.RunBatch.Parameters.Step.HadoopJarStep.Args[2], "@uri")
    )
    error_message = "The batch script must not use jq (not on the nodes; @uri appended %0A to the password)."
  }

  assert {
    condition = (
      strcontains(jsondecode(aws_sfn_state_machine.scheduled_run.definition).States.RunBatch.Parameters.Step.HadoopJarStep.Args[2], "\nexport PGPASSWORD\n") &&
      strcontains(jsondecode(aws_sfn_state_machine.scheduled_run.definition).States.RunBatch.Parameters.Step.HadoopJarStep.Args[2], "export DATABASE_URL=\"postgres://$user@db.example.internal:5432/facematch?sslmode=verify-full&sslrootcert=$ca\"\n") &&
      !can(regex("postgres://[^@\"]*:[^@\"]*@", jsondecode(aws_sfn_state_machine.scheduled_run.definition).States.RunBatch.Parameters.Step.HadoopJarStep.Args[2]))
    )
    error_message = "The batch script passes the password in PGPASSWORD and builds DATABASE_URL as postgres://USER@HOST:5432/facematch, verifying the server's certificate (sslmode=verify-full)."
  }

  assert {
    condition     = strcontains(jsondecode(aws_sfn_state_machine.scheduled_run.definition).States.RunBatch.Parameters.Step.HadoopJarStep.Args[2], "\nca=$(mktemp)\ncurl -fsS --retry 3 -o \"$ca\" 'https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem'\n")
    error_message = "The batch script fetches the RDS CA bundle it verifies the database with."
  }

  assert {
    condition     = contains([for p in aws_db_parameter_group.main.parameter : "${p.name}=${p.value}"], "rds.force_ssl=1")
    error_message = "The database refuses clients without TLS (rds.force_ssl = 1)."
  }

  assert {
    condition = endswith(
      jsondecode(aws_sfn_state_machine.scheduled_run.definition).States.RunBatch.Parameters.Step.HadoopJarStep.Args[2],
      "--workers 8 --emr-port-range 42000-42063 --emr-timeout 5400s --force",
    )
    error_message = "The batch command passes --emr-port-range and --emr-timeout <batch_timeout_seconds>s."
  }

  assert {
    condition     = jsondecode(aws_sfn_state_machine.scheduled_run.definition).TimeoutSeconds == var.run_timeout_seconds
    error_message = "The execution's TimeoutSeconds is run_timeout_seconds."
  }
}

run "batch_timeout_drives_the_batch" {
  command = plan

  variables {
    batch_timeout_seconds = 3600
    run_timeout_seconds   = 5400
  }

  assert {
    condition = (
      strcontains(jsondecode(aws_sfn_state_machine.scheduled_run.definition).States.RunBatch.Parameters.Step.HadoopJarStep.Args[2], " --emr-timeout 3600s ") &&
      jsondecode(aws_sfn_state_machine.scheduled_run.definition).TimeoutSeconds == 5400
    )
    error_message = "batch_timeout_seconds reaches --emr-timeout; run_timeout_seconds = batch + 1800 is accepted."
  }
}

run "ca_bundle_from_s3" {
  command = plan

  variables {
    db_ca_bundle_url = "s3://fm-test/certs/rds-global-bundle.pem"
  }

  assert {
    condition     = strcontains(jsondecode(aws_sfn_state_machine.scheduled_run.definition).States.RunBatch.Parameters.Step.HadoopJarStep.Args[2], "\nca=$(mktemp)\naws s3 cp --quiet 's3://fm-test/certs/rds-global-bundle.pem' \"$ca\"\n")
    error_message = "An s3:// CA bundle is copied with the AWS CLI."
  }
}

run "ca_bundle_url_must_be_https_or_s3" {
  command = plan

  variables {
    db_ca_bundle_url = "http://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"
  }

  expect_failures = [var.db_ca_bundle_url]
}

run "run_timeout_below_batch_plus_startup" {
  command = plan

  variables {
    run_timeout_seconds = 7199 # batch_timeout_seconds (5400) + 1800 - 1
  }

  expect_failures = [var.run_timeout_seconds]
}

run "port_range_reversed" {
  command = plan

  variables {
    timely_port_range = { from = 42063, to = 42000 }
  }

  expect_failures = [var.timely_port_range]
}

run "port_range_too_wide" {
  command = plan

  variables {
    timely_port_range = { from = 40000, to = 41024 } # 1025 ports
  }

  expect_failures = [var.timely_port_range]
}

run "port_range_privileged" {
  command = plan

  variables {
    timely_port_range = { from = 1000, to = 1100 }
  }

  expect_failures = [var.timely_port_range]
}

run "port_range_beyond_65535" {
  command = plan

  variables {
    timely_port_range = { from = 65500, to = 65536 }
  }

  expect_failures = [var.timely_port_range]
}

run "access_log_bucket_policy" {
  command = plan

  assert {
    condition = aws_s3_bucket_policy.logs.bucket == aws_s3_bucket.logs.id && anytrue([
      for statement in data.aws_iam_policy_document.logs.statement :
      coalesce(statement.effect, "Allow") == "Allow" && toset(statement.actions) == toset(["s3:PutObject"]) &&
      toset(statement.resources) == toset(["arn:aws:s3:::fm-test-logs/${aws_s3_bucket_logging.data.target_prefix}*"]) &&
      anytrue([for principal in statement.principals : principal.type == "Service" && toset(principal.identifiers) == toset(["logging.s3.amazonaws.com"])]) &&
      anytrue([for condition in statement.condition : condition.variable == "aws:SourceArn" && toset(condition.values) == toset([aws_s3_bucket.data.arn])]) &&
      anytrue([for condition in statement.condition : condition.variable == "aws:SourceAccount" && toset(condition.values) == toset(["123456789012"])])
    ])
    error_message = "The log bucket's policy must let logging.s3.amazonaws.com put the data bucket's access logs under their prefix (aws:SourceArn, aws:SourceAccount)."
  }

  assert {
    condition = anytrue([
      for statement in data.aws_iam_policy_document.logs.statement :
      toset(statement.actions) == toset(["s3:PutObject"]) &&
      toset(statement.resources) == toset(["${aws_flow_log.main.log_destination}AWSLogs/123456789012/*"]) &&
      anytrue([for principal in statement.principals : principal.type == "Service" && toset(principal.identifiers) == toset(["delivery.logs.amazonaws.com"])]) &&
      anytrue([for condition in statement.condition : condition.variable == "s3:x-amz-acl" && toset(condition.values) == toset(["bucket-owner-full-control"])]) &&
      anytrue([for condition in statement.condition : condition.variable == "aws:SourceAccount" && toset(condition.values) == toset(["123456789012"])])
    ])
    error_message = "The log bucket's policy must let delivery.logs.amazonaws.com put the flow logs (bucket-owner-full-control, aws:SourceAccount)."
  }

  assert {
    condition = anytrue([
      for statement in data.aws_iam_policy_document.logs.statement :
      contains(statement.actions, "s3:GetBucketAcl") && toset(statement.resources) == toset(["arn:aws:s3:::fm-test-logs"]) &&
      anytrue([for principal in statement.principals : principal.type == "Service" && contains(principal.identifiers, "delivery.logs.amazonaws.com")])
    ])
    error_message = "The log bucket's policy must let delivery.logs.amazonaws.com read the bucket ACL (flow logs' AclCheck)."
  }

  assert {
    condition = anytrue([
      for statement in data.aws_iam_policy_document.logs.statement :
      statement.effect == "Deny" && contains(statement.actions, "s3:*") &&
      anytrue([for condition in statement.condition : condition.variable == "aws:SecureTransport" && toset(condition.values) == toset(["false"])])
    ])
    error_message = "The log bucket denies requests without TLS, like the data bucket."
  }
}
