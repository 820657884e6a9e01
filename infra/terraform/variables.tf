# Every variable has a description (a test asserts it). Defaults are the production-safe choice;
# environments/dev.tfvars relaxes the expensive ones explicitly.

variable "project" {
  description = "Short project name, prefix of every resource name (lowercase letters, digits, hyphens)."
  type        = string
  default     = "mms"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,15}$", var.project))
    error_message = "project must be 2-16 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "environment" {
  description = "Platform stage this stack is: dev, staging or prod (one Terraform state each)."
  type        = string

  validation {
    condition     = contains(["dev", "staging", "prod"], var.environment)
    error_message = "environment must be dev, staging or prod."
  }
}

variable "aws_region" {
  description = "AWS region of the whole stack."
  type        = string
  default     = "eu-west-1"
}

variable "availability_zone_suffixes" {
  description = "Letters of the two availability zones to use in aws_region (e.g. [\"a\", \"b\"] = eu-west-1a, eu-west-1b)."
  type        = list(string)
  default     = ["a", "b"]

  validation {
    condition     = length(var.availability_zone_suffixes) == 2
    error_message = "availability_zone_suffixes must name exactly two zones."
  }
}

variable "vpc_cidr" {
  description = "CIDR block of the VPC; split into two public and two private /20 subnets."
  type        = string
  default     = "10.40.0.0/16"
}

variable "single_nat_gateway" {
  description = "One NAT gateway shared by both private subnets (cheaper, but an AZ outage cuts egress) instead of one per AZ."
  type        = bool
  default     = false
}

variable "image_tag" {
  description = "Tag of the studio image in the `studio` ECR repository that every service and job runs (immutable: use the git SHA)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.image_tag)) && var.image_tag != "latest"
    error_message = "image_tag must be a valid, immutable Docker tag (not 'latest')."
  }
}

variable "ecr_repository_names" {
  description = "ECR repositories to create: `studio` holds the platform image; `training` holds teams' training images built FROM it."
  type        = set(string)
  default     = ["studio", "training"]

  validation {
    condition     = contains(var.ecr_repository_names, "studio")
    error_message = "ecr_repository_names must include \"studio\"."
  }
}

variable "ecr_keep_images" {
  description = "How many tagged images each ECR repository keeps before the oldest expire."
  type        = number
  default     = 50
}

# --- DNS and TLS -------------------------------------------------------------------------------------

variable "acm_certificate_arn" {
  description = "ARN of an issued ACM certificate (same region) covering the studio and gateway host names."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/.+$", var.acm_certificate_arn))
    error_message = "acm_certificate_arn must be an ACM certificate ARN."
  }
}

variable "studio_hostname" {
  description = "Host name of the studio, e.g. studio.mms.example.com (routed by the ALB's Host header)."
  type        = string
}

variable "gateway_hostnames" {
  description = "Inference gateways to run: model environment (dev/staging/prod) => host name. One ECS service each, running `python -m jobs serve --env <key>`."
  type        = map(string)

  validation {
    condition     = length(var.gateway_hostnames) > 0 && alltrue([for env in keys(var.gateway_hostnames) : contains(["dev", "staging", "prod"], env)])
    error_message = "gateway_hostnames needs at least one entry, keyed by dev, staging or prod."
  }
}

variable "route53_zone_id" {
  description = "Route 53 hosted zone in which to create alias records for the host names; empty to manage DNS elsewhere (point CNAMEs at the alb_dns_name output)."
  type        = string
  default     = ""
}

variable "alb_ingress_cidrs" {
  description = "CIDR blocks allowed to reach the load balancer on 80/443 (0.0.0.0/0 for a public studio)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "alb_deletion_protection" {
  description = "Refuse to delete the load balancer until this is turned off (turn off before a teardown)."
  type        = bool
  default     = true
}

variable "waf_rate_limit_per_5min" {
  description = "Requests one client IP may send in 5 minutes before the WAF blocks it."
  type        = number
  default     = 2000
}

# --- Compute -------------------------------------------------------------------------------------------

