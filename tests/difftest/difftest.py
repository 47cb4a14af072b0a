#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Differential tester: pkgcachefs against a plain local directory.

A seeded random sequence of filesystem operations is applied, one at a time, to a pkgcachefs
mount and to a directory on the local disk (ext4 on our machines; the run prints what it is).
After every operation the two must agree on the return value or errno of the operation, then
on the type, mode, owner, size, link count, symlink target, xattrs, directory listing and
content of every path it touched (content is not read while a slot holds the file open for
writing, so streams and staging are exercised as a client would; it is compared when that
descriptor is closed and by the full checks), and on the mtime wherever it was set explicitly
(see `mtime_agree`).  A "check" operation, generated every --check-every steps and at the end,
compares the whole trees, hard-link groups and what each open descriptor refers to.

The operations are plain data (lists), so a sequence is reproducible from --seed alone, can be
saved (--save) and replayed (--replay), and is shrunk by delta debugging on divergence: subsets
are replayed on a fresh directory and a fresh store until no single operation can be removed.
The minimal sequence is printed as a standalone Python program that replays it on one or more
directories side by side.

Known intended differences, the only ones: atime, ctime, st_blocks, st_dev/st_ino numbers (only
the hard-link and open-descriptor relations between them are compared), directory st_size and
directory seek offsets (lseek is not generated on a directory).
Not generated because pkgcachefs does not support them: fallocate, O_TMPFILE, ACLs, SEEK_DATA
and SEEK_HOLE (ext4 reports the holes), fifos and devices; xattr values stay small enough for ext4 (all of an inode's xattrs share
one 4 KiB block; beyond it ext4 says ENOSPC).  With --remote, on the fresh store a
remount brings up, what does not travel through a remote is taken out of the local copy too
(format.md, "Only regular files, directories and symlinks travel"): hard links are broken into
separate files, xattrs are removed, setuid and setgid bits are cleared, and directory mtimes (not part of a directory's signature,
so not pushed when only they change) are taken from the mount.

    difftest.py PKGCACHEFS [--seed S] [--ops N] [--max-files F] [--remount-every K] [--remote]

Exit status: 0 no divergence, 1 divergence (seed, op and minimal reproducer printed), 2 usage,
77 skip (/dev/fuse or fusermount3 unusable).  The last line is a machine-readable summary:
    DIFFTEST seed=S ops=N remounts=R checks=C result=ok|divergence|hang
