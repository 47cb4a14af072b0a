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
#     name (mount exits non-zero naming the credentials);
#   - STS AssumeRole (radosgw's STS: rgw_sts_key and rgw_s3_auth_use_sts in tests/remote/rgw.sh's
#     ceph.conf): user ci, which may do nothing by itself, assumes role pcf-cache (trust and
#     permission policies docs/recipes/servers/s3-role-*.json: s3:* on the bucket). With the
#     role's key id, secret and AWS_SESSION_TOKEN a host pushes 70 packages and `pkgcachefs pull`
#     brings them back byte for byte (every request, ListObjectsV2 included, accepted with the
#     token). Refused as credentials, never as an outage: ci's own keys, the role's keys without
#     the token, with one character of it changed (radosgw: 400 InvalidArgument) and with a
#     forged one;
#   - a bucket policy (docs/recipes/servers/s3-read-only-bucket-policy.json as written:
#     s3:GetObject and s3:ListBucket on the bucket for user reader, set by PutBucketPolicy):
#     reader is refused before it; with it, a -o no_push mount reads all 71 files byte for byte
#     without a warning; a writable mount's push is refused with HTTP 403 (AccessDenied) and a
#     message naming the credentials and read-only access, umount --require-push exits 3, no PUT
#     is accepted, and the data stays in the store: the owner's `pkgcachefs push` of that store
#     sends it and a fresh host reads it.
# Opt-in (suite rgw): installing Ceph takes minutes, bring-up about 15-30 s, the script 75-80 s; see
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
refused() { # what store env...: the mount of $rurl (else $url) fails naming the credentials
	local what=$1 store=$2 out
	shift 2
	out=$(env "$@" timeout 60 "$BIN" mount --store "$store" --remote "${rurl:-$url}" "$TMP/mbad" 2>&1) && {
		"$BIN" umount "$TMP/mbad"
		fail "$what: the mount came up"
	}
	case $out in
	*unreachable*) fail "$what: refused as an outage: $out" ;;
	*"refused the credentials"*AWS_SECRET_ACCESS_KEY*AWS_SESSION_TOKEN*) ;;
	*) fail "$what: the refusal does not name the credentials: $out" ;;
	esac
	log "$what: refused: ${out%%; the server refused*}"
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

# 5. STS AssumeRole: user ci may do nothing by itself; the role pcf-cache it assumes may do s3:*
# on the bucket (docs/recipes/servers/s3-role-*.json). Its temporary keys and token push and
# pull; without the token, or with it garbled, they are refused as credentials.
t5=$(now_ms)
mapfile -t role < <(bash "$RGW_SH" assume-role "$RG") || fail "AssumeRole failed"
[ "${#role[@]}" = 3 ] && [ -n "${role[2]}" ] || fail "AssumeRole gave no credentials: ${role[*]}"
. "$RG/ci.env"
rurl=$(url_of sts)
refused "user ci's own keys (no policy: only the role may)" "$TMP/r0" \
	AWS_ACCESS_KEY_ID="$CI_ACCESS_KEY_ID" AWS_SECRET_ACCESS_KEY="$CI_SECRET_ACCESS_KEY"
refused "the role's keys without their session token" "$TMP/r1" \
	AWS_ACCESS_KEY_ID="${role[0]}" AWS_SECRET_ACCESS_KEY="${role[1]}"
