#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Secrets never leave their place: with S3 credentials that carry a unique marker (s3rver accepts
# any signature for key id S3RVER, so the secret and the token can be anything), mount with debug
# logging, write, push, unmount, mount cold and read, and fail if the marker shows up anywhere a
# user or another process could see it: the daemon's and the CLI's output and logs, the daemon's
# argv (/proc/PID/cmdline), the store's files (config, index, remote-stats), or the remote's
# objects. Also refused: a password in an http:// URL, whose error must not echo it.
#
# usage: secrets.sh PKGCACHEFS_BINARY
. "$(dirname "$0")/e2e-lib.sh"
e2e_init "$1"
e2e_servers || { [ $? = 77 ] && skip "the S3 test server cannot run here"; fail "servers.sh start failed"; }

marker="pcfsecret$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY="$marker-key" AWS_SESSION_TOKEN="$marker-token"
url=$(remote_url s3 secrets)
out=$TMP/out.log

mount_fg "$TMP/a" "$TMP/m" "$TMP/daemon-a.log" -d --remote "$url" ||
	fail "mount failed: $(tail -5 "$TMP/daemon-a.log")"
tr '\0' ' ' <"/proc/$FG_PID/cmdline" >"$TMP/cmdline"
write_random "$TMP/m/pkg.whl" 3000000 secrets
"$BIN" push --store "$TMP/a" >>"$out" 2>&1 || fail "push failed: $(cat "$out")"
"$BIN" stats --store "$TMP/a" >>"$out" 2>&1
"$BIN" umount "$TMP/m" >>"$out" 2>&1 || fail "umount failed"
wait "$FG_PID" 2>/dev/null

mount_fg "$TMP/b" "$TMP/m2" "$TMP/daemon-b.log" -d --remote "$url" || fail "cold mount failed"
sha_a=$(write_random "$TMP/expect" 3000000 secrets && sha256sum <"$TMP/expect")
sha_b=$(sha256sum <"$TMP/m2/pkg.whl")
[ "$sha_a" = "$sha_b" ] || fail "the cold host read other bytes"
"$BIN" umount "$TMP/m2" >>"$out" 2>&1 || fail "umount of the cold host failed"
wait "$FG_PID" 2>/dev/null

# The daemons logged at debug level: the requests went out (the log is not empty of them).
grep -qi "remote\|push" "$TMP/daemon-a.log" || fail "the daemon log says nothing: the check would prove nothing"

hits=$(grep -rl -- "$marker" "$out" "$TMP/daemon-a.log" "$TMP/daemon-b.log" "$TMP/cmdline" \
	"$TMP/a" "$TMP/b" "$(remote_dir s3 secrets)" "$SRV" 2>/dev/null |
	grep -v "^$SRV/env$" || true)
[ -z "$hits" ] || fail "the secret marker appears in: $hits"

# A password in an http:// URL is refused, and the message does not repeat it.
unset AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN
msg=$("$BIN" remote --store "$TMP/c" "http://user:$marker-pw@127.0.0.1:1/x" 2>&1) &&
	fail "a password in the URL was accepted"
case $msg in
*"$marker"*) fail "the refusal repeats the password: $msg" ;;
*netrc*) ;;
*) fail "the refusal does not say where credentials go: $msg" ;;
esac
log "secrets: marker absent from logs, argv, stores and remote objects; URL password refused"