"""

import argparse
import ctypes
import errno
import hashlib
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time

SLOTS = 4
FULL_READ_LIMIT = 96 << 20   # files larger than this are compared on the ref's data + samples
READFILE_LIMIT = 32 << 20    # the readfile op reads at most this much
XNAMES = ["user.a", "user.b", "user.pkgcache"]

# ---------------------------------------------------------------------------- data and helpers


def data(s, n):
	"""The bytes a write with data seed s and length n writes: deterministic, and the same
	prefix for the same seed, so chunks are shared between files (dedup, reference counts)."""
	k, r = divmod(s, 1000)
	if k == 1:
		return bytes(n)
	if k == 2:
		return ((b"%d pkgcachefs wheel " % r) * (n // 16 + 2))[:n]
	return random.Random(r).randbytes(n)


def ename(e):
	return errno.errorcode.get(e, str(e))


def digest(b):
	return hashlib.sha256(b).hexdigest()[:24]


OFLAGS = {
	"RDONLY": os.O_RDONLY, "WRONLY": os.O_WRONLY, "RDWR": os.O_RDWR, "CREAT": os.O_CREAT,
	"EXCL": os.O_EXCL, "TRUNC": os.O_TRUNC, "APPEND": os.O_APPEND, "NOFOLLOW": os.O_NOFOLLOW,
	"DIRECTORY": os.O_DIRECTORY,
}
RENAME_FLAGS = {0: "0", 1: "NOREPLACE", 2: "EXCHANGE"}

_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100


def renameat2(src, dst, flags):
	if flags == 0:
		os.rename(src, dst)
		return
	r = _libc.renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), flags)
	if r != 0:
		e = ctypes.get_errno()
		raise OSError(e, os.strerror(e))


def oflags(spec):
	v = 0
	for f in spec.split("|"):
		v |= OFLAGS[f]
	return v


# ---------------------------------------------------------------------------- one side


class Side:
	"""A tree the operations run on, and the descriptors open in it (slot -> fd, path, flags)."""

	def __init__(self, name, root):
		self.name = name
		self.root = root
		self.fds = {}

	def P(self, p):
		return os.path.join(self.root, p) if p else self.root

	def close_slot(self, slot):
		ent = self.fds.pop(slot, None)
		if ent is None:
			return None
		try:
			os.close(ent[0])
		except OSError as e:
			return ["err", ename(e.errno)]
		return ["ok"]

	def close_all(self):
		res = []
		for slot in sorted(self.fds):
			res.append(self.close_slot(slot))
		return res

	def readable(self, slot):
		fl = self.fds[slot][2].split("|")
		return "WRONLY" not in fl

	def writable(self, slot):
		fl = self.fds[slot][2].split("|")
		return "RDWR" in fl or "WRONLY" in fl


def apply(s, op):
	"""Runs op on side s; returns a JSON-able result: ["ok", ...], ["err", ERRNO], ["noslot"]."""
	name = op[0]
	try:
		if name == "open":
			_, slot, p, fl, mode = op
			s.close_slot(slot)
			fd = os.open(s.P(p), oflags(fl), mode)
			s.fds[slot] = (fd, p, fl)
			return ["ok"]
		if name in ("close", "pwrite", "write", "pread", "read", "lseek", "ftruncate", "fsync",
			    "fdatasync", "fstat"):
			slot = op[1]
			if slot not in s.fds:
				return ["noslot"]
			fd = s.fds[slot][0]
			if name == "close":
				return s.close_slot(slot)
			if name == "pwrite":
				return ["ok", os.pwrite(fd, data(op[4], op[3]), op[2])]
			if name == "write":
				return ["ok", os.write(fd, data(op[3], op[2]))]
			if name == "pread":
				b = os.pread(fd, op[3], op[2])
				return ["ok", len(b), digest(b)]
			if name == "read":
				b = os.read(fd, op[2])
				return ["ok", len(b), digest(b)]
			if name == "lseek":
				return ["ok", os.lseek(fd, op[2], op[3])]
			if name == "ftruncate":
				os.ftruncate(fd, op[2])
				return ["ok"]
			if name == "fsync":
				os.fsync(fd)
				return ["ok"]
			if name == "fdatasync":
				os.fdatasync(fd)
				return ["ok"]
			if name == "fstat":
				os.fstat(fd)
				return ["ok"]
		if name == "truncate":
			os.truncate(s.P(op[1]), op[2])
			return ["ok"]
		if name in ("writefile", "append"):
			if name == "writefile":
				_, p, off, n, ds = op
				fd = os.open(s.P(p), os.O_WRONLY | os.O_CREAT, 0o644)
			else:
				_, p, n, ds = op
				off = None
				fd = os.open(s.P(p), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
			try:
				if off is None:
					w = os.write(fd, data(ds, n))
				else:
					w = os.pwrite(fd, data(ds, n), off)
			except OSError as e:
				os.close(fd)
				return ["err", "write:" + ename(e.errno)]
			try:
				os.close(fd)
			except OSError as e:
				return ["err", "close:" + ename(e.errno)]
			return ["ok", w]
		if name == "readfile":
			fd = os.open(s.P(op[1]), os.O_RDONLY)
			try:
				h = hashlib.sha256()
				n = 0
				while n < READFILE_LIMIT:
					b = os.read(fd, 1 << 20)
					if not b:
						break
					h.update(b)
					n += len(b)
			finally:
				os.close(fd)
			return ["ok", n, h.hexdigest()[:24]]
		if name == "rename":
			renameat2(s.P(op[1]), s.P(op[2]), op[3])
			return ["ok"]
		if name == "link":
			os.link(s.P(op[1]), s.P(op[2]), follow_symlinks=False)
			return ["ok"]
		if name == "unlink":
			os.unlink(s.P(op[1]))
			return ["ok"]
		if name == "mkdir":
			os.mkdir(s.P(op[1]), op[2])
			return ["ok"]
		if name == "rmdir":
			os.rmdir(s.P(op[1]))
			return ["ok"]
		if name == "symlink":
			os.symlink(op[1], s.P(op[2]))
			return ["ok"]
		if name == "readlink":
			return ["ok", os.readlink(s.P(op[1]))]
		if name == "chmod":
			os.chmod(s.P(op[1]), op[2])
			return ["ok"]
		if name == "utime":
			_, p, at, mt, follow = op
			if at is None:
				os.utime(s.P(p), None, follow_symlinks=follow)
			else:
				os.utime(s.P(p), ns=(at, mt), follow_symlinks=follow)
			return ["ok"]
		if name == "setxattr":
			_, p, xn, n, ds = op
			os.setxattr(s.P(p), xn, data(ds, n), follow_symlinks=False)
			return ["ok"]
		if name == "getxattr":
			v = os.getxattr(s.P(op[1]), op[2], follow_symlinks=False)
			return ["ok", len(v), digest(v)]
		if name == "removexattr":
			os.removexattr(s.P(op[1]), op[2], follow_symlinks=False)
			return ["ok"]
		if name == "listdir":
			return ["ok", sorted(os.listdir(s.P(op[1])))]
		if name == "stat":
			st = os.stat(s.P(op[1]))
			r = ["ok", stat.S_IFMT(st.st_mode), st.st_mode, st.st_nlink]
			if not stat.S_ISDIR(st.st_mode):
				r.append(st.st_size)
			return r
		if name == "fsyncdir":
			fd = os.open(s.P(op[1]), os.O_RDONLY | os.O_DIRECTORY)
			try:
				os.fsync(fd)
			finally:
				os.close(fd)
			return ["ok"]
	except OSError as e:
		return ["err", ename(e.errno)]
	raise ValueError("unknown op %r" % (op,))


# ---------------------------------------------------------------------------- records


def xattr_rec(full):
	try:
		names = sorted(os.listxattr(full, follow_symlinks=False))
	except OSError as e:
		return "err:" + ename(e.errno)
	out = {}
	for n in names:
		try:
			out[n] = digest(os.getxattr(full, n, follow_symlinks=False))
		except OSError as e:
			out[n] = "err:" + ename(e.errno)
	return out


def content_digest(full, size, plan=None):
	"""SHA-256 of a file's content; for files above FULL_READ_LIMIT only of the ranges in plan
	(the reference's data segments and a few samples of each hole), so a sparse 4 GiB file
	costs little."""
	try:
		fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW)
	except OSError as e:
		return "err:" + ename(e.errno)
	try:
		h = hashlib.sha256()
		if plan is None:
			while True:
				b = os.read(fd, 1 << 20)
				if not b:
					break
				h.update(b)
		else:
			for off, n in plan:
				h.update(b"%d:" % off)
				while n > 0:
					b = os.pread(fd, min(n, 1 << 20), off)
					if not b:
						break
					h.update(b)
					off += len(b)
					n -= len(b)
		return h.hexdigest()[:24]
	except OSError as e:
		return "err:" + ename(e.errno)
	finally:
		os.close(fd)


def sparse_plan(full, size):
	"""Ranges to compare of a large file: the reference's data segments (1 MiB at the start,
	middle and end of one longer than 16 MiB), and 4 KiB at the start, middle and end of every
	hole."""
	plan = []

	def sample(a, b, n):
		for x in (a, (a + b) // 2, b - n):
			if a <= x < b:
				plan.append((x, min(n, b - x)))

	fd = os.open(full, os.O_RDONLY)
	try:
		pos = 0
		while pos < size:
			try:
				d = os.lseek(fd, pos, os.SEEK_DATA)
			except OSError:
				d = size
			sample(pos, d, 4096)
			if d >= size:
				break
			hl = os.lseek(fd, d, os.SEEK_HOLE)
			if hl - d > 16 << 20:
				sample(d, hl, 1 << 20)
			else:
				plan.append((d, hl - d))
			pos = hl
	finally:
		os.close(fd)
	return sorted(set(plan))


def sparse_copy(src, dst):
	"""Copies a file keeping its holes (a 4 GiB sparse file stays small)."""
	fi = os.open(src, os.O_RDONLY)
	fo = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
	try:
		size = os.fstat(fi).st_size
		pos = 0
		while pos < size:
			try:
				d = os.lseek(fi, pos, os.SEEK_DATA)
			except OSError:
				break
			hl = os.lseek(fi, d, os.SEEK_HOLE)
			while d < hl:
				b = os.pread(fi, min(hl - d, 1 << 20), d)
				if not b:
					break
				os.pwrite(fo, b, d)
				d += len(b)
			pos = hl
		os.ftruncate(fo, size)
	finally:
		os.close(fi)
		os.close(fo)


def record(s, p, content=True, plan=None):
	"""What is compared of one path (lstat, not following a final symlink)."""
	full = s.P(p)
	try:
		st = os.lstat(full)
	except OSError as e:
		return {"lstat": "err:" + ename(e.errno)}
	r = {"fmt": oct(stat.S_IFMT(st.st_mode)), "mode": oct(st.st_mode), "nlink": st.st_nlink,
	     "uid": st.st_uid, "gid": st.st_gid, "mtime": st.st_mtime_ns}
	if not stat.S_ISDIR(st.st_mode):
		r["size"] = st.st_size
	if stat.S_ISLNK(st.st_mode):
		try:
			r["target"] = os.readlink(full)
		except OSError as e:
			r["target"] = "err:" + ename(e.errno)
	if stat.S_ISREG(st.st_mode) and content:
		r["data"] = content_digest(full, st.st_size, plan)
	if stat.S_ISDIR(st.st_mode):
		try:
			r["list"] = sorted(os.listdir(full))
		except OSError as e:
			r["list"] = "err:" + ename(e.errno)
	r["xattr"] = xattr_rec(full)
	r["_ino"] = st.st_ino
	return r


def fd_record(s, slot, content):
	fd = s.fds[slot][0]
	try:
		st = os.fstat(fd)
	except OSError as e:
		return {"fstat": "err:" + ename(e.errno)}
	r = {"fmt": oct(stat.S_IFMT(st.st_mode)), "mode": oct(st.st_mode), "nlink": st.st_nlink,
	     "uid": st.st_uid, "mtime": st.st_mtime_ns}
	if not stat.S_ISDIR(st.st_mode):
		r["size"] = st.st_size
	if content and stat.S_ISREG(st.st_mode) and st.st_size <= FULL_READ_LIMIT:
		try:
			h = hashlib.sha256()
			off = 0
			while True:
				b = os.pread(fd, 1 << 20, off)
				if not b:
					break
				h.update(b)
				off += len(b)
			r["data"] = h.hexdigest()[:24]
		except OSError as e:
			r["data"] = "err:" + ename(e.errno)
	return r


def walk(root):
	"""Every path below root (relative), with its lstat; symlinks not followed."""
	out = {}
	stack = [""]
	while stack:
		d = stack.pop()
		try:
			names = os.listdir(os.path.join(root, d) if d else root)
		except OSError:
			continue
		for n in names:
			p = os.path.join(d, n) if d else n
			try:
				st = os.lstat(os.path.join(root, p))
			except OSError:
				continue
			out[p] = st
			if stat.S_ISDIR(st.st_mode):
				stack.append(p)
	return out


class Divergence(Exception):
	def __init__(self, kind, msg):
		super().__init__(msg)
		self.kind = kind
		self.msg = msg


def compare_recs(where, a, b, explicit, kind_prefix=""):
	"""Raises Divergence when records a (reference) and b (pkgcachefs) differ."""
	keys = sorted((set(a) | set(b)) - {"_ino"})
	for k in keys:
		va, vb = a.get(k), b.get(k)
		if k == "mtime" and va is not None and vb is not None:
			if not mtime_agree(va, vb, explicit):
				raise Divergence(kind_prefix + "mtime", "%s: mtime ref %s pcf %s (explicitly set "
						 "values: ref %s, pcf %s)" % (where, va, vb, va in explicit,
									     vb in explicit))
			continue
		if va != vb:
			raise Divergence(kind_prefix + k, "%s: %s ref %r pcf %r" % (where, k, va, vb))


def mtime_agree(ref, pcf, explicit):
	"""An mtime the test set explicitly (utimens with a value) must be kept exactly, to the
	nanosecond; one that ext4 moved away from every explicit value (a write, a truncate, a
	directory change, utime(NULL)) must have moved on pkgcachefs too.  Nothing more: two
	clocks read at different moments are not compared."""
	if ref in explicit:
		return pcf == ref
	return pcf not in explicit


# ---------------------------------------------------------------------------- the mount


def is_mounted(mnt):
	with open("/proc/self/mountinfo") as f:
		for line in f:
			if line.split()[4] == mnt:
				return True
	return False


class Mount:
	"""One pkgcachefs daemon in the foreground (its log in a file), on a store of our own."""

	def __init__(self, binary, base, remote_url=None):
		self.bin = binary
		self.base = base
		self.remote = remote_url
		self.mnt = os.path.join(base, "mnt")
		os.makedirs(self.mnt, exist_ok=True)
		self.proc = None
		self.store = None
		self.generation = 0
		self.log = None

	def start(self, fresh_store):
		if fresh_store or self.store is None:
			self.generation += 1
			self.store = os.path.join(self.base, "store%d" % self.generation)
		self.log = os.path.join(self.base, "daemon%d.log" % self.generation)
		cmd = [self.bin, "mount", "-f", "--store", self.store]
		opts = list(MOUNT_OPTS)
		if self.remote:
			cmd += ["--remote", self.remote]
			opts.append("push_interval=0")
		if opts:
			cmd += ["-o", ",".join(opts)]
		cmd.append(self.mnt)
		with open(self.log, "ab") as lf:
			self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=lf, stderr=lf,
						     start_new_session=True)
		deadline = time.time() + 60
		while not is_mounted(self.mnt):
			if self.proc.poll() is not None:
				raise Divergence("mount", "pkgcachefs mount exited %d: %s" %
						 (self.proc.returncode, self.tail()))
			if time.time() > deadline:
				raise Divergence("mount", "mount not ready after 60 s")
			time.sleep(0.01)

	def tail(self, n=20):
		try:
			with open(self.log, errors="replace") as f:
				return "".join(f.readlines()[-n:])
		except OSError:
			return ""

	def stop(self):
		"""Clean unmount: umount must exit 0 and the daemon must exit 0 by itself."""
		r = subprocess.run([self.bin, "umount", self.mnt], capture_output=True, text=True,
				   timeout=300)
		if r.returncode != 0:
			raise Divergence("umount", "pkgcachefs umount exited %d: %s%s" %
					 (r.returncode, r.stderr, self.tail()))
		try:
			rc = self.proc.wait(timeout=60)
		except subprocess.TimeoutExpired:
			raise Divergence("umount", "daemon still running 60 s after umount")
		self.proc = None
		if rc != 0:
			raise Divergence("umount", "daemon exited %d after umount: %s" % (rc, self.tail()))
		if "push" in r.stderr.lower() or "warn" in r.stderr.lower():
			raise Divergence("umount", "umount warned: %s" % r.stderr.strip())

	def fsck(self):
		r = subprocess.run([self.bin, "fsck", "--store", self.store], capture_output=True,
				   text=True, timeout=600)
		if r.returncode != 0:
			raise Divergence("fsck", "fsck of %s exited %d: %s" %
					 (self.store, r.returncode, (r.stdout + r.stderr)[-3000:]))

	def kill(self):
		if self.proc is not None and self.proc.poll() is None:
			try:
				os.kill(self.proc.pid, signal.SIGKILL)
			except OSError:
				pass
			try:
				self.proc.wait(timeout=30)
			except subprocess.TimeoutExpired:
				pass
		self.proc = None
		if is_mounted(self.mnt):
			subprocess.run(["fusermount3", "-u", "-z", self.mnt], capture_output=True)

	def teardown(self):
		if self.proc is not None and is_mounted(self.mnt):
			try:
				subprocess.run([self.bin, "umount", self.mnt], capture_output=True, timeout=60)
				self.proc.wait(timeout=30)
				self.proc = None
			except (subprocess.TimeoutExpired, OSError):
				pass
		self.kill()


# ---------------------------------------------------------------------------- the generator


class Gen:
	"""Draws the next operation from the seed's generator and the reference tree's state."""

	def __init__(self, rng, a):
		self.rng = rng
		self.a = a
		self.step = 0
		fn = max(2, a.max_files)
		self.fnames = ["f%d" % i for i in range(fn)]
		self.dnames = ["d0", "d1", "d2"]
		self.lnames = ["l0", "l1"]
		self.ops = [
			("open", 12), ("close", 6), ("pwrite", 14), ("write", 8), ("pread", 7),
			("read", 3), ("lseek", 2), ("ftruncate", 4), ("fsync", 3), ("fdatasync", 1),
			("fstat", 2), ("truncate", 5), ("writefile", 10), ("append", 5), ("readfile", 3),
			("rename", 9), ("link", 4), ("unlink", 7), ("mkdir", 4), ("rmdir", 3),
			("symlink", 3), ("readlink", 1), ("chmod", 3), ("utime", 5), ("setxattr", 2),
			("getxattr", 1), ("removexattr", 1), ("listdir", 2), ("stat", 1), ("fsyncdir", 1),
			("dropcaches", 0.3),
		]
		self.total = sum(w for _, w in self.ops)

	def explicit_time(self):
		r = self.rng.random()
		if r < 0.05:
			sec = self.rng.randrange(-2000000000, 0)        # before 1970
			if "negative-ns-times" in self.a.avoid:
				return sec * 1000000000
		elif r < 0.1:
			sec = self.rng.randrange(2200000000, 4200000000)  # past 2038
		else:
			sec = self.rng.randrange(978307200, 1262304000)   # 2001-2009
		return sec * 1000000000 + self.rng.randrange(1000000000)

	def length(self):
		r = self.rng.random()
		if r < 0.04:
			return 0
		if r < 0.65:
			return self.rng.randrange(1, 4097)
		if r < 0.9:
			return self.rng.randrange(4097, 300000)
		return self.rng.randrange(300000, 3 << 20)

	def dseed(self):
		r = self.rng.random()
		base = 1000 if r < 0.1 else 2000 if r < 0.25 else 0
		return base + self.rng.randrange(12)

	def offset(self, size):
		r = self.rng.random()
		if r < 0.35:
			return self.rng.randrange(0, size + 1)
		if r < 0.55:
			return size
		if r < 0.9:
			return size + self.rng.randrange(1, 300000)
		if r < 0.985:
			return size + self.rng.randrange(300000, 24 << 20)
		return (1 << 32) + self.rng.randrange(-70000, 70000)  # 32-bit boundary, sparse

	def newsize(self, size):
		r = self.rng.random()
		if r < 0.15:
			return 0
		if r < 0.55:
			return self.rng.randrange(0, size + 1)
		if r < 0.9:
			return size + self.rng.randrange(1, 400000)
		if r < 0.99:
			return size + self.rng.randrange(400000, 20 << 20)
		return (1 << 32) + self.rng.randrange(-5000, 5000)

	def pick(self, lst):
		return lst[self.rng.randrange(len(lst))] if lst else None

	def newpath(self, tree, kind):
		dirs = [""] + [p for p, st in tree.items() if stat.S_ISDIR(st.st_mode)]
		names = {"f": self.fnames, "d": self.dnames, "l": self.lnames}[kind]
		if self.rng.random() < 0.1:
			parent = self.pick(self.dnames + [p for p in tree])
		else:
			parent = self.pick(dirs)
		n = self.pick(names)
		return os.path.join(parent, n) if parent else n

	def existing(self, tree, pred=None):
		c = sorted(p for p, st in tree.items() if pred is None or pred(st))
		return self.pick(c)

	def anypath(self, tree, kind="f", pnew=0.3):
		if not tree or self.rng.random() < pnew:
			return self.newpath(tree, kind)
		return self.existing(tree)

	def filepath(self, tree, ref, pnew=0.2):
		nfiles = sum(1 for st in tree.values() if stat.S_ISREG(st.st_mode))
		if nfiles >= self.a.max_files:
			pnew = 0.02
		r = self.rng.random()
		if r < pnew or nfiles == 0:
			return self.newpath(tree, "f")
		if r < pnew + 0.05:
			return self.anypath(tree)
		if ref.fds and r < pnew + 0.2:
			return self.pick(sorted(v[1] for v in ref.fds.values()))
		return self.existing(tree, lambda st: stat.S_ISREG(st.st_mode))

	def slot_size(self, ref, slot):
		try:
			return os.fstat(ref.fds[slot][0]).st_size
		except OSError:
			return 0

	def next(self, ref):
		tree = walk(ref.root)
		open_slots = sorted(ref.fds)
		while True:
			op = self._draw(tree, ref, open_slots)
			if op is not None:
				return op

	def _draw(self, tree, ref, open_slots):
		rng = self.rng
		x = rng.random() * self.total
		for name, w in self.ops:
			x -= w
			if x < 0:
				break
		fdops = ("close", "pwrite", "write", "pread", "read", "lseek", "ftruncate", "fsync",
			 "fdatasync", "fstat")
		if name in fdops:
			if not open_slots:
				return None
			slot = self.pick(open_slots)
			size = self.slot_size(ref, slot)
			if name == "close":
				return ["close", slot]
			if name == "pwrite":
				return ["pwrite", slot, self.offset(size), self.length(), self.dseed()]
			if name == "write":
				return ["write", slot, self.length(), self.dseed()]
			if name == "pread":
				off = rng.randrange(0, size + 2)
				n = rng.choice([1, 100, 4096, 65536, 1 << 20, rng.randrange(1, 300000)])
				return ["pread", slot, off, n]
			if name == "read":
				return ["read", slot, rng.choice([1, 4096, 131072, 1 << 20])]
			if name == "lseek":
				# A directory's offsets are the filesystem's own business.
				if stat.S_ISDIR(os.fstat(ref.fds[slot][0]).st_mode):
					return None
				wh = rng.choice([os.SEEK_SET, os.SEEK_CUR, os.SEEK_END])
				return ["lseek", slot, rng.randrange(-100, size + 100) if wh != os.SEEK_SET
					else self.offset(size), wh]
			if name == "ftruncate":
				return ["ftruncate", slot, self.newsize(size)]
			return [name, slot]
		if name == "open":
			slot = rng.randrange(SLOTS)
			p = self.filepath(tree, ref)
			acc = rng.choice(["RDONLY", "WRONLY", "RDWR", "RDWR"])
			fl = [acc]
			if rng.random() < 0.5 or p not in tree:
				fl.append("CREAT")
				if rng.random() < 0.1:
					fl.append("EXCL")
			if rng.random() < 0.12 and not (acc == "RDONLY" and "rdonly-trunc" in self.a.avoid):
				fl.append("TRUNC")
			if rng.random() < 0.2:
				fl.append("APPEND")
			if rng.random() < 0.03:
				fl.append("NOFOLLOW")
			return ["open", slot, p, "|".join(fl), rng.choice([0o644, 0o644, 0o600, 0o755,
									      0o444])]
		if name == "truncate":
			p = self.filepath(tree, ref, 0.05)
			st = tree.get(p)
			return ["truncate", p, self.newsize(st.st_size if st else 0)]
		if name == "writefile":
			p = self.filepath(tree, ref)
			st = tree.get(p)
			size = st.st_size if st and stat.S_ISREG(st.st_mode) else 0
			return ["writefile", p, self.offset(size), self.length(), self.dseed()]
		if name == "append":
			return ["append", self.filepath(tree, ref), self.length(), self.dseed()]
		if name == "readfile":
			return ["readfile", self.filepath(tree, ref, 0.05)]
		if name == "rename":
			if not tree:
				return None
			src = self.existing(tree) if rng.random() < 0.9 else self.anypath(tree)
			r = rng.random()
			if r < 0.3:
				dst = self.existing(tree)
			elif r < 0.45 and ref.fds:
				dst = self.pick(sorted(v[1] for v in ref.fds.values()))
			else:
				st = tree.get(src)
				kind = "d" if st and stat.S_ISDIR(st.st_mode) else "f"
				dst = self.newpath(tree, kind)
			fl = rng.choice([0] * 8 + [1, 2])
			return ["rename", src, dst, fl]
		if name == "link":
			src = self.existing(tree, lambda st: stat.S_ISREG(st.st_mode)) \
				if rng.random() < 0.9 else self.anypath(tree)
			if src is None:
				return None
			dst = self.newpath(tree, "f") if rng.random() < 0.85 else self.anypath(tree)
			return ["link", src, dst]
		if name == "unlink":
			r = rng.random()
			if r < 0.3 and ref.fds:
				p = self.pick(sorted(v[1] for v in ref.fds.values()))
			elif r < 0.9:
				p = self.existing(tree, lambda st: not stat.S_ISDIR(st.st_mode))
			else:
				p = self.anypath(tree)
			return ["unlink", p] if p else None
		if name == "mkdir":
			return ["mkdir", self.newpath(tree, "d") if rng.random() < 0.9 else
				self.anypath(tree), rng.choice([0o755, 0o755, 0o700, 0o2775])]
		if name == "rmdir":
			p = self.existing(tree, lambda st: stat.S_ISDIR(st.st_mode)) \
				if rng.random() < 0.9 else self.anypath(tree)
			return ["rmdir", p] if p else None
		if name == "symlink":
			r = rng.random()
			if r < 0.5 and tree:
				tgt = self.existing(tree)        # downward only: no "..", no "/" first
			elif r < 0.8:
				tgt = self.pick(self.fnames + self.dnames + self.lnames)
			else:
				tgt = rng.choice(["nowhere", "d0/f0", ".", "l0", "x" * rng.randrange(1, 300)])
			return ["symlink", tgt, self.newpath(tree, "l")]
		if name == "readlink":
			p = self.existing(tree, lambda st: stat.S_ISLNK(st.st_mode)) or self.anypath(tree)
			return ["readlink", p]
		if name == "chmod":
			p = self.anypath(tree, pnew=0.05)
			return ["chmod", p, rng.choice([0o644, 0o600, 0o755, 0o000, 0o444, 0o700, 0o4755,
							0o2755, 0o1777, 0o640])]
		if name == "utime":
			p = self.anypath(tree, pnew=0.05)
			follow = rng.random() < 0.8
			if rng.random() < 0.1:
				return ["utime", p, None, None, follow]
			return ["utime", p, self.explicit_time(), self.explicit_time(), follow]
		if name == "setxattr":
			# ext4 keeps all of an inode's xattrs in one 4 KiB block: three of 1000 fit.
			n = rng.choice([0, 1, 10, 200, 1000])
			return ["setxattr", self.anypath(tree, pnew=0.05), rng.choice(XNAMES), n,
				self.dseed()]
		if name == "getxattr":
			return ["getxattr", self.anypath(tree, pnew=0.05), rng.choice(XNAMES)]
		if name == "removexattr":
			return ["removexattr", self.anypath(tree, pnew=0.05), rng.choice(XNAMES)]
		if name == "listdir":
			p = self.existing(tree, lambda st: stat.S_ISDIR(st.st_mode)) or ""
			return ["listdir", p if rng.random() < 0.9 else self.anypath(tree)]
		if name == "stat":
			return ["stat", self.anypath(tree)]
		if name == "fsyncdir":
			p = self.existing(tree, lambda st: stat.S_ISDIR(st.st_mode)) or ""
			return ["fsyncdir", p]
		if name == "dropcaches":
			return ["dropcaches"]
		return None


def generate(seed, a):
	"""The operation sequence of a seed needs the reference tree's state, so it is produced
	while running; this returns the generator."""
	return Gen(random.Random(seed), a)


# ---------------------------------------------------------------------------- the runner


def op_paths(op):
	n = op[0]
	if n in ("truncate", "writefile", "append", "readfile", "unlink", "mkdir", "rmdir",
		 "readlink", "chmod", "utime", "setxattr", "getxattr", "removexattr", "listdir",
		 "stat", "fsyncdir"):
		return [op[1]]
	if n in ("rename", "link"):
		return [op[1], op[2]]
	if n == "symlink":
		return [op[2]]
	if n == "open":
		return [op[2]]
	return []


def explicit_times(ops):
	ex = set()
	for op in ops:
		if op[0] == "utime" and op[2] is not None:
			ex.add(op[2])
			ex.add(op[3])
	return ex


class Runner:
	"""Runs a sequence of operations on a fresh reference directory and a fresh mount."""

	def __init__(self, a, tag):
		self.a = a
		self.work = tempfile.mkdtemp(prefix="difftest-%s." % tag, dir=a.tmpdir)
		refroot = os.path.join(self.work, "ref")
		os.mkdir(refroot)
		os.chmod(refroot, 0o755)
		self.ref = Side("ref", refroot)
		self.remote_url = None
		if a.remote:
			rdir = os.path.join(self.work, "remote")
			os.mkdir(rdir)
			self.remote_url = "file://" + rdir
		self.mount = Mount(a.binary, self.work, self.remote_url)
		LIVE.append(self)
		self.mount.start(fresh_store=True)
		self.pcf = Side("pcf", self.mount.mnt)
		self.explicit = set()
		self.remounts = 0
		self.checks = 0
		self.nops = 0
		self.counts = {}    # op name -> [succeeded, failed] (both sides agreeing)

	def close(self):
		for s in (self.ref, self.pcf):
			for slot in list(s.fds):
				try:
					os.close(s.fds.pop(slot)[0])
				except OSError:
					pass
		self.mount.teardown()
		if self in LIVE:
			LIVE.remove(self)
		if is_mounted(self.mount.mnt):
			print("WARNING: %s still mounted; leaving %s" % (self.mount.mnt, self.work))
		elif self.a.keep:
			print("kept %s" % self.work)
		else:
			shutil.rmtree(self.work, ignore_errors=True)

	# -- checks

	def writing_inodes(self):
		"""Inodes (reference side) held open for writing: their content is left alone until
		they are closed, so the mount sees a client's access pattern."""
		out = set()
		for slot, (fd, _, fl) in self.ref.fds.items():
			if "WRONLY" in fl or "RDWR" in fl:
				try:
					out.add(os.fstat(fd).st_ino)
				except OSError:
					pass
		return out

	def check_paths(self, paths, where):
		busy = self.writing_inodes()
		seen = set()
		for p in paths:
			if p is None:
				continue
			cands = [p]
			d = os.path.dirname(p)
			cands.append(d)
			for q in cands:
				if q in seen:
					continue
				seen.add(q)
				plan = None
				try:
					st = os.lstat(self.ref.P(q))
					content = st.st_ino not in busy
					if stat.S_ISREG(st.st_mode) and st.st_size > FULL_READ_LIMIT and content:
						plan = sparse_plan(self.ref.P(q), st.st_size)
				except OSError:
					content = True
				a = record(self.ref, q, content, plan)
				b = record(self.pcf, q, content, plan)
				compare_recs("%s: path %r" % (where, q or "/"), a, b, self.explicit)

	def check_slot(self, slot, where, content=False):
		if slot not in self.ref.fds and slot not in self.pcf.fds:
			return
		if (slot in self.ref.fds) != (slot in self.pcf.fds):
			raise Divergence("slot", "%s: slot %d open on one side only" % (where, slot))
		content = content and self.ref.readable(slot)
		a = fd_record(self.ref, slot, content)
		b = fd_record(self.pcf, slot, content)
		compare_recs("%s: fd slot %d (opened as %r)" % (where, slot, self.ref.fds[slot][1]),
			     a, b, self.explicit, "fd-")

	def full_check(self, where):
		self.checks += 1
		ta, tb = walk(self.ref.root), walk(self.pcf.root)
		if sorted(ta) != sorted(tb):
			only_a = sorted(set(ta) - set(tb))
			only_b = sorted(set(tb) - set(ta))
			raise Divergence("tree", "%s: trees differ: only on ref %s, only on pcf %s" %
					 (where, only_a[:10], only_b[:10]))
		self.check_paths([""] + sorted(ta), where + " (full check)")
		# Hard-link groups and what each open descriptor refers to.
		def groups(tree, side):
			by = {}
			for p, st in tree.items():
				if not stat.S_ISDIR(st.st_mode):
					by.setdefault(st.st_ino, []).append(p)
			g = sorted(sorted(v) for v in by.values() if len(v) > 1)
			fdrel = {}
			for slot, (fd, _, _) in side.fds.items():
				ino = os.fstat(fd).st_ino
				fdrel[slot] = sorted(by.get(ino, [])) if not stat.S_ISDIR(os.fstat(fd).st_mode) \
					else "dir"
			return g, fdrel
		ga, fa = groups(ta, self.ref)
		gb, fb = groups(tb, self.pcf)
		if ga != gb:
			raise Divergence("links", "%s: hard-link groups ref %s pcf %s" % (where, ga, gb))
		if fa != fb:
			raise Divergence("fd-names", "%s: names of the open descriptors' files: ref %s "
					 "pcf %s" % (where, fa, fb))
		for slot in sorted(self.ref.fds):
			self.check_slot(slot, where + " (full check)", content=True)

	# -- global operations

	def remount(self, where):
		self.ref.close_all()
		self.pcf.close_all()
		self.mount.stop()
		if self.a.fsck:
			self.mount.fsck()
		self.mount.start(fresh_store=bool(self.remote_url))
		self.remounts += 1
		if self.remote_url:
			self.localise_ref()
		self.full_check(where + " after remount")

	def localise_ref(self):
		"""On a fresh store, only what a remote carries came back: make the reference the
		same (hard links broken into copies, no xattrs, no setuid or setgid bits: a pull
		clears them, directory mtimes of the mount, and the root directory's mode: the root
		has no catalog entry)."""
		os.chmod(self.ref.root, stat.S_IMODE(os.lstat(self.pcf.root).st_mode))
		tree = walk(self.ref.root)
		by = {}
		for p, st in tree.items():
			if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
				by.setdefault(st.st_ino, []).append(p)
		for paths in by.values():
			for p in sorted(paths)[1:]:
				full = self.ref.P(p)
				st = os.lstat(full)
				tmp = full + ".difftest-copy"
				if stat.S_ISLNK(st.st_mode):
					os.symlink(os.readlink(full), tmp)
				else:
					sparse_copy(full, tmp)
					os.chmod(tmp, stat.S_IMODE(st.st_mode))
				os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
				os.rename(tmp, full)
		for p in [""] + sorted(walk(self.ref.root)):
			full = self.ref.P(p)
			for xn in os.listxattr(full, follow_symlinks=False):
				os.removexattr(full, xn, follow_symlinks=False)
		suid = stat.S_ISUID | stat.S_ISGID
		for p in sorted(walk(self.ref.root)):
			st = os.lstat(self.ref.P(p))
			if not stat.S_ISLNK(st.st_mode) and st.st_mode & suid:
				os.chmod(self.ref.P(p), stat.S_IMODE(st.st_mode) & ~suid)
		for p in [""] + sorted(walk(self.ref.root)):
			st = os.lstat(self.ref.P(p))
			if stat.S_ISDIR(st.st_mode):
				try:
					pst = os.lstat(self.pcf.P(p))
				except OSError:
					continue
				os.utime(self.ref.P(p), ns=(st.st_atime_ns, pst.st_mtime_ns))

	def global_op(self, op, where):
		if op[0] == "check":
			self.full_check(where)
		elif op[0] == "remount":
			self.remount(where)
		elif op[0] == "dropcaches":
			try:
				with open("/proc/sys/vm/drop_caches", "w") as f:
					f.write("3\n")
			except OSError:
				pass

	# -- one step

	def step(self, i, op):
		where = "step %d %s" % (i, json.dumps(op))
		self.nops += 1
		if op[0] in ("check", "remount", "dropcaches"):
			self.global_op(op, where)
			return
		if op[0] == "utime" and op[2] is not None:
			self.explicit.add(op[2])
			self.explicit.add(op[3])
		extra = []
		if op[0] == "close":
			self.check_slot(op[1], where + " before close", content=True)
			if op[1] in self.ref.fds:
				extra.append(self.ref.fds[op[1]][1])
		ra = apply(self.ref, op)
		rb = apply(self.pcf, op)
		c = self.counts.setdefault(op[0], [0, 0])
		c[0 if ra[0] == "ok" else 1] += 1
		if ra != rb:
			raise Divergence("result:" + op[0], "%s: result ref %s pcf %s" % (where, ra, rb))
		if op[0] in ("open", "pwrite", "write", "pread", "read", "lseek", "ftruncate", "fsync",
			     "fdatasync", "fstat"):
			self.check_slot(op[1], where)
			if op[1] in self.ref.fds:
				self.check_paths([self.ref.fds[op[1]][1]], where)
		self.check_paths(op_paths(op) + extra, where)

	def run(self, ops, progress=False, on_op=None):
		"""Runs ops; raises Divergence at the first difference.  on_op(i, op) is called
		before each (the watchdog's heartbeat)."""
		for i, op in enumerate(ops):
			if on_op:
				on_op(i, op)
			self.step(i, op)
			if progress and (i + 1) % 500 == 0:
				print("  %d ops, %d checks, %d remounts" % (i + 1, self.checks, self.remounts),
				      flush=True)


