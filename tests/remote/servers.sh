#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Test servers for the remote backends, all on 127.0.0.1 with free ports, all state inside DIR:
#
#   servers.sh start DIR            start everything, write DIR/env (shell assignments)
#   servers.sh stop DIR             stop exactly the processes start started
#   servers.sh kill-webdav DIR      stop the WebDAV nginx at once (fault tests)
#   servers.sh restart-webdav DIR   start it again on the same port
#   servers.sh kill-s3 DIR | restart-s3 DIR    the same for s3rver (its proxy stays up)
#
# What runs:
#   - nginx (nginx-light: its dav module) serving DIR/webdav at $WEBDAV_URL (PUT DELETE MKCOL, full
#     put paths, JSON autoindex for listings; nginx has no PROPFIND, so the client's autoindex
#     fallback is what gets tested), the same tree rate-limited at $WEBDAV_SLOW_URL, and a
#     location that always answers 503 with Retry-After: 1 at $FAULT503_URL;
#   - s3rver (npm, installed once into $PKGCACHEFS_NPM_PREFIX, default /var/tmp/pkgcachefs-npm)
#     with bucket "pkgcache", behind a second nginx acting as reverse proxy: $S3_URL points at
#     the proxy;
#   - a python3 stdlib server at $FLAKY_URL that answers each path's first request 503 with
#     Retry-After: 1 and the next ones 200, and at $STRICT_DAV_URL a WebDAV store in memory that
#     answers PUT 409 until MKCOL created the parent collection (as Apache mod_dav; nginx answers
#     500 there), and at $NORANGE_URL objects served whole with 200 whatever the Range header
#     asks (as python's http.server).
# Both nginx write access logs as "$request_method $uri $status $bytes_sent $request_length", so
# tests can count at the server the bytes a client moved ($WEBDAV_ACCESS_LOG, $S3_ACCESS_LOG).
#
# What s3rver 3.7.1 does NOT check (lib/middleware/authentication.js), so passing against it
# proves nothing about these; the SigV4 code is checked by the published vectors in
# tests/test_sigv4.c instead:
#   - the SigV4 signature itself: "Signature version 4 calculation is unimplemented"; any
#     well-formed Authorization header whose access key id is S3RVER is accepted;
#   - the credential scope (date, region, service) and SignedHeaders are not verified;
#   - x-amz-content-sha256 must be present and look like a hash, but is not compared with the
#     body; x-amz-security-token is ignored;
#   - requests without any Authorization header are accepted as anonymous.
# Also: its ListObjectsV2 continuation tokens need DES, so node runs with
# --openssl-legacy-provider, else every truncated listing is an HTTP 500.
# It does check: the Authorization header's shape (three components), the access key id, and that
# x-amz-date is within 15 minutes of its clock.
#
# Exit status 77 (skip) when nginx, node, npm or python3 is missing or s3rver cannot be
# installed, saying why.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
npm_prefix=${PKGCACHEFS_NPM_PREFIX:-/var/tmp/pkgcachefs-npm}
s3rver_version=3.7.1

die() { echo "servers.sh: $*" >&2; exit 1; }
skip() { echo "servers.sh: SKIP: $*" >&2; exit 77; }

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() { # port seconds
	local i
	for ((i = 0; i < $2 * 10; i++)); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	return 1
}

wait_gone() { # pid
	local i
	for ((i = 0; i < 100; i++)); do
		kill -0 "$1" 2>/dev/null || return 0
		sleep 0.1
	done
	return 1
}

check_tools() {
	command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] ||
		skip "nginx is missing: install nginx-light (tools/install-deps.sh --test)"
	command -v node >/dev/null || skip "node is missing: install nodejs and npm"
	command -v npm >/dev/null || skip "npm is missing: install npm"
	command -v python3 >/dev/null || skip "python3 is missing"
}

nginx_bin() { command -v nginx || echo /usr/sbin/nginx; }

ensure_s3rver() {
	local bin=$npm_prefix/node_modules/s3rver/bin/s3rver.js
	[[ -f $bin ]] && return 0
	mkdir -p "$npm_prefix"
	(
		flock 9
		[[ -f $bin ]] && exit 0
		echo "servers.sh: installing s3rver $s3rver_version into $npm_prefix" >&2
		npm install --prefix "$npm_prefix" --no-audit --no-fund --loglevel=error \
			"s3rver@$s3rver_version" >&2
	) 9>"$npm_prefix/.lock" || skip "npm could not install s3rver into $npm_prefix"
	[[ -f $bin ]] || skip "s3rver is not at $bin after npm install"
}

