/* SPDX-License-Identifier: MIT */
/*
 * The index: one SQLite database (WAL mode) holding the namespace (inodes, directory entries,
 * symlink targets, xattrs), each file's extents, and every chunk with its location in a pack and
 * its reference count.
 *
 * Invariants, all kept inside single transactions:
 *  - chunks.refs equals the number of extent rows naming the chunk;
 *  - a directory's nlink is 2 plus its subdirectories; a file's nlink its dentries;
 *  - an inode with nlink 0 survives only while the daemon has it open or looked up; at startup all
 *    such orphans are deleted.
 * Extents cover a file in order without overlap; a hole is an extent with chunk 0.
 *
 * An idx is not thread-safe: the caller (vfs) serialises every call with one mutex. Writes
 * happen inside a transaction that idx_begin opens lazily and idx_commit closes, so many
 * operations share one commit (group commit). Lookups return 1 found, 0 absent, or -errno.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "hash.h"
#include "pack.h"

#define IDX_ROOT_INO 1
#define IDX_SCHEMA_VERSION 2
/* The longest path below the root the namespace serves or moves (bytes, without the NUL). */
#define IDX_PATH_MAX 4095

struct idx;
struct sqlite3_stmt;

struct idx_inode {
	uint64_t ino;
	uint64_t parent; /* directories: the parent's ino (root: itself); others: 0 */
	uint32_t mode, uid, gid, nlink;
	uint64_t size, rdev;
	int64_t atime, mtime, ctime; /* ns since the epoch */
};

struct idx_extent {
	uint64_t off; /* within the file */
	uint32_t len;
	uint64_t chunk; /* 0: a hole of len zero bytes */
	/* The chunk and where it lives; valid when chunk != 0. */
	chunk_key key;
	chunk_digest digest;
	uint64_t pack; /* local pack; 0 when the chunk is only on the remote */
	struct pack_loc loc;
	uint64_t rpack; /* remote pack (table rpacks); 0 when not on the remote */
	struct pack_loc rloc;
};

/*
 * Open (creating when create is true and it does not exist) the database at path. Checks the
 * schema version: -EPROTO when the store was written by a newer version. *ret is freed by
 * idx_close.
 */
int idx_open(const char *path, bool create, struct idx **ret);
/*
 * From now on, keep the inode rows read and written in memory. Only for the connection of the
 * store's lock holder: a change made by any other connection would leave the cache stale.
 * 0 or -ENOMEM.
 */
int idx_cache_inodes(struct idx *x);
/* Roll back what was not committed and close. Accepts NULL. */
void idx_close(struct idx *x);
/*
 * Open a second, read-only connection to the database at path that holds one consistent
 * snapshot (a read transaction) until idx_close: what push, fsck and stats of a mounted store
 * read while the daemon goes on writing. Only reading operations may be called on it.
 */
int idx_open_reader(const char *path, struct idx **ret);

/* Open a write transaction unless one is open. 0 or -errno. */
int idx_begin(struct idx *x);
/* Commit the open transaction, if any. 0 or -errno (the transaction then stays open). */
int idx_commit(struct idx *x);
bool idx_in_txn(const struct idx *x);
/* Undo the open transaction, if any. */
int idx_rollback(struct idx *x);
/*
 * Bracket one filesystem operation inside the group transaction, so that a failure halfway
 * through undoes only that operation's changes: idx_op_begin opens a savepoint (and the
 * transaction if needed); idx_op_end releases it, rolling back to it first when failed is true.
 */
int idx_op_begin(struct idx *x);
void idx_op_end(struct idx *x, bool failed);
/* Path of the WAL file, for syncing it. Lives as long as x. */
const char *idx_wal_path(const struct idx *x);

/*
 * Checkpoints off x's commits. A commit that leaves IDX_CHECKPOINT_FRAMES pages or more in the
 * WAL copies them back into the database itself (SQLite's automatic checkpoint, with an fsync
 * of each file): tens of ms, which a serving store would spend under its writer lock.
 * idx_defer_checkpoints turns that off for x and opens a connection of its own for
 * idx_checkpoint, which needs no lock of x's and runs alongside x's commits; its owner calls it
 * whenever idx_checkpoint_due says so. Durability is unchanged: a checkpoint only moves
 * committed pages, and syncs as x's own would.
 *
 * idx_defer_checkpoints: 0 and *ret, freed by idx_ckpt_close, or -errno (x is unchanged).
 * Called with x's lock held, as are idx_ckpt_close (which gives x its automatic checkpoint
 * back; accepts NULL) and x's commits. idx_checkpoint_due and idx_checkpoint need no lock,
 * accept NULL, and may run in several threads (one finding another under way returns at once).
 * idx_checkpoint: 0 or -errno; one that readers of older snapshots or commits made meanwhile
 * cut short is no error: idx_checkpoint_due then stays true, and the next one goes on.
 */
