#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Observability on a real mount: reads move the per-directory counters of `pkgcachefs stats`
# (local, fetched from a file:// remote, failed) while mounted, seen from another process; the
# counters survive unmount and add up across mounts; --json and --prometheus agree; the
# metrics file of -o metrics_file is rewritten while mounted and says "not mounted" after; a
# foreground daemon logs the mount, one line per push and pull, and the unmount on stderr.
#   tests/clients/stats.sh build/pkgcachefs
set -u
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
pcf_init "${1:-}"

S=$TMP/store
M=$TMP/mnt
R=$TMP/remote
mkdir -p "$R"

# json STORE EXPR: evaluates EXPR (Python) on the stats JSON as d, with top(name) a row.
json() {
	local store=$1 expr=$2
	timeout "$PCF_TIMEOUT" "$BIN" stats --store "$store" --json |
		"$PY" -c '
import json, sys
d = json.load(sys.stdin)
rows = {r["name"]: r for r in d["top_level"]}
def top(n):
    return rows.get(n, {"files": 0, "reads_local": 0, "reads_fetched": 0, "reads_failed": 0,
                        "read_bytes_local": 0, "read_bytes_fetched": 0, "unique_bytes": 0,
                        "logical_bytes": 0, "saved_bytes": 0})
print(eval(sys.argv[1]))' "$expr"
}

# wait_for STORE EXPR: until EXPR is True (the daemon writes its counters every second or so).
wait_for() {
	local i
	for i in $(seq 50); do
		[ "$(json "$1" "$2")" = True ] && return 0
		sleep 0.2
	done
	return 1
}

# 1. Write under pip/ and npm/ (the same wheel twice in pip, other data in npm and in a pip file
#    nobody reads, so that no prefetch brings them), remount so that the kernel's page cache is
#    cold, then read pip's copy.
pcf_mount "$S" "$M" --remote "file://$R" -o push_interval=0
mkdir -p "$M/pip/http" "$M/npm/_cacache"
head -c 3000000 /dev/urandom >"$TMP/wheel"
cp "$TMP/wheel" "$M/pip/http/a.whl"
cp "$TMP/wheel" "$M/pip/b.whl"
head -c 2000000 /dev/urandom >"$TMP/tgz"
head -c 1000000 /dev/urandom >"$TMP/unread"
cp "$TMP/tgz" "$M/npm/_cacache/c.tgz"
cp "$TMP/unread" "$M/pip/unread.whl"
pcf_umount "$M"
pcf_wait_daemon_exit "$S"
[ "$(json "$S" 'top("pip")["files"] == 3 and top("npm")["files"] == 1')" = True ] ||
	fail "per-directory files wrong: $(json "$S" 'd["top_level"]')"
[ "$(json "$S" 'top("pip")["logical_bytes"] == 7000000 and top("pip")["saved_bytes"] == 3000000')" = True ] ||
	fail "pip's logical or saved bytes wrong: $(json "$S" 'top("pip")')"
[ "$(json "$S" 'top("npm")["unique_bytes"] == 2000000 and top("npm")["saved_bytes"] == 0')" = True ] ||
	fail "npm's unique or saved bytes wrong: $(json "$S" 'top("npm")')"
before=$(json "$S" 'top("pip")["reads_local"]')

pcf_mount "$S" "$M" --remote "file://$R" -o push_interval=0,metrics_file=$TMP/pcf.prom,metrics_interval=1
cmp "$TMP/wheel" "$M/pip/http/a.whl" || fail "pip/http/a.whl reads back wrong"
wait_for "$S" "top('pip')['reads_local'] > $before and top('pip')['read_bytes_local'] >= 3000000" ||
	fail "reading pip/http/a.whl did not move pip's local read counters while mounted: $(json "$S" 'top("pip")')"
[ "$(json "$S" 'd["mounted"] and top("npm")["reads_local"] == 0 and d["reads_failed"] == 0')" = True ] ||
	fail "a read of pip's file counted elsewhere: $(json "$S" 'd["top_level"]')"
