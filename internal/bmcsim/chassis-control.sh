#!/bin/sh
# chassis-control.sh: ipmi_sim's chassis_control hook for one simulated
# node. ipmi_sim runs it (through popen) as
#
#   chassis-control.sh NODE_DIR get PARAM...
#   chassis-control.sh NODE_DIR set PARAM VALUE [PARAM VALUE]...
#
# PARAM is power (0|1), reset (1), shutdown (1: ACPI power button) or boot
# (none|pxe|default|cdrom|bios; "default" is what a disk override becomes).
# "get" prints "power:N" and "boot:NAME" lines, which ipmi_sim parses.
#
# NODE_DIR holds the node's state:
#   power       0|1, the machine's power when there is no VM
#   boot        the boot device override
#   calls.log   one line per invocation ("get power", "set boot pxe")
#   ignore-acpi if present, soft power off is ignored (an OS that does not
#               listen for the ACPI power button)
#   vm          optional executable: power on starts it in the background
#               (stdio to vm.log, pid in vm.pid) with INGOT_BOOT_ORDER (n for
#               pxe, d for cdrom, else c) and INGOT_VM_MONITOR (a unix socket
#               path for QEMU's -monitor unix:PATH,server,nowait) in its
#               environment; it must exec QEMU so the pid is QEMU's. Power
#               state then follows that process (a zombie counts as off),
#               reset and soft off go through the QEMU monitor.
set -u
D=${1:?usage: chassis-control.sh NODE_DIR get|set ...}
shift
mkdir -p "$D"
echo "$*" >> "$D/calls.log"

has_vm() { [ -x "$D/vm" ]; }

running() {
	p=$(cat "$D/vm.pid" 2>/dev/null) || return 1
	[ -n "$p" ] && [ -r "/proc/$p/stat" ] || return 1
	# Field 3 of /proc/PID/stat is the state; a zombie (Z) or dead (X)
	# QEMU is off even though the pid still exists.
	st=$(sed 's/^.*) //' "/proc/$p/stat" | cut -d' ' -f1)
	[ "$st" != Z ] && [ "$st" != X ]
}

bootorder() {
	case "$(cat "$D/boot" 2>/dev/null)" in
	pxe) echo n ;;
	cdrom) echo d ;;
	*) echo c ;;
	esac
}

hmp() { printf '%s\n' "$1" | nc -N -U "$D/monitor.sock" > /dev/null 2>&1; }

is_on() {
	if has_vm; then running; else [ "$(cat "$D/power" 2>/dev/null)" = 1 ]; fi
}

power_on() {
	if ! has_vm; then echo 1 > "$D/power"; return; fi
	running && return
	rm -f "$D/vm.pid" "$D/monitor.sock"
	INGOT_BOOT_ORDER=$(bootorder) INGOT_VM_MONITOR="$D/monitor.sock" \
		"$D/vm" < /dev/null >> "$D/vm.log" 2>&1 &
	echo $! > "$D/vm.pid"
}

power_off() {
	if ! has_vm; then echo 0 > "$D/power"; return; fi
	running || return
	kill "$(cat "$D/vm.pid")"
	# Wait (up to 2 s) for QEMU to exit, so a status read right after
	# "power off" already says off.
	i=0
	while running && [ $i -lt 40 ]; do
		sleep 0.05
		i=$((i + 1))
	done
}

op=${1:-}
[ $# -gt 0 ] && shift
case $op in
get)
	for p in "$@"; do
		case $p in
		power) if is_on; then echo "power:1"; else echo "power:0"; fi ;;
		boot) echo "boot:$(cat "$D/boot" 2>/dev/null || echo none)" ;;
		esac
	done
	;;
set)
	while [ $# -ge 2 ]; do
		p=$1 v=$2
		shift 2
		case $p in
		power) if [ "$v" = 1 ]; then power_on; else power_off; fi ;;
		reset) if has_vm && running; then hmp "boot_set $(bootorder)"; hmp system_reset; fi ;;
		shutdown)
			[ -e "$D/ignore-acpi" ] && continue
			if has_vm; then running && hmp system_powerdown; else echo 0 > "$D/power"; fi
			;;
		boot) echo "$v" > "$D/boot" ;;
		esac
	done
	;;
*)
	echo "chassis-control.sh: unknown operation '$op'" >&2
	exit 1
	;;
esac
exit 0
