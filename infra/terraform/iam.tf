# EMR's roles, least privilege: the service role is AWS's v2 EMR policy (which only acts on
# resources tagged for EMR); the nodes' instance profile reads and writes the facematch prefix and
# the logs of this bucket, uses the key, and nothing else.

# Who may assume the facematch service roles: EMR, Step Functions, EventBridge Scheduler — from
# this account only.
locals {
  service_principals = {
    emr       = "elasticmapreduce.amazonaws.com"
    states    = "states.amazonaws.com"
    scheduler = "scheduler.amazonaws.com"
  }
}

data "aws_iam_policy_document" "service_assume" {
  for_each = local.service_principals
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = [each.value]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "emr_service" {
  name               = "${local.name}-emr-service"
  assume_role_policy = data.aws_iam_policy_document.service_assume["emr"].json
}

resource "aws_iam_role_policy_attachment" "emr_service" {
  role       = aws_iam_role.emr_service.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonEMRServicePolicy_v2"
}

# AmazonEMRServicePolicy_v2 may pass only roles it is told about.
data "aws_iam_policy_document" "emr_service_pass" {
  statement {
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.emr_instance.arn]
    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "emr_service_pass" {
  name   = "pass-instance-role"
  role   = aws_iam_role.emr_service.id
  policy = data.aws_iam_policy_document.emr_service_pass.json
}

# The security configuration encrypts the nodes' EBS volumes with the key, and EMR's service role
# launches them: it needs the EBS set of key permissions (Amazon EBS encryption requirements),
# CreateGrant only for grants to AWS services (the EBS volumes). The key policy (storage.tf)
# allows the same.
locals {
  ebs_key_actions = ["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKeyWithoutPlaintext", "kms:ReEncrypt*"]
}

data "aws_iam_policy_document" "emr_service_kms" {
  statement {
    sid       = "UseDiskKey"
    actions   = local.ebs_key_actions
    resources = [aws_kms_key.data.arn]
  }
  statement {
    sid       = "GrantDiskKeyToVolumes"
    actions   = ["kms:CreateGrant"]
    resources = [aws_kms_key.data.arn]
    condition {
      test     = "Bool"
      variable = "kms:GrantIsForAWSResource"
      values   = ["true"]
    }
  }
}

resource "aws_iam_role_policy" "emr_service_kms" {
  name   = "use-disk-key"
  role   = aws_iam_role.emr_service.id
  policy = data.aws_iam_policy_document.emr_service_kms.json
}

# Whoever creates the first cluster of an account (the driver, the state machine) lets EMR create
# its cleanup service-linked role (Using service-linked roles for Amazon EMR for cleanup). The
# iam:AWSServiceName key exists only on CreateServiceLinkedRole, hence that action alone.
data "aws_iam_policy_document" "emr_cleanup_role" {
  statement {
    sid       = "CreateEmrCleanupRole"
    actions   = ["iam:CreateServiceLinkedRole"]
    resources = ["arn:${local.partition}:iam::${local.account_id}:role/aws-service-role/elasticmapreduce.amazonaws.com*/AWSServiceRoleForEMRCleanup*"]
    condition {
      test     = "StringEquals"
      variable = "iam:AWSServiceName"
      values   = ["elasticmapreduce.amazonaws.com", "elasticmapreduce.amazonaws.com.cn"]
    }
  }
}

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "emr_instance" {
  name               = "${local.name}-emr-instance"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_instance_profile" "emr_instance" {
  name = "${local.name}-emr-instance"
  role = aws_iam_role.emr_instance.name
}

# Reading and writing the facematch prefix of the bucket with the key: what both the nodes and
# whoever runs the driver need.
data "aws_iam_policy_document" "prefix_access" {
  # List only the facematch prefix (datasets live under it too: --dataset-root <prefix>/datasets).
  statement {
    sid       = "ListPrefix"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.data.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${local.prefix}/*"]
    }
  }
  # Datasets, the binary, the bootstrap script, run specs, rendezvous entries, outputs, EMR logs.
  statement {
    sid       = "ReadWritePrefix"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${aws_s3_bucket.data.arn}/${local.prefix}/*"]
  }
  statement {
    sid       = "UseKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
    resources = [aws_kms_key.data.arn]
  }
}

data "aws_iam_policy_document" "emr_instance" {
  source_policy_documents = [data.aws_iam_policy_document.prefix_access.json]
  # The scheduled run's driver step reads the database credentials.
  statement {
    sid       = "ReadDatabaseSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_db_instance.main.master_user_secret[0].secret_arn]
  }
  # The scheduled run's driver step adds process 0's step to its own cluster and watches it.
  statement {
    sid = "OwnClusterSteps"
    actions = [
      "elasticmapreduce:AddJobFlowSteps",
      "elasticmapreduce:DescribeCluster",
      "elasticmapreduce:DescribeStep",
      "elasticmapreduce:ListInstanceGroups",
      "elasticmapreduce:ListSteps",
    ]
    resources = ["arn:${local.partition}:elasticmapreduce:${var.region}:${local.account_id}:cluster/*"]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/facematch"
      values   = ["worker"]
    }
  }
}

resource "aws_iam_role_policy" "emr_instance" {
  name   = "facematch-prefix"
  role   = aws_iam_role.emr_instance.id
  policy = data.aws_iam_policy_document.emr_instance.json
}