#define IDX_CHECKPOINT_FRAMES 4096
struct idx_ckpt;
int idx_defer_checkpoints(struct idx *x, struct idx_ckpt **ret);
bool idx_checkpoint_due(struct idx_ckpt *c);
int idx_checkpoint(struct idx_ckpt *c);
void idx_ckpt_close(struct idx *x, struct idx_ckpt *c);

int idx_meta_get(struct idx *x, const char *key, char *buf, size_t len);
int idx_meta_set(struct idx *x, const char *key, const char *value);

/* Create the root directory (IDX_ROOT_INO) of a new store; nothing when it exists. */
int idx_init_root(struct idx *x, uint32_t uid, uint32_t gid, int64_t now);
int idx_get_inode(struct idx *x, uint64_t ino, struct idx_inode *ret);
/* Write every field of in (in->ino must exist). */
int idx_put_inode(struct idx *x, const struct idx_inode *in);
/* Insert a new inode; in->ino is ignored and *ret_ino gets the new number (never reused). */
int idx_new_inode(struct idx *x, const struct idx_inode *in, uint64_t *ret_ino);
/* Delete an inode with its extents (dropping chunk references), xattrs and symlink target. */
int idx_delete_inode(struct idx *x, uint64_t ino);

int idx_lookup(struct idx *x, uint64_t parent, const char *name, uint64_t *ret_ino);
/*
 * One path of ino from the root ("a/b/c"; "" for the root), following the first name of each
 * inode, into buf of len bytes. 0; -ENOENT when an inode on the way has no name (an orphan);
 * -ENAMETOOLONG past IDX_PATH_MAX or len. The one path builder: fsck's reports, push and the
 * access trace all use it. Works on a reader (idx_open_reader) too.
 */
int idx_path(struct idx *x, uint64_t ino, char *buf, size_t len);
int idx_add_dentry(struct idx *x, uint64_t parent, const char *name, uint64_t ino);
int idx_del_dentry(struct idx *x, uint64_t parent, const char *name);
/* Point an existing dentry at another inode. */
int idx_set_dentry(struct idx *x, uint64_t parent, const char *name, uint64_t ino);
/* 1 when the directory has no entries, 0 when it has, or -errno. */
int idx_dir_is_empty(struct idx *x, uint64_t ino);

/*
 * Calls cb for each entry of directory ino whose cookie is above after, in cookie order, with the
 * entry's inode and cookie; a non-zero return stops and is returned. Cookies are stable and never
 * reused, so a listing resumed from one misses no entry that stayed and repeats none.
 */
int idx_list_dir(struct idx *x, uint64_t ino, uint64_t after,
		 int (*cb)(const char *name, const struct idx_inode *in, uint64_t cookie,
			   void *data),
		 void *data);

int idx_set_target(struct idx *x, uint64_t ino, const char *target);
/* Symlink target into buf (NUL-terminated, truncated to len - 1). 1, 0 or -errno. */
int idx_get_target(struct idx *x, uint64_t ino, char *buf, size_t len);

/*
 * Step statement s (bound, and selecting idx_get_extents' columns in its order: e.off, e.len,
 * e.chunk, c.key, c.pack, c.off, c.stored_len, c.flags, c.digest, c.rpack, c.roff,
 * c.rstored_len, c.rflags, and optionally a 14th column that, when non-zero, says the remote
 * location is unusable) into extents, as idx_get_extents; s is reset. For readers with a
 * connection of their own (push reads a snapshot).
 */
int idx_read_extents(struct sqlite3_stmt *s, struct idx_extent **ret, size_t *ret_n);
/* Every extent of ino, in order. *ret is malloc'ed, freed by the caller. */
int idx_get_extents(struct idx *x, uint64_t ino, struct idx_extent **ret, size_t *ret_n);
/*
 * Replace all extents of ino by the n given ones (only off, len, chunk are read), adjusting
 * chunk references. n may be 0.
 */
