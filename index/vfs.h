/* SPDX-License-Identifier: MIT */
/*
 * The filesystem core: POSIX operations on inodes, implemented on the index and the packs.
 * The FUSE layer (fs/ops.c) decodes a request, calls one of these, and replies; nothing here
 * knows about FUSE, so all of it is tested without a mount.
 *
 * Data path. A file's committed content is its extents: chunks in packs, named in the index.
 * A file written front to back from empty (the common case) is streamed: cut into chunks as the
 * bytes arrive, hashed and stored by background hashing threads while the writer goes on, the
 * chunks pinned until flush (close), fsync or the last release makes them the file's extents
 * in one index transaction. Any other change (a write elsewhere than at the end, a read of a
 * file being streamed, a truncation to a non-zero size) moves the file to a staging file, a
 * sparse scratch file in STORE/staging holding its whole current content, which the same
 * events cut into chunks, holes skipped. Readers of a staged file read the staging file;
 * readers of a clean file read chunks (verified against their keys), fetching the ones only on
 * the remote. A full disk fails the write itself; what fails after a write was accepted is
 * reported by flush and fsync.
 *
 * Durability. Index changes join one open transaction, committed by a background thread every
 * commit interval and by every fsync (group commit). Packs are synced before each commit, so a
 * committed extent never names bytes that are not on disk; fsync also syncs the WAL. A crash
 * loses at most the last interval's uncommitted changes, never a file's consistency: a file
 * reads as its last committed content.
 *
 * Threads and locks: the FUSE workers call in concurrently; the vfs runs a commit thread and two
 * hashing threads, and a fetcher with a remote. The locks and their order are in
 * docs/architecture.md, "Locks"; the code is index/vfs*.c, listed in index/vfs_priv.h.
 *
 * Functions return 0 (or a byte count) on success and a negative errno on failure.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>

#include "counters.h"
#include "fetch.h"
#include "maint.h"
#include "remote.h"
#include "store.h"
#include "sync.h"

struct vfs;
struct vfs_file;

struct vfs_options {
	unsigned commit_interval_ms; /* 0: default (1000) */
	uint64_t max_size;           /* 0: unlimited; else evict LRU files beyond it */
	/* Told of each name evicted to stay within max_size, with no lock held. */
	void (*evicted)(void *data, uint64_t parent, const char *name);
	/* Asked for the size limit of a requested gc (0: none), and told its outcome. */
	uint64_t (*gc_request_size)(void *data);
	void (*gc_done)(void *data, int r, const struct gc_report *rep);
	/*
	 * The remote this store caches (outlives the vfs), or NULL. Chunks only there are fetched
	 * when read, and eviction keeps names, dropping only local copies of pushed data.
	 */
	struct remote *remote;
	/* Told of each failure to fetch from the remote, with a line for the log. */
	void (*remote_report)(void *data, const char *msg);
	unsigned fetch_workers; /* prefetch workers (connections); 0: FETCH_WORKERS_DEFAULT */
	uint32_t fetch_range;   /* largest coalesced prefetch range; 0: FETCH_RANGE_DEFAULT */
	/* Queue an opened file's prefetch behind the jobs already queued, as before it went first:
	 * only for benchmarks that measure what going first buys. */
	bool open_prefetch_last;
	void *hook_data;
};

/* The caller's identity, for ownership of new inodes. */
struct vfs_ctx {
	uid_t uid;
	gid_t gid;
};

/* Take ownership of st (freed by vfs_close). Cleans orphans left by a crash. */
int vfs_open(struct store *st, const struct vfs_options *o, struct vfs **ret);
/* Commit and sync everything, stop the commit thread, close the store. 0 only when all data is
 * durable. Accepts NULL. */
int vfs_close(struct vfs *v);
/* Commit everything and make it durable. */
int vfs_sync(struct vfs *v);

/* Lookups that return an inode also take a lookup reference, dropped by vfs_forget. */
int vfs_lookup(struct vfs *v, uint64_t parent, const char *name, struct stat *ret);
void vfs_forget(struct vfs *v, uint64_t ino, uint64_t nlookup);
int vfs_getattr(struct vfs *v, uint64_t ino, struct stat *ret);

