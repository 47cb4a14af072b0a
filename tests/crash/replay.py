#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Power-loss reconstruction for the crash battery (powerloss.sh): what the store directory
would hold after a power loss at a point of the journal iojournal.c recorded, and the checks.

    replay.py stats JOURNAL
        counts of the journal's records by kind and file.
    replay.py cuts BIN JOURNAL SNAPDIR INOS BASELINE WORKDIR --n N --seed S LOG...
        picks N cut points, rebuilds the store at each (with a loss mode each), and checks
        it: PRAGMA integrity_check on a copy of the index, pkgcachefs fsck of the store as
        rebuilt, a mount, cwork.py check of the writers' logs cut at that point (the fsync
        manifest: every operation whose fsync had returned before the cut reads back exactly,
        nothing reads back wrong), fsck of the mounted store, a clean umount and a last fsck.
        Prints "cuts: checked=C failures=F ..." and one FAIL line per failure; exit 1 on any.
    replay.py build JOURNAL SNAPDIR INOS CUT MODE SEED OUTDIR
        rebuilds one cut (to reproduce a failure by hand).

The model of a power loss at cut c (records [0, c) happened):

  Files are identified by inode; a CREATE record starts a new file under that inode number
  (numbers are reused after deletion). A sync (fsync, fdatasync) that ended before c makes
  durable every operation on that file recorded before the sync began; a sync of a directory
  makes durable every namespace operation (create, rename, unlink, mkdir, rmdir) in that
  directory recorded before it began. A rename is durable when either directory was synced;
  it is atomic (one name or the other, never both or neither). A failed sync counts for
  nothing. Everything else before c is unflushed, and the loss mode decides its fate:
    drop    every unflushed operation is lost;
    subset  each unflushed namespace operation and each unflushed write or truncate is kept
            or lost independently (a write kept may be torn: any subset of its 4 KiB pages),
            in the order they were made; what cannot be applied (a rename of a name never
            created) is skipped;
    prefix  per directory, a prefix of the unflushed namespace operations survives (ordered
            metadata, as ext4's journal gives); file data as in subset;
    meta    every namespace operation survives (a journaling filesystem commits metadata
            within seconds, fsync or not), every unflushed write or truncate is lost;
    all     nothing is lost (as a kill -9 at that point): a sanity check of the model.
  Content starts from the snapshot taken before the journaled mount (a store at rest).

Not modelled: stores through mmap (SQLite's -shm is not journaled: it is deleted, or filled
with garbage, and SQLite rebuilds it from the WAL, as it does after a real power loss);
stdio writes (fopen'ed status files: exit-status, push-result); a file's data made durable
by an fsync of another file or by a journal commit of the filesystem (the model is stricter
than ext4); reordering inside one write beyond whole 4 KiB pages; the device lying about
flushes (REPLAY_IGNORE_SYNCS=1 models exactly that, as a negative control: the checks must
then fail). Directory entries of files made by an O_CREAT open are namespace operations like
the others: an fsync of the file alone does not make its name durable.
"""

import collections
import json
import mmap
import os
import random
import shutil
import struct
import subprocess
import sys
import time

HDR = struct.Struct("<4sIQQQQIIII")
(R_WRITE, R_TRUNC, R_CREATE, R_RENAME, R_UNLINK, R_MKDIR, R_RMDIR, R_SYNC_BEGIN, R_SYNC_END,
 R_MMAP, R_MSYNC, R_SFR, R_FALLOC, R_MARK, R_OTHER) = range(1, 16)
NAMES = {1: "write", 2: "trunc", 3: "create", 4: "rename", 5: "unlink", 6: "mkdir",
         7: "rmdir", 8: "sync_begin", 9: "sync_end", 10: "mmap", 11: "msync",
         12: "sync_file_range", 13: "fallocate", 14: "mark", 15: "other"}
NS_OPS = (R_CREATE, R_RENAME, R_UNLINK, R_MKDIR, R_RMDIR)
HERE = os.path.dirname(os.path.abspath(__file__))


def parent(p):
    d = os.path.dirname(p)
    return d if d else "."


class Journal:
    """The records of a journal, with object identities and sync coverage resolved once."""

    def __init__(self, path, inos):
        self.f = open(path, "rb")
        size = os.fstat(self.f.fileno()).st_size
        self.m = mmap.mmap(self.f.fileno(), size, prot=mmap.PROT_READ) if size else b""
        self.recs = []  # (type, obj or None, off, len, token, flags, path, path2, dpos, dlen)
        gen = collections.Counter()
        known = set(inos.values())
        self.unknown = 0
        p = 0
        while p + HDR.size <= size:
            magic, t, ino, off, ln, tok, pl, p2l, dl, fl = HDR.unpack_from(self.m, p)
            if magic != b"IOJ1":
                raise SystemExit("journal damaged at byte %d" % p)
            q = p + HDR.size
            path = bytes(self.m[q:q + pl]).decode(errors="replace")
            q += pl
            path2 = bytes(self.m[q:q + p2l]).decode(errors="replace")
            q += p2l
            obj = None
            if t == R_CREATE:
                gen[ino] += 1
                obj = (ino, gen[ino])
            elif t in (R_WRITE, R_TRUNC, R_FALLOC) or (t == R_SYNC_BEGIN and not fl & 1):
                obj = (ino, gen[ino])
                if gen[ino] == 0 and ino not in known:
                    self.unknown += 1
            self.recs.append((t, obj, off, ln, tok, fl, path, path2, q, dl))
            p = q + dl
        if p != size:
            raise SystemExit("journal ends inside a record (%d of %d bytes)" % (p, size))
        # Pair syncs: (begin index, end index, obj or dir path) of the successful ones.
        begins = {}
        self.syncs = []
        for i, r in enumerate(self.recs):
            if r[0] == R_SYNC_BEGIN:
                begins[r[4]] = (i, ("dir", r[6]) if r[5] & 1 else r[1])
            elif r[0] == R_SYNC_END and r[4] in begins:
                b, what = begins.pop(r[4])
                if r[3] == 0:
                    self.syncs.append((b, i, what))

    def data(self, r):
        return self.m[r[8]:r[8] + r[9]]

    def durable_marks(self, c):
        """What each sync covers at cut c: obj or ('dir', path) -> the latest begin index."""
        cov = {}
        if os.environ.get("REPLAY_IGNORE_SYNCS"):
            return cov  # negative control: a disk that ignores flushes must fail the checks
        for b, e, what in self.syncs:
            if e < c and cov.get(what, -1) < b:
                cov[what] = b
        return cov

    def marks(self, c):
        """--upto for cwork.py: per writer, the last operation begun and the last returned."""
        up = {}
        for i in range(c):
            r = self.recs[i]
            if r[0] == R_MARK:
                w, k, seq = bytes(self.data(r)).decode().split()
                b, d = up.get(w, (0, 0))
                up[w] = (max(b, int(seq)), d) if k == "B" else (b, max(d, int(seq)))
        return ",".join("%s=%d:%d" % (w, b, d) for w, (b, d) in sorted(up.items()))


def rebuild(j, snapdir, inos, c, mode, seed, out):
    """Writes the store as a power loss at cut c in `mode` would leave it into out."""
    rng = random.Random(seed)
    cov = j.durable_marks(c)
    # Namespace: the snapshot's names, then the namespace operations that survive.
    ns = {p: (ino, 0) for p, ino in inos.items()}
    dirs = {"."}
    for dp, dn, _ in os.walk(snapdir):
        rd = os.path.relpath(dp, snapdir)
        for d in dn:
            dirs.add(d if rd == "." else rd + "/" + d)
    ops = [(i, r) for i, r in enumerate(j.recs[:c]) if r[0] in NS_OPS]

    def dirs_of(r):
        ds = {parent(r[6])}
        if r[0] == R_RENAME:
            ds.add(parent(r[7]))
        return ds

    def durable(i, r):
        return any(cov.get(("dir", d), -1) > i for d in dirs_of(r))

    keep = set()
    if mode == "prefix":
        by_dir = collections.defaultdict(list)
        for i, r in ops:
            for d in dirs_of(r):
                by_dir[d].append((i, r))
        cut_at = {}
        for d, lst in by_dir.items():
            forced = max([k + 1 for k, (i, r) in enumerate(lst) if durable(i, r)], default=0)
            cut_at[d] = rng.randint(forced, len(lst))
            for k, (i, r) in enumerate(lst[:cut_at[d]]):
                keep.add(i)
        # A cross-directory rename survives only if both directories kept it.
        for i, r in ops:
            if i in keep and len(dirs_of(r)) > 1 and not durable(i, r):
                if not all(i in {x for x, _ in by_dir[d][:cut_at[d]]} for d in dirs_of(r)):
                    keep.discard(i)
    for i, r in ops:
        if durable(i, r) or mode in ("all", "meta") or (mode == "subset" and rng.random() < 0.5):
            keep.add(i)
    for i, r in ops:
        if i not in keep:
            continue
        t, obj, path, path2 = r[0], r[1], r[6], r[7]
        if t == R_CREATE:
            if parent(path) in dirs:
                ns[path] = obj
        elif t == R_RENAME:
            if path in ns and parent(path2) in dirs:
                ns[path2] = ns.pop(path)
        elif t == R_UNLINK:
            ns.pop(path, None)
        elif t == R_MKDIR:
            if parent(path) in dirs:
                dirs.add(path)
        elif t == R_RMDIR:
            if not any(parent(p) == path for p in ns):
                dirs.discard(path)
    # Data of the files that have a name.
    wanted = set(ns.values())
    content = {}
    for p, ino in inos.items():
        if (ino, 0) in wanted:
            with open(os.path.join(snapdir, p), "rb") as f:
                content[(ino, 0)] = bytearray(f.read())
    dropped = torn = 0
    for i in range(c):
        r = j.recs[i]
        t, obj = r[0], r[1]
        if obj not in wanted or t not in (R_WRITE, R_TRUNC):
            continue
        buf = content.setdefault(obj, bytearray())
        isdur = cov.get(obj, -1) > i
        if not isdur and mode != "all":
            if mode in ("drop", "meta") or rng.random() < 0.5:
                dropped += 1
                continue
        if t == R_TRUNC:
            n = r[3]
            if n < len(buf):
                del buf[n:]
            else:
                buf.extend(bytes(n - len(buf)))
            continue
        off, data = r[2], j.data(r)
        if len(buf) < off:
            buf.extend(bytes(off - len(buf)))
        if not isdur and mode != "all" and rng.random() < 0.2 and len(data) > 4096:
            # Torn: some 4 KiB pages of the write reached the disk, others not.
            torn += 1
            first = off // 4096
            last = (off + len(data) - 1) // 4096
            end = off + len(data)
            for pg in range(first, last + 1):
                if rng.random() < 0.5:
                    continue
                a, b = max(off, pg * 4096), min(end, (pg + 1) * 4096)
                if len(buf) < b:
                    buf.extend(bytes(b - len(buf)))
                buf[a:b] = data[a - off:b - off]
            continue
        end = off + len(data)
        if len(buf) < end:
            buf.extend(bytes(end - len(buf)))
        buf[off:end] = data
    if os.path.exists(out):
        shutil.rmtree(out)
    for d in sorted(dirs, key=len):
        os.makedirs(os.path.join(out, d), mode=0o700, exist_ok=True)
    for p, obj in ns.items():
        if p.endswith("-shm"):
            continue
        with open(os.path.join(out, p), "wb") as f:
            f.write(content.get(obj, b""))
        os.chmod(os.path.join(out, p), 0o600)
    shm = "garbage" if rng.random() < 0.5 and "index.db-shm" in ns else "deleted"
    if shm == "garbage":
        with open(os.path.join(out, "index.db-shm"), "wb") as f:
            f.write(rng.randbytes(32768))
    return {"dropped": dropped, "torn": torn, "shm": shm, "names": len(ns)}


def pick_cuts(j, n, rng):
    """Cut points at and between flush boundaries, and right after namespace changes."""
    total = len(j.recs)
    bounds = sorted({e + 1 for _, e, _ in j.syncs} | {b for b, _, _ in j.syncs} | {total})
    after_ns = [i + 1 for i, r in enumerate(j.recs) if r[0] in (R_RENAME, R_UNLINK)]
    # Right after a pack is deleted, and after the sync of the packs directory that follows:
    # the index must no longer need it, durably.
    critical = []
    for i, r in enumerate(j.recs):
        if r[0] == R_UNLINK and r[6].startswith("packs/"):
            critical.append(i + 1)
            nxt = [e + 1 for b, e, w in j.syncs if b > i and w == ("dir", "packs")]
            if nxt:
                critical.append(min(nxt))
    cuts = []
    for c in sorted(set(critical))[:n // 3]:
        cuts.append(c)
    while len(cuts) < n:
        x = rng.random()
        if x < 0.4 or not after_ns:
            cuts.append(rng.choice(bounds))
        elif x < 0.65:
            cuts.append(rng.choice(after_ns))
        else:
            k = rng.randrange(len(bounds))
            lo = bounds[k - 1] if k else 0
            cuts.append(rng.randint(lo, bounds[k]))
    modes = rng.choices(["drop", "subset", "prefix", "meta", "all"], [30, 35, 15, 12, 8], k=n)
    for k in range(min(n // 3, len(critical))):
        modes[k] = "meta" if k % 2 == 0 else "drop"
    return list(zip(cuts, modes))


def sh(cmd, timeout=300):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace")


def is_mounted(mnt):
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == mnt for line in f)


def check_cut(binp, j, snapdir, inos, baseline, logs, work, k, c, mode, seed):
    """(rebuild info, None) when the store rebuilt at cut c passes every check, else
    (info, what failed). After a failed fsck it still mounts and checks the files, so the
    report says what a user would lose."""
    store = os.path.join(work, "store")
    mnt = os.path.join(work, "mnt")
    os.makedirs(mnt, exist_ok=True)
    info = rebuild(j, snapdir, inos, c, mode, seed, store)
    why = []
    # SQLite opens it: on a copy, since closing the last connection would checkpoint.
    sq = os.path.join(work, "sq")
    shutil.rmtree(sq, ignore_errors=True)
    os.makedirs(sq)
    for f in ("index.db", "index.db-wal"):
        if os.path.exists(os.path.join(store, f)):
            shutil.copy(os.path.join(store, f), sq)
    rc, out = sh(["sqlite3", os.path.join(sq, "index.db"), "PRAGMA integrity_check"])
    if rc != 0 or out.strip() != "ok":
        why.append("sqlite3 PRAGMA integrity_check: %s" % out.strip()[:500])
    rc, out = sh([binp, "fsck", "--store", store])
    if rc != 0:
        why.append("pkgcachefs fsck of the store as rebuilt exited %d:\n%s" % (
            rc, "\n".join(out.splitlines()[:6] + ["..."] + out.splitlines()[-4:])))
    rc, out = sh([binp, "mount", "--store", store, mnt], timeout=120)
    if rc != 0 or not is_mounted(mnt):
        why.append("mount of the rebuilt store failed (%d): %s" % (rc, out[-2000:]))
        return info, "\n".join(why)
    try:
        rc, out = sh([sys.executable, os.path.join(HERE, "cwork.py"), "check", mnt, baseline,
                      "-", "--upto", j.marks(c)] + logs)
        if rc != 0:
            why.append("the mounted store does not hold what was fsynced before the cut:\n" +
                       out)
        else:
            info["check"] = out.strip()
        rc, out = sh([binp, "fsck", "--store", store])
        if rc != 0 and len(why) <= 1:
            why.append("fsck of the mounted rebuilt store exited %d:\n%s" % (rc, out[-1500:]))
    finally:
        rc, out = sh([binp, "umount", mnt], timeout=300)
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-u", "-z", mnt])
            why.append("umount of the rebuilt store failed: %s" % out)
        elif rc != 0:
            why.append("umount of the rebuilt store exited %d: %s" % (rc, out))
        for _ in range(100):
            if not os.path.exists(os.path.join(store, "daemon.pid")):
                break
            time.sleep(0.1)
    if not why:
        rc, out = sh([binp, "fsck", "--store", store])
        if rc != 0:
            why.append("fsck after the clean umount exited %d:\n%s" % (rc, out[-3000:]))
    return info, "\n".join(why) or None


def load_inos(path):
    inos = {}
    with open(path) as f:
        for line in f:
            p, ino = line.rstrip("\n").rsplit("\t", 1)
            inos[p] = int(ino)
    return inos


def cmd_cuts(a):
    n, seed, rest = 20, 1, []
    i = 0
    while i < len(a):
        if a[i] == "--n":
            n = int(a[i + 1])
            i += 2
        elif a[i] == "--seed":
            seed = int(a[i + 1])
            i += 2
        else:
            rest.append(a[i])
            i += 1
    binp, jpath, snapdir, inosf, baseline, work = rest[:6]
    logs = rest[6:]
    inos = load_inos(inosf)
    j = Journal(jpath, inos)
    rng = random.Random(seed)
    cuts = pick_cuts(j, n, rng)
    modes = collections.Counter()
    failures = 0
    lost_ops = torn = 0
    for k, (c, mode) in enumerate(cuts):
        cseed = rng.randrange(1 << 30)
        info, why = check_cut(binp, j, snapdir, inos, baseline, logs, work, k, c, mode, cseed)
        modes[mode] += 1
        lost_ops += info["dropped"]
        torn += info["torn"]
        if why:
            failures += 1
            keep = work + "-fail-%d" % k
            shutil.rmtree(keep, ignore_errors=True)
            if os.path.exists(os.path.join(work, "store")):
                shutil.copytree(os.path.join(work, "store"), keep)
            print("FAIL: cut %d of %d (%s, seed %d, shm %s, %d unflushed ops dropped): %s" % (
                c, len(j.recs), mode, cseed, info["shm"], info["dropped"], why))
            print("  reproduce: replay.py build %s %s %s %d %s %d OUT; rebuilt store kept in %s"
                  % (jpath, snapdir, inosf, c, mode, cseed, keep))
        else:
            print("cut %d/%d %s: ok (%d unflushed ops dropped, %d torn, shm %s; %s)" % (
                c, len(j.recs), mode, info["dropped"], info["torn"], info["shm"],
                info.get("check", "")))
        sys.stdout.flush()
    print("cuts: checked=%d failures=%d records=%d syncs=%d modes=%s dropped_ops=%d torn=%d "
          "unknown_files=%d" % (len(cuts), failures, len(j.recs), len(j.syncs),
                                ",".join("%s:%d" % kv for kv in sorted(modes.items())),
                                lost_ops, torn, j.unknown))
    return 1 if failures else 0


def main():
    a = sys.argv[1:]
    if len(a) == 2 and a[0] == "stats":
        j = Journal(a[1], {})
        c = collections.Counter((NAMES[r[0]], r[6].split("/")[0] if r[0] != R_SYNC_END else "")
                                for r in j.recs)
        for k, v in sorted(c.items()):
            print("%-16s %-28s %d" % (k[0], k[1], v))
        print("syncs completed: %d" % len(j.syncs))
    elif len(a) == 8 and a[0] == "build":
        inos = load_inos(a[3])
        j = Journal(a[1], inos)
        print(json.dumps(rebuild(j, a[2], inos, int(a[4]), a[5], int(a[6]), a[7])))
        print("upto: " + j.marks(int(a[4])))
    elif a and a[0] == "cuts":
        sys.exit(cmd_cuts(a[1:]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
