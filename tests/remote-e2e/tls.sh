#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# HTTPS remotes with a private CA and client certificates, against nginx configured by
# docs/recipes/servers/nginx-webdav-tls.conf as written (only its directory, port and file
# paths change), with a CA, a server certificate and a client certificate made here by openssl:
#   - without the CA, mount refuses (a configuration error, not an outage) and says to give
#     ca_file; a CA that did not sign the server is refused the same way;
#   - -o ca_file=PATH mounts, and the push at unmount goes through;
#   - `pkgcachefs remote --ca-file PATH URL` records the CA: pull, then a mount without options
#     read the files back byte for byte;
#   - the mTLS server (ssl_verify_client on): no client certificate gets the 400 and the hint to
#     give one, a certificate without its key is refused before any request, the wrong key is
#     refused by name, cert + key mount, read and push;
#   - rclone serve webdav (docs/recipes/servers/rclone-webdav.service's ExecStart, with the
#     --cert and --key its comment names): without the CA refused; with it, a push that a fresh
#     host reads back.
#   - Apache httpd with mod_ssl, configured by docs/recipes/servers/apache-webdav-tls.conf as
#     written (mTLS: SSLVerifyClient require) and without its two client-certificate lines (TLS +
#     Basic auth): without the CA refused; with it, a push that a fresh host reads back; on the
#     mTLS site no client certificate is refused (Apache ends the handshake with an alert, which
#     is configuration, not an outage), cert + key read what was pushed and push again.
#
# usage: tls.sh PKGCACHEFS_BINARY
. "$(dirname "$0")/e2e-lib.sh"
e2e_init "$1"
recipe=$E2E_DIR/../../docs/recipes/servers/nginx-webdav-tls.conf
davext_so=/usr/lib/nginx/modules/ngx_http_dav_ext_module.so
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$nginx_bin" ] || skip "nginx is missing: install nginx-light (tools/install-deps.sh --test)"
[ -f "$davext_so" ] || skip "nginx's dav-ext module is missing: install libnginx-mod-http-dav-ext"
command -v openssl >/dev/null || skip "openssl is missing"

T=$TMP/tls
mkdir -p "$T/data" "$T/tmp"
chmod 755 "$TMP"

log "a private CA, a server certificate for 127.0.0.1 and a runner's client certificate"
cert() { # NAME CA SUBJECT [EXTFILE]
	openssl req -newkey rsa:2048 -nodes -keyout "$T/$1.key" -out "$T/$1.csr" -subj "$3" \
		2>>"$T/openssl.log" &&
		openssl x509 -req -in "$T/$1.csr" -CA "$T/$2.pem" -CAkey "$T/$2.key" \
			-CAcreateserial -out "$T/$1.pem" -days 2 ${4:+-extfile "$4"} 2>>"$T/openssl.log" ||
		fail "openssl could not make $1 (see $T/openssl.log)"
}
for ca in ca otherca; do
	openssl req -x509 -newkey rsa:2048 -nodes -keyout "$T/$ca.key" -out "$T/$ca.pem" -days 2 \
		-subj "/CN=pkgcachefs test $ca" 2>>"$T/openssl.log" || fail "openssl could not make $ca"
done
printf 'subjectAltName=IP:127.0.0.1\n' >"$T/san.ext"
cert server ca "/CN=127.0.0.1" "$T/san.ext"
cert runner ca "/CN=runner-1"
cert stranger otherca "/CN=stranger"
cp "$T/ca.pem" "$T/clients-ca.pem"

pass=$(openssl rand -hex 12)
echo "pkg:$(openssl passwd -apr1 "$pass")" >"$T/htpasswd"
printf 'machine 127.0.0.1 login pkg password %s\n' "$pass" >"$T/.netrc"
chmod 600 "$T/.netrc"
export HOME=$T

port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
P_TLS=$(port)
P_MTLS=$(port)
# The recipe as written (mTLS) and without its two client-certificate lines (TLS + Basic auth).
site() { sed -e "s|/srv/pkgcache|$T/data|g" -e "s|127\.0\.0\.1:8443|127.0.0.1:$1|g" \
	-e "s|/etc/pkgcachefs/tls/|$T/|g" -e "s|/etc/pkgcachefs/htpasswd|$T/htpasswd|g" "$recipe"; }
