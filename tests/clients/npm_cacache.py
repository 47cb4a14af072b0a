#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""An emulation of npm's cache (cacache) driven by several processes at once.

    npm_cacache.py write CACHE RECORDS WORKERS ENTRIES SEED
        WORKERS processes each store ENTRIES entries in CACHE, as cacache does, while one
        more process reads; each writer leaves RECORDS/worker-N.json (outside the cache)
        with what it stored.  Exits non-zero if any process saw an error.
    npm_cacache.py verify CACHE RECORDS
        checks the cache against the records.

What a writer does for one entry, as cacache does it:
  - content: write the bytes to tmp/<uuid> opened O_CREAT|O_EXCL, then move it to
    content-v2/sha512/<2 hex>/<2 hex>/<rest of the hex sha512>, across directories, by
    rename() (current cacache; rename over an existing identical file when two writers store
    the same content) or by link() + unlink() (older cacache; EEXIST means it is there).
    30% of entries come from a small shared pool, so writers race to publish the same content.
  - index: append "\\n<sha1 of json>\\t<json>" with one write() on a file opened O_APPEND to
    index-v5/<2 hex>/<2 hex>/<rest of sha256(key)>.  Only 12 keys exist, so several writers
    append to the same bucket at the same moment; some lines are large (up to 200 KiB, more
    than one FUSE write request).
The reader meanwhile parses random buckets and, for every line whose checksum is valid,
reads the content it points to: it must be complete (content is published before its index
line), exactly as npm relies on.

