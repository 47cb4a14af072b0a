/* SPDX-License-Identifier: MIT */
/*
 * A store: the directory that holds everything pkgcachefs keeps.
 *
 *   STORE/config        text, key = value: format version and chunker parameters (fixed at
 *                       creation: changing them would silently end dedup), and the default
 *                       remote, if any
 *   STORE/index.db      the SQLite index (idx.h), with its -wal and -shm files
 *   STORE/packs/        pack files, <16 hex digits of the pack id>.pack (pack.h)
 *   STORE/staging/      per-inode scratch files holding data written but not yet chunked
 *   STORE/lock          flock'ed by the one process that may write the store
 *   STORE/daemon.pid    pid of the mounted daemon, while it runs
 *
 * Everything is created 0700/0600: a cache can hold private packages. The store owns the index
 * connection and the packs; it is not itself thread-safe except where a function says so. The
 * caller (vfs) serialises writers with its own lock.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "chunker.h"
#include "hash.h"
#include "idx.h"
#include "pack.h"

#define STORE_FORMAT_VERSION 1
/* Packs are sealed and a new one started past this size (less on a small filesystem). */
#define STORE_PACK_TARGET (64ull << 20)

struct store;

enum {
	STORE_CREATE = 1 << 0, /* create the directory and its files when missing */
	STORE_LOCK = 1 << 1,   /* take the exclusive lock (daemon, gc, fsck --repair) */
};

/*
 * Open the store at dir. With STORE_LOCK, -EBUSY when another process holds the lock (then
 * *ret_owner, if not NULL, gets its pid or 0). -EPROTO when the store was written by a newer
 * version, -ENOENT when it does not exist and STORE_CREATE was not given, -EUCLEAN when its
 * config is damaged. *ret is released by store_close.
 */
int store_open(const char *dir, int flags, struct store **ret, pid_t *ret_owner);
/* Seal the active pack, close the index and release the lock. Accepts NULL. 0 or -errno. */
int store_close(struct store *st);

/* The default store directory: $PKGCACHEFS_STORE, /var/lib/pkgcachefs for root, else
 * ${XDG_DATA_HOME:-~/.local/share}/pkgcachefs. Malloc'ed; the caller frees. */
char *store_default_dir(void);

const char *store_dir(const struct store *st);
/*
 * The remote recorded in the config: its URL and, for https, the TLS files that reach it (the CA
 * to trust, a client certificate and its key: absolute paths). "" for each one not set; no value
 * holds whitespace. The default for mount, push and pull (`pkgcachefs remote`).
 */
#define STORE_REMOTE_MAX 1024
struct store_remote_cfg {
	char url[STORE_REMOTE_MAX];
	char ca_file[STORE_REMOTE_MAX], client_cert[STORE_REMOTE_MAX], client_key[STORE_REMOTE_MAX];
};
const char *store_remote(const struct store *st); /* the URL, "" when none */
const struct store_remote_cfg *store_remote_config(const struct store *st);
/* Replace the whole record (an empty url clears it). -EINVAL for a value too long, holding
 * whitespace, or a TLS path that is not absolute. */
int store_set_remote_config(struct store *st, const struct store_remote_cfg *rc);
const struct chunker_params *store_chunker_params(const struct store *st);
/*
 * Parse the text of a store's config (len bytes, not NUL-terminated; what store_open reads from
 * STORE/config) into *p and *rc. 0; -EUCLEAN when it is damaged (an unknown key, a bad value,
 * invalid chunker parameters, STORE_CONFIG_MAX bytes or more); -EPROTO when a newer version wrote
 * it. On failure *p and *rc hold nothing usable. For store_open and the fuzzer.
 */
#define STORE_CONFIG_MAX 8192
int store_parse_config(const char *text, size_t len, struct chunker_params *p,
		       struct store_remote_cfg *rc);
struct idx *store_idx(struct store *st);
/* An fd open on STORE/staging, for the vfs's scratch files. */
int store_staging_fd(const struct store *st);

/* The descriptor holding the store lock (-1 when not locked). A dup of it keeps the lock after
 * store_close, until the dup is closed too. */
int store_lock_fd(const struct store *st);

/*
 * The store directory as an attack surface (docs/security.md "The store directory"). Like ssh's
 * StrictModes, the store and every directory above it must belong to the caller's euid or to
 * root and be writable by nobody else (directories above it may be world-writable with the
 * sticky bit, like /tmp); packs/ and staging/ must be real directories, not symbolic links.
 * store_open fails with -EPERM otherwise; store_check_dir says why in why (len bytes).
 */
int store_check_dir(const char *dir, char *why, size_t len);
/*
 * Open the file name of the store dir without following a symbolic link (O_NOFOLLOW relative to
 * a descriptor of dir, after the checks above). Opened for writing, it must be a regular file
 * with one link. Returns the fd (O_CLOEXEC; the caller closes it) or -errno.
 */
int store_openat(const char *dir, const char *name, int flags, mode_t mode);
/* Unlink dir/name relative to a descriptor of dir. 0 or -errno. */
int store_unlinkat(const char *dir, const char *name);
/*
 * Replace dir/name with len bytes of buf: written to a fresh name.tmp (O_EXCL, never through
 * a planted file or link), fsync'ed when durable, renamed over name. 0 or -errno.
 */
int store_replace_file(const char *dir, const char *name, const void *buf, size_t len,
		       bool durable);
/*
 * The pid of the daemon serving the store dir: what STORE/daemon.pid says, if that process holds
 * STORE/lock open (so a stale or forged pid file never gets another process signalled). 0 with
 * *ret_pid; -ESRCH when no such daemon; -errno.
 */
int store_daemon_pid(const char *dir, pid_t *ret_pid);

/* Write the pid file (daemon only). */
int store_write_pid(struct store *st);

/*
 * Append a chunk to the active pack (starting a new pack when needed; the caller must be in an
 * index transaction). Returns 0 with the pack id and location, or -errno (-ENOSPC when the disk
 * is full or nearly so: a reserve is kept so that the index can still commit).
 */
int store_append_chunk(struct store *st, const chunk_key *key, const chunk_digest *digest,
		       const void *data, uint32_t len, uint64_t *ret_pack,
		       struct pack_loc *ret_loc);

/* Id of the pack being appended to, or 0. gc leaves it alone. */
uint64_t store_active_pack(const struct store *st);

/* Seal the active pack so that gc may rewrite it; the next append starts a new one. */
int store_seal_active(struct store *st);

/* fdatasync the active pack if it has unsynced data. 0 or -errno. */
int store_sync_packs(struct store *st);
/*
 * A new read-only descriptor of the active pack when it has unsynced data, else -1 (also when
 * the open fails): for an fdatasync with no lock held ahead of a commit, whose own
 * store_sync_packs then finds little left to write and still sees any write-back error. The
 * caller closes it. Called with the writer lock held.
 */
int store_open_unsynced_pack(struct store *st);

/* Read and verify a chunk. Thread-safe. 0, -EIO on damage, or -errno. */
int store_read_chunk(struct store *st, uint64_t pack, const struct pack_loc *loc,
		     const chunk_key *key, void *buf, uint32_t raw_len);

/* 0 when at least need bytes (plus the reserve) are free in the store's filesystem; -ENOSPC. */
int store_check_space(struct store *st, uint64_t need);

/* Forget cached read descriptors of packs (after gc removed or rewrote some). Thread-safe. */
void store_drop_pack_fds(struct store *st);

/* Name of pack id into buf (at least 32 bytes). */
void store_pack_name(uint64_t id, char *buf, size_t len);
/* fd of the packs directory. */
int store_packs_fd(const struct store *st);
