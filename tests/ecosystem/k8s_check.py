#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Checks docs/recipes/kubernetes-arc/*.yaml without a cluster (runner-hosts.sh).

    k8s_check.py DAEMONSET_YAML RUNNER_VALUES_YAML ENV_LINES_FILE

Parses both files (every document), then checks what a cluster would only show at run time:
the container that mounts with Bidirectional propagation is privileged (the API server refuses
it otherwise) and mounts /dev/fuse; its hostPath is the one every runner container and init
container binds with HostToContainer; that hostPath is the mountpoint itself, not a
subdirectory of it; the runner's variables are the ones pkgcache-dirs.sh prints for
/pkgcache/runner (ENV_LINES_FILE). Prints the entrypoint script for `sh -n` on stdout.
"""

import sys

import yaml


def vols_by_name(spec):
    return {v["name"]: v for v in spec.get("volumes", [])}


def main():
    ds_docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
    values = yaml.safe_load(open(sys.argv[2]))
    want_env = dict(l.split("=", 1) for l in open(sys.argv[3]).read().split())
    kinds = [d["kind"] for d in ds_docs]
    assert kinds == ["Namespace", "ConfigMap", "DaemonSet"], kinds
    for d in ds_docs:
        assert d.get("apiVersion") and d["metadata"].get("name"), "apiVersion/name missing"
    cm, ds = ds_docs[1], ds_docs[2]
    spec = ds["spec"]["template"]["spec"]
    assert ds["spec"]["selector"]["matchLabels"] == ds["spec"]["template"]["metadata"]["labels"]
    vols = vols_by_name(spec)
    host_mnt = None
    for c in spec["containers"]:
        for m in c.get("volumeMounts", []):
            assert m["name"] in vols, "volumeMount %s has no volume" % m["name"]
            if m.get("mountPropagation") == "Bidirectional":
                assert c.get("securityContext", {}).get("privileged") is True, \
                    "Bidirectional propagation in a container that is not privileged"
                host_mnt = vols[m["name"]]["hostPath"]["path"]
                mount_path = m["mountPath"]
        paths = [m["mountPath"] for m in c.get("volumeMounts", [])]
        assert "/dev/fuse" in paths, "the mounting container lacks /dev/fuse"
        script = cm["data"][c["command"][-1].rsplit("/", 1)[-1]]
        assert "pkgcachefs mount -f" in script and mount_path in script
    assert host_mnt, "no container mounts with Bidirectional propagation"
    assert spec.get("terminationGracePeriodSeconds", 30) >= 300, "too little time for the final push"

    rspec = values["template"]["spec"]
    rvols = vols_by_name(rspec)
    seen = 0
    for c in rspec.get("initContainers", []) + rspec["containers"]:
        ms = [m for m in c.get("volumeMounts", []) if m["name"] in rvols and
              "hostPath" in rvols[m["name"]]]
        assert ms, "%s does not bind the cache" % c["name"]
        for m in ms:
            hp = rvols[m["name"]]["hostPath"]["path"]
            assert m.get("mountPropagation") == "HostToContainer", \
                "%s binds %s without HostToContainer" % (c["name"], hp)
            assert hp == host_mnt, "%s binds %s, not the mountpoint %s" % (c["name"], hp, host_mnt)
            assert not c.get("securityContext", {}).get("privileged"), "a privileged runner"
            seen += 1
    runner = [c for c in rspec["containers"] if c["name"] == "runner"][0]
    env = {e["name"]: e["value"] for e in runner.get("env", [])}
    assert env == want_env, "runner env %r != pkgcache-dirs.sh %r" % (env, want_env)
    sys.stdout.write(script)
    print("# k8s_check: 3 objects, %d runner-side binds of %s, all HostToContainer" % (seen, host_mnt),
          file=sys.stderr)


if __name__ == "__main__":
    main()