int idx_set_extents(struct idx *x, uint64_t ino, const struct idx_extent *ext, size_t n);
/* The same for an inode that has no extents yet (a new one): nothing to drop first. */
int idx_add_extents(struct idx *x, uint64_t ino, const struct idx_extent *ext, size_t n);

/* A chunk with this key and digest: 1 with its id, pack and location (each may be NULL), or 0. */
int idx_find_chunk(struct idx *x, const chunk_key *key, const chunk_digest *digest,
		   uint64_t *ret_id, uint64_t *ret_pack, struct pack_loc *ret_loc);
/* Where chunk id lives now (gc moves chunks). 1, 0 or -errno. */
int idx_chunk_loc(struct idx *x, uint64_t id, uint64_t *ret_pack, struct pack_loc *ret_loc);
/* Note that ino was used at time now (seconds), for least-recently-used eviction. Cheap: it
 * writes only when the recorded time is over an hour old. */
int idx_touch_used(struct idx *x, uint64_t ino, int64_t now);
/* Add delta to a chunk's reference count (pins held by files being written). */
int idx_ref_chunk(struct idx *x, uint64_t id, int delta);
/* Set every chunk's reference count to the number of extents naming it (after a crash). Returns
 * how many were wrong, or -errno. */
int idx_recount_refs(struct idx *x);
/* Record a chunk stored in a pack, with no references yet. */
int idx_add_chunk(struct idx *x, const chunk_key *key, const chunk_digest *digest, uint32_t raw_len,
		  uint64_t pack, const struct pack_loc *loc, uint64_t *ret_id);

/*
 * Remote locations. A chunk row may be local only (rpack 0), remote only (pack 0), or both.
 * Remote packs are named by the SHA-256 of their bytes.
 */
#define IDX_RPACK_NAME_SIZE 32
/* Record that chunk id (if it is still the chunk with this key) now also lives in local pack
 * (pack 0: no longer here). */
int idx_set_chunk_local(struct idx *x, uint64_t id, const chunk_key *key, uint64_t pack,
			const struct pack_loc *loc);
/* Name of remote pack id: 1, 0 when unknown, or -errno. */
int idx_rpack_name(struct idx *x, uint64_t id, uint8_t ret_name[IDX_RPACK_NAME_SIZE]);
/* Id of the remote pack with this name, added when new. */
int idx_rpack_ensure(struct idx *x, const uint8_t name[IDX_RPACK_NAME_SIZE], uint64_t size,
		     uint64_t *ret_id);
/* Record a chunk that is only on the remote, with no references yet. */
int idx_add_remote_chunk(struct idx *x, const chunk_key *key, const chunk_digest *digest,
			 uint32_t raw_len, uint64_t rpack, const struct pack_loc *rloc,
			 uint64_t *ret_id);
/* Note that the chunk (key, digest), if known here, is on the remote at rpack/rloc, unless it is
 * already known there in a pack not condemned by gc. */
int idx_set_chunk_remote(struct idx *x, const chunk_key *key, const chunk_digest *digest,
			 uint64_t rpack, const struct pack_loc *rloc);

/* Note that ino was opened (the access trace pushed to the remote). */
int idx_trace_add(struct idx *x, uint64_t ino, int64_t stamp);

/* Packs: name and size on record. */
int idx_add_pack(struct idx *x, uint64_t *ret_id);
int idx_set_pack_size(struct idx *x, uint64_t id, uint64_t size);
/* 1 when pack id is on record, 0 when not (its insertion was rolled back), or -errno. */
int idx_pack_exists(struct idx *x, uint64_t id);
/* Bytes in all packs, as recorded. */
int idx_pack_bytes(struct idx *x, uint64_t *ret);

#define IDX_XATTR_CREATE 1
#define IDX_XATTR_REPLACE 2
int idx_set_xattr(struct idx *x, uint64_t ino, const char *name, const void *value, size_t len,
		  int flags);
/* Copies up to len bytes; returns the value's size, or -ENODATA, or -errno. */
int idx_get_xattr(struct idx *x, uint64_t ino, const char *name, void *buf, size_t len);
/* NUL-separated names; returns the needed size (copying only when it fits len). */
int idx_list_xattr(struct idx *x, uint64_t ino, char *buf, size_t len);
int idx_remove_xattr(struct idx *x, uint64_t ino, const char *name);

/* Delete every inode with nlink 0 (orphans left by a crash). Returns how many, or -errno. */
int idx_delete_orphans(struct idx *x);

