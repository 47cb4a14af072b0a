#!/bin/bash
# SPDX-License-Identifier: MIT
# Runs one command against a fresh pkgcachefs mount, then checks the store it leaves behind.
#
# In a new temp dir under ${TMPDIR:-/tmp} it mounts an empty store (STORE=<tmp>/store) on
# <tmp>/mnt, runs COMMAND with PKGCACHEFS_TEST_DIR=<mountpoint>, PKGCACHEFS_STORE=<store> and
# PKGCACHEFS_BIN=<binary> in its environment, then unmounts with `pkgcachefs umount` and runs
# `pkgcachefs fsck --store`.  Every step runs even when the command failed, and the wrapper fails
# when any of them failed: a test can pass while the daemon corrupts its store.
#
# Whatever happens (failure, timeout signal), the EXIT trap leaves nothing behind: a mount that
# is still there is detached with fusermount3 -u -z, a daemon that is still alive is killed by the
# pid it wrote in STORE/daemon.pid (after checking that pid is really our daemon), and the temp
# dir is removed only once nothing is mounted below it.
#
# usage: with-mount.sh PKGCACHEFS_BINARY [--opts FUSE_OPTS] -- COMMAND ARGS...
#
# Exit status: the command's status when it failed (1 when it exited 77, which is meson's skip
# and is not the command's to claim), else 1 when mount, umount or fsck failed, else 0.  77 (skip)
# only when /dev/fuse is missing or cannot be opened, or fusermount3 is missing.
# PCF_KEEP_TMP=1 keeps the temp dir (store included) for a post-mortem; PCF_TIMEOUT bounds each
# CLI call (seconds, default 300).
set -u -o pipefail

PCF_TIMEOUT=${PCF_TIMEOUT:-300}
TMP=""
STORE=""
MNT=""
CMD_PID=""

log() { echo "with-mount: $*" >&2; }
fail() { echo "with-mount: FAIL: $*" >&2; exit 1; }
skip() { echo "with-mount: SKIP: $*" >&2; exit 77; }
# bad MSG: a step after the command failed; the wrapper fails, keeping the command's status.
bad() {
	echo "with-mount: FAIL: $*" >&2
	[ "$status" != 0 ] || status=1
}
usage() { echo "usage: $0 PKGCACHEFS_BINARY [--opts FUSE_OPTS] -- COMMAND ARGS..." >&2; exit 2; }

is_mounted() {
	# /proc/self/mountinfo, not stat(): it still works on a dead FUSE mount (ENOTCONN).
	awk -v m="$1" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo
}

daemon_pid() {
	# The pid in STORE/daemon.pid, when that process is alive and is a daemon of this store: a
	# stale file could name a recycled pid, which must never be killed.
	local pid exe
	[ -n "$STORE" ] && [ -r "$STORE/daemon.pid" ] || return 1
	pid=$( { tr -dc '0-9' <"$STORE/daemon.pid"; } 2>/dev/null) # it may vanish meanwhile
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
	exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || exe=""
	exe=${exe% (deleted)}
	if [ "$exe" != "$BIN" ] && ! tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null |
		grep -qxF -e "$STORE" -e "--store=$STORE"; then
		return 1
	fi
	echo "$pid"
}

cleanup() {
	local rc=$? pid
	trap - EXIT INT TERM
	set +e
	if [ -n "$CMD_PID" ] && kill -0 "$CMD_PID" 2>/dev/null; then
		log "killing the command (pid $CMD_PID), still running"
		kill -TERM "$CMD_PID" 2>/dev/null
		for _ in $(seq 50); do
			kill -0 "$CMD_PID" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$CMD_PID" 2>/dev/null
	fi
	if [ -n "$MNT" ] && is_mounted "$MNT"; then
		log "$MNT is still mounted: detaching it with fusermount3 -u -z"
		fusermount3 -u -z "$MNT"
	fi
	if pid=$(daemon_pid); then
		# Detaching the mount normally makes the daemon exit; give it a moment first.
		for _ in $(seq 50); do
			daemon_pid >/dev/null || break
			sleep 0.1
		done
		if pid=$(daemon_pid); then
			log "killing the leftover daemon (pid $pid)"
			kill -TERM "$pid"
			for _ in $(seq 50); do
				kill -0 "$pid" 2>/dev/null || break
				sleep 0.1
			done
			kill -KILL "$pid" 2>/dev/null
		fi
	fi
	if [ -n "$TMP" ] && [ -d "$TMP" ]; then
		if awk -v t="$TMP/" 'index($5, t) == 1 { f = 1 } END { exit !f }' \
			/proc/self/mountinfo; then
			log "WARNING: something is still mounted below $TMP; not removing it"
			[ "$rc" != 0 ] || rc=1
		elif [ -n "${PCF_KEEP_TMP:-}" ]; then
			log "PCF_KEEP_TMP set: leaving $TMP"
		else
			rm -rf "$TMP"
		fi
	fi
	exit "$rc"
}

