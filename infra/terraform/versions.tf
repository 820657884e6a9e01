# Model Monitoring Studio on AWS: one root module, one state per environment.
#
#   terraform init -backend-config="bucket=<state bucket>" -backend-config="key=mms/dev.tfstate" \
#                  -backend-config="region=<region>"
#   terraform apply -var-file=environments/dev.tfvars
#
# docs/DEPLOYMENT.md walks through bootstrap, first apply, image push, migrations and teardown.

terraform {
  required_version = ">= 1.10.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
  }

  # Partial configuration: bucket, key and region come from `terraform init -backend-config=...`,
  # so one module serves every environment. S3-native locking (use_lockfile) needs Terraform 1.10.
  backend "s3" {
    encrypt      = true
    use_lockfile = true
  }
}

provider "aws" {
  region = var.aws_region

  default_tags {
    tags = {
      Project     = var.project
      Environment = var.environment
      ManagedBy   = "terraform"
    }
  }
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

data "aws_region" "current" {}

# The zones are named, not "the first two available": a zone AWS adds later can never move subnets.
data "aws_availability_zones" "available" {
  state = "available"

  filter {
    name   = "zone-name"
    values = [for suffix in var.availability_zone_suffixes : "${var.aws_region}${suffix}"]
  }
}
