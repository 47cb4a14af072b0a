#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A real S3 that checks signatures: Ceph's RADOS Gateway (Debian 12's radosgw 16.2, Pacific) on a
# single-node cluster, one ceph-mon and one ceph-osd on memstore (objects in the OSD's memory,
# nothing on disk but the mon's store), all on 127.0.0.1 with free ports, all state inside DIR:
#
#   rgw.sh start DIR     bring it up, create a user with keys, write DIR/env (shell assignments)
#   rgw.sh stop DIR      stop exactly the processes start started
#   rgw.sh session-token DIR   temporary credentials from STS GetSessionToken (3 lines: key id,
#                        secret, token); the user has a policy that allows it
#   rgw.sh assume-role DIR     temporary credentials from STS AssumeRole (3 lines as above) of
#                        the role "pcf-cache", assumed by user "ci" (created on first use, keys
#                        in DIR/ci.env), which may do nothing by itself: the role's trust and
#                        permission policies are docs/recipes/servers/s3-role-*.json as written
#   rgw.sh user DIR UID  a user without any policy or bucket (2 lines: key id, secret)
#   rgw.sh bucket-policy DIR FILE   PutBucketPolicy of FILE on bucket pkgcache, by its owner
#
# DIR/env sets RGW_URL (s3://pkgcache/prefix?endpoint=...&region=us-east-1, bucket created),
# RGW_ENDPOINT, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (user "pcf"), RGW_ACCESS_LOG (one line
# per request: method, uri, status, bytes sent, request length, from a logging proxy in front of
# radosgw, like servers.sh's nginx), CEPH_CONF and RGW_BRINGUP_MS (how long start took).
#
# No cephx (auth none) and no ceph-mgr: radosgw needs neither to serve S3, and S3's own SigV4
# checks are radosgw's, independent of cephx. Exit status 77 (skip) when the Ceph packages are
# missing, saying which to install.
set -euo pipefail

die() { echo "rgw.sh: $*" >&2; exit 1; }
skip() { echo "rgw.sh: SKIP: $*" >&2; exit 77; }

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

empty_sha=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855

now_ms() { echo $(($(date +%s%N) / 1000000)); }

check_tools() {
	local t
	for t in ceph-mon ceph-osd radosgw radosgw-admin ceph; do
		command -v $t >/dev/null ||
			skip "$t is missing: apt-get install -y ceph-mon ceph-osd radosgw ceph-common"
	done
	command -v python3 >/dev/null || skip "python3 is missing"
	command -v uuidgen >/dev/null || skip "uuidgen is missing: install uuid-runtime"
	command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || skip "nginx is missing: install nginx-light"
	curl --help all 2>/dev/null | grep -q -- --aws-sigv4 || skip "curl has no --aws-sigv4 (7.75 or later)"
}

# ceph_ CMD...: the ceph CLI against this cluster, bounded.
ceph_() { timeout 60 ceph --conf "$dir/ceph.conf" "$@"; }

