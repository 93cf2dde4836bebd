# `terraform test`, applied against a mocked AWS provider: data sources are read at apply, so each
# policy document gets a JSON of its own here and the resources can be checked to carry the right
# one (tests/emr.tftest.hcl checks the documents' statements during plan).

mock_provider "aws" {
  source = "./tests/mocks"
  # ARNs must be ARNs where the provider checks them.
  mock_resource "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:us-east-1:123456789012:key/mock" }
  }
  mock_resource "aws_s3_bucket" {
    defaults = { arn = "arn:aws:s3:::fm-test-mock" }
  }
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/mock" }
  }
  mock_resource "aws_sfn_state_machine" {
    defaults = { arn = "arn:aws:states:us-east-1:123456789012:stateMachine:mock" }
  }
  mock_resource "aws_cloudwatch_log_group" {
    defaults = { arn = "arn:aws:logs:us-east-1:123456789012:log-group:mock" }
  }
}

override_resource {
  target = aws_db_instance.main
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

override_data {
  target = data.aws_iam_policy_document.kms
  values = { json = "{\"Version\":\"2012-10-17\",\"Id\":\"kms\",\"Statement\":[]}" }
}

override_data {
  target = data.aws_iam_policy_document.logs
  values = { json = "{\"Version\":\"2012-10-17\",\"Id\":\"logs\",\"Statement\":[]}" }
}

override_data {
  target = data.aws_iam_policy_document.emr_service_kms
  values = { json = "{\"Version\":\"2012-10-17\",\"Id\":\"emr-service-kms\",\"Statement\":[]}" }
}

override_data {
  target = data.aws_iam_policy_document.emr_cleanup_role
  values = { json = "{\"Version\":\"2012-10-17\",\"Id\":\"emr-cleanup-role\",\"Statement\":[]}" }
}

override_data {
  target = data.aws_iam_policy_document.scheduler
  values = { json = "{\"Version\":\"2012-10-17\",\"Id\":\"scheduler\",\"Statement\":[]}" }
}

run "documents_reach_their_resources" {
  command = apply

  assert {
    condition     = aws_kms_key.data.policy == data.aws_iam_policy_document.kms.json
    error_message = "The key's policy is data.aws_iam_policy_document.kms."
  }

  assert {
    condition     = aws_s3_bucket_policy.logs.policy == data.aws_iam_policy_document.logs.json
    error_message = "The log bucket's policy is data.aws_iam_policy_document.logs."
  }

  assert {
    condition     = aws_iam_role_policy.emr_service_kms.policy == data.aws_iam_policy_document.emr_service_kms.json
    error_message = "The EMR service role's key policy is data.aws_iam_policy_document.emr_service_kms."
  }

  assert {
    condition     = aws_iam_role_policy.scheduler.policy == data.aws_iam_policy_document.scheduler.json
    error_message = "The scheduler role's policy is data.aws_iam_policy_document.scheduler."
  }

  assert {
    condition = (
      contains(data.aws_iam_policy_document.driver.source_policy_documents, data.aws_iam_policy_document.emr_cleanup_role.json) &&
      contains(data.aws_iam_policy_document.state_machine.source_policy_documents, data.aws_iam_policy_document.emr_cleanup_role.json)
    )
    error_message = "The driver's and the state machine's policies include the cleanup service-linked role statement."
  }
}
