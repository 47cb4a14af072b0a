#!/bin/bash
# SPDX-License-Identifier: MIT
# One mount serving several tools (docs/recipes/several-tools.md), both layouts, on one store:
#  1. `~/.cache` as a whole (HOME is a temp dir): real pip with no cache setting writes
#     ~/.cache/pip; real npm, whose default is ~/.npm (checked), with
#     npm_config_cache=~/.cache/npm installs a small package from the npm registry into a
#     temp project; uv (emulated by tests/clients/uv_like.py when uv is not installed) fills
#     ~/.cache/uv; uv's link modes from that cache into a venv on another filesystem (hard
#     link and FICLONE refused with EXDEV, copies exact: uv warns and copies, UV_LINK_MODE=copy
#     just copies) and into a venv on the mount (hard links work); Poetry's artifact cache
#     emulated (Poetry is not installed in CI): the same wheel at
#     ~/.cache/pypoetry/artifacts/... costs no new unique bytes.
#  2. umount, then the same store mounted at a shared path (/var/cache/pkg in the recipes),
#     docs/recipes/pkgcache-dirs.sh prints PIP_CACHE_DIR, UV_CACHE_DIR, npm_config_cache and
#     POETRY_CACHE_DIR: pip in a new venv says "Using cached" with no download, npm installs
#     the package --offline into a new project, the uv cache verifies: the per-tool variables
#     see the same tree that ~/.cache did.
# The npm part needs the npm registry; when it is unreachable it is left out, saying so.
#
# usage: tools-layout.sh PKGCACHEFS_BINARY
set -u -o pipefail
. "$(dirname "$0")/eco.sh"
pcf_init "${1:-}"
eco_pip_env
eco_index_start

STORE=$TMP/store
export HOME=$TMP/home
CACHE=$HOME/.cache
PKG=$TMP/var-cache-pkg
NPM_PKG=is-number@7.0.0
mkdir -p "$HOME"
unset npm_config_cache NPM_CONFIG_CACHE UV_CACHE_DIR UV_LINK_MODE POETRY_CACHE_DIR
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
export npm_config_loglevel=warn

have_npm=0
if command -v npm >/dev/null 2>&1; then
	if timeout 30 npm view "$NPM_PKG" version >/dev/null 2>&1; then
		have_npm=1
	else
		log "note: the npm registry is unreachable: the npm part is left out"
	fi
else
	log "note: npm is not installed: the npm part is left out"
fi

# pip_venv TAG: a fresh venv in $TMP (not on the mount), pip install alpha, default cache dir
# unless PIP_CACHE_DIR is set.
pip_venv() {
	"$PY" -m venv "$TMP/venv-$1" || fail "venv $1"
	"$TMP/venv-$1/bin/pip" install --index-url "$INDEX_URL" --trusted-host 127.0.0.1 \
		--progress-bar off alpha >"$TMP/pip-$1.log" 2>&1 || {
		tail -n 30 "$TMP/pip-$1.log" >&2
		fail "pip install ($1) failed"
	}
}

# npm_project TAG ARGS...: a new project in $TMP, npm install $NPM_PKG ARGS.
npm_project() {
	local tag=$1
	shift
	mkdir "$TMP/proj-$tag" && echo '{"name": "proj-'"$tag"'", "version": "1.0.0"}' \
		>"$TMP/proj-$tag/package.json"
	(cd "$TMP/proj-$tag" && npm install "$NPM_PKG" "$@") >"$TMP/npm-$tag.log" 2>&1 || {
		tail -n 30 "$TMP/npm-$tag.log" >&2
		fail "npm install $NPM_PKG $* ($tag) failed"
	}
	[ -f "$TMP/proj-$tag/node_modules/is-number/index.js" ] ||
		fail "npm install ($tag) left no node_modules/is-number"
}

unique_bytes() { pcf_stats "$STORE" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["unique_bytes"])'; }

log "1. ~/.cache as a whole: $CACHE"
mkdir -p "$CACHE"
pcf_mount "$STORE" "$CACHE"

pip_venv whole
[ -n "$(find "$CACHE/pip" -type f 2>/dev/null | head -n 1)" ] ||
	fail "pip with no cache setting did not write ~/.cache/pip (HOME=$HOME)"
log "pip: $(find "$CACHE/pip" -type f | wc -l) files in ~/.cache/pip"

if [ $have_npm = 1 ]; then
	def=$(npm config get cache 2>/dev/null)
	[ "$def" = "$HOME/.npm" ] || fail "npm's default cache is $def, not ~/.npm: the doc is wrong"
	npm_config_cache=$CACHE/npm npm_project whole --prefer-online
	[ -d "$CACHE/npm/_cacache/content-v2" ] || fail "npm did not write ~/.cache/npm/_cacache"
	log "npm: $NPM_PKG installed, $(find "$CACHE/npm" -type f | wc -l) files in ~/.cache/npm"
