# Least-privilege roles. Every statement names its resources; the few "*" resources are actions that
# AWS does not scope to a resource, each justified at its checkov skip.

locals {
  job_task_definition_family_arn = "arn:${local.partition}:ecs:${local.region}:${local.account_id}:task-definition/${local.name}-job:*"
  cluster_task_arns              = "arn:${local.partition}:ecs:${local.region}:${local.account_id}:task/${aws_ecs_cluster.main.name}/*"
  job_pass_roles                 = [aws_iam_role.execution.arn, aws_iam_role.job.arn]
}

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }

    # Confused-deputy guard: only ECS acting for this account may assume the task roles.
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

# --- Task execution role: pull the image, write logs, read the two secrets ------------------------------

data "aws_iam_policy_document" "execution" {
  #checkov:skip=CKV_AWS_356:ecr:GetAuthorizationToken has no resource-level permissions; AWS requires "*".
  #checkov:skip=CKV_AWS_111:Only ecr:GetAuthorizationToken (read-only token issue) is unscoped.
  statement {
    sid       = "EcrToken"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid       = "PullImages"
    actions   = ["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"]
    resources = [for repo in aws_ecr_repository.this : repo.arn]
  }

  statement {
    sid       = "WriteLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = [for group in aws_cloudwatch_log_group.service : "${group.arn}:*"]
  }

  statement {
    sid     = "ReadSecrets"
    actions = ["secretsmanager:GetSecretValue"]
    resources = [
      aws_secretsmanager_secret.flask_secret_key.arn,
      aws_db_instance.main.master_user_secret[0].secret_arn,
    ]
  }

  statement {
    sid       = "DecryptSecretsAndImages"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.main.arn]
  }
}