start() {
	local t0 mon_port rgw_port proxy_port fsid osd_uuid i access secret
	check_tools
	t0=$(now_ms)
	mkdir -p "$dir"/{mon,osd,run,log}
	mon_port=$(free_port)
	rgw_port=$(free_port)
	proxy_port=$(free_port)
	fsid=$(uuidgen)
	access=PCF$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n' | tr a-f A-F)
	secret=$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')
	cat >"$dir/ceph.conf" <<CONF
[global]
fsid = $fsid
mon_host = v1:127.0.0.1:$mon_port
public_addr = 127.0.0.1
ms_bind_msgr2 = false
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
osd_crush_chooseleaf_type = 0
run_dir = $dir/run
admin_socket = $dir/run/\$name.asok
pid_file = $dir/run/\$name.pid
log_file = $dir/log/\$name.log
mon_cluster_log_file = $dir/log/cluster.log
keyring = /dev/null
chdir = $dir
[mon]
public_addr = v1:127.0.0.1:$mon_port
mon_data = $dir/mon/\$name
mon_data_avail_crit = 0
mon_data_avail_warn = 0
[osd]
osd_data = $dir/osd/\$name
osd_objectstore = memstore
osd_class_update_on_start = false
osd_crush_update_on_start = false
memstore_device_bytes = 2147483648
osd_class_load_list = *
osd_class_default_list = *
[client.rgw]
rgw_frontends = beast endpoint=127.0.0.1:$rgw_port
rgw_s3_auth_use_sts = true
rgw_sts_key = pcfrgwtestkey001
rgw_data = $dir/run
CONF
	cat >"$dir/ports" <<PORTS
MON_PORT=$mon_port
RGW_PORT=$rgw_port
PROXY_PORT=$proxy_port
PORTS
	monmaptool --create --fsid "$fsid" --addv a "[v1:127.0.0.1:$mon_port]" "$dir/monmap" \
		>"$dir/log/monmap.out" 2>&1 || die "monmaptool failed: $(cat "$dir/log/monmap.out")"
	ceph-mon --conf "$dir/ceph.conf" --id a --mkfs --monmap "$dir/monmap" \
		>"$dir/log/mkfs-mon.out" 2>&1 ||
		die "ceph-mon --mkfs failed: $(tail -5 "$dir/log/mkfs-mon.out")"
	ceph-mon --conf "$dir/ceph.conf" --id a || die "ceph-mon did not start: see $dir/log/mon.a.log"
	wait_port "$mon_port" 30 || die "ceph-mon does not listen on $mon_port"
	osd_uuid=$(uuidgen)
	ceph_ osd create "$osd_uuid" >/dev/null || die "ceph osd create failed"
	ceph_ osd crush add osd.0 1 root=default host=localhost >/dev/null 2>&1 ||
		die "ceph osd crush add failed"
	mkdir -p "$dir/osd/osd.0"
	ceph-osd --conf "$dir/ceph.conf" --id 0 --mkfs --osd-uuid "$osd_uuid" >"$dir/log/mkfs-osd.out" 2>&1 ||
		die "ceph-osd --mkfs failed: $(tail -5 "$dir/log/mkfs-osd.out")"
	ceph-osd --conf "$dir/ceph.conf" --id 0 || die "ceph-osd did not start: see $dir/log/osd.0.log"
	for ((i = 0; i < 600; i++)); do
		ceph_ osd dump 2>/dev/null | grep -q '^osd\.0 up' && break
		sleep 0.1
	done
	ceph_ osd dump | grep -q '^osd\.0 up' || die "osd.0 is not up after 60 s: see $dir/log/osd.0.log"
	radosgw --conf "$dir/ceph.conf" -n client.rgw || die "radosgw did not start: see $dir/log/client.rgw.log"
	for ((i = 0; i < 1200; i++)); do
		(exec 3<>"/dev/tcp/127.0.0.1/$rgw_port") 2>/dev/null && break
		[[ -f $dir/run/client.rgw.pid ]] && ! kill -0 "$(cat "$dir/run/client.rgw.pid")" 2>/dev/null &&
			die "radosgw exited: $(tail -3 "$dir/log/client.rgw.log")"
		sleep 0.1
	done
	wait_port "$rgw_port" 1 || die "radosgw does not listen on $rgw_port: see $dir/log/client.rgw.log"
	radosgw-admin --conf "$dir/ceph.conf" user create --uid pcf --display-name "pkgcachefs tests" \
		--access-key "$access" --secret-key "$secret" >"$dir/log/user.json" 2>"$dir/log/user.err" ||
		die "radosgw-admin user create failed: $(tail -3 "$dir/log/user.err")"
	# A user policy allowing STS GetSessionToken (and S3), so that tests can get temporary
	# credentials with a session token (rgw.sh session-token DIR).
	radosgw-admin --conf "$dir/ceph.conf" caps add --uid pcf --caps "user-policy=*" \
		>/dev/null 2>"$dir/log/caps.err" || die "radosgw-admin caps add failed: $(tail -3 "$dir/log/caps.err")"
	signed_post iam "$access" "$secret" "http://127.0.0.1:$rgw_port/" \
		"Action=PutUserPolicy&PolicyName=pcf&UserName=pcf&PolicyDocument=$(urlenc "$policy")" \
		>"$dir/log/policy.out" 2>&1 || die "PutUserPolicy failed: $(cat "$dir/log/policy.out")"
	write_proxy
	nginx -p "$dir" -e "$dir/nginx-rgw.error.log" -c "$dir/nginx-rgw.conf" ||
		die "nginx (radosgw proxy) did not start: see $dir/nginx-rgw.error.log"
	wait_port "$proxy_port" 10 || die "nginx (radosgw proxy) does not listen on $proxy_port"
	# The bucket, by a signed request: radosgw refuses anything else (and without
	# x-amz-content-sha256, which curl 7.88 does not add, it answers 403).
	curl -sS --fail-with-body --aws-sigv4 aws:amz:us-east-1:s3 --user "$access:$secret" \
		-H "x-amz-content-sha256: $empty_sha" \
		-X PUT "http://127.0.0.1:$rgw_port/pkgcache" >"$dir/log/bucket.out" 2>&1 ||
		die "creating bucket pkgcache failed: $(cat "$dir/log/bucket.out")"
	cat >"$dir/env" <<ENV
RGW_URL='s3://pkgcache/prefix?endpoint=http://127.0.0.1:$proxy_port&region=us-east-1'
RGW_DIRECT_URL='s3://pkgcache/prefix?endpoint=http://127.0.0.1:$rgw_port&region=us-east-1'
RGW_ENDPOINT=http://127.0.0.1:$proxy_port
RGW_DIRECT_ENDPOINT=http://127.0.0.1:$rgw_port
AWS_ACCESS_KEY_ID=$access
AWS_SECRET_ACCESS_KEY=$secret
RGW_ACCESS_LOG=$dir/rgw.access.log
CEPH_CONF=$dir/ceph.conf
RGW_BRINGUP_MS=$(($(now_ms) - t0))
ENV
	echo "rgw.sh: radosgw on $rgw_port (proxy $proxy_port), mon $mon_port, up in" \
		"$(($(now_ms) - t0)) ms; environment in $dir/env" >&2
}

