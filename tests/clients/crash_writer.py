#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Writer and checker for the kill -9 crash test (crash.sh), after JuiceFS's crash_consistency.

    crash_writer.py init MNT BASELINE
        creates the top directories d0..d3 on MNT, fsyncs them, writes an empty BASELINE.
    crash_writer.py run MNT BASELINE MANIFEST PREFIX ROUND
        works on the files of BASELINE whose names start with PREFIX until a system call
        fails (the daemon was killed: exit 3) or a read-back is wrong (exit 1).
    crash_writer.py check MNT BASELINE NEWBASELINE [MANIFEST...]
        replays the manifests over BASELINE, compares with what is on MNT, and writes what it
        found as NEWBASELINE for the next round.

Content.  Every file holds a prefix of a deterministic stream named by a content id (cid):
block i of the stream is random.Random("<cid>#<i>").randbytes(1 MiB).  A new version of a
file gets a new cid; an append continues the same stream.  So for any file on the mount the
checker knows which cids could be there, and "bytes that were never written to it" (zeros of
a lost write, another file's data, stale blocks) show up as a mismatch with every candidate.

Manifest.  Kept outside the mount, one JSON line per event, fsynced: {"b": n, ...} before an
operation starts, {"d": n, ...} once it is durable (after the fsync of the file, and of the
directories for renames, unlinks and directory publication).  A writer works alone on its
files, so at most one of its operations is in flight when the daemon dies.

Operations (writer's own files only):
  create      write a new file in chunks of random size, fsync                  sizes 0..10 MiB
  nofsync     write a new file, no fsync; never touched again: after a crash it may be absent
              or any prefix of its content, never anything else
  overwrite   open O_TRUNC, write a new version, fsync
  replace     write .tmp file, fsync, rename over the target, fsync the dir (pip, npm)
  append      O_APPEND a continuation of the same stream, fsync
  rename      rename to a new name or over another file, maybe across dirs, fsync both dirs
  unlink      unlink, fsync the dir
  publishdir  fill a temp dir with 1-3 fsynced files, rename it into place (uv), fsync dirs
  readback    read a file and compare with what it must hold (live check, no crash involved)

Checker rules.  A file whose last operation is done must hold exactly what the manifest
says.  For the operation in flight, the affected paths must together match one of the
states the operation could have left (e.g. for a rename: the old name with its content and
the new one as before, or the new name with the content and the old one gone; for an
overwrite: the old version or any prefix of the new one).  Nothing else may exist.
"""

import errno
import hashlib
import json
import os
import random
import sys
import time

BLOCK = 1 << 20
TOPDIRS = ["d0", "d1", "d2", "d3"]
_block_cache = {}


def stream_block(cid, i):
    key = (cid, i)
    b = _block_cache.get(key)
    if b is None:
        if len(_block_cache) > 64:
            _block_cache.clear()
        b = random.Random("%s#%d" % (cid, i)).randbytes(BLOCK)
        _block_cache[key] = b
    return b


def stream(cid, start, end):
    """Bytes [start, end) of cid's stream."""
    out = bytearray()
    pos = start
    while pos < end:
        i, off = divmod(pos, BLOCK)
        n = min(BLOCK - off, end - pos)
        out += stream_block(cid, i)[off:off + n]
        pos += n
    return bytes(out)


def sha(data):
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# writer

class Lost(Exception):
    """A system call on the mount failed: the daemon is gone (or broke)."""


class Writer:
    def __init__(self, mnt, baseline, manifest, prefix, rnd):
        self.mnt = mnt
        self.prefix = prefix
        self.rnd = rnd
        self.rng = random.Random("%s-%s-%d" % (prefix, rnd, os.getpid()))
        base = json.load(open(baseline))
        self.files = {p: (v["cid"], v["len"]) for p, v in base["files"].items()
                      if self.mine(p)}
        self.dirs = [d for d in base["dirs"] if d in TOPDIRS or self.mine(d)]
        self.mf = open(manifest, "a")
        self.seq = 0
        self.n = 0

    def mine(self, path):
        parts = path.split("/")
        return len(parts) > 1 and parts[1].startswith(self.prefix)

    def newname(self, kind):
        self.n += 1
        return "%s%s%s-%d" % (self.prefix, kind, self.rnd, self.n)

    def record(self, rec):
        self.mf.write(json.dumps(rec, separators=(",", ":")) + "\n")
        self.mf.flush()
        os.fsync(self.mf.fileno())

    def begin(self, **kw):
        self.seq += 1
        kw["b"] = self.seq
        self.record(kw)
        return self.seq

    def done(self, seq, **kw):
        kw["d"] = seq
        self.record(kw)

    def p(self, rel):
        return os.path.join(self.mnt, rel)

    def fsync_dir(self, rel):
        fd = os.open(self.p(rel), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def size(self):
        r = self.rng.random()
        if r < 0.05:
            return 0
        if r < 0.45:
            return self.rng.randint(1, 16 << 10)
        if r < 0.85:
            return self.rng.randint(16 << 10, 512 << 10)
        if r < 0.98:
            return self.rng.randint(512 << 10, 3 << 20)
        return self.rng.randint(3 << 20, 10 << 20)

    def write_stream(self, fd, cid, start, end):
        pos = start
        while pos < end:
            n = min(end - pos, self.rng.choice([4096, 65536, 131072, 1 << 20, 3000, 200000]))
            data = stream(cid, pos, pos + n)
            view = memoryview(data)
            while view:
                w = os.write(fd, view)
                view = view[w:]
            pos += n

    def write_file(self, rel, cid, length, flags, do_fsync=True):
        fd = os.open(self.p(rel), flags, 0o644)
        try:
            self.write_stream(fd, cid, 0, length)
            if do_fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def pick_file(self):
        return self.rng.choice(sorted(self.files)) if self.files else None

    def pick_dir(self):
        return self.rng.choice(self.dirs)

    # -- operations --

    def op_create(self):
        rel = self.pick_dir() + "/" + self.newname("f")
        cid = rel.replace("/", "_")
        length = self.size()
        s = self.begin(op="create", path=rel, cid=cid, len=length)
        self.write_file(rel, cid, length, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        self.files[rel] = (cid, length)
        self.done(s, sha256=sha(stream(cid, 0, length)))

    def op_nofsync(self):
        rel = self.pick_dir() + "/" + self.newname("n")
        cid = rel.replace("/", "_")
        length = self.size()
        s = self.begin(op="nofsync", path=rel, cid=cid, len=length)
        self.write_file(rel, cid, length, os.O_WRONLY | os.O_CREAT | os.O_EXCL, False)
        self.done(s)

    def op_overwrite(self):
        rel = self.pick_file()
        if rel is None:
            return
        cid = "%s~%s%d-%d" % (rel.replace("/", "_"), self.prefix, self.rnd, self.seq + 1)
        length = self.size()
        s = self.begin(op="overwrite", path=rel, cid=cid, len=length)
        self.write_file(rel, cid, length, os.O_WRONLY | os.O_TRUNC)
        self.files[rel] = (cid, length)
        self.done(s, sha256=sha(stream(cid, 0, length)))

    def op_replace(self):
        target = self.pick_file() if self.rng.random() < 0.7 else None
        if target is None:
            target = self.pick_dir() + "/" + self.newname("f")
        tmp = os.path.dirname(target) + "/" + self.newname(".tmp")
        cid = "%s~%s%d-%d" % (target.replace("/", "_"), self.prefix, self.rnd, self.seq + 1)
        length = self.size()
        s = self.begin(op="replace", path=target, tmp=tmp, cid=cid, len=length)
        self.write_file(tmp, cid, length, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        os.rename(self.p(tmp), self.p(target))
        self.fsync_dir(os.path.dirname(target))
        self.files[target] = (cid, length)
        self.done(s, sha256=sha(stream(cid, 0, length)))

    def op_append(self):
        rel = self.pick_file()
        if rel is None:
            return
        cid, length = self.files[rel]
        add = self.rng.choice([1, 100, 4096, 70000, self.rng.randint(1, 1 << 20)])
        s = self.begin(op="append", path=rel, cid=cid, old=length, len=length + add)
        fd = os.open(self.p(rel), os.O_WRONLY | os.O_APPEND)
        try:
            self.write_stream(fd, cid, length, length + add)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.files[rel] = (cid, length + add)
        self.done(s, sha256=sha(stream(cid, 0, length + add)))

    def op_rename(self):
        src = self.pick_file()
        if src is None:
            return
        dst = self.pick_file() if self.rng.random() < 0.3 else None
        if dst is None or dst == src:
            dst = self.pick_dir() + "/" + self.newname("f")
        s = self.begin(op="rename", path=src, dst=dst)
        os.rename(self.p(src), self.p(dst))
        self.fsync_dir(os.path.dirname(dst))
        if os.path.dirname(dst) != os.path.dirname(src):
            self.fsync_dir(os.path.dirname(src))
        self.files[dst] = self.files.pop(src)
        self.done(s)

    def op_unlink(self):
        rel = self.pick_file()
        if rel is None:
            return
        s = self.begin(op="unlink", path=rel)
        os.unlink(self.p(rel))
        self.fsync_dir(os.path.dirname(rel))
        del self.files[rel]
        self.done(s)

    def op_publishdir(self):
        top = self.rng.choice(TOPDIRS)
        tmpd = top + "/" + self.newname(".tmpd")
        final = self.rng.choice(TOPDIRS) + "/" + self.newname("D")
        members = {}
        for _ in range(self.rng.randint(1, 3)):
            name = self.newname("g")
            members[name] = ("%s_%s" % (final.replace("/", "_"), name), self.size())
        s = self.begin(op="publishdir", tmp=tmpd, path=final,
                       members={k: {"cid": c, "len": n} for k, (c, n) in members.items()})
        os.mkdir(self.p(tmpd))
        for name, (cid, length) in members.items():
            self.write_file(tmpd + "/" + name, cid, length,
                            os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        self.fsync_dir(tmpd)
        os.rename(self.p(tmpd), self.p(final))
        self.fsync_dir(os.path.dirname(final))
        if os.path.dirname(final) != top:
            self.fsync_dir(top)
        self.dirs.append(final)
        for name, v in members.items():
            self.files[final + "/" + name] = v
        self.done(s)

    def op_readback(self):
        rel = self.pick_file()
        if rel is None:
            return
        cid, length = self.files[rel]
        with open(self.p(rel), "rb") as f:
            got = f.read()
        if got != stream(cid, 0, length):
            print("LIVE MISMATCH: %s holds %d bytes (sha256 %s), expected %d bytes of %s" % (
                rel, len(got), sha(got)[:16], length, cid), file=sys.stderr)
            sys.exit(1)

    def run(self, max_seconds):
        ops = [(self.op_create, 25), (self.op_nofsync, 8), (self.op_overwrite, 8),
               (self.op_replace, 12), (self.op_append, 12), (self.op_rename, 10),
               (self.op_unlink, 10), (self.op_publishdir, 5), (self.op_readback, 13)]
        funcs = [f for f, _ in ops]
        weights = [w for _, w in ops]
        deadline = time.time() + max_seconds
        count = 0
        while time.time() < deadline:
            f = self.rng.choices(funcs, weights)[0]
            try:
                f()
            except OSError as e:
                # The daemon died under us: expected in this test, the shell decides.
                print("writer %s: %s after %d operations: %s" % (
                    self.prefix, errno.errorcode.get(e.errno, e.errno), count, e))
                sys.exit(3)
            count += 1
        print("writer %s: deadline reached after %d operations" % (self.prefix, count))
        sys.exit(0)


# ---------------------------------------------------------------------------------------------
# checker

ABSENT = None


def alt(cid, lo, hi):
    return (cid, lo, hi)


class Checker:
    def __init__(self, mnt, baseline):
        self.mnt = mnt
        base = json.load(open(baseline))
        # path -> list of alternatives (ABSENT or (cid, lo, hi))
        self.files = {p: [alt(v["cid"], v["len"], v["len"])] for p, v in base["files"].items()}
        self.dirs = {d: [True] for d in base["dirs"]}
        self.worlds = []   # one list of worlds per in-flight operation
        self.problems = []
        self.found = {}    # path -> (cid, len) it matched

    def certain(self, path):
        a = self.files.get(path, [ABSENT])
        if len(a) != 1 or a[0] is ABSENT:
            raise ValueError("manifest acts on %s whose state is %r" % (path, a))
        return a[0]

    def apply(self, op):
        """Effect of a completed operation."""
        k = op["op"]
        if k in ("create", "overwrite"):
            self.files[op["path"]] = [alt(op["cid"], op["len"], op["len"])]
        elif k == "nofsync":
            self.files[op["path"]] = [ABSENT, alt(op["cid"], 0, op["len"])]
        elif k == "replace":
            self.files[op["path"]] = [alt(op["cid"], op["len"], op["len"])]
        elif k == "append":
            self.files[op["path"]] = [alt(op["cid"], op["len"], op["len"])]
        elif k == "rename":
            self.files[op["dst"]] = [self.certain(op["path"])]
            del self.files[op["path"]]
        elif k == "unlink":
            del self.files[op["path"]]
        elif k == "publishdir":
            self.dirs[op["path"]] = [True]
            for name, v in op["members"].items():
                self.files[op["path"] + "/" + name] = [alt(v["cid"], v["len"], v["len"])]
        else:
            raise ValueError("unknown op %r" % k)

    def in_flight(self, op):
        """Every state an interrupted operation may leave: a list of worlds, each a dict
        path -> alternatives; paths not in a world keep their current state."""
        k = op["op"]
        p = op["path"]
        cur = self.files.get(p, [ABSENT])
        if k in ("create", "nofsync"):
            w = [{p: [ABSENT, alt(op["cid"], 0, op["len"])]}]
        elif k == "overwrite":
            w = [{p: cur + [alt(op["cid"], 0, op["len"])]}]
        elif k == "replace":
            t = op["tmp"]
            new = alt(op["cid"], 0, op["len"])
            full = alt(op["cid"], op["len"], op["len"])
            w = [{t: [ABSENT, new], p: cur}, {t: [ABSENT], p: [full]}]
        elif k == "append":
            w = [{p: [alt(op["cid"], op["old"], op["len"])]}]
        elif k == "rename":
            src = self.certain(p)
            d = op["dst"]
            w = [{p: [src], d: self.files.get(d, [ABSENT])}, {p: [ABSENT], d: [src]}]
        elif k == "unlink":
            w = [{p: cur + [ABSENT]}]
        elif k == "publishdir":
            t = op["tmp"]
            before = {t + "/" + n: [ABSENT, alt(v["cid"], 0, v["len"])]
                      for n, v in op["members"].items()}
            before[p + "/"] = [False]
            before[t + "/"] = [False, True]
            after = {p + "/" + n: [alt(v["cid"], v["len"], v["len"])]
                     for n, v in op["members"].items()}
            after[p + "/"] = [True]
            after[t + "/"] = [False]
            w = [before, after]
        else:
            raise ValueError("unknown op %r" % k)
        self.worlds.append((op, w))

    def replay(self, manifest):
        begun = {}
        lines = open(manifest).read().split("\n")
        for i, line in enumerate(lines):
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                if i == len(lines) - 1:
                    continue  # a torn last line: the writer was killed while recording
                raise
            if "b" in rec:
                begun[rec["b"]] = rec
            else:
                op = begun.pop(rec["d"])
                if "sha256" in rec:
                    got = sha(stream(op["cid"], 0, op["len"]))
                    if got != rec["sha256"]:
                        raise ValueError("content generator disagrees with the manifest")
                self.apply(op)
        if len(begun) > 1:
            raise ValueError("%s: %d operations in flight, a writer has one at most" % (
                manifest, len(begun)))
        for op in begun.values():
            self.in_flight(op)

    def observe(self):
        files, dirs = {}, set()
        def boom(e):
            raise e

        for root, dnames, fnames in os.walk(self.mnt, onerror=boom):
            rel_root = os.path.relpath(root, self.mnt)
            for d in dnames:
                dirs.add(os.path.normpath(os.path.join(rel_root, d)))
            for f in fnames:
                rel = os.path.normpath(os.path.join(rel_root, f))
                st = os.lstat(os.path.join(root, f))
                files[rel] = st.st_size
        return files, dirs

    def read(self, rel):
        with open(os.path.join(self.mnt, rel), "rb") as f:
            return f.read()

    def matches(self, rel, alternatives, observed):
        """None when the file matches one alternative, else a description."""
        if rel not in observed:
            return None if ABSENT in alternatives else "is missing"
        data = self.read(rel)
        for a in alternatives:
            if a is ABSENT:
                continue
            cid, lo, hi = a
            if lo <= len(data) <= hi and data == stream(cid, 0, len(data)):
                self.found[rel] = (cid, len(data))
                return None
        want = " or ".join("absent" if a is ABSENT else
                           ("%d bytes of %s" % (a[1], a[0]) if a[1] == a[2] else
                            "a %d..%d-byte prefix of %s" % (a[1], a[2], a[0]))
                           for a in alternatives)
        where = self.describe(rel, data, alternatives)
        return "holds %d bytes (sha256 %s), expected %s%s" % (len(data), sha(data)[:16], want,
                                                              where)

    def describe(self, rel, data, alternatives):
        """Where the data first departs from the closest candidate: helps the lead."""
        best = None
        for a in alternatives:
            if a is ABSENT:
                continue
            ref = stream(a[0], 0, len(data))
            i = next((j for j in range(0, len(data), 4096) if data[j:j + 4096] != ref[j:j + 4096]),
                     None)
            if i is None:
                continue
            while data[i] == ref[i]:
                i += 1
            zeros = data[i:i + 4096].count(0) == len(data[i:i + 4096])
            best = "; differs from %s at offset %d%s" % (a[0], i, " (zeros there)" if zeros else "")
        return best or ""

    def check(self):
        observed, odirs = self.observe()
        affected = set()
        for op, worlds in self.worlds:
            for w in worlds:
                affected.update(w)
        for rel in sorted(set(self.files) | set(observed)):
            if rel in affected:
                continue
            if rel not in self.files:
                self.problems.append("%s: exists (%d bytes) but was never written" % (
                    rel, observed[rel]))
                continue
            why = self.matches(rel, self.files[rel], observed)
            if why:
                self.problems.append("%s: %s" % (rel, why))
        for op, worlds in self.worlds:
            reasons = []
            for w in worlds:
                bad = []
                for path, alts in w.items():
                    if path.endswith("/"):
                        there = path[:-1] in odirs
                        if there not in alts:
                            bad.append("%s %s" % (path, "exists" if there else "is missing"))
                        continue
                    why = self.matches(path, alts, observed)
                    if why:
                        bad.append("%s %s" % (path, why))
                if not bad:
                    break
                reasons.append("; ".join(bad))
            else:
                self.problems.append("operation in flight %s left a state it cannot produce: %s"
                                     % (json.dumps(op)[:300], " | or | ".join(reasons)))
        inflight_dirs = {p[:-1] for _, ws in self.worlds for w in ws for p in w if p.endswith("/")}
        for d in sorted(odirs - set(self.dirs) - inflight_dirs):
            self.problems.append("directory %s exists but was never created" % d)
        for d in sorted(set(self.dirs) - odirs):
            self.problems.append("directory %s is missing" % d)
        return observed, odirs

    def new_baseline(self, observed, odirs):
        files = {rel: {"cid": self.found[rel][0], "len": self.found[rel][1]} for rel in observed}
        return {"files": files, "dirs": sorted(odirs)}


def cmd_init(mnt, baseline):
    for d in TOPDIRS:
        os.mkdir(os.path.join(mnt, d))
        fd = os.open(os.path.join(mnt, d), os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(fd)
        os.close(fd)
    fd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(fd)
    os.close(fd)
    with open(baseline, "w") as f:
        json.dump({"files": {}, "dirs": TOPDIRS}, f)


def cmd_check(mnt, baseline, newbaseline, manifests):
    c = Checker(mnt, baseline)
    for m in manifests:
        c.replay(m)
    observed, odirs = c.check()
    if c.problems:
        print("check: %d problem(s):" % len(c.problems), file=sys.stderr)
        for p in c.problems[:50]:
            print("  " + p, file=sys.stderr)
        sys.exit(1)
    nb = c.new_baseline(observed, odirs)
    with open(newbaseline, "w") as f:
        json.dump(nb, f)
    total = sum(v["len"] for v in nb["files"].values())
    print("check: %d files (%d bytes) in %d dirs as expected, %d operation(s) were in flight" % (
        len(nb["files"]), total, len(nb["dirs"]), len(c.worlds)))


def main():
    a = sys.argv[1:]
    if len(a) == 3 and a[0] == "init":
        cmd_init(a[1], a[2])
    elif len(a) == 6 and a[0] == "run":
        Writer(a[1], a[2], a[3], a[4], int(a[5])).run(float(os.environ.get("CRASH_MAX_SECONDS", 60)))
    elif len(a) >= 4 and a[0] == "check":
        cmd_check(a[1], a[2], a[3], a[4:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