LIVE = []
MOUNT_OPTS = []

# Product bugs the generator can be told to step around (--avoid), to look for others while
# one is open.  By default everything is generated, so the tests keep exposing them.  Add an
# entry (and its condition in Gen) when a bug takes long to fix; fixed ones stay, for older builds.
KNOWN_BUGS = [
	"rdonly-trunc",   # open(O_RDONLY|O_TRUNC) did not truncate (ext4 does); fixed in b602a05
	"negative-ns-times",  # times before 1970 with ns read back wrong; fixed in b602a05
]


# ---------------------------------------------------------------------------- watchdog


class Watchdog:
	"""A step that takes longer than --op-timeout is a hang: the daemon is killed so the stuck
	system call returns (ENOTCONN) and the run reports it."""

	def __init__(self, timeout):
		self.timeout = timeout
		self.beat = time.time()
		self.cur = None
		self.fired = None
		self.runner = None
		self.stop = False
		t = threading.Thread(target=self.loop, daemon=True)
		t.start()

	def heartbeat(self, i, op):
		self.beat = time.time()
		self.cur = (i, op)

	def loop(self):
		while not self.stop:
			time.sleep(1)
			r = self.runner
			if r is None or self.fired:
				continue
			if time.time() - self.beat > self.timeout:
				self.fired = self.cur
				print("HANG: step %s took more than %d s; killing the daemon" %
				      (json.dumps(self.cur), self.timeout), flush=True)
				r.mount.kill()


