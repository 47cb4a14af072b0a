#!/bin/bash
# SPDX-License-Identifier: MIT
# A store on a full disk: the store lives on a 64 MiB tmpfs, incompressible files are written
# through the mount until a call fails.
#   - the failure must be ENOSPC (write, fsync or close; errno checked by full_disk.py), and
#     come before 256 MiB were accepted;
#   - the daemon stays up; files fsynced before are read back intact; unlink works;
#   - after deleting half of the files, a 16 MiB write must succeed again.  Tried in this
#     order, the first that works is reported: as is (the daemon reclaims space by itself),
#     after `pkgcachefs gc` on the mounted store, after umount + gc + mount;
#   - the disk is filled a second time (ENOSPC again), then umount on the full disk, fsck,
#     mount on the full disk, everything fsynced reads back, umount, fsck.
#
# usage: full-disk.sh PKGCACHEFS_BINARY        (root: it mounts a tmpfs)
set -u -o pipefail
. "$(dirname "$0")/lib.sh"
pcf_init "${1:-}"
[ "$(id -u)" = 0 ] || skip "needs root to mount a tmpfs for the store"

DISK=$TMP/disk
mkdir "$DISK"
mount -t tmpfs -o size=64m,mode=0755 pcf-full-disk "$DISK" 2>"$TMP/mount.err" ||
	skip "cannot mount a tmpfs: $(cat "$TMP/mount.err")"
PCF_EXTRA_UMOUNTS+=("$DISK")

STORE=$DISK/store
MNT=$TMP/mnt
STATE=$TMP/state.json
FD=("$PY" "$CLIENTS_DIR/full_disk.py")

disk_use() { df -k --output=used,avail "$DISK" | awk 'NR == 2 { printf "%d KiB used, %d KiB free", $1, $2 }'; }
alive() { pcf_daemon_pid "$STORE" >/dev/null || fail "the daemon died $1"; }

pcf_mount "$STORE" "$MNT"
log "store on a 64 MiB tmpfs: $(disk_use)"

"${FD[@]}" fill "$MNT" "$STATE" 256 || fail "filling the store did not end in ENOSPC (above)"
log "tmpfs after the fill: $(disk_use)"
alive "after ENOSPC"
"${FD[@]}" verify "$MNT" "$STATE" || fail "reads on a full store are broken"

"${FD[@]}" delete "$MNT" "$STATE" 0.5 || fail "deleting files on a full store failed"
alive "after unlinks on a full store"
how=""
"${FD[@]}" write "$MNT" "$STATE" 16
rc=$?
if [ $rc = 0 ]; then
	how="by itself (no gc needed)"
elif [ $rc = 2 ]; then
	log "still ENOSPC after deleting half of the files; trying pkgcachefs gc on the mounted store"
	out=$(timeout "$PCF_TIMEOUT" "$BIN" gc --store "$STORE" 2>&1)
	rc=$?
	echo "$out" | tail -n 5
	if [ $rc = 0 ]; then
		"${FD[@]}" write "$MNT" "$STATE" 16
		rc=$?
		[ $rc = 0 ] && how="after gc on the mounted store"
		[ $rc = 1 ] && fail "writing after gc failed with an error other than ENOSPC"
	else
		log "gc on the mounted store exited $rc"
	fi
	if [ -z "$how" ]; then
		log "trying umount, gc, mount"
		pcf_umount "$MNT"
		pcf_wait_daemon_exit "$STORE"
		pcf_gc "$STORE" "offline, after deleting half of the files"
		pcf_mount "$STORE" "$MNT"
		"${FD[@]}" write "$MNT" "$STATE" 16 ||
			fail "no space for a 16 MiB file after deleting half of the data and running gc ($(disk_use))"
		how="after umount, gc, mount"
	fi
else
	fail "writing after deleting files failed with an error other than ENOSPC"
fi
log "space was reclaimed $how: $(disk_use)"
"${FD[@]}" verify "$MNT" "$STATE" || fail "files differ after reclaiming space"

log "filling the store a second time"
"${FD[@]}" fill "$MNT" "$STATE" 256 || fail "the second fill did not end in ENOSPC (above)"
alive "after the second ENOSPC"
"${FD[@]}" delete "$MNT" "$STATE" 0 || fail "deleting the failed file on a full store failed"
"${FD[@]}" verify "$MNT" "$STATE" || fail "reads on a full store are broken (second fill)"

log "umount, fsck and mount with the disk full: $(disk_use)"
pcf_umount "$MNT"
pcf_wait_daemon_exit "$STORE"
pcf_fsck "$STORE" "on a full disk"
pcf_mount "$STORE" "$MNT"
"${FD[@]}" verify "$MNT" "$STATE" || fail "fsynced files differ after remounting a full store"
pcf_umount "$MNT"
pcf_wait_daemon_exit "$STORE"
pcf_fsck "$STORE" "at the end"

echo "PASS: full-disk"
