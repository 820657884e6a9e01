# The profiling state machine (ASL in stepfunctions/profiling.asl.json): a Distributed Map lists the
# run's unit manifests in the data bucket and runs `python -m jobs profile-unit` for each as an ECS
# Fargate task (.sync waits for the task), then one `python -m jobs merge --run` task.
# Start a run with: aws stepfunctions start-execution --state-machine-arn ... --input '{"run_id": "R"}'

resource "aws_cloudwatch_log_group" "profiling" {
  # Step Functions vended logs must live under /aws/vendedlogs/ to avoid the resource-policy size limit.
  name              = "/aws/vendedlogs/states/${local.name}-profiling"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

resource "aws_sfn_state_machine" "profiling" {
  name     = "${local.name}-profiling"
  type     = "STANDARD" # a Distributed Map's parent must be a standard workflow
  role_arn = aws_iam_role.profiling.arn

  definition = templatefile("${path.module}/stepfunctions/profiling.asl.json", {
    cluster_arn                  = aws_ecs_cluster.main.arn
    task_definition_arn          = aws_ecs_task_definition.job.arn
    container_name               = "job"
    subnets                      = jsonencode(aws_subnet.private[*].id)
    security_groups              = jsonencode([aws_security_group.tasks.id])
    data_bucket                  = aws_s3_bucket.data.bucket
    data_prefix                  = local.data_prefix
    max_concurrency              = var.profiling_max_concurrency
    tolerated_failure_percentage = var.profiling_tolerated_failure_percentage
    task_timeout_seconds         = 3600
  })

  logging_configuration {
    log_destination        = "${aws_cloudwatch_log_group.profiling.arn}:*"
    include_execution_data = true # run ids and manifest keys of failed states: what a rerun needs
    level                  = "ERROR"
  }

  tracing_configuration {
    enabled = true
  }

  encryption_configuration {
    type                              = "CUSTOMER_MANAGED_KMS_KEY"
    kms_key_id                        = aws_kms_key.main.arn
    kms_data_key_reuse_period_seconds = 300
  }

}
