#!/bin/bash
# SPDX-License-Identifier: MIT
# Persistence of every kind of inode across umount + mount.
#
# treedump.py builds a tree on the mount: regular files (empty, small, 3 MiB, sparse, odd
# names), nested directories, symlinks (relative, absolute, dangling, long), hard links across
# directories, fifos, modes with set-id and sticky bits, owners other than root, nanosecond
# times (atime and mtime, up to year 2100), user.* xattrs (empty, binary, 4000 bytes).  Then:
#   1. what the mount reports must be what was set (spec);
#   2. umount, fsck, mount: lstat of every path (atime, mtime and ctime in ns included, taken
#      without reading anything) and a full dump (contents, targets, listings, xattrs, link
#      groups) must equal the ones taken before;
#   3. the tree is changed (chmod, chown, unlink of a hard link, rename, truncate, in-place
#      write, xattr removal and replacement, rmdir, rename over a symlink, new times), and
#      step 2 is repeated.
#
# usage: persist.sh PKGCACHEFS_BINARY
set -u -o pipefail
. "$(dirname "$0")/lib.sh"
pcf_init "${1:-}"

STORE=$TMP/store
MNT=$TMP/mnt
SPEC=$TMP/spec.json
T=("$PY" "$CLIENTS_DIR/treedump.py")
SPEC_FIELDS=type,mode,uid,gid,size,sha256,target,xattrs,mtime_ns,nlink,same_inode_as

cycle() {
	local n=$1 what=$2
	"${T[@]}" full "$MNT" "$TMP/full-$n-before.json" || fail "$what: dumping the tree failed"
	"${T[@]}" compare "$SPEC" "$TMP/full-$n-before.json" "$SPEC_FIELDS" ||
		fail "$what: the mount does not report what was set (before any umount)"
	"${T[@]}" stat "$MNT" "$SPEC" "$TMP/stat-$n-before.json" || fail "$what: lstat dump failed"
	log "$what: umount, fsck, mount"
	pcf_umount "$MNT"
	pcf_wait_daemon_exit "$STORE"
	pcf_fsck "$STORE" "$what"
	pcf_mount "$STORE" "$MNT"
	"${T[@]}" stat "$MNT" "$SPEC" "$TMP/stat-$n-after.json" ||
		fail "$what: lstat dump failed after remount"
	"${T[@]}" compare "$TMP/stat-$n-before.json" "$TMP/stat-$n-after.json" ||
		fail "$what: lstat fields changed across umount + mount"
	"${T[@]}" full "$MNT" "$TMP/full-$n-after.json" || fail "$what: dumping the tree failed after remount"
	"${T[@]}" compare "$TMP/full-$n-before.json" "$TMP/full-$n-after.json" ||
		fail "$what: the tree changed across umount + mount"
}

pcf_mount "$STORE" "$MNT"
"${T[@]}" make "$MNT" "$SPEC" || fail "building the tree on the mount failed (an operation was refused, see above)"
cycle 1 "new tree"
"${T[@]}" mutate "$MNT" "$SPEC" || fail "changing the tree on the mount failed (see above)"
cycle 2 "changed tree"
pcf_umount "$MNT"
pcf_wait_daemon_exit "$STORE"
pcf_fsck "$STORE" "at the end"

echo "PASS: persist"