resource "aws_iam_role" "execution" {
  name               = "${local.name}-ecs-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy" "execution" {
  name   = "pull-log-secrets"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

# --- Reusable statements -------------------------------------------------------------------------------

data "aws_iam_policy_document" "data_bucket_rw" {
  statement {
    sid       = "ListData"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [aws_s3_bucket.data.arn]
  }

  statement {
    sid       = "ReadWriteData"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${aws_s3_bucket.data.arn}/${local.data_prefix}/*"]
  }

  statement {
    sid       = "UseKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]
  }
}

data "aws_iam_policy_document" "audit_append" {
  statement {
    sid       = "ListAudit"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.audit.arn]
  }

  # Append and read only: no delete, no retention change (COMPLIANCE forbids it anyway).
  statement {
    sid       = "AppendReadCheckpoints"
    actions   = ["s3:PutObject", "s3:GetObject", "s3:GetObjectRetention"]
    resources = ["${aws_s3_bucket.audit.arn}/checkpoints/*"]
  }
}

# --- Studio --------------------------------------------------------------------------------------------

data "aws_iam_policy_document" "studio" {
  source_policy_documents = [
    data.aws_iam_policy_document.data_bucket_rw.json,
    data.aws_iam_policy_document.audit_append.json,
  ]

  statement {
    sid       = "StartProfilingRuns"
    actions   = ["states:StartExecution"]
    resources = [local.profiling_state_machine_arn]
  }

  statement {
    sid       = "FollowProfilingRuns"
    actions   = ["states:DescribeExecution", "states:StopExecution"]
    resources = ["arn:${local.partition}:states:${local.region}:${local.account_id}:execution:${local.name}-profiling:*"]
  }
}

data "aws_iam_policy_document" "ecs_exec" {
  #checkov:skip=CKV_AWS_356:The ssmmessages channel actions of ECS Exec have no resource-level permissions; AWS documents "*".
  #checkov:skip=CKV_AWS_111:Same: the ECS Exec session channel cannot be scoped to a resource.
  statement {
    sid = "EcsExecChannel"
    actions = [
      "ssmmessages:CreateControlChannel",
      "ssmmessages:CreateDataChannel",
      "ssmmessages:OpenControlChannel",
      "ssmmessages:OpenDataChannel",
    ]
    resources = ["*"]
  }

  statement {
    sid       = "EcsExecAuditLog"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogGroups"]
    resources = ["${aws_cloudwatch_log_group.ecs_exec.arn}:*"]
  }

  statement {
    sid       = "EcsExecSessionKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]
  }
}

resource "aws_iam_role" "studio" {
  name               = "${local.name}-studio"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy" "studio" {
  name   = "studio"
  role   = aws_iam_role.studio.id
  policy = data.aws_iam_policy_document.studio.json
}

resource "aws_iam_role_policy" "studio_exec" {
  count = var.enable_execute_command ? 1 : 0

  name   = "ecs-exec"
  role   = aws_iam_role.studio.id
  policy = data.aws_iam_policy_document.ecs_exec.json
}

# --- Gateway: reads reference data, writes prediction logs to the data bucket ---------------------------

resource "aws_iam_role" "gateway" {
  name               = "${local.name}-gateway"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy" "gateway" {
  name   = "gateway"
  role   = aws_iam_role.gateway.id
  policy = data.aws_iam_policy_document.data_bucket_rw.json
}

# --- MLflow server: the only writer of model artifacts --------------------------------------------------

data "aws_iam_policy_document" "mlflow" {
  statement {
    sid       = "ListArtifacts"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [aws_s3_bucket.artifacts.arn]
  }

  statement {
    sid       = "ReadWriteArtifacts"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${aws_s3_bucket.artifacts.arn}/mlflow/*"]
  }

  statement {
    sid       = "UseKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]
  }
}

resource "aws_iam_role" "mlflow" {
  name               = "${local.name}-mlflow"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy" "mlflow" {
  name   = "mlflow"
  role   = aws_iam_role.mlflow.id
  policy = data.aws_iam_policy_document.mlflow.json
}

# --- Jobs (monitor, train, migrate, profile-unit, merge) ------------------------------------------------

data "aws_iam_policy_document" "job" {
  source_policy_documents = [
    data.aws_iam_policy_document.data_bucket_rw.json,
    data.aws_iam_policy_document.audit_append.json,
  ]
}

resource "aws_iam_role" "job" {
  name               = "${local.name}-job"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy" "job" {
  name   = "job"
  role   = aws_iam_role.job.id
  policy = data.aws_iam_policy_document.job.json
}

# Shared by every role that starts job tasks (Scheduler, Step Functions, CI).
data "aws_iam_policy_document" "run_job_task" {
  statement {
    sid       = "RunJobTask"
    actions   = ["ecs:RunTask"]
    resources = [local.job_task_definition_family_arn]

    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [aws_ecs_cluster.main.arn]
    }
  }

  statement {
    sid       = "PassJobRoles"
    actions   = ["iam:PassRole"]
    resources = local.job_pass_roles

    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ecs-tasks.amazonaws.com"]
    }
  }
}

# --- Step Functions: the profiling state machine --------------------------------------------------------

data "aws_iam_policy_document" "states_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["states.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

data "aws_iam_policy_document" "profiling" {
  #checkov:skip=CKV_AWS_356:CloudWatch Logs delivery (logs:*LogDelivery, PutResourcePolicy) and X-Ray trace submission have no resource-level permissions; AWS documents "*" for Step Functions logging and tracing.
  #checkov:skip=CKV_AWS_111:Same two unscoped groups: log delivery set-up and X-Ray segments.
  #checkov:skip=CKV_AWS_290:Same two unscoped groups: log delivery set-up and X-Ray segments.
  source_policy_documents = [data.aws_iam_policy_document.run_job_task.json]

  statement {
    sid       = "FollowJobTasks"
    actions   = ["ecs:StopTask", "ecs:DescribeTasks"]
    resources = [local.cluster_task_arns]
  }

  # runTask.sync learns that a task stopped through this managed EventBridge rule.
  statement {
    sid       = "SyncEventsRule"
    actions   = ["events:PutTargets", "events:PutRule", "events:DescribeRule"]
    resources = ["arn:${local.partition}:events:${local.region}:${local.account_id}:rule/StepFunctionsGetEventsForECSTaskRule"]
  }

  statement {
    sid       = "ListManifests"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.data.arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${local.data_prefix}/profiling/runs/*"]
    }
  }

  statement {
    sid       = "WriteMapResults"
    actions   = ["s3:PutObject", "s3:GetObject"]
    resources = ["${aws_s3_bucket.data.arn}/${local.data_prefix}/profiling/map-results/*"]
  }

  statement {
    sid       = "UseKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]
  }

  # A Distributed Map starts one child workflow execution per batch of items.
  statement {
    sid       = "ChildExecutions"
    actions   = ["states:StartExecution"]
    resources = [local.profiling_state_machine_arn]
  }

  statement {
    sid       = "FollowChildExecutions"
    actions   = ["states:DescribeExecution", "states:StopExecution"]
    resources = ["arn:${local.partition}:states:${local.region}:${local.account_id}:execution:${local.name}-profiling/*"]
  }

  statement {
    sid = "LogDelivery"
    actions = [
      "logs:CreateLogDelivery",
      "logs:GetLogDelivery",
      "logs:UpdateLogDelivery",
      "logs:DeleteLogDelivery",
      "logs:ListLogDeliveries",
      "logs:PutResourcePolicy",
      "logs:DescribeResourcePolicies",
      "logs:DescribeLogGroups",
    ]
    resources = ["*"]
  }

  statement {
    sid       = "Tracing"
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules", "xray:GetSamplingTargets"]
    resources = ["*"]
  }
}

resource "aws_iam_role" "profiling" {
  name               = "${local.name}-profiling-sfn"
  assume_role_policy = data.aws_iam_policy_document.states_assume.json
}

resource "aws_iam_role_policy" "profiling" {
  name   = "profiling"
  role   = aws_iam_role.profiling.id
  policy = data.aws_iam_policy_document.profiling.json
}
