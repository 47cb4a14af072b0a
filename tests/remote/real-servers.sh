#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The WebDAV and static servers people run, configured by the recipes of docs/recipes/servers/
# exactly as written: the files are read from there and only their placeholders change (the
# directory /srv/pkgcache, the ports 127.0.0.1:8080 and :8081, /etc/pkgcachefs/htpasswd), all on
# 127.0.0.1 with free ports, all state inside DIR:
#
#   real-servers.sh start DIR     start them, write DIR/env (shell assignments)
#   real-servers.sh stop DIR      stop exactly the processes start started
#
# What runs, each WebDAV server with Basic auth (user "pkg", password in DIR/env) on a directory
# of its own under DIR/data/:
#   NGINX_DAVEXT_URL   nginx-webdav.conf as written (dav + dav-ext PROPFIND + HTML autoindex)
#   NGINX_HTML_URL     the same without its dav_ext_methods line (lists by HTML autoindex)
#   APACHE_URL         apache-webdav.conf (mod_dav, mod_dav_fs, mod_autoindex; PUT 409 on a
#                      missing collection)
#   RCLONE_URL         rclone-webdav.service's ExecStart (PUT 404 on a missing collection)
# and, read-only and without credentials, over the whole of DIR/data (so that
# ${STATIC_URL}apache/ is what Apache wrote):
#   STATIC_URL         nginx-static.conf (nginx without DAV, HTML autoindex)
#   PYSTATIC_URL       python3 -m http.server --directory DIR/data (HTML listing)
# DIR/netrc holds the credentials for the WebDAV servers (HOME=DIR makes curl read it).
#
# Exit status 77 (skip) when nginx, the dav-ext module, apache2, rclone or python3 is missing,
# saying which package to install (tools/install-deps.sh --test).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
recipes=$here/../../docs/recipes/servers
davext_so=/usr/lib/nginx/modules/ngx_http_dav_ext_module.so

