# dev: the platform team's sandbox. Cheapest shape: one NAT gateway, single-AZ database, one task
# per service, short log retention, and everything deletable by `terraform destroy`.
environment = "dev"
aws_region  = "eu-west-1"
vpc_cidr    = "10.40.0.0/16"

image_tag           = "REPLACE_WITH_GIT_SHA"
acm_certificate_arn = "arn:aws:acm:eu-west-1:111111111111:certificate/00000000-0000-0000-0000-000000000000"
studio_hostname     = "studio.dev.mms.example.com"
gateway_hostnames = {
  dev = "gateway.dev.mms.example.com"
}
route53_zone_id = ""

single_nat_gateway      = true
alb_deletion_protection = false

studio_cpu        = 512
studio_memory     = 2048
studio_min_count  = 1
studio_max_count  = 2
gateway_cpu       = 512
gateway_memory    = 1024
gateway_min_count = 1
gateway_max_count = 2
mlflow_cpu        = 256
mlflow_memory     = 1024
job_cpu           = 1024
job_memory        = 4096

db_instance_class            = "db.t4g.small"
db_multi_az                  = false
db_allocated_storage_gib     = 20
db_max_allocated_storage_gib = 50
db_backup_retention_days     = 3
db_deletion_protection       = false
db_skip_final_snapshot       = true

# Audit checkpoints written in dev stay locked this long: keep it short so the bucket can be emptied.
audit_retention_days = 1
s3_force_destroy     = true
log_retention_days   = 30

enable_execute_command = true

github_repository = "example-org/model-monitoring-studio"
github_branches   = ["main"]