/* Which fields of vfs_setattr's attr to apply. */
enum {
	VFS_SET_MODE = 1 << 0,
	VFS_SET_UID = 1 << 1,
	VFS_SET_GID = 1 << 2,
	VFS_SET_SIZE = 1 << 3,
	VFS_SET_ATIME = 1 << 4,
	VFS_SET_MTIME = 1 << 5,
	VFS_SET_ATIME_NOW = 1 << 6,
	VFS_SET_MTIME_NOW = 1 << 7,
	VFS_SET_CTIME = 1 << 8,
};
/* f, when not NULL, is the open file the change comes through (ftruncate). */
int vfs_setattr(struct vfs *v, uint64_t ino, const struct stat *attr, int to_set,
		struct vfs_file *f, struct stat *ret);

int vfs_mknod(struct vfs *v, const struct vfs_ctx *c, uint64_t parent, const char *name,
	      mode_t mode, dev_t rdev, struct stat *ret);
int vfs_mkdir(struct vfs *v, const struct vfs_ctx *c, uint64_t parent, const char *name,
	      mode_t mode, struct stat *ret);
int vfs_symlink(struct vfs *v, const struct vfs_ctx *c, uint64_t parent, const char *name,
		const char *target, struct stat *ret);
int vfs_link(struct vfs *v, uint64_t ino, uint64_t newparent, const char *newname,
	     struct stat *ret);
int vfs_unlink(struct vfs *v, uint64_t parent, const char *name);
int vfs_rmdir(struct vfs *v, uint64_t parent, const char *name);
/* flags: RENAME_NOREPLACE, RENAME_EXCHANGE, or 0. */
int vfs_rename(struct vfs *v, uint64_t parent, const char *name, uint64_t newparent,
	       const char *newname, unsigned flags);
/* Target into buf, NUL-terminated. */
int vfs_readlink(struct vfs *v, uint64_t ino, char *buf, size_t len);

/* Open files. *ret_f lives until vfs_release. flags are open(2) flags. */
int vfs_create(struct vfs *v, const struct vfs_ctx *c, uint64_t parent, const char *name,
	       mode_t mode, int flags, struct stat *ret, struct vfs_file **ret_f);
int vfs_open_file(struct vfs *v, uint64_t ino, int flags, struct vfs_file **ret_f);
/* Bytes read (short only at end of file), or -errno. */
ssize_t vfs_read(struct vfs *v, struct vfs_file *f, void *buf, size_t size, off_t off);
/*
 * Bytes written, or -errno. When early_reply is given, vfs may call it with the count once the
 * bytes are safely taken, before it has finished storing them (the caller then must not reply
 * again); what fails after that is reported by vfs_flush and vfs_fsync.
 */
ssize_t vfs_write(struct vfs *v, struct vfs_file *f, const void *buf, size_t size, off_t off,
		  void (*early_reply)(void *ctx, size_t n), void *ctx);
/* Commit what was written through f (on close(2)); reports write-back errors. */
int vfs_flush(struct vfs *v, struct vfs_file *f);
/*
 * vfs_flush for close(2). When f's bytes were written from the start to the end (a stream),
 * whose writes took them and checked their room, vfs calls early_reply before storing the last
 * of them (the caller then must not reply again). A failure after that is logged and the commit
 * is tried again by fsync or release; vfs_push waits for such commits.
 */
int vfs_flush_early(struct vfs *v, struct vfs_file *f, void (*early_reply)(void *ctx), void *ctx);
int vfs_fsync(struct vfs *v, struct vfs_file *f, bool datasync);
void vfs_release(struct vfs *v, struct vfs_file *f);

/*
 * List directory ino from offset off: "." (offset 0), ".." (1), then the entries in a stable
 * order. cb gets each entry with its attributes and the offset to resume after it; a non-zero
 * return stops the listing (a full reply buffer) and the entry it refused is the next one
 * offered on the next call. With lookup (readdirplus), each entry cb accepts, but "." and "..",
 * takes a lookup reference. cb runs with the vfs lock held: it must not call back into vfs.
 * 0 or -errno.
 */