die() { echo "real-servers.sh: $*" >&2; exit 1; }
skip() { echo "real-servers.sh: SKIP: $*" >&2; exit 77; }

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() { # port seconds
	local i
	for ((i = 0; i < $2 * 10; i++)); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

nginx_bin() { command -v nginx || echo /usr/sbin/nginx; }
apache_bin() { command -v apache2 || echo /usr/sbin/apache2; }

check_tools() {
	command -v python3 >/dev/null || skip "python3 is missing"
	[[ -x $(nginx_bin) ]] || skip "nginx is missing: install nginx-light"
	[[ -f $davext_so ]] || skip "nginx's dav-ext module is missing: install libnginx-mod-http-dav-ext"
	[[ -x $(apache_bin) ]] || skip "Apache httpd is missing: install apache2"
	command -v rclone >/dev/null || skip "rclone is missing: install rclone"
	command -v openssl >/dev/null || skip "openssl is missing"
}

# recipe FILE DATA PORT: the recipe with its placeholders replaced.
recipe() {
	sed -e "s|/srv/pkgcache|$2|g" -e "s|127\.0\.0\.1:808[01]|127.0.0.1:$3|g" \
		-e "s|/etc/pkgcachefs/htpasswd|$dir/htpasswd|g" "$recipes/$1"
}

# nginx_main NAME MODULE... : a main nginx.conf including DIR/NAME.site (as Debian's
# sites-enabled/ would), with the modules given loaded.
nginx_main() {
	local name=$1 m user_line=""
	shift
	[[ $(id -u) -eq 0 ]] && user_line="user root;"
	{
		for m in "$@"; do echo "load_module $m;"; done
		cat <<EOF
$user_line
worker_processes 1;
daemon on;
pid $dir/$name.pid;
error_log $dir/$name.error.log warn;
events { worker_connections 256; }
http {
	default_type application/octet-stream;
	log_format req '\$request_method \$uri \$status \$bytes_sent';
	access_log $dir/$name.access.log req;
	client_body_temp_path $dir/tmp/$name-body;
	proxy_temp_path $dir/tmp/$name-proxy;
	fastcgi_temp_path $dir/tmp/$name-fastcgi;
	uwsgi_temp_path $dir/tmp/$name-uwsgi;
	scgi_temp_path $dir/tmp/$name-scgi;
	include $dir/$name.site;
}
EOF
	} >"$dir/$name.conf"
	"$(nginx_bin)" -p "$dir" -e "$dir/$name.error.log" -c "$dir/$name.conf" ||
		die "nginx ($name) did not start: see $dir/$name.error.log"
}

cmd_start() {
	local p_davext p_html p_apache p_rclone p_static p_py pass hash
	check_tools
	mkdir -p "$dir/data/davext" "$dir/data/html" "$dir/data/apache" "$dir/data/rclone" \
		"$dir/tmp" "$dir/apache-run" "$dir/apache-lock"
	p_davext=$(free_port) p_html=$(free_port) p_apache=$(free_port) p_rclone=$(free_port)
	p_static=$(free_port) p_py=$(free_port)
	pass=$(openssl rand -hex 12)
	hash=$(openssl passwd -apr1 "$pass")
	echo "pkg:$hash" >"$dir/htpasswd"
	printf 'machine 127.0.0.1 login pkg password %s\n' "$pass" >"$dir/.netrc"
	chmod 600 "$dir/.netrc"

	recipe nginx-webdav.conf "$dir/data/davext/" "$p_davext" >"$dir/nginx-davext.site"
	nginx_main nginx-davext "$davext_so"
	# The recipe's own note: without dav-ext, autoindex alone lists.
	recipe nginx-webdav.conf "$dir/data/html/" "$p_html" | sed '/dav_ext_methods/d' \
		>"$dir/nginx-html.site"
	nginx_main nginx-html
	recipe nginx-static.conf "$dir/data/" "$p_static" >"$dir/nginx-static.site"
	nginx_main nginx-static

	# Apache refuses to run as root: its user must own what it writes.
	chown www-data:www-data "$dir/data/apache" "$dir/apache-lock"
	chmod o+rx "$dir" "$dir/data"
	recipe apache-webdav.conf "$dir/data/apache" "$p_apache" >"$dir/apache-site.conf"
	local m mods=(mpm_event authz_core authn_core authn_file auth_basic authz_user alias
		autoindex dav dav_fs)
	{
		echo "ServerRoot $dir"
		echo "ServerName 127.0.0.1"
		echo "DefaultRuntimeDir $dir/apache-run"
		echo "PidFile $dir/apache.pid"
		echo "Listen 127.0.0.1:$p_apache"
		for m in "${mods[@]}"; do
			echo "LoadModule ${m}_module /usr/lib/apache2/modules/mod_$m.so"
		done
		echo "User www-data"
		echo "Group www-data"
		echo "ErrorLog $dir/apache.error.log"
		echo "LogFormat \"%m %U %>s %B\" req"
		echo "CustomLog $dir/apache.access.log req"
		echo "DavLockDB $dir/apache-lock/DavLock"
		echo "Include $dir/apache-site.conf"
	} >"$dir/apache.conf"
	"$(apache_bin)" -f "$dir/apache.conf" -k start ||
		die "apache2 did not start: see $dir/apache.error.log"

	# rclone: the unit's ExecStart line, run in the background.
	local exec_start
	exec_start=$(sed -n 's/^ExecStart=//p' "$recipes/rclone-webdav.service" |
		sed -e "s|/srv/pkgcache|$dir/data/rclone|g" -e "s|127\.0\.0\.1:8080|127.0.0.1:$p_rclone|g" \
			-e "s|/etc/pkgcachefs/htpasswd|$dir/htpasswd|g")
	echo "$exec_start" >"$dir/rclone.cmd"
	# shellcheck disable=SC2086
	$exec_start --log-file "$dir/rclone.log" &
	echo $! >"$dir/rclone.pid"

	python3 -m http.server --bind 127.0.0.1 --directory "$dir/data" "$p_py" \
		>"$dir/pystatic.log" 2>&1 &
	echo $! >"$dir/pystatic.pid"

	local port
	for port in "$p_davext" "$p_html" "$p_static" "$p_apache" "$p_rclone" "$p_py"; do
		wait_port "$port" 20 || die "nothing listens on $port (logs in $dir)"
	done
	cat >"$dir/env" <<EOF
NGINX_DAVEXT_URL=http://127.0.0.1:$p_davext/pkgcache/
NGINX_HTML_URL=http://127.0.0.1:$p_html/pkgcache/
APACHE_URL=http://127.0.0.1:$p_apache/pkgcache/
RCLONE_URL=http://127.0.0.1:$p_rclone/pkgcache/
STATIC_URL=http://127.0.0.1:$p_static/pkgcache/
PYSTATIC_URL=http://127.0.0.1:$p_py/
REAL_DATA=$dir/data
REAL_NETRC_HOME=$dir
EOF
	echo "real-servers.sh: nginx dav-ext $p_davext, nginx html $p_html, apache $p_apache," \
		"rclone $p_rclone, static nginx $p_static, python $p_py; environment in $dir/env" >&2
}

stop_pidfile() { # file signal
	local pid i
	[[ -f $1 ]] || return 0
	pid=$(cat "$1")
	if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
		kill "-$2" "$pid" 2>/dev/null || true
		for ((i = 0; i < 100; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
	fi
	rm -f "$1"
}

cmd_stop() {
	local n
	for n in nginx-davext nginx-html nginx-static; do
		stop_pidfile "$dir/$n.pid" QUIT
	done
	stop_pidfile "$dir/apache.pid" TERM
	stop_pidfile "$dir/rclone.pid" TERM
	stop_pidfile "$dir/pystatic.pid" TERM
}

dir=
case ${1:-} in
start | stop)
	[[ $# -eq 2 ]] || die "usage: real-servers.sh $1 DIR"
	mkdir -p "$2"
	dir=$(cd "$2" && pwd)
	;;
*)
	echo "usage: real-servers.sh start|stop DIR" >&2
	exit 2
	;;
esac
case $1 in
start) cmd_start ;;
stop) cmd_stop ;;
esac