variable "studio_cpu" {
  description = "Fargate CPU units of one studio task (1024 = 1 vCPU)."
  type        = number
  default     = 1024
}

variable "studio_memory" {
  description = "Memory (MiB) of one studio task."
  type        = number
  default     = 4096
}

variable "studio_web_workers" {
  description = "Gunicorn worker processes per studio task (MMS_WEB_WORKERS)."
  type        = number
  default     = 2
}

variable "studio_min_count" {
  description = "Minimum number of studio tasks (autoscaling floor)."
  type        = number
  default     = 2
}

variable "studio_max_count" {
  description = "Maximum number of studio tasks (autoscaling ceiling)."
  type        = number
  default     = 6
}

variable "gateway_cpu" {
  description = "Fargate CPU units of one gateway task."
  type        = number
  default     = 1024
}

variable "gateway_memory" {
  description = "Memory (MiB) of one gateway task."
  type        = number
  default     = 2048
}

variable "gateway_min_count" {
  description = "Minimum number of tasks per gateway (autoscaling floor)."
  type        = number
  default     = 2
}

variable "gateway_max_count" {
  description = "Maximum number of tasks per gateway (autoscaling ceiling)."
  type        = number
  default     = 10
}

variable "mlflow_cpu" {
  description = "Fargate CPU units of the MLflow tracking server task."
  type        = number
  default     = 512
}

variable "mlflow_memory" {
  description = "Memory (MiB) of the MLflow tracking server task."
  type        = number
  default     = 2048
}

variable "job_cpu" {
  description = "Fargate CPU units of a job task (monitor, train, migrate, profile-unit, merge)."
  type        = number
  default     = 2048
}

variable "job_memory" {
  description = "Memory (MiB) of a job task."
  type        = number
  default     = 8192
}

variable "job_ephemeral_storage_gib" {
  description = "Ephemeral storage (GiB, 21-200) of a job task, for DuckDB spill files."
  type        = number
  default     = 50
}

variable "duckdb_memory_limit" {
  description = "MMS_DUCKDB_MEMORY_LIMIT given to every container (keep well under the task memory)."
  type        = string
  default     = "1GB"
}

variable "duckdb_threads" {
  description = "MMS_DUCKDB_THREADS given to every container."
  type        = number
  default     = 2
}

variable "autoscaling_cpu_target_percent" {
  description = "Average CPU utilisation the studio and gateway services are scaled to hold."
  type        = number
  default     = 60
}

variable "studio_requests_per_target" {
  description = "ALB requests per minute per studio task that triggers a scale-out."
  type        = number
  default     = 600
}

variable "gateway_requests_per_target" {
  description = "ALB requests per minute per gateway task that triggers a scale-out."
  type        = number
  default     = 3000
}

variable "enable_execute_command" {
  description = "Allow `aws ecs execute-command` into studio tasks (used once to create the first admin; audited in CloudWatch)."
  type        = bool
  default     = false
}

# --- Database ------------------------------------------------------------------------------------------

variable "db_instance_class" {
  description = "RDS instance class of the PostgreSQL metadata database."
  type        = string
  default     = "db.t4g.medium"
}

variable "db_engine_version" {
  description = "PostgreSQL engine version (major.minor)."
  type        = string
  default     = "16.10"
}

variable "db_allocated_storage_gib" {
  description = "Initial gp3 storage of the database (GiB)."
  type        = number
  default     = 50
}

variable "db_max_allocated_storage_gib" {
  description = "Ceiling of storage autoscaling (GiB)."
  type        = number
  default     = 200
}

variable "db_multi_az" {
  description = "Run the database as a Multi-AZ deployment (a standby in the second AZ; doubles the instance cost)."
  type        = bool
  default     = true
}

variable "db_backup_retention_days" {
  description = "Days of automated RDS backups (point-in-time recovery window)."
  type        = number
  default     = 14
}

variable "db_deletion_protection" {
  description = "Refuse to delete the database until this is turned off (turn off before a teardown)."
  type        = bool
  default     = true
}