# ---------------------------------------------------------------------------- minimisation


def attempt(a, ops, wd):
	"""Replays ops on a fresh directory and a fresh store; returns the Divergence or None."""
	r = None
	try:
		r = Runner(a, "min")
		wd.runner = r
		wd.beat = time.time()
		wd.fired = None
		r.run(ops, on_op=wd.heartbeat)
		r.full_check("end")
		return None
	except Divergence as d:
		if wd.fired:
			return Divergence("hang", "hang at %s" % json.dumps(wd.fired))
		return d
	except OSError as e:
		if wd.fired:
			return Divergence("hang", "hang at %s" % json.dumps(wd.fired))
		return Divergence("tester-oserror", "OSError in the tester: %s" % e)
	finally:
		wd.runner = None
		if r is not None:
			r.close()


def minimise(a, ops, kind, wd):
	"""ddmin over ops: keeps subsets that still diverge with the same kind (any kind with
	--min-any), then tries removing single operations until none can go."""
	t_end = time.time() + a.min_time
	trials = [0]

	def fails(cand):
		if time.time() > t_end:
			return False
		trials[0] += 1
		d = attempt(a, cand, wd)
		return d is not None and (a.min_any or d.kind == kind)

	# First without the global ops (full checks, remounts, dropped caches) when the failure
	# does not need them: replays get much cheaper.  The end of each replay checks everything.
	plain = [op for op in ops if op[0] not in ("check", "remount", "dropcaches")]
	if len(plain) < len(ops) and fails(plain):
		ops = plain
	n = 2
	while len(ops) >= 2 and time.time() < t_end:
		chunk = (len(ops) + n - 1) // n
		subsets = [ops[i:i + chunk] for i in range(0, len(ops), chunk)]
		done = False
		for s in subsets:
			if fails(s):
				ops, n, done = s, 2, True
				break
		if not done:
			for k in range(len(subsets)):
				comp = [x for j, s in enumerate(subsets) if j != k for x in s]
				if fails(comp):
					ops, n, done = comp, max(n - 1, 2), True
					break
		if not done:
			if n >= len(ops):
				break
			n = min(len(ops), 2 * n)
	i = 0
	while i < len(ops) and time.time() < t_end:
		cand = ops[:i] + ops[i + 1:]
		if cand and fails(cand):
			ops = cand
		else:
			i += 1
	print("minimised to %d ops in %d replays%s" % (len(ops), trials[0],
	      " (time limit reached)" if time.time() > t_end else ""), flush=True)
	return ops


