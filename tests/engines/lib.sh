# SPDX-License-Identifier: MIT
# Helpers for the engine tests (sourced, never run): the ecosystem tests' eco.sh (mounts torn
# down by the EXIT trap, a local index, pip's environment), plus a dockerd of the test's own
# (data root, exec root, socket and pidfile under $TMP, no iptables, no bridge: containers and
# builds use --network host) stopped before the mounts are torn down, and the base image from
# base-image.sh imported into it. Debian's docker CLI (/usr/bin/docker) talks to it: another
# docker on PATH (a newer CLI needs buildx for DOCKER_BUILDKIT=1) is not used.
ENG_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$ENG_DIR/../ecosystem/eco.sh"
DOCKER=/usr/bin/docker
BASE_IMAGE=pcf-base:test
ENG_DOCKERD_PID=
declare -a ENG_T=()	# "what seconds" timings, printed at the end

eng_now() { date +%s.%N; }
# eng_time WHAT T0: records the seconds since T0.
eng_time() { ENG_T+=("$(awk -v a="$2" -v b="$(eng_now)" 'BEGIN { printf "%6.1f s", b - a }')  $1"); }
eng_times() { echo "---- engine timings"; printf '%s\n' "${ENG_T[@]}"; }

eng_cleanup() {
	local rc=$? i
	trap - EXIT
	set +e
	if [ -n "$ENG_DOCKERD_PID" ]; then
		DOCKER_HOST=$DOCKER_HOST $DOCKER ps -aq 2>/dev/null | xargs -r $DOCKER rm -f >/dev/null 2>&1
		kill "$ENG_DOCKERD_PID" 2>/dev/null
		for i in $(seq 100); do kill -0 "$ENG_DOCKERD_PID" 2>/dev/null || break; sleep 0.2; done
		kill -9 "$ENG_DOCKERD_PID" 2>/dev/null
		awk -v t="$TMP/docker" 'index($5, t) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
			while read -r m; do umount -l "$m"; done
	fi
	(exit $rc)
	pcf_cleanup
}

# eng_init BIN: pcf_init, root, the trap.
eng_init() {
	pcf_init "$1"
	[ "$(id -u)" = 0 ] || skip "needs root (starts dockerd, mounts with allow_other)"
	trap 'eng_cleanup' EXIT
	eco_pip_env
}

# eng_base_tarball: the cached base image tarball (built on first use, ~3 min).
eng_base_tarball() {
	local t0
	t0=$(eng_now)
	BASE_TAR=$("$ENG_DIR/base-image.sh" "${PCF_TEST_CACHE:-/var/cache/pkgcachefs-test}") ||
		fail "base-image.sh failed (debootstrap from the apt mirror)"
	eng_time "base image tarball (cached: $(basename "$BASE_TAR"))" "$t0"
}

# eng_dockerd: starts dockerd, imports the base image. Fails when dockerd is installed but does
# not come up; skips only when it is not installed and cannot be (no apt).
eng_dockerd() {
	local i t0
	[ -x /usr/sbin/dockerd ] && [ -x $DOCKER ] ||
		fail "docker.io is not installed (tools/install-deps.sh --test installs it)"
	t0=$(eng_now)
	mkdir -p "$TMP/docker"
	export DOCKER_HOST=unix://$TMP/docker/sock
	/usr/sbin/dockerd --iptables=false --ip-masq=false --bridge=none \
		--data-root "$TMP/docker/root" --exec-root "$TMP/docker/exec" \
		--pidfile "$TMP/docker/pid" -H "$DOCKER_HOST" >"$TMP/docker/log" 2>&1 &
	ENG_DOCKERD_PID=$!
	for i in $(seq 150); do
		$DOCKER version >/dev/null 2>&1 && break
		kill -0 $ENG_DOCKERD_PID 2>/dev/null || { tail -n 20 "$TMP/docker/log" >&2; fail "dockerd exited"; }
		sleep 0.2
	done
	$DOCKER version >/dev/null 2>&1 || { tail -n 20 "$TMP/docker/log" >&2; fail "dockerd did not answer in 30 s"; }
	log "dockerd $($DOCKER version --format '{{.Server.Version}}') (client $($DOCKER version --format '{{.Client.Version}}'))"
	$DOCKER import - "$BASE_IMAGE" <"$BASE_TAR" >/dev/null || fail "docker import of $BASE_TAR failed"
	eng_time "dockerd start + docker import" "$t0"
}

# eng_downloads_since N EXPECTED WHAT: the index served EXPECTED wheels since it had served N.
eng_downloads_since() {
	local got=$(($(eco_whl_requests) - $1))
	[ "$got" = "$2" ] || fail "$3: $got wheel downloads, $2 expected"
	log "$3: $got wheel downloads"
}