variable "db_skip_final_snapshot" {
  description = "Delete the database without a final snapshot (only for throwaway dev stacks)."
  type        = bool
  default     = false
}

# --- Storage -------------------------------------------------------------------------------------------

variable "audit_retention_days" {
  description = "Object Lock COMPLIANCE retention of audit checkpoints: nobody, root included, can delete them earlier."
  type        = number
  default     = 2555
}

variable "noncurrent_version_retention_days" {
  description = "Days a replaced or deleted object version is kept in the data and artifacts buckets."
  type        = number
  default     = 90
}

variable "s3_force_destroy" {
  description = "Let `terraform destroy` empty the data, artifacts and log buckets (never the Object Lock audit bucket)."
  type        = bool
  default     = false
}

# --- Jobs ----------------------------------------------------------------------------------------------

variable "monitor_schedule_expression" {
  description = "EventBridge Scheduler expression of the monitor job (`python -m jobs scheduler --once monitor`)."
  type        = string
  default     = "cron(15 * * * ? *)"
}

variable "job_schedule_expressions" {
  description = "EventBridge Scheduler expressions of the other scheduled jobs (alerts, deploy, expire_pending, audit_checkpoint; see scheduler.tf)."
  type = object({
    alerts           = optional(string, "rate(5 minutes)")
    deploy           = optional(string, "rate(1 minute)")
    expire_pending   = optional(string, "cron(7 * * * ? *)")
    audit_checkpoint = optional(string, "cron(30 * * * ? *)")
  })
  default = {}

  validation {
    condition = alltrue([
      for expression in values(var.job_schedule_expressions) :
      can(regex("^(rate\\(\\d+ (minute|minutes|hour|hours|day|days)\\)|cron\\(.+\\))$", expression))
    ])
    error_message = "Each job schedule must be an EventBridge rate(...) or cron(...) expression."
  }
}

variable "monitor_schedule_timezone" {
  description = "Time zone of every job schedule (monitor_schedule_expression and job_schedule_expressions)."
  type        = string
  default     = "UTC"
}

variable "profiling_max_concurrency" {
  description = "Profile-unit tasks the Step Functions Distributed Map runs at once."
  type        = number
  default     = 20
}

variable "profiling_tolerated_failure_percentage" {
  description = "Share of profile-unit tasks that may fail before the profiling run fails (0 = any failure fails the run)."
  type        = number
  default     = 0
}

# --- Observability -------------------------------------------------------------------------------------

variable "log_retention_days" {
  description = "Retention of every CloudWatch log group (days; one of the values CloudWatch accepts)."
  type        = number
  default     = 365
}

variable "alarm_emails" {
  description = "E-mail addresses subscribed to the alarm topic (each must confirm the subscription)."
  type        = list(string)
  default     = []
}

variable "alarm_5xx_rate_percent" {
  description = "Alarm when 5xx responses (load balancer and targets) exceed this percentage of requests over 5 minutes."
  type        = number
  default     = 2
}

variable "alarm_p99_latency_seconds" {
  description = "Alarm when a target group's p99 TargetResponseTime exceeds this many seconds for 3 of 5 minutes."
  type        = number
  default     = 3
}

# --- CI/CD ---------------------------------------------------------------------------------------------

variable "github_repository" {
  description = "GitHub repository (owner/name) whose workflows may assume the deploy role through OIDC."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", var.github_repository))
    error_message = "github_repository must be owner/name."
  }
}

variable "github_branches" {
  description = "Branches whose workflow runs may assume the deploy role (the OIDC `sub` claim is pinned to them)."
  type        = list(string)
  default     = ["main"]
}

variable "github_environments" {
  description = "GitHub deployment environments whose jobs may assume the deploy role (sub = repo:OWNER/NAME:environment:ENV)."
  type        = list(string)
  default     = []
}

variable "create_github_oidc_provider" {
  description = "Create the account's GitHub OIDC provider; false when another stack in the account already did (its ARN is then looked up)."
  type        = bool
  default     = true
}