# ---------------------------------------------------------------------------- the reproducer


def op_code(op):
	"""A Python expression of (D, fd) replaying op on directory D."""
	n = op[0]
	P = lambda p: "P(D, %r)" % p
	if n == "open":
		fl = "|".join("os.O_" + f for f in op[3].split("|"))
		return "fd.__setitem__(%d, os.open(%s, %s, 0o%o))" % (op[1], P(op[2]), fl, op[4])
	if n == "close":
		return "os.close(fd.pop(%d))" % op[1]
	if n == "pwrite":
		return "os.pwrite(fd[%d], data(%d, %d), %d)" % (op[1], op[4], op[3], op[2])
	if n == "write":
		return "os.write(fd[%d], data(%d, %d))" % (op[1], op[3], op[2])
	if n == "pread":
		return "h(os.pread(fd[%d], %d, %d))" % (op[1], op[3], op[2])
	if n == "read":
		return "h(os.read(fd[%d], %d))" % (op[1], op[2])
	if n == "lseek":
		return "os.lseek(fd[%d], %d, %d)" % (op[1], op[2], op[3])
	if n == "ftruncate":
		return "os.ftruncate(fd[%d], %d)" % (op[1], op[2])
	if n in ("fsync", "fdatasync"):
		return "os.%s(fd[%d])" % (n, op[1])
	if n == "fstat":
		return "fst(fd[%d])" % op[1]
	if n == "truncate":
		return "os.truncate(%s, %d)" % (P(op[1]), op[2])
	if n == "writefile":
		return "writefile(%s, %d, data(%d, %d))" % (P(op[1]), op[2], op[4], op[3])
	if n == "append":
		return "writefile(%s, None, data(%d, %d))" % (P(op[1]), op[3], op[2])
	if n == "readfile":
		return "h(open(%s, 'rb').read(%d))" % (P(op[1]), READFILE_LIMIT)
	if n == "rename":
		return "renameat2(%s, %s, %d)" % (P(op[1]), P(op[2]), op[3])
	if n == "link":
		return "os.link(%s, %s, follow_symlinks=False)" % (P(op[1]), P(op[2]))
	if n in ("unlink", "rmdir", "readlink", "listdir"):
		return "os.%s(%s)" % (n, P(op[1]))
	if n == "mkdir":
		return "os.mkdir(%s, 0o%o)" % (P(op[1]), op[2])
	if n == "symlink":
		return "os.symlink(%r, %s)" % (op[1], P(op[2]))
	if n == "chmod":
		return "os.chmod(%s, 0o%o)" % (P(op[1]), op[2])
	if n == "utime":
		if op[2] is None:
			return "os.utime(%s, None, follow_symlinks=%r)" % (P(op[1]), op[4])
		return "os.utime(%s, ns=(%d, %d), follow_symlinks=%r)" % (P(op[1]), op[2], op[3],
									  op[4])
	if n == "setxattr":
		return "os.setxattr(%s, %r, data(%d, %d), follow_symlinks=False)" % (P(op[1]), op[2],
										      op[4], op[3])
	if n == "getxattr":
		return "h(os.getxattr(%s, %r, follow_symlinks=False))" % (P(op[1]), op[2])
	if n == "removexattr":
		return "os.removexattr(%s, %r, follow_symlinks=False)" % (P(op[1]), op[2])
	if n == "stat":
		return "fst(%s)" % P(op[1])
	if n == "fsyncdir":
		return "fsyncdir(%s)" % P(op[1])
	if n == "dropcaches":
		return "dropcaches()"
	if n == "check":
		return "None  # full check: the tree dumps below"
	if n == "remount":
		return "remount(D)"
	raise ValueError(n)


