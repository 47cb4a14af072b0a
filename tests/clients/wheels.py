#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Hand-built wheels, a PEP 503 index for them, and a check of what pip installed.

    wheels.py build OUTDIR           writes OUTDIR/packages/*.whl, OUTDIR/simple/... and
                                     OUTDIR/wheels.json (what was built)
    wheels.py serve OUTDIR PORTFILE LOG
                                     serves OUTDIR on 127.0.0.1 on a free port (written to
                                     PORTFILE once listening), one line per request in LOG
    wheels.py verify OUTDIR VENV NAME==VER...
                                     every member of those wheels is installed in VENV, byte
                                     for byte (RECORD excepted: pip rewrites it)

The packages model a real cache: alpha -> beta -> gamma (dependencies), gamma carries a 20 MiB
incompressible data file (a multi-chunk file), and delta 2.0.0 / 2.0.1 are two point releases
whose large members are identical, stored uncompressed in the zip like most wheel payloads
that are already compressed, so content-defined chunking can share them.  Everything is
derived from fixed seeds: two builds give identical wheels.

The server sends what PyPI sends for files, "Cache-Control: max-age=365000000, immutable", and
an ETag: pip stores a response in its HTTP cache only when the origin says it may (plain
http.server sends neither header, and pip would then never print "Using cached").  Index pages
get max-age=600, like PyPI's simple pages.
"""

import base64
import hashlib
import http.server
import io
import json
import os
import random
import sys
import zipfile

MIB = 1024 * 1024
DATE = (2024, 1, 1, 0, 0, 0)


def blob(seed, size):
    return random.Random(seed).randbytes(size)


def packages():
    """(name, version, requires, {member: bytes}) for every wheel of the index."""
    shared = {
        "delta/tables/part%d.bin" % i: blob("delta-shared-%d" % i, 1 * MIB + 4096 * i)
        for i in range(6)
    }
    out = [
        ("alpha", "1.0.0", ["beta>=1.0"], {
            "alpha/__init__.py": b'"""alpha"""\nimport beta\n__version__ = "1.0.0"\n',
            "alpha/core.py": b"def hello():\n    return 'alpha says hello'\n" * 20,
        }),
        ("beta", "1.2.0", ["gamma==3.0"], {
            "beta/__init__.py": b'"""beta"""\nimport gamma\n__version__ = "1.2.0"\n',
            "beta/util.py": blob("beta-util", 30000).hex().encode(),
        }),
        ("gamma", "3.0", [], {
            "gamma/__init__.py": b'"""gamma"""\n__version__ = "3.0"\n',
            "gamma/data/blob.bin": blob("gamma-blob", 20 * MIB),
        }),
    ]
    for ver in ("2.0.0", "2.0.1"):
        members = {
            "delta/__init__.py": ('"""delta"""\n__version__ = "%s"\n' % ver).encode(),
            "delta/changed.bin": blob("delta-changed-" + ver, 200000),
        }
        members.update(shared)
        out.append(("delta", ver, [], members))
    return out


def record_hash(data):
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def wheel_name(name, ver):
    return "%s-%s-py3-none-any.whl" % (name, ver)


def dist_info_members(name, ver, requires):
    meta = "Metadata-Version: 2.1\nName: %s\nVersion: %s\nSummary: test package %s\n" % (
        name, ver, name)
    for r in requires:
        meta += "Requires-Dist: %s\n" % r
    wheel = ("Wheel-Version: 1.0\nGenerator: pkgcachefs-tests (%s)\nRoot-Is-Purelib: true\n"
             "Tag: py3-none-any\n") % os.path.basename(__file__)
    di = "%s-%s.dist-info" % (name, ver)
    return {di + "/METADATA": meta.encode(), di + "/WHEEL": wheel.encode()}


def build_wheel(path, name, ver, requires, members):
    members = dict(members)
    members.update(dist_info_members(name, ver, requires))
    record_name = "%s-%s.dist-info/RECORD" % (name, ver)
    record = "".join("%s,%s,%d\n" % (m, record_hash(d), len(d)) for m, d in members.items())
    record += "%s,,\n" % record_name
    members[record_name] = record.encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for m, d in members.items():
            info = zipfile.ZipInfo(m, DATE)
            info.external_attr = 0o644 << 16
            # Large members stored, small ones deflated, as bdist_wheel does for data that
            # does not compress.
            info.compress_type = zipfile.ZIP_STORED if len(d) > 65536 else zipfile.ZIP_DEFLATED
            zf.writestr(info, d)
    with open(path, "wb") as f:
        f.write(buf.getvalue())
    return hashlib.sha256(buf.getvalue()).hexdigest(), len(buf.getvalue())


def build(outdir):
    pkgdir = os.path.join(outdir, "packages")
    os.makedirs(pkgdir, exist_ok=True)
    built = []
    links = {}
    for name, ver, requires, members in packages():
        fn = wheel_name(name, ver)
        sha, size = build_wheel(os.path.join(pkgdir, fn), name, ver, requires, members)
        built.append({"name": name, "version": ver, "file": fn, "sha256": sha, "size": size})
        links.setdefault(name, []).append((fn, sha))
    simple = os.path.join(outdir, "simple")
    os.makedirs(simple, exist_ok=True)
    with open(os.path.join(simple, "index.html"), "w") as f:
        f.write("<!DOCTYPE html>\n<html><body>\n")
        for name in sorted(links):
            f.write('<a href="%s/">%s</a>\n' % (name, name))
        f.write("</body></html>\n")
    for name, files in links.items():
        d = os.path.join(simple, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "index.html"), "w") as f:
            f.write("<!DOCTYPE html>\n<html><body>\n")
            for fn, sha in files:
                f.write('<a href="../../packages/%s#sha256=%s">%s</a>\n' % (fn, sha, fn))
            f.write("</body></html>\n")
    with open(os.path.join(outdir, "wheels.json"), "w") as f:
        json.dump(built, f, indent=1)
    for b in built:
        print("built %s (%d bytes)" % (b["file"], b["size"]))


class Handler(http.server.SimpleHTTPRequestHandler):
    log_file = None

    def end_headers(self):
        path = self.path.split("?")[0]
        if path.endswith(".whl"):
            self.send_header("Cache-Control", "max-age=365000000, immutable, public")
            self.send_header("ETag", '"%s"' % hashlib.sha256(path.encode()).hexdigest()[:32])
        else:
            self.send_header("Cache-Control", "max-age=600, public")
        super().end_headers()

    def log_request(self, code="-", size="-"):
        code = getattr(code, "value", code)
        self.log_file.write("%s %s %s\n" % (self.command, self.path, code))
        self.log_file.flush()

    def log_message(self, *args):
        pass


def serve(outdir, portfile, logpath):
    Handler.log_file = open(logpath, "a")

    def handler(*a, **kw):
        return Handler(*a, directory=outdir, **kw)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    tmp = portfile + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % srv.server_address[1])
    os.rename(tmp, portfile)
    srv.serve_forever()


def verify(outdir, venv, reqs):
    site = None
    for root, dirs, _ in os.walk(os.path.join(venv, "lib")):
        if os.path.basename(root) == "site-packages":
            site = root
            break
    if site is None:
        sys.exit("verify: no site-packages below %s" % venv)
    want = {(n, v): m for n, v, _, m in packages()}
    problems = []
    for req in reqs:
        name, ver = req.split("==")
        members = dict(want[(name, ver)])
        members.update(dist_info_members(name, ver, [r for n, v, r, _ in packages()
                                                      if (n, v) == (name, ver)][0]))
        for m, data in members.items():
            p = os.path.join(site, m)
            try:
                with open(p, "rb") as f:
                    got = f.read()
            except OSError as e:
                problems.append("%s: %s" % (req, e))
                continue
            if got != data:
                problems.append("%s: %s differs from the wheel (%d bytes, want %d)" % (
                    req, m, len(got), len(data)))
    if problems:
        sys.exit("verify: installed files differ from the wheels:\n  " + "\n  ".join(problems))
    print("verify: %d distributions installed byte for byte" % len(reqs))


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "build":
        build(sys.argv[2])
    elif len(sys.argv) == 5 and sys.argv[1] == "serve":
        serve(*sys.argv[2:])
    elif len(sys.argv) >= 4 and sys.argv[1] == "verify":
        verify(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
