#!/bin/bash
# SPDX-License-Identifier: MIT
# A CI runner that starts cold from a remote: the pip cache one job filled on host A serves the
# next job on host B, whose store is empty.
#
# For each remote type (file://, WebDAV, S3): host A mounts a new store over a pip cache dir with
# --remote and runs real pip (`python3 -m pip install --cache-dir MNT --target ...`) against a
# local PEP 503 index of hand-built wheels (small_wheels.py: alpha -> beta -> gamma, epsilon, and
# two delta releases sharing their large members), twice: cold (downloads from the index) and
# warm (from the local cache); umount pushes.  Store A is deleted.  Host B mounts a new empty store
# with the same remote (a cold mount: names only) and runs the same job.  It must succeed, install
# the wheels byte for byte, download no wheel from the index (.whl GETs in the index's log), and
# bring from the remote at most 1.1x the bytes of the cache files the job read.  Also, each chunk
# once: host A's push sends no more than its store's unique bytes (+2% and 256 KiB for
# catalogs), and host B downloads no more than 1.1x its store's unique bytes (these two are
# checked last, without stopping the other remote types).
#
# "Bytes downloaded": for WebDAV and S3, counted at the server: the sum of $bytes_sent of the GETs
# of packs/*.pack in nginx's access log between host B's mount and its umount (headers
# included); for file:// (no server), the daemon's own fetch_wire_bytes from STORE/remote-stats.
# "Bytes read": the job runs under `strace -f -e trace=openat`; the sum of the sizes of the
# distinct regular files below the mount it opened for reading (opened_bytes.py).  pip reads the
# cache entries it opens whole, and a cold host fetches a file whole on open, so this is the data
# the job needed; catalogs (metadata, fetched at mount) are not counted on either side.
#
# Figures printed per remote: cold mount time, job time warm-local (A) and cold-remote (B),
# bytes downloaded, bytes read, their ratio.
#
# usage: cold-runner.sh PKGCACHEFS_BINARY [file|webdav|s3|all]
set -u -o pipefail
. "$(dirname "$0")/e2e-lib.sh"
e2e_init "${1:-}"
WHICH=${2:-all}
case $WHICH in
all) TYPES="file webdav s3" ;;
file | webdav | s3) TYPES=$WHICH ;;
*) fail "usage: $0 PKGCACHEFS_BINARY [file|webdav|s3|all]" ;;
esac

"$PY" -m pip --version >/dev/null 2>&1 || fail "$PY has no pip: apt-get install -y python3-pip"
command -v strace >/dev/null || fail "strace is missing (needed to measure what pip read): apt-get install -y strace"
WHEELS="$PY $E2E_DIR/small_wheels.py"

SERVERS_OK=1
if [ "$TYPES" != file ]; then
	e2e_servers
	case $? in
	0) ;;
	77) SERVERS_OK=0 ;;
	*) fail "servers.sh start failed (log above)" ;;
	esac
fi

INDEX=$TMP/index
HTTPLOG=$TMP/index-http.log
log "building wheels"
$WHEELS build "$INDEX" >"$TMP/wheels-build.log" || fail "small_wheels.py build failed"
$WHEELS serve "$INDEX" "$TMP/port" "$HTTPLOG" &
PCF_BG_PIDS+=($!)
for i in $(seq 100); do
	[ -s "$TMP/port" ] && break
	sleep 0.1
done
[ -s "$TMP/port" ] || fail "index server did not start"
URL=http://127.0.0.1:$(cat "$TMP/port")/simple
WHEEL_BYTES=$("$PY" -c 'import json,sys; print(sum(w["size"] for w in json.load(open(sys.argv[1]))))' "$INDEX/wheels.json")
log "index at $URL: $WHEEL_BYTES bytes of wheels"

whl_requests() { grep -c '^GET /packages/.*\.whl ' "$HTTPLOG"; }