REPRO_HEAD = r'''#!/usr/bin/env python3
# difftest reproducer (seed %(seed)s): %(desc)s
# usage: python3 repro.py DIR [DIR...]   e.g. an empty ext4 dir and an empty pkgcachefs mount.
# Each step runs on every DIR in turn; results and lstat of the touched paths are printed,
# "<-- DIFFERS" marks a difference.  remount(): set PCF_REMOUNT="BIN STORE MNT" to have it
# unmount and mount that store again (with open descriptors closed first).
import ctypes, errno, hashlib, os, random, stat, subprocess, sys
os.umask(0o022)
def data(s, n):
    k, r = divmod(s, 1000)
    if k == 1: return bytes(n)
    if k == 2: return ((b"%%d pkgcachefs wheel " %% r) * (n // 16 + 2))[:n]
    return random.Random(r).randbytes(n)
def h(b): return (len(b), hashlib.sha256(b).hexdigest()[:16])
def P(D, p): return os.path.join(D, p) if p else D
libc = ctypes.CDLL(None, use_errno=True)
def renameat2(a, b, fl):
    if fl == 0: return os.rename(a, b)
    if libc.renameat2(-100, os.fsencode(a), -100, os.fsencode(b), fl):
        e = ctypes.get_errno(); raise OSError(e, os.strerror(e))
def writefile(p, off, b):
    f = os.open(p, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if off is None else 0), 0o644)
    try: return os.write(f, b) if off is None else os.pwrite(f, b, off)
    finally: os.close(f)
def fst(x):
    st = os.fstat(x) if isinstance(x, int) else os.stat(x)
    return (oct(st.st_mode), st.st_nlink, st.st_size, st.st_mtime_ns)
def fsyncdir(p):
    f = os.open(p, os.O_RDONLY | os.O_DIRECTORY)
    try: os.fsync(f)
    finally: os.close(f)
def dropcaches():
    open("/proc/sys/vm/drop_caches", "w").write("3\n")
def remount(D):
    for k in list(FDS[D]): os.close(FDS[D].pop(k))
    spec = os.environ.get("PCF_REMOUNT", "").split()
    if len(spec) == 3 and os.path.realpath(D) == os.path.realpath(spec[2]):
        subprocess.run([spec[0], "umount", spec[2]], check=True)
        subprocess.run([spec[0], "mount", "--store", spec[1], spec[2]], check=True)
def look(D, p):
    f = P(D, p)
    try: st = os.lstat(f)
    except OSError as e: return errno.errorcode[e.errno]
    r = [oct(st.st_mode), st.st_nlink]
    if not stat.S_ISDIR(st.st_mode): r.append(st.st_size)
    if stat.S_ISREG(st.st_mode):
        try: r.append(h(open(f, "rb").read(1 << 27)))
        except OSError as e: r.append(errno.errorcode[e.errno])
    if stat.S_ISLNK(st.st_mode): r.append(os.readlink(f))
    if stat.S_ISDIR(st.st_mode): r.append(sorted(os.listdir(f)))
    r.append(st.st_mtime_ns if st.st_mtime_ns in EXPLICIT else "mtime:now")
    return r
def tree(D):
    out = {}
    for dp, dn, fn in os.walk(D):
        for n in dn + fn:
            p = os.path.relpath(os.path.join(dp, n), D); out[p] = look(D, p)
    return out
'''

