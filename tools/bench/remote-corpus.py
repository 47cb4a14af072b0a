#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Deterministic pip corpus and large namespace for tools/bench/remote-bench.sh.

Subcommands:
  index DIR [--seed S]          real wheels, a PEP 503 index (DIR/simple, DIR/packages) and the
                                requirement sets (DIR/req-*.txt); DIR/corpus.json describes it
  newdata CORPUS.json NAME==VER [--against SET...]
                                bytes of that wheel not already in the wheels of SET (zip
                                members byte-identical to one of theirs are not new)
  ns DIR --files N --large-bytes B [--seed S]
                                the source of a large namespace: DIR/small/ (N - L small files
                                in pip's and uv's layouts, drawn from a pool of contents) and
                                DIR/large/a, DIR/large/b (two distinct files of B bytes);
                                DIR/ns.json says how many copies of each large file to make
  readset STRACE_LOG CACHE_DIR  bytes of the distinct cache files a traced pip run opened
                                read-only (sizes now), from `strace -f -e trace=openat`
  sumlog LOG METHOD [PREFIX]    from an nginx access log in the format
                                "$request_method $uri $status $bytes_sent $request_length":
                                requests, bytes sent (GET) or request bytes (PUT) per top
                                directory, as JSON
  statdiff BEFORE.json AFTER.json
  statsnap DIR OUT.json         (size, mtime) of every file below DIR without reading any
                                (reading on a pkgcachefs mount would fetch and trace), and the
                                bytes of files new or changed between two snapshots

Why it looks like this (see /work/shared/DESIGN-NOTES.md and corpus.py): wheels are real zips.
Payload libraries (.so) are random bytes stored uncompressed, which models deflated members:
they do not compress and a content-defined chunker can still see two point releases share
them. Python sources are generated text, deflated, many small members per wheel, so pip's
install does real unzip and file-creation work. A point release rewrites about one member in
twelve, adds one, and changes the version strings and dist-info. Sizes follow a common
scientific stack (torch, pyarrow, scipy, numpy, pandas, ... and small pure-Python packages).

