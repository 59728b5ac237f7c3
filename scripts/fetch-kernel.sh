#!/usr/bin/env bash
# Find Debian's kernel for the deploy ramdisk and print its vmlinuz path.
# The modules are in <root>/lib/modules/<release>, where the vmlinuz is
# <root>/boot/vmlinuz-<release>.
#
# When the kernel package is installed on this machine, its files are used
# where they are (/boot, /lib/modules). Otherwise the package is fetched
# from the Debian mirror apt is configured with (apt-get download) and
# unpacked with dpkg-deb -x into CACHE_DIR/<release>: nothing is
# installed, /boot and the host's initramfs are left alone. A second run
# reuses the cache.
#
# Usage: scripts/fetch-kernel.sh [CACHE_DIR] [FLAVOR]
#   CACHE_DIR  default build/kernel
#   FLAVOR     cloud-amd64 (default: virtio, NVMe, LZ4-compressed, boots
#              fastest under QEMU) or amd64 (every driver, for physical
#              servers: add initramfs/modules-server.txt to the ramdisk)
set -euo pipefail
cache=${1:-build/kernel}
flavor=${2:-cloud-amd64}
case $flavor in
  cloud-amd64|amd64|rt-amd64) ;;
  *) echo "fetch-kernel: unknown flavor $flavor (want cloud-amd64 or amd64)" >&2; exit 2 ;;
esac

meta=linux-image-$flavor
find_pkg() { apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}'; }
pkg=$(find_pkg)
if [ -z "$pkg" ] && [ "$(id -u)" = 0 ]; then
  # A fresh machine may have no package lists yet.
  apt-get -q -o DPkg::Lock::Timeout=600 update >&2
  pkg=$(find_pkg)
fi
if [ -z "$pkg" ]; then
  echo "fetch-kernel: apt knows no $meta; run apt-get update" >&2
  exit 1
fi
release=${pkg#linux-image-}

if [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ] &&
   [ -s "/boot/vmlinuz-$release" ] && [ -d "/lib/modules/$release/kernel" ]; then
  echo "/boot/vmlinuz-$release"
  exit 0
fi

mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
dir="$cache/$release"
vmlinuz="$dir/boot/vmlinuz-$release"
if [ -s "$vmlinuz" ] && [ -d "$dir/lib/modules/$release/kernel" ]; then
  echo "$vmlinuz"
  exit 0
fi
tmp=$(mktemp -d "$cache/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# apt-get download runs as the invoking user; _apt cannot write to
# arbitrary directories, so download as ourselves.
(cd "$tmp" && apt-get -q -o Debug::NoDropPrivs=1 -o APT::Sandbox::User=root download "$pkg" >&2)
dpkg-deb -x "$tmp"/"$pkg"_*.deb "$tmp/root"
rm -rf "$dir"
mv "$tmp/root" "$dir"
if [ ! -s "$vmlinuz" ]; then
  echo "fetch-kernel: $pkg has no $vmlinuz" >&2
  exit 1
fi
echo "$vmlinuz"
