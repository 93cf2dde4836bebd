# The EMR cluster's network rules and security configuration. EMR manages the primary and core
# groups, but it adds only missing INGRESS rules, while Terraform removes the allow-all egress
# of every group it creates: so the egress the cluster needs is here — all traffic between the
# primary and core groups, the service-access group's 8443 to both and the primary's 9443 to it
# (emr-man-sec-groups: private subnets, releases 5.30.0 to 7.x), HTTPS out for S3 and the AWS
# APIs, PostgreSQL to the database — and the timely ports, open only between the cluster's groups.

resource "aws_security_group" "emr_primary" {
  #checkov:skip=CKV2_AWS_5:attached by EMR at cluster creation (facematch --emr-*-sg flags and the scheduled run), not by a Terraform resource
  name                   = "${local.name}-emr-primary"
  description            = "EMR primary node: facematch driver step and timely process 0"
  vpc_id                 = aws_vpc.main.id
  revoke_rules_on_delete = true # EMR adds rules of its own; let the group go with them
  tags                   = merge(local.emr_managed_tag, { Name = "${local.name}-emr-primary" })
}

resource "aws_security_group" "emr_core" {
  #checkov:skip=CKV2_AWS_5:attached by EMR at cluster creation (facematch --emr-*-sg flags and the scheduled run), not by a Terraform resource
  name                   = "${local.name}-emr-core"
  description            = "EMR core nodes: facematch timely worker processes"
  vpc_id                 = aws_vpc.main.id
  revoke_rules_on_delete = true
  tags                   = merge(local.emr_managed_tag, { Name = "${local.name}-emr-core" })
}

resource "aws_security_group" "emr_service_access" {
  #checkov:skip=CKV2_AWS_5:attached by EMR at cluster creation (facematch --emr-*-sg flags and the scheduled run), not by a Terraform resource
  name                   = "${local.name}-emr-service-access"
  description            = "EMR service access to the primary node in a private subnet"
  vpc_id                 = aws_vpc.main.id
  revoke_rules_on_delete = true
  tags                   = merge(local.emr_managed_tag, { Name = "${local.name}-emr-service-access" })
}

locals {
  cluster_groups = {
    primary = aws_security_group.emr_primary.id
    core    = aws_security_group.emr_core.id
  }
  # Every (to, from) pair of cluster groups: timely connects every process to every other.
  timely_pairs = {
    for pair in setproduct(keys(local.cluster_groups), keys(local.cluster_groups)) :
    "${pair[0]}-from-${pair[1]}" => { to = local.cluster_groups[pair[0]], from = local.cluster_groups[pair[1]] }
  }
}

resource "aws_vpc_security_group_ingress_rule" "timely" {
  for_each                     = local.timely_pairs
  description                  = "timely dataflow between facematch worker processes"
  security_group_id            = each.value.to
  referenced_security_group_id = each.value.from
  ip_protocol                  = "tcp"
  from_port                    = var.timely_port_range.from
  to_port                      = var.timely_port_range.to
}

