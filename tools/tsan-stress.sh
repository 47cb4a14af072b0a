#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The daemon's threads under ThreadSanitizer: builds pkgcachefs with -Db_sanitize=thread (in
# build-tsan), then runs workloads that exercise every multi-threaded path of the daemon
# through that binary, and fails on any TSan report.
#
#   tools/tsan-stress.sh [ROUNDS]      (default 1; run as root: FUSE mounts)
#
# Paths exercised: the FUSE loop's worker threads, the two hashing threads and the commit thread
# (concurrent writers, renames, reads, fsync), gc inside the daemon (eviction while reading), the
# remote thread (periodic push while writing, push on request), and the fetcher's workers
# (cold reads by several readers at once, single-flight, prefetch). Then the client suites that
# take a binary (npm-like, uv-like, the remote cold runner) run on the TSan build too.
#
# Criterion's test runner does not start under TSan (its arena), so the unit suites are not
# part of this; their threads are the same code, driven here through real mounts.
set -euo pipefail

rounds=${1:-1}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"

if [[ ! -f build-tsan/build.ninja ]]; then
	meson setup build-tsan -Db_sanitize=thread -Db_lundef=false >/dev/null
fi
ninja -C build-tsan pkgcachefs >/dev/null
bin=$here/build-tsan/pkgcachefs

work=$(mktemp -d /tmp/pcf-tsan.XXXXXX)
logs=$work/logs
mkdir -p "$logs" "$work/remote" "$work/m1" "$work/m2"
export TSAN_OPTIONS="log_path=$logs/tsan halt_on_error=0 second_deadlock_stack=1"

cleanup() {
	for m in "$work/m1" "$work/m2"; do
		if mountpoint -q "$m"; then
			"$bin" umount "$m" >/dev/null 2>&1 || fusermount3 -uz "$m" || true
		fi
	done
	rm -rf "$work"
}
trap cleanup EXIT

ops=0
for ((round = 1; round <= rounds; round++)); do
	rm -rf "$work/a" "$work/b" "$work/remote"/*
	"$bin" mount --store "$work/a" --remote "file://$work/remote" -o push_interval=2 "$work/m1"
	# Writers, readers and renames at once, with the periodic push running under them.
	for w in 1 2 3; do
		(
			for i in $(seq 1 40); do
				head -c $((RANDOM * 20 + 1)) /dev/urandom >"$work/m1/w$w-$i"
				cat "$work/m1/w$w-$i" >/dev/null
				mv "$work/m1/w$w-$i" "$work/m1/r$w-$i"
				if ((i % 10 == 0)); then
					sync "$work/m1/r$w-$i"
				fi
			done
		) &
	done
	wait
	ops=$((ops + 3 * 40 * 3))
	"$bin" push --store "$work/a" >/dev/null
	"$bin" umount "$work/m1"

	# A cold host: several readers of the same files (single-flight), prefetch, then gc
	# evicting local copies while reads go on.
	"$bin" mount --store "$work/b" --remote "file://$work/remote" "$work/m2"
	for r in 1 2 3 4; do
		(
			for f in "$work"/m2/r*; do
				cat "$f" >/dev/null
			done
		) &
	done
	"$bin" gc --store "$work/b" --max-size 1M >/dev/null &
	wait
	ops=$((ops + 4 * 120))
	echo new >"$work/m2/new"
	"$bin" umount "$work/m2"
done

# The client suites through the TSan binary.
suites=(tests/clients/npm-like.sh tests/clients/uv-like.sh)
if [[ -x tests/remote-e2e/cold-runner.sh ]]; then
	suites+=("tests/remote-e2e/cold-runner.sh")
fi
for s in "${suites[@]}"; do
	if [[ $s == *cold-runner.sh ]]; then
		bash "$s" "$bin" file >"$logs/$(basename "$s").out" 2>&1 || {
			echo "tsan-stress: $s failed under TSan (see below)"
			tail -20 "$logs/$(basename "$s").out"
			exit 1
		}
	else
		bash "$s" "$bin" >"$logs/$(basename "$s").out" 2>&1 || {
			echo "tsan-stress: $s failed under TSan (see below)"
			tail -20 "$logs/$(basename "$s").out"
			exit 1
		}
	fi
done

reports=$(cat "$logs"/tsan* 2>/dev/null | grep -c "WARNING: ThreadSanitizer" || true)
echo "tsan: rounds=$rounds ops=$ops suites=${#suites[@]} reports=$reports"
if ((reports > 0)); then
	cat "$logs"/tsan* | grep -A40 "WARNING: ThreadSanitizer" | head -200
	exit 1
fi