# job MNT DIR TAG: the CI job: two pip installs with MNT as cache (alpha + delta 2.0.0 +
# epsilon, then delta 2.0.1), under strace; checks what got installed; JOB_MS = wall time.
job() {
	local mnt=$1 dir=$2 tag=$3 t0 rc n
	mkdir -p "$dir"
	t0=$(now_ms)
	for n in 1 2; do
		local reqs="alpha delta==2.0.0 epsilon"
		[ $n = 2 ] && reqs="delta==2.0.1"
		# shellcheck disable=SC2086
		strace -f -qq --seccomp-bpf -s 4096 -e trace=openat -o "$dir/strace-$tag-$n" \
			"$PY" -m pip install --cache-dir "$mnt" --index-url "$URL" --trusted-host 127.0.0.1 \
			--progress-bar off --no-compile --target "$dir/$tag-$n/lib/site-packages" $reqs \
			>"$dir/pip-$tag-$n.log" 2>&1
		rc=$?
		if [ $rc != 0 ]; then
			tail -n 40 "$dir/pip-$tag-$n.log" >&2
			fail "$tag: pip install $reqs exited $rc (log above)"
		fi
		if grep -qi 'cache has been disabled\|not owned' "$dir/pip-$tag-$n.log"; then
			fail "$tag: pip disabled its cache on $mnt"
		fi
	done
	JOB_MS=$(($(now_ms) - t0))
	$WHEELS verify "$INDEX" "$dir/$tag-1" alpha==1.0.0 beta==1.2.0 gamma==3.0 delta==2.0.0 \
		epsilon==0.9 >/dev/null || fail "$tag: installed files differ from the wheels"
	$WHEELS verify "$INDEX" "$dir/$tag-2" delta==2.0.1 >/dev/null ||
		fail "$tag: installed files differ from the wheels"
}

# opened DIR TAG MNT: "FILES BYTES" the job TAG opened for reading below MNT.
opened() {
	cat "$1/strace-$2-1" "$1/strace-$2-2" >"$1/strace-$2"
	"$PY" "$E2E_DIR/opened_bytes.py" "$1/strace-$2" "$3" || fail "opened_bytes.py failed"
}

declare -a SUMMARY=()
declare -a SOFT_FAILS=()
# soft_fail MSG: a failed check that does not stop the other remote types; fails at the end.
soft_fail() {
	echo "FAIL (continuing): $*" >&2
	SOFT_FAILS+=("$*")
}

# unique_bytes STORE: unique_bytes from `pkgcachefs stats --json`.
unique_bytes() {
	"$BIN" stats --store "$1" --json | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["unique_bytes"])' ||
		fail "pkgcachefs stats --store $1 --json failed"
}

