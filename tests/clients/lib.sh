# SPDX-License-Identifier: MIT
# Shared helpers for the client tests (sourced, never run).
#
# Each test takes the pkgcachefs binary as its first argument, works in one temp dir, and must
# leave the machine as it found it whatever happens: every mount it makes is registered here and
# torn down by the EXIT trap (clean umount first, then kill -9 of the daemon *we* started, by the
# pid it wrote, then a lazy fusermount3), background helpers are killed by their pid, and the
# temp dir is removed only once nothing is mounted below it.
#
# Exit codes: 0 pass, 1 fail (with a "FAIL:" line saying what and why), 77 skip (with a reason),
# only when /dev/fuse or fusermount3 is truly unusable, or root is required and missing.

PY=${PYTHON:-/usr/bin/python3}
CLIENTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Seconds allowed for one CLI call; a hung daemon must fail the test, not hang it.
PCF_TIMEOUT=${PCF_TIMEOUT:-300}

declare -a PCF_MOUNTS=()	# "STORE|MNT" for every mount this test made
declare -a PCF_BG_PIDS=()	# helper processes (http server, writers) to kill on exit
declare -a PCF_EXTRA_UMOUNTS=()	# non-FUSE mounts (tmpfs) to unmount last
TMP=""

log() { echo "[$(date +%T)] $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
skip() { echo "SKIP: $*" >&2; exit 77; }

is_mounted() {
	# /proc/self/mountinfo works on a dead FUSE mount, where stat() returns ENOTCONN.
	awk -v m="$1" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo
}

# pcf_init BIN: checks the environment, creates $TMP and installs the cleanup trap.
pcf_init() {
	BIN=${1:-}
	[ -n "$BIN" ] || fail "usage: $0 PKGCACHEFS_BINARY"
	[ -x "$BIN" ] || fail "$BIN is not an executable"
	BIN=$(realpath "$BIN")
	command -v fusermount3 >/dev/null 2>&1 || skip "fusermount3 not found in PATH"
	[ -c /dev/fuse ] || skip "/dev/fuse is missing"
	"$PY" -c 'import os; os.close(os.open("/dev/fuse", os.O_RDWR))' 2>/dev/null ||
		skip "/dev/fuse cannot be opened read-write"
	TMP=$(mktemp -d "${TMPDIR:-/tmp}/pcf-client.XXXXXX")
	TMP=$(realpath "$TMP")
	trap 'pcf_cleanup' EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

pcf_daemon_pid() {
	# The pid in STORE/daemon.pid, if that process is alive and is a pkgcachefs daemon.
	local store=$1 pid
	[ -r "$store/daemon.pid" ] || return 1
	pid=$(tr -dc '0-9' <"$store/daemon.pid")
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
	echo "$pid"
}

pcf_cleanup() {
	local rc=$? entry store mnt pid p still=0
	trap - EXIT INT TERM
	set +e
	for p in "${PCF_BG_PIDS[@]}"; do
		kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
	done
	for entry in "${PCF_MOUNTS[@]}"; do
		store=${entry%%|*}
		mnt=${entry#*|}
		if is_mounted "$mnt"; then
			timeout 60 "$BIN" umount "$mnt" >/dev/null 2>&1
		fi
		if is_mounted "$mnt"; then
			pid=$(pcf_daemon_pid "$store") && kill -9 "$pid" 2>/dev/null
			fusermount3 -u -z "$mnt" 2>/dev/null
		fi
		# A daemon that outlived its mount would keep the store busy.
		if pid=$(pcf_daemon_pid "$store"); then
			sleep 1
			pid=$(pcf_daemon_pid "$store") && kill -9 "$pid" 2>/dev/null
		fi
	done
	for mnt in "${PCF_EXTRA_UMOUNTS[@]}"; do
		is_mounted "$mnt" && umount -l "$mnt"
	done
	if [ -n "$TMP" ] && [ -d "$TMP" ]; then
		if awk -v t="$TMP/" 'index($5, t) == 1 { f = 1 } END { exit !f }' /proc/self/mountinfo; then
			echo "WARNING: something is still mounted below $TMP; not removing it" >&2
			still=1
		elif [ -n "${PCF_KEEP_TMP:-}" ]; then
			echo "PCF_KEEP_TMP set: leaving $TMP" >&2
		else
			rm -rf "$TMP"
		fi
	fi
	[ $still = 0 ] || [ $rc != 0 ] || rc=1
	exit $rc
}

# pcf_mount STORE MNT [extra mount args...]: mounts and checks that the mount is there.
pcf_mount() {
	local store=$1 mnt=$2 rc
	shift 2
	mkdir -p "$mnt"
	PCF_MOUNTS+=("$store|$mnt")
	timeout "$PCF_TIMEOUT" "$BIN" mount --store "$store" "$@" "$mnt"
	rc=$?
	[ $rc = 0 ] || fail "pkgcachefs mount --store $store $mnt exited $rc"
	is_mounted "$mnt" || fail "pkgcachefs mount returned 0 but $mnt is not in /proc/self/mountinfo"
	pcf_daemon_pid "$store" >/dev/null ||
		fail "mounted, but $store/daemon.pid does not name a live process"
}

# pcf_umount MNT: clean unmount; everything must be durable once it returns 0.
pcf_umount() {
	local mnt=$1 rc
	timeout "$PCF_TIMEOUT" "$BIN" umount "$mnt"
	rc=$?
	[ $rc = 0 ] || fail "pkgcachefs umount $mnt exited $rc"
	! is_mounted "$mnt" || fail "pkgcachefs umount returned 0 but $mnt is still mounted"
}

# pcf_wait_daemon_exit STORE: after umount the daemon must go away by itself. It removes
# daemon.pid as it closes the store, then writes exit-status, then releases the store lock:
# wait for the lock, as `pkgcachefs umount` does, so that exit-status can be read after this.
pcf_wait_daemon_exit() {
	local store=$1 i
	for i in $(seq 100); do
		if ! pcf_daemon_pid "$store" >/dev/null &&
			{ [ ! -e "$store/lock" ] || flock -n -s "$store/lock" true; }; then
			return 0
		fi
		sleep 0.1
	done
	fail "daemon $(cat "$store/daemon.pid") still running 10 s after umount"
}

# pcf_kill9 STORE MNT: simulates a crash of the daemon and clears the dead mount.
pcf_kill9() {
	local store=$1 mnt=$2 pid i
	pid=$(pcf_daemon_pid "$store") || fail "no live daemon pid in $store/daemon.pid to kill"
	kill -9 "$pid"
	for i in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$pid" 2>/dev/null && fail "daemon $pid survived kill -9 for 10 s"
	fusermount3 -u -z "$mnt" || fail "fusermount3 -u -z $mnt failed after kill -9"
}

# pcf_fsck STORE WHAT: runs fsck and fails the test (showing its output) when it is not clean.
pcf_fsck() {
	local store=$1 what=$2 out rc
	out=$(timeout "$PCF_TIMEOUT" "$BIN" fsck --store "$store" 2>&1)
	rc=$?
	if [ $rc != 0 ]; then
		echo "$out" | tail -n 50 >&2
		fail "pkgcachefs fsck ($what) exited $rc"
	fi
	log "fsck ($what): clean"
}

# pcf_gc STORE WHAT: runs gc, fails the test when it does not exit 0.
pcf_gc() {
	local store=$1 what=$2 out rc
	out=$(timeout "$PCF_TIMEOUT" "$BIN" gc --store "$store" 2>&1)
	rc=$?
	if [ $rc != 0 ]; then
		echo "$out" | tail -n 50 >&2
		fail "pkgcachefs gc ($what) exited $rc"
	fi
	log "gc ($what): ok"
}

# pcf_stats STORE: prints the stats JSON after checking it has the fields the contract promises.
pcf_stats() {
	local store=$1 out rc
	out=$(timeout "$PCF_TIMEOUT" "$BIN" stats --store "$store" --json 2>/dev/null)
	rc=$?
	[ $rc = 0 ] || fail "pkgcachefs stats --store $store --json exited $rc"
	echo "$out" | "$PY" -c '
import json, sys
d = json.load(sys.stdin)
for k in ("files", "logical_bytes", "stored_bytes"):
    if not isinstance(d.get(k), int):
        sys.exit("stats JSON lacks integer field %r: %r" % (k, d))
' || fail "pkgcachefs stats output is not what the contract promises: $out"
	echo "$out"
}
