#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Run a test binary (test_remote) against freshly started test servers:
#   run-remote-unit.sh SERVERS_SH TEST_BINARY [ARGS...]
# Starts tests/remote/servers.sh in a scratch directory, exports what its tests read
# (PKGCACHEFS_TEST_WEBDAV_URL, PKGCACHEFS_TEST_S3_URL, the fault URLs, access logs, AWS keys),
# runs the binary, and stops the servers whatever happens. When the servers cannot start
# (exit 77: nginx, node or npm missing) the binary still runs: its server tests skip, saying why.
# The servers' own output goes to stderr so that the binary's TAP on stdout stays clean.
set -uo pipefail

servers=$1
shift
dir=$(mktemp -d "${TMPDIR:-/tmp}/pkgcachefs-remote.XXXXXX")
cleanup() {
	bash "$servers" stop "$dir" >&2 || true
	rm -rf "$dir"
}
trap cleanup EXIT

bash "$servers" start "$dir" >&2
rc=$?
if [[ $rc -eq 0 ]]; then
	set -a
	# shellcheck disable=SC1091
	. "$dir/env"
	set +a
	export PKGCACHEFS_TEST_WEBDAV_URL=$WEBDAV_URL PKGCACHEFS_TEST_S3_URL=$S3_URL
	export PKGCACHEFS_TEST_SERVERS_SH=$servers PKGCACHEFS_TEST_SERVERS_DIR=$dir
elif [[ $rc -eq 77 ]]; then
	echo "run-remote-unit: test servers unavailable, server tests will skip" >&2
else
	echo "run-remote-unit: servers.sh start failed ($rc)" >&2
	exit "$rc"
fi
"$@"
