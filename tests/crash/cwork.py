#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Workload and checker of the crash battery (kill9.sh, powerloss.sh).

    cwork.py init MNT BASELINE
        creates d0..d3 on MNT, fsyncs them, writes an empty BASELINE.
    cwork.py run MNT BASELINE LOG PREFIX SEED [--seconds S] [--ops N] [--journal J] [--churn]
        works on the files of BASELINE named PREFIX* until a system call on the mount fails
        (the daemon died: exit 3), a read-back is wrong (exit 1), or S seconds / N operations
        are done (exit 0). With --journal, appends MARK records (op begun / op done) to the
        power-loss journal, so replay.py knows what the writer had seen at each cut. --churn:
        mostly overwrites, replaces and unlinks, so that old packs die.
    cwork.py check MNT BASELINE NEWBASELINE LOG... [--upto PREFIX=B:D,...] [--tree OUT]
        compares what MNT holds with what the logs allow; writes the observed state as
        NEWBASELINE. --upto cuts each writer's log: operations after B never started, B > D
        was in flight, operations up to D had returned. Exit 1 with one line per problem.
    cwork.py cmp TREE_A TREE_B
        the trees two checks wrote must be equal (a fresh host against the pushing one).

Self-checking content.  A file is a sequence of records: magic "PCFCRSH1", u32 length of a
JSON header {"r": record id, "l": payload length}, the payload, and the SHA-256 of all of that.
Record ids are unique over the whole test, so any byte that was never written to that file
(zeros of a lost write, another file's chunk, a torn or mixed version) fails the hash, and a
record in the wrong file fails the id check. Payloads mix unique bytes with 64 KiB blocks from
a shared pool, so chunks dedup across files and gc has shared chunks to count.

Log.  One JSON line per event, flushed (the writer outlives the daemon, so no fsync needed):
{"b": seq, "op": name, "dur": bool, "tr": [[path, [states passed through], final]], ...} when
an operation starts, {"d": seq} when it returned. A state is a list of record ids (an empty
file is []) or null (absent). "dur" operations fsync the file and the directories they
change before they return: their final states are the fsync manifest.

Checker rules, per path: the allowed states are the last durable state and every state an
operation after it passed through (a file written without fsync may be lost, or show any
state its operations went through, never a torn or mixed one). Across paths: a record id in
at most one file; a rename of a durable file in flight leaves the content at one of its two
names; nothing exists that no operation made.
"""

import hashlib
import json
import os
import random
import signal
import struct
import sys
import time

MAGIC = b"PCFCRSH1"
TOPDIRS = ["d0", "d1", "d2", "d3"]
POOL = {}
MAX_FILES = 48


class Lost(Exception):
    pass


class Wrong(Exception):
    pass


def pool_block(k):
    b = POOL.get(k)
    if b is None:
        b = random.Random("pool-%d" % k).randbytes(65536)
        POOL[k] = b
    return b


def payload(rid, n):
    rng = random.Random(rid)
    out = bytearray()
    while len(out) < n:
        if rng.random() < 0.4:
            seg = pool_block(rng.randrange(48))
        else:
            seg = rng.randbytes(rng.choice([4096, 20000, 65536, 131072]))
        out += seg[:n - len(out)]
    return bytes(out)


def header(rid, n):
    j = json.dumps({"r": rid, "l": n}, separators=(",", ":")).encode()
    return MAGIC + struct.pack("<I", len(j)) + j


def record(rid, n):
    body = header(rid, n) + payload(rid, n)
    return body + hashlib.sha256(body).digest()


def parse(data):
    """The record ids of a file's content, or raises Wrong."""
    rids = []
    p = 0
    while p < len(data):
        if data[p:p + 8] != MAGIC or len(data) - p < 12:
            zeros = data[p:p + 4096].count(0) == len(data[p:p + 4096])
            raise Wrong("no record at offset %d%s" % (p, " (zeros)" if zeros else ""))
        hl = struct.unpack_from("<I", data, p + 8)[0]
        if hl > 4096 or p + 12 + hl > len(data):
            raise Wrong("bad record header at offset %d" % p)
        try:
            h = json.loads(data[p + 12:p + 12 + hl])
            n = int(h["l"])
            rid = str(h["r"])
        except (ValueError, KeyError, TypeError):
            raise Wrong("unreadable record header at offset %d" % p)
        end = p + 12 + hl + n
        if end + 32 > len(data):
            raise Wrong("record %s at offset %d is torn (%d of %d bytes)" % (
                rid, p, len(data) - p, end + 32 - p))
        if hashlib.sha256(data[p:end]).digest() != data[end:end + 32]:
            raise Wrong("record %s at offset %d fails its SHA-256 (mixed or damaged bytes)" % (
                rid, p))
        rids.append(rid)
        p = end + 32
    return rids


def show(state):
    if state is None:
        return "absent"
    if isinstance(state, str):
        return state
    return "[" + ",".join(state) + "]" if state else "empty"


# ---------------------------------------------------------------------------------------------

class Writer:
    def __init__(self, mnt, baseline, log, prefix, seed, journal):
        self.mnt = mnt
        self.prefix = prefix
        self.seed = seed
        self.rng = random.Random("%s-%s" % (prefix, seed))
        base = json.load(open(baseline))
        self.files = {p: s for p, s in base["files"].items() if self.mine(p)}
        self.log = open(log, "a")
        self.jfd = os.open(journal, os.O_WRONLY | os.O_APPEND) if journal else None
        self.seq = 0
        self.n = 0
        self.ops = 0

    def mine(self, path):
        return path.split("/")[-1].startswith(self.prefix + "-")

    def rid(self):
        self.n += 1
        return "%s-%08d-%06d" % (self.prefix, self.seed, self.n)

    def newpath(self, d=None):
        self.n += 1
        return "%s/%s-%d-%d" % (d or self.rng.choice(TOPDIRS), self.prefix, self.seed, self.n)

    def mark(self, text):
        if self.jfd is None:
            return
        data = text.encode()
        hdr = struct.pack("<4sIQQQQIIII", b"IOJ1", 14, 0, 0, 0, 0, 0, 0, len(data), 0)
        os.write(self.jfd, hdr + data)

    def emit(self, rec):
        self.log.write(json.dumps(rec, separators=(",", ":")) + "\n")
        self.log.flush()

    def begin(self, op, dur, tr, **kw):
        self.seq += 1
        rec = {"b": self.seq, "op": op, "dur": dur, "tr": tr}
        rec.update(kw)
        self.emit(rec)
        self.mark("%s B %d" % (self.prefix, self.seq))
        return self.seq

    def done(self, seq):
        self.emit({"d": seq})
        self.mark("%s D %d" % (self.prefix, seq))

    def p(self, rel):
        return os.path.join(self.mnt, rel)

    def sys(self, fn, *a):
        try:
            return fn(*a)
        except OSError as e:
            raise Lost("%s%r: %s" % (fn.__name__, a[:1], e))

    def fsync_dir(self, rel):
        fd = self.sys(os.open, self.p(rel), os.O_RDONLY | os.O_DIRECTORY)
        try:
            self.sys(os.fsync, fd)
        finally:
            self.sys(os.close, fd)

    def size(self):
        r = self.rng.random()
        if r < 0.05:
            return 0
        if r < 0.45:
            return self.rng.randint(1, 16 << 10)
        if r < 0.9:
            return self.rng.randint(16 << 10, 400 << 10)
        return self.rng.randint(400 << 10, 2 << 20)

    def write_all(self, fd, data, pos=None):
        view = memoryview(data)
        while view:
            n = min(len(view), self.rng.choice([4096, 65536, 131072, 1 << 20, 3000, 200000]))
            if pos is None:
                w = self.sys(os.write, fd, view[:n])
            else:
                w = self.sys(os.pwrite, fd, view[:n], pos)
                pos += w
            view = view[w:]

    def put(self, rel, data, flags, dur):
        fd = self.sys(os.open, self.p(rel), flags, 0o644)
        try:
            self.write_all(fd, data)
            if dur:
                self.sys(os.fsync, fd)
        finally:
            try:
                os.close(fd)
            except OSError as e:
                raise Lost("close: %s" % e)

    def pick(self, nonempty=False):
        c = sorted(p for p, s in self.files.items() if s or not nonempty)
        return self.rng.choice(c) if c else None

    # -- operations: each declares the states every path it touches goes through --

    def op_create(self):
        rel = self.newpath()
        rid = self.rid()
        dur = self.rng.random() < 0.6
        s = self.begin("create", dur, [[rel, [[]], [rid]]])
        self.put(rel, record(rid, self.size()), os.O_WRONLY | os.O_CREAT | os.O_EXCL, dur)
        if dur:
            self.fsync_dir(os.path.dirname(rel))
        self.files[rel] = [rid]
        self.done(s)

    def op_overwrite(self):
        rel = self.pick()
        if rel is None:
            return self.op_create()
        rid = self.rid()
        dur = self.rng.random() < 0.6
        s = self.begin("overwrite", dur, [[rel, [[]], [rid]]])
        self.put(rel, record(rid, self.size()), os.O_WRONLY | os.O_TRUNC, dur)
        self.files[rel] = [rid]
        self.done(s)

    def op_rewrite(self):
        """Same length, in place, pieces in random order: the file is staged, never torn."""
        rel = self.pick(nonempty=True)
        if rel is None:
            return self.op_create()
        size = self.sys(os.stat, self.p(rel)).st_size
        rid = self.rid()
        n = size - len(header(rid, 0)) - 32
        if n < 0:
            return self.op_overwrite()
        # The header's JSON holds the length: fix it until the total matches.
        while len(header(rid, n)) + n + 32 != size and n > 0:
            n -= 1
        if len(header(rid, n)) + n + 32 != size:
            return self.op_overwrite()
        data = record(rid, n)
        dur = self.rng.random() < 0.6
        s = self.begin("rewrite", dur, [[rel, [], [rid]]])
        fd = self.sys(os.open, self.p(rel), os.O_RDWR)
        try:
            cuts = sorted(self.rng.sample(range(1, size), min(3, size - 1))) if size > 1 else []
            pieces = list(zip([0] + cuts, cuts + [size]))
            self.rng.shuffle(pieces)
            for a, b in pieces:
                self.write_all(fd, data[a:b], a)
            if dur:
                self.sys(os.fsync, fd)
        finally:
            try:
                os.close(fd)
            except OSError as e:
                raise Lost("close: %s" % e)
        self.files[rel] = [rid]
        self.done(s)

    def op_append(self):
        rel = self.pick()
        if rel is None:
            return self.op_create()
        rid = self.rid()
        dur = self.rng.random() < 0.6
        old = self.files[rel]
        s = self.begin("append", dur, [[rel, [], old + [rid]]])
        self.put(rel, record(rid, self.size() // 2), os.O_WRONLY | os.O_APPEND, dur)
        self.files[rel] = old + [rid]
        self.done(s)

    def op_replace(self):
        """pip/npm: a temp file written and fsynced, renamed over the name, dir fsynced."""
        rel = self.pick() if self.rng.random() < 0.7 else None
        rel = rel or self.newpath()
        tmp = self.newpath(os.path.dirname(rel)) + ".tmp"
        rid = self.rid()
        dur = self.rng.random() < 0.7
        s = self.begin("replace", dur, [[tmp, [[], [rid]], None],
                                        [rel, [], [rid]]])
        self.put(tmp, record(rid, self.size()), os.O_WRONLY | os.O_CREAT | os.O_EXCL, True)
        self.sys(os.rename, self.p(tmp), self.p(rel))
        if dur:
            self.fsync_dir(os.path.dirname(rel))
        self.files[rel] = [rid]
        self.done(s)

    def op_rename(self):
        a = self.pick()
        if a is None:
            return self.op_create()
        if self.rng.random() < 0.4 and len(self.files) > 1:
            b = self.rng.choice(sorted(p for p in self.files if p != a))
        else:
            b = self.newpath()
        dur = self.rng.random() < 0.7
        c = self.files[a]
        s = self.begin("rename", dur, [[a, [], None], [b, [], c]], keep=[a, b, c])
        self.sys(os.rename, self.p(a), self.p(b))
        if dur:
            for d in sorted({os.path.dirname(a), os.path.dirname(b)}):
                self.fsync_dir(d)
        del self.files[a]
        self.files[b] = c
        self.done(s)

    def op_unlink(self):
        a = self.pick()
        if a is None:
            return self.op_create()
        dur = self.rng.random() < 0.7
        s = self.begin("unlink", dur, [[a, [], None]])
        self.sys(os.unlink, self.p(a))
        if dur:
            self.fsync_dir(os.path.dirname(a))
        del self.files[a]
        self.done(s)

    def op_readback(self):
        rel = self.pick()
        if rel is None:
            return
        try:
            with open(self.p(rel), "rb") as f:
                data = f.read()
        except OSError as e:
            raise Lost("read %s: %s" % (rel, e))
        try:
            got = parse(data)
        except Wrong as e:
            raise Wrong("live read of %s: %s" % (rel, e))
        if got != self.files[rel]:
            raise Wrong("live read of %s: holds %s, wrote %s" % (rel, show(got),
                                                                  show(self.files[rel])))

    def run(self, seconds, maxops, churn=False):
        ops = [(self.op_create, 22), (self.op_overwrite, 10), (self.op_rewrite, 8),
               (self.op_append, 10), (self.op_replace, 14), (self.op_rename, 10),
               (self.op_unlink, 8), (self.op_readback, 18)]
        if churn:
            # Most of what exists dies: packs become mostly dead, gc rewrites them.
            ops = [(self.op_create, 10), (self.op_overwrite, 30), (self.op_replace, 25),
                   (self.op_unlink, 15), (self.op_readback, 5)]
        end = time.monotonic() + seconds
        # SIGUSR1: stop between two operations (kill9.sh's umount rounds; a writer killed in
        # the middle of a write leaves a partial file on any filesystem, which is not a crash).
        self.stop = False
        signal.signal(signal.SIGUSR1, lambda *_: setattr(self, "stop", True))
        while time.monotonic() < end and self.ops < maxops and not self.stop:
            if len(self.files) > MAX_FILES:
                op = self.op_unlink
            else:
                op = self.rng.choices([o for o, _ in ops], [w for _, w in ops])[0]
            op()
            self.ops += 1


# ---------------------------------------------------------------------------------------------

def observe(mnt):
    """path -> state (list of record ids, or 'BAD: why'), and the directories."""
    files, dirs, other = {}, set(), []
    for dp, dn, fn in os.walk(mnt):
        rd = os.path.relpath(dp, mnt)
        for d in dn:
            dirs.add(d if rd == "." else rd + "/" + d)
        for f in fn:
            rel = f if rd == "." else rd + "/" + f
            full = os.path.join(dp, f)
            if os.path.islink(full):
                other.append(rel)
                continue
            try:
                with open(full, "rb") as fh:
                    data = fh.read()
                files[rel] = parse(data)
            except Wrong as e:
                files[rel] = "BAD: " + str(e)
            except OSError as e:
                files[rel] = "BAD: read failed: " + str(e)
    return files, dirs, other


def load_log(path, upto):
    """(begin records by seq, done seqs) of one writer's log, cut by upto=(B, D)."""
    begins, dones = {}, set()
    with open(path) as f:
        for line in f:
            try:
                r = json.loads(line)
            except ValueError:
                continue  # the last line of a killed writer
            if "b" in r:
                begins[r["b"]] = r
            elif "d" in r:
                dones.add(r["d"])
    if upto is not None:
        b, d = upto
        begins = {s: r for s, r in begins.items() if s <= b}
        dones = {s for s in dones if s <= d}
    return begins, dones


def check(mnt, baseline, newbaseline, logs, upto, tree):
    base = json.load(open(baseline))
    allowed = {p: [s] for p, s in base["files"].items()}
    exact = {p: True for p in base["files"]}
    keeps = []
    nops = ndur = 0
    for lg in logs:
        prefix = os.path.basename(lg).split(".")[0]
        begins, dones = load_log(lg, upto.get(prefix) if upto is not None else None)
        if upto is not None and prefix not in upto:
            begins, dones = {}, set()
        last = {}
        for seq in sorted(begins):
            r = begins[seq]
            nops += 1
            durable = r["dur"] and seq in dones
            ndur += durable
            if "keep" in r:
                a0 = r["keep"][0]
                was_durable = exact.get(a0, False) and allowed.get(a0) == [r["keep"][2]]
                keeps.append((r, was_durable, durable, last))
            for path, inter, final in r["tr"]:
                a = allowed.setdefault(path, [None])
                exact.setdefault(path, True)
                if durable:
                    allowed[path] = [final]
                    exact[path] = True
                else:
                    for s in inter + [final]:
                        if s not in a:
                            a.append(s)
                    exact[path] = False
                last[path] = seq
    files, dirs, other = observe(mnt)
    problems = []
    losses = 0
    for path in sorted(set(allowed) | set(files)):
        got = files.get(path)
        a = allowed.get(path, [None])
        if got in a:
            continue
        if isinstance(got, str):
            what = "%s: reads back wrong: %s" % (path, got[5:])
        elif path not in allowed:
            what = "%s: exists (%s) but no operation made it" % (path, show(got))
        else:
            what = "%s: holds %s, allowed: %s" % (path, show(got), " or ".join(map(show, a)))
        if len(a) == 1 and exact.get(path) and a[0] is not None:
            what = "LOSS of fsynced data: " + what
            losses += 1
        problems.append(what)
    owner = {}
    for path, s in files.items():
        if isinstance(s, list):
            for rid in s:
                if rid in owner:
                    problems.append("record %s is in %s and in %s" % (rid, owner[rid], path))
                owner[rid] = path
    # A rename, not fsynced, of a file that was durable: the content is at one of its names.
    for r, was_durable, durable, last in keeps:
        a, b, c = r["keep"]
        if durable or not was_durable or last.get(a) != r["b"] or last.get(b) != r["b"]:
            continue
        if files.get(a) != c and files.get(b) != c:
            problems.append("rename %s -> %s (not fsynced) lost the durable content %s (%s at "
                            "the old name, %s at the new)" % (a, b, show(c), show(files.get(a)),
                                                              show(files.get(b))))
            losses += 1
    for d in sorted(dirs - set(TOPDIRS)):
        problems.append("directory %s exists but was never created" % d)
    for d in sorted(set(TOPDIRS) - dirs):
        if base.get("dirs"):
            problems.append("directory %s is missing" % d)
    for o in other:
        problems.append("%s: unexpected non-regular file" % o)
    if tree:
        with open(tree, "w") as f:
            json.dump(files, f, sort_keys=True)
    nbytes = 0
    if problems:
        print("check: %d problem(s), %d of them losses of fsynced data:" % (
            len(problems), losses), file=sys.stderr)
        for p in problems[:40]:
            print("  " + p, file=sys.stderr)
        return 1
    if newbaseline:
        with open(newbaseline, "w") as f:
            json.dump({"files": files, "dirs": sorted(dirs)}, f)
    print("check: %d files ok (%d ops in the logs, %d of them fsynced)" % (len(files), nops,
                                                                            ndur))
    return 0


def cmd_init(mnt, baseline):
    for d in TOPDIRS:
        os.makedirs(os.path.join(mnt, d), exist_ok=True)
        fd = os.open(os.path.join(mnt, d), os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(fd)
        os.close(fd)
    fd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(fd)
    os.close(fd)
    with open(baseline, "w") as f:
        json.dump({"files": {}, "dirs": TOPDIRS}, f)


def opts(args, names):
    out, rest = {}, []
    i = 0
    while i < len(args):
        if args[i] in names:
            out[args[i]] = args[i + 1]
            i += 2
        else:
            rest.append(args[i])
            i += 1
    return out, rest


def main():
    a = sys.argv[1:]
    if len(a) == 3 and a[0] == "init":
        cmd_init(a[1], a[2])
    elif a and a[0] == "run":
        churn = "--churn" in a
        a = [x for x in a if x != "--churn"]
        o, r = opts(a[1:], ("--seconds", "--ops", "--journal"))
        if len(r) != 5:
            sys.exit(__doc__)
        w = Writer(r[0], r[1], r[2], r[3], int(r[4]), o.get("--journal"))
        try:
            w.run(float(o.get("--seconds", 1e9)), int(o.get("--ops", 1 << 60)), churn)
        except Lost as e:
            print("writer %s: the mount went away after %d ops (%s)" % (r[3], w.ops, e))
            sys.exit(3)
        except Wrong as e:
            print("writer %s: WRONG DATA: %s" % (r[3], e), file=sys.stderr)
            sys.exit(1)
        print("writer %s: %d ops" % (r[3], w.ops))
    elif a and a[0] == "check":
        o, r = opts(a[1:], ("--upto", "--tree"))
        if len(r) < 3:
            sys.exit(__doc__)
        upto = None
        if "--upto" in o:
            upto = {}
            for item in filter(None, o["--upto"].split(",")):
                k, v = item.split("=")
                b, d = v.split(":")
                upto[k] = (int(b), int(d))
        nb = r[2] if r[2] != "-" else None
        sys.exit(check(r[0], r[1], nb, r[3:], upto, o.get("--tree")))
    elif a and a[0] == "cmp" and len(a) == 3:
        ta, tb = json.load(open(a[1])), json.load(open(a[2]))
        bad = ["%s: %s here, %s on the fresh host" % (p, show(ta.get(p)), show(tb.get(p)))
               for p in sorted(set(ta) | set(tb)) if ta.get(p) != tb.get(p)]
        if bad:
            print("cmp: the fresh host sees %d path(s) differently:" % len(bad), file=sys.stderr)
            for b in bad[:40]:
                print("  " + b, file=sys.stderr)
            sys.exit(1)
        print("cmp: %d files identical on the fresh host" % len(ta))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