verify checks: every content file hashes to its own name and exactly the expected set is
there; tmp/ is empty; every bucket is named after its key and holds exactly the lines that
were appended to it (each intact, none lost, none duplicated, none torn or interleaved).
"""

import base64
import errno
import hashlib
import json
import os
import random
import sys
import time
import uuid

KEYS = ["make-fetch-happen:request-cache:http://registry.local/pkg-%d/-/pkg-%d-1.0.%d.tgz"
        % (k, k, k) for k in range(12)]
POOL = 20


def content_bytes(rng, big):
    r = rng.random()
    if big or r < 0.03:
        size = rng.randint(1 << 20, 4 << 20)
    elif r < 0.15:
        size = rng.randint(128 << 10, 1 << 20)
    else:
        size = rng.randint(0, 48 << 10)
    return rng.randbytes(size)


def pool_item(seed, i):
    rng = random.Random("pool-%s-%d" % (seed, i))
    return content_bytes(rng, i == 0)


def content_path(cache, hexdigest):
    return os.path.join(cache, "content-v2", "sha512", hexdigest[:2], hexdigest[2:4], hexdigest[4:])


def bucket_path(cache, key):
    h = hashlib.sha256(key.encode()).hexdigest()
    return os.path.join(cache, "index-v5", h[:2], h[2:4], h[4:])


def write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def put_content(cache, data, use_link):
    hexd = hashlib.sha512(data).hexdigest()
    tmpdir = os.path.join(cache, "tmp")
    os.makedirs(tmpdir, exist_ok=True)
    tmp = os.path.join(tmpdir, str(uuid.uuid4()))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        write_all(fd, data)
    finally:
        os.close(fd)
    # O_EXCL must refuse an existing name.
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        raise RuntimeError("O_EXCL open of existing %s succeeded" % tmp)
    except FileExistsError:
        pass
    dest = content_path(cache, hexd)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if use_link:
        try:
            os.link(tmp, dest)
        except FileExistsError:
            pass
        os.unlink(tmp)
    else:
        os.rename(tmp, dest)
    return hexd


def append_index(cache, key, hexd, size, rng, worker, i):
    meta = {"url": key, "worker": worker, "i": i,
            "pad": rng.randbytes(rng.choice([0, 16, 300, 3000, 70000, 200000])
                                 if rng.random() < 0.1 else rng.randint(0, 200)).hex()}
    integrity = "sha512-" + base64.b64encode(bytes.fromhex(hexd)).decode()
    entry = json.dumps({"key": key, "integrity": integrity, "time": int(time.time() * 1000),
                        "size": size, "metadata": meta}, separators=(",", ":"))
    line = "\n%s\t%s" % (hashlib.sha1(entry.encode()).hexdigest(), entry)
    path = bucket_path(cache, key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        data = line.encode()
        n = os.write(fd, data)  # one write(), as fs.appendFile does: must not be split
        if n != len(data):
            raise RuntimeError("short O_APPEND write to %s: %d of %d" % (path, n, len(data)))
    finally:
        os.close(fd)
    return entry


def writer(cache, records, worker, entries, seed):
    rng = random.Random("writer-%s-%d" % (seed, worker))
    done = []
    for i in range(entries):
        if rng.random() < 0.3:
            data = pool_item(seed, rng.randrange(POOL))
        else:
            data = content_bytes(rng, i == entries // 2)
        hexd = put_content(cache, data, rng.random() < 0.2)
        key = rng.choice(KEYS)
        entry = append_index(cache, key, hexd, len(data), rng, worker, i)
        done.append({"key": key, "entry": entry, "sha512": hexd})
    with open(os.path.join(records, "worker-%d.json" % worker), "w") as f:
        json.dump(done, f)
        f.flush()
        os.fsync(f.fileno())


def parse_bucket(data):
    """Yields (ok, line) for every non-empty line of a bucket."""
    for line in data.split(b"\n"):
        if not line:
            continue
        parts = line.split(b"\t", 1)
        ok = len(parts) == 2 and hashlib.sha1(parts[1]).hexdigest().encode() == parts[0]
        yield ok, line


def reader(cache, stop_file):
    """Concurrent reader: every checksummed line must point to complete content."""
    checked = 0
    while not os.path.exists(stop_file):
        for key in KEYS:
            try:
                with open(bucket_path(cache, key), "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                continue
            for ok, line in parse_bucket(data):
                if not ok:
                    continue  # possibly a line being appended right now: npm skips those too
                entry = json.loads(line.split(b"\t", 1)[1])
                hexd = base64.b64decode(entry["integrity"][7:]).hex()
                with open(content_path(cache, hexd), "rb") as f:
                    got = f.read()
                if hashlib.sha512(got).hexdigest() != hexd:
                    raise RuntimeError("reader: content %s indexed by %s is %d bytes and does "
                                       "not match its hash" % (hexd, key, len(got)))
                checked += 1
        time.sleep(0.05)
    print("reader: checked %d indexed contents while writers ran" % checked)


def run_write(cache, records, nworkers, entries, seed):
    os.makedirs(records, exist_ok=True)
    stop = os.path.join(records, "stop")
    pids = {}
    for w in range(nworkers + 1):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                if w == nworkers:
                    reader(cache, stop)
                else:
                    writer(cache, records, w, entries, seed)
            except BaseException as e:
                sys.stderr.write("%s %d: %s: %s\n" % ("reader" if w == nworkers else "writer",
                                                       w, type(e).__name__, e))
                code = 1
            sys.stdout.flush()
            os._exit(code)
        pids[pid] = w
    failed = 0
    for pid, w in pids.items():
        if w == nworkers:
            continue
        _, status = os.waitpid(pid, 0)
        failed += status != 0
    open(stop, "w").close()
    for pid, w in pids.items():
        if w == nworkers:
            _, status = os.waitpid(pid, 0)
            failed += status != 0
    if failed:
        sys.exit("write: %d process(es) failed (see above)" % failed)
    print("write: %d writers stored %d entries each" % (nworkers, entries))


def run_verify(cache, records):
    expected_lines = {}
    expected_content = set()
    n = 0
    for fn in sorted(os.listdir(records)):
        if "worker-" not in fn or not fn.endswith(".json"):
            continue
        for rec in json.load(open(os.path.join(records, fn))):
            line = ("%s\t%s" % (hashlib.sha1(rec["entry"].encode()).hexdigest(), rec["entry"]))
            path = bucket_path(cache, rec["key"])
            expected_lines.setdefault(path, []).append(line.encode())
            expected_content.add(rec["sha512"])
            n += 1
    if n == 0:
        sys.exit("verify: no worker records in %s" % records)
    problems = []

    found = set()
    croot = os.path.join(cache, "content-v2", "sha512")
    for root, _, files in os.walk(croot):
        for fn in files:
            p = os.path.join(root, fn)
            rel = os.path.relpath(p, croot).replace(os.sep, "")
            with open(p, "rb") as f:
                h = hashlib.sha512(f.read()).hexdigest()
            if h != rel:
                problems.append("content %s: data hashes to %s" % (p, h[:16]))
            found.add(rel)
    for h in sorted(expected_content - found):
        problems.append("content %s... is missing" % h[:16])
    for h in sorted(found - expected_content):
        problems.append("content %s... was never written" % h[:16])

    tmpdir = os.path.join(cache, "tmp")
    left = os.listdir(tmpdir) if os.path.isdir(tmpdir) else []
    if left:
        problems.append("tmp/ still holds %d files: %s" % (len(left), left[:3]))

    iroot = os.path.join(cache, "index-v5")
    buckets = set()
    for root, _, files in os.walk(iroot):
        for fn in files:
            buckets.add(os.path.join(root, fn))
    for b in sorted(buckets - set(expected_lines)):
        problems.append("bucket %s was never written" % b)
    nlines = 0
    for path, want in sorted(expected_lines.items()):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            problems.append("bucket %s: %s" % (path, e))
            continue
        got = []
        for ok, line in parse_bucket(data):
            if not ok:
                problems.append("bucket %s: corrupt line (bad checksum) %r..." % (
                    os.path.relpath(path, cache), line[:80]))
            got.append(line)
        nlines += len(got)
        if sorted(got) != sorted(want):
            missing = len([w for w in want if w not in got])
            extra = len([g for g in got if g not in want])
            problems.append("bucket %s: %d lines, %d expected (%d missing, %d unexpected)" % (
                os.path.relpath(path, cache), len(got), len(want), missing, extra))
        if not data.startswith(b"\n"):
            problems.append("bucket %s does not start with the newline of its first append" %
                            os.path.relpath(path, cache))
    if problems:
        sys.exit("verify: %d problem(s):\n  %s" % (len(problems), "\n  ".join(problems[:40])))
    print("verify: %d content files and %d index lines in %d buckets intact" % (
        len(found), nlines, len(expected_lines)))


def main():
    a = sys.argv[1:]
    if len(a) == 6 and a[0] == "write":
        run_write(a[1], a[2], int(a[3]), int(a[4]), a[5])
    elif len(a) == 3 and a[0] == "verify":
        run_verify(a[1], a[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
