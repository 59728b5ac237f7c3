#!/usr/bin/env bash
# Run OpenIPMI's ipmi_sim as one simulated node's BMC, with the project's
# configuration (internal/bmcsim): lanplus with cipher
# suite 3, user admin/password, power and boot device kept by the
# chassis-control.sh hook in a node directory. Put an executable "vm" in
# the node directory to have power on start a QEMU VM (see the hook's
# header). Runs in the foreground until interrupted; tests use the Go
# helper (package ipmisim) instead.
#
#   scripts/ipmi-sim.sh [-a ADDR] [-p PORT] [-n NODE_DIR] [-s STATE_DIR] [-u USER] [-P PASSWORD]
#
# Then: ipmitool -I lanplus -C 3 -H ADDR -p PORT -U USER -P PASSWORD power status
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
data=$here/internal/bmcsim
addr=127.0.0.1 port=6230 user=admin password=password node_dir="" state_dir=""
usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while getopts "a:p:n:s:u:P:h" opt; do
  case $opt in
    a) addr=$OPTARG ;;
    p) port=$OPTARG ;;
    n) node_dir=$OPTARG ;;
    s) state_dir=$OPTARG ;;
    u) user=$OPTARG ;;
    P) password=$OPTARG ;;
    h) usage 0 ;;
    *) usage 2 ;;
  esac
done
[[ $port =~ ^[0-9]+$ ]] && (( port > 0 && port < 65536 )) || { echo "ipmi-sim: bad port '$port'" >&2; exit 2; }
command -v ipmi_sim > /dev/null || { echo "ipmi-sim: ipmi_sim not found; run scripts/install-deps.sh (package openipmi)" >&2; exit 1; }
state_dir=${state_dir:-${TMPDIR:-/tmp}/ingot-ipmi-sim-$port}
node_dir=${node_dir:-$state_dir/node}
for d in "$state_dir" "$node_dir"; do
  [[ $d != *[[:space:]\"]* ]] || { echo "ipmi-sim: '$d' has blanks or quotes, which ipmi_sim's config cannot carry" >&2; exit 2; }
done
mkdir -p "$state_dir" "$node_dir"
state_dir=$(cd "$state_dir" && pwd) node_dir=$(cd "$node_dir" && pwd)
install -m 0755 "$data/chassis-control.sh" "$state_dir/chassis-control.sh"
install -m 0644 "$data/bmc.emu" "$state_dir/bmc.emu"
esc() { printf '%s' "$1" | sed 's/[&|\\]/\\&/g'; }
sed -e "s|@ADDR@|$(esc "$addr")|" -e "s|@PORT@|$port|" \
    -e "s|@HOOK@|$(esc "$state_dir/chassis-control.sh")|" -e "s|@NODE_DIR@|$(esc "$node_dir")|" \
    -e "s|@USER@|$(esc "$user")|" -e "s|@PASSWORD@|$(esc "$password")|" \
    "$data/lan.conf.tmpl" > "$state_dir/lan.conf"
chmod 0600 "$state_dir/lan.conf"
echo "ipmi-sim: BMC on $addr:$port (lanplus -C 3, user $user), node state in $node_dir" >&2
exec ipmi_sim -c "$state_dir/lan.conf" -f "$state_dir/bmc.emu" -s "$state_dir" -n
