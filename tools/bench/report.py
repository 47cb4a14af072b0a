#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Turns the raw records of tools/bench/bench.sh into one table and results.json.

Input (all in OUT): config.json, results.tsv (target, rep, op, seconds|fail), extras.tsv
(target, rep, key, value), pkgcachefs-stats-*.json, and the corpus summaries named in config.
Output: the table on stdout and OUT/results.json. Medians are over successful reps; an op with
any failed rep shows "fail".

Targets (from the project's plan): every op no slower than passthrough_ll; warm read and tree
walk within 1.5x ext4; stored bytes within 5% of the unique content; daemon RSS under 100 MiB.
"""

import json
import os
import statistics
import sys

OPS = [  # (op, label, rule): rule is None (information only) or (vs passthrough, max x ext4)
    ("write", "write wheels (cp -a)", (True, None)),
    ("write_sync", "  sync after write", None),
    ("umount_after_write", "  umount after write", None),
    ("cold_read", "cold read (cat all)", (True, None)),
    ("warm_read", "warm read (cat all)", (True, 1.5)),
    ("pip_write", "write, 10 KiB write()s", (True, None)),
    ("tree_copy", "tree copy (cp -a)", (True, None)),
    ("tree_walk", "tree walk (find)", (True, 1.5)),
    ("tree_walk_cold", "  tree walk, cold", (True, None)),
    ("tree_delete", "tree delete (rm -rf)", (True, None)),
    ("rss_tree_copy", "tree copy (cp -a)", None),
    ("rss_tree_walk", "tree walk (find)", None),
    ("rss_umount", "umount", None),
    ("rss_tree_walk_cold", "tree walk, cold (remounted)", None),
]
TARGETS = ["ext4", "passthrough", "bindfs", "memfs", "pkgcachefs", "base"]
SHORT = {"passthrough": "pt", "pkgcachefs": "pkg", "memfs": "mem"}
MiB = 1 << 20
RSS_TARGET_MIB = 100
STORED_SLACK = 1.05


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_tsv(path):
    rows = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) == 4:
                    rows.append(parts)
    except OSError:
        pass
    return rows


def gib(n):
    return "%.3f GiB" % (n / (1 << 30))


def mib(n):
    return "%.1f MiB" % (n / MiB)


def fmt_s(v):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return "%.3f" % v if v < 10 else "%.2f" % v


def ratio(a, b):
    if not isinstance(a, float) or not isinstance(b, float) or b <= 0:
        return None
    return a / b


def fmt_r(r):
    return "-" if r is None else "%.2fx" % r


def main():
    out = sys.argv[1]
    cfg = load_json(os.path.join(out, "config.json")) or {}
    times = {}
    for target, rep, op, val in read_tsv(os.path.join(out, "results.tsv")):
        times.setdefault(target, {}).setdefault(op, []).append(val)
    extras = {}
    for target, rep, key, val in read_tsv(os.path.join(out, "extras.tsv")):
        extras.setdefault(target, {}).setdefault(key, []).append(val)

    med = {}
    for target, ops in times.items():
        for op, vals in ops.items():
            ok = [float(v) for v in vals if v != "fail"]
            m = "fail" if len(ok) != len(vals) else statistics.median(ok)
            med.setdefault(target, {})[op] = {"median_s": m, "runs_s": vals}

    def m(target, op):
        v = med.get(target, {}).get(op)
        return None if v is None else v["median_s"]

    res = {"config": cfg, "times": med, "verdicts": {}, "storage": {}, "rss": {}}
    lines = []
    p = lines.append
    present = [t for t in TARGETS if t in times]
    rss_mode = cfg.get("mode") == "rss"
    p("pkgcachefs benchmark (%s mode), %s, seconds; %s cores, kernel %s, fuse %s; load %s -> %s"
      % (cfg.get("mode", "?"), "one run" if rss_mode else "median of %s reps" % cfg.get("reps", "?"),
         cfg.get("nproc", "?"), cfg.get("kernel", "?"), cfg.get("fuse", "?"),
         cfg.get("loadavg_start", "?"), cfg.get("loadavg_end", "?")))
    if not cfg.get("drop_caches", 1):
        p("WARNING: drop_caches not writable: cold reads were not cold")

    corpus = load_json(os.path.join(cfg.get("wheel_corpus") or "/nonexistent", "summary.json"))
    tree = load_json(os.path.join(cfg.get("tree_corpus") or "/nonexistent", "summary.json"))
    if cfg.get("mode") == "main" and corpus:
        gen = load_json(os.path.join(cfg["wheel_corpus"], "gen.json")) or {}
        p("wheel corpus: %s logical in %d files (%d wheels in pip + Poetry, %d point releases, "
          "%d index pages); tree: %d files, %d dirs, %s"
          % (gib(corpus["logical_bytes"]), corpus["files"], gen.get("wheels", 0),
             gen.get("point_releases", 0), gen.get("index_pages", 0),
             tree["files"] if tree else 0, tree["dirs"] if tree else 0,
             mib(tree["logical_bytes"]) if tree else "?"))
    p("")

    # Seconds of each target measured, then pkgcachefs over each other target (base: the
    # --base build, for before/after), then the peers and the base over ext4.
    shown = [t for t in TARGETS if t in present] or ["ext4", "passthrough", "pkgcachefs"]
    pairs = [("pkgcachefs", t) for t in shown if t != "pkgcachefs"]
    pairs += [(t, "ext4") for t in ("passthrough", "bindfs", "memfs", "base") if t in shown and "ext4" in shown]
    hdr = ["operation"] + ["%s s" % SHORT.get(t, t) for t in shown] + \
          ["%s/%s" % (SHORT.get(a, a), SHORT.get(b, b)) for a, b in pairs] + ["verdict"]
    res["ratios"] = {}
    rows = []
    for op, label, rule in OPS:
        if not any(op in times.get(t, {}) for t in present):
            continue
        e, pt, pk = m("ext4", op), m("passthrough", op), m("pkgcachefs", op)
        verdict = "info" if rule is None else "-"
        if rule is not None and pk is not None:
            if pk == "fail":
                verdict = "FAIL (error)"
            else:
                bad = []
                vs_pt, x_ext4 = rule
                if vs_pt and isinstance(pt, float) and pk > pt:
                    bad.append("> pt")
                if x_ext4 and isinstance(e, float) and pk > x_ext4 * e:
                    bad.append("> %.1fx ext4" % x_ext4)
                missing = (vs_pt and not isinstance(pt, float)) or (x_ext4 and not isinstance(e, float))
                verdict = ("MISS " + ", ".join(bad)) if bad else ("ok" + (" (partial)" if missing else ""))
            res["verdicts"][op] = verdict
        rats = [ratio(m(a, op), m(b, op)) for a, b in pairs]
        res["ratios"][op] = {"%s/%s" % ab: r for ab, r in zip(pairs, rats)}
        rows.append([label] + [fmt_s(m(t, op)) for t in shown] + [fmt_r(r) for r in rats] + [verdict])
    widths = [max(len(str(r[i])) for r in rows + [hdr]) for i in range(len(hdr))]
    p("  ".join(h.ljust(widths[i]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(hdr)))
    for r in rows:
        p("  ".join(c.ljust(widths[i]) if i == 0 or i == len(r) - 1 else c.rjust(widths[i])
                    for i, c in enumerate(r)))
    if rss_mode:
        p("tree: %s files copied into each FUSE target, walked warm; unmounted, mounted again, walked cold"
          % cfg.get("rss_files"))
    else:
        p("targets: every op <= passthrough; warm read and tree walk <= 1.5x ext4. "
          "'info' rows are not judged.")
    p("")

    # Storage (main mode, pkgcachefs measured)
    if cfg.get("mode") == "main" and corpus:
        st = res["storage"]
        st["corpus_logical_bytes"] = corpus["logical_bytes"]
        st["whole_file_unique_bytes"] = corpus["whole_file_unique_bytes"]
        st["member_unique_bytes"] = corpus.get("member_unique_bytes")
        p("storage, wheel corpus: logical %s; unique by whole file %s; unique by zip member %s"
          % (gib(corpus["logical_bytes"]), gib(corpus["whole_file_unique_bytes"]),
             gib(corpus.get("member_unique_bytes", 0))))
        p("  (zip-member unique is the ideal a chunker can approach; a real CDC store sits a little "
          "above it: the chunks that straddle a changed member are not shared)")
        if "pkgcachefs" in times:
            stats = load_json(os.path.join(out, "pkgcachefs-stats-after_write.json"))
            final = load_json(os.path.join(out, "pkgcachefs-stats-final.json"))
            ex = extras.get("pkgcachefs", {})
            st["stats_after_write"] = stats
            st["stats_after_umount"] = final
            for k in ("store_du_after_write_bytes", "store_apparent_after_write_bytes",
                      "store_du_final_bytes"):
                if ex.get(k):
                    st[k] = int(ex[k][0])
            ideal = corpus.get("member_unique_bytes") or corpus["whole_file_unique_bytes"]
            if stats and isinstance(stats.get("stored_bytes"), int):
                sb = stats["stored_bytes"]
                lb = stats.get("logical_bytes")
                if m("pkgcachefs", "write") == "fail" or (isinstance(lb, int) and lb != corpus["logical_bytes"]):
                    v = "n/a: the store does not hold the whole corpus"
                else:
                    v = "ok" if sb <= STORED_SLACK * ideal else "MISS"
                st["verdict"] = v
                p("pkgcachefs after write and umount: stored_bytes %s = %.1f%% of zip-member unique, %.1f%% of "
                  "whole-file unique; dedup %.2fx  [target <= 105%% of unique: %s]"
                  % (gib(sb), 100 * sb / ideal, 100 * sb / corpus["whole_file_unique_bytes"],
                     corpus["logical_bytes"] / sb if sb else 0, v))
                if isinstance(lb, int):
                    p("  logical_bytes %d (%s), files %s"
                      % (lb, "matches the corpus" if lb == corpus["logical_bytes"] else
                         "DIFFERS from the corpus: %d" % corpus["logical_bytes"], stats.get("files")))
                more = ["%s %s" % (k, gib(stats[k]) if k.endswith("bytes") else stats[k])
                        for k in ("unique_bytes", "live_stored_bytes", "reclaimable_bytes", "chunks",
                                  "dead_chunks", "packs") if k in stats]
                if more:
                    p("  " + ", ".join(more))
            else:
                p("pkgcachefs stats --json after write and umount: unavailable or without stored_bytes")
            if "store_du_after_write_bytes" in st:
                p("  store directory after write (du, allocated): %s = %.1f%% of zip-member unique"
                  % (gib(st["store_du_after_write_bytes"]), 100 * st["store_du_after_write_bytes"] / ideal))
            if "store_du_final_bytes" in st:
                p("  store directory at the end (tree copied and deleted, umount): %s" % gib(st["store_du_final_bytes"]))
            if final and isinstance(final.get("stored_bytes"), int):
                p("  stats at the end: stored_bytes %s, logical_bytes %s, files %s"
                  % (gib(final["stored_bytes"]), gib(final.get("logical_bytes") or 0), final.get("files")))
        try:
            with open(os.path.join(out, "cdc-measure.txt")) as f:
                cdc = f.read().rstrip("\n")
            st["cdc_measure"] = cdc
            p("chunk-level ideal from cdc-measure (the store's chunker) on the wheel corpus:")
            for line in cdc.splitlines():
                p("  " + line)
        except OSError:
            pass
        p("")

    # Memory
    for t in ("passthrough", "bindfs", "pkgcachefs", "base"):
        ex = extras.get(t, {})
        r = {}
        for k, v in ex.items():
            if k.endswith("_kib"):
                vals = [int(x) for x in v if x.isdigit()]
                if vals:
                    r[k] = max(vals)
        if r:
            res["rss"][t] = r
    if res["rss"]:
        for t, r in list(res["rss"].items()):
            parts = []
            if rss_mode:
                labels = (("rss_after_write_vmhwm_kib", "peak RSS (VmHWM) after writing %s files" % cfg.get("rss_files")),
                          ("rss_after_walk_vmhwm_kib", "after walking them"),
                          ("rss_after_walk_rssanon_kib", "then anon"),
                          ("rss_after_walk_rssfile_kib", "file-backed"),
                          ("rss_cold_walk_vmhwm_kib", "peak of a fresh daemon walking them cold"))
            else:
                labels = (("write_vmhwm_kib", "peak RSS (VmHWM) writing the wheels"),
                          ("reads_vmhwm_kib", "reading them and the tree ops"),
                          ("reads_rssanon_kib", "at the end anon"),
                          ("reads_rssfile_kib", "file-backed"))
            for k, label in labels:
                if k in r:
                    parts.append("%s %s" % (label, mib(r[k] * 1024)))
            verdict = ""
            if not rss_mode and parts:
                parts[-1] += " (max of reps; rep 1 also reads everything once more, to verify)"
            if t in ("pkgcachefs", "base") and any("vmhwm" in k for k in r):
                peak = max(v for k, v in r.items() if "vmhwm" in k) / 1024
                verdict = "  [target < %d MiB: %s]" % (RSS_TARGET_MIB, "ok" if peak < RSS_TARGET_MIB else "MISS")
                if t == "pkgcachefs":
                    res["rss_verdict"] = verdict.strip(" []")
            p("memory %s: %s%s" % (t, "; ".join(parts), verdict))

    ver = []
    for t in present:
        ex = extras.get(t, {})
        for k in ("verify_wheels", "verify_tree"):
            if k in ex:
                ver.append("%s %s %s" % (t, k.split("_")[1], ex[k][0]))
    if ver:
        p("content check (rep 1, untimed): " + ", ".join(ver))
        res["verify"] = ver
    failed = sorted({"%s %s" % (t, op) for t, ops in med.items() for op, v in ops.items()
                     if v["median_s"] == "fail"})
    bad_content = [v for v in ver if v.endswith("FAIL")]
    res["errors"] = failed + bad_content
    if res["errors"]:
        p("ERRORS: " + ", ".join(res["errors"]) + " (see ops.log, verify.log, daemon.log)")
    p("run took %s s of wall time" % cfg.get("wall_seconds", "?"))

    text = "\n".join(line.rstrip() for line in lines)
    print(text)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
