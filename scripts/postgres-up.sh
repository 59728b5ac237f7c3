#!/usr/bin/env bash
# Start Debian's PostgreSQL cluster on 127.0.0.1:5432 and create the role the
# tests use (it may create databases). Prints the admin URL for
# INGOT_TEST_POSTGRES_URL. Idempotent; needs root and the postgresql package.
set -euo pipefail
command -v pg_lsclusters >/dev/null || { echo "postgresql is not installed" >&2; exit 1; }
ver=$(pg_lsclusters -h | awk 'NR==1{print $1}')
if [ -z "$ver" ]; then
  ver=$(ls /usr/lib/postgresql | sort -V | tail -1)
  pg_createcluster "$ver" main >/dev/null
fi
status=$(pg_lsclusters -h | awk -v v="$ver" '$1==v && $2=="main"{print $4}')
[ "$status" = online ] || pg_ctlcluster "$ver" main start
for _ in $(seq 1 50); do
  su postgres -c "psql -qAtc 'select 1'" >/dev/null 2>&1 && break
  sleep 0.2
done
su postgres -c "psql -qAtc \"select 1 from pg_roles where rolname='ingot'\"" | grep -q 1 ||
  su postgres -c "psql -qc \"create role ingot login createdb password 'ingot'\"" >/dev/null
echo "postgres://ingot:ingot@127.0.0.1:5432/postgres?sslmode=disable"
