#!/bin/bash
# SPDX-License-Identifier: MIT
# npm, pnpm and yarn (berry) with their caches on pkgcachefs, on a cold second host, against a
# static npm registry on loopback (npm_registry.py: pcf-left -> pcf-right, pcf-solo; no public
# registry). Two hosts share a file:// remote, each its own store mounted at PKG:
#   npm   npm_config_cache=PKG/npm: host A `npm install` (lockfile), host B `npm ci --offline`;
#   pnpm  store-dir=PKG/pnpm-store, node_modules on another file system (hard links fail with
#         EXDEV; pnpm's default import method then copies): host A `pnpm install`, host B
#         `pnpm install --frozen-lockfile --offline`; and once with node_modules on the mount
#         itself, where pnpm hard-links (checked: link count 2);
#   yarn  berry with enableGlobalCache and YARN_GLOBAL_FOLDER=PKG/yarn: host A `yarn install`,
#         host B `yarn install --immutable`.
# On host B each must fetch no tarball from the registry (expected: 0, counted in its log).
# pnpm and yarn come from the npm registry (npm install into /var/cache/pkgcachefs-test,
# reused); their versions are printed.
#
# usage: node-managers.sh PKGCACHEFS_BINARY
set -u -o pipefail
. "$(dirname "$0")/eco.sh"
pcf_init "${1:-}"
command -v npm >/dev/null && command -v node >/dev/null || fail "node and npm are missing (tools/install-deps.sh --test)"
TOOLS=${PCF_TEST_CACHE:-/var/cache/pkgcachefs-test}/npm-tools
if [ ! -x "$TOOLS/node_modules/.bin/pnpm" ] || [ ! -x "$TOOLS/node_modules/.bin/yarn" ]; then
	log "installing pnpm 8 and yarn 4 into $TOOLS from the npm registry"
	mkdir -p "$TOOLS"
	timeout 300 npm install --no-audit --no-fund --prefix "$TOOLS" pnpm@8 @yarnpkg/cli-dist@4 \
		>"$TMP/npm-tools.log" 2>&1 || { tail "$TMP/npm-tools.log" >&2; fail "npm install pnpm yarn failed"; }
fi
export PATH=$TOOLS/node_modules/.bin:$PATH HOME=$TMP/home
mkdir -p "$HOME"
log "node $(node --version), npm $(npm --version), pnpm $(pnpm --version), yarn $(yarn --version)"
"$PY" "$ECO_DIR/npm_registry.py" build "$TMP/reg" || fail "npm_registry.py build failed"
"$PY" "$ECO_DIR/npm_registry.py" serve "$TMP/reg" "$TMP/regport" "$TMP/reg.log" &
PCF_BG_PIDS+=($!)
for i in $(seq 100); do [ -s "$TMP/regport" ] && break; sleep 0.1; done
[ -s "$TMP/regport" ] || fail "the registry did not start"
REG=http://127.0.0.1:$(cat "$TMP/regport")/
tgz() { grep -c '^GET .*/-/.*\.tgz 200' "$TMP/reg.log"; }
REM=$TMP/remote
PKG=$TMP/cache
mkdir -p "$REM"
unset npm_config_cache
export npm_config_registry=$REG npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false
export npm_config_cache=$PKG/npm npm_config_store_dir=$PKG/pnpm-store
export YARN_GLOBAL_FOLDER=$PKG/yarn YARN_ENABLE_GLOBAL_CACHE=true YARN_NPM_REGISTRY_SERVER=${REG%/}
export YARN_UNSAFE_HTTP_WHITELIST=127.0.0.1 YARN_ENABLE_TELEMETRY=0 YARN_NODE_LINKER=node-modules
export COREPACK_ENABLE_STRICT=0

