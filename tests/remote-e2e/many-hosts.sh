#!/bin/bash
# SPDX-License-Identifier: MIT
# Many hosts sharing one remote at once.
#
# For WebDAV and file://: three stores mount the same remote at the same time.  Each host writes
# files of its own (one of several chunks, small ones, one that all hosts write with identical
# bytes under their own name, so their pushes race to upload the same chunks) and then one path
# all hosts share, with different content, one host after the other in a known order (1.1 s
# apart).  The three then unmount at once: three pushes in parallel.  A fourth host with a fresh
# store mounts the remote and must see exactly the union of every file written (sha256 of every
# byte, read from the remote), with the shared path holding the version written last.  This
# is repeated for three rounds on the same remote and the same three stores: each round the
# hosts remount (and must first see the previous round's union), add files, and rewrite the
# shared path in another order.
#
# Figures printed per round: time of the three parallel unmounts (pushes), cold mount time of
# the fourth host, files and bytes it read, and the bytes it downloaded.
#
# usage: many-hosts.sh PKGCACHEFS_BINARY [webdav|file|all]
set -u -o pipefail
. "$(dirname "$0")/e2e-lib.sh"
e2e_init "${1:-}"
case ${2:-all} in
all) TYPES="webdav file" ;;
webdav | file) TYPES=$2 ;;
*) fail "usage: $0 PKGCACHEFS_BINARY [webdav|file|all]" ;;
esac
ROUNDS=${MANY_HOSTS_ROUNDS:-3}

SERVERS_OK=1
if [ "$TYPES" != file ]; then
	e2e_servers
	case $? in
	0) ;;
	77) SERVERS_OK=0 ;;
	*) fail "servers.sh start failed (log above)" ;;
	esac
fi

declare -a SUMMARY=()

# put HOST REL SRC: writes SRC into host HOST's mount at REL and into the expected tree.
put() {
	local h=$1 rel=$2 src=$3
	mkdir -p "$(dirname "$MNTS/$h/$rel")" "$(dirname "$EXPECT/$rel")"
	cp "$src" "$MNTS/$h/$rel" || fail "host $h: writing $rel failed"
	cp "$src" "$EXPECT/$rel"
}

# check_tree MNT WHAT: MNT holds exactly the expected files, byte for byte.
check_tree() {
	local mnt=$1 what=$2
	sums_of "$EXPECT" >"$WORK/expect.sums"
	sums_of "$mnt" >"$WORK/got.sums" || fail "$what: reading the tree on $mnt failed (an EIO?)"
	if ! diff -u "$WORK/expect.sums" "$WORK/got.sums" >"$WORK/tree.diff"; then
		head -n 40 "$WORK/tree.diff" >&2
		fail "$what: the tree differs from the union of what the hosts wrote (diff above:" \
			"- expected, + seen)"
	fi
}

