#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Deterministic package-cache corpus for tools/bench/bench.sh.

Subcommands:
  wheels DIR --size-mb N --seed S   pip http-v2 cache + Poetry artifacts + point releases
  tree DIR --files N --seed S       node_modules-like tree of small files
  analyze DIR --out FILE.json       sizes, per-file sha256, whole-file and zip-member unique bytes
  verify MANIFEST.json DIR          compare DIR with a manifest (names, sizes, sha256)
  pipcopy SRC DST [--chunk BYTES]   copy a tree with small write() calls, like pip's downloader

The same arguments always give the same bytes: all content comes from SHAKE-128 keyed by
(seed, name), and every choice from random.Random seeded with a string.

Why the corpus looks like this (see /work/shared/DESIGN-NOTES.md): a real cache is dominated
by a few large, already-compressed wheels and thousands of small files. Wheels are real zip
files whose members are random bytes stored uncompressed (ZIP_STORED), which models deflated
payloads (they do not compress) while letting a content-defined chunker find the members that
two point releases share. The same wheels appear in pip's cache and in Poetry's (whole-file
dedup). Point releases change about one member in twelve, add one, and rewrite dist-info.
"""

import argparse
import base64
import hashlib
import json
import math
import os
import random
import shutil
import stat
import sys
import zipfile

GEN_VERSION = 1
KiB = 1 << 10
MiB = 1 << 20
ZIP_DATE = (2024, 1, 1, 0, 0, 0)
FIXED_MTIME = 1704067200  # 2024-01-01T00:00:00Z

PKG_NAMES = [
    "torch", "numpy", "scipy", "pandas", "pyarrow", "grpcio", "tensorflow_cpu", "opencv_python",
    "scikit_learn", "matplotlib", "pillow", "lxml", "cryptography", "psycopg2_binary", "shapely",
    "polars", "duckdb", "onnxruntime", "transformers", "tokenizers", "xgboost", "lightgbm",
    "numba", "llvmlite", "pydantic_core", "orjson", "regex", "h5py", "statsmodels", "sympy",
    "jaxlib", "triton", "ray", "pymupdf", "kiwisolver", "fonttools", "greenlet", "zstandard",
    "uvloop", "aiohttp", "pyzmq", "bcrypt", "rpds_py", "msgpack", "ujson", "frozenlist",
    "yarl", "multidict", "markupsafe", "pyyaml", "cffi", "psutil", "coverage", "mypy",
]
PLAT = "cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64"


def rbytes(key, n):
    """n pseudo-random bytes determined by key (a str)."""
    if n <= 0:
        return b""
    return hashlib.shake_128(key.encode()).digest(n)


def loguniform(rng, lo, hi):
    return int(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def human(n):
    for unit, div in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", KiB)):
        if abs(n) >= div:
            return "%.2f %s" % (n / div, unit)
    return "%d B" % n


# ---------------------------------------------------------------------------------------------
# Wheels


class Wheel:
    """A wheel described by its members; content is generated when written.

    members: list of (name, content_key, length) for payload members; dist-info is derived.
    """

    def __init__(self, pkg, version, members):
        self.pkg = pkg
        self.version = version
        self.members = members

    @property
    def filename(self):
        return "%s-%s-%s.whl" % (self.pkg, self.version, PLAT)

    @property
    def url(self):
        h = hashlib.sha256(self.filename.encode()).hexdigest()
        return "https://pypi.example/packages/%s/%s/%s/%s" % (h[:2], h[2:4], h[4:], self.filename)


def plan_members(rng, wkey, pkg, size):
    """Payload members adding up to about size bytes (zip headers come on top)."""
    cap = max(64 * KiB, min(16 * MiB, size // 4))
    members = []
    total = 0
    i = 0
    dirs = [pkg, pkg + "/_lib", pkg + "/core", pkg + "/ops", pkg + ".libs", pkg + "/data"]
    while total < size:
        n = loguniform(rng, 1 * KiB, cap)
        n = min(n, size - total)
        d = rng.choice(dirs)
        ext = ".so" if d.endswith(".libs") or n > 256 * KiB else rng.choice([".py", ".pyc", ".pyi", ".dat"])
        members.append(("%s/m%04d%s" % (d, i, ext), "%s:m%d" % (wkey, i), n))
        total += n
        i += 1
    return members


def dist_info(wheel, records):
    di = "%s-%s.dist-info" % (wheel.pkg, wheel.version)
    metadata = ("Metadata-Version: 2.1\nName: %s\nVersion: %s\nSummary: Benchmark wheel %s\n"
                "Requires-Python: >=3.9\nLicense: MIT\n\n" % (wheel.pkg, wheel.version, wheel.pkg))
    metadata += ("Long description of %s %s. " % (wheel.pkg, wheel.version)) * 40
    whl = "Wheel-Version: 1.0\nGenerator: bench (%d)\nRoot-Is-Purelib: false\nTag: %s\n" % (
        GEN_VERSION, PLAT.replace("-manylinux_2_17_x86_64.manylinux2014_x86_64",
                                  "-manylinux_2_17_x86_64"))
    files = [(di + "/METADATA", metadata.encode()), (di + "/WHEEL", whl.encode()),
             (di + "/top_level.txt", (wheel.pkg + "\n").encode())]
    lines = list(records)
    for name, data in files:
        lines.append("%s,sha256=%s,%d" % (name, b64sha(data), len(data)))
    lines.append(di + "/RECORD,,")
    files.append((di + "/RECORD", ("\n".join(lines) + "\n").encode()))
    return files


def b64sha(data):
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def zinfo(name):
    zi = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    zi.compress_type = zipfile.ZIP_STORED
    zi.external_attr = (0o100644 & 0xFFFF) << 16
    zi.create_system = 3
    return zi


def write_wheel(wheel, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    records = []
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, key, n in wheel.members:
            data = rbytes(key, n)
            zf.writestr(zinfo(name), data)
            records.append("%s,sha256=%s,%d" % (name, b64sha(data), n))
        for name, data in dist_info(wheel, records):
            zf.writestr(zinfo(name), data)
    os.utime(path, (FIXED_MTIME, FIXED_MTIME))


def point_release(rng, wheel, tag):
    """Next patch version: ~1 member in 12 rewritten (size +-10%), one member added."""
    parts = wheel.version.split(".")
    parts[-1] = str(int(parts[-1]) + 1)
    members = []
    for name, key, n in wheel.members:
        if rng.random() < 1 / 12:
            n = max(1, int(n * rng.uniform(0.9, 1.1)))
            key = key + ":" + tag
        members.append((name, key, n))
    if not any(k.endswith(":" + tag) for _, k, _ in members):
        i = rng.randrange(len(members))
        name, key, n = members[i]
        members[i] = (name, key + ":" + tag, n)
    members.append(("%s/new_%s.py" % (wheel.pkg, tag), "%s:new:%s" % (wheel.pkg, tag),
                    loguniform(rng, 1 * KiB, 64 * KiB)))
    return Wheel(wheel.pkg, ".".join(parts), members)


def pip_key_dir(root, url):
    k = hashlib.sha224(url.encode()).hexdigest()
    return os.path.join(root, "pip", "http-v2", k[0], k[1], k[2], k[3], k[4]), k


def pip_header(rng, url, body_len, ctype):
    """Stand-in for pip's serialized response header file (<key> next to <key>.body)."""
    etag = hashlib.md5(url.encode()).hexdigest()
    hdr = ("cc=4,\x00{\"response\":{\"status\":200,\"version\":11,\"reason\":\"OK\",\"headers\":{"
           "\"Content-Type\":\"%s\",\"Content-Length\":\"%d\",\"ETag\":\"\\\"%s\\\"\","
           "\"Cache-Control\":\"max-age=365000000, immutable, public\","
           "\"Last-Modified\":\"Mon, 01 Jan 2024 00:00:00 GMT\",\"Accept-Ranges\":\"bytes\","
           "\"X-Served-By\":\"cache-%06d\"},\"strict\":0,\"decode_content\":false},"
           "\"vary\":{}}" % (ctype, body_len, etag, rng.randrange(10**6)))
    return hdr.encode() + rbytes("hdr:" + url, rng.randrange(64, 512))


