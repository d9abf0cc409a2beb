#!/usr/bin/env bash
# Makes the image's base: a minimal Debian bookworm root filesystem with Python 3.11 (the
# version requirements/image.txt is locked for), as build/image/rootfs.tar, from the Debian
# mirror alone (no container registry). Needs root for debootstrap's chroot.
#
# The tarball is sorted, owned by 0:0 and dated SOURCE_DATE_EPOCH (default: the last commit),
# so the same packages give the same bytes; the packages are bookworm's current ones, not a
# pinned snapshot: point DEBIAN_MIRROR at snapshot.debian.org/archive/debian/<date>/ for that.
# Knobs: DEBIAN_MIRROR, SOURCE_DATE_EPOCH, IMAGE_BUILD_DIR.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${IMAGE_BUILD_DIR:-$repo/build/image}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
epoch="${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct)}"
packages=python3,python3-venv,ca-certificates,tini

mkdir -p "$out"
root="$(mktemp -d "$out/rootfs.XXXXXX")"
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include="$packages" bookworm "$root" "$mirror"
# What only the build needed: apt's lists and caches, logs, the machine id, and ldconfig's
# aux-cache (inode numbers and times: the one file two builds differed in).
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
  "$root"/var/log/* "$root"/tmp/* "$root"/var/cache/ldconfig/aux-cache
: > "$root/etc/machine-id"
tar -C "$root" --sort=name --numeric-owner --owner=0 --group=0 --mtime="@$epoch" \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime -cf "$out/rootfs.tar.tmp" .
mv "$out/rootfs.tar.tmp" "$out/rootfs.tar"
echo "rootfs: $out/rootfs.tar ($(du -h "$out/rootfs.tar" | cut -f1), sha256 $(sha256sum "$out/rootfs.tar" | cut -c1-16))"