tok=${role[2]}
mid=$((${#tok} / 2))
[ "${tok:$mid:1}" = A ] && flip=B || flip=A
refused "the role's keys with one character of the token changed" "$TMP/r2" \
	AWS_ACCESS_KEY_ID="${role[0]}" AWS_SECRET_ACCESS_KEY="${role[1]}" \
	AWS_SESSION_TOKEN="${tok:0:$mid}$flip${tok:$((mid + 1))}"
refused "the role's keys with a forged token" "$TMP/r3" \
	AWS_ACCESS_KEY_ID="${role[0]}" AWS_SECRET_ACCESS_KEY="${role[1]}" \
	AWS_SESSION_TOKEN="$(head -c 300 /dev/urandom | base64 -w0)"
mkdir -p "$TMP/role-expect"
cp "$TMP"/expect/pkg-*.whl "$TMP/role-expect/"
(cd "$TMP/role-expect" && sha256sum -- *) >"$TMP/role.sums"
# Prefix assignments, not env(1): they also reach mount_fg, a function, and its daemon.
with_role() { AWS_ACCESS_KEY_ID=${role[0]} AWS_SECRET_ACCESS_KEY=${role[1]} AWS_SESSION_TOKEN=${role[2]} "$@"; }
mark=$(log_mark "$RGW_ACCESS_LOG")
with_role mount_fg "$TMP/r4" "$TMP/mr4" "$TMP/r4.log" --remote "$rurl" ||
	fail "mount with the role's credentials failed: $(tail -3 "$TMP/r4.log")"
cp -r "$TMP/role-expect" "$TMP/mr4/wheels" || fail "writing into the role's mount failed"
out=$(with_role "$BIN" umount --require-push "$TMP/mr4" 2>&1) || fail "push with the role's credentials failed: $out"
wait "$FG_PID" 2>/dev/null
if grep -Ei 'warn|error|unreachable|fail' "$TMP/r4.log"; then fail "the role's host warned (log $TMP/r4.log)"; fi
out=$(with_role timeout 120 "$BIN" pull --store "$TMP/r5" --remote "$rurl" 2>&1) ||
	fail "pull with the role's credentials failed: $out"
log "pull with the role's credentials: $(echo "$out" | tr '\n' ' ')"
log_since "$RGW_ACCESS_LOG" "$mark" >"$TMP/role-reqs"
awk '$1 == "GET" && $2 == "/pkgcache" && $3 == 200' "$TMP/role-reqs" | grep -q . ||
	fail "no ListObjectsV2 was answered 200 with the role's token: the listing was not checked"
! awk '$3 == 400 || $3 == 403' "$TMP/role-reqs" | grep . || fail "requests with the role's token were refused"
mount_fg "$TMP/r5" "$TMP/mr5" "$TMP/r5.log" --remote none || fail "offline mount of the pulled store failed"
got=$( (cd "$TMP/mr5/wheels" && sha256sum -c "$TMP/role.sums" 2>/dev/null) | grep -c ': OK$')
"$BIN" umount "$TMP/mr5" >/dev/null 2>&1
wait "$FG_PID" 2>/dev/null
[ "$got" = "$N" ] || fail "the store pulled with the role's token holds $got of $N files byte for byte"
role_ms=$(($(now_ms) - t5))
log "AssumeRole: pushed $N packages, pulled them back ($got of $N byte-identical, offline), $(wc -l <"$TMP/role-reqs") requests with the token"
unset rurl

# 6. A bucket policy giving user reader read-only access to the bucket
# (docs/recipes/servers/s3-read-only-bucket-policy.json): before it, reader is refused; with
# it, a no_push mount reads everything the first host pushed; a writable mount's push is refused
# with 403 and keeps the data, which a push by the owner then sends.
t6=$(now_ms)
mapfile -t rd < <(bash "$RGW_SH" user "$RG" reader) || fail "creating user reader failed"
with_reader() { AWS_ACCESS_KEY_ID=${rd[0]} AWS_SECRET_ACCESS_KEY=${rd[1]} "$@"; }
refused "user reader before the bucket policy" "$TMP/p0" \
	AWS_ACCESS_KEY_ID="${rd[0]}" AWS_SECRET_ACCESS_KEY="${rd[1]}"
bash "$RGW_SH" bucket-policy "$RG" "$E2E_DIR/../../docs/recipes/servers/s3-read-only-bucket-policy.json" ||
	fail "PutBucketPolicy failed"
with_reader mount_fg "$TMP/p1" "$TMP/mp1" "$TMP/p1.log" -o no_push --remote "$url" ||
	fail "reader's no_push mount failed: $(tail -3 "$TMP/p1.log")"
got=$(read_back "$TMP/mp1")
"$BIN" umount "$TMP/mp1" >/dev/null 2>&1
wait "$FG_PID" 2>/dev/null
[ "$got" = $((N + 1)) ] || fail "reader read $got of $((N + 1)) files back under the bucket policy"
if grep -Ei 'warn|error|unreachable|fail' "$TMP/p1.log"; then fail "reader's no_push mount warned (log $TMP/p1.log)"; fi
log "read-only bucket policy: reader's no_push mount read $got of $((N + 1)) byte-identical"
write_random "$TMP/reader.bin" 300000 reader
mark=$(log_mark "$RGW_ACCESS_LOG")
with_reader mount_fg "$TMP/p2" "$TMP/mp2" "$TMP/p2.log" --remote "$url" ||
	fail "reader's writable mount failed: $(tail -3 "$TMP/p2.log")"
cp "$TMP/reader.bin" "$TMP/mp2/from-reader.bin" || fail "writing into reader's mount failed"
out=$(with_reader "$BIN" umount --require-push "$TMP/mp2" 2>&1)
rc=$?
wait "$FG_PID" 2>/dev/null
[ $rc = 3 ] || fail "reader's umount --require-push exited $rc, not 3 (push failed): $out"
case $out in
*unreachable*) fail "reader's refused push reads as an outage: $out" ;;
*"HTTP 403 (AccessDenied)"*"refused the credentials"*"may only read"*no_push*) ;;
*) fail "reader's refused push does not say why: $out" ;;
esac
log "reader's push (umount --require-push, exit $rc): $out"
! log_since "$RGW_ACCESS_LOG" "$mark" | awk '$1 == "PUT" && $3 == 200' | grep . ||
	fail "a PUT by reader was accepted"
unpushed=$("$BIN" stats --store "$TMP/p2" 2>/dev/null | sed -n 's/^not pushed: *//p')
case $unpushed in
"" | "0 B") fail "after the refused push, the store says nothing is left to push ($unpushed)" ;;
esac
out=$(timeout 120 "$BIN" push --store "$TMP/p2" 2>&1) || fail "the owner's push of reader's store failed: $out"
log "the owner pushes what reader could not ($unpushed): $out"
mount_fg "$TMP/p3" "$TMP/mp3" "$TMP/p3.log" -o no_push --remote "$url" || fail "fresh mount after the owner's push failed"
cmp -s "$TMP/reader.bin" "$TMP/mp3/from-reader.bin" || fail "a fresh host read other bytes for the file reader wrote"
"$BIN" umount "$TMP/mp3" >/dev/null 2>&1
wait "$FG_PID" 2>/dev/null
policy_ms=$(($(now_ms) - t6))
log "the data stayed local and reached the remote with the next push; a fresh host reads it byte for byte"

echo "---- rgw figures"
echo "radosgw bring-up (mon + memstore OSD + radosgw + user + bucket): $(secs "$bringup_ms") s"
echo "test_remote remote_s3 against radosgw: $(secs "$conf_ms") s"
echo "push of $N packages + 48 MiB: $(secs "$push_ms") s; fresh host mount + read: $(secs "$read_ms") s"
echo "push of 40 MiB with one connection dropped after 4 MiB: $(secs "$drop_ms") s"
echo "AssumeRole refusals, push and pull of $N packages with the role's token: $(secs "$role_ms") s"
echo "bucket policy: refusal, read-only read of $((N + 1)) files, refused push, owner's push: $(secs "$policy_ms") s"
echo "whole script: $(secs $(($(now_ms) - t0))) s"
log "rgw: all pass"