int vfs_readdir(struct vfs *v, uint64_t ino, uint64_t off, bool lookup,
		int (*cb)(const char *name, const struct stat *st, uint64_t next_off, void *data),
		void *data);

int vfs_statfs(struct vfs *v, struct statvfs *ret);

int vfs_setxattr(struct vfs *v, uint64_t ino, const char *name, const void *value, size_t size,
		 int flags);
/*
 * setxattr of system.posix_acl_access by the caller c: an ACL of only user::, group:: and
 * other:: entries sets the mode's permission bits (and moves ctime), as chmod would; any other
 * ACL is -EOPNOTSUPP (there is no ACL support), a caller who neither owns the file nor is root
 * -EPERM. *ret_changed says whether the mode changed: the kernel, which expects a filesystem
 * without ACL support to keep the mode, then has stale attributes. 0 or -errno.
 */
int vfs_set_access_acl(struct vfs *v, const struct vfs_ctx *c, uint64_t ino, const void *value,
		       size_t size, bool *ret_changed);
/* Returns the value's size (copying it when it fits size; size 0 only asks), or -errno. */
int vfs_getxattr(struct vfs *v, uint64_t ino, const char *name, void *buf, size_t size);
int vfs_listxattr(struct vfs *v, uint64_t ino, char *buf, size_t size);
int vfs_removexattr(struct vfs *v, uint64_t ino, const char *name);

/*
 * Run gc now (what the commit thread does by itself when the store outgrows max_size): evict
 * least recently used files that are not open until the data fits max_size (0: no eviction),
 * and reclaim dead space. 0 or -errno.
 */
int vfs_gc(struct vfs *v, uint64_t max_size, struct gc_report *ret);

/* Ask the commit thread to run gc within a commit interval. Async-signal-safe. */
void vfs_request_gc(struct vfs *v);

/*
 * Add this session's read counters to c, one row per top-level directory (the entry under the
 * root a file was reached through: looked up, created or listed by readdirplus; reads of files
 * reached otherwise count under CTR_OTHER). A read is one read request the daemon served: the
 * kernel's page cache answers repeated reads without asking. A read counts as fetched when it
 * needed data that was only on the remote when its file was opened (fetched by the read itself or
 * by the prefetch meanwhile), as failed when it returned an error. 0 or -ENOMEM.
 */
int vfs_add_read_counters(struct vfs *v, struct counters *c);

/* Counters of the fetcher (all zero without a remote). */
void vfs_fetch_stats(struct vfs *v, struct fetcher_stats *ret);
/*
 * Push local changes to the remote while serving: commits first, so every closed file is in;
 * files still open for writing wait for the next push. -ENOTCONN without a remote.
 */
int vfs_push(struct vfs *v, const struct sync_options *o, struct sync_report *ret);
/* Queue a background fetch of whatever of ino is only on the remote. */
void vfs_prefetch_ino(struct vfs *v, uint64_t ino);
/* A name a live merge changed: made, replaced or removed in parent; ino: the inode replaced in
 * place (its attributes and content), 0 when none. */
struct vfs_inval {
	uint64_t parent, ino;
	char name[256];
};
typedef void (*vfs_inval_fn)(void *data, const struct vfs_inval *iv, size_t n);
/*
 * Merge what others pushed into the serving store (sync_live_pull), telling inval, after each
 * short batch and with no lock held, which names changed; with fetch_data, then fetch the data of
 * the files it brought. 0, -ENOTCONN without a remote, -errno.
 */
int vfs_pull(struct vfs *v, bool fetch_data, vfs_inval_fn inval, void *data,
	     const struct sync_options *o, struct sync_report *ret);

/* Wait for queued prefetches (tests and pull). */
void vfs_fetch_drain(struct vfs *v);

/*
 * The store the vfs serves (the vfs owns it: freed by vfs_close). Takes no lock and flushes
 * nothing: for callers that use the store while no vfs operation runs (tests, tools).
 */
struct store *vfs_store(struct vfs *v);
