#!/usr/bin/env bash
# Starts the services the PostgreSQL/Celery tests and the scale-out layout use, on 127.0.0.1 only:
# a private PostgreSQL cluster (with pgvector) and a Redis server. Idempotent; prints the URLs and
# writes them to var/services.env for scripts/test.sh.   Stop with: scripts/services.sh stop
set -euo pipefail
cd "$(dirname "$0")/.."
PG_MAJOR=15
PG_PORT=${JIANSUO_PG_PORT:-54329}
REDIS_PORT=${JIANSUO_REDIS_PORT:-63790}
VAR=$(pwd)/var
PGDATA=$VAR/pg
PGBIN=/usr/lib/postgresql/$PG_MAJOR/bin
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

if [ "${1:-start}" = stop ]; then
  [ -f "$PGDATA/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast stop >/dev/null || true
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  exit 0
fi

mkdir -p "$VAR/redis"
if [ ! -f "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGDATA"
  [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$PGDATA"
  as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 >/dev/null
fi
if ! as_pg "$PGBIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
  as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -w -l "$PGDATA/server.log" \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k /tmp -c max_connections=200 -c shared_buffers=512MB -c maintenance_work_mem=1GB -c fsync=off" \
    start >/dev/null
fi
psql_() { psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qAt "$@"; }
psql_ -c "SELECT 1 FROM pg_roles WHERE rolname='jiansuo'" | grep -q 1 || \
  psql_ -c "CREATE ROLE jiansuo LOGIN SUPERUSER PASSWORD 'jiansuo'"
psql_ -c "SELECT 1 FROM pg_database WHERE datname='jiansuo'" | grep -q 1 || \
  psql_ -c "CREATE DATABASE jiansuo OWNER jiansuo"
psql_ -d jiansuo -c "CREATE EXTENSION IF NOT EXISTS vector"

if ! redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$VAR/redis" --save "" --appendonly no \
    --daemonize yes --logfile "$VAR/redis/redis.log" >/dev/null
  for _ in $(seq 50); do redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

cat > "$VAR/services.env" <<ENV
export JIANSUO_TEST_DATABASE_URL=postgres://jiansuo:jiansuo@127.0.0.1:$PG_PORT/jiansuo
export JIANSUO_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
ENV
cat "$VAR/services.env"
