#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""What a job read below a directory, from an `strace -f -e trace=openat` log.

    opened_bytes.py STRACE_LOG DIR

prints "FILES BYTES": the number of distinct regular files below DIR that the traced processes
opened for reading (O_RDONLY or O_RDWR, without O_CREAT) successfully, and the sum of their
current sizes.  Run it while DIR is still mounted: sizes come from stat.  This counts each file
whole and once, which is what a cold pkgcachefs host has to bring (it prefetches a whole file on
open) and what pip reads of a cache entry (it reads entries whole); opens relative to a directory fd are not resolved and
are reported on stderr (pip opens its cache files by absolute path).
"""

import os
import re
import sys

CALL = re.compile(r'openat\((AT_FDCWD|\d+), "((?:[^"\\]|\\.)*)", ([A-Z_|]+)')
RESULT = re.compile(r"= (-?\d+)")


def main():
    log, top = sys.argv[1], os.path.realpath(sys.argv[2]) + "/"
    pending = {}  # pid -> (dirfd, path, flags) of an unfinished call
    opened = set()
    relative = 0
    with open(log, errors="replace") as f:
        for line in f:
            parts = line.split(None, 1)
            if len(parts) < 2:
                continue
            pid, rest = parts
            if "<... openat resumed>" in rest:
                call = pending.pop(pid, None)
                tail = rest
            else:
                m = CALL.search(rest)
                if not m:
                    continue
                call = m.groups()
                if "<unfinished ...>" in rest:
                    pending[pid] = call
                    continue
                tail = rest[m.end():]
            if call is None:
                continue
            r = RESULT.search(tail)
            if not r or int(r.group(1)) < 0:
                continue
            dirfd, path, flags = call
            if "O_WRONLY" in flags or "O_DIRECTORY" in flags or "O_CREAT" in flags:
                continue
            if dirfd != "AT_FDCWD" or not path.startswith("/"):
                relative += 1
                continue
            if path.startswith(top):
                opened.add(path)
    total = files = 0
    for p in opened:
        try:
            st = os.stat(p)
        except OSError:
            continue  # a temporary file since renamed or removed
        if os.path.isfile(p):
            files += 1
            total += st.st_size
    if relative:
        print("opened_bytes: %d opens relative to a directory fd not counted" % relative,
              file=sys.stderr)
    print(files, total)


if __name__ == "__main__":
    main()
