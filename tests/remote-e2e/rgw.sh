#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The S3 backend against a real S3 that checks signatures: Ceph's RADOS Gateway (Debian 12's
# radosgw, started by tests/remote/rgw.sh on loopback with a memstore OSD). s3rver accepts any
# signature; radosgw verifies SigV4, the payload hash, the session token, and paginates
# ListObjectsV2 at 1,000 keys. Checked:
#   - test_remote's S3 conformance, concurrency and 1,005-key listing against radosgw (signed
#     GET/PUT/HEAD/DELETE, ranged reads, ListObjectsV2 continuation tokens), and that the listing
#     took more than one page at the server;
#   - a host mounts, writes 70 packages and a 48 MiB file, unmounts (the push); a fresh host reads
#     them back byte for byte;
#   - temporary credentials from STS GetSessionToken (key id, secret, AWS_SESSION_TOKEN): a fresh
#     host reads everything; the same keys without the token, and a wrong secret, are refused by
#     name (mount exits non-zero naming the credentials).
# Opt-in (suite rgw): installing Ceph takes minutes and bring-up about 15-30 s; see
# docs/operations.md. Prints the figures under "---- rgw figures".
#
# usage: rgw.sh PKGCACHEFS_BINARY [TEST_REMOTE_BINARY]
. "$(dirname "$0")/e2e-lib.sh"
[ "${PKGCACHEFS_TEST_RGW:-}" = 1 ] ||
	skip "opt-in: PKGCACHEFS_TEST_RGW=1 meson test --suite rgw (needs: apt-get install -y radosgw ceph-mon ceph-osd ceph-common)"
e2e_init "$1"
TEST_REMOTE=${2:-}
RGW_SH=$E2E_DIR/../remote/rgw.sh
RG=$TMP/rgw
t0=$(now_ms)
bash "$RGW_SH" start "$RG" >"$TMP/rgw-start.log" 2>&1
rc=$?
if [ $rc != 0 ]; then
	cat "$TMP/rgw-start.log" >&2
	bash "$RGW_SH" stop "$RG" >/dev/null 2>&1
	[ $rc = 77 ] && skip "radosgw cannot run here (see above)"
	fail "rgw.sh start failed"
fi
trap 'e2e_cleanup_rgw' EXIT
e2e_cleanup_rgw() {
	local rc=$?
	# umount's push needs radosgw: unmount first, then stop the cluster.
	for entry in "${PCF_MOUNTS[@]}"; do
		is_mounted "${entry#*|}" && timeout 60 "$BIN" umount "${entry#*|}" >/dev/null 2>&1
	done
	bash "$RGW_SH" stop "$RG" >/dev/null 2>&1
	(exit $rc)
	e2e_cleanup
}
set -a
. "$RG/env"
set +a
bringup_ms=$RGW_BRINGUP_MS
log "radosgw up in $(secs "$bringup_ms") s"
url_of() { echo "${RGW_URL/\/prefix\?//$1?}"; }
N=70

# 1. The backend's own conformance tests, signed for real.
t1=$(now_ms)
if [ -n "$TEST_REMOTE" ]; then
	for t in conformance concurrent list_pages; do
		mark=$(log_mark "$RGW_ACCESS_LOG")
		PKGCACHEFS_TEST_S3_URL=$RGW_URL "$TEST_REMOTE" --filter "remote_s3/$t" >"$TMP/tr-$t.log" 2>&1 ||
			fail "test_remote remote_s3/$t against radosgw: $(tail -20 "$TMP/tr-$t.log")"
		grep -q 'Synthesis: Tested: 1 | Passing: 1' "$TMP/tr-$t.log" ||
			fail "test_remote remote_s3/$t did not run and pass: $(tail -5 "$TMP/tr-$t.log")"
	done
	pages=$(log_since "$RGW_ACCESS_LOG" "$mark" | awk '$1 == "GET" && $2 == "/pkgcache" && $3 == 200' | wc -l)
	# list_pages (the last) lists 1,005 keys under one prefix: radosgw pages at 1,000.
	[ "$pages" = 2 ] || fail "the 1,005-key listing took $pages ListObjectsV2 pages at radosgw, not 2"
	log "test_remote remote_s3 conformance, concurrent, list_pages: pass (1,005 keys listed in $pages pages)"
