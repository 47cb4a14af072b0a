#!/bin/bash
# SPDX-License-Identifier: MIT
# Mounting over a non-empty directory adopts it: every file the user had is imported into the
# store, with its contents, mode, owner, mtime and symlink target, and nothing disappears.
#   1. a tree of every kind of inode is made in a plain directory and dumped;
#   2. pkgcachefs is mounted over it: the mount shows the same tree;
#   3. umount: the directory underneath is now empty (the originals were moved, not copied
#      twice), fsck is clean; mount again: the same tree, from the store alone.
# Hard links are imported as separate files and xattrs are not carried over (written down in
# docs/operations.md); the comparison leaves those two out.
#
# usage: adopt.sh PKGCACHEFS_BINARY
set -u -o pipefail
. "$(dirname "$0")/lib.sh"
pcf_init "${1:-}"

STORE=$TMP/store
DIR=$TMP/cache
SPEC=$TMP/spec.json
T=("$PY" "$CLIENTS_DIR/treedump.py")
FIELDS=type,mode,uid,gid,size,sha256,target,mtime_ns

mkdir "$DIR"
"${T[@]}" make "$DIR" "$SPEC" || fail "making the tree failed"
"${T[@]}" full "$DIR" "$TMP/before.json" || fail "dumping the plain tree failed"

log "mount over the non-empty directory"
pcf_mount "$STORE" "$DIR"
"${T[@]}" full "$DIR" "$TMP/mounted.json" || fail "dumping the adopted tree failed"
"${T[@]}" compare "$TMP/before.json" "$TMP/mounted.json" "$FIELDS" ||
	fail "the mount does not show the files the directory had"

pcf_umount "$DIR"
pcf_wait_daemon_exit "$STORE"
left=$(find "$DIR" -mindepth 1 | head -5)
[ -z "$left" ] || fail "adopted files were left under the mount as well: $left"
pcf_fsck "$STORE" "after adopting"

log "mount again: the tree comes from the store"
pcf_mount "$STORE" "$DIR"
"${T[@]}" full "$DIR" "$TMP/again.json" || fail "dumping the tree after remount failed"
"${T[@]}" compare "$TMP/before.json" "$TMP/again.json" "$FIELDS" ||
	fail "the adopted tree changed across umount and mount"
pcf_umount "$DIR"
pcf_wait_daemon_exit "$STORE"
pcf_fsck "$STORE" "at the end"
echo "PASS: adopt"
