#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The one-command set-up: install dependencies, build, and mount a cache directory on
# pkgcachefs with the default store (created on first use).
#   tools/quickstart.sh [MOUNTPOINT]      default: ~/.cache/pip
# A non-empty MOUNTPOINT is adopted: its files are imported, nothing disappears.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
mnt=${1:-$HOME/.cache/pip}

"$top/tools/install-deps.sh"
if [[ ! -f $top/build/build.ninja ]]; then
	meson setup "$top/build" --buildtype=release >/dev/null
fi
ninja -C "$top/build" >/dev/null
echo "quickstart: built $top/build/pkgcachefs"

mkdir -p "$mnt"
if grep -q " $(realpath "$mnt") fuse.pkgcachefs " /proc/self/mountinfo; then
	echo "quickstart: $mnt is already mounted"
else
	"$top/build/pkgcachefs" mount "$mnt"
	echo "quickstart: mounted $mnt"
fi
"$top/build/pkgcachefs" stats
cat <<EOT

Use it:   pip install --cache-dir "$mnt" ...   (or PIP_CACHE_DIR="$mnt")
Stats:    $top/build/pkgcachefs stats
Unmount:  $top/build/pkgcachefs umount "$mnt"
EOT
