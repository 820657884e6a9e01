# The Flask session key (MMS_SECRET_KEY). Generated once by Secrets Manager; Terraform then ignores
# the value, so a key rotated by hand (`aws secretsmanager put-secret-value`) is never reverted.

data "aws_secretsmanager_random_password" "flask_secret_key" {
  password_length     = 64
  exclude_punctuation = true
}

resource "aws_secretsmanager_secret" "flask_secret_key" {
  #checkov:skip=CKV2_AWS_57:Rotating the session key signs every user out; it is rotated by hand during a maintenance window (docs/DEPLOYMENT.md), not on a schedule.
  name                    = "${local.name}/flask-secret-key"
  description             = "MMS_SECRET_KEY of the studio and gateway (Flask session signing key)"
  kms_key_id              = aws_kms_key.main.arn
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "flask_secret_key" {
  secret_id     = aws_secretsmanager_secret.flask_secret_key.id
  secret_string = data.aws_secretsmanager_random_password.flask_secret_key.random_password

  lifecycle {
    ignore_changes = [secret_string]
  }
}