All bytes come from SHAKE-128 keyed by (seed, name) and every choice from random.Random seeded
with a string: the same arguments always give the same wheels.
"""

import argparse
import base64
import hashlib
import io
import json
import math
import os
import random
import re
import sys
import zipfile

GEN_VERSION = 1
KiB = 1 << 10
MiB = 1 << 20
ZIP_DATE = (2024, 1, 1, 0, 0, 0)
FIXED_MTIME = 1704067200
TAG = "py3-none-any"

# (name, current version, size in MiB, older point release in the remote?)
STACK = [
    ("torch", "2.1.2", 64, True), ("pyarrow", "14.0.2", 20, True), ("scipy", "1.11.4", 16, True),
    ("numpy", "1.26.3", 12, True), ("pandas", "2.1.4", 10, True), ("opencv_python", "4.9.0", 8, False),
    ("scikit_learn", "1.3.2", 8, False), ("matplotlib", "3.8.2", 6, False), ("grpcio", "1.60.0", 5, False),
    ("cryptography", "41.0.7", 4, True), ("lxml", "5.0.1", 4, False), ("pillow", "10.2.0", 3, False),
    ("pydantic_core", "2.14.6", 2, True), ("regex", "2023.12.25", 0.8, True), ("pyyaml", "6.0.1", 0.7, False),
    ("pytz", "2023.3", 0.5, False), ("orjson", "3.9.10", 0.4, False), ("tzdata", "2023.4", 0.35, False),
    ("python_dateutil", "2.8.2", 0.25, False), ("certifi", "2023.11.17", 0.16, True),
    ("charset_normalizer", "3.3.2", 0.15, False), ("jinja2", "3.1.3", 0.13, False),
    ("idna", "3.6", 0.1, False), ("urllib3", "2.1.0", 0.1, True), ("click", "8.1.7", 0.1, False),
    ("requests", "2.31.0", 0.06, False), ("attrs", "23.2.0", 0.06, False),
    ("packaging", "23.2", 0.05, False), ("markupsafe", "2.1.3", 0.03, False),
    ("typing_extensions", "4.9.0", 0.03, False), ("six", "1.16.0", 0.01, False),
]
# The package a later job adds (brand new), and the dependency bump after it.
NEW_PKG = ("polars", "0.20.3", 18)
BUMP_PKG = "numpy"

WORDS = ("def class return import from self None True False if elif else for while in not and "
         "or try except finally with as yield lambda raise assert pass break continue global "
         "array dtype shape axis index value result data buffer offset length kwargs args "
         "np torch tensor module layer config parse load save cache path name key items").split()


def rbytes(key, n):
    return hashlib.shake_128(key.encode()).digest(n) if n > 0 else b""


def loguniform(rng, lo, hi):
    return int(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def bump(version):
    parts = version.split(".")
    parts[-1] = str(int(re.sub(r"\D.*", "", parts[-1]) or 0) + 1)
    return ".".join(parts)


def older(version):
    parts = version.split(".")
    n = int(re.sub(r"\D.*", "", parts[-1]) or 0)
    if n > 0:
        parts[-1] = str(n - 1)
    else:
        parts[-2] = str(max(0, int(parts[-2]) - 1))
        parts[-1] = "9"
    return ".".join(parts)


class Pools:
    def __init__(self, seed):
        rng = random.Random("lines:%d" % seed)
        self.lines = []
        for _ in range(4000):
            k = rng.randrange(2, 10)
            self.lines.append("    " * rng.randrange(0, 3) + " ".join(rng.choice(WORDS) for _ in range(k)) +
                              rng.choice([":", "", "()", ",", " = None", "]"]) + "\n")

    def text(self, key, size):
        rng = random.Random("text:" + key)
        s = "".join(rng.choices(self.lines, k=size // 28 + 4))
        return s[:size].encode()


def plan(seed, name, mib):
    """Members of a wheel: [(path, kind, content key, length)], kind 'so' (random, stored) or
    'py' (text, deflated)."""
    rng = random.Random("plan:%d:%s" % (seed, name))
    size = int(mib * MiB)
    members = []
    npy = max(3, min(1200, int(mib * 28)))
    text_total = 0
    for i in range(npy):
        n = loguniform(rng, 300, 24 * KiB)
        sub = rng.choice(["", "/core", "/utils", "/_internal", "/io", "/tests"])
        members.append(("%s%s/m%04d.py" % (name, sub, i), "py", "%d:%s:py%d" % (seed, name, i), n))
        text_total += n
    left = size - text_total // 3  # text deflates about 3x
    i = 0
    cap = max(64 * KiB, min(16 * MiB, left // 3))
    while left > 16 * KiB:
        n = min(left, loguniform(rng, 32 * KiB, cap))
        members.append(("%s.libs/lib%s_%03d.so" % (name, name, i), "so", "%d:%s:so%d" % (seed, name, i), n))
        left -= n
        i += 1
    return members


def point_release(seed, name, members, tag):
    """Rewrite about one member in twelve (content), add one."""
    rng = random.Random("pr:%d:%s:%s" % (seed, name, tag))
    out = []
    for path, kind, key, n in members:
        if rng.random() < 1 / 12:
            key = key + ":" + tag
            n = max(64, int(n * rng.uniform(0.9, 1.1)))
        out.append((path, kind, key, n))
    out.append(("%s/added_%s.py" % (name, tag), "py", "%d:%s:add:%s" % (seed, name, tag), 4000))
    return out


def b64sha(data):
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(pools, name, version, members):
    """The wheel's bytes and, per stored member, (content key, length)."""
    buf = io.BytesIO()
    records = []
    with zipfile.ZipFile(buf, "w") as zf:
        def add(path, data, deflate):
            zi = zipfile.ZipInfo(path, date_time=ZIP_DATE)
            zi.external_attr = 0o644 << 16
            zi.create_system = 3
            zi.compress_type = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
            zf.writestr(zi, data, compresslevel=6 if deflate else None)
            records.append("%s,sha256=%s,%d" % (path, b64sha(data), len(data)))

        init = ('"""%s"""\n__version__ = "%s"\n' % (name, version)).encode()
        add("%s/__init__.py" % name, init, True)
        for path, kind, key, n in members:
            if kind == "so":
                add(path, rbytes(key, n), False)
            else:
                add(path, pools.text(key, n), True)
        di = "%s-%s.dist-info" % (name, version)
        meta = ("Metadata-Version: 2.1\nName: %s\nVersion: %s\nSummary: benchmark package %s\n"
                "Requires-Python: >=3.8\n\n" % (name.replace("_", "-"), version, name)).encode()
        whl = ("Wheel-Version: 1.0\nGenerator: pkgcachefs-bench (%d)\nRoot-Is-Purelib: true\nTag: %s\n"
               % (GEN_VERSION, TAG)).encode()
        add(di + "/METADATA", meta, True)
        add(di + "/WHEEL", whl, True)
        add(di + "/top_level.txt", (name + "\n").encode(), True)
        rec = "\n".join(records + [di + "/RECORD,,"]) + "\n"
        add(di + "/RECORD", rec.encode(), True)
    return buf.getvalue()


