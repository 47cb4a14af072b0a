#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Damage a remote's pack object where one given file's chunks lie (fault tests).

    pack_damage.py truncate PACKDIR FILE_A FILE_B
    pack_damage.py forge PACKDIR FILE_A FILE_B

FILE_A and FILE_B are local copies of two incompressible files that were pushed together.  The
script walks the entries of every pack in PACKDIR (the pack format of docs/format.md: a 64-byte
file header, then entries of a 72-byte header and stored_len bytes of data; raw chunks are the
file's bytes as they are), finds which entries hold each file's bytes, and then:

  truncate: picks the file whose chunks come last in the pack (the victim) and truncates the
            pack in the middle of the victim's middle chunk, so that every chunk of the other
            file stays whole;
  forge:    picks FILE_A as the victim and flips one byte in the middle of the data of one of
            its chunks, leaving every header as it was.

Prints three lines on success: the victim's path, the intact file's path, what was done.
"""

import os
import struct
import sys

HDR, EHDR = 64, 72


def entries(data):
    """(offset, stored_len, flags) of every whole entry, walking from the file header."""
    out = []
    off = HDR
    while off + EHDR <= len(data) and data[off:off + 4] == b"PKCE":
        flags, raw_len, stored_len = struct.unpack_from("<III", data, off + 4)
        if off + EHDR + stored_len > len(data):
            break
        out.append((off, stored_len, flags))
        off += EHDR + stored_len
    return out


def owner(chunk, files):
    for i, content in enumerate(files):
        if content.find(chunk) >= 0:
            return i
    return None


def main():
    if len(sys.argv) != 5 or sys.argv[1] not in ("truncate", "forge"):
        sys.exit(__doc__)
    mode, packdir, fa, fb = sys.argv[1:]
    files = [open(fa, "rb").read(), open(fb, "rb").read()]
    names = [fa, fb]
    for name in sorted(os.listdir(packdir)):
        if not (name.endswith(".pack") or name.endswith(".pack._S3rver_object")):
            continue
        path = os.path.join(packdir, name)
        data = open(path, "rb").read()
        if data[:8] != b"PKCFPACK":
            continue
        where = {0: [], 1: []}
        for off, stored, flags in entries(data):
            if flags != 0 or stored < 4096:
                continue
            i = owner(data[off + EHDR:off + EHDR + stored], files)
            if i is not None:
                where[i].append((off, stored))
        if not where[0] or not where[1]:
            continue
        if mode == "truncate":
            v = 0 if where[0][0][0] > where[1][0][0] else 1
            other = 1 - v
            if where[other][-1][0] > where[v][0][0]:
                sys.exit("pack_damage: the two files' chunks are interleaved in %s" % name)
            off, stored = where[v][len(where[v]) // 2]
            cut = off + EHDR + stored // 2
            os.truncate(path, cut)
            what = "truncated from %d to %d bytes (victim's chunks %d of %d cut or gone)" % (
                len(data), cut, len(where[v]) - len(where[v]) // 2, len(where[v]))
        else:
            v, other = 0, 1
            off, stored = where[v][len(where[v]) // 2]
            pos = off + EHDR + stored // 2
            with open(path, "r+b") as f:
                f.seek(pos)
                b = f.read(1)
                f.seek(pos)
                f.write(bytes([b[0] ^ 0x5A]))
            what = "flipped the byte at %d (data of the entry at %d, stored_len %d)" % (
                pos, off, stored)
        print(names[v])
        print(names[other])
        print("%s: %s" % (name, what))
        return
    sys.exit("pack_damage: no pack in %s holds chunks of both files" % packdir)


if __name__ == "__main__":
    main()
