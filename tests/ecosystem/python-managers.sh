#!/bin/bash
# SPDX-License-Identifier: MIT
# Poetry and Pipenv (Debian's python3-poetry and pipenv) with their caches on pkgcachefs, on a
# cold second host (docs/recipes/several-tools.md). Two hosts share a file:// remote, each its
# own store mounted at the same path PKG (stands for ~/.cache), with POETRY_CACHE_DIR=PKG/pypoetry,
# PIPENV_CACHE_DIR=PKG/pipenv and PIP_CACHE_DIR=PKG/pip, against the loopback index of
# tests/clients/wheels.py (alpha -> beta -> gamma). Host A: `poetry install` locks and
# installs, `pipenv install` locks and installs (downloads), umount pushes. Host B, empty
# store: a fresh copy of each project with its lock file and no venv installs with no wheel
# download at the index (expected: 0), and the installed files equal the wheels.
#
# usage: python-managers.sh PKGCACHEFS_BINARY
set -u -o pipefail
. "$(dirname "$0")/eco.sh"
pcf_init "${1:-}"
eco_pip_env
command -v poetry >/dev/null || fail "poetry is missing: apt-get install python3-poetry (tools/install-deps.sh --test)"
command -v pipenv >/dev/null || fail "pipenv is missing: apt-get install pipenv (tools/install-deps.sh --test)"
log "$(poetry --version), $(pipenv --version)"
eco_index_start
REM=$TMP/remote
PKG=$TMP/cache
mkdir -p "$REM"
export POETRY_CACHE_DIR=$PKG/pypoetry PIPENV_CACHE_DIR=$PKG/pipenv PIP_CACHE_DIR=$PKG/pip
export POETRY_VIRTUALENVS_IN_PROJECT=true PIPENV_VENV_IN_PROJECT=1 PIPENV_NOSPIN=1
export PIPENV_YES=1 PIPENV_IGNORE_VIRTUALENVS=1 PIP_TRUSTED_HOST=127.0.0.1 HOME=$TMP/home
mkdir -p "$HOME"

mkdir -p "$TMP/poetry" "$TMP/pipenv"
cat >"$TMP/poetry/pyproject.toml" <<EOT
[tool.poetry]
name = "proj"
version = "0.1.0"
description = ""
authors = ["ci <ci@example.com>"]
packages = []

[tool.poetry.dependencies]
python = "^3.11"
alpha = "*"

[[tool.poetry.source]]
name = "local"
url = "$INDEX_URL"
default = true

[build-system]
requires = ["poetry-core"]
build-backend = "poetry.core.masonry.api"
EOT
cat >"$TMP/pipenv/Pipfile" <<EOT
[[source]]
url = "$INDEX_URL"
verify_ssl = false
name = "local"

[packages]
alpha = "*"
EOT

# run TAG DIR CMD...: CMD in DIR, its output in $TMP/TAG.log.
run() {
	local tag=$1 dir=$2
	shift 2
	(cd "$dir" && timeout 600 "$@") >"$TMP/$tag.log" 2>&1 || {
		tail -n 30 "$TMP/$tag.log" >&2
		fail "$tag: $* failed"
	}
}
verify() {
	local site
	site=$(echo "$1"/.venv/lib/python3*/site-packages)
	"$PY" "$CLIENTS_DIR/wheels.py" verify "$TMP/index" "$site" alpha==1.0.0 beta==1.2.0 gamma==3.0 >/dev/null 2>&1 ||
		"$PY" "$CLIENTS_DIR/wheels.py" verify "$TMP/index" "$1/.venv" alpha==1.0.0 beta==1.2.0 gamma==3.0 ||
		fail "$2: installed files differ from the wheels"
}

log "host A"
pcf_mount "$TMP/storeA" "$PKG" --remote "file://$REM"
n=$(eco_whl_requests)
run poetry-A "$TMP/poetry" poetry install --no-root -n
# Pipenv's virtualenv would download its seed wheels (no network here): give it a venv.
"$PY" -m venv "$TMP/pipenv/.venv" || fail "venv for pipenv"
run pipenv-A "$TMP/pipenv" pipenv install
[ "$(eco_whl_requests)" -gt "$n" ] || fail "host A downloaded nothing"
log "host A: $(($(eco_whl_requests) - n)) wheel downloads; caches: $(du -sh "$PKG" | cut -f1)"
[ -f "$TMP/poetry/poetry.lock" ] && [ -f "$TMP/pipenv/Pipfile.lock" ] || fail "no lock files"
[ -d "$PKG/pypoetry/artifacts" ] || fail "Poetry's artifacts are not on the mount"
pcf_umount "$PKG"
pcf_wait_daemon_exit "$TMP/storeA"

log "host B: empty store, same remote, fresh checkouts with the lock files"
for t in poetry pipenv; do
	mkdir -p "$TMP/$t-B"
	cp "$TMP/$t"/*.toml "$TMP/$t"/*.lock "$TMP/$t"/Pipfile "$TMP/$t-B/" 2>/dev/null
done
pcf_mount "$TMP/storeB" "$PKG" --remote "file://$REM"
n=$(eco_whl_requests)
run poetry-B "$TMP/poetry-B" poetry install --no-root -n
d=$(($(eco_whl_requests) - n))
log "host B: poetry install downloaded $d wheels"
[ $d = 0 ] || fail "Poetry on host B downloaded $d wheels again"
verify "$TMP/poetry-B" poetry
n=$(eco_whl_requests)
"$PY" -m venv "$TMP/pipenv-B/.venv" || fail "venv for pipenv"
run pipenv-B "$TMP/pipenv-B" pipenv sync
d=$(($(eco_whl_requests) - n))
log "host B: pipenv sync downloaded $d wheels"
[ $d = 0 ] || { grep -E 'Using cached|Downloading' "$TMP/pipenv-B.log" >&2; fail "Pipenv on host B downloaded $d wheels again"; }
verify "$TMP/pipenv-B" pipenv
pcf_umount "$PKG"
pcf_wait_daemon_exit "$TMP/storeB"
pcf_fsck "$TMP/storeB" "host B"
echo "PASS: python-managers"