else
	log "SKIP (no test_remote binary given: conformance not run)"
fi
conf_ms=$(($(now_ms) - t1))

# 2. Push from one host, a fresh host reads everything back.
"$PY" - "$TMP/expect" "$N" <<'PYEOF' || fail "writing packages failed"
import os, random, sys
d, n = sys.argv[1], int(sys.argv[2])
os.makedirs(d, exist_ok=True)
for i in range(n):
    rnd = random.Random(i)
    with open(os.path.join(d, "pkg-%02d.whl" % i), "wb") as f:
        f.write(rnd.randbytes(rnd.randrange(20000, 200000)))
PYEOF
write_random "$TMP/expect/big.tar" $((48 << 20)) big
(cd "$TMP/expect" && sha256sum -- *) >"$TMP/expect.sums"
read_back() {
	(cd "$1/wheels" 2>/dev/null && sha256sum -c "$TMP/expect.sums" 2>/dev/null) | grep -c ': OK$'
}
url=$(url_of team)
t2=$(now_ms)
mount_fg "$TMP/a" "$TMP/ma" "$TMP/a.log" --remote "$url" || fail "mount on radosgw failed ($FG_RC): $(tail -3 "$TMP/a.log")"
cp -r "$TMP/expect" "$TMP/ma/wheels" || fail "writing into the mount failed"
out=$("$BIN" umount --require-push "$TMP/ma" 2>&1) || fail "umount (push to radosgw) failed: $out"
wait "$FG_PID" 2>/dev/null
push_ms=$(($(now_ms) - t2))
if grep -Ei 'warn|error|unreachable|fail' "$TMP/a.log"; then fail "the first host warned (log $TMP/a.log)"; fi
t3=$(now_ms)
mount_fg "$TMP/b" "$TMP/mb" "$TMP/b.log" --remote "$url" || fail "fresh host's mount failed: $(tail -3 "$TMP/b.log")"
got=$(read_back "$TMP/mb")
"$BIN" umount "$TMP/mb" >/dev/null 2>&1
wait "$FG_PID" 2>/dev/null
read_ms=$(($(now_ms) - t3))
[ "$got" = $((N + 1)) ] || fail "a fresh host read $got of $((N + 1)) files back from radosgw"
log "push and fresh read: $got of $((N + 1)) byte-identical"

# 3. Credentials: a wrong secret is refused by name; temporary credentials with a session token
# work, and are refused without their token.
refused() { # what store env...: the mount fails naming the credentials and the session token
	local what=$1 store=$2 out
	shift 2
	out=$(env "$@" timeout 60 "$BIN" mount --store "$store" --remote "$url" "$TMP/mbad" 2>&1) && {
		"$BIN" umount "$TMP/mbad"
		fail "$what: the mount came up"
	}
	case $out in
	*"refused the credentials"*AWS_SECRET_ACCESS_KEY*AWS_SESSION_TOKEN*) ;;
	*) fail "$what: the refusal does not name the credentials: $out" ;;
	esac
	log "$what: refused: $out"
}
mkdir -p "$TMP/mbad"
refused "wrong secret" "$TMP/bad1" AWS_SECRET_ACCESS_KEY=wrong"$AWS_SECRET_ACCESS_KEY"
mapfile -t tmp < <(bash "$RGW_SH" session-token "$RG") || fail "GetSessionToken failed"
[ "${#tmp[@]}" = 3 ] && [ -n "${tmp[2]}" ] || fail "GetSessionToken gave no credentials: ${tmp[*]}"
refused "temporary keys without their session token" "$TMP/bad2" \
	AWS_ACCESS_KEY_ID="${tmp[0]}" AWS_SECRET_ACCESS_KEY="${tmp[1]}"
refused "temporary keys with a wrong session token" "$TMP/bad3" \
	AWS_ACCESS_KEY_ID="${tmp[0]}" AWS_SECRET_ACCESS_KEY="${tmp[1]}" AWS_SESSION_TOKEN="x${tmp[2]}"