struct idx_stats {
	uint64_t files, dirs, symlinks, others;
	uint64_t logical_bytes;                     /* sum of file sizes */
	uint64_t chunks, chunk_bytes, stored_bytes; /* chunk rows with refs > 0 */
	uint64_t dead_chunks, dead_stored_bytes;    /* refs == 0: reclaimable */
	uint64_t packs, pack_bytes;
	uint64_t remote_only_bytes; /* unique bytes only on the remote (fetched when read) */
	uint64_t unpushed_bytes;    /* unique bytes not on the remote (meaningful with one) */
};
int idx_get_stats(struct idx *x, struct idx_stats *ret);

/* What one entry directly under the root holds, counted over its whole subtree. */
struct idx_top_stats {
	char *name; /* the entry's name (any bytes but '/' and NUL) */
	uint64_t ino;
	uint64_t files;         /* regular files, each inode once */
	uint64_t logical_bytes; /* their sizes */
	uint64_t unique_bytes;  /* raw bytes of the distinct chunks they use */
	uint64_t stored_bytes;  /* local stored (compressed) bytes of those chunks */
};
/*
 * One row per entry of the root, in name order: files, logical and unique bytes of its subtree
 * (logical - unique is what dedup saves inside it). A file hard-linked under two entries counts
 * under both; a chunk shared by two entries counts in each one's unique bytes, so the rows may
 * add up to more than idx_get_stats' totals. One read of the namespace and extents: for `stats`
 * and the metrics file, not for a hot path. *ret is freed by idx_top_stats_free. 0 or -errno.
 */
int idx_get_top_stats(struct idx *x, struct idx_top_stats **ret, size_t *ret_n);
/* Accepts NULL. */
void idx_top_stats_free(struct idx_top_stats *t, size_t n);

/*
 * == fsck and gc (idx_check.c) ==
 *
 * They run in a transaction of their own, outside the group commit of idx_begin: write opens
 * BEGIN IMMEDIATE (gc, fsck --repair, under the store lock), otherwise a read snapshot that stays
 * consistent while a daemon writes. idx_maint_end commits, or rolls back when commit is false
 * (then it always returns 0).
 */
int idx_maint_begin(struct idx *x, bool write);
int idx_maint_end(struct idx *x, bool commit);

/* The consistency checks of fsck, each over the invariants above. */
enum idx_check {
	IDX_CHECK_ORPHANS,           /* inodes with nlink 0 (idx_delete_orphans repairs them) */
	IDX_CHECK_DANGLING_DENTRIES, /* names of inodes that do not exist */
	IDX_CHECK_FILE_NLINK,        /* a non-directory's nlink is not its number of names */
	IDX_CHECK_DIR_NLINK,         /* a directory's nlink is not 2 + its subdirectories */
	IDX_CHECK_DANGLING_EXTENTS,  /* extents naming chunks that do not exist */
	IDX_CHECK_REFS_LOW,          /* fewer references than extents: gc would drop live data */
	IDX_CHECK_REFS_HIGH,         /* more: pins of files being written, or left by a crash */
	IDX_CHECK_UNSTORED_CHUNKS,   /* used chunks neither in a local pack nor on the remote */
};
/*
 * Count the rows that break check into *ret_n. When there are some: call show (when not NULL)
 * with a line that describes each (valid during the call), then, when fix is true and the check
 * has a repair (idx_check_repairable), apply it. 0 or -errno.
 */
int idx_check(struct idx *x, enum idx_check check, bool fix,
	      void (*show)(void *data, const char *line), void *data, uint64_t *ret_n);
bool idx_check_repairable(enum idx_check check);

/*
 * The walks below call cb for each row until it returns non-zero: a negative value is returned
 * as the walk's error, a positive one ends the walk early with 0. The structs they pass are valid
 * during the call. The callbacks may call other idx operations.
 */
struct idx_file_extents {
	uint64_t ino, size;
	uint64_t count;   /* extents */
	uint64_t covered; /* sum of their lengths */
	uint64_t end;     /* the end of the last one */
};
/* Every regular file, with a summary of its extents. */
int idx_each_file_extents(struct idx *x, int (*cb)(void *data, const struct idx_file_extents *f),
			  void *data);

struct idx_pack_usage {
	uint64_t id, size; /* size as recorded */
	uint64_t live;     /* bytes of its chunks with their headers; 0 when not asked for */
};
/* Every local pack on record; with usage, also the bytes its chunks take. */
int idx_each_pack(struct idx *x, bool usage, int (*cb)(void *data, const struct idx_pack_usage *p),
		  void *data);

