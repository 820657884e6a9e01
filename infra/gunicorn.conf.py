"""Gunicorn configuration for the studio: ``gunicorn -c infra/gunicorn.conf.py app.wsgi:server``.

The app is created in each worker after fork (``preload_app = False``), so every worker opens its own
DuckDB connection and database pool: nothing opened before the fork is shared between workers.
"""

import multiprocessing
import os

# The container listens on every interface; the ALB is the only thing that reaches it.
bind = os.environ.get("MMS_BIND", "0.0.0.0:8050")
workers = int(os.environ.get("MMS_WEB_WORKERS", str(max(2, multiprocessing.cpu_count()))))
threads = int(os.environ.get("MMS_WEB_THREADS", "4"))
worker_class = "gthread"
preload_app = False
timeout = 120
graceful_timeout = 30
keepalive = 5
max_requests = 2000
max_requests_jitter = 200
accesslog = "-"
errorlog = "-"
forwarded_allow_ips = os.environ.get("MMS_FORWARDED_ALLOW_IPS", "127.0.0.1")
