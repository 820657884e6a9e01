# ECS on Fargate: the studio and one gateway per model environment behind the ALB, an internal MLflow
# tracking server found through Cloud Map, and a `job` task definition that every one-off command
# runs with (monitor by EventBridge Scheduler, profile-unit/merge by Step Functions, migrate and train
# by hand or CI). All containers run the same image with a read-only root filesystem; /tmp and the
# app's var dir are per-task scratch volumes.

resource "aws_ecs_cluster" "main" {
  name = local.name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }

  configuration {
    execute_command_configuration {
      kms_key_id = aws_kms_key.main.arn
      logging    = "OVERRIDE"

      log_configuration {
        cloud_watch_encryption_enabled = true
        cloud_watch_log_group_name     = aws_cloudwatch_log_group.ecs_exec.name
      }
    }
  }
}

resource "aws_ecs_cluster_capacity_providers" "main" {
  cluster_name       = aws_ecs_cluster.main.name
  capacity_providers = ["FARGATE", "FARGATE_SPOT"]

  default_capacity_provider_strategy {
    capacity_provider = "FARGATE"
    weight            = 1
  }
}

resource "aws_cloudwatch_log_group" "service" {
  for_each = toset(concat(["studio", "mlflow", "job"], [for env in local.gateway_environments : "gateway-${env}"]))

  name              = "/${var.project}/${var.environment}/${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

resource "aws_cloudwatch_log_group" "ecs_exec" {
  name              = "/${var.project}/${var.environment}/ecs-exec"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

locals {
  scratch_volumes = ["tmp", "var"]
  scratch_mounts = [
    { sourceVolume = "tmp", containerPath = "/tmp", readOnly = false },
    { sourceVolume = "var", containerPath = "/var/lib/mms", readOnly = false },
  ]

  http_health_command = {
    for port in [local.studio_port, local.gateway_port, local.mlflow_port] :
    port => [
      "CMD", "python", "-c",
      "import urllib.request; urllib.request.urlopen('http://127.0.0.1:${port}/${port == local.mlflow_port ? "health" : "healthz"}', timeout=4)",
    ]
  }

  log_options = {
    for name, group in aws_cloudwatch_log_group.service :
    name => {
      logDriver = "awslogs"
      options = {
        awslogs-group         = group.name
        awslogs-region        = local.region
        awslogs-stream-prefix = name
      }
    }
  }

  # MLflow keeps its own database on the same instance; created on first start when missing.
  mlflow_create_db = "import psycopg; c = psycopg.connect(dbname='${local.db_name}', autocommit=True); c.execute('SELECT 1 FROM pg_database WHERE datname = %s', ('${local.mlflow_db_name}',)).fetchone() or c.execute('CREATE DATABASE ${local.mlflow_db_name}')"
}

# --- Studio --------------------------------------------------------------------------------------------

resource "aws_ecs_task_definition" "studio" {
  family                   = "${local.name}-studio"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.studio_cpu
  memory                   = var.studio_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.studio.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  dynamic "volume" {
    for_each = local.scratch_volumes
    content {
      name = volume.value
    }
  }

  container_definitions = jsonencode([
    {
      name                   = "studio"
      image                  = local.image
      essential              = true
      readonlyRootFilesystem = true
      portMappings           = [{ containerPort = local.studio_port, protocol = "tcp" }]
      environment = concat(local.common_environment, [
        { name = "MMS_WEB_WORKERS", value = tostring(var.studio_web_workers) },
        { name = "MMS_HEALTH_PORT", value = tostring(local.studio_port) },
        # Only the ALB can reach the tasks (security group), so trust its X-Forwarded-* headers.
        { name = "MMS_FORWARDED_ALLOW_IPS", value = "*" },
      ])
      secrets          = local.common_secrets
      mountPoints      = local.scratch_mounts
      logConfiguration = local.log_options["studio"]
      healthCheck = {
        command     = local.http_health_command[local.studio_port]
        interval    = 30
        timeout     = 5
        retries     = 3
        startPeriod = 60
      }
    },
  ])
}

resource "aws_ecs_service" "studio" {
  name                               = "studio"
  cluster                            = aws_ecs_cluster.main.id
  task_definition                    = aws_ecs_task_definition.studio.arn
  desired_count                      = var.studio_min_count
  launch_type                        = "FARGATE"
  platform_version                   = "LATEST"
  health_check_grace_period_seconds  = 90
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  enable_execute_command             = var.enable_execute_command
  propagate_tags                     = "SERVICE"

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = aws_subnet.private[*].id
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.studio.arn
    container_name   = "studio"
    container_port   = local.studio_port
  }

  lifecycle {
    ignore_changes = [desired_count] # owned by autoscaling once created
  }

  # The target group must be routed to by a listener rule before a service can register into it.
  depends_on = [aws_lb_listener_rule.studio]
}

# --- Gateways (one per model environment) --------------------------------------------------------------

resource "aws_ecs_task_definition" "gateway" {
  for_each = local.gateway_environments

  family                   = "${local.name}-gateway-${each.key}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.gateway_cpu
  memory                   = var.gateway_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.gateway.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  dynamic "volume" {
    for_each = local.scratch_volumes
    content {
      name = volume.value
    }
  }

  container_definitions = jsonencode([
    {
      name                   = "gateway"
      image                  = local.image
      essential              = true
      command                = ["python", "-m", "jobs", "serve", "--env", each.key]
      readonlyRootFilesystem = true
      portMappings           = [{ containerPort = local.gateway_port, protocol = "tcp" }]
      environment = concat(local.common_environment, [
        { name = "MMS_PORT", value = tostring(local.gateway_port) },
        { name = "MMS_HEALTH_PORT", value = tostring(local.gateway_port) },
      ])
      secrets          = local.common_secrets
      mountPoints      = local.scratch_mounts
      logConfiguration = local.log_options["gateway-${each.key}"]
      healthCheck = {
        command     = local.http_health_command[local.gateway_port]
        interval    = 30
        timeout     = 5
        retries     = 3
        startPeriod = 60
      }
    },
  ])
}

resource "aws_ecs_service" "gateway" {
  for_each = local.gateway_environments

  name                               = "gateway-${each.key}"
  cluster                            = aws_ecs_cluster.main.id
  task_definition                    = aws_ecs_task_definition.gateway[each.key].arn
  desired_count                      = var.gateway_min_count
  launch_type                        = "FARGATE"
  platform_version                   = "LATEST"
  health_check_grace_period_seconds  = 90
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  propagate_tags                     = "SERVICE"

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = aws_subnet.private[*].id
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.gateway[each.key].arn
    container_name   = "gateway"
    container_port   = local.gateway_port
  }

  lifecycle {
    ignore_changes = [desired_count]
  }

  depends_on = [aws_lb_listener_rule.gateway]
}

