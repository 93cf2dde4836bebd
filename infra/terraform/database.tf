# RDS PostgreSQL for histories, faces and runs: encrypted with the facematch key, in the private
# subnets, reachable only from the EMR primary node (the driver step) and the driver group.

resource "aws_db_subnet_group" "main" {
  name       = local.name
  subnet_ids = aws_subnet.private[*].id
}

resource "aws_security_group" "database" {
  name        = "${local.name}-database"
  description = "facematch PostgreSQL"
  vpc_id      = aws_vpc.main.id
}

# Drivers outside EMR (a scheduler host, a bastion) join this group to reach the database.
resource "aws_security_group" "driver" {
  #checkov:skip=CKV2_AWS_5:attached outside Terraform, to the hosts that run the driver (output driver_security_group)
  name        = "${local.name}-driver"
  description = "hosts running the facematch driver"
  vpc_id      = aws_vpc.main.id
}

resource "aws_vpc_security_group_egress_rule" "driver_postgres" {
  description                  = "the driver reaches the database"
  security_group_id            = aws_security_group.driver.id
  referenced_security_group_id = aws_security_group.database.id
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
}

resource "aws_vpc_security_group_egress_rule" "driver_https" {
  description       = "the driver calls S3 and the EMR API"
  security_group_id = aws_security_group.driver.id
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_ingress_rule" "database" {
  for_each                     = { emr = aws_security_group.emr_primary.id, driver = aws_security_group.driver.id }
  description                  = "PostgreSQL from the facematch driver (${each.key})"
  security_group_id            = aws_security_group.database.id
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
}

resource "aws_db_parameter_group" "main" {
  name   = local.name
  family = "postgres15"
  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }
  # Biometric data never crosses the network in clear text: the server refuses non-TLS clients.
  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
}

resource "aws_db_instance" "main" {
  #checkov:skip=CKV_AWS_118:enhanced monitoring needs a monitoring role and costs per instance; Performance Insights covers query load
  identifier                          = local.name
  engine                              = "postgres"
  engine_version                      = "15"
  instance_class                      = var.db_instance_class
  allocated_storage                   = var.db_allocated_storage
  storage_type                        = "gp3"
  storage_encrypted                   = true
  kms_key_id                          = aws_kms_key.data.arn
  db_name                             = "facematch"
  username                            = "facematch"
  manage_master_user_password         = true # the password lives in Secrets Manager, never in state
  master_user_secret_kms_key_id       = aws_kms_key.data.arn
  iam_database_authentication_enabled = true
  db_subnet_group_name                = aws_db_subnet_group.main.name
  vpc_security_group_ids              = [aws_security_group.database.id]
  parameter_group_name                = aws_db_parameter_group.main.name
  publicly_accessible                 = false
  multi_az                            = var.db_multi_az
  backup_retention_period             = var.db_backup_retention_days
  deletion_protection                 = true
  skip_final_snapshot                 = false
  final_snapshot_identifier           = "${local.name}-final"
  copy_tags_to_snapshot               = true
  auto_minor_version_upgrade          = true
  performance_insights_enabled        = true
  performance_insights_kms_key_id     = aws_kms_key.data.arn
  enabled_cloudwatch_logs_exports     = ["postgresql", "upgrade"]
}
