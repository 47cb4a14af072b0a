#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The servers people run, configured by docs/recipes/servers/ as written (started by
# tests/remote/real-servers.sh): for each WebDAV server (nginx with dav-ext, nginx with HTML
# autoindex only, Apache mod_dav, rclone serve webdav, all with Basic auth from ~/.netrc) a host
# mounts, writes 70 "packages" and unmounts (the push); a fresh host mounts the same URL and reads
# them; fresh -o no_push hosts read them from the same directory served by static nginx and by
# python3 -m http.server, and must not warn. Then what must fail loudly: a wrong password, and a
# writable mount against a read-only server (its push is refused, says why, the data stays).
# Prints for each server "N of 70 from the cache".
#
# usage: real-servers.sh PKGCACHEFS_BINARY
. "$(dirname "$0")/e2e-lib.sh"
e2e_init "$1"
REAL_SH=$E2E_DIR/../remote/real-servers.sh
RS=$TMP/rs
# Apache runs as www-data: it must reach its directory below $TMP.
chmod 755 "$TMP"
bash "$REAL_SH" start "$RS" >"$TMP/real-servers.log" 2>&1
rc=$?
if [ $rc != 0 ]; then
	cat "$TMP/real-servers.log" >&2
	bash "$REAL_SH" stop "$RS" >/dev/null 2>&1
	[ $rc = 77 ] && skip "the servers cannot run here (see above)"
	fail "real-servers.sh start failed"
fi
trap 'bash "$REAL_SH" stop "$RS" >/dev/null 2>&1; e2e_cleanup' EXIT
set -a
. "$RS/env"
set +a
# curl reads the servers' credentials from ~/.netrc.
export HOME=$REAL_NETRC_HOME
N=70

# make_packages DIR: N files of 20-200 KB, deterministic.
make_packages() {
	"$PY" - "$1" "$N" <<'EOF' || fail "writing packages failed"
import os, random, sys
d, n = sys.argv[1], int(sys.argv[2])
os.makedirs(d, exist_ok=True)
for i in range(n):
    rnd = random.Random(i)
    with open(os.path.join(d, "pkg-%02d.whl" % i), "wb") as f:
        f.write(rnd.randbytes(rnd.randrange(20000, 200000)))
EOF
}
make_packages "$TMP/expect"
(cd "$TMP/expect" && sha256sum -- *) >"$TMP/expect.sums"

# read_back MNT: how many of the N packages MNT serves with the right bytes.
read_back() {
	(cd "$1/wheels" 2>/dev/null && sha256sum -c "$TMP/expect.sums" 2>/dev/null) | grep -c ': OK$'
}

# no_warnings LOG: fail when the daemon's log has a warning or an error line.
no_warnings() {
	if grep -Ei 'warn|error|unreachable|fail' "$1"; then
		fail "$2: the mount warned (above; log $1)"
	fi
}

