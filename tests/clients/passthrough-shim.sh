#!/bin/bash
# SPDX-License-Identifier: MIT
# A stand-in for pkgcachefs that keeps its CLI contract on top of libfuse's passthrough_ll
# example (built on first use from /usr/share/doc/libfuse3-dev/examples, needs libfuse3-dev).
# It is not part of any test: it exists to check the client tests themselves against a
# filesystem known to be correct (files stored as is in STORE/data).  Every client test passes
# on it except pip's dedup check on stats, as it stores no chunk twice by not chunking at all.
#
#   tests/clients/crash.sh tests/clients/passthrough-shim.sh
set -u
cmd=${1:-}
shift
store= mnt= opts=
while [ $# -gt 0 ]; do
	case $1 in
	--store) store=$2; shift 2;;
	-o) opts=$2; shift 2;;
	-f|--json) shift;;
	*) mnt=$1; shift;;
	esac
done

PT=${PASSTHROUGH_LL:-/tmp/pcf-passthrough-shim/passthrough_ll}
if [ ! -x "$PT" ]; then
	ex=/usr/share/doc/libfuse3-dev/examples
	mkdir -p "$(dirname "$PT")"
	cp "$ex/passthrough_ll.c" "$ex/passthrough_helpers.h" "$(dirname "$PT")/" &&
		cc -O2 -o "$PT.tmp" "$(dirname "$PT")/passthrough_ll.c" $(pkg-config --cflags --libs fuse3) &&
		mv "$PT.tmp" "$PT" || { echo "cannot build passthrough_ll" >&2; exit 1; }
fi

case $cmd in
mount)
	mkdir -p "$store/data" || exit 1
	o="source=$(realpath "$store/data"),xattr,flock,cache=auto${opts:+,$opts}"
	setsid "$PT" -f -o "$o" "$mnt" </dev/null >/dev/null 2>>"$store/daemon.log" &
	echo $! >"$store/daemon.pid"
	m=$(realpath "$mnt")
	for _ in $(seq 100); do
		awk -v m="$m" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo && exit 0
		sleep 0.05
	done
	exit 1;;
umount)
	sync && fusermount3 -u "$mnt";;
fsck)
	[ -d "$store/data" ];;
gc)
	[ -d "$store/data" ];;
stats)
	files=$(find "$store/data" -type f | wc -l)
	bytes=$(du -sb --apparent-size "$store/data" | cut -f1)
	echo "{\"files\": $files, \"logical_bytes\": $bytes, \"stored_bytes\": $bytes}";;
*)
	echo "usage: $0 mount|umount|fsck|gc|stats ..." >&2
	exit 2;;
esac
