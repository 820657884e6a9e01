# prod: the studio teams use. One NAT gateway per AZ, Multi-AZ database, at least two tasks per
# service, a gateway per model environment, deletion protection everywhere, seven-year audit lock.
environment = "prod"
aws_region  = "eu-west-1"
vpc_cidr    = "10.42.0.0/16"

image_tag           = "REPLACE_WITH_GIT_SHA"
acm_certificate_arn = "arn:aws:acm:eu-west-1:222222222222:certificate/00000000-0000-0000-0000-000000000002"
studio_hostname     = "studio.mms.example.com"
gateway_hostnames = {
  dev     = "gateway-dev.mms.example.com"
  staging = "gateway-staging.mms.example.com"
  prod    = "gateway.mms.example.com"
}
route53_zone_id = ""

single_nat_gateway      = false
alb_deletion_protection = true

studio_min_count  = 2
studio_max_count  = 6
gateway_min_count = 2
gateway_max_count = 10

db_instance_class            = "db.m7g.large"
db_multi_az                  = true
db_allocated_storage_gib     = 100
db_max_allocated_storage_gib = 500
db_backup_retention_days     = 30
db_deletion_protection       = true

audit_retention_days = 2555
log_retention_days   = 365

enable_execute_command = false

alarm_emails = ["mlops-oncall@example.com"]

github_repository = "example-org/model-monitoring-studio"
github_branches   = ["main"]