AWS_ACCESS_KEY_ID=${tmp[0]} AWS_SECRET_ACCESS_KEY=${tmp[1]} AWS_SESSION_TOKEN=${tmp[2]} \
	mount_fg "$TMP/c" "$TMP/mc" "$TMP/c.log" --remote "$url" ||
	fail "mount with a session token failed: $(tail -3 "$TMP/c.log")"
got=$(read_back "$TMP/mc")
echo more >"$TMP/mc/with-token" || fail "writing with a session token failed"
out=$("$BIN" umount --require-push "$TMP/mc" 2>&1) || fail "push with a session token failed: $out"
wait "$FG_PID" 2>/dev/null
[ "$got" = $((N + 1)) ] || fail "a host with a session token read $got of $((N + 1))"
log "session token: $got of $((N + 1)) read, push accepted"

# 4. A large pack upload whose connection drops half-way: the push retries, completes, and a
# fresh host reads the bytes. dropproxy.py sits between the daemon and the logging proxy and
# cuts the first PUT of a pack after 4 MiB of it.
"$PY" "$E2E_DIR/dropproxy.py" --target "${RGW_ENDPOINT#http://}" --port-file "$TMP/drop.port" \
	--log "$TMP/drop.log" --after $((4 << 20)) &
drop_pid=$!
E2E_FG_PIDS+=($drop_pid)
for i in $(seq 50); do [ -s "$TMP/drop.port" ] && break; sleep 0.1; done
[ -s "$TMP/drop.port" ] || fail "dropproxy.py did not start"
durl="s3://pkgcache/drop?endpoint=http://127.0.0.1:$(cat "$TMP/drop.port")&region=us-east-1"
write_random "$TMP/drop.bin" $((40 << 20)) drop
mark=$(log_mark "$RGW_ACCESS_LOG")
t4=$(now_ms)
mount_fg "$TMP/d" "$TMP/md" "$TMP/d.log" --remote "$durl" || fail "mount through dropproxy failed: $(tail -3 "$TMP/d.log")"
cp "$TMP/drop.bin" "$TMP/md/drop.bin" || fail "writing into the mount failed"
out=$("$BIN" umount --require-push "$TMP/md" 2>&1) || fail "the push with a dropped connection failed: $out ($(tail -3 "$TMP/d.log"))"
wait "$FG_PID" 2>/dev/null
drop_ms=$(($(now_ms) - t4))
grep -q '^dropped PUT' "$TMP/drop.log" 2>/dev/null || fail "no pack upload was cut: the check proved nothing"
log "$(cat "$TMP/drop.log")"
log_since "$RGW_ACCESS_LOG" "$mark" | awk '$1 == "PUT" && $2 ~ /\/packs\//' >"$TMP/drop-puts"
log "pack PUTs at the server after the drop: $(awk '{ printf "%s %s B; ", $3, $5 }' "$TMP/drop-puts")"
cut=$(sed -n 's/^dropped PUT \([^ ]*\) .*/\1/p' "$TMP/drop.log")
awk -v p="$cut" '$2 == p && $3 == 200' "$TMP/drop-puts" | grep -q . ||
	fail "the cut pack $cut was not uploaded again (200) after the drop"
mount_fg "$TMP/e2" "$TMP/me2" "$TMP/e2.log" --remote "$durl" || fail "fresh mount after the drop failed"
cmp -s "$TMP/drop.bin" "$TMP/me2/drop.bin" || fail "a fresh host read other bytes after the dropped upload"
"$BIN" umount "$TMP/me2" >/dev/null 2>&1
wait "$FG_PID" 2>/dev/null
kill "$drop_pid" 2>/dev/null
log "dropped connection: the push retried and a fresh host reads the 40 MiB byte for byte"

echo "---- rgw figures"
echo "radosgw bring-up (mon + memstore OSD + radosgw + user + bucket): $(secs "$bringup_ms") s"
echo "test_remote remote_s3 against radosgw: $(secs "$conf_ms") s"
echo "push of $N packages + 48 MiB: $(secs "$push_ms") s; fresh host mount + read: $(secs "$read_ms") s"
echo "push of 40 MiB with one connection dropped after 4 MiB: $(secs "$drop_ms") s"
echo "whole script: $(secs $(($(now_ms) - t0))) s"
log "rgw: all pass"