project() {
	mkdir -p "$1"
	printf '{"name": "app", "version": "1.0.0", "private": true, "dependencies": {"pcf-left": "^1.0.0", "pcf-solo": "*"}}\n' >"$1/package.json"
}
run() {
	local tag=$1 dir=$2
	shift 2
	(cd "$dir" && timeout 300 "$@") >"$TMP/$tag.log" 2>&1 || { tail -n 30 "$TMP/$tag.log" >&2; fail "$tag: $* failed"; }
}
check_tree() {
	local f p
	for f in pcf-left pcf-right pcf-solo; do
		# pnpm keeps indirect dependencies under node_modules/.pnpm only.
		p=$(find "$1/node_modules" -path "*/node_modules/$f/data.bin" | head -n 1)
		[ -n "$p" ] && cmp -s "$p" <(tar -xzOf "$TMP/reg/$f-"*.tgz package/data.bin) ||
			fail "$2: $f's data.bin is missing or differs from the registry's tarball"
	done
}

log "host A"
pcf_mount "$TMP/storeA" "$PKG" --remote "file://$REM"
for t in npm pnpm yarn; do project "$TMP/A/$t"; done
touch "$TMP/A/yarn/yarn.lock"
n=$(tgz)
run npm-A "$TMP/A/npm" npm install
run pnpm-A "$TMP/A/pnpm" pnpm install
# Host A writes the lockfile: yarn makes installs immutable by itself when CI is set.
run yarn-A "$TMP/A/yarn" yarn install --no-immutable
log "host A: $(($(tgz) - n)) tarball downloads"
for t in npm pnpm yarn; do check_tree "$TMP/A/$t" "$t on host A"; done
links=$(stat -c %h "$(readlink -f "$TMP/A/pnpm/node_modules/pcf-solo")/data.bin")
[ "$links" = 1 ] || fail "pnpm's node_modules on another file system has $links links to a file (EXDEV expected, then a copy)"
log "pnpm across file systems: copies (1 link), (its default import method falls back to copying)"
[ -d "$PKG/npm/_cacache" ] && [ -d "$PKG/pnpm-store" ] && [ -d "$PKG/yarn/cache" ] ||
	fail "a cache is not on the mount: $(ls "$PKG" "$PKG/yarn" 2>&1 | tr '\n' ' ')"
log "pnpm with node_modules on the mount itself"
project "$PKG/work"
run pnpm-on-mount "$PKG/work" pnpm install --offline
links=$(stat -c %h "$(readlink -f "$PKG/work/node_modules/pcf-solo")/data.bin")
log "pnpm on the mount: data.bin has $links links (hard-linked from the store)"
[ "$links" -ge 2 ] || fail "pnpm did not hard-link from its store on the same mount ($links links)"
rm -rf "$PKG/work"
pcf_umount "$PKG"
pcf_wait_daemon_exit "$TMP/storeA"

log "host B: empty store, same remote, fresh checkouts with the lock files"
for t in npm pnpm yarn; do
	project "$TMP/B/$t"
	cp "$TMP/A/$t"/*lock* "$TMP/B/$t/" || fail "no lock file from $t"
done
pcf_mount "$TMP/storeB" "$PKG" --remote "file://$REM"
n=$(tgz)
run npm-B "$TMP/B/npm" npm ci --offline
d=$(($(tgz) - n)); log "host B: npm ci: $d tarball downloads"; [ $d = 0 ] || fail "npm on host B downloaded $d tarballs"
run pnpm-B "$TMP/B/pnpm" pnpm install --frozen-lockfile --offline
d=$(($(tgz) - n)); log "host B: pnpm: $d tarball downloads"; [ $d = 0 ] || fail "pnpm on host B downloaded $d tarballs"
run yarn-B "$TMP/B/yarn" yarn install --immutable
d=$(($(tgz) - n)); log "host B: yarn: $d tarball downloads"; [ $d = 0 ] || fail "yarn on host B downloaded $d tarballs"
for t in npm pnpm yarn; do check_tree "$TMP/B/$t" "$t on host B"; done
pcf_umount "$PKG"
pcf_wait_daemon_exit "$TMP/storeB"
pcf_fsck "$TMP/storeB" "host B"
echo "PASS: node-managers"
