# SPDX-License-Identifier: MIT
# Helpers for the ecosystem tests (sourced, never run): the client tests' lib.sh (mounts torn
# down by the EXIT trap, $TMP, fail/skip/log) plus a local package index and a clean pip setup.
#
# The recipes under docs/recipes/ are what these tests exercise: RECIPES points there, so a
# test runs the recipe's own script, never a copy of it.

. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../clients/lib.sh"
ECO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$ECO_DIR/../.." && pwd)
RECIPES=$TOP/docs/recipes

# eco_pip_env: nothing from the caller's pip, proxy or XDG configuration.
eco_pip_env() {
	local v
	for v in $(env | sed -n 's/^\(PIP_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done
	export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
	export PIP_DEFAULT_TIMEOUT=60 PYTHONDONTWRITEBYTECODE=1
	unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY XDG_CACHE_HOME
	"$PY" -c 'import venv, ensurepip' 2>/dev/null ||
		fail "$PY lacks venv/ensurepip: apt-get install -y python3-venv python3-pip"
}

# eco_index_start: builds the client tests' wheels (alpha -> beta -> gamma, delta) into
# $TMP/index and serves them on loopback; sets INDEX_URL and HTTPLOG.
eco_index_start() {
	local i
	"$PY" "$CLIENTS_DIR/wheels.py" build "$TMP/index" >/dev/null || fail "wheels.py build failed"
	HTTPLOG=$TMP/http.log
	"$PY" "$CLIENTS_DIR/wheels.py" serve "$TMP/index" "$TMP/port" "$HTTPLOG" &
	PCF_BG_PIDS+=($!)
	for i in $(seq 100); do
		[ -s "$TMP/port" ] && break
		sleep 0.1
	done
	[ -s "$TMP/port" ] || fail "index server did not start"
	INDEX_URL=http://127.0.0.1:$(cat "$TMP/port")/simple
	log "local index at $INDEX_URL"
}

# eco_whl_requests: wheel downloads the index server has seen so far.
eco_whl_requests() { grep -c '^GET /packages/.*\.whl ' "$HTTPLOG"; }

# eco_expect_cached LOG NAME...: pip printed "Using cached NAME-..." for each.
eco_expect_cached() {
	local out=$1 w
	shift
	for w in "$@"; do
		if ! grep -q "Using cached .*$w-" "$out"; then
			grep -E 'Using cached|Downloading|Collecting|cache' "$out" >&2
			fail "pip did not use the cache for $w (log: $out)"
		fi
	done
}

# eco_is_pkgcachefs DIR: DIR is the root of a pkgcachefs mount (in this mount namespace).
eco_is_pkgcachefs() {
	awk -v m="$1" '$5 == m && $0 ~ / - fuse\.pkgcachefs / { f = 1 } END { exit !f }' \
		/proc/self/mountinfo
}