resource "aws_vpc_security_group_egress_rule" "https" {
  for_each          = merge(local.cluster_groups, { service = aws_security_group.emr_service_access.id })
  description       = "HTTPS to S3 and the AWS APIs (through the NAT gateway and the S3 endpoint)"
  security_group_id = each.value
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "timely" {
  for_each                     = local.timely_pairs
  description                  = "timely dataflow between facematch worker processes"
  security_group_id            = each.value.from
  referenced_security_group_id = each.value.to
  ip_protocol                  = "tcp"
  from_port                    = var.timely_port_range.from
  to_port                      = var.timely_port_range.to
}

# Everything between the cluster's own nodes, both ways and within each group (EMR adds the
# matching ingress itself: All TCP/UDP/ICMP from the primary and core groups).
resource "aws_vpc_security_group_egress_rule" "cluster" {
  for_each                     = local.timely_pairs
  description                  = "all traffic between the EMR primary and core nodes"
  security_group_id            = each.value.from
  referenced_security_group_id = each.value.to
  ip_protocol                  = "-1"
}

# The cluster manager's ENI (service-access group) reaches the nodes on 8443; the primary node
# answers it on 9443. EMR adds the 8443 ingress on the primary and core groups, but not the
# egress, and not the 9443 rules on custom groups.
resource "aws_vpc_security_group_egress_rule" "service_access" {
  for_each                     = local.cluster_groups
  description                  = "EMR cluster manager to the ${each.key} node(s)"
  security_group_id            = aws_security_group.emr_service_access.id
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = 8443
  to_port                      = 8443
}

resource "aws_vpc_security_group_ingress_rule" "service_access_from_primary" {
  description                  = "the EMR primary node to the cluster manager (releases 5.30.0 and later)"
  security_group_id            = aws_security_group.emr_service_access.id
  referenced_security_group_id = aws_security_group.emr_primary.id
  ip_protocol                  = "tcp"
  from_port                    = 9443
  to_port                      = 9443
}

resource "aws_vpc_security_group_egress_rule" "primary_to_service_access" {
  description                  = "the EMR primary node to the cluster manager (releases 5.30.0 and later)"
  security_group_id            = aws_security_group.emr_primary.id
  referenced_security_group_id = aws_security_group.emr_service_access.id
  ip_protocol                  = "tcp"
  from_port                    = 9443
  to_port                      = 9443
}

resource "aws_vpc_security_group_egress_rule" "postgres" {
  description                  = "the driver step on the primary node reaches the database"
  security_group_id            = aws_security_group.emr_primary.id
  referenced_security_group_id = aws_security_group.database.id
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
}

# Encryption at rest: S3 objects EMR writes (SSE-KMS) and the nodes' local disks and EBS volumes.
# In-transit encryption needs a certificate bundle of yours (TLS between nodes); timely's own
# traffic stays inside the cluster's groups in private subnets.
resource "aws_emr_security_configuration" "main" {
  name = "${local.name}-at-rest"
  configuration = jsonencode({
    EncryptionConfiguration = {
      EnableAtRestEncryption    = true
      EnableInTransitEncryption = false
      AtRestEncryptionConfiguration = {
        S3EncryptionConfiguration = {
          EncryptionMode = "SSE-KMS"
          AwsKmsKey      = aws_kms_key.data.arn
        }
        LocalDiskEncryptionConfiguration = {
          EncryptionKeyProviderType = "AwsKms"
          AwsKmsKey                 = aws_kms_key.data.arn
          EnableEbsEncryption       = true
        }
      }
    }
    InstanceMetadataServiceConfiguration = {
      MinimumInstanceMetadataServiceVersion = 2
      HttpPutResponseHopLimit               = 1
    }
  })
}

# What the person or machine running `facematch run --runner emr` needs: attach it to them.
data "aws_iam_policy_document" "driver" {
  source_policy_documents = [
    data.aws_iam_policy_document.prefix_access.json,
    data.aws_iam_policy_document.emr_cleanup_role.json,
  ]
  statement {
    sid       = "Clusters"
    actions   = ["elasticmapreduce:RunJobFlow", "elasticmapreduce:ListClusters"]
    resources = ["*"] # RunJobFlow and ListClusters take no resource ARN
  }
  statement {
    sid = "OwnClusters"
    actions = [
      "elasticmapreduce:DescribeCluster",
      "elasticmapreduce:DescribeStep",
      "elasticmapreduce:ListSteps",
      "elasticmapreduce:ListInstanceGroups",
      "elasticmapreduce:AddJobFlowSteps",
      "elasticmapreduce:TerminateJobFlows",
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
}

resource "aws_iam_policy" "driver" {
  name        = "${local.name}-driver"
  description = "What `facematch run --runner emr` needs: its clusters, the facematch prefix, the key"
  policy      = data.aws_iam_policy_document.driver.json
}