policy='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["sts:GetSessionToken","s3:*"],"Resource":"*"}]}'

urlenc() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }

# signed_post SERVICE ACCESS SECRET URL BODY: a SigV4-signed form POST (IAM, STS).
signed_post() {
	local sha
	sha=$(printf %s "$5" | sha256sum | cut -d' ' -f1)
	curl -sS --fail-with-body --aws-sigv4 "aws:amz:us-east-1:$1" --user "$2:$3" \
		-H "x-amz-content-sha256: $sha" -H 'Content-Type: application/x-www-form-urlencoded' \
		--data "$5" "$4"
}

# session_token: temporary credentials from STS GetSessionToken, as three lines: access key id,
# secret, session token.
session_token() {
	# shellcheck disable=SC1091
	. "$dir/env"
	sts_keys GetSessionToken "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" \
		"Action=GetSessionToken&Version=2011-06-15&DurationSeconds=3600"
}

# sts_keys ACTION KEY SECRET PARAMS: an STS call signed with KEY and SECRET; prints the
# temporary key id, secret and session token of its answer, one a line.
sts_keys() {
	local out t
	out=$(signed_post sts "$2" "$3" "$RGW_DIRECT_ENDPOINT/" "$4") || die "$1 failed: $out"
	for t in AccessKeyId SecretAccessKey SessionToken; do
		sed -n "s|.*<$t>\\([^<]*\\)</$t>.*|\\1|p" <<<"$out"
	done
}

# assume_role: user ci and role pcf-cache made once (radosgw-admin needs no IAM caps for
# either), then AssumeRole signed with ci's keys.
assume_role() {
	local recipes=$here/../../docs/recipes/servers
	# shellcheck disable=SC1091
	. "$dir/env"
	if [[ ! -f $dir/ci.env ]]; then
		make_user ci >"$dir/ci.keys" || die "creating user ci failed"
		radosgw-admin --conf "$dir/ceph.conf" role create --role-name pcf-cache --path / \
			--assume-role-policy-doc "$(cat "$recipes/s3-role-trust-policy.json")" \
			>"$dir/log/role.json" 2>"$dir/log/role.err" ||
			die "radosgw-admin role create failed: $(tail -3 "$dir/log/role.err")"
		radosgw-admin --conf "$dir/ceph.conf" role-policy put --role-name pcf-cache \
			--policy-name pcf-cache --policy-doc "$(cat "$recipes/s3-role-policy.json")" \
			>/dev/null 2>"$dir/log/role.err" ||
			die "radosgw-admin role-policy put failed: $(tail -3 "$dir/log/role.err")"
		{ echo "CI_ACCESS_KEY_ID=$(sed -n 1p "$dir/ci.keys")"
		  echo "CI_SECRET_ACCESS_KEY=$(sed -n 2p "$dir/ci.keys")"; } >"$dir/ci.env"
	fi
	# shellcheck disable=SC1091
	. "$dir/ci.env"
	sts_keys AssumeRole "$CI_ACCESS_KEY_ID" "$CI_SECRET_ACCESS_KEY" \
		"Action=AssumeRole&Version=2011-06-15&RoleArn=arn:aws:iam:::role/pcf-cache&RoleSessionName=pcf-test&DurationSeconds=3600"
}

