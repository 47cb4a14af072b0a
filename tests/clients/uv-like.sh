#!/bin/bash
# SPDX-License-Identifier: MIT
# uv's cache and installs emulated on a pkgcachefs mount (uv_like.py): four processes at once
# take flock locks (shared on the root, exclusive per entry), unpack archives into temp
# directories renamed into place, publish symlinks by rename, hard link every file into their
# venvs on the same mount, write RECORDs through O_TMPFILE + linkat, publish a marker with
# renameat2(RENAME_NOREPLACE).  Then: archives complete, hard links sharing inodes with the
# right st_nlink; the same after umount + mount; one venv removed (st_nlink drops), the same
# after another umount + mount; fsck clean each time.
#
# usage: uv-like.sh PKGCACHEFS_BINARY
set -u -o pipefail
. "$(dirname "$0")/lib.sh"
pcf_init "${1:-}"

STORE=$TMP/store
MNT=$TMP/mnt
ROOT=$MNT/uv
UV=("$PY" "$CLIENTS_DIR/uv_like.py")

remount() {
	log "umount + mount ($1)"
	pcf_umount "$MNT"
	pcf_wait_daemon_exit "$STORE"
	pcf_fsck "$STORE" "$1"
	pcf_mount "$STORE" "$MNT"
}

pcf_mount "$STORE" "$MNT"
mkdir "$ROOT" || fail "mkdir on the mount failed"
log "4 processes install 14 packages each through one cache"
"${UV[@]}" run "$ROOT" 4 seed1 || fail "the concurrent uv-like installs failed (above)"
"${UV[@]}" verify "$ROOT" 4 seed1 || fail "cache or venvs wrong after the installs"
remount "after the installs"
"${UV[@]}" verify "$ROOT" 4 seed1 || fail "cache or venvs wrong after umount + mount"
rm -rf "$ROOT/venv3" || fail "removing a venv of hard links failed"
"${UV[@]}" verify "$ROOT" 3 seed1 || fail "cache or venvs wrong after removing a venv"
remount "after removing a venv"
"${UV[@]}" verify "$ROOT" 3 seed1 || fail "cache or venvs wrong after removing a venv and umount + mount"
pcf_umount "$MNT"
pcf_wait_daemon_exit "$STORE"
pcf_fsck "$STORE" "at the end"

echo "PASS: uv-like"
