output "studio_url" {
  description = "URL of the studio."
  value       = "https://${var.studio_hostname}"
}

output "gateway_urls" {
  description = "URL of each inference gateway, by model environment."
  value       = { for env, host in var.gateway_hostnames : env => "https://${host}" }
}

output "alb_dns_name" {
  description = "DNS name of the load balancer: the CNAME/alias target of every host name when DNS is managed outside Route 53."
  value       = aws_lb.main.dns_name
}

output "ecr_repository_urls" {
  description = "Push URL of each ECR repository, by name (`studio` is the platform image)."
  value       = { for name, repo in aws_ecr_repository.this : name => repo.repository_url }
}

output "ecs_cluster_name" {
  description = "ECS cluster running the services and the job tasks."
  value       = aws_ecs_cluster.main.name
}

output "job_task_definition_family" {
  description = "Task definition family for one-off commands (migrate, train, create the first admin): `aws ecs run-task --task-definition <this>`."
  value       = aws_ecs_task_definition.job.family
}

output "private_subnet_ids" {
  description = "Private subnets for one-off `aws ecs run-task` calls."
  value       = aws_subnet.private[*].id
}

output "task_security_group_id" {
  description = "Security group for one-off `aws ecs run-task` calls."
  value       = aws_security_group.tasks.id
}

output "profiling_state_machine_arn" {
  description = "ARN of the profiling state machine (start with input {\"run_id\": \"...\"})."
  value       = aws_sfn_state_machine.profiling.arn
}

output "data_bucket" {
  description = "Bucket of the Parquet data store (MMS_DATA_URI root)."
  value       = aws_s3_bucket.data.bucket
}

output "artifacts_bucket" {
  description = "Bucket of MLflow's artifacts."
  value       = aws_s3_bucket.artifacts.bucket
}

output "audit_bucket" {
  description = "Object Lock (COMPLIANCE) bucket of the audit checkpoints."
  value       = aws_s3_bucket.audit.bucket
}

output "database_endpoint" {
  description = "Address of the PostgreSQL instance (private subnets only)."
  value       = aws_db_instance.main.address
}

output "database_secret_arn" {
  description = "Secrets Manager secret holding the RDS-managed master credentials."
  value       = aws_db_instance.main.master_user_secret[0].secret_arn
}

output "github_deploy_role_arn" {
  description = "Role GitHub Actions assumes through OIDC (`role-to-assume` of aws-actions/configure-aws-credentials)."
  value       = aws_iam_role.github_deploy.arn
}

output "alarm_topic_arn" {
  description = "SNS topic every alarm notifies."
  value       = aws_sns_topic.alarms.arn
}
