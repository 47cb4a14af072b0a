#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""An emulation of uv's cache and its installs into venvs on the same filesystem (uv-like.sh).

    uv_like.py run ROOT PROCS SEED     PROCS processes "install" every package of a pool into
                                       their own venv under ROOT, sharing ROOT/cache
    uv_like.py verify ROOT PROCS SEED  checks the cache and every venv

What each process does, as uv does it (see DESIGN-NOTES):
  - flock(LOCK_SH) on cache/.lock for the whole run; CACHEDIR.TAG written once;
  - per package, flock(LOCK_EX) on cache/locks/<id>.lock; if the unpacked archive is not
    there yet: unpack into a temp directory cache/.tmpXXXX (files, an executable with its
    mode bits, a symlink), rename the directory to cache/archive-v0/<id>; point
    cache/wheels-v1/<name> at it with a symlink made under a temp name and renamed over;
  - install: hard link every file of the archive into venv/lib/site-packages (uv's default
    link mode on one filesystem), recreate symlinks, and write a RECORD through O_TMPFILE +
    linkat (or a named temp file + rename when O_TMPFILE is refused: EOPNOTSUPP, EISDIR);
  - publish the venv's marker with renameat2(RENAME_NOREPLACE) (falling back to link+unlink
    on EINVAL, as uv does), which must refuse an existing name with EEXIST.
One extra check: while a process holds LOCK_EX on an entry, LOCK_EX|LOCK_NB from another
open file description must fail with EWOULDBLOCK.

verify: every archive is complete and holds exactly its files, modes and symlink; no temp
dir is left; wheels-v1 symlinks resolve to their archive; every venv file is a hard link of
the archive file (same inode, st_nlink = 1 + number of venvs) with the same content; every
RECORD lists the right hashes; every marker exists.
"""

import ctypes
import errno
import fcntl
import hashlib
import json
import os
import random
import stat
import sys
import tempfile

NPKG = 14
RENAME_NOREPLACE = 1
AT_FDCWD = -100
AT_SYMLINK_FOLLOW = 0x400
libc = ctypes.CDLL(None, use_errno=True)


def package(seed, i):
    """(name, {relpath: (bytes, mode)}, {relpath: target})"""
    rng = random.Random("uv-%s-%d" % (seed, i))
    name = "pkg%02d" % i
    files = {
        "%s/__init__.py" % name: (b"# %s\n" % name.encode() + rng.randbytes(200).hex().encode(), 0o644),
        "%s/data.bin" % name: (rng.randbytes(rng.choice([1000, 50000, 300000, 2 << 20])), 0o644),
        "%s-1.0.dist-info/METADATA" % name: (b"Name: %s\nVersion: 1.0\n" % name.encode(), 0o644),
        "bin/%s-tool" % name: (b"#!/bin/sh\necho %s\n" % name.encode(), 0o755),
    }
    links = {"%s/alias.py" % name: "__init__.py"}
    return name, files, links


def entry_id(name):
    return hashlib.sha256(name.encode()).hexdigest()[:16]


def renameat2_noreplace(src, dst):
    r = libc.renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst),
                       RENAME_NOREPLACE)
    if r != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), dst)


def publish_noreplace(src, dst):
    """uv's lock-file publication: RENAME_NOREPLACE, or link + unlink where not supported."""
    try:
        renameat2_noreplace(src, dst)
        return "renameat2"
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
    os.link(src, dst)
    os.unlink(src)
    return "link"


def write_tmpfile(dirpath, final, data):
    """O_TMPFILE + linkat, or a named temp file + rename where O_TMPFILE is refused."""
    try:
        fd = os.open(dirpath, os.O_TMPFILE | os.O_WRONLY, 0o644)
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
        fd = None
    if fd is None:
        tmp = final + ".tmp%d" % os.getpid()
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, final)
        return "named"
    try:
        os.write(fd, data)
        # linkat(AT_SYMLINK_FOLLOW) on the /proc fd link, as open(2) documents (os.link
        # calls link(), which would try to link the /proc symlink itself).
        if libc.linkat(AT_FDCWD, b"/proc/self/fd/%d" % fd, AT_FDCWD, os.fsencode(final),
                       AT_SYMLINK_FOLLOW) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e), final)
    finally:
        os.close(fd)
    return "o_tmpfile"


