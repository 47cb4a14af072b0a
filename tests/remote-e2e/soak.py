#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Random writers for the live-sync soak (soak.sh): one thread per mounted host.

    soak.py SECONDS SEED STATE.json MNT...

Each host works for SECONDS on its own directory MNT/host-N/ (create, overwrite, append,
delete, rename, mkdir, rmdir; every file written is fsynced before the operation counts) and on a
directory all hosts share, MNT/shared/ (create, delete, rename over a small pool of names, so
hosts collide). What each host's own directory must hold at the end (path -> sha256) goes to
STATE.json: nobody else writes there, so every fsynced file must be present with its content on
every host once the pushes and pulls settle. The shared directory has no expected state; it must
only end identical everywhere.
"""
import hashlib
import json
import os
import random
import sys
import threading
import time


def worker(idx, mnt, seconds, seed, out, errors):
    rnd = random.Random(seed * 1000 + idx)
    own = os.path.join(mnt, "host-%d" % idx)
    shared = os.path.join(mnt, "shared")
    os.makedirs(own, exist_ok=True)
    os.makedirs(shared, exist_ok=True)
    files = {}  # path relative to own -> sha256
    dirs = {""}
    ops = 0
    deadline = time.monotonic() + seconds

    def write(path, data, mode="wb"):
        with open(path, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    while time.monotonic() < deadline:
        op = rnd.random()
        try:
            if op < 0.30 or not files:
                d = rnd.choice(sorted(dirs))
                rel = os.path.join(d, "f%05d" % rnd.randrange(100000))
                data = rnd.randbytes(rnd.choice([0, 100, 4000, 70000, 300000]))
                write(os.path.join(own, rel), data)
                files[rel] = hashlib.sha256(data).hexdigest()
            elif op < 0.45:
                rel = rnd.choice(sorted(files))
                data = rnd.randbytes(rnd.randrange(1, 50000))
                write(os.path.join(own, rel), data)
                files[rel] = hashlib.sha256(data).hexdigest()
            elif op < 0.52:
                rel = rnd.choice(sorted(files))
                with open(os.path.join(own, rel), "rb") as f:
                    old = f.read()
                extra = rnd.randbytes(rnd.randrange(1, 9000))
                write(os.path.join(own, rel), extra, "ab")
                files[rel] = hashlib.sha256(old + extra).hexdigest()
            elif op < 0.62:
                rel = rnd.choice(sorted(files))
                os.unlink(os.path.join(own, rel))
                del files[rel]
            elif op < 0.72:
                rel = rnd.choice(sorted(files))
                new = os.path.join(rnd.choice(sorted(dirs)), "r%05d" % rnd.randrange(100000))
                os.rename(os.path.join(own, rel), os.path.join(own, new))
                files[new] = files.pop(rel)
            elif op < 0.77 and len(dirs) < 20:
                d = os.path.join(rnd.choice(sorted(dirs)), "d%03d" % rnd.randrange(1000))
                os.makedirs(os.path.join(own, d), exist_ok=True)
                dirs.add(d)
            elif op < 0.80:
                empty = [d for d in dirs if d and not any(
                    f.startswith(d + "/") for f in files) and not any(
                    e.startswith(d + "/") for e in dirs)]
                if empty:
                    d = rnd.choice(sorted(empty))
                    os.rmdir(os.path.join(own, d))
                    dirs.discard(d)
            else:
                # The shared directory: collisions between hosts, no expected state.
                name = os.path.join(shared, "s%02d" % rnd.randrange(30))
                what = rnd.random()
                try:
                    if what < 0.5:
                        write(name, rnd.randbytes(rnd.randrange(1, 20000)))
                    elif what < 0.8:
                        os.unlink(name)
                    else:
                        os.rename(name, os.path.join(shared, "s%02d" % rnd.randrange(30)))
                except FileNotFoundError:
                    pass  # another host's merge removed it: a collision, as intended
            ops += 1
        except OSError as e:
            errors.append("host %d: %s" % (idx, e))
            return
        time.sleep(rnd.random() * 0.01)
    out[idx] = {"files": {os.path.join("host-%d" % idx, k): v for k, v in files.items()},
                "dirs": sorted(os.path.join("host-%d" % idx, d) for d in dirs if d),
                "ops": ops}


def main():
    seconds, seed, state = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    mnts = sys.argv[4:]
    out, errors = {}, []
    threads = [threading.Thread(target=worker, args=(i, m, seconds, seed, out, errors))
               for i, m in enumerate(mnts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 1
    files = {}
    dirs = []
    for i in sorted(out):
        files.update(out[i]["files"])
        dirs += out[i]["dirs"]
    with open(state, "w") as f:
        json.dump({"files": files, "dirs": sorted(dirs),
                   "ops": [out[i]["ops"] for i in sorted(out)]}, f)
    print("soak: %s operations per host, %d files expected" %
          ("/".join(str(out[i]["ops"]) for i in sorted(out)), len(files)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
