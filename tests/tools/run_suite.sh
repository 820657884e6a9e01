#!/usr/bin/env bash
# Runs the whole test suite with every server it needs, on a machine that may have none of them.
# Installs Debian chromium when absent, uses the machine's PostgreSQL when it answers (else starts a
# throwaway cluster and stops it afterwards), installs Debian redis-server when no Redis answers on
# 127.0.0.1:6379 (the Redis fixture then starts a throwaway one), and lets the S3 fixture start
# SeaweedFS itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=.venv/bin
STARTED_PG_DIR=""

log() { printf '[make test] %s\n' "$*"; }

apt_install() {
  if [ "$(id -u)" != 0 ]; then log "need root to apt-get install $*"; return 1; fi
  if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq >/dev/null; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_chromium() {
  if [ ! -x /usr/bin/chromium ]; then log "installing Debian chromium"; apt_install chromium; fi
}

pg_answers() { "$BIN/python" - "$1" <<'PY'
import sys, psycopg
try:
    psycopg.connect(sys.argv[1].replace("+psycopg", ""), connect_timeout=3).close()
except Exception:
    sys.exit(1)
PY
}

ensure_postgres() {
  local url="${MMS_TEST_PG_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/postgres}"
  if pg_answers "$url"; then log "using PostgreSQL at ${url}"; export MMS_TEST_PG_URL="$url"; return; fi
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then log "installing Debian postgresql"; apt_install postgresql; fi
  local bindir port
  bindir=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
  port=$("$BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  STARTED_PG_DIR=$(mktemp -d /tmp/mms-pg.XXXXXX)
  chown postgres "$STARTED_PG_DIR" 2>/dev/null || true
  local run_as=()
  if [ "$(id -u)" = 0 ]; then run_as=(runuser -u postgres --); fi
  "${run_as[@]}" "$bindir/initdb" -D "$STARTED_PG_DIR/data" -U postgres -A trust >/dev/null
  "${run_as[@]}" "$bindir/pg_ctl" -D "$STARTED_PG_DIR/data" -o "-p $port -k $STARTED_PG_DIR -c listen_addresses=127.0.0.1" -l "$STARTED_PG_DIR/log" -w start >/dev/null
  export MMS_TEST_PG_URL="postgresql+psycopg://postgres@127.0.0.1:${port}/postgres"
  log "started a throwaway PostgreSQL at ${MMS_TEST_PG_URL}"
}

redis_answers() { "$BIN/python" - <<'PY'
import socket, sys
try:
    with socket.create_connection(("127.0.0.1", 6379), timeout=3) as connection:
        connection.sendall(b"PING\r\n")
        sys.exit(0 if connection.recv(16).startswith(b"+PONG") else 1)
except OSError:
    sys.exit(1)
PY
}

ensure_redis() {
  if [ -n "${MMS_TEST_REDIS_URL:-}" ] || redis_answers; then log "using Redis at ${MMS_TEST_REDIS_URL:-redis://127.0.0.1:6379}"; return; fi
  if [ ! -x /usr/bin/redis-server ]; then log "installing Debian redis-server"; apt_install redis-server; fi
  log "no Redis answers: the Redis fixture starts a throwaway redis-server"
}

cleanup() {
  if [ -n "$STARTED_PG_DIR" ]; then
    local bindir run_as=()
    bindir=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
    if [ "$(id -u)" = 0 ]; then run_as=(runuser -u postgres --); fi
    "${run_as[@]}" "$bindir/pg_ctl" -D "$STARTED_PG_DIR/data" -m fast stop >/dev/null || true
    rm -rf "$STARTED_PG_DIR"
    log "stopped the throwaway PostgreSQL"
  fi
}
trap cleanup EXIT

ensure_chromium
ensure_postgres
ensure_redis
export MLFLOW_DISABLE_TELEMETRY=true
# Bytecode of the suite's processes (the three workers, and the many `python -m jobs` and `python -m app`
# processes the tests start) is written and reused, even where the shell sets PYTHONDONTWRITEBYTECODE:
# there, each worker compiled and assertion-rewrote every test module again (collection took 27 CPU-s
# instead of 12) and every subprocess compiled the studio's modules. In the usual __pycache__ folders
# (ignored by git and by the image's build context), not under a PYTHONPYCACHEPREFIX: with a prefix
# Python looks for bytecode only there, so the suite compiled again 9,632 site-packages modules that
# `make setup-dev` had compiled already (about 46 CPU-s).
unset PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX
log "ruff"
"$BIN/ruff" check .
log "pytest"
# Three workers on two cores: most tests wait on servers, subprocesses or the browser. loadgroup (with
# tests/fixtures/scheduling.py) gives a worker a whole file, or a whole xdist_group such as the Spark
# tests, so module and group fixtures are built once; the files go out in collection order (browser
# and integration tests first, the many short unit tests last to fill the gaps at the end).
"$BIN/python" -m pytest -q -p no:cacheprovider --timeout=900 -n "${MMS_TEST_WORKERS:-3}" --dist loadgroup \
  --no-loadscope-reorder --durations=25 "$@"