write_nginx_common() { # conf pidname logname
	local user_line=""
	[[ $(id -u) -eq 0 ]] && user_line="user root;"
	cat >"$1" <<EOF
$user_line
worker_processes 1;
daemon on;
pid $dir/$2.pid;
error_log $dir/$2.error.log warn;
events { worker_connections 256; }
http {
	default_type application/octet-stream;
	log_format bytes '\$request_method \$uri \$status \$bytes_sent \$request_length';
	access_log $dir/$3 bytes;
	client_body_temp_path $dir/tmp/$2-body;
	proxy_temp_path $dir/tmp/$2-proxy;
	fastcgi_temp_path $dir/tmp/$2-fastcgi;
	uwsgi_temp_path $dir/tmp/$2-uwsgi;
	scgi_temp_path $dir/tmp/$2-scgi;
	client_max_body_size 0;
	keepalive_requests 10000;
EOF
}

start_webdav() {
	"$(nginx_bin)" -p "$dir" -e "$dir/nginx-dav.error.log" -c "$dir/nginx-dav.conf" ||
		die "nginx (WebDAV) did not start: see $dir/nginx-dav.error.log"
	wait_port "$WEBDAV_PORT" 10 || die "nginx (WebDAV) does not listen on $WEBDAV_PORT"
}

start_s3rver() {
	# s3rver's continuation tokens use DES, which OpenSSL 3 (node >= 17) only has in its legacy
	# provider: without it every truncated listing is a 500.
	local legacy=()
	node --openssl-legacy-provider -e 0 2>/dev/null && legacy=(--openssl-legacy-provider)
	node "${legacy[@]}" "$npm_prefix/node_modules/s3rver/bin/s3rver.js" -d "$dir/s3data" -a 127.0.0.1 \
		-p "$S3RVER_PORT" --silent --configure-bucket pkgcache >"$dir/s3rver.log" 2>&1 &
	echo $! >"$dir/s3rver.pid"
	wait_port "$S3RVER_PORT" 30 || die "s3rver does not listen on $S3RVER_PORT: see $dir/s3rver.log"
}

load_state() {
	[[ -f $dir/ports ]] || die "no servers started in $dir"
	# shellcheck disable=SC1091
	. "$dir/ports"
}

cmd_start() {
	check_tools
	ensure_s3rver
	mkdir -p "$dir/webdav" "$dir/s3data" "$dir/tmp"
	WEBDAV_PORT=$(free_port)
	S3_PORT=$(free_port)
	S3RVER_PORT=$(free_port)
	FLAKY_PORT=$(free_port)
	cat >"$dir/ports" <<EOF
WEBDAV_PORT=$WEBDAV_PORT
S3_PORT=$S3_PORT
S3RVER_PORT=$S3RVER_PORT
FLAKY_PORT=$FLAKY_PORT
EOF

	write_nginx_common "$dir/nginx-dav.conf" nginx-dav webdav.access.log
	cat >>"$dir/nginx-dav.conf" <<EOF
	server {
		listen 127.0.0.1:$WEBDAV_PORT;
		location /cache/ {
			alias $dir/webdav/;
			dav_methods PUT DELETE MKCOL COPY MOVE;
			create_full_put_path on;
			dav_access user:rw group:r all:r;
			autoindex on;
			autoindex_format json;
		}
		location /slow/ {
			alias $dir/webdav/;
			limit_rate 256k;
		}
		location /fault503/ {
			add_header Retry-After 1 always;
			return 503;
		}
	}
}
EOF
	write_nginx_common "$dir/nginx-s3.conf" nginx-s3 s3.access.log
	cat >>"$dir/nginx-s3.conf" <<EOF
	server {
		listen 127.0.0.1:$S3_PORT;
		location / {
			proxy_pass http://127.0.0.1:$S3RVER_PORT;
			proxy_set_header Host \$http_host;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_request_buffering off;
			proxy_buffering off;
		}
	}
}
EOF
	cat >"$dir/flaky.py" <<'EOF'
