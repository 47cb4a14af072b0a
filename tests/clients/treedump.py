#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Builds a tree with every kind of inode and dumps trees for comparison (persist.sh).

    treedump.py make ROOT SPEC        builds ROOT/tree; SPEC (JSON) = what was asked for
    treedump.py mutate ROOT SPEC      changes the tree (chmod, chown, unlink of a hard link,
                                      renames, truncate, xattr edits, new times); rewrites SPEC
    treedump.py full ROOT OUT         dump: type, mode, uid, gid, nlink, size, mtime_ns,
                                      content sha256, symlink target, xattrs, hard-link groups,
                                      directory listings (reads every file)
    treedump.py stat ROOT SPEC OUT    dump without reading or listing anything (so no atime
                                      moves): lstat incl. atime_ns and ctime_ns, xattrs, for
                                      the paths of SPEC
    treedump.py compare A B [FIELDS]  exit 1 and print every difference; with FIELDS (comma
                                      separated) only those are compared, and paths of A
                                      missing from B are differences (A may be a SPEC)

Times are set last, bottom-up, with nanoseconds that are not multiples of 1000, atimes
after mtimes and recent so that relatime leaves them alone.  chown comes before chmod
(chown clears set-id bits).
"""

import hashlib
import json
import os
import random
import stat
import sys
import time

MIB = 1 << 20
T0 = 1234567890 * 10**9 + 123456789


def kind(mode):
    for test, name in ((stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "symlink"),
                       (stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "chr"), (stat.S_ISBLK, "blk")):
        if test(mode):
            return name
    return "?"


def xattrs(path, is_link):
    if is_link:
        # Linux allows user.* xattrs only on files and directories; list what is there.
        names = os.listxattr(path, follow_symlinks=False)
    else:
        names = os.listxattr(path)
    out = {}
    for n in sorted(names):
        if not n.startswith("user."):
            continue  # security.* labels belong to the host, not to the tree
        out[n] = os.getxattr(path, n, follow_symlinks=False).hex()
    return out


def lstat_entry(path, with_times):
    st = os.lstat(path)
    e = {"type": kind(st.st_mode), "mode": "%o" % stat.S_IMODE(st.st_mode), "uid": st.st_uid,
         "gid": st.st_gid, "nlink": st.st_nlink, "mtime_ns": st.st_mtime_ns}
    if e["type"] != "dir":
        e["size"] = st.st_size
    if with_times:
        e["atime_ns"] = st.st_atime_ns
        e["ctime_ns"] = st.st_ctime_ns
    e["xattrs"] = xattrs(path, e["type"] == "symlink")
    return e, st.st_ino


def link_groups(entries, inos):
    """Hard-link groups by first path, not by inode number (which need not persist)."""
    first = {}
    for rel in sorted(inos):
        if entries[rel]["type"] != "dir":
            entries[rel]["same_inode_as"] = first.setdefault(inos[rel], rel)


def dump_full(root):
    entries, inos = {}, {}

    def visit(p, rel):
        e, ino = lstat_entry(p, False)
        if e["type"] == "file":
            h = hashlib.sha256()
            with open(p, "rb") as f:
                for blk in iter(lambda: f.read(MIB), b""):
                    h.update(blk)
            e["sha256"] = h.hexdigest()
        elif e["type"] == "symlink":
            e["target"] = os.readlink(p)
        elif e["type"] == "dir":
            e["entries"] = sorted(os.listdir(p))
        entries[rel] = e
        inos[rel] = ino
        for n in e.get("entries", []):
            visit(os.path.join(p, n), n if rel == "." else rel + "/" + n)

    visit(root, ".")
    link_groups(entries, inos)
    return entries


def dump_stat(root, paths):
    entries, inos = {}, {}
    for rel in paths:
        e, ino = lstat_entry(os.path.join(root, rel), True)
        entries[rel] = e
        inos[rel] = ino
    link_groups(entries, inos)
    return entries


# ---------------------------------------------------------------------------------------------

def rbytes(seed, n):
    return random.Random(seed).randbytes(n)


def make(root, specpath):
    t = os.path.join(root, "tree")
    spec = {}
    os.mkdir(t)

    def P(rel):
        return os.path.join(t, rel)

    def put(rel, data, mode=0o644, owner=(0, 0)):
        with open(P(rel), "wb") as f:
            f.write(data)
        os.chown(P(rel), *owner)
        os.chmod(P(rel), mode)
        spec[rel] = {"type": "file", "mode": "%o" % mode, "uid": owner[0], "gid": owner[1],
                     "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    def mkdir(rel, mode=0o755, owner=(0, 0)):
        os.mkdir(P(rel))
        os.chown(P(rel), *owner)
        os.chmod(P(rel), mode)
        spec[rel] = {"type": "dir", "mode": "%o" % mode, "uid": owner[0], "gid": owner[1]}

    def symlink(rel, target, owner=(0, 0)):
        os.symlink(target, P(rel))
        os.chown(P(rel), *owner, follow_symlinks=False)
        spec[rel] = {"type": "symlink", "target": target, "uid": owner[0], "gid": owner[1],
                     "size": len(os.fsencode(target))}

    spec["."] = {"type": "dir"}
    for d, mode, owner in (("files", 0o755, (0, 0)), ("empty-dir", 0o700, (1000, 1000)),
                           ("sticky", 0o1777, (0, 0)), ("sgid-dir", 0o2775, (0, 4242)),
                           ("a", 0o755, (0, 0)), ("a/b", 0o750, (12, 34)),
                           ("a/b/c", 0o755, (0, 0)), ("a/b/c/d", 0o711, (0, 0)),
                           ("links", 0o755, (0, 0)), ("hard", 0o755, (0, 0)),
                           ("special", 0o755, (0, 0))):
        mkdir(d, mode, owner)
    put("a/b/c/d/deep.txt", b"deep\n")
    put("files/empty", b"")
    put("files/small.txt", b"hello, world\n")
    put("files/exec.sh", b"#!/bin/sh\necho hi\n", 0o755)
    put("files/private", rbytes("private", 5000), 0o600, (1000, 1000))
    put("files/none", b"no permissions at all\n", 0o000, (65534, 65534))
    put("files/setuid", b"\x7fELF fake\n", 0o4755)
    put("files/setgid", b"\x7fELF fake too\n", 0o2755, (0, 50))
    put("files/big.bin", rbytes("big", 3 * MIB + 123))
    put("files/unicode-\u00e9-\u65e5\u672c.txt", "caf\u00e9\n".encode())
    put("files/name with spaces", b"spaces\n")
    put("files/" + "L" * 255, b"longest name\n")
    put("files/.hidden", b"hidden\n", 0o640, (0, 1000))
    put("sticky/in-sticky", b"x", 0o666, (1000, 1000))
    # sparse: data at the start, in the middle and at the end, holes in between
    with open(P("files/sparse"), "wb") as f:
        f.write(b"start")
        f.seek(5 * MIB)
        f.write(b"middle")
        f.seek(10 * MIB - 3)
        f.write(b"end")
    with open(P("files/sparse"), "rb") as f:
        data = f.read()
    spec["files/sparse"] = {"type": "file", "mode": "644", "size": len(data),
                            "sha256": hashlib.sha256(data).hexdigest()}
    os.chmod(P("files/sparse"), 0o644)

    symlink("links/rel", "../files/small.txt")
    symlink("links/abs", "/etc/hostname")
    symlink("links/dangling", "does/not/exist")
    symlink("links/dirlink", "../a")
    symlink("links/chain", "rel")
    symlink("links/owned", "../files/exec.sh", (1234, 5678))
    symlink("links/long", "/".join(["component%03d" % i for i in range(300)])[:4000])
    symlink("links/unicode-\u00e9", "\u65e5\u672c")

    put("hard/h1", rbytes("hard", 70000))
    os.link(P("hard/h1"), P("hard/h2"))
    os.link(P("hard/h1"), P("files/h3-elsewhere"))
    os.link(P("files/exec.sh"), P("hard/exec-link"))
    for rel in ("hard/h2", "files/h3-elsewhere"):
        spec[rel] = dict(spec["hard/h1"])
    spec["hard/exec-link"] = dict(spec["files/exec.sh"])
    for rel in ("hard/h1", "hard/h2", "files/h3-elsewhere"):
        spec[rel]["nlink"] = 3
        spec[rel]["same_inode_as"] = "files/h3-elsewhere"
    for rel in ("files/exec.sh", "hard/exec-link"):
        spec[rel]["nlink"] = 2
        spec[rel]["same_inode_as"] = "files/exec.sh"

    os.mkfifo(P("special/fifo"), 0o640)
    os.chmod(P("special/fifo"), 0o640)
    spec["special/fifo"] = {"type": "fifo", "mode": "640", "uid": 0, "gid": 0}
    os.mkfifo(P("special/fifo-owned"))
    os.chown(P("special/fifo-owned"), 321, 654)
    os.chmod(P("special/fifo-owned"), 0o604)
    spec["special/fifo-owned"] = {"type": "fifo", "mode": "604", "uid": 321, "gid": 654}

    xa = {
        "files/small.txt": {"user.a": b"1", "user.empty": b"", "user.bin": bytes(range(256))},
        "files/big.bin": {"user.big": rbytes("xattr", 4000), "user.mime_type": b"application/x"},
        "hard/h1": {"user.shared": b"seen through every link"},
        "a": {"user.dir": b"on a directory"},
        "empty-dir": {"user.x": b"y"},
    }
    for rel, attrs in xa.items():
        for n, v in attrs.items():
            os.setxattr(P(rel), n, v)
    for rel in spec:
        spec[rel]["xattrs"] = {}
    for rel, attrs in xa.items():
        spec[rel]["xattrs"] = {n: v.hex() for n, v in sorted(attrs.items())}
    for rel in ("hard/h2", "files/h3-elsewhere"):
        spec[rel]["xattrs"] = spec["hard/h1"]["xattrs"]

    set_times(t, spec, 0)
    with open(specpath, "w") as f:
        json.dump(spec, f, indent=1, sort_keys=True)


def set_times(t, spec, gen):
    """Distinct times for everything, deepest paths first (a child's change touches its
    parent's mtime).  Hard links share an inode: the last path set wins, spec says so."""
    now_ns = time.time_ns()
    special = {"files/empty": 0, "files/small.txt": 4102444800 * 10**9 + 999999999}
    order = sorted(spec, key=lambda r: (-r.count("/") - (r != "."), r))
    by_inode = {}
    for i, rel in enumerate(order):
        mtime = special.get(rel, T0 + gen * 10**12 + i * 1000000007)
        atime = now_ns - 3600 * 10**9 + 987654321 + i * 1000003
        os.utime(os.path.join(t, rel), ns=(atime, mtime), follow_symlinks=False)
        group = spec[rel].get("same_inode_as", rel)
        by_inode[group] = mtime
        spec[rel]["mtime_ns"] = mtime
    for rel in spec:
        group = spec[rel].get("same_inode_as")
        if group:
            spec[rel]["mtime_ns"] = by_inode[group]


def mutate(root, specpath):
    t = os.path.join(root, "tree")
    spec = json.load(open(specpath))

    def P(rel):
        return os.path.join(t, rel)

    os.chmod(P("files/small.txt"), 0o640)
    spec["files/small.txt"]["mode"] = "640"
    os.chown(P("files/private"), 2000, 3000)
    os.chmod(P("files/private"), 0o604)
    spec["files/private"].update(uid=2000, gid=3000, mode="604")
    os.unlink(P("hard/h2"))
    del spec["hard/h2"]
    for rel in ("hard/h1", "files/h3-elsewhere"):
        spec[rel]["nlink"] = 2
    os.rename(P("files/big.bin"), P("a/b/big-moved.bin"))
    spec["a/b/big-moved.bin"] = spec.pop("files/big.bin")
    os.truncate(P("files/sparse"), 6 * MIB)
    with open(P("files/sparse"), "rb") as f:
        data = f.read()
    spec["files/sparse"].update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    with open(P("files/exec.sh"), "r+b") as f:
        f.seek(2)
        f.write(b"!/bin/bash\n")
        f.seek(0)
        data = f.read()
    for rel in ("files/exec.sh", "hard/exec-link"):
        spec[rel].update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    os.removexattr(P("files/small.txt"), "user.a")
    os.setxattr(P("files/small.txt"), "user.bin", b"replaced")
    spec["files/small.txt"]["xattrs"] = {"user.bin": b"replaced".hex(), "user.empty": ""}
    os.rmdir(P("empty-dir"))
    del spec["empty-dir"]
    os.symlink("../files/exec.sh", P("links/.new"))
    os.rename(P("links/.new"), P("links/rel"))
    spec["links/rel"].update(target="../files/exec.sh", size=len("../files/exec.sh"))
    os.unlink(P("special/fifo-owned"))
    del spec["special/fifo-owned"]
    with open(P("a/b/c/new-after-remount"), "wb") as f:
        f.write(b"new\n")
    spec["a/b/c/new-after-remount"] = {"type": "file", "mode": "644", "size": 4, "xattrs": {},
                                      "sha256": hashlib.sha256(b"new\n").hexdigest()}
    os.chmod(P("a/b/c/new-after-remount"), 0o644)
    set_times(t, spec, 1)
    with open(specpath, "w") as f:
        json.dump(spec, f, indent=1, sort_keys=True)


def compare(a, b, fields):
    da, db = json.load(open(a)), json.load(open(b))
    diffs = []
    for rel in sorted(set(da) | set(db)):
        if rel not in db:
            diffs.append("%s: missing from %s" % (rel, b))
            continue
        if rel not in da:
            if not fields:
                diffs.append("%s: only in %s" % (rel, b))
            continue
        ea, eb = da[rel], db[rel]
        for k in sorted(set(ea) | set(eb)):
            if fields and k not in fields:
                continue
            if fields and k not in ea:
                continue
            if ea.get(k) != eb.get(k):
                diffs.append("%s: %s %r != %r" % (rel, k, ea.get(k), eb.get(k)))
    if diffs:
        print("compare %s %s: %d difference(s):" % (os.path.basename(a), os.path.basename(b),
                                                     len(diffs)), file=sys.stderr)
        for d in diffs[:60]:
            print("  " + d, file=sys.stderr)
        sys.exit(1)
    print("compare %s %s: %d paths identical" % (os.path.basename(a), os.path.basename(b), len(da)))


def main():
    a = sys.argv[1:]
    if len(a) == 3 and a[0] == "make":
        make(a[1], a[2])
    elif len(a) == 3 and a[0] == "mutate":
        mutate(a[1], a[2])
    elif len(a) == 3 and a[0] == "full":
        json.dump(dump_full(os.path.join(a[1], "tree")), open(a[2], "w"), indent=1,
                  sort_keys=True)
    elif len(a) == 4 and a[0] == "stat":
        spec = json.load(open(a[2]))
        json.dump(dump_stat(os.path.join(a[1], "tree"), sorted(spec)), open(a[3], "w"),
                  indent=1, sort_keys=True)
    elif len(a) in (3, 4) and a[0] == "compare":
        compare(a[1], a[2], set(a[3].split(",")) if len(a) == 4 else None)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
