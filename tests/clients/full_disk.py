#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Fills a mount with incompressible data and checks what a full store does (full-disk.sh).

    full_disk.py fill MNT STATE LIMIT_MIB
        writes 4 MiB files (each fsynced, then closed) until a call fails; the failure must be
        ENOSPC, and must come before LIMIT_MIB were written.  STATE (JSON, outside the mount)
        gets the files that were completely written, fsynced and closed, and the failed one.
    full_disk.py verify MNT STATE
        every good file is there with its content; readdir and stat work.
    full_disk.py delete MNT STATE FRACTION
        unlinks the failed file and FRACTION of the good ones (the oldest).
    full_disk.py write MNT STATE MIB
        writes one more MIB-MiB file, fsyncs it: exit 0, or 2 on ENOSPC, 1 on another error.

File content is random.Random(name), so no two files share a chunk and nothing compresses.
"""

import errno
import json
import os
import random
import sys

MIB = 1 << 20


def content(name, size):
    return random.Random(name).randbytes(size)


def load(state):
    try:
        return json.load(open(state))
    except FileNotFoundError:
        return {"good": {}, "failed": None, "n": 0}


def save(state, st):
    with open(state + ".tmp", "w") as f:
        json.dump(st, f)
    os.replace(state + ".tmp", state)


def write_one(mnt, name, size):
    """Writes one file; returns None or (errno, where, bytes written before the error)."""
    data = content(name, size)
    where, done = "open", 0
    try:
        fd = os.open(os.path.join(mnt, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as e:
        return e.errno, where, done
    err = None
    try:
        where = "write"
        while done < size:
            done += os.write(fd, data[done:done + MIB])
        where = "fsync"
        os.fsync(fd)
    except OSError as e:
        err = (e.errno, where, done)
    try:
        os.close(fd)
    except OSError as e:
        if err is None:
            err = (e.errno, "close", done)
    return err


def fill(mnt, state, limit_mib):
    st = load(state)
    written = 0
    count = 0
    while True:
        st["n"] += 1
        name = "fill-%04d" % st["n"]
        size = 4 * MIB
        err = write_one(mnt, name, size)
        if err is None:
            st["good"][name] = size
            written += size
            count += 1
            save(state, st)
            if written > limit_mib * MIB:
                sys.exit("fill: wrote %d MiB of incompressible data and no call failed: the "
                         "store cannot be holding it all" % (written // MIB))
            continue
        code, where, done = err
        st["failed"] = name
        save(state, st)
        if code != errno.ENOSPC:
            sys.exit("fill: %s of %s failed after %d bytes with %s (%s), expected ENOSPC" % (
                where, name, done, errno.errorcode.get(code, code), os.strerror(code)))
        print("fill: %d MiB in %d files fsynced, then %s of %s failed with ENOSPC after %d "
              "bytes of it" % (written // MIB, count, where, name, done))
        return


def verify(mnt, state):
    st = load(state)
    names = set(os.listdir(mnt))
    bad = []
    for name, size in sorted(st["good"].items()):
        if name not in names:
            bad.append("%s is missing from readdir" % name)
        try:
            sz = os.stat(os.path.join(mnt, name)).st_size
            if sz != size:
                bad.append("%s: stat says %d bytes, %d were written" % (name, sz, size))
            with open(os.path.join(mnt, name), "rb") as f:
                data = f.read()
        except OSError as e:
            bad.append("%s: %s" % (name, e))
            continue
        if data != content(name, size):
            bad.append("%s: content differs from what was written and fsynced" % name)
    if bad:
        sys.exit("verify: %d problem(s):\n  %s" % (len(bad), "\n  ".join(bad[:30])))
    print("verify: %d files, %d MiB, read back intact" % (len(st["good"]),
                                                            sum(st["good"].values()) // MIB))


def delete(mnt, state, fraction):
    st = load(state)
    victims = sorted(st["good"])[:int(len(st["good"]) * fraction)]
    if st["failed"]:
        victims.append(st["failed"])
    freed = 0
    for name in victims:
        try:
            os.unlink(os.path.join(mnt, name))
        except FileNotFoundError:
            if name != st["failed"]:
                sys.exit("delete: %s vanished" % name)
        except OSError as e:
            sys.exit("delete: unlink %s failed with %s (%s): a full store must still let files be "
                     "deleted" % (name, errno.errorcode.get(e.errno, e.errno), e.strerror))
        freed += st["good"].pop(name, 0)
    st["failed"] = None
    save(state, st)
    print("delete: removed %d files (%d MiB)" % (len(victims), freed // MIB))


def write(mnt, state, mib):
    st = load(state)
    st["n"] += 1
    name = "after-%04d" % st["n"]
    err = write_one(mnt, name, mib * MIB)
    if err is None:
        st["good"][name] = mib * MIB
        save(state, st)
        print("write: %s (%d MiB) written and fsynced" % (name, mib))
        return
    code, where, done = err
    try:
        os.unlink(os.path.join(mnt, name))
    except OSError:
        pass
    save(state, st)
    print("write: %s of %s failed with %s after %d bytes" % (
        where, name, errno.errorcode.get(code, code), done))
    sys.exit(2 if code == errno.ENOSPC else 1)


def main():
    a = sys.argv[1:]
    if len(a) == 4 and a[0] == "fill":
        fill(a[1], a[2], int(a[3]))
    elif len(a) == 3 and a[0] == "verify":
        verify(a[1], a[2])
    elif len(a) == 4 and a[0] == "delete":
        delete(a[1], a[2], float(a[3]))
    elif len(a) == 4 and a[0] == "write":
        write(a[1], a[2], int(a[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