REPRO_TAIL = r''']
DIRS = sys.argv[1:] or sys.exit("usage: repro.py DIR [DIR...]")
FDS = {D: {} for D in DIRS}
for i, (desc, f, paths) in enumerate(STEPS):
    outs = []
    for D in DIRS:
        try: r = f(D, FDS[D])
        except OSError as e: r = "ERR " + errno.errorcode[e.errno]
        outs.append((r, [look(D, p) for p in paths]))
    diff = any(o != outs[0] for o in outs)
    print("%3d %-60s -> %r%s" % (i, desc, outs[0][0], "  <-- DIFFERS: %r" % (outs[1:],) if diff else ""))
    if diff: print("     touched:", outs)
trees = [tree(D) for D in DIRS]
for p in sorted(set().union(*trees)):
    v = [t.get(p) for t in trees]
    if any(x != v[0] for x in v): print("tree differs at %r: %r" % (p, v))
print("done")
'''


def reproducer(ops, seed, desc):
	out = [REPRO_HEAD % {"seed": seed, "desc": desc}]
	out.append("EXPLICIT = %r  # mtimes set explicitly: shown; others only as 'now'\n" %
		   sorted(explicit_times(ops)))
	out.append("STEPS = [\n")
	for op in ops:
		paths = op_paths(op)
		if op[0] == "rename":
			paths = [op[1], op[2]]
		code = op_code(op)
		if "fd[" in code or "fd.pop" in code:
			slot = op[1]
			code = "(%s) if %d in fd else 'noslot'" % (code, slot)
		if op[0] == "open":
			code = "(os.close(fd.pop(%d)) if %d in fd else None, %s)[1]" % (op[1], op[1], code)
		out.append("    (%r, lambda D, fd: %s, %r),\n" % (json.dumps(op), code, paths))
	out.append(REPRO_TAIL)
	return "".join(out)


# ---------------------------------------------------------------------------- main


