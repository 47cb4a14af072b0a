#!/bin/bash
# SPDX-License-Identifier: MIT
# `pkgcachefs report` on the jobs of two CI hosts sharing a file:// remote (docs/operations.md,
# A report per job). Host A mounts an empty store, real pip installs from the local index into
# MNT/pip (downloads), npm's directory gets a file; while mounted the report already shows the
# writes; after umount (which pushes) it shows files and bytes new under pip and npm, bytes
# pushed, nothing fetched. Host B mounts a new empty store on the same remote and pip installs
# the same: "Using cached", no wheel download; its report shows reads fetched from the remote
# under pip, the fetched bytes, nothing new written, and the Markdown table; --output appends.
#
# usage: report.sh PKGCACHEFS_BINARY
set -u -o pipefail
. "$(dirname "$0")/eco.sh"
pcf_init "${1:-}"
eco_pip_env
eco_index_start
REM=$TMP/remote
mkdir -p "$REM"

# pip_on MNT TAG: a fresh venv, pip install alpha with MNT/pip as the cache.
pip_on() {
	"$PY" -m venv "$TMP/venv-$2" || fail "venv $2"
	"$TMP/venv-$2/bin/pip" install --cache-dir "$1/pip" --index-url "$INDEX_URL" \
		--trusted-host 127.0.0.1 --progress-bar off alpha >"$TMP/pip-$2.log" 2>&1 || {
		tail -n 30 "$TMP/pip-$2.log" >&2
		fail "pip install ($2) failed"
	}
}
# jq_check JSON PYTHON-EXPR MESSAGE: the expression over the report d must hold.
jq_check() {
	"$PY" -c 'import json, sys
d = json.loads(sys.argv[1])
dirs = {x["name"]: x for x in d["directories"]}
if not eval(sys.argv[2]):
    sys.exit(1)' "$1" "$2" || { echo "$1" >&2; fail "report: $3"; }
}
report() { "$BIN" report --store "$@" || fail "pkgcachefs report --store $* exited $?"; }

log "host A: cold job"
pcf_mount "$TMP/storeA" "$TMP/mntA" --remote "file://$REM"
"$BIN" report --store "$TMP/storeA" --json >/dev/null 2>&1 || fail "report on a fresh mount failed"
n=$(eco_whl_requests)
pip_on "$TMP/mntA" A
[ "$(eco_whl_requests)" -gt "$n" ] || fail "host A downloaded nothing"
mkdir "$TMP/mntA/npm" && head -c 200000 /dev/urandom >"$TMP/mntA/npm/blob"
sleep 1.5	# counters and the index's group commit are a second behind
live=$(report "$TMP/storeA" --json)
jq_check "$live" 'd["mounted"] and d["end"] is None and dirs["pip"]["files_delta"] > 0' \
	"a mounted store's report lacks the pip writes"
pcf_umount "$TMP/mntA"
pcf_wait_daemon_exit "$TMP/storeA"
a=$(report "$TMP/storeA" --json)
log "host A: $a"
jq_check "$a" 'not d["mounted"] and d["end"] >= d["start"] and d["remote"].startswith("file://")' "host A's session"
jq_check "$a" 'dirs["pip"]["files_delta"] >= 3 and dirs["pip"]["logical_bytes_delta"] > 20 * 2**20' \
	"host A's pip directory should have gained the three wheels (gamma is 20 MiB)"
jq_check "$a" 'dirs["npm"]["files_delta"] == 1 and dirs["npm"]["logical_bytes_delta"] == 200000' \
	"host A's npm directory should have gained one 200000-byte file"
jq_check "$a" 'd["pushed_bytes"] >= d["unique_bytes_delta"] // 2 and d["push"] == "done"' \
	"host A pushed too little"
jq_check "$a" 'd["reads_fetched"] == 0 and d["fetched_bytes"] == 0' "host A fetched from the remote"
report "$TMP/storeA" >"$TMP/a.txt"
grep -q '^  pip ' "$TMP/a.txt" && grep -q '^pushed: ' "$TMP/a.txt" || {
	cat "$TMP/a.txt" >&2
	fail "the text report lacks the pip row or the pushed line"
}

log "host B: cold store, same remote"
pcf_mount "$TMP/storeB" "$TMP/mntB" --remote "file://$REM"
n=$(eco_whl_requests)
pip_on "$TMP/mntB" B
eco_expect_cached "$TMP/pip-B.log" alpha beta gamma
[ "$(eco_whl_requests)" = "$n" ] || fail "host B downloaded wheels"
pcf_umount "$TMP/mntB"
pcf_wait_daemon_exit "$TMP/storeB"
b=$(report "$TMP/storeB" --json)
log "host B: $b"
jq_check "$b" 'dirs["pip"]["reads_fetched"] > 0 and dirs["pip"]["read_bytes_fetched"] > 20 * 2**20' \
	"host B's pip reads were not counted as fetched"
jq_check "$b" 'd["fetched_bytes"] > 20 * 2**20 and d["fetch_failures"] == 0 and d["fetch_wait_seconds"] > 0' \
	"host B's fetch figures"
jq_check "$b" 'dirs["pip"]["files_delta"] <= 1 and "npm" not in dirs' \
	"host B wrote new files or read npm"
md=$TMP/summary.md
echo "# job summary" >"$md"
report "$TMP/storeB" --markdown --output "$md"
head -n 1 "$md" | grep -qx '# job summary' && grep -q '^| `pip` | ' "$md" &&
	grep -q '^| directory | reads local |' "$md" && grep -q '^- from the remote `file://' "$md" || {
	cat "$md" >&2
	fail "the Markdown report is not as documented"
}
cat "$md"
"$BIN" report --store "$TMP/nothing" >/dev/null 2>&1 && fail "report on a missing store exited 0"
"$BIN" report --json --markdown --store "$TMP/storeB" >/dev/null 2>&1
[ $? = 2 ] || fail "report --json --markdown should be a usage error"
echo "PASS: report"