# --- MLflow tracking server (internal) -----------------------------------------------------------------

resource "aws_service_discovery_private_dns_namespace" "main" {
  name        = local.service_discovery_namespace
  description = "Internal names of ${local.name} (the MLflow tracking server)"
  vpc         = aws_vpc.main.id
}

resource "aws_service_discovery_service" "mlflow" {
  name = "mlflow"

  dns_config {
    namespace_id   = aws_service_discovery_private_dns_namespace.main.id
    routing_policy = "MULTIVALUE"

    dns_records {
      type = "A"
      ttl  = 10
    }
  }

  health_check_custom_config {
    failure_threshold = 1
  }
}

resource "aws_ecs_task_definition" "mlflow" {
  family                   = "${local.name}-mlflow"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.mlflow_cpu
  memory                   = var.mlflow_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.mlflow.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  dynamic "volume" {
    for_each = local.scratch_volumes
    content {
      name = volume.value
    }
  }

  container_definitions = jsonencode([
    {
      name                   = "mlflow"
      image                  = local.image
      essential              = true
      readonlyRootFilesystem = true
      entryPoint             = ["sh", "-c"]
      command = [join(" ", [
        "python -c \"${local.mlflow_create_db}\" &&",
        "exec mlflow server --host 0.0.0.0 --port ${local.mlflow_port} --workers 2",
        "--backend-store-uri '${local.mlflow_db_url}'",
        "--artifacts-destination 's3://${aws_s3_bucket.artifacts.bucket}/mlflow'",
        "--allowed-hosts '${local.mlflow_host}:${local.mlflow_port},localhost:${local.mlflow_port},127.0.0.1:${local.mlflow_port}'",
      ])]
      portMappings = [{ containerPort = local.mlflow_port, protocol = "tcp" }]
      environment = [
        { name = "PGUSER", value = aws_db_instance.main.username },
        { name = "PGHOST", value = aws_db_instance.main.address },
        { name = "PGSSLMODE", value = "require" },
        { name = "AWS_DEFAULT_REGION", value = local.region },
        { name = "MMS_HEALTH_PORT", value = tostring(local.mlflow_port) },
      ]
      secrets = [
        { name = "PGPASSWORD", valueFrom = "${aws_db_instance.main.master_user_secret[0].secret_arn}:password::" },
      ]
      mountPoints      = local.scratch_mounts
      logConfiguration = local.log_options["mlflow"]
      healthCheck = {
        command     = local.http_health_command[local.mlflow_port]
        interval    = 30
        timeout     = 5
        retries     = 3
        startPeriod = 60
      }
    },
  ])
}