# make_user UID: a user with fresh keys and nothing else, printed as key id and secret.
make_user() {
	local access secret
	access=PCF$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n' | tr a-f A-F)
	secret=$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')
	radosgw-admin --conf "$dir/ceph.conf" user create --uid "$1" --display-name "$1" \
		--access-key "$access" --secret-key "$secret" >/dev/null 2>"$dir/log/user-$1.err" ||
		die "radosgw-admin user create $1 failed: $(tail -3 "$dir/log/user-$1.err")"
	printf '%s\n%s\n' "$access" "$secret"
}

# bucket_policy FILE: PutBucketPolicy by the bucket's owner. curl signs "?policy" as "policy"
# and radosgw expects "policy=": hence the "=".
bucket_policy() {
	local sha out
	# shellcheck disable=SC1091
	. "$dir/env"
	[[ -f $1 ]] || die "no policy file $1"
	sha=$(sha256sum <"$1" | cut -d' ' -f1)
	out=$(curl -sS --fail-with-body --aws-sigv4 aws:amz:us-east-1:s3 \
		--user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" -H "x-amz-content-sha256: $sha" \
		-H 'Content-Type: application/json' -X PUT --data-binary "@$1" \
		"$RGW_DIRECT_ENDPOINT/pkgcache?policy=" 2>&1) || die "PutBucketPolicy failed: $out"
}

# write_proxy: nginx in front of radosgw logging each request as servers.sh's S3 proxy does
# ("$request_method $uri $status $bytes_sent $request_length"), unbuffered both ways.
write_proxy() {
	local user_line=""
	[[ $(id -u) -eq 0 ]] && user_line="user root;"
	mkdir -p "$dir/tmp"
	cat >"$dir/nginx-rgw.conf" <<NGX
$user_line
worker_processes 1;
daemon on;
pid $dir/nginx-rgw.pid;
error_log $dir/nginx-rgw.error.log warn;
events { worker_connections 256; }
http {
	log_format bytes '\$request_method \$uri \$status \$bytes_sent \$request_length';
	access_log $dir/rgw.access.log bytes;
	client_body_temp_path $dir/tmp/body;
	proxy_temp_path $dir/tmp/proxy;
	fastcgi_temp_path $dir/tmp/fastcgi;
	uwsgi_temp_path $dir/tmp/uwsgi;
	scgi_temp_path $dir/tmp/scgi;
	client_max_body_size 0;
	keepalive_requests 10000;
	server {
		listen 127.0.0.1:$proxy_port;
		location / {
			proxy_pass http://127.0.0.1:$rgw_port;
			proxy_set_header Host \$http_host;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_request_buffering off;
			proxy_buffering off;
		}
	}
}
NGX
}

stop_pidfile() { # file
	local pid i
	[[ -f $1 ]] || return 0
	pid=$(cat "$1")
	kill "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -9 "$pid" 2>/dev/null || true
}

stop() {
	stop_pidfile "$dir/nginx-rgw.pid"
	stop_pidfile "$dir/run/client.rgw.pid"
	stop_pidfile "$dir/run/osd.0.pid"
	stop_pidfile "$dir/run/mon.a.pid"
}

usage="usage: rgw.sh start|stop|session-token|assume-role DIR, rgw.sh user DIR UID, rgw.sh bucket-policy DIR FILE"
[[ $# -ge 2 ]] || die "$usage"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=$(mkdir -p "$2" && cd "$2" && pwd)
case $1:$# in
start:2) start ;;
stop:2) stop ;;
session-token:2) session_token ;;
assume-role:2) assume_role ;;
user:3) make_user "$3" ;;
bucket-policy:3) bucket_policy "$(cd "$(dirname "$3")" && pwd)/$(basename "$3")" ;;
*) die "$usage" ;;
esac
