#!/bin/bash
# SPDX-License-Identifier: MIT
# The base image of the engine tests, built offline from Debian's apt mirror and cached:
#
#   base-image.sh [CACHE_DIR]     prints the path of the image tarball (a root file system)
#
# debootstrap --variant=minbase --include=python3,python3-venv,python3-pip bookworm, packed
# with tar. The tarball is kept in CACHE_DIR (default /var/cache/pkgcachefs-test, which .ci/run
# reuses across test runs) under a name holding the hash of this recipe (the lines between the
# markers below), so a change of the recipe builds a new one. Engines take it with
# `docker import` / `podman import`. A lock keeps two runs from building it at once.
set -euo pipefail
cache=${1:-/var/cache/pkgcachefs-test}
# recipe begin
SUITE=bookworm
MIRROR=${PCF_DEBIAN_MIRROR:-http://deb.debian.org/debian}
INCLUDE=python3,python3-venv,python3-pip
# recipe end
key=$(sed -n '/^# recipe begin$/,/^# recipe end$/p' "$0" | sha256sum | cut -c1-16)
tarball=$cache/base-$SUITE-$key.tar
mkdir -p "$cache"
exec 9>"$cache/.base.lock"
flock 9
if [ -s "$tarball" ]; then
	echo "$tarball"
	exit 0
fi
command -v debootstrap >/dev/null || { echo "base-image: debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
root=$(mktemp -d "$cache/root.XXXXXX")
trap 'rm -rf "$root"' EXIT
t0=$(date +%s)
debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$root" "$MIRROR" >"$cache/debootstrap.log" 2>&1 || {
	tail -n 20 "$cache/debootstrap.log" >&2
	echo "base-image: debootstrap failed (log: $cache/debootstrap.log)" >&2
	exit 1
}
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
tar -C "$root" -cf "$tarball.tmp" .
mv "$tarball.tmp" "$tarball"
echo "base-image: built $tarball in $(($(date +%s) - t0)) s ($(du -h "$tarball" | cut -f1))" >&2
echo "$tarball"