def ensure_archive(cache, seed, i, stats):
    name, files, links = package(seed, i)
    eid = entry_id(name)
    archive = os.path.join(cache, "archive-v0", eid)
    lockfd = os.open(os.path.join(cache, "locks", eid + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lockfd, fcntl.LOCK_EX)
        # Another open file description must see the lock.
        probe = os.open(os.path.join(cache, "locks", eid + ".lock"), os.O_RDWR)
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            raise RuntimeError("flock: LOCK_EX|LOCK_NB succeeded while LOCK_EX is held on %s"
                               % eid)
        except BlockingIOError:
            pass
        finally:
            os.close(probe)
        if not os.path.isdir(archive):
            tmpd = tempfile.mkdtemp(prefix=".tmp", dir=cache)
            for rel, (data, mode) in files.items():
                p = os.path.join(tmpd, rel)
                os.makedirs(os.path.dirname(p), exist_ok=True)
                with open(p, "wb") as f:
                    f.write(data)
                os.chmod(p, mode)
            for rel, target in links.items():
                os.symlink(target, os.path.join(tmpd, rel))
            os.rename(tmpd, archive)
            stats["unpacked"] += 1
            link = os.path.join(cache, "wheels-v1", name)
            tmpl = link + ".tmp%d" % os.getpid()
            os.symlink(os.path.join("..", "archive-v0", eid), tmpl)
            os.rename(tmpl, link)
        else:
            stats["reused"] += 1
    finally:
        fcntl.flock(lockfd, fcntl.LOCK_UN)
        os.close(lockfd)
    return name, archive, files, links


def install(root, cache, venv, seed, order):
    stats = {"unpacked": 0, "reused": 0, "o_tmpfile": 0, "named": 0, "renameat2": 0, "link": 0}
    site = os.path.join(venv, "lib", "site-packages")
    os.makedirs(site)
    for i in order:
        name, archive, files, links = ensure_archive(cache, seed, i, stats)
        record = []
        for rel in sorted(files):
            dst = os.path.join(site, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.link(os.path.join(archive, rel), dst)
            record.append("%s,%s" % (rel, hashlib.sha256(files[rel][0]).hexdigest()))
        for rel, target in links.items():
            os.symlink(target, os.path.join(site, rel))
        di = os.path.join(site, "%s-1.0.dist-info" % name)
        stats[write_tmpfile(di, os.path.join(di, "RECORD"), ("\n".join(record) + "\n").encode())] += 1
    marker_tmp = os.path.join(venv, ".marker.tmp")
    with open(marker_tmp, "w") as f:
        f.write("installed %d packages\n" % len(order))
    stats[publish_noreplace(marker_tmp, os.path.join(venv, "pyvenv.cfg"))] += 1
    # RENAME_NOREPLACE must refuse an existing name.
    with open(marker_tmp, "w") as f:
        f.write("again\n")
    try:
        renameat2_noreplace(marker_tmp, os.path.join(venv, "pyvenv.cfg"))
        raise RuntimeError("renameat2(RENAME_NOREPLACE) replaced an existing file")
    except OSError as e:
        if e.errno not in (errno.EEXIST, errno.EINVAL):
            raise
    os.unlink(marker_tmp)
    return stats


def run(root, procs, seed):
    cache = os.path.join(root, "cache")
    for d in ("archive-v0", "wheels-v1", "locks"):
        os.makedirs(os.path.join(cache, d), exist_ok=True)
    with open(os.path.join(cache, "CACHEDIR.TAG"), "w") as f:
        f.write("Signature: 8a477f597d28d172789f06886806bc55\n")
    pids = []
    for p in range(procs):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                lock = os.open(os.path.join(cache, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
                fcntl.flock(lock, fcntl.LOCK_SH)
                order = list(range(NPKG))
                random.Random("%s-%d" % (seed, p)).shuffle(order)
                stats = install(root, cache, os.path.join(root, "venv%d" % p), seed, order)
                print("process %d: %s" % (p, json.dumps(stats, sort_keys=True)))
            except BaseException as e:
                sys.stderr.write("process %d: %s: %s\n" % (p, type(e).__name__, e))
                code = 1
            sys.stdout.flush()
            os._exit(code)
        pids.append(pid)
    failed = sum(os.waitpid(pid, 0)[1] != 0 for pid in pids)
    if failed:
        sys.exit("run: %d process(es) failed (above)" % failed)


def verify(root, procs, seed):
    cache = os.path.join(root, "cache")
    problems = []
    left = [n for n in os.listdir(cache) if n.startswith(".tmp")]
    if left:
        problems.append("temp dirs left in the cache: %s" % left)
    for d in ("wheels-v1", "locks"):
        junk = [n for n in os.listdir(os.path.join(cache, d)) if ".tmp" in n]
        if junk:
            problems.append("temp names left in %s: %s" % (d, junk))
    if len(os.listdir(os.path.join(cache, "archive-v0"))) != NPKG:
        problems.append("archive-v0 holds %d entries, %d expected" % (
            len(os.listdir(os.path.join(cache, "archive-v0"))), NPKG))
    for i in range(NPKG):
        name, files, links = package(seed, i)
        eid = entry_id(name)
        archive = os.path.join(cache, "archive-v0", eid)
        link = os.path.join(cache, "wheels-v1", name)
        if os.path.realpath(link) != os.path.realpath(archive):
            problems.append("wheels-v1/%s resolves to %s" % (name, os.path.realpath(link)))
        found = set()
        for dirpath, _, fnames in os.walk(archive):
            for fn in fnames:
                found.add(os.path.relpath(os.path.join(dirpath, fn), archive))
        if found != set(files) | set(links):
            problems.append("archive of %s holds %s" % (name, sorted(found)))
        for rel, (data, mode) in files.items():
            a = os.path.join(archive, rel)
            try:
                st = os.lstat(a)
                with open(a, "rb") as f:
                    got = f.read()
            except OSError as e:
                problems.append("%s: %s" % (a, e))
                continue
            if got != data:
                problems.append("%s: content differs" % a)
            if stat.S_IMODE(st.st_mode) != mode:
                problems.append("%s: mode %o, expected %o" % (a, stat.S_IMODE(st.st_mode), mode))
            if st.st_nlink != 1 + procs:
                problems.append("%s: st_nlink %d, expected %d (archive + %d venvs)" % (
                    a, st.st_nlink, 1 + procs, procs))
            for p in range(procs):
                v = os.path.join(root, "venv%d" % p, "lib", "site-packages", rel)
                try:
                    vst = os.lstat(v)
                except OSError as e:
                    problems.append("%s: %s" % (v, e))
                    continue
                if (vst.st_ino, vst.st_dev) != (st.st_ino, st.st_dev):
                    problems.append("%s is not a hard link of %s" % (v, a))
                if vst.st_nlink != st.st_nlink:
                    problems.append("%s: st_nlink %d but %d through the archive" % (
                        v, vst.st_nlink, st.st_nlink))
        for rel, target in links.items():
            for base in [archive] + [os.path.join(root, "venv%d" % p, "lib", "site-packages")
                                     for p in range(procs)]:
                try:
                    t = os.readlink(os.path.join(base, rel))
                except OSError as e:
                    problems.append("%s: %s" % (os.path.join(base, rel), e))
                    continue
                if t != target:
                    problems.append("%s -> %s, expected %s" % (os.path.join(base, rel), t, target))
        want = "".join("%s,%s\n" % (rel, hashlib.sha256(files[rel][0]).hexdigest())
                       for rel in sorted(files))
        for p in range(procs):
            rec = os.path.join(root, "venv%d" % p, "lib", "site-packages",
                               "%s-1.0.dist-info" % name, "RECORD")
            try:
                got = open(rec).read()
            except OSError as e:
                problems.append("%s: %s" % (rec, e))
                continue
            if got != want:
                problems.append("%s: content differs" % rec)
    for p in range(procs):
        m = os.path.join(root, "venv%d" % p, "pyvenv.cfg")
        try:
            if open(m).read() != "installed %d packages\n" % NPKG:
                problems.append("%s: content differs" % m)
        except OSError as e:
            problems.append("%s: %s" % (m, e))
    if problems:
        sys.exit("verify: %d problem(s):\n  %s" % (len(problems), "\n  ".join(problems[:40])))
    print("verify: %d archives, %d venvs of hard links, all intact" % (NPKG, procs))


def main():
    a = sys.argv[1:]
    if len(a) == 4 and a[0] == "run":
        run(a[1], int(a[2]), a[3])
    elif len(a) == 4 and a[0] == "verify":
        verify(a[1], int(a[2]), a[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
