#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Tables for tools/bench/remote-bench.sh: reads OUT/results.tsv (scenario, rep, key, value),
prints medians, ratios between peers of the same run, and the targets. Prints, never fails.

    remote-report.py OUT_DIR
"""

import json
import os
import statistics
import sys

MB = 1e6


def load(out):
    r = {}
    with open(os.path.join(out, "results.tsv")) as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) != 4:
                continue
            s, rep, k, v = p
            r.setdefault(s, {}).setdefault(k, {})[rep] = v
    return r


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def vals(r, s, k):
    return [x for x in (num(v) for v in r.get(s, {}).get(k, {}).values()) if x is not None]


def med(r, s, k):
    v = vals(r, s, k)
    return statistics.median(v) if v else None


def one(r, s, k, rep):
    return num(r.get(s, {}).get(k, {}).get(str(rep)))


def fails(r, s):
    return sum(1 for d in r.get(s, {}).values() for v in d.values() if v == "fail")


def per_rep(r, s, keys):
    """Per rep: the sum of keys (all must be there)."""
    reps = set()
    for k in keys:
        reps |= set(r.get(s, {}).get(k, {}))
    out = []
    for rep in sorted(reps):
        xs = [one(r, s, k, rep) for k in keys]
        if all(x is not None for x in xs):
            out.append(sum(xs))
    return out


def f(x, fmt="%.2f"):
    return "-" if x is None else fmt % x


def mb(x):
    return "-" if x is None else "%.1f" % (x / MB)


def mb2(x):
    return "-" if x is None else "%.2f" % (x / MB)


def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


def main():
    out = sys.argv[1]
    r = load(out)
    lines = []
    P = lines.append
    machine = {}
    mt = os.path.join(out, "machine.tsv")
    if os.path.exists(mt):
        for line in open(mt):
            k, _, v = line.rstrip("\n").partition("\t")
            machine[k] = v
    P("machine: %s cpus, %s MiB, kernel %s, %s, pip %s, nginx %s; binary %s" % (
        machine.get("cpus"), machine.get("mem_mib"), machine.get("kernel"), machine.get("python"),
        (r.get("machine", {}).get("pip_version", {}) or {}).get("0", "?"), machine.get("nginx"),
        machine.get("binary")))
    P("link to every server: %s" % (
        "loopback" if machine.get("link", "loopback") == "loopback" else
        "%s ms one way, %s Mbit/s per connection (tools/bench/linkproxy.py)" % tuple(machine["link"].split(":"))))
    P("load at start %s, at end %s; run took %s s" % (
        machine.get("load_start"), (r.get("machine", {}).get("load_end", {}) or {}).get("0", "?"),
        (r.get("machine", {}).get("total_s", {}) or {}).get("0", "?")))
    cs = os.path.join(out, "corpus-summary.json")
    if os.path.exists(cs):
        c = json.load(open(cs))
        P("corpus: job installs %d wheels, %.1f MB (%d zip members); the remote and the archive also "
          "hold %d older point releases (%.1f MB logical)" % (
              c["current_wheels"], c["current_bytes"] / MB, c["current_members"], c["old_wheels"],
              c["old_bytes"] / MB))
    P("")

    read_bytes = one(r, "readset", "bytes_read", 0)
    read_files = one(r, "readset", "files_read", 0)
    if read_bytes is not None:
        P("the job reads %d files, %.1f MB, from its cache (strace of pip on a warm ext4 cache)" % (
            read_files, read_bytes / MB))
    sc = one(r, "seed", "cache_bytes", 0)
    if sc is not None:
        P("seeded pip cache: %.1f MB in %d files; tar+zstd -1 archive %.1f MB (%.1f s to save)" % (
            sc / MB, one(r, "seed", "cache_files", 0) or 0, (one(r, "archive", "archive_bytes", 0) or 0) / MB,
            one(r, "archive", "save", 0) or 0))
    for kind in ("file", "webdav", "s3"):
        s = "seed-push"
        if one(r, s, "copy", kind) is None:
            continue
        up = one(r, s, "server_put_bytes", kind)
        if up is None:
            up = one(r, s, "bytes_out", kind)
        P("seed push to %-6s: copy %.1f s, umount+push %.1f s, %.1f MB uploaded; the store held %.1f MB"
          " logical, %.1f MB unique (upload/unique %.2fx)" % (
            kind, one(r, s, "copy", kind) or 0, one(r, s, "umount_push", kind) or 0, (up or 0) / MB,
            (one(r, s, "store_logical_bytes", kind) or 0) / MB, (one(r, s, "store_unique_bytes", kind) or 0) / MB,
            ratio(up, one(r, s, "store_unique_bytes", kind)) or 0))
    P("")

    # ---- pip scenarios
    rows = [("nocache", "no cache (empty dir, ext4)", [], ["install"]),
            ("archive", "tar+zstd restore, then install", ["download", "extract"], ["install"]),
            ("cold-file", "pkgcachefs cold, file://", ["mount"], ["install"]),
            ("cold-webdav", "pkgcachefs cold, WebDAV (nginx)", ["mount"], ["install"]),
            ("cold-s3", "pkgcachefs cold, S3 (s3rver+nginx)", ["mount"], ["install"]),
            ("warm", "pkgcachefs warm (store remounted)", ["mount"], ["install"]),
            ("ext4warm", "pip cache on ext4, warm (ref.)", [], ["install"])]
    # remote-bench.sh --variants: cold-KIND@NAME, after the plain cold rows.
    variants = sorted(s for s in r if s.startswith("cold-") and "@" in s)
    rows[5:5] = [(s, "pkgcachefs " + s, ["mount"], ["install"]) for s in variants]
    warm_total = statistics.median(per_rep(r, "warm", ["mount", "install"])) if per_rep(r, "warm", ["mount", "install"]) else None
    nocache_total = med(r, "nocache", "install")
    ext4_total = med(r, "ext4warm", "install")
    P("pip install of the job's set on a fresh host (median of reps; seconds; MB = 10^6 bytes)")
    hdr = "%-36s %6s %7s %7s %6s %6s %6s %8s %8s %8s %7s %6s" % (
        "scenario", "ready", "install", "total", "/warm", "/ext4", "/noc.", "index MB", "cache MB", "total MB",
        "/read", "umount")
    P(hdr)
    P("-" * len(hdr))
    summary = {}
    for s, label, pre, main_ in rows:
        if s not in r:
            continue
        tot = per_rep(r, s, pre + main_)
        total = statistics.median(tot) if tot else None
        ready = statistics.median(per_rep(r, s, pre)) if pre and per_rep(r, s, pre) else (0.0 if not pre else None)
        inst = med(r, s, "install")
        idx = med(r, s, "index_get_bytes")
        if s == "archive":
            cache = med(r, s, "archive_get_bytes")
        elif s.startswith("cold-") or s == "warm":
            cache = med(r, s, "server_get_bytes")
            if cache is None:
                cache = med(r, s, "bytes_in")
        else:
            cache = 0.0
        dl = None if idx is None or cache is None else idx + cache
        rd = ratio(cache, read_bytes) if s.startswith("cold-") or s == "archive" else None
        um = med(r, s, "umount")
        n = len(tot)
        summary[s] = {"total": total, "cache": cache, "dl": dl, "reps": n}
        P("%-36s %6s %7s %7s %6s %6s %6s %8s %8s %8s %7s %6s%s" % (
            label, f(ready), f(inst), f(total), f(ratio(total, warm_total), "%.2fx"),
            f(ratio(total, ext4_total), "%.2fx"),
            f(ratio(total, nocache_total), "%.2fx"), mb2(idx), mb(cache), mb(dl), f(rd, "%.2fx"), f(um),
            "" if not fails(r, s) else "  (%d FAILED)" % fails(r, s)))
    P("")
    P("ready: archive download + extract, or pkgcachefs mount; /warm, /ext4 and /noc.: total against"
      " the warm mount's, the warm ext4 cache's and the no-cache run's median total of the same run; cache MB: bytes the remote or"
      " the archive server sent (server access log; file://: remote-stats bytes_in); /read: cache MB"
      " against the bytes the job reads from its cache; umount: the unmount after the job (pushes"
      " the job's trace and pip's rewritten index entries; not in total)")
    P("")
    P("per rep (total s | cache MB):")
    for s, label, pre, main_ in rows:
        if s not in r:
            continue
        reps = sorted(set(r[s].get("install", {})))
        cells = []
        for rep in reps:
            t = sum(one(r, s, k, rep) or 0 for k in pre + main_)
            c = one(r, s, "server_get_bytes", rep)
            if c is None:
                c = one(r, s, "bytes_in", rep)
            if s == "archive":
                c = one(r, s, "archive_get_bytes", rep)
            cells.append("%.2f|%s" % (t, mb(c)))
        P("  %-12s %s" % (s, "  ".join(cells)))
    for kind in ("file", "webdav", "s3"):
        s = "first-" + kind
        if s not in r:
            continue
        t = (one(r, s, "mount", 0) or 0) + (one(r, s, "install", 0) or 0)
        c = one(r, s, "server_get_bytes", 0)
        if c is None:
            c = one(r, s, "bytes_in", 0)
        P("  %-12s %.2f|%s  (first job on the remote: no access trace to prefetch from; mount %.2f s)"
          % (s, t, mb(c), one(r, s, "mount", 0) or 0))
    P("")
    P("pkgcachefs cold runs, fetch detail (median): fetched_bytes = chunk data the reads needed,"
      " fetch_wire_bytes = bytes the range reads moved, bytes_in = everything from the remote")
    for s in ("first-file", "first-webdav", "first-s3", "cold-file", "cold-webdav", "cold-s3",
              *variants, "warm"):
        if s not in r:
            continue
        P("  %-20s fetched %8s MB  wire %8s MB  bytes_in %8s MB  requests %6s  server GETs %6s"
          " (packs %s MB, catalogs %s MB, traces %s MB)  fetch_failures %s" % (
              s, mb(med(r, s, "fetched_bytes")), mb(med(r, s, "fetch_wire_bytes")),
              mb(med(r, s, "bytes_in")), f(med(r, s, "requests"), "%.0f"),
              f(med(r, s, "server_get_requests"), "%.0f"), mb(med(r, s, "server_get_packs_bytes")),
              mb(med(r, s, "server_get_ns_bytes")), mb(med(r, s, "server_get_trace_bytes")),
              f(med(r, s, "fetch_failures"), "%.0f")))
    P("")
    P("where the requests' time went (median of the session sums, seconds; requests overlap, so"
      " the sums can exceed the wall time; first byte includes connect and TLS; readers waited:"
      " the time the job's reads spent blocked on the remote, summed over concurrent readers)")
    P("  %-20s %8s %9s %8s %8s %11s %9s %12s %14s" % ("scenario", "requests", "new conns",
      "connect", "TLS", "first byte", "in all", "mean/request", "readers waited"))
    for s in ("first-webdav", "first-s3", "cold-webdav", "cold-s3", *variants):
        if s not in r or med(r, s, "request_us") is None:
            continue
        n = med(r, s, "requests")
        tot = med(r, s, "request_us")
        waited = med(r, s, "read_wait_us")
        P("  %-20s %8s %9s %8s %8s %11s %9s %12s %14s" % (
            s, f(n, "%.0f"), f(med(r, s, "connects"), "%.0f"), f((med(r, s, "connect_us") or 0) / 1e6),
            f((med(r, s, "tls_us") or 0) / 1e6), f((med(r, s, "first_byte_us") or 0) / 1e6),
            f(tot / 1e6), f(tot / 1e3 / n if n else None, "%.1f ms"),
            f(waited / 1e6 if waited is not None else None)))
    P("")

    # ---- push
    push_rows = []
    for kind in ("file", "webdav", "s3"):
        s = "push-" + kind
        if s not in r:
            continue
        for step in ("new", "bump"):
            changed = one(r, s, "cache_changed_bytes", step)
            shared = one(r, "wheel", "shared_bytes", step) or 0
            wheel = one(r, "wheel", "wheel_bytes", step)
            newdata = None if changed is None else changed - shared
            up = one(r, s, "server_put_bytes", step)
            up_src = "server"
            if up is None:
                up = one(r, s, "bytes_out", step)
                up_src = "bytes_out"
            push_rows.append((kind, step, wheel, changed, shared, newdata, up, up_src,
                              one(r, s, "server_put_packs_bytes", step), one(r, s, "server_put_ns_bytes", step),
                              one(r, s, "server_put_trace_bytes", step), one(r, s, "umount_push", step),
                              one(r, s, "bytes_out", step)))
    if push_rows:
        P("push after one job adds a package (one run each): new data = cache files new or changed"
          " by the job, minus zip members byte-identical to members already on the remote")
        hdr = "%-7s %-5s %9s %10s %9s %9s %10s %7s %9s %9s %9s %7s" % (
            "remote", "step", "wheel MB", "changed MB", "shared MB", "new MB", "upload MB", "/new",
            "packs MB", "catalog", "trace", "push s")
        P(hdr)
        P("-" * len(hdr))
        for kind, step, wheel, changed, shared, newdata, up, src, pk, ns, tr, t, bo in push_rows:
            P("%-7s %-5s %9s %10s %9s %9s %10s %7s %9s %9s %9s %7s" % (
                kind, step, mb(wheel), mb(changed), mb(shared), mb(newdata), mb(up),
                f(ratio(up, newdata), "%.2fx"), mb(pk), mb(ns), mb(tr), f(t)))
        P("(upload: PUT request bytes at the server, headers included; file://: remote-stats bytes_out."
          " new: a package no earlier job had; bump: a point release of one already on the remote)")
        P("")

    # ---- namespace
    if "ns-build" in r:
        nsj = os.path.join(out, "ns.json")
        ns = json.load(open(nsj)) if os.path.exists(nsj) else {}
        b = r["ns-build"]
        P("large namespace: %s files, %.2f GB logical (%s small files of %.2f GB drawn from %s distinct"
          " contents; %s large files of %.0f MB, copies of %s distinct ones)" % (
              ns.get("files"), ns.get("logical_bytes", 0) / 1e9, ns.get("small_files"),
              ns.get("small_bytes", 0) / 1e9, ns.get("small_distinct"), ns.get("large_files"),
              ns.get("large_bytes_each", 0) / MB, ns.get("large_distinct")))
        P("built through a mount: small files %.1f s + 2 large %.1f s, umount+push %.1f s (%.1f MB up);"
          " remount, 98 more large copies %.1f s, umount+push %.1f s (%.1f MB up)" % (
              one(r, "ns-build", "copy_small", 0) or 0, one(r, "ns-build", "copy_large_1", 0) or 0,
              one(r, "ns-build", "umount_push_1", 0) or 0, (one(r, "ns-build", "s1_bytes_out", 0) or 0) / MB,
              one(r, "ns-build", "copy_large_2", 0) or 0, one(r, "ns-build", "umount_push_2", 0) or 0,
              (one(r, "ns-build", "s2_bytes_out", 0) or 0) / MB))
        P("the remote holds %s objects, %.1f MB (catalogs %.2f MB)" % ( f(one(r, "ns-build", "remote_objects", 0), "%.0f"),
              (one(r, "ns-build", "remote_bytes", 0) or 0) / MB, (one(r, "ns-build", "catalog_bytes", 0) or 0) / MB))
        hdr = "%-7s %8s %8s %8s %8s %8s %9s %10s %10s" % (
            "remote", "mount s", "min", "max", "stat s", "read s", "walk s", "files", "MB in")
        P(hdr)
        P("-" * len(hdr))
        for kind in ("file", "webdav", "s3"):
            s = "ns-" + kind
            if s not in r:
                continue
            m = vals(r, s, "mount")
            inb = med(r, s, "server_get_bytes")
            if inb is None:
                inb = med(r, s, "bytes_in")
            P("%-7s %8s %8s %8s %8s %8s %9s %10s %10s%s" % (
                kind, f(med(r, s, "mount")), f(min(m) if m else None), f(max(m) if m else None),
                f(med(r, s, "stat_one"), "%.3f"), f(med(r, s, "read_one"), "%.3f"), f(med(r, s, "walk")), f(med(r, s, "files_seen"), "%.0f"),
                mb(inb), "" if not fails(r, s) else "  (%d FAILED)" % fails(r, s)))
        P("(mount: `pkgcachefs mount` of an empty store until it returns with the mount ready; stat:"
          " one large file's size just after; read: cat of one small file (fetched); walk: `find -type f | wc -l` of the whole tree)")
        P("")

    # ---- targets
    P("targets")
    nsm = [med(r, "ns-" + k, "mount") for k in ("file", "webdav", "s3") if "ns-" + k in r]
    nsm = [x for x in nsm if x is not None]
    if nsm:
        P("  cold mount of the large namespace < 2 s: %s (median %s s over remotes)" % (
            "met" if max(nsm) < 2 else "MISSED", "/".join("%.2f" % x for x in nsm)))
    for kind in ("file", "webdav", "s3"):
        s = "cold-" + kind
        if s in summary and warm_total:
            x = ratio(summary[s]["total"], warm_total)
            P("  cold %s within 1.3x of warm: %s (%.2fx)" % (kind, "met" if x is not None and x <= 1.3 else "MISSED", x or 0))
    link = machine.get("link", "loopback")
    goal = {"15:200": 1.2, "50:50": 1.5}.get(link)
    for kind in ("webdav", "s3"):
        s = "cold-" + kind
        if goal and s in summary and ext4_total:
            x = ratio(summary[s]["total"], ext4_total)
            P("  cold %s over a %s link within %.1fx of the warm ext4 cache: %s (%.2fx)" % (
                kind, link, goal, "met" if x is not None and x <= goal else "MISSED", x or 0))
    for kind in ("file", "webdav", "s3"):
        s = "cold-" + kind
        if s in summary and read_bytes:
            x = ratio(summary[s]["cache"], read_bytes)
            P("  cold %s downloads within 1.1x of what the job reads: %s (%.2fx)" % (
                kind, "met" if x is not None and x <= 1.1 else "MISSED", x or 0))
    for kind, step, wheel, changed, shared, newdata, up, *_ in push_rows:
        x = ratio(up, newdata)
        P("  push after %s on %s within 1.1x of its new data: %s (%.2fx)" % (
            "a new package" if step == "new" else "a point release", kind,
            "met" if x is not None and x <= 1.1 else "MISSED", x or 0))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
