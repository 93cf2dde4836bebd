# facematch on AWS (ARCHITECTURE.md: Where it runs): the dataset bucket, the network, EMR roles, security groups
# and security configuration, RDS PostgreSQL, and the scheduled run (EventBridge Scheduler →
# Step Functions → EMR). `terraform init/plan/apply` need network access to the provider
# registry; offline, `make infra-check` validates and tests against a local provider mirror
# when it finds one (infra/terraform/README.md).

terraform {
  required_version = ">= 1.9" # cross-variable validation (variables.tf)
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.70"
    }
  }
}

provider "aws" {
  region = var.region
  default_tags {
    tags = merge({ project = "facematch", environment = var.environment }, var.tags)
  }
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  name       = "facematch-${var.environment}"
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  # Everything facematch stages and EMR logs lives under this prefix of the bucket.
  prefix     = trimsuffix(var.bucket_prefix, "/")
  prefix_uri = "s3://${aws_s3_bucket.data.bucket}/${local.prefix}"
  # AmazonEMRServicePolicy_v2 creates instances and network interfaces only in subnets and security
  # groups with this tag, and acts only on clusters with it (RunJobFlow Tags).
  emr_managed_tag = { "for-use-with-amazon-emr-managed-policies" = "true" }
  # The timely ports as the facematch flags take them (worker --port-range, run --emr-port-range).
  port_range = "${var.timely_port_range.from}-${var.timely_port_range.to}"
}
