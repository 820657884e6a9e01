# GitHub Actions deploys through OIDC federation: a workflow run of the named repository, on an
# allowed branch or GitHub environment, exchanges its ID token for this role's short-lived
# credentials. No access key exists anywhere.

locals {
  github_oidc_host = "token.actions.githubusercontent.com"
  github_subjects = concat(
    [for branch in var.github_branches : "repo:${var.github_repository}:ref:refs/heads/${branch}"],
    [for env in var.github_environments : "repo:${var.github_repository}:environment:${env}"],
  )
  github_oidc_provider_arn = var.create_github_oidc_provider ? aws_iam_openid_connect_provider.github[0].arn : data.aws_iam_openid_connect_provider.github[0].arn
}

resource "aws_iam_openid_connect_provider" "github" {
  count = var.create_github_oidc_provider ? 1 : 0

  url            = "https://${local.github_oidc_host}"
  client_id_list = ["sts.amazonaws.com"]
  # AWS validates GitHub's tokens against its trusted CA library; the thumbprints are only kept
  # for API compatibility (GitHub's two published intermediate thumbprints).
  thumbprint_list = [
    "6938fd4d98bab03faadb97b34396831e3780aea1",
    "1c58a3a8518e8759bf075b76b750d4f2df264fcd",
  ]
}

data "aws_iam_openid_connect_provider" "github" {
  count = var.create_github_oidc_provider ? 0 : 1

  url = "https://${local.github_oidc_host}"
}

data "aws_iam_policy_document" "github_assume" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [local.github_oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.github_oidc_host}:aud"
      values   = ["sts.amazonaws.com"]
    }

    # Exact subjects only (no wildcard): this repository, these branches / environments.
    condition {
      test     = "StringEquals"
      variable = "${local.github_oidc_host}:sub"
      values   = local.github_subjects
    }
  }
}

data "aws_iam_policy_document" "github_deploy" {
  #checkov:skip=CKV_AWS_356:ecr:GetAuthorizationToken, ecs:RegisterTaskDefinition and ecs:DescribeTaskDefinition have no resource-level permissions; AWS requires "*" for them.
  #checkov:skip=CKV_AWS_111:Only the three unscoped actions above; pushes, task runs and role passing are scoped.
  #checkov:skip=CKV_AWS_290:Same: RegisterTaskDefinition cannot be scoped; iam:PassRole (below) limits what a registered definition can use.
  source_policy_documents = [data.aws_iam_policy_document.run_job_task.json]

  statement {
    sid       = "EcrToken"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid = "PushImages"
    actions = [
      "ecr:BatchCheckLayerAvailability",
      "ecr:InitiateLayerUpload",
      "ecr:UploadLayerPart",
      "ecr:CompleteLayerUpload",
      "ecr:PutImage",
      "ecr:BatchGetImage",
      "ecr:GetDownloadUrlForLayer",
      "ecr:DescribeImages",
      "ecr:DescribeImageScanFindings",
    ]
    resources = [for repo in aws_ecr_repository.this : repo.arn]
  }

  # Training runs with the freshly pushed image: CI registers a revision of the job task
  # definition that points at it, then runs it (RunTask is scoped to the job family above).
  statement {
    sid       = "RegisterJobRevision"
    actions   = ["ecs:RegisterTaskDefinition", "ecs:DescribeTaskDefinition"]
    resources = ["*"]
  }

  statement {
    sid       = "FollowJobTasks"
    actions   = ["ecs:DescribeTasks"]
    resources = [local.cluster_task_arns]
  }

  statement {
    sid       = "ReadJobLogs"
    actions   = ["logs:GetLogEvents", "logs:FilterLogEvents"]
    resources = ["${aws_cloudwatch_log_group.service["job"].arn}:*"]
  }
}

resource "aws_iam_role" "github_deploy" {
  name                 = "${local.name}-github-deploy"
  description          = "Assumed by GitHub Actions of ${var.github_repository} through OIDC"
  assume_role_policy   = data.aws_iam_policy_document.github_assume.json
  max_session_duration = 3600
}

resource "aws_iam_role_policy" "github_deploy" {
  name   = "push-and-train"
  role   = aws_iam_role.github_deploy.id
  policy = data.aws_iam_policy_document.github_deploy.json
}
