#!/usr/bin/env bash
# Start a real, standalone Ironic 21.4 (Debian 12 packages) on 127.0.0.1 as
# a test peer: noauth, API and conductor in one process, SQLite under WORKDIR.
#
#   scripts/ironic-peer.sh WORKDIR [PORT]     start (PORT defaults to 6385)
#   kill -- -"$(cat WORKDIR/ironic.pid)"       stop (its own process group)
#
# Exit status 3 means Ironic is not installed (scripts/install-deps.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 1 ] || { echo "usage: $0 WORKDIR [PORT]" >&2; exit 2; }
w=$(realpath -m "$1")
port=${2:-6385}
for b in ironic ironic-dbsync curl setsid; do
  command -v "$b" >/dev/null || { echo "ironic-peer: $b is missing: run scripts/install-deps.sh as root" >&2; exit 3; }
done
mkdir -p "$w"/{state,logs,tftp,tftp_master,instance_master,httpboot,locks,deploy_logs,certificates}
sed -e "s#@WORKDIR@#$w#g" -e "s#@PORT@#$port#g" "$here/ironic-peer.conf.in" >"$w/ironic.conf"
if [ ! -f "$w/state/ironic.sqlite" ]; then
  ironic-dbsync --config-file "$w/ironic.conf" create_schema >"$w/logs/dbsync.out" 2>&1 \
    || { echo "ironic-peer: ironic-dbsync failed, see $w/logs/dbsync.out" >&2; exit 1; }
fi
# A new session: the pid is also the process group of everything Ironic starts.
setsid ironic --config-file "$w/ironic.conf" >"$w/logs/ironic.out" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$w/ironic.pid"
for _ in $(seq 1 600); do
  if curl -sf -H 'X-OpenStack-Ironic-API-Version: 1.78' "http://127.0.0.1:$port/v1/drivers" 2>/dev/null | grep -q manual-management; then
    echo "ironic-peer: up on http://127.0.0.1:$port (pid $pid)"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "ironic-peer: ironic exited; last lines of $w/logs/ironic.out:" >&2
    tail -n 20 "$w/logs/ironic.out" >&2
    exit 1
  fi
  sleep 0.2
done
echo "ironic-peer: no answer on port $port within 120 s; see $w/logs" >&2
exit 1
