# SPDX-License-Identifier: MIT
# Shared helpers for the remote end-to-end tests (sourced, never run).
#
# On top of tests/clients/lib.sh (temp dir, mount bookkeeping, fail/skip): the test servers of
# tests/remote/servers.sh started inside $TMP and stopped by the EXIT trap once every mount is
# gone (a mount's umount pushes, so the servers must outlive the mounts), daemons run in the
# foreground (-f) in the background to capture their log, remote URLs with a namespace of their
# own per scenario, and byte counts at the servers.
#
# Exit codes as lib.sh: 0 pass, 1 fail ("FAIL: ..."), 77 only when the whole script cannot run.

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$E2E_DIR/../clients/lib.sh"
SERVERS_SH=$E2E_DIR/../remote/servers.sh

SRV=""                   # servers.sh state dir, once started
declare -a E2E_FG_PIDS=() # foreground daemons (mount -f) started in the background

# e2e_init BIN: lib.sh's pcf_init, then our own trap around its cleanup.
e2e_init() {
	pcf_init "$1"
	trap 'e2e_cleanup' EXIT
	# Our environment only: no user pip config or proxies.
	for v in $(env | sed -n 's/^\(PIP_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done
	export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
	export PIP_DEFAULT_TIMEOUT=60 PYTHONDONTWRITEBYTECODE=1 PIP_ROOT_USER_ACTION=ignore
	unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY no_proxy NO_PROXY
}

# Unmount everything (servers still up, so umount's push can work), stop the foreground
# daemons and the servers, then let lib.sh's cleanup remove the temp dir with the same status.
e2e_cleanup() {
	local rc=$? entry store mnt pid
	trap - EXIT
	set +e
	for entry in "${PCF_MOUNTS[@]}"; do
		store=${entry%%|*}
		mnt=${entry#*|}
		is_mounted "$mnt" && timeout 60 "$BIN" umount "$mnt" >/dev/null 2>&1
		if is_mounted "$mnt"; then
			pid=$(pcf_daemon_pid "$store") && kill -9 "$pid" 2>/dev/null
			fusermount3 -u -z "$mnt" 2>/dev/null
		fi
	done
	for pid in "${E2E_FG_PIDS[@]}"; do
		if kill -0 "$pid" 2>/dev/null; then
			sleep 1
			kill -9 "$pid" 2>/dev/null
		fi
		wait "$pid" 2>/dev/null
	done
	[ -n "$SRV" ] && bash "$SERVERS_SH" stop "$SRV" >/dev/null 2>&1
	(exit $rc)
	pcf_cleanup
}

# e2e_servers: starts nginx WebDAV and s3rver (+ proxy) into $TMP/srv and loads their env.
# Returns servers.sh's status (77: cannot run here) instead of failing.
e2e_servers() {
	local rc
	SRV=$TMP/srv
	bash "$SERVERS_SH" start "$SRV" >"$TMP/servers.log" 2>&1
	rc=$?
	if [ $rc != 0 ]; then
		cat "$TMP/servers.log" >&2
		[ $rc = 77 ] || SRV_FAILED=1
		return $rc
	fi
	set -a
	. "$SRV/env"
	set +a
	return 0
}

# remote_url TYPE NAME: a remote of that type with a namespace of its own.
remote_url() {
	case $1 in
	file) mkdir -p "$TMP/file-remotes/$2" && echo "file://$TMP/file-remotes/$2" ;;
	webdav) echo "${WEBDAV_URL}$2/" ;;
	s3) echo "${S3_URL/\/prefix\?//$2?}" ;;
	*) fail "unknown remote type $1" ;;
	esac
}

# remote_dir TYPE NAME: where the server keeps that remote's objects.
remote_dir() {
	case $1 in
	file) echo "$TMP/file-remotes/$2" ;;
	webdav) echo "$SRV/webdav/$2" ;;
	s3) echo "$SRV/s3data/pkgcache/$2" ;;
	esac
}

# access_log TYPE: the server's access log (none for file).
access_log() {
	case $1 in
	webdav) echo "$WEBDAV_ACCESS_LOG" ;;
	s3) echo "$S3_ACCESS_LOG" ;;
	*) echo /dev/null ;;
	esac
}

# log_mark FILE: the number of lines FILE has now, for log_since.
log_mark() { if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi; }
# log_since FILE MARK: the lines added after log_mark returned MARK.
log_since() { tail -n +"$(($2 + 1))" "$1" 2>/dev/null; }

# pack_get_bytes: sums $bytes_sent of the GETs of pack objects in an access log on stdin
# ("$request_method $uri $status $bytes_sent $request_length"), headers included: what the
# server put on the wire for data.
pack_get_bytes() { awk '$1 == "GET" && $2 ~ /\/packs\/[0-9a-f]+\.pack$/ { s += $4 } END { print s + 0 }'; }

now_ms() { echo $(($(date +%s%N) / 1000000)); }
# secs MS: "1.234"
secs() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }

# stat_of STORE KEY: a value from STORE/remote-stats (written by the daemon when it exits).
stat_of() { sed -n "s/^$2=//p" "$1/remote-stats" 2>/dev/null | head -n 1; }

# mount_fg STORE MNT LOG [args...]: `pkgcachefs mount -f` in the background, its stderr in LOG;
# returns 0 once mounted, 1 when the daemon exited instead (its status in FG_RC).
mount_fg() {
	local store=$1 mnt=$2 logf=$3 pid i
	shift 3
	mkdir -p "$mnt"
	PCF_MOUNTS+=("$store|$mnt")
	"$BIN" mount -f --store "$store" "$@" "$mnt" >>"$logf" 2>&1 &
	pid=$!
	E2E_FG_PIDS+=($pid)
	FG_PID=$pid
	for i in $(seq $((PCF_TIMEOUT * 10))); do
		is_mounted "$mnt" && return 0
		if ! kill -0 "$pid" 2>/dev/null; then
			wait "$pid"
			FG_RC=$?
			return 1
		fi
		sleep 0.1
	done
	fail "mount -f --store $store $mnt: not mounted after $PCF_TIMEOUT s"
}

# sums_of DIR: "sha256  ./path" of every regular file below DIR, sorted.
sums_of() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum); }

# write_random FILE BYTES SEED: deterministic incompressible content, so it can be checked later
# by recomputing it.
write_random() {
	"$PY" - "$1" "$2" "$3" <<'EOF' || fail "writing $1 failed"
import random, sys
path, size, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rnd = random.Random(seed)
with open(path, "wb") as f:
    left = size
    while left:
        n = min(left, 1 << 20)
        f.write(rnd.randbytes(n))
        left -= n
EOF
}
