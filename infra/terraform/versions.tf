# facematch on AWS (ARCHITECTURE.md: Where it runs): the dataset bucket, the network, EMR roles, security groups
# and security configuration, RDS PostgreSQL, and the scheduled run (EventBridge Scheduler →
# Step Functions → EMR). `terraform init/validate/plan/apply` need network access to the
# provider registry; on an offline machine `make infra-check` runs fmt and checkov only.

terraform {
  required_version = ">= 1.5"
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
}
