# EventBridge Scheduler runs each job of `python -m jobs scheduler` (monitor, alerts, deploy,
# expire_pending, audit_checkpoint) as an ECS Fargate task on its own schedule, with `--once JOB`:
# the job takes the scheduler's DB lease, so an overlapping run (a canary rollout of `deploy` lasts
# longer than its one-minute schedule) exits at once instead of running twice.
# A failed delivery (after retries) lands in an encrypted dead-letter queue, which is alarmed on.

locals {
  scheduled_jobs = {
    monitor = {
      expression  = var.monitor_schedule_expression
      description = "Runs the monitor job then alert evaluation"
    }
    alerts = {
      expression  = var.job_schedule_expressions.alerts
      description = "Evaluates alert rules, freshness included, between monitor runs"
    }
    deploy = {
      expression  = var.job_schedule_expressions.deploy
      description = "Carries out queued deployments and owns running canary rollouts"
    }
    expire_pending = {
      expression  = var.job_schedule_expressions.expire_pending
      description = "Expires promotion requests left pending past their deadline"
    }
    audit_checkpoint = {
      expression  = var.job_schedule_expressions.audit_checkpoint
      description = "Signs the audit chain head into the Object Lock audit bucket"
    }
  }
}

resource "aws_scheduler_schedule_group" "main" {
  name = local.name
}

resource "aws_sqs_queue" "scheduler_dlq" {
  name                      = "${local.name}-scheduler-dlq"
  kms_master_key_id         = aws_kms_key.main.arn
  message_retention_seconds = 1209600
}

data "aws_iam_policy_document" "scheduler_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["scheduler.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

data "aws_iam_policy_document" "scheduler" {
  source_policy_documents = [data.aws_iam_policy_document.run_job_task.json]

  statement {
    sid       = "DeadLetters"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.scheduler_dlq.arn]
  }

  statement {
    sid       = "EncryptDeadLetters"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]
  }
}

resource "aws_iam_role" "scheduler" {
  name               = "${local.name}-scheduler"
  assume_role_policy = data.aws_iam_policy_document.scheduler_assume.json
}

resource "aws_iam_role_policy" "scheduler" {
  name   = "run-monitor"
  role   = aws_iam_role.scheduler.id
  policy = data.aws_iam_policy_document.scheduler.json
}

resource "aws_scheduler_schedule" "job" {
  for_each = local.scheduled_jobs

  name                         = "${local.name}-${replace(each.key, "_", "-")}"
  group_name                   = aws_scheduler_schedule_group.main.name
  description                  = "${each.value.description} (python -m jobs scheduler --once ${each.key}) under the DB lease"
  schedule_expression          = each.value.expression
  schedule_expression_timezone = var.monitor_schedule_timezone
  kms_key_arn                  = aws_kms_key.main.arn

  flexible_time_window {
    mode = "OFF"
  }

  target {
    arn      = aws_ecs_cluster.main.arn
    role_arn = aws_iam_role.scheduler.arn
    input = jsonencode({
      containerOverrides = [
        { name = "job", command = ["python", "-m", "jobs", "scheduler", "--once", each.key] },
      ]
    })

    ecs_parameters {
      task_definition_arn = aws_ecs_task_definition.job.arn
      launch_type         = "FARGATE"
      platform_version    = "LATEST"
      task_count          = 1
      propagate_tags      = "TASK_DEFINITION"

      network_configuration {
        subnets          = aws_subnet.private[*].id
        security_groups  = [aws_security_group.tasks.id]
        assign_public_ip = false
      }
    }

    retry_policy {
      maximum_event_age_in_seconds = 3600
      maximum_retry_attempts       = 3
    }

    dead_letter_config {
      arn = aws_sqs_queue.scheduler_dlq.arn
    }
  }
}