def write_pip_entry(rng, root, url, body_writer, ctype):
    d, k = pip_key_dir(root, url)
    os.makedirs(d, exist_ok=True)
    body = os.path.join(d, k + ".body")
    body_writer(body)
    n = os.path.getsize(body)
    with open(os.path.join(d, k), "wb") as f:
        f.write(pip_header(rng, url, n, ctype))
    for p in (body, os.path.join(d, k)):
        os.utime(p, (FIXED_MTIME, FIXED_MTIME))
    return body


def simple_page(rng, pkg, size):
    """A PEP 691 JSON index page (compressible text with hex hashes)."""
    files = []
    n = 0
    i = 0
    while n < size:
        fn = "%s-%d.%d.%d-%s.whl" % (pkg, i // 20, (i // 4) % 5, i % 4, PLAT)
        h = hashlib.sha256(("%s%d" % (pkg, i)).encode()).hexdigest()
        ent = {"filename": fn, "url": "https://pypi.example/packages/%s/%s/%s/%s" % (h[:2], h[2:4], h[4:], fn),
               "hashes": {"sha256": h}, "requires-python": ">=3.%d" % (6 + i % 6),
               "size": rng.randrange(10**5, 10**8), "upload-time": "2023-%02d-%02dT10:00:00Z" % (1 + i % 12, 1 + i % 28),
               "yanked": False, "data-dist-info-metadata": {"sha256": h[::-1]}}
        s = json.dumps(ent)
        files.append(ent)
        n += len(s) + 2
        i += 1
    return json.dumps({"meta": {"api-version": "1.1"}, "name": pkg, "files": files,
                       "versions": sorted({f["filename"].split("-")[1] for f in files})}, indent=1).encode()


def gen_wheels(root, size_mb, seed):
    """Write the wheel corpus under root; returns a summary dict."""
    rng = random.Random("wheels:%d" % seed)
    budget = size_mb * MiB
    # logical = base (pip) + base (poetry) + point releases (~30% of base)
    base_budget = int(budget / 2.3)
    sizes = [min(200 * MiB, int(base_budget * 0.35))]
    left = base_budget - sizes[0]
    while left >= 1 * MiB:
        s = min(left, loguniform(rng, 1 * MiB, 40 * MiB))
        sizes.append(s)
        left -= s
    names = list(PKG_NAMES)
    rng.shuffle(names)
    if "torch" in names:
        names.remove("torch")
    names.insert(0, "torch")
    wheels = []
    for i, s in enumerate(sizes):
        pkg = names[i % len(names)] + ("" if i < len(names) else "_%d" % (i // len(names)))
        version = "%d.%d.%d" % (rng.randrange(1, 4), rng.randrange(0, 30), rng.randrange(0, 5))
        wkey = "s%d:%s" % (seed, pkg)
        wheels.append(Wheel(pkg, version, plan_members(rng, wkey, pkg, s)))

    # Point releases: wheels other than the largest, up to ~30% of the base bytes; a third of
    # them get a second point release derived from the first.
    releases = []
    pr_budget = int(base_budget * 0.30)
    cands = wheels[1:]
    rng.shuffle(cands)
    for w in cands:
        sz = sum(m[2] for m in w.members)
        if pr_budget <= 0:
            break
        if sz > pr_budget * 1.5 and releases:
            continue
        v2 = point_release(rng, w, "v2")
        releases.append(v2)
        pr_budget -= sz
        if rng.random() < 1 / 3 and pr_budget > 0:
            releases.append(point_release(rng, v2, "v3"))
            pr_budget -= sz

    ctype = "application/octet-stream"
    total = 0
    for n, w in enumerate(wheels + releases):
        body = write_pip_entry(rng, root, w.url, lambda p, w=w: write_wheel(w, p), ctype)
        total += os.path.getsize(body)
        if n < len(wheels):
            h = hashlib.sha256(w.url.encode()).hexdigest()
            dst = os.path.join(root, "poetry", "artifacts", h[:2], h[2:4], h[4:6], h[6:], w.filename)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(body, dst)
            os.utime(dst, (FIXED_MTIME, FIXED_MTIME))
        print("  wheels: %3d/%d %s (%s)" % (n + 1, len(wheels) + len(releases), w.filename,
                                             human(os.path.getsize(body))), file=sys.stderr, flush=True)

    # pip also caches index pages: small-to-medium JSON bodies next to small headers.
    pages = 0
    for w in wheels:
        for j in range(2):
            url = "https://pypi.example/simple/%s/?v=%d" % (w.pkg, j)
            size = loguniform(rng, 2 * KiB, 300 * KiB)

            def writer(p, pkg=w.pkg, size=size):
                with open(p, "wb") as f:
                    f.write(simple_page(rng, pkg, size))

            write_pip_entry(rng, root, url, writer, "application/vnd.pypi.simple.v1+json")
            pages += 1
    return {"wheels": len(wheels), "point_releases": len(releases), "index_pages": pages}


# ---------------------------------------------------------------------------------------------
# Small-file tree

WORDS = ("const let var function return if else for while require module exports import from "
         "default async await new this null undefined true false typeof instanceof Object Array "
         "String Number Promise resolve reject then catch map filter reduce forEach push length "
         "options config value key index result error callback args props state node path fs "
         "buffer stream emit listener handler parse stringify prototype call apply bind").split()
LICENSES = [
    "MIT License\n\nCopyright (c) %s contributors\n\nPermission is hereby granted, free of charge, "
    "to any person obtaining a copy of this software and associated documentation files (the "
    "\"Software\"), to deal in the Software without restriction, including without limitation the "
    "rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies of the "
    "Software.\n\nTHE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND.\n" % who
    for who in ("The OpenJS Foundation", "Sindre Sorhus", "Microsoft Corporation")
] + ["ISC License\n\nPermission to use, copy, modify, and/or distribute this software for any "
     "purpose with or without fee is hereby granted.\n"]


def line_pool(rng, n=3000):
    pool = []
    for _ in range(n):
        k = rng.randrange(3, 12)
        pool.append("  " * rng.randrange(0, 4) + " ".join(rng.choice(WORDS) for _ in range(k)) +
                    rng.choice([";", " {", "}", ",", ");", ""]) + "\n")
    return pool


def text_of(rng, pool, size):
    out = "".join(rng.choices(pool, k=size // 30 + 4))
    return out[:size].encode()


def gen_tree(root, nfiles, seed):
    """node_modules-like tree with exactly nfiles regular files (100 B - 20 KiB)."""
    rng = random.Random("tree:%d" % seed)
    pool = line_pool(rng)
    made = 0
    dirs = 0
    pkgno = 0

    def mkfile(path, data, mode=0o644):
        nonlocal made
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, mode)
        os.utime(path, (FIXED_MTIME, FIXED_MTIME))
        made += 1

    def mkdir(path):
        nonlocal dirs
        os.makedirs(path, exist_ok=True)
        dirs += 1

    def size():
        return loguniform(rng, 100, 20 * KiB)

    def package(base, depth):
        nonlocal pkgno
        pkgno += 1
        name = "%s-%s%d" % (rng.choice(WORDS).lower(), rng.choice(WORDS).lower(), pkgno)
        if rng.random() < 0.15:
            mkdir(os.path.join(base, "@scope%d" % (pkgno % 37)))
            name = "@scope%d/%s" % (pkgno % 37, name)
        d = os.path.join(base, name)
        mkdir(d)
        pj = json.dumps({"name": name, "version": "%d.%d.%d" % (rng.randrange(5), rng.randrange(20), rng.randrange(9)),
                         "main": "index.js", "license": "MIT",
                         "dependencies": {rng.choice(WORDS).lower() + str(rng.randrange(500)): "^1.0.0"
                                          for _ in range(rng.randrange(0, 6))},
                         "description": text_of(rng, pool, rng.randrange(40, 400)).decode()}, indent=2)
        mkfile(os.path.join(d, "package.json"), pj.encode())
        if made >= nfiles:
            return
        mkfile(os.path.join(d, "LICENSE"), LICENSES[rng.randrange(len(LICENSES))].encode())
        if rng.random() < 0.7 and made < nfiles:
            mkfile(os.path.join(d, "README.md"), text_of(rng, pool, size()))
        nsub = min(int(rng.expovariate(1 / 9)) + 1, 60)
        subdirs = [""] + rng.sample(["lib", "dist", "src", "types", "esm", "cjs", "lib/internal", "bin"], 3)
        for s in subdirs[1:]:
            mkdir(os.path.join(d, s))
        for i in range(nsub):
            if made >= nfiles:
                return
            s = rng.choice(subdirs)
            r = rng.random()
            if r < 0.08:
                fn, data, mode = "f%d.wasm" % i, rbytes("tree:%d:%s:%d" % (seed, name, i), size()), 0o644
            elif r < 0.15:
                fn, data, mode = "f%d.png" % i, rbytes("tree:%d:%s:%d" % (seed, name, i), size()), 0o644
            elif s == "bin":
                fn, data, mode = "cli%d.js" % i, b"#!/usr/bin/env node\n" + text_of(rng, pool, size()), 0o755
            else:
                fn = "f%d%s" % (i, rng.choice([".js", ".js", ".mjs", ".d.ts", ".js.map", ".cjs"]))
                data, mode = text_of(rng, pool, size()), 0o644
            mkfile(os.path.join(d, s, fn), data, mode)
        if depth < 2 and rng.random() < 0.1:
            nm = os.path.join(d, "node_modules")
            mkdir(nm)
            for _ in range(rng.randrange(1, 4)):
                if made >= nfiles:
                    return
                package(nm, depth + 1)

    top = os.path.join(root, "node_modules")
    mkdir(top)
    while made < nfiles:
        package(top, 0)
    return {"files": made, "dirs": dirs, "packages": pkgno}


# ---------------------------------------------------------------------------------------------
# Analysis and verification


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(4 * MiB)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def walk_files(root):
    for dp, dn, fn in os.walk(root):
        dn.sort()
        for f in sorted(fn):
            p = os.path.join(dp, f)
            yield os.path.relpath(p, root), p


def member_unique(paths_by_hash, sizes):
    """Bytes left when identical zip members are stored once: for each distinct file, zip
    structure (headers, central directory) plus members not seen before; non-zips whole."""
    seen = set()
    total = 0
    for h, p in paths_by_hash.items():
        size = sizes[h]
        try:
            zf = zipfile.ZipFile(p)
        except (zipfile.BadZipFile, OSError):
            total += size
            continue
        with zf:
            inner = 0
            for zi in zf.infolist():
                inner += zi.compress_size
                if zi.compress_type != zipfile.ZIP_STORED:
                    continue
                mh = hashlib.sha256(zf.read(zi)).digest()
                if mh not in seen:
                    seen.add(mh)
                    total += zi.compress_size
            total += size - inner
            # deflated members are counted whole, as if unique
            total += sum(zi.compress_size for zi in zf.infolist() if zi.compress_type != zipfile.ZIP_STORED)
    return total


def analyze(root, zips=True):
    files = {}
    by_hash = {}
    sizes = {}
    dirs = 0
    for dp, dn, fn in os.walk(root):
        dirs += len(dn)
    for rel, p in walk_files(root):
        st = os.lstat(p)
        if not stat.S_ISREG(st.st_mode):
            continue
        h = sha256_file(p)
        files[rel] = [st.st_size, h]
        by_hash.setdefault(h, p)
        sizes[h] = st.st_size
    logical = sum(v[0] for v in files.values())
    wf_unique = sum(sizes.values())
    out = {"files": len(files), "dirs": dirs, "logical_bytes": logical,
           "whole_file_unique_bytes": wf_unique, "distinct_files": len(by_hash)}
    if zips:
        out["member_unique_bytes"] = member_unique(by_hash, sizes)
    out["manifest"] = files
    return out


def verify(manifest_path, root):
    with open(manifest_path) as f:
        man = json.load(f)["manifest"]
    got = {}
    bad = []
    for rel, p in walk_files(root):
        st = os.lstat(p)
        if stat.S_ISREG(st.st_mode):
            got[rel] = p
    missing = sorted(set(man) - set(got))
    extra = sorted(set(got) - set(man))
    for rel in sorted(set(man) & set(got)):
        size, h = man[rel]
        if os.path.getsize(got[rel]) != size or sha256_file(got[rel]) != h:
            bad.append(rel)
    ok = not (missing or extra or bad)
    print("verify %s: %d files, %d missing, %d extra, %d differ%s" % (
        root, len(man), len(missing), len(extra), len(bad), "" if ok else
        " (first: %s)" % (missing + extra + bad)[0]))
    return 0 if ok else 1


def pipcopy(src, dst, chunk):
    """Copy regular files and directories with write() calls of `chunk` bytes, no fsync."""
    n = 0
    for dp, dn, fn in os.walk(src):
        rel = os.path.relpath(dp, src)
        os.makedirs(os.path.join(dst, rel), exist_ok=True)
        for f in fn:
            with open(os.path.join(dp, f), "rb", buffering=0) as fi, \
                    open(os.path.join(dst, rel, f), "wb", buffering=0) as fo:
                while True:
                    b = fi.read(chunk)
                    if not b:
                        break
                    fo.write(b)
            n += 1
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("wheels")
    a.add_argument("dir")
    a.add_argument("--size-mb", type=int, default=1024)
    a.add_argument("--seed", type=int, default=1)
    a = sub.add_parser("tree")
    a.add_argument("dir")
    a.add_argument("--files", type=int, default=10000)
    a.add_argument("--seed", type=int, default=1)
    a = sub.add_parser("analyze")
    a.add_argument("dir")
    a.add_argument("--out", required=True)
    a.add_argument("--no-zips", action="store_true")
    a = sub.add_parser("verify")
    a.add_argument("manifest")
    a.add_argument("dir")
    a = sub.add_parser("pipcopy")
    a.add_argument("src")
    a.add_argument("dst")
    a.add_argument("--chunk", type=int, default=10 * KiB)
    args = ap.parse_args()

    if args.cmd == "wheels":
        os.makedirs(args.dir, exist_ok=True)
        print(json.dumps(gen_wheels(args.dir, args.size_mb, args.seed)))
    elif args.cmd == "tree":
        os.makedirs(args.dir, exist_ok=True)
        print(json.dumps(gen_tree(args.dir, args.files, args.seed)))
    elif args.cmd == "analyze":
        res = analyze(args.dir, zips=not args.no_zips)
        res["generator_version"] = GEN_VERSION
        with open(args.out, "w") as f:
            json.dump(res, f)
        res.pop("manifest")
        print(json.dumps(res))
    elif args.cmd == "verify":
        return verify(args.manifest, args.dir)
    elif args.cmd == "pipcopy":
        pipcopy(args.src, args.dst, args.chunk)
    return 0


if __name__ == "__main__":
    sys.exit(main())
