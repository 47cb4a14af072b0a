#!/bin/bash
# SPDX-License-Identifier: MIT
# The runner recipes' scripts and configs (docs/recipes/), as far as this machine allows (no
# systemd as PID 1, no container engine, no cluster):
#  - the mount as the template unit pkgcachefs@.service makes it (its ExecStartPre/ExecStart
#    command lines with REMOTE= empty and OPTIONS=allow_other,max_size=50G) at a temp
#    mountpoint standing for /var/cache/pkg;
#  - GitHub: github-actions-runner/setup-host.sh with DESTDIR a temp dir and systemctl
#    recorded: the conf, the drop-in (systemd-analyze verify with a stand-in runner unit and
#    the built template), the runner's .env block (kept once on a rerun, other lines kept), the
#    directories and owners; a host job as the runner's user (nobody) with that .env: real pip
#    from the local index, its cache under MOUNT/nobody/pip owned by nobody;
#  - Buildkite: the environment hook fails on a bare directory and, on the mount, exports the
#    variables; pip as nobody with them installs again "Using cached";
#  - GitLab: config.toml (tomllib) has the volumes and the environment line pkgcache-dirs.sh
#    prints; gitlab-ci.yml has the same variables;
#  - Kubernetes ARC: k8s_check.py (YAML, privileged + Bidirectional, HostToContainer on the
#    mountpoint itself, runner variables), sh -n of the entrypoint; kubectl dry-run when a
#    cluster answers, else said;
#  - the workflow and pipeline YAML files parse and bind /var/cache/pkg/root at /root/.cache.
#
# usage: runner-hosts.sh PKGCACHEFS_BINARY
set -u -o pipefail
. "$(dirname "$0")/eco.sh"
pcf_init "${1:-}"
[ "$(id -u)" = 0 ] || skip "needs root (directories for other users, jobs as nobody)"
"$PY" -c 'import yaml, tomllib' 2>/dev/null || fail "$PY lacks yaml or tomllib: apt-get install python3-yaml"
eco_pip_env
eco_index_start
chmod 711 "$TMP"	# the jobs run as nobody

STORE=$TMP/store
MP=$TMP/var-cache-pkg
RU=nobody
RG=$(id -gn nobody)

log "the template unit's command lines: remote (REMOTE= empty), mount -o allow_other,max_size=50G"
"$BIN" remote --store "$STORE" >/dev/null 2>&1	# as ExecStartPre does; no remote set: fine
pcf_mount "$STORE" "$MP" -o allow_other,max_size=50G

log "GitHub: setup-host.sh"
GH=$RECIPES/github-actions-runner
SVC=actions.runner.example-org.test.service
mkdir -p "$TMP/runner" "$TMP/etc-root"
echo "$SVC" >"$TMP/runner/.service"
echo "LANG=C.UTF-8" >"$TMP/runner/.env"
chown "$RU:$RG" "$TMP/runner"
printf '#!/bin/sh\necho "$*" >>%q\n' "$TMP/systemctl.log" >"$TMP/systemctl"
chmod +x "$TMP/systemctl"
for run in 1 2; do
	DESTDIR=$TMP/etc-root MOUNTPOINT=$MP SYSTEMCTL=$TMP/systemctl \
		sh "$GH/setup-host.sh" "$TMP/runner" "$RU" >"$TMP/setup-$run.log" 2>&1 || {
		cat "$TMP/setup-$run.log" >&2
		fail "setup-host.sh (run $run) failed"
	}
done
inst=$(systemd-escape --path "$MP")
conf=$TMP/etc-root/etc/pkgcachefs/$inst.conf
dropin=$TMP/etc-root/etc/systemd/system/$SVC.d/pkgcache.conf
grep -qxF 'REMOTE=' "$conf" && grep -qxF 'OPTIONS=allow_other,max_size=50G' "$conf" ||
	fail "setup-host.sh wrote an unexpected $conf: $(cat "$conf")"
grep -qxF "Requires=pkgcachefs@$inst.service" "$dropin" && grep -qxF "After=pkgcachefs@$inst.service" "$dropin" ||
	fail "the runner drop-in is wrong: $(cat "$dropin")"