run_type() {
	local t=$1 dir=$TMP/$1 r storeA storeB mntA mntB n0 n1 n2 t0 mount_ms push_ms warm_ms cold_ms
	local alog mark down down_daemon read_files read_bytes ratio a_unique a_out b_unique
	r=$(remote_url "$t" cold)
	dir=$TMP/$t
	storeA=$dir/storeA storeB=$dir/storeB mntA=$dir/mntA mntB=$dir/mntB
	mkdir -p "$dir"
	alog=$(access_log "$t")
	log "== $t: remote $r"

	pcf_mount "$storeA" "$mntA" --remote "$r"
	n0=$(whl_requests)
	job "$mntA" "$dir" A-cold
	n1=$(whl_requests)
	[ $((n1 - n0)) -ge 6 ] ||
		fail "$t: host A's first job should download the 6 wheels from the index, it got $((n1 - n0))"
	job "$mntA" "$dir" A-warm
	warm_ms=$JOB_MS
	[ "$(whl_requests)" = "$n1" ] || fail "$t: host A's second job downloaded wheels again"
	grep -q 'Using cached' "$dir/pip-A-warm-1.log" || fail "$t: host A's second job did not use the cache"
	read -r _ a_read_bytes < <(opened "$dir" A-warm "$mntA")
	sleep 1.2 # stats on a mounted store shows the last group commit (1 s)
	a_unique=$(unique_bytes "$storeA")
	t0=$(now_ms)
	pcf_umount "$mntA"
	push_ms=$(($(now_ms) - t0))
	pcf_wait_daemon_exit "$storeA"
	a_out=$(stat_of "$storeA" bytes_out)
	log "$t: host A pushed in $(secs $push_ms) s: bytes_out=$a_out for $a_unique unique bytes" \
		"in its store; requests=$(stat_of "$storeA" requests)" \
		"request_failures=$(stat_of "$storeA" request_failures)"
	# Each chunk once: the push sends the store's unique data, plus catalogs (a few KiB).
	[ "$a_out" -le $((a_unique + a_unique / 50 + 256 * 1024)) ] ||
		soft_fail "$t: host A's push sent $a_out bytes for $a_unique unique bytes in its store:" \
			"chunks shared by two cache files were uploaded twice"
	rm -rf "$storeA" "$mntA"

	mark=$(log_mark "$alog")
	t0=$(now_ms)
	pcf_mount "$storeB" "$mntB" --remote "$r"
	mount_ms=$(($(now_ms) - t0))
	n2=$(whl_requests)
	job "$mntB" "$dir" B-cold
	cold_ms=$JOB_MS
	if [ "$(whl_requests)" != "$n2" ]; then
		grep -E 'Using cached|Downloading' "$dir/pip-B-cold-"*.log >&2
		fail "$t: host B downloaded $(($(whl_requests) - n2)) wheels from the index: the cache from the remote was not used"
	fi
	for w in alpha-1.0.0 beta-1.2.0 gamma-3.0 delta-2.0.0 epsilon-0.9; do
		grep -q "Using cached .*$w" "$dir/pip-B-cold-1.log" ||
			fail "$t: host B's pip did not say 'Using cached $w' (see $dir/pip-B-cold-1.log)"
	done
	read -r read_files read_bytes < <(opened "$dir" B-cold "$mntB")
	pcf_umount "$mntB"
	pcf_wait_daemon_exit "$storeB"
	down_daemon=$(stat_of "$storeB" fetch_wire_bytes)
	[ -n "$down_daemon" ] || fail "$t: $storeB/remote-stats has no fetch_wire_bytes"
	if [ "$t" = file ]; then
		down=$down_daemon
	else
		down=$(log_since "$alog" "$mark" | pack_get_bytes)
	fi
	[ "$read_bytes" -gt 0 ] || fail "$t: host B's job read nothing below the mount (strace saw no open there)"
	[ "$down" -gt 0 ] || fail "$t: nothing was downloaded from the remote, yet host B had an empty store"
	ratio=$(awk -v d="$down" -v r="$read_bytes" 'BEGIN { printf "%.3f", d / r }')
	log "$t: cold mount $(secs $mount_ms) s; job warm-local (A) $(secs $warm_ms) s," \
		"cold-remote (B) $(secs $cold_ms) s; downloaded $down bytes (daemon: fetch_wire_bytes" \
		"$down_daemon, fetched_bytes $(stat_of "$storeB" fetched_bytes), fetch_failures" \
		"$(stat_of "$storeB" fetch_failures)); read $read_bytes bytes in $read_files files" \
		"(host A's warm job read $a_read_bytes); ratio $ratio"
	SUMMARY+=("$(printf '%-7s cold mount %6s s  job warm-local %6s s  cold-remote %6s s  downloaded %9d B  read %9d B  ratio %s' \
		"$t" "$(secs $mount_ms)" "$(secs $warm_ms)" "$(secs $cold_ms)" "$down" "$read_bytes" "$ratio")")
	awk -v d="$down" -v r="$read_bytes" 'BEGIN { exit !(d <= 1.1 * r) }' ||
		fail "$t: host B downloaded $down bytes for $read_bytes bytes read (ratio $ratio > 1.1)"
	[ "$(stat_of "$storeB" fetch_failures)" = 0 ] ||
		fail "$t: host B's daemon counted $(stat_of "$storeB" fetch_failures) fetch failures"
	pcf_fsck "$storeB" "$t: host B after the job"
	b_unique=$(unique_bytes "$storeB")
	log "$t: host B's store holds $b_unique unique bytes; it downloaded $down"
	awk -v d="$down" -v u="$b_unique" 'BEGIN { exit !(d <= 1.1 * u) }' ||
		soft_fail "$t: host B downloaded $down bytes for $b_unique unique bytes (more than 1.1x):" \
			"shared chunks were fetched more than once"
}

skipped=""
for t in $TYPES; do
	if [ "$t" != file ] && [ $SERVERS_OK = 0 ]; then
		echo "SKIP ($t): the test servers cannot run here (see above)"
		skipped="$skipped $t"
		continue
	fi
	run_type "$t"
done

echo "---- cold-runner figures"
for l in "${SUMMARY[@]}"; do echo "$l"; done
[ ${#SUMMARY[@]} -gt 0 ] || skip "no remote type could run:$skipped"
if [ ${#SOFT_FAILS[@]} -gt 0 ]; then
	for l in "${SOFT_FAILS[@]}"; do echo "FAIL: $l" >&2; done
	exit 1
fi
echo "PASS: cold-runner ($TYPES${skipped:+; skipped:$skipped})"
