#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""What uv's link modes meet when its cache is on pkgcachefs (tools-layout.sh).

    uv_link.py SRC_DIR VENV_DIR [same|other]

uv installs a wheel by linking every file of its unpacked archive (SRC_DIR, in the cache) into
the venv (VENV_DIR). Its default on Linux is a hard link; when the first link fails it warns
and falls back to copying every file (UV_LINK_MODE=copy asks for copies and silences the
warning). This does the same with os.link, and says what happened:
  same:  VENV_DIR is on the cache's filesystem: every hard link must succeed;
  other: VENV_DIR is on another filesystem (a venv next to a FUSE cache, always): link(2)
         must fail with EXDEV, and so must the FICLONE reflink ioctl (uv's "clone" mode, the
         default on macOS), then the copies must equal the cache's files.
"""

import errno
import fcntl
import filecmp
import os
import shutil
import sys

FICLONE = 0x40049409


def files(src):
    for d, _, names in os.walk(src):
        for n in sorted(names):
            p = os.path.join(d, n)
            if os.path.isfile(p) and not os.path.islink(p):
                yield os.path.relpath(p, src)


def main():
    src, dst, where = sys.argv[1], sys.argv[2], sys.argv[3]
    rels = list(files(src))
    if not rels:
        sys.exit("no files under %s" % src)
    mode = "hardlink"
    for rel in rels:
        s, d = os.path.join(src, rel), os.path.join(dst, rel)
        os.makedirs(os.path.dirname(d), exist_ok=True)
        if mode == "hardlink":
            try:
                os.link(s, d)
                continue
            except OSError as e:
                if where == "same":
                    sys.exit("hard link %s -> %s on one filesystem failed: %s" % (s, d, e))
                if e.errno != errno.EXDEV:
                    sys.exit("hard link across filesystems failed with %s, not EXDEV" %
                             errno.errorcode.get(e.errno, e.errno))
                # uv's clone mode: FICLONE into a new file.
                with open(s, "rb") as fs, open(d, "wb") as fd:
                    try:
                        fcntl.ioctl(fd.fileno(), FICLONE, fs.fileno())
                        sys.exit("FICLONE across filesystems succeeded (unexpected)")
                    except OSError as ce:
                        clone_err = errno.errorcode.get(ce.errno, ce.errno)
                os.unlink(d)
                print("hardlink: %s (EXDEV); clone: %s; falling back to copy, as uv does"
                      % (os.strerror(e.errno), clone_err))
                mode = "copy"
        shutil.copy2(s, d)
    for rel in rels:
        s, d = os.path.join(src, rel), os.path.join(dst, rel)
        if not filecmp.cmp(s, d, shallow=False):
            sys.exit("%s differs from the cache's %s" % (d, s))
        same_inode = os.stat(s).st_ino == os.stat(d).st_ino and os.stat(s).st_dev == os.stat(d).st_dev
        if (mode == "hardlink") != same_inode:
            sys.exit("%s: %s expected" % (d, "a hard link" if mode == "hardlink" else "a copy"))
    print("%d files installed by %s" % (len(rels), mode))


if __name__ == "__main__":
    main()
