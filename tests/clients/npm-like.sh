#!/bin/bash
# SPDX-License-Identifier: MIT
# npm's cache (cacache) emulated on a pkgcachefs mount by concurrent processes.
#
# npm_cacache.py runs 6 writers and a reader at once: content through tmp/<uuid> (O_EXCL) and a
# cross-directory rename or link+unlink into content-v2/sha512/..., index lines appended with
# O_APPEND by several writers to the same buckets.  Then every content file must hash to its
# name and every bucket hold exactly the lines appended to it, each with a valid checksum; the
# same after umount + mount, file for file; fsck clean.  A second pass writes into the same
# cache after the remount (npm reusing its cache) and is verified too.
#
# usage: npm-like.sh PKGCACHEFS_BINARY
set -u -o pipefail
. "$(dirname "$0")/lib.sh"
pcf_init "${1:-}"

STORE=$TMP/store
MNT=$TMP/mnt
CACHE=$MNT/_cacache
WORKERS=${NPM_LIKE_WORKERS:-6}
ENTRIES=${NPM_LIKE_ENTRIES:-120}
NPM=("$PY" "$CLIENTS_DIR/npm_cacache.py")

tree_sums() {
	(cd "$1" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum) ||
		fail "reading the tree on $1 failed"
}

pcf_mount "$STORE" "$MNT"
mkdir "$CACHE" || fail "mkdir $CACHE failed"

log "pass 1: $WORKERS writers x $ENTRIES entries, plus a reader"
"${NPM[@]}" write "$CACHE" "$TMP/records" "$WORKERS" "$ENTRIES" seed1 || fail "concurrent writers failed"
"${NPM[@]}" verify "$CACHE" "$TMP/records" || fail "cache on the mount is wrong after pass 1"

tree_sums "$MNT" >"$TMP/sums-before"
log "umount + mount"
pcf_umount "$MNT"
pcf_wait_daemon_exit "$STORE"
pcf_fsck "$STORE" "after pass 1"
pcf_mount "$STORE" "$MNT"
tree_sums "$MNT" >"$TMP/sums-after"
if ! diff -u "$TMP/sums-before" "$TMP/sums-after" >"$TMP/sums.diff"; then
	head -n 40 "$TMP/sums.diff" >&2
	fail "the cache changed across umount + mount (diff above)"
fi
"${NPM[@]}" verify "$CACHE" "$TMP/records" || fail "cache on the mount is wrong after remount"

log "pass 2: same cache after remount, new entries appended to the same buckets"
"${NPM[@]}" write "$CACHE" "$TMP/records2" "$WORKERS" "$ENTRIES" seed2 || fail "concurrent writers failed (pass 2)"
# Both passes' records together describe the cache now.
mkdir "$TMP/records-all"
for f in "$TMP"/records/worker-*.json; do cp "$f" "$TMP/records-all/p1-$(basename "$f")"; done
for f in "$TMP"/records2/worker-*.json; do cp "$f" "$TMP/records-all/p2-$(basename "$f")"; done
"${NPM[@]}" verify "$CACHE" "$TMP/records-all" || fail "cache on the mount is wrong after pass 2"

pcf_umount "$MNT"
pcf_wait_daemon_exit "$STORE"
pcf_fsck "$STORE" "after pass 2"
pcf_mount "$STORE" "$MNT"
"${NPM[@]}" verify "$CACHE" "$TMP/records-all" || fail "cache on the mount is wrong after the second remount"
pcf_umount "$MNT"
pcf_wait_daemon_exit "$STORE"

echo "PASS: npm-like"
