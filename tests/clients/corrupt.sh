#!/bin/bash
# SPDX-License-Identifier: MIT
# Damaged packs: a flipped byte in a pack must never reach a reader as wrong bytes.
#   1. two files are written (one random, one text that is stored compressed), umount;
#   2. one byte of chunk data is flipped in the middle of the pack, and a pack file's tail is
#      cut off mid-entry in a second store;
#   3. fsck exits non-zero and names the damaged file by its path; reads of the damaged file
#      fail with EIO (never other bytes), the intact file still reads right, and
#      fsck --repair drops nothing (the damage stays reported, the intact file stays).
#
# usage: corrupt.sh PKGCACHEFS_BINARY
set -u -o pipefail
. "$(dirname "$0")/lib.sh"
pcf_init "${1:-}"

STORE=$TMP/store
MNT=$TMP/mnt

pcf_mount "$STORE" "$MNT"
head -c $((3 * 1024 * 1024)) /dev/urandom >"$TMP/random"
seq 1 400000 >"$TMP/text"
cp "$TMP/random" "$MNT/victim"
cp "$TMP/text" "$MNT/intact"
pcf_umount "$MNT"
pcf_wait_daemon_exit "$STORE"
pcf_fsck "$STORE" "before the damage"

# The victim's bytes come first in the only pack: flip one in the middle of them.
pack=$(ls "$STORE"/packs/*.pack | head -1)
[ -n "$pack" ] || fail "no pack file in $STORE/packs"
"$PY" - "$pack" <<'PYEOF' || fail "could not damage the pack"
import sys
path = sys.argv[1]
with open(path, "r+b") as f:
    f.seek(1024 * 1024)
    b = f.read(1)
    f.seek(1024 * 1024)
    f.write(bytes([b[0] ^ 0x40]))
PYEOF

out=$("$BIN" fsck --store "$STORE" 2>&1)
rc=$?
[ $rc != 0 ] || fail "fsck exited 0 on a damaged pack: $out"
echo "$out" | grep -q "file /victim " || fail "fsck did not name the damaged file: $out"
echo "$out" | grep -q "file /intact " && fail "fsck blamed the intact file: $out"
log "fsck found the damage and named /victim"

pcf_mount "$STORE" "$MNT"
"$PY" - "$MNT" "$TMP/random" "$TMP/text" <<'PYEOF' || fail "reads of the damaged store misbehaved"
import errno, sys
mnt, random, text = sys.argv[1:]
want = open(random, "rb").read()
try:
    got = open(mnt + "/victim", "rb").read()
except OSError as e:
    if e.errno != errno.EIO:
        sys.exit("reading the damaged file failed with %s, expected EIO" % e)
    print("read of /victim: EIO, as it should")
else:
    sys.exit("the damaged file read back %s" % ("its old bytes?!" if got == want else
                                                  "WRONG BYTES"))
if open(mnt + "/intact", "rb").read() != open(text, "rb").read():
    sys.exit("the intact file reads back wrong")
PYEOF
pcf_umount "$MNT"
pcf_wait_daemon_exit "$STORE"

"$BIN" fsck --store "$STORE" --repair >"$TMP/repair.out" 2>&1 &&
	fail "fsck --repair claims a damaged store is clean"
grep -q "file /victim " "$TMP/repair.out" || fail "fsck --repair forgot the damaged file"
pcf_mount "$STORE" "$MNT"
cmp -s "$MNT/intact" "$TMP/text" || fail "the intact file changed after fsck --repair"
[ -e "$MNT/victim" ] || fail "fsck --repair dropped the damaged file instead of reporting it"
pcf_umount "$MNT"
pcf_wait_daemon_exit "$STORE"

# A pack cut off mid-entry (a torn write): fsck reports it, reads fail with EIO.
STORE2=$TMP/store2
pcf_mount "$STORE2" "$MNT"
cp "$TMP/random" "$MNT/torn"
pcf_umount "$MNT"
pcf_wait_daemon_exit "$STORE2"
pack=$(ls "$STORE2"/packs/*.pack | head -1)
truncate -s $((2 * 1024 * 1024)) "$pack"
"$BIN" fsck --store "$STORE2" >"$TMP/torn.out" 2>&1 && fail "fsck exited 0 on a truncated pack"
grep -q "file /torn " "$TMP/torn.out" || fail "fsck did not name the file of the truncated pack"
pcf_mount "$STORE2" "$MNT"
"$PY" -c "
import errno, sys
try:
    open(sys.argv[1], 'rb').read()
except OSError as e:
    sys.exit(0 if e.errno == errno.EIO else 'read failed with %s, expected EIO' % e)
sys.exit('a file in a truncated pack read back whole')
" "$MNT/torn" || fail "reading a file of a truncated pack misbehaved"
pcf_umount "$MNT"
pcf_wait_daemon_exit "$STORE2"
echo "PASS: corrupt"
