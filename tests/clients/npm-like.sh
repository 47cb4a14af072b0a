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
# Where npm is installed, real npm joins in, offline: three processes run `npm cache add` of
# the same local tarballs (one of 3 MiB) at once into a second cache on the mount, and
# `npm cache verify` (which also rewrites the index) must find every tarball intact, before
# and after umount + mount.
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

# npm, offline, with nothing from the caller's config.
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
export npm_config_userconfig=/dev/null npm_config_loglevel=warn
NPM_REAL=$MNT/npm-real
HAVE_NPM=0
command -v npm >/dev/null 2>&1 && HAVE_NPM=1

npm_real_fill() {
	local i j pids=() rc=0
	mkdir -p "$TMP/tgz"
	for i in 1 2 3; do
		mkdir -p "$TMP/pkg$i"
		printf '{"name": "pcf-local-%d", "version": "1.0.%d", "main": "index.js"}\n' "$i" "$i" \
			>"$TMP/pkg$i/package.json"
		echo "module.exports = $i;" >"$TMP/pkg$i/index.js"
		[ "$i" = 1 ] && head -c 3145728 /dev/urandom >"$TMP/pkg$i/blob.bin"
		(cd "$TMP/pkg$i" && npm pack --pack-destination "$TMP/tgz" >/dev/null 2>&1) ||
			fail "npm pack of a local package failed"
	done
	for j in 1 2 3; do
		npm cache add "$TMP"/tgz/*.tgz --cache "$NPM_REAL" --offline >"$TMP/npm-add-$j.log" 2>&1 &
		pids+=($!)
	done
	for j in 0 1 2; do
		if ! wait "${pids[$j]}"; then
			tail -n 20 "$TMP/npm-add-$((j + 1)).log" >&2
			rc=1
		fi
	done
	[ $rc = 0 ] || fail "concurrent npm cache add on the mount failed (log above)"
}

npm_real_verify() {
	local what=$1 out
	out=$(npm cache verify --cache "$NPM_REAL" 2>&1) || {
		echo "$out" >&2
		fail "npm cache verify failed ($what)"
	}
	if ! echo "$out" | grep -q '^Content verified: 3 ' || ! echo "$out" | grep -q '^Index entries: 3$' ||
		echo "$out" | grep -q 'Corrupted\|Missing\|garbage-collected'; then
		echo "$out" >&2
		fail "npm cache verify found the cache damaged ($what): it must hold 3 intact tarballs"
	fi
	[ "$(npm cache ls --cache "$NPM_REAL" 2>/dev/null | grep -c '^pacote:tarball:file:')" = 3 ] ||
		fail "npm cache ls does not list the 3 tarballs ($what)"
	log "npm cache verify ($what): 3 tarballs intact"
}

tree_sums() {
	(cd "$1" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum) ||
		fail "reading the tree on $1 failed"
}

pcf_mount "$STORE" "$MNT"
mkdir "$CACHE" || fail "mkdir $CACHE failed"

log "pass 1: $WORKERS writers x $ENTRIES entries, plus a reader"
"${NPM[@]}" write "$CACHE" "$TMP/records" "$WORKERS" "$ENTRIES" seed1 || fail "concurrent writers failed"
"${NPM[@]}" verify "$CACHE" "$TMP/records" || fail "cache on the mount is wrong after pass 1"

if [ $HAVE_NPM = 1 ]; then
	log "real npm: 3 concurrent npm cache add, then npm cache verify"
	npm_real_fill
	npm_real_verify "after concurrent adds"
else
	log "note: npm is not installed, the real-npm part is left out"
fi

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
[ $HAVE_NPM = 1 ] && npm_real_verify "after umount + mount"

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