/* Bytes of the chunks files use that have a local copy: uncompressed and stored. */
int idx_local_live_bytes(struct idx *x, uint64_t *ret_raw, uint64_t *ret_stored);

struct idx_chunk_row {
	uint64_t id, pack;
	bool malformed; /* key, digest or length out of bounds: the rest is zero */
	chunk_key key;
	chunk_digest digest;
	uint32_t raw_len; /* 1..PACK_MAX_CHUNK */
	struct pack_loc loc;
};
/* With pack 0, every used chunk in a local pack, by pack and offset; else all of pack's, in
 * offset order. */
int idx_each_local_chunk(struct idx *x, uint64_t pack,
			 int (*cb)(void *data, const struct idx_chunk_row *c), void *data);
/* Every file with an extent naming chunk. */
int idx_each_file_using_chunk(struct idx *x, uint64_t chunk, int (*cb)(void *data, uint64_t ino),
			      void *data);

/* Eviction, least recently used first (used, else modified). */
struct idx_lru_file {
	uint64_t parent, ino;
	char *name; /* the caller frees it */
};
/* Up to max names of non-empty regular files, after the first skip, into v. 0 or -errno. */
int idx_lru_files(struct idx *x, unsigned skip, struct idx_lru_file *v, size_t max, size_t *ret_n);
/* Every non-empty regular file, with its size. */
int idx_each_file_lru(struct idx *x, int (*cb)(void *data, uint64_t ino, uint64_t size),
		      void *data);
/* Stored bytes that deleting ino would free: its chunks no other file uses. */
int idx_bytes_freed_by(struct idx *x, uint64_t ino, uint64_t *ret);
/*
 * Stored bytes of ino's local chunk copies that are also in a remote pack gc has not condemned,
 * and dropping exactly those local copies (the chunks stay, fetched again when read).
 */
int idx_local_copy_bytes(struct idx *x, uint64_t ino, uint64_t *ret);
int idx_drop_local_copies(struct idx *x, uint64_t ino);
/* Delete the chunks nothing refers to; *ret_n (may be NULL) gets how many. */
int idx_delete_dead_chunks(struct idx *x, uint64_t *ret_n);
/* Forget a local pack (its file is the caller's to delete, after the commit is durable). */
int idx_delete_pack(struct idx *x, uint64_t id);
/* Point chunk id at its copy in another local pack. */
int idx_move_chunk(struct idx *x, uint64_t id, uint64_t pack, const struct pack_loc *loc);

/* Map an SQLite result code to a negative errno. */
int idx_errno(int rc);

/*
 * == Remote bookkeeping (idx_sync.c): catalogs seen, remote packs, the base, the access trace,
 * and the reads of a push snapshot. ==
 */

/* A meta value as a signed integer: the value, or 0 when unset or not a number. */
int64_t idx_meta_get_i64(struct idx *x, const char *key);
int idx_meta_set_i64(struct idx *x, const char *key, int64_t v);
/*
 * Forget all that was learnt from a remote (rseen, rbad, rbase, rtrace, rpacks, the remote
 * locations of chunks, meta rsync_time), for a store that moves to another one: chunks that were
 * only there lose their data, so the caller checks first that there are none. 0 or -errno.
 */
int idx_sync_forget(struct idx *x);
/* 1 when the store has no sync state and no chunks (with an empty root: a cold store), 0, -errno.
 */
int idx_sync_blank(struct idx *x);
/* A big page cache for a merge that touches every table (big), or back to the usual. */
int idx_set_big_cache(struct idx *x, bool big);

/*
 * rbad: catalogs that failed to verify or decode, so that a pull does not download them again
 * each time. 1 when name was marked bad at or after since (the clock of idx_rbad_mark's at),
 * else 0; -errno.
 */
int idx_rbad_since(struct idx *x, const char *name, int64_t since);
int idx_rbad_mark(struct idx *x, const char *name, int64_t at);
/* Catalog name in rseen: 1 with whether it was merged into the namespace, 0 when unseen. */
int idx_rseen_get(struct idx *x, const char *name, bool *ret_merged);
/* Note the catalog seen (merged: also merged); a merged catalog stays merged. */
int idx_rseen_mark(struct idx *x, const char *name, bool merged);