expected_calls="daemon-reload
enable --now pkgcachefs@$inst.service
restart $SVC"
[ "$(cat "$TMP/systemctl.log")" = "$(printf '%s\n%s\n' "$expected_calls" "$expected_calls")" ] ||
	fail "setup-host.sh called systemctl unexpectedly: $(cat "$TMP/systemctl.log")"
[ "$(grep -c '^# pkgcachefs begin$' "$TMP/runner/.env")" = 1 ] && grep -qx LANG=C.UTF-8 "$TMP/runner/.env" ||
	fail "the runner's .env after two runs: $(cat "$TMP/runner/.env")"
grep -qx "PIP_CACHE_DIR=$MP/$RU/pip" "$TMP/runner/.env" || fail ".env lacks PIP_CACHE_DIR: $(cat "$TMP/runner/.env")"
[ "$(stat -c %U "$MP/$RU/pip")" = "$RU" ] && [ "$(stat -c %U "$MP/root/npm")" = root ] ||
	fail "directory owners on the mount are wrong"
log "GitHub: conf, drop-in, .env and directories as documented"

units=$(dirname "$BIN")/dist/pkgcachefs@.service.test
if [ -f "$units" ] && command -v systemd-analyze >/dev/null; then
	mkdir -p "$TMP/units"
	cp "$units" "$TMP/units/pkgcachefs@.service"
	printf '[Unit]\nDescription=stand-in runner\n[Service]\nExecStart=/bin/true\n' >"$TMP/units/$SVC"
	cp -r "$TMP/etc-root/etc/systemd/system/$SVC.d" "$TMP/units/"
	out=$(cd "$TMP/units" && SYSTEMD_UNIT_PATH="$TMP/units:" systemd-analyze verify "$SVC" 2>&1) ||
		fail "systemd-analyze verify of the runner with the drop-in: $out"
	[ -z "$out" ] || fail "systemd-analyze verify complained: $out"
	log "GitHub: the drop-in verifies with the built template (systemd-analyze)"
else
	log "note: no built unit ($units) or systemd-analyze: drop-in not verified"
fi

# job_pip TAG ENVFILE: a host job as the runner's user, with the variables of ENVFILE.
job_pip() {
	local tag=$1 envfile=$2
	install -d -o "$RU" -g "$RG" "$TMP/job-$tag"
	setpriv --reuid "$RU" --regid "$RG" --clear-groups env -i HOME=/nonexistent \
		PATH=/usr/bin:/bin PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 \
		PIP_PROGRESS_BAR=off $(grep -v '^#' "$envfile") \
		sh -c '"$1" -m venv "$2/venv" && "$2/venv/bin/pip" install --index-url "$3" \
			--trusted-host 127.0.0.1 alpha' sh "$PY" "$TMP/job-$tag" "$INDEX_URL" \
		>"$TMP/pip-$tag.log" 2>&1 || {
		tail -n 30 "$TMP/pip-$tag.log" >&2
		fail "the $tag job (pip as $RU) failed"
	}
	! grep -qi 'cache has been disabled\|not owned\|not writable' "$TMP/pip-$tag.log" ||
		fail "pip disabled its cache in the $tag job"
}
n=$(eco_whl_requests)
job_pip github "$TMP/runner/.env"
[ $(($(eco_whl_requests) - n)) = 3 ] || fail "the first job made $(($(eco_whl_requests) - n)) downloads, 3 expected"
bad=$(find "$MP/$RU/pip" ! -user "$RU" | head -n 3)
[ -n "$(find "$MP/$RU/pip" -type f | head -n 1)" ] && [ -z "$bad" ] ||
	fail "the job's pip cache is not in $MP/$RU/pip, owned by $RU ($bad)"
log "GitHub: a host job as $RU installed with the .env; cache in $MP/$RU/pip"

log "Buildkite: the environment hook"
BK=$RECIPES/buildkite-jenkins
mkdir "$TMP/bare"
if PKGCACHE_DIR=$TMP/bare bash -c '. "$1"' sh "$BK/environment" 2>"$TMP/bk-bare.log"; then
	fail "the Buildkite hook accepted a bare directory"