def cmd_index(out, seed):
    pools = Pools(seed)
    pkgdir = os.path.join(out, "packages")
    os.makedirs(pkgdir, exist_ok=True)
    wheels = {}   # "name==ver" -> {file, size, sha256, stored: [[key, len]]}
    links = {}
    sets = {"old": [], "current": [], "new": [], "bump": []}

    def emit(name, version, members, sets_in):
        fn = "%s-%s-%s.whl" % (name, version, TAG)
        data = build_wheel(pools, name, version, members)
        with open(os.path.join(pkgdir, fn), "wb") as f:
            f.write(data)
        os.utime(os.path.join(pkgdir, fn), (FIXED_MTIME, FIXED_MTIME))
        sha = hashlib.sha256(data).hexdigest()
        req = "%s==%s" % (name, version)
        wheels[req] = {"file": fn, "size": len(data), "sha256": sha,
                       "stored": [[k, n] for _, kind, k, n in members if kind == "so"],
                       "members": len(members) + 5}
        links.setdefault(name, []).append((fn, sha))
        for s in sets_in:
            sets[s].append(req)
        print("  %-45s %8.2f MiB" % (fn, len(data) / MiB), file=sys.stderr, flush=True)

    for name, ver, mib, has_old in STACK:
        m = plan(seed, name, mib)
        if has_old:
            emit(name, older(ver), point_release(seed, name, m, "old"), ["old"])
        emit(name, ver, m, ["current"])
        if name == BUMP_PKG:
            emit(name, bump(ver), point_release(seed, name, m, "bump"), ["bump"])
    name, ver, mib = NEW_PKG
    emit(name, ver, plan(seed, name, mib), ["new"])

    simple = os.path.join(out, "simple")
    os.makedirs(simple, exist_ok=True)
    with open(os.path.join(simple, "index.html"), "w") as f:
        f.write("<!DOCTYPE html>\n<html><body>\n")
        for n in sorted(links):
            f.write('<a href="%s/">%s</a>\n' % (n.replace("_", "-"), n))
        f.write("</body></html>\n")
    for n, files in links.items():
        d = os.path.join(simple, n.replace("_", "-"))
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "index.html"), "w") as f:
            f.write("<!DOCTYPE html>\n<html><body>\n<h1>Links for %s</h1>\n" % n)
            for fn, sha in files:
                f.write('<a href="../../packages/%s#sha256=%s" data-requires-python="&gt;=3.8">%s</a><br/>\n'
                        % (fn, sha, fn))
            f.write("</body></html>\n")
    for s, reqs in sets.items():
        with open(os.path.join(out, "req-%s.txt" % s), "w") as f:
            f.write("".join(r + "\n" for r in reqs))
    summary = {"generator_version": GEN_VERSION, "seed": seed, "wheels": wheels, "sets": sets}
    for s, reqs in sets.items():
        summary["%s_bytes" % s] = sum(wheels[r]["size"] for r in reqs)
        summary["%s_wheels" % s] = len(reqs)
        summary["%s_members" % s] = sum(wheels[r]["members"] for r in reqs)
    with open(os.path.join(out, "corpus.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps({k: v for k, v in summary.items() if k.endswith(("_bytes", "_wheels", "_members"))}))


def new_bytes(corpus, req, against):
    """Bytes of wheel req whose stored members are not byte-identical to a stored member of a
    wheel in the sets `against` (zip headers, dist-info and deflated text count as new)."""
    w = corpus["wheels"][req]
    seen = set()
    for s in against:
        for r in corpus["sets"][s]:
            if r != req:
                seen.update(tuple(x) for x in corpus["wheels"][r]["stored"])
    shared = sum(n for k, n in w["stored"] if (k, n) in seen)
    return w["size"] - shared, shared


def cmd_newdata(path, req, against):
    with open(path) as f:
        corpus = json.load(f)
    new, shared = new_bytes(corpus, req, against)
    print(json.dumps({"wheel": req, "size": corpus["wheels"][req]["size"], "new_bytes": new,
                      "shared_bytes": shared}))


def cmd_ns(out, nfiles, large_bytes, nlarge, seed):
    """Small files from a pool of 3000 contents (1 - 12 KiB), in pip's http-v2 and uv's layouts;
    two distinct large files; the large copies are made by the caller, on the mount."""
    rng = random.Random("ns:%d" % seed)
    small = os.path.join(out, "small")
    pool = [rbytes("ns:%d:pool:%d" % (seed, i), loguniform(rng, 1 * KiB, 12 * KiB)) for i in range(3000)]
    nsmall = nfiles - nlarge
    logical = 0
    for i in range(nsmall):
        h = hashlib.sha224(b"%d:%d" % (seed, i)).hexdigest()
        if i % 2 == 0:
            d = os.path.join(small, "pip", "http-v2", h[0], h[1], h[2], h[3], h[4])
            fn = h + (".body" if i % 4 == 0 else "")
        else:
            d = os.path.join(small, "uv", "archive-v0", h[:16], "pkg%d" % (i % 7))
            fn = "mod%d.py" % (i % 13)
        os.makedirs(d, exist_ok=True)
        data = pool[rng.randrange(len(pool))]
        with open(os.path.join(d, fn), "wb") as f:
            f.write(data)
        logical += len(data)
    large = os.path.join(out, "large")
    os.makedirs(large, exist_ok=True)
    for tag in ("a", "b"):
        with open(os.path.join(large, tag), "wb") as f:
            left = large_bytes
            j = 0
            while left > 0:
                n = min(left, 16 * MiB)
                f.write(rbytes("ns:%d:large:%s:%d" % (seed, tag, j), n))
                left -= n
                j += 1
    info = {"small_files": nsmall, "small_bytes": logical, "small_distinct": len(pool),
            "large_files": nlarge, "large_bytes_each": large_bytes, "large_distinct": 2,
            "files": nfiles, "logical_bytes": logical + nlarge * large_bytes}
    with open(os.path.join(out, "ns.json"), "w") as f:
        json.dump(info, f)
    print(json.dumps(info))


OPENAT = re.compile(r'openat\(AT_FDCWD, "([^"]+)", ([A-Z_|]+)[^)]*\) = (\d+)')


def cmd_readset(log, cache):
    cache = os.path.realpath(cache) + "/"
    files = set()
    with open(log, errors="replace") as f:
        for line in f:
            m = OPENAT.search(line)
            if not m:
                continue
            path, flags = m.group(1), m.group(2)
            if not path.startswith(cache) or "O_WRONLY" in flags or "O_RDWR" in flags or "O_DIRECTORY" in flags:
                continue
            files.add(path)
    total = 0
    n = 0
    for p in sorted(files):
        try:
            st = os.stat(p)
        except OSError:
            continue
        if os.path.isfile(p):
            total += st.st_size
            n += 1
    print(json.dumps({"files_read": n, "bytes_read": total}))


def cmd_sumlog(log, method, start_line):
    """Sums over the lines of LOG after line start_line."""
    out = {"requests": 0, "bytes": 0, "by_dir": {}, "status": {}}
    with open(log, errors="replace") as f:
        for i, line in enumerate(f):
            if i < start_line:
                continue
            p = line.split()
            if len(p) < 5 or p[0] != method:
                continue
            uri, status, sent, reqlen = p[1], p[2], int(p[3]), int(p[4])
            n = sent if method in ("GET", "HEAD") else reqlen
            # /cache/packs/x.pack or /pkgcache/prefix/packs/x.pack: the directory after the base
            parts = [x for x in uri.split("/") if x]
            top = "?"
            for k in ("packs", "ns", "trace", "gc", "config", "packages", "simple", "archive"):
                if k in parts:
                    top = k
                    break
            out["requests"] += 1
            out["bytes"] += n
            d = out["by_dir"].setdefault(top, [0, 0])
            d[0] += 1
            d[1] += n
            out["status"][status] = out["status"].get(status, 0) + 1
    print(json.dumps(out))


def cmd_statsnap(d, out):
    snap = {}
    for dp, dn, fn in os.walk(d):
        for f in fn:
            p = os.path.join(dp, f)
            st = os.lstat(p)
            snap[os.path.relpath(p, d)] = [st.st_size, st.st_mtime_ns]
    with open(out, "w") as f:
        json.dump(snap, f)


def cmd_statdiff(a, b):
    with open(a) as f:
        before = json.load(f)
    with open(b) as f:
        after = json.load(f)
    changed = [p for p, v in after.items() if before.get(p) != v]
    print(json.dumps({"files_changed": len(changed), "bytes_changed": sum(after[p][0] for p in changed),
                      "files_removed": len(set(before) - set(after))}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("index")
    a.add_argument("dir")
    a.add_argument("--seed", type=int, default=1)
    a = sub.add_parser("newdata")
    a.add_argument("corpus")
    a.add_argument("req")
    a.add_argument("--against", nargs="+", default=["old", "current"])
    a = sub.add_parser("ns")
    a.add_argument("dir")
    a.add_argument("--files", type=int, default=100000)
    a.add_argument("--large", type=int, default=100)
    a.add_argument("--large-bytes", type=int, default=95 * 1000 * 1000)
    a.add_argument("--seed", type=int, default=1)
    a = sub.add_parser("readset")
    a.add_argument("log")
    a.add_argument("cache")
    a = sub.add_parser("sumlog")
    a.add_argument("log")
    a.add_argument("method")
    a.add_argument("start_line", type=int, nargs="?", default=0)
    a = sub.add_parser("statsnap")
    a.add_argument("dir")
    a.add_argument("out")
    a = sub.add_parser("statdiff")
    a.add_argument("before")
    a.add_argument("after")
    args = ap.parse_args()
    if args.cmd == "index":
        cmd_index(args.dir, args.seed)
    elif args.cmd == "newdata":
        cmd_newdata(args.corpus, args.req, args.against)
    elif args.cmd == "ns":
        cmd_ns(args.dir, args.files, args.large_bytes, args.large, args.seed)
    elif args.cmd == "readset":
        cmd_readset(args.log, args.cache)
    elif args.cmd == "sumlog":
        cmd_sumlog(args.log, args.method, args.start_line)
    elif args.cmd == "statsnap":
        cmd_statsnap(args.dir, args.out)
    elif args.cmd == "statdiff":
        cmd_statdiff(args.before, args.after)
    return 0


if __name__ == "__main__":
    sys.exit(main())