/*
 * The base: per path, the remote's entry as of the last sync (its catalog type, stamp and
 * signature). idx_rbase_get: 1, 0 when absent (or its row is damaged), -errno.
 */
int idx_rbase_get(struct idx *x, const char *path, uint8_t *ret_type, int64_t *ret_stamp,
		  uint8_t ret_sig[16]);
int idx_rbase_put(struct idx *x, const char *path, uint8_t type, int64_t stamp,
		  const uint8_t sig[16]);
/* cb for every row of the base (rows with an empty, overlong or damaged key are left out); the
 * path lives during the call. A non-zero return stops and is returned. */
int idx_rbase_each(struct idx *x,
		   int (*cb)(const char *path, uint8_t type, int64_t stamp, const uint8_t sig[16],
			     void *data),
		   void *data);

/* Mark remote pack id condemned by gc: its chunks count as not on the remote. */
int idx_rpack_condemn(struct idx *x, uint64_t id);
/* Name and size of remote pack id: 1, 0 when unknown, -EUCLEAN for a damaged row, -errno. */
int idx_rpack_get(struct idx *x, uint64_t id, uint8_t ret_name[IDX_RPACK_NAME_SIZE],
		  uint64_t *ret_size);

/* cb for every entry of the access trace (ino opened at stamp); non-zero stops and is returned. */
int idx_trace_each(struct idx *x, int (*cb)(uint64_t ino, int64_t stamp, void *data), void *data);
/* Drop the trace entries stamped at or before upto (they were pushed). */
int idx_trace_forget(struct idx *x, int64_t upto);

/*
 * Every extent of ino, as idx_get_extents, except that a chunk whose remote pack is condemned has
 * no remote location (rpack 0): what push must upload anew. *ret is malloc'ed, freed by the
 * caller.
 */
int idx_get_extents_pushable(struct idx *x, uint64_t ino, struct idx_extent **ret, size_t *ret_n);
/*
 * Inodes with data only on the remote (*ret_inos malloc'ed, freed by the caller) and the raw bytes
 * of the remote-only chunks in use (0 when that sum cannot be read). 0 or -errno.
 */
int idx_remote_only_files(struct idx *x, uint64_t **ret_inos, size_t *ret_n, uint64_t *ret_bytes);

/* == The cold load (idx_bulk.c): filling an empty store from merged catalogs in bulk. == */

/*
 * A bulk load writes rows in batches inside the caller's transaction (idx_begin), for a store whose
 * namespace holds only the root. The caller assigns inode numbers from *ret_first_ino up (and
 * gives consistent parents and link counts); dentry and chunk ids are assigned here. Strings and
 * signatures passed in are kept by pointer: they must live until idx_bulk_end. chunks.refs is
 * kept right here: each chunk row is written at the end with the number of extents naming it,
 * and an extent may name only a chunk of this load (-EINVAL otherwise). Row functions return 0
 * or the first failure so far; *ret is freed by idx_bulk_end.
 */
struct idx_bulk;
int idx_bulk_begin(struct idx *x, struct idx_bulk **ret, uint64_t *ret_first_ino);
/* Every field of in, in->ino included. */
int idx_bulk_inode(struct idx_bulk *b, const struct idx_inode *in);
int idx_bulk_dentry(struct idx_bulk *b, uint64_t parent, const char *name, uint64_t ino);
int idx_bulk_symlink(struct idx_bulk *b, uint64_t ino, const char *target);
/* A chunk only on the remote, at rpack/rloc; *ret_id is its id, for idx_bulk_extent. */
int idx_bulk_chunk(struct idx_bulk *b, const chunk_key *key, const chunk_digest *digest,
		   uint32_t raw_len, uint64_t rpack, const struct pack_loc *rloc, uint64_t *ret_id);
/* An extent of ino; chunk 0 for a hole. */
int idx_bulk_extent(struct idx_bulk *b, uint64_t ino, uint64_t off, uint32_t len, uint64_t chunk);
/* A row of the base (idx_rbase_put), replacing one for the same path. */
int idx_bulk_rbase(struct idx_bulk *b, const char *path, uint8_t type, int64_t stamp,
		   const uint8_t sig[16]);
/* Write what is pending (the chunk rows with their counts) and free b; the first failure of the
 * load, or 0. Accepts NULL. After a failure the caller rolls the transaction back. */
int idx_bulk_end(struct idx_bulk *b);

/* == Checks and maintenance (idx_check.c): fsck's queries and repairs, gc's pack queries. == */
