locals {
  name       = "${var.project}-${var.environment}"
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name

  # Two availability zones: enough for RDS multi-AZ and an ALB, half the NAT cost of three.
  azs = sort(data.aws_availability_zones.available.names)

  image = "${aws_ecr_repository.this["studio"].repository_url}:${var.image_tag}"

  studio_port  = 8050
  gateway_port = 8080
  mlflow_port  = 5000

  # Key prefix of the Parquet store in the data bucket (MMS_DATA_URI); profiling runs live under it.
  data_prefix = "studio"

  db_name        = "studio"
  mlflow_db_name = "mlflow"

  service_discovery_namespace = "${local.name}.internal"
  mlflow_host                 = "mlflow.${local.service_discovery_namespace}"
  mlflow_tracking_uri         = "http://${local.mlflow_host}:${local.mlflow_port}"

  # The database password never appears in a URL: libpq reads PGPASSWORD, injected from the
  # RDS-managed secret, and every connection requires TLS (rds.force_ssl is on as well).
  database_url  = "postgresql+psycopg://${aws_db_instance.main.username}@${aws_db_instance.main.address}:${aws_db_instance.main.port}/${local.db_name}?sslmode=require"
  mlflow_db_url = "postgresql+psycopg://${aws_db_instance.main.username}@${aws_db_instance.main.address}:${aws_db_instance.main.port}/${local.mlflow_db_name}?sslmode=require"

  common_environment = [
    { name = "MMS_ENV", value = "production" },
    { name = "MMS_DATA_URI", value = "s3://${aws_s3_bucket.data.bucket}/${local.data_prefix}" },
    { name = "MMS_S3_REGION", value = local.region },
    { name = "MMS_DATABASE_URL", value = local.database_url },
    { name = "MMS_MLFLOW_TRACKING_URI", value = local.mlflow_tracking_uri },
    { name = "MMS_DUCKDB_MEMORY_LIMIT", value = var.duckdb_memory_limit },
    { name = "MMS_DUCKDB_THREADS", value = tostring(var.duckdb_threads) },
    { name = "MMS_AUDIT_CHECKPOINT_URI", value = "s3://${aws_s3_bucket.audit.bucket}/checkpoints" },
    { name = "MMS_PROFILING_STATE_MACHINE_ARN", value = local.profiling_state_machine_arn },
    { name = "PGUSER", value = aws_db_instance.main.username },
    { name = "PGHOST", value = aws_db_instance.main.address },
    { name = "PGSSLMODE", value = "require" },
  ]

  common_secrets = [
    { name = "MMS_SECRET_KEY", valueFrom = aws_secretsmanager_secret.flask_secret_key.arn },
    { name = "PGPASSWORD", valueFrom = "${aws_db_instance.main.master_user_secret[0].secret_arn}:password::" },
  ]

  # Built from names, not from the resource, so the task roles can name it without a cycle.
  profiling_state_machine_arn = "arn:${local.partition}:states:${local.region}:${local.account_id}:stateMachine:${local.name}-profiling"

  gateway_environments = toset(keys(var.gateway_hostnames))
}