resource "aws_ecs_service" "mlflow" {
  name             = "mlflow"
  cluster          = aws_ecs_cluster.main.id
  task_definition  = aws_ecs_task_definition.mlflow.arn
  desired_count    = 1
  launch_type      = "FARGATE"
  platform_version = "LATEST"
  propagate_tags   = "SERVICE"

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = aws_subnet.private[*].id
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = false
  }

  service_registries {
    registry_arn = aws_service_discovery_service.mlflow.arn
  }
}

# --- Jobs ----------------------------------------------------------------------------------------------

resource "aws_ecs_task_definition" "job" {
  family                   = "${local.name}-job"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.job_cpu
  memory                   = var.job_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.job.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  ephemeral_storage {
    size_in_gib = var.job_ephemeral_storage_gib
  }

  dynamic "volume" {
    for_each = local.scratch_volumes
    content {
      name = volume.value
    }
  }

  container_definitions = jsonencode([
    {
      name                   = "job"
      image                  = local.image
      essential              = true
      command                = ["python", "-m", "jobs", "--help"] # every caller overrides the command
      readonlyRootFilesystem = true
      environment            = local.common_environment
      secrets                = local.common_secrets
      mountPoints            = local.scratch_mounts
      logConfiguration       = local.log_options["job"]
    },
  ])
}

# --- Autoscaling (studio and gateways): CPU and ALB requests per target --------------------------------

locals {
  scaled_services = merge(
    {
      studio = {
        service_name = aws_ecs_service.studio.name
        min          = var.studio_min_count
        max          = var.studio_max_count
        requests     = var.studio_requests_per_target
        label        = "${aws_lb.main.arn_suffix}/${aws_lb_target_group.studio.arn_suffix}"
      }
    },
    {
      for env in local.gateway_environments : "gateway-${env}" => {
        service_name = aws_ecs_service.gateway[env].name
        min          = var.gateway_min_count
        max          = var.gateway_max_count
        requests     = var.gateway_requests_per_target
        label        = "${aws_lb.main.arn_suffix}/${aws_lb_target_group.gateway[env].arn_suffix}"
      }
    },
  )
}

resource "aws_appautoscaling_target" "service" {
  for_each = local.scaled_services

  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.main.name}/${each.value.service_name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = each.value.min
  max_capacity       = each.value.max
}

resource "aws_appautoscaling_policy" "cpu" {
  for_each = local.scaled_services

  name               = "${each.key}-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.service[each.key].service_namespace
  resource_id        = aws_appautoscaling_target.service[each.key].resource_id
  scalable_dimension = aws_appautoscaling_target.service[each.key].scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.autoscaling_cpu_target_percent
    scale_in_cooldown  = 300
    scale_out_cooldown = 60

    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}

resource "aws_appautoscaling_policy" "requests" {
  for_each = local.scaled_services

  name               = "${each.key}-requests"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.service[each.key].service_namespace
  resource_id        = aws_appautoscaling_target.service[each.key].resource_id
  scalable_dimension = aws_appautoscaling_target.service[each.key].scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = each.value.requests
    scale_in_cooldown  = 300
    scale_out_cooldown = 60

    predefined_metric_specification {
      predefined_metric_type = "ALBRequestCountPerTarget"
      resource_label         = each.value.label
    }
  }
}
