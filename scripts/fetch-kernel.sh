#!/usr/bin/env bash
# Fetch Debian's cloud kernel (linux-image-cloud-amd64's current image
# package) into a cache directory without installing it: apt-get download
# plus dpkg-deb -x, so /boot and the host's initramfs are left alone.
# Prints the path of the vmlinuz; a second run reuses the cache.
#
# Usage: scripts/fetch-kernel.sh [CACHE_DIR]    (default: build/kernel)
# The kernel's modules land under CACHE_DIR/<version>/lib/modules.
set -euo pipefail
cache=${1:-build/kernel}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
if [ -z "$pkg" ]; then
  echo "fetch-kernel: apt knows no linux-image-cloud-amd64; run apt-get update" >&2
  exit 1
fi
version=${pkg#linux-image-}
dir="$cache/$version"
vmlinuz="$dir/boot/vmlinuz-$version"
if [ -s "$vmlinuz" ]; then
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