summary=()
for srv in davext html apache rclone; do
	case $srv in
	davext) base=$NGINX_DAVEXT_URL name="nginx dav + dav-ext PROPFIND" ;;
	html) base=$NGINX_HTML_URL name="nginx dav + HTML autoindex" ;;
	apache) base=$APACHE_URL name="Apache httpd mod_dav" ;;
	rclone) base=$RCLONE_URL name="rclone serve webdav" ;;
	esac
	url=${base}team/cache/
	log "$name: push through $url"
	mount_fg "$TMP/$srv-a" "$TMP/$srv-ma" "$TMP/$srv-a.log" --remote "$url" ||
		fail "$name: mount failed ($FG_RC): $(tail -3 "$TMP/$srv-a.log")"
	no_warnings "$TMP/$srv-a.log" "$name, first host"
	cp -r "$TMP/expect" "$TMP/$srv-ma/wheels" || fail "$name: writing into the mount failed"
	out=$("$BIN" umount "$TMP/$srv-ma" 2>&1) || fail "$name: umount failed: $out"
	wait "$FG_PID" 2>/dev/null
	no_warnings "$TMP/$srv-a.log" "$name, first host's push"
	[ -f "$REAL_DATA/$srv/team/cache/config" ] ||
		fail "$name: no config object on the server after the push"

	mount_fg "$TMP/$srv-b" "$TMP/$srv-mb" "$TMP/$srv-b.log" --remote "$url" ||
		fail "$name: fresh host's mount failed: $(tail -3 "$TMP/$srv-b.log")"
	got=$(read_back "$TMP/$srv-mb")
	"$BIN" umount "$TMP/$srv-mb" >/dev/null 2>&1
	wait "$FG_PID" 2>/dev/null
	no_warnings "$TMP/$srv-b.log" "$name, fresh host"
	[ "$got" = "$N" ] || fail "$name: a fresh host read $got of $N packages"

	row="$name: $got of $N from the cache over WebDAV"
	for st in nginx python; do
		case $st in
		nginx) surl=${STATIC_URL}$srv/team/cache/ ;;
		python) surl=${PYSTATIC_URL}$srv/team/cache/ ;;
		esac
		mount_fg "$TMP/$srv-$st" "$TMP/$srv-m$st" "$TMP/$srv-$st.log" -o no_push \
			--remote "$surl" || fail "$name via static $st: mount failed: $(tail -3 "$TMP/$srv-$st.log")"
		got=$(read_back "$TMP/$srv-m$st")
		"$BIN" umount "$TMP/$srv-m$st" >/dev/null 2>&1
		wait "$FG_PID" 2>/dev/null
		no_warnings "$TMP/$srv-$st.log" "$name via static $st"
		[ "$got" = "$N" ] || fail "$name via static $st: a no_push host read $got of $N"
		row="$row, $got of $N via static $st"
	done
	summary+=("$row")
done

# A wrong password: the mount exits non-zero and names the credentials.
mkdir -p "$TMP/badnetrc" "$TMP/mbad"
printf 'machine 127.0.0.1 login pkg password wrong\n' >"$TMP/badnetrc/.netrc"
chmod 600 "$TMP/badnetrc/.netrc"
for base in "$NGINX_DAVEXT_URL" "$APACHE_URL" "$RCLONE_URL"; do
	out=$(HOME=$TMP/badnetrc timeout 60 "$BIN" mount --store "$TMP/bad" --remote "${base}team/cache/" \
		"$TMP/mbad" 2>&1) && { "$BIN" umount "$TMP/mbad"; fail "$base: a wrong password mounted"; }
	case $out in
	*credentials*netrc*) ;;
	*) fail "$base, wrong password: the message does not name the credentials: $out" ;;
	esac
	rm -rf "$TMP/bad"
done
log "wrong password: refused by name on nginx, Apache and rclone"

# A writable mount against a read-only server: the mount comes up (what was pushed is
# readable), the push at unmount is refused by the server, umount says why (the status and what
# to change), the data stays for the next push; with --require-push umount exits 3.
for strict in "" --require-push; do
	rm -rf "$TMP/ro"
	mount_fg "$TMP/ro" "$TMP/ro-m" "$TMP/ro.log" --remote "${STATIC_URL}davext/team/cache/" ||
		fail "writable mount against the static server did not come up: $(tail -3 "$TMP/ro.log")"
	echo "new" >"$TMP/ro-m/new-file"
	out=$("$BIN" umount $strict "$TMP/ro-m" 2>&1)
	rc=$?
	wait "$FG_PID" 2>/dev/null
	log "umount $strict against a read-only server: exit $rc: $out"
	case $out in
	*"HTTP 405"*"enable WebDAV"*no_push*"pkgcachefs push --store"*) ;;
	*) fail "the refused push does not say the server answered 405 and what to change: $out" ;;
	esac
	if [ -n "$strict" ]; then
		[ $rc = 3 ] || fail "umount --require-push after a refused push exited $rc, not 3"
	else
		[ $rc = 0 ] || fail "umount after a refused push exited $rc: the data is safe, 0 expected"
	fi
	[ -f "$TMP/ro/push-failed" ] || fail "no push-failed left in the store"
done
printf '%s\n' "${summary[@]}"
log "real servers: all pass"