fi

if command -v uv >/dev/null 2>&1; then
	log "note: uv is installed ($(uv --version)); this test still uses the emulation"
fi
"$PY" "$CLIENTS_DIR/uv_like.py" run "$CACHE/uv" 1 layout >/dev/null ||
	fail "the uv-like installs into ~/.cache/uv failed"
arch=$(find "$CACHE/uv/cache/archive-v0" -mindepth 1 -maxdepth 1 -type d | head -n 1)
[ -n "$arch" ] || fail "the uv-like cache has no archive-v0 entry"
out=$("$PY" "$ECO_DIR/uv_link.py" "$arch" "$TMP/venv-uv-other/site-packages" other | paste -sd' ') ||
	fail "uv link mode, venv on another filesystem: $out"
log "uv, venv on another filesystem: $out"
out=$("$PY" "$ECO_DIR/uv_link.py" "$arch" "$CACHE/venv-on-mount/site-packages" same) ||
	fail "uv link mode, venv on the mount: $out"
log "uv, venv on the mount: $out"
rm -rf "$CACHE/venv-on-mount" || fail "removing the venv of hard links failed"

gamma=$(ls "$TMP"/index/packages/gamma-3.0-*.whl)
sleep 2	# stats read the last group commit (1 s): let pip's files in
before=$(unique_bytes) || exit 1
sha=$(sha256sum "$gamma" | cut -c1-64)
art="$CACHE/pypoetry/artifacts/${sha:0:2}/${sha:2:2}/${sha:4:2}/${sha:6}"
mkdir -p "$art" && cp "$gamma" "$art/" || fail "writing Poetry's artifact cache failed"
sleep 2	# stats read the last group commit (1 s)
after=$(unique_bytes) || exit 1
grown=$((after - before))
[ "$grown" -lt $((2 * 1024 * 1024)) ] ||
	fail "the wheel pip had cached grew the unique bytes by $grown in Poetry's cache"
log "Poetry (emulated): $(stat -c %s "$gamma") bytes of gamma in pypoetry/artifacts added $grown unique bytes"
pcf_umount "$CACHE"
pcf_wait_daemon_exit "$STORE"

log "2. the same store at $PKG, one variable per tool"
pcf_mount "$STORE" "$PKG"
env_lines=$("$RECIPES/pkgcache-dirs.sh" --owner root "$PKG") || fail "pkgcache-dirs.sh failed"
echo "$env_lines" | sed 's/^/    /'
while IFS= read -r kv; do export "${kv?}"; done <<<"$env_lines"
[ "$PIP_CACHE_DIR" = "$PKG/pip" ] && [ "$npm_config_cache" = "$PKG/npm" ] &&
	[ "$UV_CACHE_DIR" = "$PKG/uv" ] && [ "$POETRY_CACHE_DIR" = "$PKG/pypoetry" ] ||
	fail "pkgcache-dirs.sh printed unexpected variables"

n=$(eco_whl_requests)
pip_venv pertool
eco_expect_cached "$TMP/pip-pertool.log" alpha beta gamma
[ "$(eco_whl_requests)" = "$n" ] || fail "pip with PIP_CACHE_DIR downloaded although ~/.cache/pip had the wheels"
log "pip with PIP_CACHE_DIR=$PIP_CACHE_DIR: Using cached, no download"
if [ $have_npm = 1 ]; then
	npm_project pertool --offline
	log "npm with npm_config_cache=$npm_config_cache: $NPM_PKG installed --offline"
fi
"$PY" "$CLIENTS_DIR/uv_like.py" verify "$UV_CACHE_DIR" 1 layout ||
	fail "the uv-like cache seen through UV_CACHE_DIR is not what ~/.cache/uv held"
log "uv cache through UV_CACHE_DIR=$UV_CACHE_DIR: verified"
[ -f "$POETRY_CACHE_DIR/artifacts/${sha:0:2}/${sha:2:2}/${sha:4:2}/${sha:6}/$(basename "$gamma")" ] ||
	fail "Poetry's artifact is not under POETRY_CACHE_DIR"
pcf_umount "$PKG"
pcf_wait_daemon_exit "$STORE"
pcf_fsck "$STORE" "after both layouts"
pcf_stats "$STORE" >/dev/null
"$BIN" stats --store "$STORE" | sed 's/^/    /'
echo "PASS: tools-layout"