log "live stats: pip $(json "$S" 'top("pip")["reads_local"]') local reads"
prom=$(timeout "$PCF_TIMEOUT" "$BIN" stats --store "$S" --prometheus) || fail "stats --prometheus failed"
grep -qE '^pkgcachefs_reads_total\{store="[^"]+",dir="pip",source="local"\} [1-9]' <<<"$prom" ||
	fail "stats --prometheus lacks pip's local reads: $(grep reads_total <<<"$prom")"
grep -q '^pkgcachefs_dir_files{store="[^"]*",dir="npm"} 1$' <<<"$prom" ||
	fail "stats --prometheus lacks npm's file count"
grep -q '^# TYPE pkgcachefs_reads_total counter$' <<<"$prom" || fail "no TYPE line for reads_total"
# The metrics file, rewritten every second while mounted.
for _ in $(seq 50); do
	grep -qE 'dir="pip",source="local"\} [1-9]' "$TMP/pcf.prom" 2>/dev/null && break
	sleep 0.2
done
grep -q '^pkgcachefs_mounted{store="[^"]*"} 1$' "$TMP/pcf.prom" ||
	fail "metrics file missing or not saying mounted: $(head -5 "$TMP/pcf.prom" 2>&1)"
grep -qE 'dir="pip",source="local"\} [1-9]' "$TMP/pcf.prom" ||
	fail "metrics file lacks pip's reads"
pcf_umount "$M"
pcf_wait_daemon_exit "$S"
grep -q '^pkgcachefs_mounted{store="[^"]*"} 0$' "$TMP/pcf.prom" ||
	fail "the metrics file does not say unmounted after umount"
after=$(json "$S" 'top("pip")["reads_local"]')
[ "$after" -gt "$before" ] || fail "the counters did not survive unmount ($before -> $after)"
log "after umount: pip $after local reads (was $before before this mount)"

# 2. A fresh store on the same remote: the read fetches, and counts as fetched, under npm.
S2=$TMP/store2
pcf_mount "$S2" "$M" --remote "file://$R" -o push_interval=0
cmp "$TMP/tgz" "$M/npm/_cacache/c.tgz" || fail "npm/_cacache/c.tgz reads back wrong from the remote"
wait_for "$S2" "top('npm')['reads_fetched'] > 0 and top('npm')['read_bytes_fetched'] > 0" ||
	fail "a read of remote-only data did not count as fetched: $(json "$S2" 'top("npm")')"
# 3. The remote gone: a read of data only there fails, and counts as failed.
mv "$R" "$R.gone"
if cat "$M/pip/unread.whl" >/dev/null 2>&1; then
	fail "reading remote-only data with the remote gone succeeded"
fi
wait_for "$S2" "top('pip')['reads_failed'] > 0" ||
	fail "a failed read did not count as failed: $(json "$S2" 'top("pip")')"
mv "$R.gone" "$R"
pcf_umount "$M"
pcf_wait_daemon_exit "$S2"
log "fresh store: npm fetched $(json "$S2" 'top("npm")["reads_fetched"]'), pip failed $(json "$S2" 'top("pip")["reads_failed"]')"

# 4. The log of a foreground daemon: mount, the pull at mount, a push, unmount; one line each.
mkdir -p "$M"
PCF_MOUNTS+=("$S|$M")
"$BIN" mount -f --store "$S" --remote "file://$R" -o push_interval=0,log_level=info "$M" \
	2>"$TMP/daemon.log" &
fg=$!
for _ in $(seq 100); do is_mounted "$M" && break; sleep 0.1; done
is_mounted "$M" || fail "mount -f did not mount: $(cat "$TMP/daemon.log")"
echo new >"$M/pip/new.txt"
pcf_umount "$M"
wait "$fg" || fail "mount -f exited $?: $(cat "$TMP/daemon.log")"
for want in 'info: pull from file://' 'info: mounted store' 'info: unmounted' 'info: push: 1 changed' \
	'(at unmount,'; do
	grep -qF -- "$want" "$TMP/daemon.log" ||
		fail "the foreground log lacks '$want':$(printf '\n%s' "$(cat "$TMP/daemon.log")")"
done
[ "$(grep -c 'push:' "$TMP/daemon.log")" = 1 ] || fail "not one line per push: $(cat "$TMP/daemon.log")"
log "foreground log: $(wc -l <"$TMP/daemon.log") lines"
echo "PASS: stats"