# ---- arguments ----
[ $# -ge 1 ] || usage
BIN=$1
shift
OPTS=""
while [ $# -gt 0 ]; do
	case $1 in
	--opts)
		[ $# -ge 2 ] || usage
		OPTS=$2
		shift 2
		;;
	--opts=*)
		OPTS=${1#--opts=}
		shift
		;;
	--)
		shift
		break
		;;
	*)
		usage
		;;
	esac
done
[ $# -ge 1 ] || usage
[ -x "$BIN" ] && [ -f "$BIN" ] || fail "$BIN is not an executable file"
BIN=$(realpath "$BIN")

# ---- is FUSE usable at all? The only reasons to skip. ----
command -v fusermount3 >/dev/null 2>&1 || skip "fusermount3 not found in PATH ($PATH)"
[ -e /dev/fuse ] || skip "/dev/fuse does not exist (no FUSE in this kernel or container)"
[ -c /dev/fuse ] || skip "/dev/fuse is not a character device"
if ! err=$( { exec 3<>/dev/fuse; } 2>&1); then
	skip "/dev/fuse cannot be opened read-write: ${err##*: }"
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/pcf-mount.XXXXXX") || fail "mktemp -d under ${TMPDIR:-/tmp}"
TMP=$(realpath "$TMP")
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
STORE=$TMP/store
MNT=$TMP/mnt
mkdir "$MNT" || fail "mkdir $MNT"
# mktemp made it 0700; the allow_other tests switch to another user, who must reach the mount.
chmod 0755 "$TMP"

# ---- mount ----
mount_args=(mount --store "$STORE")
[ -n "$OPTS" ] && mount_args+=(-o "$OPTS")
timeout "$PCF_TIMEOUT" "$BIN" "${mount_args[@]}" "$MNT"
rc=$?
[ $rc = 0 ] || fail "pkgcachefs ${mount_args[*]} $MNT exited $rc"
is_mounted "$MNT" || fail "pkgcachefs mount exited 0 but $MNT is not in /proc/self/mountinfo"
fstype=$(awk -v m="$MNT" '$5 == m { for (i = 7; i <= NF; i++) if ($i == "-") { print $(i + 1); exit } }' \
	/proc/self/mountinfo)
case $fstype in
fuse | fuse.*) ;;
*) fail "$MNT is mounted, but as '$fstype', not as a FUSE filesystem" ;;
esac
dpid=$(daemon_pid) || fail "mounted, but $STORE/daemon.pid does not name a live daemon"
log "mounted $STORE on $MNT (daemon pid $dpid${OPTS:+, -o $OPTS})"

# ---- the command ----
# In the background so that a TERM from meson's timeout runs the trap at once instead of after
# the command; a non-interactive shell keeps it in our process group, so meson's group kill
# reaches it (and its children) too.
PKGCACHEFS_TEST_DIR=$MNT PKGCACHEFS_STORE=$STORE PKGCACHEFS_BIN=$BIN "$@" &
CMD_PID=$!
wait "$CMD_PID"
cmd_rc=$?
CMD_PID=""
status=0
if [ $cmd_rc != 0 ]; then
	log "FAIL: the command ($*) exited $cmd_rc"
	status=$cmd_rc
	[ $status != 77 ] || status=1
fi

# ---- umount and fsck, whatever the command did ----
if ! daemon_pid >/dev/null; then
	bad "the daemon (pid $dpid) died while the command ran"
fi
if is_mounted "$MNT"; then
	timeout "$PCF_TIMEOUT" "$BIN" umount "$MNT"
	rc=$?
	if [ $rc != 0 ]; then
		bad "pkgcachefs umount $MNT exited $rc"
	elif is_mounted "$MNT"; then
		bad "pkgcachefs umount exited 0 but $MNT is still mounted"
	fi
else
	bad "$MNT was no longer mounted after the command"
fi
for _ in $(seq 100); do
	daemon_pid >/dev/null || break
	sleep 0.1
done
if daemon_pid >/dev/null; then
	bad "the daemon is still running 10 s after umount"
fi
if ! is_mounted "$MNT" && ! daemon_pid >/dev/null; then
	out=$(timeout "$PCF_TIMEOUT" "$BIN" fsck --store "$STORE" 2>&1)
	rc=$?
	if [ $rc != 0 ]; then
		echo "$out" | tail -n 50 >&2
		bad "pkgcachefs fsck --store $STORE exited $rc"
	else
		log "fsck: clean"
	fi
else
	bad "fsck not run: the store is still in use"
fi
exit "$status"