run_type() {
	local t=$1 r round h i order last t0 ms n alog mark down mount_ms nfiles nbytes rc
	WORK=$TMP/$t
	MNTS=$WORK/mnt
	EXPECT=$WORK/expect
	mkdir -p "$WORK/src" "$EXPECT"
	r=$(remote_url "$t" many)
	alog=$(access_log "$t")
	log "== $t: remote $r, $ROUNDS rounds"
	for round in $(seq "$ROUNDS"); do
		for h in 1 2 3; do
			pcf_mount "$WORK/store$h" "$MNTS/$h" --remote "$r" -o push_interval=0
		done
		if [ "$round" -gt 1 ]; then
			for h in 1 2 3; do
				check_tree "$MNTS/$h" "$t round $round: host $h after its mount"
			done
			log "$t round $round: the three hosts see round $((round - 1))'s union after mounting"
		fi
		# Files of each host's own; copy.bin has the same bytes on every host.
		write_random "$WORK/src/copy" $((1024 * 1024 + round)) "copy-$round"
		for h in 1 2 3; do
			write_random "$WORK/src/big" $((2 * 1024 * 1024 + 4096 * h)) "big-$round-$h"
			write_random "$WORK/src/mid" $((300000 + h)) "mid-$round-$h"
			for i in $(seq 200); do echo "round $round host $h line $i"; done >"$WORK/src/small"
			put "$h" "r$round/h$h/big.bin" "$WORK/src/big"
			put "$h" "r$round/h$h/mid.bin" "$WORK/src/mid"
			put "$h" "r$round/h$h/notes.txt" "$WORK/src/small"
			put "$h" "r$round/h$h/copy.bin" "$WORK/src/copy"
			# Overwrite something of an earlier round in place, as a cache entry refresh does.
			if [ "$round" -gt 1 ]; then
				write_random "$WORK/src/re" 50000 "rewrite-$round-$h"
				put "$h" "r$((round - 1))/h$h/mid.bin" "$WORK/src/re"
			fi
		done
		# The shared path, written by each host in turn; the order turns every round.
		case $((round % 3)) in
		1) order="1 2 3" ;;
		2) order="3 1 2" ;;
		0) order="2 3 1" ;;
		esac
		for h in $order; do
			{
				echo "shared path: round $round, written by host $h"
				head -c 100000 /dev/urandom | base64
			} >"$WORK/src/shared"
			put "$h" shared/state.txt "$WORK/src/shared"
			last=$h
			sleep 1.1
		done
		# Three pushes at once.
		t0=$(now_ms)
		declare -a pids=()
		for h in 1 2 3; do
			timeout "$PCF_TIMEOUT" "$BIN" umount "$MNTS/$h" >"$WORK/umount-$round-$h.log" 2>&1 &
			pids[$h]=$!
		done
		for h in 1 2 3; do
			wait "${pids[$h]}"
			rc=$?
			[ $rc = 0 ] || { cat "$WORK/umount-$round-$h.log" >&2; fail "$t round $round: umount of host $h exited $rc"; }
		done
		ms=$(($(now_ms) - t0))
		for h in 1 2 3; do
			pcf_wait_daemon_exit "$WORK/store$h"
			[ "$(stat_of "$WORK/store$h" request_failures)" = 0 ] ||
				log "note: host $h counted $(stat_of "$WORK/store$h" request_failures) failed requests"
		done
		# A fourth host, cold.
		mark=$(log_mark "$alog")
		rm -rf "$WORK/store4"
		t0=$(now_ms)
		pcf_mount "$WORK/store4" "$MNTS/4" --remote "$r" -o no_push
		mount_ms=$(($(now_ms) - t0))
		check_tree "$MNTS/4" "$t round $round: fresh host"
		head -n 1 "$MNTS/4/shared/state.txt" | grep -qx "shared path: round $round, written by host $last" ||
			fail "$t round $round: shared/state.txt holds '$(head -n 1 "$MNTS/4/shared/state.txt")'," \
				"not host $last's version (written last)"
		nfiles=$(find "$EXPECT" -type f | wc -l)
		nbytes=$(find "$EXPECT" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
		pcf_umount "$MNTS/4"
		pcf_wait_daemon_exit "$WORK/store4"
		pcf_fsck "$WORK/store4" "$t round $round: fresh host"
		if [ "$t" = file ]; then
			down=$(stat_of "$WORK/store4" fetch_wire_bytes)
		else
			down=$(log_since "$alog" "$mark" | pack_get_bytes)
		fi
		log "$t round $round: 3 parallel umounts (pushes) $(secs $ms) s; fresh host: mount" \
			"$(secs $mount_ms) s, $nfiles files ($nbytes bytes) all right, downloaded $down bytes;" \
			"shared path = host $last's"
		SUMMARY+=("$(printf '%-7s round %d  parallel pushes %6s s  fresh mount %6s s  files %3d  bytes %9d  downloaded %9d' \
			"$t" "$round" "$(secs $ms)" "$(secs $mount_ms)" "$nfiles" "$nbytes" "$down")")
	done
	for h in 1 2 3; do
		pcf_fsck "$WORK/store$h" "$t: host $h after $ROUNDS rounds"
	done
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
echo "---- many-hosts figures"
for l in "${SUMMARY[@]}"; do echo "$l"; done
[ ${#SUMMARY[@]} -gt 0 ] || skip "no remote type could run:$skipped"
echo "PASS: many-hosts ($TYPES${skipped:+; skipped:$skipped})"