fi
grep -q 'pkgcachefs is not mounted' "$TMP/bk-bare.log" || fail "the hook's refusal: $(cat "$TMP/bk-bare.log")"
PKGCACHE_DIR=$MP/$RU bash -c '. "$1" && env' sh "$BK/environment" |
	grep -E '^(PIP_CACHE_DIR|UV_CACHE_DIR|UV_LINK_MODE|npm_config_cache|POETRY_CACHE_DIR)=' |
	sort >"$TMP/bk.env" || fail "the Buildkite hook failed on the mount"
diff <(grep -v '^#' "$TMP/runner/.env" | grep -v LANG | sort) "$TMP/bk.env" >&2 ||
	fail "the Buildkite hook exports other variables than pkgcache-dirs.sh prints"
n=$(eco_whl_requests)
job_pip buildkite "$TMP/bk.env"
eco_expect_cached "$TMP/pip-buildkite.log" alpha beta gamma
[ "$(eco_whl_requests)" = "$n" ] || fail "the Buildkite job downloaded although the cache had the wheels"
log "Buildkite: hook refuses a bare directory; a job with its variables used the cache"

log "GitLab: config.toml and gitlab-ci.yml"
line=$("$RECIPES/pkgcache-dirs.sh" --owner root --jobs-path /cache/pkg --format toml "$MP/gitlab") ||
	fail "pkgcache-dirs.sh --format toml failed"
"$PY" - "$RECIPES/gitlab-runner/config.toml" "$line" "$RECIPES/gitlab-runner/gitlab-ci.yml" <<'EOP' || fail "GitLab files"
import sys, tomllib, yaml
cfg = tomllib.load(open(sys.argv[1], "rb"))
want = tomllib.loads(sys.argv[2])["environment"]
r = cfg["runners"][0]
assert r["executor"] == "docker", r["executor"]
assert r["docker"]["volumes"] == ["/var/cache/pkg:/cache/pkg"], r["docker"]["volumes"]
assert r["environment"] == want, (r["environment"], want)
ci = yaml.safe_load(open(sys.argv[3]))
assert ci["variables"] == dict(kv.split("=", 1) for kv in want), ci["variables"]
print("config.toml environment == pkgcache-dirs.sh output; gitlab-ci.yml variables agree")
EOP

log "Kubernetes ARC: manifests"
"$RECIPES/pkgcache-dirs.sh" --owner root --jobs-path /pkgcache/runner "$MP/k8s" >"$TMP/k8s.env" ||
	fail "pkgcache-dirs.sh for k8s failed"
K=$RECIPES/kubernetes-arc
"$PY" "$ECO_DIR/k8s_check.py" "$K/pkgcachefs-daemonset.yaml" "$K/runner-scale-set-values.yaml" \
	"$TMP/k8s.env" >"$TMP/entrypoint.sh" || fail "k8s_check.py"
sh -n "$TMP/entrypoint.sh" || fail "the DaemonSet's entrypoint script does not parse"
if command -v kubectl >/dev/null 2>&1 && timeout 10 kubectl version >/dev/null 2>&1; then
	kubectl apply --dry-run=client -f "$K/pkgcachefs-daemonset.yaml" || fail "kubectl dry-run refused the DaemonSet"
else
	log "note: no Kubernetes API server: kubectl --dry-run=client cannot run (it needs discovery)"
fi

log "workflow and pipeline YAML"
"$PY" - "$GH/workflow.yml" "$BK/pipeline.yml" <<'EOP' || fail "workflow/pipeline YAML"
import sys, yaml
wf = yaml.safe_load(open(sys.argv[1]))
c = wf["jobs"]["container"]["container"]
assert "/var/cache/pkg/root:/root/.cache" in c["volumes"], c
assert c["env"]["PIP_CACHE_DIR"] == "/root/.cache/pip", c["env"]
bk = yaml.safe_load(open(sys.argv[2]))
plug = bk["steps"][1]["plugins"][0]
(name, conf), = plug.items()
assert name.startswith("docker#") and "/var/cache/pkg/root:/root/.cache" in conf["volumes"], plug
print("workflow.yml and pipeline.yml parse and bind /var/cache/pkg/root at /root/.cache")
EOP

pcf_umount "$MP"
pcf_wait_daemon_exit "$STORE"
pcf_fsck "$STORE" "after the runner jobs"
echo "PASS: runner-hosts"
