# SPDX-License-Identifier: MIT
"""A static npm registry on loopback for the package-manager tests (no public registry needed).

    npm_registry.py build OUTDIR        packages (see PACKAGES) as tarballs + packuments
    npm_registry.py serve OUTDIR PORTFILE LOG
                                        serves them on 127.0.0.1 on a free port; LOG gets
                                        "GET /path status" per request

A package's tarball holds package/package.json, package/index.js and a 2 MiB data file of its
own random bytes (so a cache that keeps it is visible in the store). Packuments carry dist.tarball
(absolute URL on this server, filled in at request time), dist.integrity (sha512) and shasum.
"""
import base64, hashlib, http.server, io, json, os, random, sys, tarfile

PACKAGES = {  # name: (version, dependencies)
    "pcf-left": ("1.0.0", {"pcf-right": "^2.0.0"}),
    "pcf-right": ("2.1.0", {}),
    "pcf-solo": ("0.3.0", {}),
}


def add(tar, name, data, mode=0o644):
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode, ti.mtime = len(data), mode, 499162500
    tar.addfile(ti, io.BytesIO(data))


def build(out):
    os.makedirs(out, exist_ok=True)
    for name, (ver, deps) in PACKAGES.items():
        pj = {"name": name, "version": ver, "main": "index.js", "dependencies": deps}
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            add(tar, "package/package.json", json.dumps(pj, indent=2).encode())
            add(tar, "package/index.js", b"module.exports = %s;\n" % json.dumps(name).encode())
            add(tar, "package/data.bin", random.Random(name).randbytes(2 << 20))
        tgz = buf.getvalue()
        fname = "%s-%s.tgz" % (name, ver)
        with open(os.path.join(out, fname), "wb") as f:
            f.write(tgz)
        # Old release times: yarn 4 quarantines versions younger than its age gate, and
        # versions without a time.
        t = "2020-01-01T00:00:00.000Z"
        doc = {"name": name, "dist-tags": {"latest": ver}, "time": {"created": t, "modified": t, ver: t},
               "versions": {ver: dict(pj, dist={
            "tarball": "@BASE@/%s/-/%s" % (name, fname),
            "shasum": hashlib.sha1(tgz).hexdigest(),
            "integrity": "sha512-" + base64.b64encode(hashlib.sha512(tgz).digest()).decode()})}}
        with open(os.path.join(out, name + ".json"), "w") as f:
            json.dump(doc, f)


def serve(out, portfile, logpath):
    log = open(logpath, "a", buffering=1)

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            path = self.path.split("?")[0].strip("/").replace("%2f", "/").replace("%2F", "/")
            parts = path.split("/")
            body, ctype = None, "application/json"
            if len(parts) == 1 and parts[0] in PACKAGES:
                base = "http://%s" % self.headers.get("Host", "127.0.0.1")
                with open(os.path.join(out, parts[0] + ".json")) as f:
                    body = f.read().replace("@BASE@", base).encode()
            elif len(parts) == 3 and parts[1] == "-" and parts[0] in PACKAGES and "/" not in parts[2]:
                p = os.path.join(out, parts[2])
                if os.path.isfile(p):
                    body, ctype = open(p, "rb").read(), "application/octet-stream"
            status = 200 if body is not None else 404
            log.write("GET /%s %d\n" % (path, status))
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    with open(portfile + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(portfile + ".tmp", portfile)
    srv.serve_forever()


if __name__ == "__main__":
    if sys.argv[1:2] == ["build"] and len(sys.argv) == 3:
        build(sys.argv[2])
    elif sys.argv[1:2] == ["serve"] and len(sys.argv) == 5:
        serve(*sys.argv[2:5])
    else:
        sys.exit(__doc__)
