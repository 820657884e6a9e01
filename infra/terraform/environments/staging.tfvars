# staging: production's shape at a smaller size, for rehearsing upgrades and migrations.
environment = "staging"
aws_region  = "eu-west-1"
vpc_cidr    = "10.41.0.0/16"

image_tag           = "REPLACE_WITH_GIT_SHA"
acm_certificate_arn = "arn:aws:acm:eu-west-1:111111111111:certificate/00000000-0000-0000-0000-000000000001"
studio_hostname     = "studio.staging.mms.example.com"
gateway_hostnames = {
  staging = "gateway.staging.mms.example.com"
}
route53_zone_id = ""

single_nat_gateway      = true
alb_deletion_protection = true

studio_min_count  = 1
studio_max_count  = 3
gateway_min_count = 1
gateway_max_count = 4

db_instance_class        = "db.t4g.medium"
db_multi_az              = false
db_backup_retention_days = 7
db_deletion_protection   = true

audit_retention_days = 30
log_retention_days   = 90

enable_execute_command = true

github_repository           = "example-org/model-monitoring-studio"
github_branches             = ["main"]
create_github_oidc_provider = false # dev's stack created it in this account
