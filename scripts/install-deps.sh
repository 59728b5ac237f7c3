#!/usr/bin/env bash
# Install what Ingot's tests, benchmarks and demo need on Debian 12, as root.
# Idempotent: packages already present are not reinstalled, so a second run
# takes a second. Go itself comes from the machine (/usr/local/go).
#
#   scripts/install-deps.sh          everything the tests need
#   scripts/install-deps.sh --demo   only what `make demo` needs
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# Ironic is installed with its recommended packages, as the peer was probed.
ironic_pkgs=(ironic-api ironic-conductor python3-ironicclient)   # real Ironic 21.4 + baremetal CLI
pkgs=(
  # real peers for interop tests
  postgresql                                         # multi-conductor store
  openipmi ipmitool                                  # ipmi_sim BMC simulator + CLI cross-check
  atftp tftp-hpa tftpd-hpa udhcpc busybox            # TFTP/DHCP clients, the TFTP baseline server, udhcpd for ProxyDHCP tests
  tgt libiscsi-bin                                   # iSCSI target and initiator tools
  # virtual node
  qemu-system-x86 qemu-utils ipxe-qemu ipxe ovmf netcat-openbsd systemd-boot-efi
  qemu-block-extra                                   # qemu-img iscsi:// (libiscsi): the iSCSI oracle and benchmark baseline
  # benchmarks and images
  zstd xz-utils curl iproute2 procps
  bzip2 lz4 openssl python3                          # imagestream interop: real compressors, checksum tools, a Range-less HTTP server
  gdisk fdisk genisoimage dosfstools mtools          # config drives: sgdisk/sfdisk check tables, isoinfo reads ISOs, mkfs.vfat/fsck.fat/mcopy for FAT drives
)
if [ "${1:-}" = --demo ]; then
  ironic_pkgs=()
  pkgs=(qemu-system-x86 ipxe-qemu ipxe ovmf openipmi ipmitool netcat-openbsd systemd-boot-efi iproute2)
fi
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=() missing_ironic=()
for p in "${pkgs[@]}"; do installed "$p" || missing+=("$p"); done
for p in "${ironic_pkgs[@]}"; do installed "$p" || missing_ironic+=("$p"); done
if [ ${#missing[@]} -eq 0 ] && [ ${#missing_ironic[@]} -eq 0 ]; then
  echo "install-deps: all $(( ${#pkgs[@]} + ${#ironic_pkgs[@]} )) packages present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing ${missing[*]} ${missing_ironic[*]}; run as root to install them" >&2
  exit 1
fi
# Services from these packages must not start on their own (tftpd-hpa would
# take port 69, postgresql its own port): tests start what they need.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
echo "install-deps: installing ${missing[*]} ${missing_ironic[*]}"
apt-get -o DPkg::Lock::Timeout=600 update -q
if [ ${#missing[@]} -gt 0 ]; then
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
fi
if [ ${#missing_ironic[@]} -gt 0 ]; then
  apt-get -o DPkg::Lock::Timeout=600 install -y -q "${missing_ironic[@]}"
fi