# /flaky/...: each path's first request 503 with Retry-After: 1, then 200 with a fixed body.
# /strict/...: a WebDAV server in memory that, like Apache mod_dav, answers a PUT whose parent
# collection was never created with 409 until MKCOL creates it.
# /norange/<n>: 200 with bytes i % 251 for i in 0..n-1, Range ignored (python's http.server).
import http.server, sys, threading
seen, lock, body = set(), threading.Lock(), b"flaky but there\n"
cols, objs = {"/strict/"}, {}
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def reply(self, code, data=b"", with_body=True):
        self.send_response(code); self.send_header("Content-Length", str(len(data)))
        if code == 503: self.send_header("Retry-After", "1")
        self.end_headers()
        if with_body: self.wfile.write(data)
    def strict(self):
        p = self.path
        if self.command == "MKCOL":
            with lock:
                if p in cols: return self.reply(405)
                if p.rstrip("/").rsplit("/", 1)[0] + "/" not in cols: return self.reply(409)
                cols.add(p)
            return self.reply(201)
        if self.command == "PUT":
            data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                if p.rsplit("/", 1)[0] + "/" not in cols: return self.reply(409)
                objs[p] = data
            return self.reply(201)
        with lock: data = objs.get(p)
        if data is None: return self.reply(404)
        if self.command == "DELETE":
            with lock: objs.pop(p, None)
            return self.reply(204)
        self.reply(200, data, self.command == "GET")
    def answer(self, with_body):
        if self.path.startswith("/strict/"): return self.strict()
        if self.path.startswith("/norange/"):
            n = int(self.path.rsplit("/", 1)[1] or "0")
            return self.reply(200, bytes(i % 251 for i in range(n)), with_body)
        with lock:
            first = self.path not in seen
            seen.add(self.path)
        if first: return self.reply(503)
        self.reply(200, body, with_body)
    def do_GET(self): self.answer(True)
    def do_HEAD(self): self.answer(False)
    do_PUT = do_MKCOL = do_DELETE = lambda self: self.strict()
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
EOF
	python3 "$dir/flaky.py" "$FLAKY_PORT" >"$dir/flaky.log" 2>&1 &
	echo $! >"$dir/flaky.pid"

	start_webdav
	start_s3rver
	"$(nginx_bin)" -p "$dir" -e "$dir/nginx-s3.error.log" -c "$dir/nginx-s3.conf" ||
		die "nginx (S3 proxy) did not start: see $dir/nginx-s3.error.log"
	wait_port "$S3_PORT" 10 || die "nginx (S3 proxy) does not listen on $S3_PORT"
	wait_port "$FLAKY_PORT" 10 || die "the flaky server does not listen on $FLAKY_PORT"

	cat >"$dir/env" <<EOF
WEBDAV_URL=http://127.0.0.1:$WEBDAV_PORT/cache/
STRICT_DAV_URL=http://127.0.0.1:$FLAKY_PORT/strict/
WEBDAV_SLOW_URL=http://127.0.0.1:$WEBDAV_PORT/slow/
FAULT503_URL=http://127.0.0.1:$WEBDAV_PORT/fault503/
FLAKY_URL=http://127.0.0.1:$FLAKY_PORT/flaky/
NORANGE_URL=http://127.0.0.1:$FLAKY_PORT/norange/
S3_URL='s3://pkgcache/prefix?endpoint=http://127.0.0.1:$S3_PORT&region=us-east-1'
S3_DIRECT_URL='s3://pkgcache/prefix?endpoint=http://127.0.0.1:$S3RVER_PORT&region=us-east-1'
AWS_ACCESS_KEY_ID=S3RVER
AWS_SECRET_ACCESS_KEY=S3RVER
NGINX_PID=$(cat "$dir/nginx-dav.pid")
NGINX_S3_PID=$(cat "$dir/nginx-s3.pid")
S3RVER_PID=$(cat "$dir/s3rver.pid")
FLAKY_PID=$(cat "$dir/flaky.pid")
WEBDAV_ACCESS_LOG=$dir/webdav.access.log
S3_ACCESS_LOG=$dir/s3.access.log
EOF
	echo "servers.sh: WebDAV on $WEBDAV_PORT, S3 proxy on $S3_PORT (s3rver $S3RVER_PORT)," \
		"flaky on $FLAKY_PORT; environment in $dir/env" >&2
}

stop_pidfile() { # file signal
	local pid
	[[ -f $1 ]] || return 0
	pid=$(cat "$1")
	if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
		kill "-$2" "$pid" 2>/dev/null || true
		wait_gone "$pid" || kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$1"
}

cmd_stop() {
	stop_pidfile "$dir/nginx-dav.pid" QUIT
	stop_pidfile "$dir/nginx-s3.pid" QUIT
	stop_pidfile "$dir/s3rver.pid" TERM
	stop_pidfile "$dir/flaky.pid" TERM
}

dir=
case ${1:-} in
start | stop | kill-webdav | restart-webdav | kill-s3 | restart-s3)
	[[ $# -eq 2 ]] || die "usage: servers.sh $1 DIR"
	mkdir -p "$2"
	dir=$(cd "$2" && pwd)
	;;
*)
	echo "usage: servers.sh start|stop|kill-webdav|restart-webdav|kill-s3|restart-s3 DIR" >&2
	exit 2
	;;
esac

case $1 in
start) cmd_start ;;
stop) cmd_stop ;;
kill-webdav) stop_pidfile "$dir/nginx-dav.pid" TERM ;;
restart-webdav) load_state; start_webdav ;;
kill-s3) stop_pidfile "$dir/s3rver.pid" KILL ;;
restart-s3) load_state; start_s3rver ;;
esac