site "$P_MTLS" >"$T/mtls.site"
site "$P_TLS" | sed -e '/ssl_client_certificate/d' -e '/ssl_verify_client/d' >"$T/tls.site"
grep -q 'ssl_verify_client on' "$T/mtls.site" || fail "the recipe has no ssl_verify_client line"
cat >"$T/nginx.conf" <<EOF
load_module $davext_so;
$([ "$(id -u)" = 0 ] && echo "user root;")
worker_processes 1;
daemon on;
pid $T/nginx.pid;
error_log $T/error.log warn;
events { worker_connections 256; }
http {
	default_type application/octet-stream;
	client_body_temp_path $T/tmp/body;
	proxy_temp_path $T/tmp/proxy;
	fastcgi_temp_path $T/tmp/fastcgi;
	uwsgi_temp_path $T/tmp/uwsgi;
	scgi_temp_path $T/tmp/scgi;
	include $T/tls.site;
	include $T/mtls.site;
}
EOF
"$nginx_bin" -p "$T" -e "$T/error.log" -c "$T/nginx.conf" || fail "nginx did not start: $(cat "$T/error.log")"
trap '[ -f "$T/nginx.pid" ] && kill -QUIT "$(cat "$T/nginx.pid")" 2>/dev/null; e2e_cleanup' EXIT
for p in $P_TLS $P_MTLS; do
	for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.1; done
done
URL=https://127.0.0.1:$P_TLS/pkgcache/team/
MURL=https://127.0.0.1:$P_MTLS/pkgcache/team/

mkdir -p "$TMP/expect"
for i in $(seq 20); do write_random "$TMP/expect/pkg-$i.whl" $((20000 + i * 3000)) "$i"; done
expect=$(sums_of "$TMP/expect")

# refused WHAT MUST_MATCH STORE ARGS...: a mount -f that must exit non-zero before mounting,
# saying MUST_MATCH.
refused() {
	local what=$1 want=$2 store=$3 mnt=$TMP/refused
	shift 3
	if mount_fg "$store" "$mnt" "$TMP/refused.log" "$@"; then
		fail "$what: the mount came up"
	fi
	[ "$FG_RC" != 0 ] || fail "$what: mount exited 0"
	grep -q -- "$want" "$TMP/refused.log" ||
		fail "$what: the message does not say '$want': $(tail -2 "$TMP/refused.log")"
	log "$what: refused, exit $FG_RC: $(grep -o -- "$want.\{0,60\}" "$TMP/refused.log" | head -1)"
	: >"$TMP/refused.log"
}

# push_and_read_back WHAT URL OPTS A B [CONFIG]: host A (store $TMP/A) mounts URL with -o OPTS,
# writes the 20 files and pushes them at `umount --require-push`; then host B, a fresh store,
# mounts the same way and must read the same bytes. CONFIG: a file the push must have made.
push_and_read_back() {
	local what=$1 url=$2 opts=$3 a=$4 b=$5 config=${6:-} out
	mount_fg "$TMP/$a" "$TMP/m$a" "$TMP/$a.log" --remote "$url" -o "$opts" ||
		fail "$what: mount failed ($FG_RC): $(tail -3 "$TMP/$a.log")"
	cp -r "$TMP/expect" "$TMP/m$a/wheels"
	out=$("$BIN" umount --require-push "$TMP/m$a" 2>&1) || fail "$what: umount (push) failed: $out"
	wait "$FG_PID" 2>/dev/null
	[ -z "$config" ] || [ -f "$config" ] || fail "$what: no config object after the push"
	mount_fg "$TMP/$b" "$TMP/m$b" "$TMP/$b.log" --remote "$url" -o "$opts" ||
		fail "$what: fresh host's mount failed: $(tail -3 "$TMP/$b.log")"
	[ "$(sums_of "$TMP/m$b/wheels")" = "$expect" ] || fail "$what: the fresh host reads other bytes"
	"$BIN" umount "$TMP/m$b" >/dev/null 2>&1
}

refused "no CA given" "ca_file=PATH" "$TMP/a" --remote "$URL"
out=$("$BIN" remote --store "$TMP/a")
[ "$out" = "(none)" ] || fail "a refused remote was recorded as the store's: $out"
refused "a CA that did not sign the server" "certificate is not trusted" "$TMP/a" \
	--remote "$URL" -o "ca_file=$T/otherca.pem"
refused "a CA file that is not there" "No such file" "$TMP/a" --remote "$URL" \
	-o "ca_file=$T/nothere.pem"

log "host A: -o ca_file, writes 20 files, unmount pushes"
mount_fg "$TMP/a" "$TMP/ma" "$TMP/a.log" --remote "$URL" -o "ca_file=$T/ca.pem" ||
	fail "mount with ca_file failed ($FG_RC): $(tail -3 "$TMP/a.log")"
