# `terraform test` plans the dev and prod shapes against a mocked AWS provider: no credentials, no
# network. It evaluates what parsing cannot: variable validations, for_each/count expansion and the
# values the plan would create. Run offline with a local provider mirror:
#   terraform init -backend=false -plugin-dir=/opt/tf-plugins && terraform test

mock_provider "aws" {
  mock_data "aws_availability_zones" {
    defaults = {
      names = ["eu-west-1a", "eu-west-1b"]
    }
  }

  mock_data "aws_caller_identity" {
    defaults = {
      account_id = "123456789012"
    }
  }

  mock_data "aws_region" {
    defaults = {
      name = "eu-west-1"
    }
  }

  mock_data "aws_partition" {
    defaults = {
      partition = "aws"
    }
  }

  mock_data "aws_iam_policy_document" {
    defaults = {
      json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}"
    }
  }

  mock_data "aws_elb_service_account" {
    defaults = {
      arn = "arn:aws:iam::156460612806:root"
    }
  }

  mock_resource "aws_db_instance" {
    defaults = {
      address = "mms.abcdefghij.eu-west-1.rds.amazonaws.com"
      master_user_secret = [{
        secret_arn    = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds!db-1-AbCdEf"
        kms_key_id    = "arn:aws:kms:eu-west-1:123456789012:key/1"
        secret_status = "active"
      }]
    }
  }

  mock_resource "aws_kms_key" {
    defaults = {
      arn = "arn:aws:kms:eu-west-1:123456789012:key/00000000-0000-0000-0000-000000000000"
    }
  }

  mock_resource "aws_iam_role" {
    defaults = {
      arn = "arn:aws:iam::123456789012:role/mock"
    }
  }

  mock_resource "aws_ecs_cluster" {
    defaults = {
      arn = "arn:aws:ecs:eu-west-1:123456789012:cluster/mock"
    }
  }

  mock_resource "aws_ecs_task_definition" {
    defaults = {
      arn = "arn:aws:ecs:eu-west-1:123456789012:task-definition/mock:1"
    }
  }

  mock_resource "aws_sqs_queue" {
    defaults = {
      arn = "arn:aws:sqs:eu-west-1:123456789012:mock"
    }
  }

  mock_resource "aws_sns_topic" {
    defaults = {
      arn = "arn:aws:sns:eu-west-1:123456789012:mock"
    }
  }

  mock_resource "aws_cloudwatch_log_group" {
    defaults = {
      arn = "arn:aws:logs:eu-west-1:123456789012:log-group:mock"
    }
  }

  mock_resource "aws_lb" {
    defaults = {
      arn        = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/mock/1"
      arn_suffix = "app/mock/1"
    }
  }

  mock_resource "aws_lb_target_group" {
    defaults = {
      arn        = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/mock/1"
      arn_suffix = "targetgroup/mock/1"
    }
  }

  mock_resource "aws_iam_openid_connect_provider" {
    defaults = {
      arn = "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"
    }
  }

  mock_data "aws_iam_openid_connect_provider" {
    defaults = {
      arn = "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"
    }
  }

  mock_resource "aws_sfn_state_machine" {
    defaults = {
      arn = "arn:aws:states:eu-west-1:123456789012:stateMachine:mock"
    }
  }

  mock_resource "aws_wafv2_web_acl" {
    defaults = {
      arn = "arn:aws:wafv2:eu-west-1:123456789012:regional/webacl/mock/1"
    }
  }

  mock_resource "aws_secretsmanager_secret" {
    defaults = {
      arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:mock"
    }
  }

  mock_resource "aws_ecr_repository" {
    defaults = {
      arn            = "arn:aws:ecr:eu-west-1:123456789012:repository/mock"
      repository_url = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/mock"
    }
  }

  mock_resource "aws_s3_bucket" {
    defaults = {
      arn = "arn:aws:s3:::mock"
    }
  }
}

variables {
  image_tag = "0123456789ab"
}

run "dev" {
  command = plan

  variables {
    environment         = "dev"
    acm_certificate_arn = "arn:aws:acm:eu-west-1:111111111111:certificate/00000000-0000-0000-0000-000000000000"
    studio_hostname     = "studio.dev.mms.example.com"
    gateway_hostnames   = { dev = "gateway.dev.mms.example.com" }
    github_repository   = "example-org/model-monitoring-studio"
    single_nat_gateway  = true
    db_multi_az         = false
  }

  assert {
    condition     = length(aws_nat_gateway.main) == 1
    error_message = "single_nat_gateway must create exactly one NAT gateway."
  }

  assert {
    condition     = length(aws_subnet.public) == 2 && length(aws_subnet.private) == 2
    error_message = "two public and two private subnets."
  }

  assert {
    condition     = aws_db_instance.main.multi_az == false
    error_message = "dev runs a single-AZ database."
  }

  assert {
    condition     = keys(aws_ecs_service.gateway) == ["dev"]
    error_message = "one gateway per gateway_hostnames entry."
  }

  assert {
    condition     = output.studio_url == "https://studio.dev.mms.example.com"
    error_message = "studio_url is the HTTPS URL of studio_hostname."
  }
}

run "prod" {
  command = plan

  variables {
    environment         = "prod"
    acm_certificate_arn = "arn:aws:acm:eu-west-1:222222222222:certificate/00000000-0000-0000-0000-000000000002"
    studio_hostname     = "studio.mms.example.com"
    gateway_hostnames = {
      dev     = "gateway-dev.mms.example.com"
      staging = "gateway-staging.mms.example.com"
      prod    = "gateway.mms.example.com"
    }
    github_repository = "example-org/model-monitoring-studio"
  }

  assert {
    condition     = length(aws_nat_gateway.main) == 2
    error_message = "prod has one NAT gateway per AZ."
  }

  assert {
    condition     = aws_db_instance.main.multi_az && aws_db_instance.main.deletion_protection
    error_message = "prod's database is Multi-AZ and deletion-protected (the defaults)."
  }

  assert {
    condition     = length(aws_appautoscaling_policy.requests) == 4 && length(aws_appautoscaling_policy.cpu) == 4
    error_message = "the studio and three gateways scale on CPU and on requests."
  }

  assert {
    condition     = alltrue([for rule in aws_lb_listener_rule.gateway : rule.priority >= 20])
    error_message = "gateway rules come after the studio's."
  }

  assert {
    condition     = length(distinct([for rule in aws_lb_listener_rule.gateway : rule.priority])) == 3
    error_message = "listener rule priorities are unique."
  }

  assert {
    condition     = aws_s3_bucket_object_lock_configuration.audit.rule[0].default_retention[0].mode == "COMPLIANCE"
    error_message = "audit checkpoints are locked in COMPLIANCE mode."
  }

  assert {
    condition     = output.gateway_urls["prod"] == "https://gateway.mms.example.com"
    error_message = "gateway_urls maps each model environment to its URL."
  }
}
