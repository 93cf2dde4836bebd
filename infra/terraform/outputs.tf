# What the driver needs; each maps to a facematch flag or environment variable (README).

output "bucket" {
  description = "The data bucket."
  value       = aws_s3_bucket.data.bucket
}

output "facematch_emr_prefix" {
  description = "--emr-prefix / FACEMATCH_EMR_PREFIX."
  value       = local.prefix_uri
}

output "dataset_root" {
  description = "--dataset-root / FACEMATCH_DATASET_ROOT."
  value       = "${local.prefix_uri}/datasets"
}

output "emr_service_role" {
  description = "--emr-service-role / FACEMATCH_EMR_SERVICE_ROLE."
  value       = aws_iam_role.emr_service.name
}

output "emr_instance_profile" {
  description = "--emr-instance-profile / FACEMATCH_EMR_INSTANCE_PROFILE."
  value       = aws_iam_instance_profile.emr_instance.name
}

output "emr_security_configuration" {
  description = "--emr-security-configuration / FACEMATCH_EMR_SECURITY_CONFIGURATION."
  value       = aws_emr_security_configuration.main.name
}

output "emr_subnet_id" {
  description = "--emr-subnet / FACEMATCH_EMR_SUBNET."
  value       = aws_subnet.private[0].id
}

output "emr_primary_security_group" {
  description = "--emr-primary-sg / FACEMATCH_EMR_PRIMARY_SG."
  value       = aws_security_group.emr_primary.id
}

output "emr_core_security_group" {
  description = "--emr-core-sg / FACEMATCH_EMR_CORE_SG."
  value       = aws_security_group.emr_core.id
}

output "emr_service_access_security_group" {
  description = "--emr-service-sg / FACEMATCH_EMR_SERVICE_SG."
  value       = aws_security_group.emr_service_access.id
}

output "emr_port_range" {
  description = "--emr-port-range / FACEMATCH_EMR_PORT_RANGE: the timely ports open between the cluster's groups (FROM-TO)."
  value       = local.port_range
}

output "database_address" {
  description = "Host of DATABASE_URL (postgres://facematch@<address>:5432/facematch, the secret's password in PGPASSWORD)."
  value       = aws_db_instance.main.address
}

output "database_secret_arn" {
  description = "Secrets Manager secret holding the database user and password."
  value       = aws_db_instance.main.master_user_secret[0].secret_arn
}

output "driver_security_group" {
  description = "Security group for hosts that run the driver (reaches the database)."
  value       = aws_security_group.driver.id
}

output "driver_policy_arn" {
  description = "IAM policy to attach to whoever runs `facematch run --runner emr`."
  value       = aws_iam_policy.driver.arn
}

output "scheduled_run_state_machine" {
  description = "Step Functions state machine of the scheduled run (start it by hand to run a batch now)."
  value       = aws_sfn_state_machine.scheduled_run.arn
}
