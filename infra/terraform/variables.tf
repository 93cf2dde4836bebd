variable "region" {
  description = "AWS region for every resource."
  type        = string
  default     = "us-east-1"
}

variable "environment" {
  description = "Environment name, part of every resource name (e.g. dev, prod)."
  type        = string
  default     = "dev"
}

variable "tags" {
  description = "Extra tags on every resource."
  type        = map(string)
  default     = {}
}

variable "vpc_cidr" {
  description = "CIDR block of the VPC the cluster and the database live in."
  type        = string
  default     = "10.42.0.0/16"
}

variable "availability_zones" {
  description = "Two availability zones of the region for the private subnets (the database needs two)."
  type        = list(string)
  default     = ["us-east-1a", "us-east-1b"]
  validation {
    condition     = length(var.availability_zones) >= 2
    error_message = "Give at least two availability zones."
  }
}

variable "bucket_name" {
  description = "Name of the S3 bucket for datasets, staged binaries, run rendezvous and EMR logs (globally unique)."
  type        = string
}

variable "bucket_prefix" {
  description = "Prefix inside the bucket for what facematch stages (bin/, runs/, pools/, logs/); maps to --emr-prefix."
  type        = string
  default     = "facematch"
}

variable "noncurrent_version_days" {
  description = "Days to keep noncurrent object versions (datasets are versioned by facematch itself)."
  type        = number
  default     = 30
}

variable "emr_release_label" {
  description = "EMR release of the scheduled cluster (the driver's --emr-release)."
  type        = string
  default     = "emr-7.5.0"
}

variable "primary_instance_type" {
  description = "Instance type of the EMR primary node (runs the driver step and timely process 0)."
  type        = string
  default     = "m7i.xlarge"
}

variable "core_instance_type" {
  description = "Instance type of the EMR core nodes (one timely worker process each)."
  type        = string
  default     = "c7i.2xlarge"
}

variable "core_instance_count" {
  description = "Number of EMR core nodes of the scheduled cluster."
  type        = number
  default     = 2
}

variable "worker_threads" {
  description = "Timely worker threads per process (vCPUs of a core node is a good start)."
  type        = number
  default     = 8
}

variable "timely_port_range" {
  description = "TCP ports the timely worker processes bind (worker --port-range, run --emr-port-range / FACEMATCH_EMR_PORT_RANGE); open only between the cluster's own security groups."
  type        = object({ from = number, to = number })
  default     = { from = 42000, to = 42063 }
  validation {
    condition = (
      var.timely_port_range.from >= 1024 && var.timely_port_range.to <= 65535 &&
      var.timely_port_range.from <= var.timely_port_range.to &&
      var.timely_port_range.to - var.timely_port_range.from + 1 <= 1024
    )
    error_message = "timely_port_range must lie within 1024..65535, have from <= to, and span at most 1024 ports."
  }
}

variable "worker_binary_uri" {
  description = "s3:// URI of the facematch executable built for the EMR OS, as `facematch run --runner emr` stages it under <prefix>/bin/."
  type        = string
}

variable "bootstrap_script_uri" {
  description = "s3:// URI of the bootstrap script `facematch run --runner emr` stages under <prefix>/bin/."
  type        = string
}

variable "db_instance_class" {
  description = "RDS instance class of the facematch database."
  type        = string
  default     = "db.t4g.medium"
}

variable "db_allocated_storage" {
  description = "RDS storage in GiB."
  type        = number
  default     = 50
}

variable "db_multi_az" {
  description = "Run the database Multi-AZ."
  type        = bool
  default     = true
}

variable "db_backup_retention_days" {
  description = "Days of automated RDS backups."
  type        = number
  default     = 7
}

variable "db_ca_bundle_url" {
  description = "Where the scheduled run fetches the CA bundle it verifies the database's certificate with (sslmode=verify-full): an https:// URL (default: AWS's global RDS bundle, reached through the NAT gateway) or an s3:// URI of a copy in the project's bucket (the nodes' role can read it)."
  type        = string
  default     = "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"
  validation {
    condition     = startswith(var.db_ca_bundle_url, "https://") || startswith(var.db_ca_bundle_url, "s3://")
    error_message = "db_ca_bundle_url must be an https:// URL or an s3:// URI."
  }
}

variable "schedule_expression" {
  description = "When the scheduled batch runs (EventBridge Scheduler expression), e.g. rate(1 hour) or cron(0 2 * * ? *)."
  type        = string
  default     = "rate(1 hour)"
}

variable "schedule_enabled" {
  description = "Whether the scheduled run is enabled."
  type        = bool
  default     = true
}

variable "batch_timeout_seconds" {
  description = "Limit on the scheduled batch itself (run --emr-timeout): how long it waits for its workers and its step."
  type        = number
  default     = 5400
  validation {
    condition     = var.batch_timeout_seconds >= 60
    error_message = "batch_timeout_seconds must be at least 60."
  }
}

variable "run_timeout_seconds" {
  description = "Step Functions limit on one scheduled run (cluster start, batch and termination); at least batch_timeout_seconds + 1800."
  type        = number
  default     = 7200
  # Cross-variable validation needs Terraform >= 1.9 (versions.tf).
  validation {
    condition     = var.run_timeout_seconds >= var.batch_timeout_seconds + 1800
    error_message = "run_timeout_seconds must be at least batch_timeout_seconds + 1800 (30 minutes for cluster start-up and termination), or Step Functions ends the run before the batch's own --emr-timeout."
  }
}

variable "log_retention_days" {
  description = "Days to keep the Step Functions logs."
  type        = number
  default     = 365
}