def build_ops(a, runner, wd):
	"""Generates and runs the sequence of a seed; returns (ops, divergence or None)."""
	gen = generate(a.seed, a)
	ops = []
	for i in range(a.ops):
		if a.remount_every and i and i % a.remount_every == 0:
			op = ["remount"]
		elif a.check_every and i and i % a.check_every == 0:
			op = ["check"]
		else:
			op = gen.next(runner.ref)
		ops.append(op)
		wd.heartbeat(i, op)
		try:
			runner.step(i, op)
		except Divergence as d:
			return ops, d
		except OSError as e:
			if wd.fired:
				return ops, Divergence("hang", "hang at %s" % json.dumps(wd.fired))
			raise
		if (i + 1) % 500 == 0:
			print("  seed %d: %d ops, %d checks, %d remounts" % (a.seed, i + 1, runner.checks,
			      runner.remounts), flush=True)
	ops.append(["check"])
	wd.heartbeat(len(ops) - 1, ops[-1])
	try:
		runner.step(len(ops) - 1, ops[-1])
		if a.remount_every or a.remote:
			ops.append(["remount"])
			runner.step(len(ops) - 1, ops[-1])
	except Divergence as d:
		return ops, d
	return ops, None


def fs_type(path):
	"""The type of the filesystem path is on, from /proc/self/mountinfo (longest prefix)."""
	best, fst = "", "?"
	path = os.path.realpath(path)
	with open("/proc/self/mountinfo") as f:
		for line in f:
			left, right = line.split(" - ", 1)
			mp = left.split()[4]
			if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best):
				best, fst = mp, right.split()[0]
	return fst


def main():
	ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
	ap.add_argument("binary", help="the pkgcachefs binary")
	ap.add_argument("--seed", type=int, default=None, help="default: from the clock (printed)")
	ap.add_argument("--ops", type=int, default=1000)
	ap.add_argument("--max-files", type=int, default=12)
	ap.add_argument("--check-every", type=int, default=50, help="full-tree check period")
	ap.add_argument("--remount-every", type=int, default=0, metavar="K",
			help="unmount and mount the store every K ops (fsck in between)")
	ap.add_argument("--remote", action="store_true",
			help="with a file:// remote: each remount pushes at umount and mounts a fresh "
			"store (implies --remount-every 100 unless given)")
	ap.add_argument("--no-fsck", dest="fsck", action="store_false",
			help="skip fsck of the store at each remount")
	ap.add_argument("--tmpdir", default=os.environ.get("TMPDIR", "/tmp"),
			help="where the reference tree, store and mountpoint go (default $TMPDIR or /tmp)")
	ap.add_argument("--op-timeout", type=int, default=120, help="a step longer than this is a hang")
	ap.add_argument("--no-minimise", dest="minimise", action="store_false")
	ap.add_argument("--min-time", type=int, default=900, help="seconds allowed for minimising")
	ap.add_argument("--min-any", action="store_true",
			help="while minimising, accept any divergence, not only one of the same kind")
	ap.add_argument("--save", help="write the sequence run (JSON) here")
	ap.add_argument("--replay", help="run this saved sequence (JSON) instead of generating")
	ap.add_argument("--repro-out", help="write the minimal reproducer here")
	ap.add_argument("--keep", action="store_true", help="keep the temp dirs")
	ap.add_argument("-o", dest="mount_opts", action="append", default=[],
			help="mount option for pkgcachefs (e.g. commit_interval=10); repeatable")
	ap.add_argument("-v", "--verbose", action="store_true",
			help="print how many of each op succeeded and failed")
	ap.add_argument("--avoid", action="append", default=[], choices=KNOWN_BUGS,
			help="do not generate what triggers this known bug (to look past it)")
	a = ap.parse_args()
	MOUNT_OPTS.extend(a.mount_opts)
	if a.remote and not a.remount_every:
		a.remount_every = 100
	if a.seed is None:
		a.seed = int(time.time() * 1000) % 1000000007
	a.binary = os.path.realpath(a.binary)
	if not os.access(a.binary, os.X_OK):
		print("FAIL: %s is not an executable" % a.binary)
		return 2
	if shutil.which("fusermount3") is None:
		print("SKIP: fusermount3 not found in PATH")
		return 77
	try:
		os.close(os.open("/dev/fuse", os.O_RDWR))
	except OSError as e:
		print("SKIP: /dev/fuse cannot be opened read-write: %s" % e)
		return 77
	os.umask(0o022)
	signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

	wd = Watchdog(a.op_timeout)
	status = "ok"
	runner = None
	try:
		runner = Runner(a, "s%d" % a.seed)
		wd.runner = runner
		print("difftest: %s, %d ops, max %d files, reference %s on %s, mount %s%s%s" %
		      ("replay of " + a.replay if a.replay else "seed %d" % a.seed, a.ops, a.max_files, runner.ref.root, fs_type(runner.ref.root),
		       runner.pcf.root, ", remount every %d" % a.remount_every if a.remount_every else "",
		       ", file:// remote (fresh store at each remount)" if a.remote else ""), flush=True)
		if a.replay:
			with open(a.replay) as f:
				ops = json.load(f)
			div = None
			try:
				runner.run(ops, on_op=wd.heartbeat)
				runner.full_check("end")
			except Divergence as d:
				div = d
		else:
			ops, div = build_ops(a, runner, wd)
		if a.save:
			with open(a.save, "w") as f:
				json.dump(ops, f)
		nops, remounts, checks = runner.nops, runner.remounts, runner.checks
		if div is None and not wd.fired:
			counts = runner.counts
			runner.close()
			runner = None
			wd.runner = None
			if a.verbose:
				print("ops (succeeded/failed): " + ", ".join(
					"%s %d/%d" % (k, v[0], v[1]) for k, v in sorted(counts.items())))
			print("difftest: seed %d: %d ops, %d full checks, %d remounts: no divergence" %
			      (a.seed, nops, checks, remounts))
			print("DIFFTEST seed=%d ops=%d remounts=%d checks=%d result=ok" %
			      (a.seed, nops, remounts, checks))
			return 0
		if div is None:
			div = Divergence("hang", "hang at %s" % json.dumps(wd.fired))
		status = "hang" if div.kind == "hang" else "divergence"
		failing = ops[:nops]
		print("DIVERGENCE (seed %d, op %d of the sequence, %s): %s" %
		      (a.seed, nops - 1, div.kind, div.msg), flush=True)
		print("the op: %s" % json.dumps(failing[-1]))
		if runner.mount.log:
			print("daemon log tail:\n" + runner.mount.tail())
		runner.close()
		runner = None
		wd.runner = None
		minimal = failing
		if a.minimise:
			print("minimising %d ops (fresh directory and fresh store per replay)..." %
			      len(failing), flush=True)
			d0 = attempt(a, failing, wd)
			if d0 is None:
				print("the failing sequence does not diverge again on replay (timing?): "
				      "not minimised")
			else:
				if d0.kind != div.kind:
					print("replay diverges differently (%s): %s" % (d0.kind, d0.msg))
					div = d0
				minimal = minimise(a, failing, div.kind, wd)
				dm = attempt(a, minimal, wd)
				if dm is not None:
					print("minimal sequence diverges: %s: %s" % (dm.kind, dm.msg))
		print("minimal sequence (%d ops, JSON; replay with --replay FILE):" % len(minimal))
		print(json.dumps(minimal))
		code = reproducer(minimal, a.seed, "%s: %s" % (div.kind, div.msg.replace("\n", " ")[:300]))
		if a.repro_out:
			with open(a.repro_out, "w") as f:
				f.write(code)
			print("reproducer written to %s" % a.repro_out)
		print("---- reproducer (python3 - EXT4DIR MOUNTDIR) ----")
		print(code)
		print("----")
		print("DIFFTEST seed=%d ops=%d remounts=%d checks=%d result=%s kind=%s" %
		      (a.seed, nops, remounts, checks, status, div.kind))
		return 1
	except Exception:
		import traceback
		traceback.print_exc()
		print("DIFFTEST seed=%d ops=%d remounts=%d checks=%d result=error" %
		      (a.seed, runner.nops if runner else 0, runner.remounts if runner else 0,
		       runner.checks if runner else 0))
		return 1
	finally:
		wd.stop = True
		if runner is not None:
			runner.close()
		for r in list(LIVE):
			r.close()


if __name__ == "__main__":
	sys.exit(main())
