#!/bin/bash
# SPDX-License-Identifier: MIT
# A daemon stopped by a signal (systemd's stop, kill, Ctrl-C in the foreground) unmounts and
# commits everything, as umount does: for each of TERM, INT and HUP, write a file, signal the
# daemon, check it is gone with the mount and reported a clean exit, and that the file is
# there after a remount; fsck clean.
#
# usage: signals.sh PKGCACHEFS_BINARY
set -u -o pipefail
. "$(dirname "$0")/lib.sh"
pcf_init "${1:-}"

STORE=$TMP/store
MNT=$TMP/mnt

for sig in TERM INT HUP; do
	pcf_mount "$STORE" "$MNT"
	head -c 3000000 /dev/urandom >"$TMP/data-$sig"
	cp "$TMP/data-$sig" "$MNT/file-$sig"
	pid=$(pcf_daemon_pid "$STORE") || fail "no daemon pid"
	kill -"$sig" "$pid"
	pcf_wait_daemon_exit "$STORE"
	for i in $(seq 50); do is_mounted "$MNT" || break; sleep 0.1; done
	! is_mounted "$MNT" || fail "SIG$sig stopped the daemon but left $MNT mounted"
	[ "$(cat "$STORE/exit-status" 2>/dev/null)" = 0 ] ||
		fail "SIG$sig: the daemon did not record a clean exit"
	pcf_fsck "$STORE" "after SIG$sig"
	log "SIG$sig: unmounted and committed"
done
pcf_mount "$STORE" "$MNT"
for sig in TERM INT HUP; do
	cmp -s "$MNT/file-$sig" "$TMP/data-$sig" || fail "file written before SIG$sig differs"
done
pcf_umount "$MNT"
pcf_wait_daemon_exit "$STORE"
pcf_fsck "$STORE" "at the end"
echo "PASS: signals"