cp -r "$TMP/expect" "$TMP/ma/wheels"
out=$("$BIN" umount --require-push "$TMP/ma" 2>&1) || fail "umount (push) failed: $out"
wait "$FG_PID" 2>/dev/null
[ -f "$T/data/team/config" ] || fail "no config object on the server after the push"
out=$("$BIN" remote --store "$TMP/a")
[ "$out" = "$URL
ca_file $T/ca.pem" ] || fail "the store did not record the CA it was mounted with: $out"

log "host B: pkgcachefs remote --ca-file, pull, then a mount with no option"
"$BIN" remote --store "$TMP/b" --ca-file "$T/ca.pem" "$URL" || fail "remote --ca-file failed"
"$BIN" pull --store "$TMP/b" >"$TMP/b-pull.log" 2>&1 || fail "pull failed: $(cat "$TMP/b-pull.log")"
mount_fg "$TMP/b" "$TMP/mb" "$TMP/b.log" || fail "mount of B failed: $(tail -3 "$TMP/b.log")"
[ "$(sums_of "$TMP/mb/wheels")" = "$expect" ] || fail "host B reads other bytes than A wrote"
"$BIN" umount "$TMP/mb" >/dev/null 2>&1
log "host B: 20 of 20 files identical through HTTPS with the recorded CA"

log "mTLS server"
refused "no client certificate" "client_cert and client_key" "$TMP/c" --remote "$MURL" \
	-o "ca_file=$T/ca.pem"
refused "a certificate without its key" "needs its key" "$TMP/c" --remote "$MURL" \
	-o "ca_file=$T/ca.pem,client_cert=$T/runner.pem"
refused "the wrong key" "key file cannot be used" "$TMP/c" --remote "$MURL" \
	-o "ca_file=$T/ca.pem,client_cert=$T/runner.pem,client_key=$T/server.key"
mount_fg "$TMP/c" "$TMP/mc" "$TMP/c.log" --remote "$MURL" \
	-o "ca_file=$T/ca.pem,client_cert=$T/runner.pem,client_key=$T/runner.key" ||
	fail "mount with a client certificate failed ($FG_RC): $(tail -3 "$TMP/c.log")"
[ "$(sums_of "$TMP/mc/wheels")" = "$expect" ] || fail "the mTLS host reads other bytes"
echo "from C" >"$TMP/mc/c.txt"
out=$("$BIN" umount --require-push "$TMP/mc" 2>&1) || fail "umount (push through mTLS) failed: $out"
wait "$FG_PID" 2>/dev/null
"$BIN" pull --store "$TMP/b" >/dev/null 2>&1 || fail "B's second pull failed"
mount_fg "$TMP/b" "$TMP/mb" "$TMP/b.log" || fail "mount of B failed again"
[ "$(cat "$TMP/mb/c.txt" 2>/dev/null)" = "from C" ] || fail "what C pushed through mTLS is not on B"
"$BIN" umount "$TMP/mb" >/dev/null 2>&1
log "mTLS: read 20 of 20, pushed 1 file that B then read"

# rclone over HTTPS: the unit's ExecStart as written, with the --cert and --key its comment names.
if command -v rclone >/dev/null; then
	P_RCLONE=$(port)
	mkdir -p "$T/rclone-data"
	exec_start=$(sed -n 's/^ExecStart=//p' "$E2E_DIR/../../docs/recipes/servers/rclone-webdav.service" |
		sed -e "s|/srv/pkgcache|$T/rclone-data|g" -e "s|127\.0\.0\.1:8080|127.0.0.1:$P_RCLONE|g" \
			-e "s|/etc/pkgcachefs/htpasswd|$T/htpasswd|g")
	# shellcheck disable=SC2086
	$exec_start --cert "$T/server.pem" --key "$T/server.key" --log-file "$T/rclone.log" &
	PCF_BG_PIDS+=($!)
	for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$P_RCLONE") 2>/dev/null && break; sleep 0.1; done
	RURL=https://127.0.0.1:$P_RCLONE/pkgcache/team/
	refused "rclone: no CA given" "ca_file=PATH" "$TMP/d" --remote "$RURL"
	push_and_read_back rclone "$RURL" "ca_file=$T/ca.pem" d e
	log "rclone serve webdav over HTTPS: 20 of 20 pushed and read back by a fresh host"
else
	log "rclone is not installed: its HTTPS run is left out (tools/install-deps.sh --test)"
fi
# Apache over HTTPS: the TLS recipe as written (mTLS) and without its client-certificate lines.
apache_bin=$(command -v apache2 || echo /usr/sbin/apache2)
if [ -x "$apache_bin" ] && [ "$(id -u)" = 0 ] && [ -f /usr/lib/apache2/modules/mod_ssl.so ]; then
	P_A_TLS=$(port)
	P_A_MTLS=$(port)
	mkdir -p "$T/apache-run" "$T/apache-lock" "$T/apache-tls" "$T/apache-mtls"
	# Apache refuses to run as root: its user must own what it writes.
	chown www-data:www-data "$T/apache-lock" "$T/apache-tls" "$T/apache-mtls"
	asite() { # PORT DATA
		sed -e "s|/srv/pkgcache|$2|g" -e "s|127\.0\.0\.1:8443|127.0.0.1:$1|g" \
			-e "s|/etc/pkgcachefs/tls/|$T/|g" -e "s|/etc/pkgcachefs/htpasswd|$T/htpasswd|g" \
			"$E2E_DIR/../../docs/recipes/servers/apache-webdav-tls.conf"
	}
	asite "$P_A_MTLS" "$T/apache-mtls" >"$T/apache-mtls.site"
	grep -q '^[[:space:]]*SSLVerifyClient require' "$T/apache-mtls.site" ||
		fail "the Apache TLS recipe has no SSLVerifyClient line"
	asite "$P_A_TLS" "$T/apache-tls" | sed -e '/SSLCACertificateFile/d' -e '/SSLVerifyClient/d' \
		>"$T/apache-tls.site"
	{
		echo "ServerRoot $T"
		echo "ServerName 127.0.0.1"
		echo "DefaultRuntimeDir $T/apache-run"
		echo "PidFile $T/apache.pid"
		echo "Listen 127.0.0.1:$P_A_TLS"
		echo "Listen 127.0.0.1:$P_A_MTLS"
		for m in mpm_event authz_core authn_core authn_file auth_basic authz_user alias \
			autoindex dav dav_fs socache_shmcb ssl; do
			echo "LoadModule ${m}_module /usr/lib/apache2/modules/mod_$m.so"
		done
		echo "User www-data"
		echo "Group www-data"
		echo "ErrorLog $T/apache.error.log"
		echo "LogFormat \"%m %U %>s %B\" req"
		echo "CustomLog $T/apache.access.log req"
		echo "DavLockDB $T/apache-lock/DavLock"
		echo "SSLSessionCache shmcb:$T/apache-run/ssl_scache(512000)"
		echo "Include $T/apache-tls.site"
		echo "Include $T/apache-mtls.site"
	} >"$T/apache.conf"
	"$apache_bin" -f "$T/apache.conf" -k start ||
		fail "apache2 did not start: $(tail -5 "$T/apache.error.log" 2>/dev/null)"
	trap '[ -f "$T/nginx.pid" ] && kill -QUIT "$(cat "$T/nginx.pid")" 2>/dev/null
		[ -f "$T/apache.pid" ] && kill -TERM "$(cat "$T/apache.pid")" 2>/dev/null
		e2e_cleanup' EXIT
	for p in $P_A_TLS $P_A_MTLS; do
		for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.1; done
	done
	AURL=https://127.0.0.1:$P_A_TLS/pkgcache/team/
	AMURL=https://127.0.0.1:$P_A_MTLS/pkgcache/team/

	refused "Apache: no CA given" "ca_file=PATH" "$TMP/f" --remote "$AURL"
	push_and_read_back Apache "$AURL" "ca_file=$T/ca.pem" f g "$T/apache-tls/team/config"
	log "Apache mod_ssl: 20 of 20 pushed and read back by a fresh host"

	refused "Apache mTLS: no client certificate" "client_cert=PATH,client_key=PATH" "$TMP/h" \
		--remote "$AMURL" -o "ca_file=$T/ca.pem"
	refused "Apache mTLS: a certificate the clients' CA did not sign" "refused this client" \
		"$TMP/h" --remote "$AMURL" \
		-o "ca_file=$T/ca.pem,client_cert=$T/stranger.pem,client_key=$T/stranger.key"
	push_and_read_back "Apache mTLS" "$AMURL" \
		"ca_file=$T/ca.pem,client_cert=$T/runner.pem,client_key=$T/runner.key" h i
	log "Apache mod_ssl with SSLVerifyClient require: 20 of 20 pushed and read back"
elif [ "$(id -u)" != 0 ]; then
	log "not root: the Apache HTTPS run is left out (Apache's workers run as www-data)"
else
	log "apache2 or mod_ssl is not installed: its HTTPS run is left out (tools/install-deps.sh --test)"
fi
log "PASS"
