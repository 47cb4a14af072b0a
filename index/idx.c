/* SPDX-License-Identifier: MIT */
/*
 * The SQLite index. See idx.h for the invariants; docs/format.md for the schema.
 *
 * Every statement is prepared once and cached in x->stmt[]. Times are nanoseconds since the
 * epoch in 64-bit integers, names are BLOBs (file names need not be UTF-8), chunk keys and
 * digests are BLOBs of 16 and 32 bytes. Reference counts are adjusted in the same statement
 * sequence that changes extents, inside the caller's transaction.
 */
#include "idx.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "idx_priv.h"
#include "util.h"

enum stmt_id {
	S_GET_INODE,
	S_PUT_INODE,
	S_NEW_INODE,
	S_DEL_INODE,
	S_DEL_XATTRS,
	S_DEL_TARGET,
	S_UNREF_EXTENTS,
	S_DEL_EXTENTS,
	S_LOOKUP,
	S_ADD_DENTRY,
	S_DEL_DENTRY,
	S_SET_DENTRY,
	S_DIR_EMPTY,
	S_LIST_DIR,
	S_SET_TARGET,
	S_GET_TARGET,
	S_GET_EXTENTS,
	S_ADD_EXTENT,
	S_REF_CHUNK,
	S_FIND_CHUNK,
	S_ADD_REFS,
	S_CHUNK_LOC,
	S_TOUCH_USED,
	S_ADD_CHUNK,
	S_ADD_PACK,
	S_SET_PACK_SIZE,
	S_GET_XATTR,
	S_INS_XATTR,
	S_UPD_XATTR,
	S_LIST_XATTR,
	S_DEL_XATTR,
	S_META_GET,
	S_META_SET,
	S_SET_LOCAL,
	S_RPACK_NAME,
	S_RPACK_FIND,
	S_RPACK_ADD,
	S_ADD_RCHUNK,
	S_SET_REMOTE,
	S_TRACE_ADD,
	S_PACK_EXISTS,
	S_NAME_OF,
	S_COUNT
};

static const char *const stmt_sql[S_COUNT] = {
	[S_GET_INODE] = "SELECT parent, mode, uid, gid, nlink, size, rdev, atime, mtime, ctime "
			"FROM inodes WHERE ino = ?1",
	[S_PUT_INODE] = "UPDATE inodes SET parent = ?2, mode = ?3, uid = ?4, gid = ?5, nlink = ?6, "
			"size = ?7, rdev = ?8, atime = ?9, mtime = ?10, ctime = ?11 WHERE ino = ?1",
	[S_NEW_INODE] = "INSERT INTO inodes (parent, mode, uid, gid, nlink, size, rdev, atime, "
			"mtime, ctime) VALUES (?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
	[S_DEL_INODE] = "DELETE FROM inodes WHERE ino = ?1",
	[S_DEL_XATTRS] = "DELETE FROM xattrs WHERE ino = ?1",
	[S_DEL_TARGET] = "DELETE FROM symlinks WHERE ino = ?1",
	[S_UNREF_EXTENTS] = "UPDATE chunks SET refs = refs - (SELECT count(*) FROM extents e "
			    "WHERE e.ino = ?1 AND e.chunk = chunks.id) "
			    "WHERE id IN (SELECT chunk FROM extents WHERE ino = ?1 AND chunk != 0)",
	[S_DEL_EXTENTS] = "DELETE FROM extents WHERE ino = ?1",
	[S_NAME_OF] = "SELECT parent, name FROM dentries WHERE ino = ?1 LIMIT 1",
	[S_LOOKUP] = "SELECT ino FROM dentries WHERE parent = ?1 AND name = ?2",
	[S_ADD_DENTRY] = "INSERT INTO dentries (parent, name, ino) VALUES (?1, ?2, ?3)",
	[S_DEL_DENTRY] = "DELETE FROM dentries WHERE parent = ?1 AND name = ?2",
	[S_SET_DENTRY] = "UPDATE dentries SET ino = ?3 WHERE parent = ?1 AND name = ?2",
	[S_DIR_EMPTY] = "SELECT 1 FROM dentries WHERE parent = ?1 LIMIT 1",
	[S_LIST_DIR] = "SELECT d.name, i.ino, i.parent, i.mode, i.uid, i.gid, i.nlink, i.size, "
		       "i.rdev, i.atime, i.mtime, i.ctime, d.id FROM dentries d JOIN inodes i "
		       "ON i.ino = d.ino WHERE d.parent = ?1 AND d.id > ?2 ORDER BY d.id",
	[S_SET_TARGET] = "INSERT OR REPLACE INTO symlinks (ino, target) VALUES (?1, ?2)",
	[S_GET_TARGET] = "SELECT target FROM symlinks WHERE ino = ?1",
	[S_GET_EXTENTS] = "SELECT e.off, e.len, e.chunk, c.key, c.pack, c.off, c.stored_len, "
			  "c.flags, c.digest, c.rpack, c.roff, c.rstored_len, c.rflags "
			  "FROM extents e LEFT JOIN chunks c ON c.id = e.chunk "
			  "WHERE e.ino = ?1 ORDER BY e.off",
	[S_ADD_EXTENT] = "INSERT INTO extents (ino, off, len, chunk) VALUES (?1, ?2, ?3, ?4)",
	[S_REF_CHUNK] = "UPDATE chunks SET refs = refs + 1 WHERE id = ?1",
	[S_FIND_CHUNK] =
		"SELECT id, digest, pack, off, stored_len, flags FROM chunks WHERE key = ?1",
	[S_CHUNK_LOC] = "SELECT pack, off, stored_len, flags FROM chunks WHERE id = ?1",
	[S_TOUCH_USED] = "UPDATE inodes SET used = ?2 WHERE ino = ?1 AND used < ?2 - 3600",
	[S_ADD_REFS] = "UPDATE chunks SET refs = refs + ?2 WHERE id = ?1",
	[S_ADD_CHUNK] = "INSERT INTO chunks (key, digest, raw_len, pack, off, stored_len, flags, "
			"refs) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0)",
	[S_ADD_PACK] = "INSERT INTO packs (size, created) VALUES (0, ?1)",
	[S_SET_PACK_SIZE] = "UPDATE packs SET size = ?2 WHERE id = ?1",
	[S_GET_XATTR] = "SELECT value FROM xattrs WHERE ino = ?1 AND name = ?2",
	[S_INS_XATTR] = "INSERT INTO xattrs (ino, name, value) VALUES (?1, ?2, ?3)",
	[S_UPD_XATTR] = "UPDATE xattrs SET value = ?3 WHERE ino = ?1 AND name = ?2",
	[S_LIST_XATTR] = "SELECT name FROM xattrs WHERE ino = ?1 ORDER BY name",
	[S_DEL_XATTR] = "DELETE FROM xattrs WHERE ino = ?1 AND name = ?2",
	[S_META_GET] = "SELECT value FROM meta WHERE key = ?1",
	[S_META_SET] = "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
	/* The key guards against an id reused after gc deleted the chunk meanwhile. */
	[S_SET_LOCAL] = "UPDATE chunks SET pack = ?2, off = ?3, stored_len = ?4, flags = ?5 "
			"WHERE id = ?1 AND key = ?6",
	[S_RPACK_NAME] = "SELECT name FROM rpacks WHERE id = ?1",
	[S_RPACK_FIND] = "SELECT id FROM rpacks WHERE name = ?1",
	[S_RPACK_ADD] = "INSERT INTO rpacks (name, size) VALUES (?1, ?2)",
	[S_ADD_RCHUNK] = "INSERT INTO chunks (key, digest, raw_len, pack, off, stored_len, flags, "
			 "refs, rpack, roff, rstored_len, rflags) "
			 "VALUES (?1, ?2, ?3, 0, 0, 0, 0, 0, ?4, ?5, ?6, ?7)",
	/* A location on the remote is recorded unless one that is not condemned already is. */
	[S_SET_REMOTE] = "UPDATE chunks SET rpack = ?3, roff = ?4, rstored_len = ?5, rflags = ?6 "
			 "WHERE key = ?1 AND digest = ?2 AND (rpack = 0 OR rpack IN "
			 "(SELECT id FROM rpacks WHERE condemned != 0))",
	[S_TRACE_ADD] = "INSERT OR IGNORE INTO rtrace (ino, stamp) VALUES (?1, ?2)",
	[S_PACK_EXISTS] = "SELECT 1 FROM packs WHERE id = ?1",
};

static const char schema_sql[] =
	"CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
	"CREATE TABLE inodes ("
	"  ino INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  parent INTEGER NOT NULL, mode INTEGER NOT NULL, uid INTEGER NOT NULL,"
	"  gid INTEGER NOT NULL, nlink INTEGER NOT NULL, size INTEGER NOT NULL,"
	"  rdev INTEGER NOT NULL, atime INTEGER NOT NULL, mtime INTEGER NOT NULL,"
	"  ctime INTEGER NOT NULL, used INTEGER NOT NULL DEFAULT 0);"
	"CREATE INDEX inodes_orphans ON inodes (nlink) WHERE nlink = 0;"
	"CREATE TABLE dentries (id INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  parent INTEGER NOT NULL, name BLOB NOT NULL, ino INTEGER NOT NULL);"
	"CREATE UNIQUE INDEX dentries_name ON dentries (parent, name);"
	"CREATE INDEX dentries_dir ON dentries (parent);"
	"CREATE INDEX dentries_ino ON dentries (ino);"
	"CREATE TABLE symlinks (ino INTEGER PRIMARY KEY, target BLOB NOT NULL);"
	"CREATE TABLE xattrs (ino INTEGER NOT NULL, name BLOB NOT NULL, value BLOB NOT NULL,"
	"  PRIMARY KEY (ino, name)) WITHOUT ROWID;"
	"CREATE TABLE extents (ino INTEGER NOT NULL, off INTEGER NOT NULL, len INTEGER NOT NULL,"
	"  chunk INTEGER NOT NULL, PRIMARY KEY (ino, off)) WITHOUT ROWID;"
	"CREATE INDEX extents_chunk ON extents (chunk) WHERE chunk != 0;"
	"CREATE TABLE chunks (id INTEGER PRIMARY KEY, key BLOB NOT NULL, digest BLOB NOT NULL,"
	"  raw_len INTEGER NOT NULL, pack INTEGER NOT NULL, off INTEGER NOT NULL,"
	"  stored_len INTEGER NOT NULL, flags INTEGER NOT NULL, refs INTEGER NOT NULL);"
	"CREATE INDEX chunks_key ON chunks (key);"
	"CREATE INDEX chunks_pack ON chunks (pack, off);"
	"CREATE TABLE packs (id INTEGER PRIMARY KEY AUTOINCREMENT, size INTEGER NOT NULL,"
	"  created INTEGER NOT NULL);";

/*
 * Version 2 adds what a remote needs: where each chunk lives on the remote (rpack 0: not there;
 * pack 0: not here), the remote's packs, the catalogs already seen, and the base: the remote's
 * view of each path at the last sync, against which local changes are found.
 */
static const char schema_v2_sql[] =
	"ALTER TABLE chunks ADD COLUMN rpack INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE chunks ADD COLUMN roff INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE chunks ADD COLUMN rstored_len INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE chunks ADD COLUMN rflags INTEGER NOT NULL DEFAULT 0;"
	"CREATE INDEX chunks_rpack ON chunks (rpack) WHERE rpack != 0;"
	"CREATE TABLE rpacks (id INTEGER PRIMARY KEY, name BLOB NOT NULL UNIQUE,"
	"  size INTEGER NOT NULL, condemned INTEGER NOT NULL DEFAULT 0);"
	"CREATE TABLE rseen (name TEXT PRIMARY KEY, merged INTEGER NOT NULL) WITHOUT ROWID;"
	"CREATE TABLE rbase (path BLOB PRIMARY KEY, type INTEGER NOT NULL,"
	"  stamp INTEGER NOT NULL, sig BLOB NOT NULL) WITHOUT ROWID;"
	"CREATE TABLE rtrace (ino INTEGER PRIMARY KEY, stamp INTEGER NOT NULL);"
	/* Whole, not partial: "WHERE e.chunk = c.id" cannot use an index limited to chunk != 0,
	 * and the reference recount after a crash then scanned every extent per chunk. */
	"DROP INDEX extents_chunk;"
	"CREATE INDEX extents_chunk ON extents (chunk);"
	"UPDATE meta SET value = '2' WHERE key = 'schema_version';";

/*
 * Inode rows last read, direct-mapped by number: a cp -a reads each new inode's row about ten
 * times (create, the parent's mtime, setattr, the ACL, flush, ...). Only the store's lock
 * holder caches (idx_cache_inodes, from store_open), so every change to inodes is its own, and
 * SQLite's update hook drops a row's slot whenever a statement inserts, updates or deletes it.
 * A rollback puts back rows the hook saw change, so it empties the cache.
 */
#define INODE_CACHE_SLOTS 4096

struct inode_slot {
	bool valid;
	struct idx_inode in;
};

struct idx {
	sqlite3 *db;
	sqlite3_stmt *stmt[S_COUNT];
	struct idx_stmt_cache extra; /* statements of the other idx_*.c files (idx_priv.h) */
	bool in_txn;
	bool reader; /* opened by idx_open_reader: read-only, holds one snapshot */
	char *wal_path;
	struct inode_slot *icache; /* INODE_CACHE_SLOTS; NULL: no cache (idx_cache_inodes) */
};

static struct inode_slot *icache_slot(struct idx *x, uint64_t ino)
{
	return &x->icache[ino & (INODE_CACHE_SLOTS - 1)];
}

/* The valid slot holding ino, or NULL. */
static struct inode_slot *icache_find(struct idx *x, uint64_t ino)
{
	struct inode_slot *sl;

	if (!x->icache)
		return NULL;
	sl = icache_slot(x, ino);
	return sl->valid && sl->in.ino == ino ? sl : NULL;
}

static void icache_clear(struct idx *x)
{
	if (x->icache)
		memset(x->icache, 0, INODE_CACHE_SLOTS * sizeof(*x->icache));
}

/* Remember a row just written, as a read of it would return it. */
static void icache_put(struct idx *x, const struct idx_inode *in)
{
	struct inode_slot *sl;

	if (!x->icache)
		return;
	sl = icache_slot(x, in->ino);
	sl->in = *in;
	sl->valid = true;
}

static void icache_row_changed(void *arg, int op, const char *db, const char *table,
			       sqlite3_int64 rowid)
{
	struct inode_slot *sl;

	(void)op;
	if (strcmp(table, "inodes") || strcmp(db, "main"))
		return;
	sl = icache_find(arg, (uint64_t)rowid);
	if (sl)
		sl->valid = false;
}

static void icache_rolled_back(void *arg)
{
	icache_clear(arg);
}

int idx_errno(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_ROW:
	case SQLITE_DONE:
		return 0;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_READONLY:
		return -EROFS;
	case SQLITE_PERM:
	case SQLITE_AUTH:
		return -EACCES;
	case SQLITE_CONSTRAINT:
		return -EEXIST;
	case SQLITE_TOOBIG:
		return -E2BIG;
	case SQLITE_CANTOPEN:
		return -ENOENT;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		return -EUCLEAN;
	default:
		return -EIO;
	}
}

static int query_u64s(struct idx *x, const char *sql, uint64_t *out, int n);

/* Fetch a cached statement, reset and with bindings cleared. */
static sqlite3_stmt *st(struct idx *x, enum stmt_id id)
{
	sqlite3_stmt *s = x->stmt[id];

	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return s;
}

/* Step a statement that returns no rows. */
static int step_done(sqlite3_stmt *s)
{
	int rc = sqlite3_step(s);

	sqlite3_reset(s);
	return rc == SQLITE_DONE ? 0 : idx_errno(rc);
}

int idx_exec(struct idx *x, const char *sql)
{
	int rc = sqlite3_exec(x->db, sql, NULL, NULL, NULL);

	return rc == SQLITE_OK ? 0 : idx_errno(rc);
}

sqlite3 *idx_sqlite(struct idx *x)
{
	return x->db;
}

sqlite3_stmt *idx_stmt(struct idx *x, const char *sql)
{
	struct idx_stmt_cache *c = &x->extra;
	sqlite3_stmt *s;

	for (size_t i = 0; i < c->n; i++) {
		if (c->sql[i] == sql) {
			s = c->stmt[i];
			sqlite3_reset(s);
			sqlite3_clear_bindings(s);
			return s;
		}
	}
	if (c->n == IDX_STMT_CACHE_MAX)
		return NULL;
	if (sqlite3_prepare_v3(x->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, NULL) != SQLITE_OK) {
		log_debug("prepare failed: %s: %s", sql, sqlite3_errmsg(x->db));
		return NULL;
	}
	c->sql[c->n] = sql;
	c->stmt[c->n++] = s;
	return s;
}

int idx_step_done(sqlite3_stmt *s)
{
	int rc = sqlite3_step(s);

	sqlite3_reset(s);
	return rc == SQLITE_DONE ? 0 : idx_errno(rc);
}

void idx_bind_name(sqlite3_stmt *s, int i, const char *name)
{
	sqlite3_bind_blob(s, i, name, (int)strlen(name), SQLITE_STATIC);
}

static void bind_name(sqlite3_stmt *s, int i, const char *name)
{
	sqlite3_bind_blob(s, i, name, (int)strlen(name), SQLITE_STATIC);
}

static int create_schema(struct idx *x)
{
	int r;

	r = idx_exec(x, "BEGIN IMMEDIATE");
	if (r < 0)
		return r;
	r = idx_exec(x, schema_sql);
	if (r < 0)
		goto out_rollback;
	r = idx_exec(x, "INSERT INTO meta (key, value) VALUES ('schema_version', '1')");
	if (r < 0)
		goto out_rollback;
	r = idx_exec(x, schema_v2_sql);
	if (r < 0)
		goto out_rollback;
	return idx_exec(x, "COMMIT");
out_rollback:
	idx_exec(x, "ROLLBACK");
	return r;
}

/* A version 1 store gains the remote tables; nothing else changes. */
static int upgrade_v1(struct idx *x)
{
	int r = idx_exec(x, "BEGIN IMMEDIATE");

	if (r < 0)
		return r;
	r = idx_exec(x, schema_v2_sql);
	if (r < 0) {
		idx_exec(x, "ROLLBACK");
		return r;
	}
	return idx_exec(x, "COMMIT");
}

static int check_schema(struct idx *x, bool create)
{
	sqlite3_stmt *s;
	int rc, version = -1;

	rc = sqlite3_prepare_v2(x->db, "SELECT value FROM meta WHERE key = 'schema_version'", -1,
				&s, NULL);
	if (rc != SQLITE_OK) {
		/* No meta table: a new, empty database. */
		if (!create)
			return -ENOENT;
		return create_schema(x);
	}
	if (sqlite3_step(s) == SQLITE_ROW)
		version = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	if (version > IDX_SCHEMA_VERSION)
		return -EPROTO;
	if (version == 1)
		return upgrade_v1(x);
	if (version != IDX_SCHEMA_VERSION)
		return -EUCLEAN;
	return 0;
}

/*
 * Tables added within schema 2, which older binaries of the same schema neither need nor touch
 * (docs/format.md): created when missing, so that stores move both ways between versions.
 */
static const char schema_v2_extra_sql[] = "CREATE TABLE IF NOT EXISTS rbad (name TEXT PRIMARY KEY, "
					  "at INTEGER NOT NULL) WITHOUT ROWID;";

static int prepare_all(struct idx *x)
{
	for (int i = 0; i < S_COUNT; i++) {
		int rc = sqlite3_prepare_v3(x->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
					    &x->stmt[i], NULL);

		if (rc != SQLITE_OK) {
			log_debug("prepare failed: %s: %s", stmt_sql[i], sqlite3_errmsg(x->db));
			return idx_errno(rc);
		}
	}
	return 0;
}

int idx_open(const char *path, bool create, struct idx **ret)
{
	struct idx *x;
	int rc, r, flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;

	if (create)
		flags |= SQLITE_OPEN_CREATE;
	x = calloc(1, sizeof(*x));
	if (!x)
		return -ENOMEM;
	if (asprintf(&x->wal_path, "%s-wal", path) < 0) {
		free(x);
		return -ENOMEM;
	}
	rc = sqlite3_open_v2(path, &x->db, flags, NULL);
	if (rc != SQLITE_OK) {
		r = idx_errno(rc);
		goto out_close;
	}
	sqlite3_extended_result_codes(x->db, 0);
	sqlite3_busy_timeout(x->db, 10000);
	/*
	 * WAL with synchronous=NORMAL: a commit is atomic at once and durable once the WAL is
	 * synced, which vfs does itself for fsync (see docs/architecture.md).
	 */
	r = idx_exec(x, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
			"PRAGMA cache_size=-16384; PRAGMA temp_store=MEMORY; "
			"PRAGMA foreign_keys=OFF");
	if (r == 0)
		r = idx_errno(sqlite3_wal_autocheckpoint(x->db, IDX_CHECKPOINT_FRAMES));
	if (r < 0)
		goto out_close;
	r = check_schema(x, create);
	if (r == 0)
		r = idx_exec(x, schema_v2_extra_sql);
	if (r < 0)
		goto out_close;
	r = prepare_all(x);
	if (r < 0)
		goto out_close;
	*ret = x;
	return 0;
out_close:
	idx_close(x);
	return r;
}

int idx_cache_inodes(struct idx *x)
{
	if (x->icache)
		return 0;
	x->icache = calloc(INODE_CACHE_SLOTS, sizeof(*x->icache));
	if (!x->icache)
		return -ENOMEM;
	sqlite3_update_hook(x->db, icache_row_changed, x);
	sqlite3_rollback_hook(x->db, icache_rolled_back, x);
	return 0;
}

void idx_close(struct idx *x)
{
	if (!x)
		return;
	if (x->in_txn)
		idx_exec(x, "ROLLBACK");
	for (int i = 0; i < S_COUNT; i++)
		sqlite3_finalize(x->stmt[i]);
	for (size_t i = 0; i < x->extra.n; i++)
		sqlite3_finalize(x->extra.stmt[i]);
	sqlite3_close(x->db);
	free(x->wal_path);
	free(x->icache);
	free(x);
}

int idx_open_reader(const char *path, struct idx **ret)
{
	struct idx *x;
	int rc, r;

	x = calloc(1, sizeof(*x));
	if (!x)
		return -ENOMEM;
	x->reader = true;
	rc = sqlite3_open_v2(path, &x->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		r = idx_errno(rc);
		goto out_close;
	}
	sqlite3_extended_result_codes(x->db, 0);
	sqlite3_busy_timeout(x->db, 10000);
	/* A read transaction takes its snapshot at the first read: make that read now. */
	r = idx_exec(x, "BEGIN; SELECT count(*) FROM meta");
	if (r < 0)
		goto out_close;
	r = prepare_all(x);
	if (r < 0)
		goto out_close;
	*ret = x;
	return 0;
out_close:
	idx_close(x);
	return r;
}

int idx_begin(struct idx *x)
{
	int r;

	if (x->in_txn)
		return 0;
	r = idx_exec(x, "BEGIN IMMEDIATE");
	if (r == 0)
		x->in_txn = true;
	return r;
}

int idx_commit(struct idx *x)
{
	int r;

	if (!x->in_txn)
		return 0;
	r = idx_exec(x, "COMMIT");
	if (r == 0)
		x->in_txn = false;
	return r;
}

int idx_rollback(struct idx *x)
{
	int r;

	if (!x->in_txn)
		return 0;
	r = idx_exec(x, "ROLLBACK");
	x->in_txn = false;
	return r;
}

int idx_op_begin(struct idx *x)
{
	int r = idx_begin(x);

	return r < 0 ? r : idx_exec(x, "SAVEPOINT op");
}

void idx_op_end(struct idx *x, bool failed)
{
	if (failed) {
		idx_exec(x, "ROLLBACK TO op");
		icache_clear(x); /* the rollback hook sees only whole transactions */
	}
	idx_exec(x, "RELEASE op");
}

bool idx_in_txn(const struct idx *x)
{
	return x->in_txn;
}

const char *idx_wal_path(const struct idx *x)
{
	return x->wal_path;
}

/* ---- checkpoints deferred to a connection of their own ---- */

struct idx_ckpt {
	sqlite3 *db;        /* mu */
	pthread_mutex_t mu; /* one checkpoint at a time */
	int frames;         /* atomic, written by x's commits: the WAL's frames after the last */
	int frames_at_last; /* atomic, written under mu: frames when the last checkpoint began */
	bool short_last;    /* atomic, written under mu: the last one left frames behind */
};

/* x's WAL hook, in place of SQLite's automatic checkpoint: only count. */
static int ckpt_count(void *data, sqlite3 *db, const char *name, int nframes)
{
	struct idx_ckpt *c = data;

	(void)db;
	(void)name;
	__atomic_store_n(&c->frames, nframes, __ATOMIC_RELAXED);
	return SQLITE_OK;
}

int idx_defer_checkpoints(struct idx *x, struct idx_ckpt **ret)
{
	size_t len = strlen(x->wal_path) - strlen("-wal");
	struct idx_ckpt *c;
	char *path;
	int rc, r;

	path = strndup(x->wal_path, len);
	c = calloc(1, sizeof(*c));
	if (!path || !c) {
		free(path);
		free(c);
		return -ENOMEM;
	}
	pthread_mutex_init(&c->mu, NULL);
	rc = sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
	free(path);
	r = idx_errno(rc);
	/* A checkpoint syncs the WAL before copying it and the database after, as x's would. */
	if (r == 0)
		r = idx_errno(sqlite3_exec(c->db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL));
	if (r < 0) {
		sqlite3_close(c->db);
		pthread_mutex_destroy(&c->mu);
		free(c);
		return r;
	}
	sqlite3_wal_hook(x->db, ckpt_count, c);
	*ret = c;
	return 0;
}

bool idx_checkpoint_due(struct idx_ckpt *c)
{
	int frames;

	if (!c)
		return false;
	frames = __atomic_load_n(&c->frames, __ATOMIC_RELAXED);
	/* A checkpoint cut short (a reader, or commits alongside) is retried even with no new
	 * frame: the WAL starts over only once one copied all of it. */
	return frames >= IDX_CHECKPOINT_FRAMES &&
	       (frames != __atomic_load_n(&c->frames_at_last, __ATOMIC_RELAXED) ||
		__atomic_load_n(&c->short_last, __ATOMIC_RELAXED));
}

int idx_checkpoint(struct idx_ckpt *c)
{
	int rc, frames, nlog = 0, ncopied = 0;

	if (!c || pthread_mutex_trylock(&c->mu) != 0)
		return 0; /* a checkpoint is under way: it copies what this one would */
	frames = __atomic_load_n(&c->frames, __ATOMIC_RELAXED);
	/* PASSIVE: copies what no reader still needs, waits for nobody and blocks no writer. */
	rc = sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &nlog, &ncopied);
	__atomic_store_n(&c->frames_at_last, frames, __ATOMIC_RELAXED);
	__atomic_store_n(&c->short_last, rc != SQLITE_OK || ncopied < nlog, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&c->mu);
	return idx_errno(rc);
}

void idx_ckpt_close(struct idx *x, struct idx_ckpt *c)
{
	if (!c)
		return;
	sqlite3_wal_autocheckpoint(x->db, IDX_CHECKPOINT_FRAMES);
	sqlite3_close(c->db);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

int idx_meta_get(struct idx *x, const char *key, char *buf, size_t len)
{
	sqlite3_stmt *s = st(x, S_META_GET);
	int rc;

	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		snprintf(buf, len, "%s", (const char *)sqlite3_column_text(s, 0));
		sqlite3_reset(s);
		return 1;
	}
	sqlite3_reset(s);
	return rc == SQLITE_DONE ? 0 : idx_errno(rc);
}

int idx_meta_set(struct idx *x, const char *key, const char *value)
{
	sqlite3_stmt *s = st(x, S_META_SET);

	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, value, -1, SQLITE_STATIC);
	return step_done(s);
}

static void read_inode_cols(sqlite3_stmt *s, int c, struct idx_inode *in)
{
	in->parent = (uint64_t)sqlite3_column_int64(s, c + 0);
	in->mode = (uint32_t)sqlite3_column_int64(s, c + 1);
	in->uid = (uint32_t)sqlite3_column_int64(s, c + 2);
	in->gid = (uint32_t)sqlite3_column_int64(s, c + 3);
	in->nlink = (uint32_t)sqlite3_column_int64(s, c + 4);
	in->size = (uint64_t)sqlite3_column_int64(s, c + 5);
	in->rdev = (uint64_t)sqlite3_column_int64(s, c + 6);
	in->atime = sqlite3_column_int64(s, c + 7);
	in->mtime = sqlite3_column_int64(s, c + 8);
	in->ctime = sqlite3_column_int64(s, c + 9);
}

int idx_get_inode(struct idx *x, uint64_t ino, struct idx_inode *ret)
{
	struct inode_slot *sl = icache_find(x, ino);
	sqlite3_stmt *s;
	int rc;

	if (sl) {
		*ret = sl->in;
		return 1;
	}
	s = st(x, S_GET_INODE);
	sqlite3_bind_int64(s, 1, (sqlite3_int64)ino);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		read_inode_cols(s, 0, ret);
		ret->ino = ino;
		sqlite3_reset(s);
		icache_put(x, ret);
		return 1;
	}
	sqlite3_reset(s);
	return rc == SQLITE_DONE ? 0 : idx_errno(rc);
}

static void bind_inode(sqlite3_stmt *s, const struct idx_inode *in)
{
	sqlite3_bind_int64(s, 2, (sqlite3_int64)in->parent);
	sqlite3_bind_int64(s, 3, in->mode);
	sqlite3_bind_int64(s, 4, in->uid);
	sqlite3_bind_int64(s, 5, in->gid);
	sqlite3_bind_int64(s, 6, in->nlink);
	sqlite3_bind_int64(s, 7, (sqlite3_int64)in->size);
	sqlite3_bind_int64(s, 8, (sqlite3_int64)in->rdev);
	sqlite3_bind_int64(s, 9, in->atime);
	sqlite3_bind_int64(s, 10, in->mtime);
	sqlite3_bind_int64(s, 11, in->ctime);
}

int idx_put_inode(struct idx *x, const struct idx_inode *in)
{
	sqlite3_stmt *s = st(x, S_PUT_INODE);
	int r;

	sqlite3_bind_int64(s, 1, (sqlite3_int64)in->ino);
	bind_inode(s, in);
	r = step_done(s);
	if (r == 0 && sqlite3_changes(x->db) == 1)
		icache_put(x, in);
	return r;
}

int idx_new_inode(struct idx *x, const struct idx_inode *in, uint64_t *ret_ino)
{
	sqlite3_stmt *s = st(x, S_NEW_INODE);
	int r;

	bind_inode(s, in);
	r = step_done(s);
	if (r == 0) {
		struct idx_inode made = *in;

		made.ino = *ret_ino = (uint64_t)sqlite3_last_insert_rowid(x->db);
		icache_put(x, &made);
	}
	return r;
}

static int by_ino(struct idx *x, enum stmt_id id, uint64_t ino)
{
	sqlite3_stmt *s = st(x, id);

	sqlite3_bind_int64(s, 1, (sqlite3_int64)ino);
	return step_done(s);
}

int idx_delete_inode(struct idx *x, uint64_t ino)
{
	int r;

	r = idx_set_extents(x, ino, NULL, 0);
	if (r < 0)
		return r;
	r = by_ino(x, S_DEL_XATTRS, ino);
	if (r < 0)
		return r;
	r = by_ino(x, S_DEL_TARGET, ino);
	if (r < 0)
		return r;
	return by_ino(x, S_DEL_INODE, ino);
}

int idx_lookup(struct idx *x, uint64_t parent, const char *name, uint64_t *ret_ino)
{
	sqlite3_stmt *s = st(x, S_LOOKUP);
	int rc;

	sqlite3_bind_int64(s, 1, (sqlite3_int64)parent);
	bind_name(s, 2, name);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*ret_ino = (uint64_t)sqlite3_column_int64(s, 0);
		sqlite3_reset(s);
		return 1;
	}
	sqlite3_reset(s);
	return rc == SQLITE_DONE ? 0 : idx_errno(rc);
}

static int dentry_op(struct idx *x, enum stmt_id id, uint64_t parent, const char *name,
		     uint64_t ino)
{
	sqlite3_stmt *s = st(x, id);

	sqlite3_bind_int64(s, 1, (sqlite3_int64)parent);
	bind_name(s, 2, name);
	if (id != S_DEL_DENTRY)
		sqlite3_bind_int64(s, 3, (sqlite3_int64)ino);
	return step_done(s);
}

int idx_path(struct idx *x, uint64_t ino, char *buf, size_t len)
{
	char tmp[IDX_PATH_MAX + 1];
	size_t pos = sizeof(tmp) - 1;
	sqlite3_stmt *s = st(x, S_NAME_OF);

	tmp[pos] = '\0';
	/* Each step adds at least two bytes ("x/"), so the length bound also ends any cycle. */
	while (ino != IDX_ROOT_INO) {
		int nlen;

		sqlite3_bind_int64(s, 1, (sqlite3_int64)ino);
		if (sqlite3_step(s) != SQLITE_ROW) {
			sqlite3_reset(s);
			return -ENOENT;
		}
		nlen = sqlite3_column_bytes(s, 1);
		if (nlen <= 0 || (size_t)nlen + (tmp[pos] ? 1 : 0) > pos) {
			sqlite3_reset(s);
			return -ENAMETOOLONG;
		}
		if (tmp[pos])
			tmp[--pos] = '/';
		pos -= (size_t)nlen;
		memcpy(tmp + pos, sqlite3_column_blob(s, 1), (size_t)nlen);
		ino = (uint64_t)sqlite3_column_int64(s, 0);
		sqlite3_reset(s);
	}
	if (sizeof(tmp) - pos > len)
		return -ENAMETOOLONG;
	memcpy(buf, tmp + pos, sizeof(tmp) - pos);
	return 0;
}

int idx_add_dentry(struct idx *x, uint64_t parent, const char *name, uint64_t ino)
{
	return dentry_op(x, S_ADD_DENTRY, parent, name, ino);
}

int idx_del_dentry(struct idx *x, uint64_t parent, const char *name)
{
	return dentry_op(x, S_DEL_DENTRY, parent, name, 0);
}

int idx_set_dentry(struct idx *x, uint64_t parent, const char *name, uint64_t ino)
{
	return dentry_op(x, S_SET_DENTRY, parent, name, ino);
}

int idx_dir_is_empty(struct idx *x, uint64_t ino)
{
	sqlite3_stmt *s = st(x, S_DIR_EMPTY);
	int rc;

	sqlite3_bind_int64(s, 1, (sqlite3_int64)ino);
	rc = sqlite3_step(s);
	sqlite3_reset(s);
	if (rc == SQLITE_ROW)
		return 0;
	return rc == SQLITE_DONE ? 1 : idx_errno(rc);
}

int idx_list_dir(struct idx *x, uint64_t ino, uint64_t after,
		 int (*cb)(const char *name, const struct idx_inode *in, uint64_t cookie,
			   void *data),
		 void *data)
{
	sqlite3_stmt *s = st(x, S_LIST_DIR);
	char name[1024];
	int rc, r = 0;

	sqlite3_bind_int64(s, 1, (sqlite3_int64)ino);
	sqlite3_bind_int64(s, 2, (sqlite3_int64)after);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		struct idx_inode in;
		int n = sqlite3_column_bytes(s, 0);

		if (n <= 0 || (size_t)n >= sizeof(name))
			continue;
		memcpy(name, sqlite3_column_blob(s, 0), (size_t)n);
		name[n] = '\0';
		in.ino = (uint64_t)sqlite3_column_int64(s, 1);
		read_inode_cols(s, 2, &in);
		r = cb(name, &in, (uint64_t)sqlite3_column_int64(s, 12), data);
		if (r)
			break;
	}
	sqlite3_reset(s);
	if (r)
		return r;
	return rc == SQLITE_DONE ? 0 : idx_errno(rc);
}

int idx_set_target(struct idx *x, uint64_t ino, const char *target)
{
	sqlite3_stmt *s = st(x, S_SET_TARGET);

	sqlite3_bind_int64(s, 1, (sqlite3_int64)ino);
	bind_name(s, 2, target);
	return step_done(s);
}

int idx_get_target(struct idx *x, uint64_t ino, char *buf, size_t len)
{
	sqlite3_stmt *s = st(x, S_GET_TARGET);
	int rc;

	sqlite3_bind_int64(s, 1, (sqlite3_int64)ino);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		size_t n = (size_t)sqlite3_column_bytes(s, 0);

		if (n >= len)
			n = len - 1;
		if (n > 0)
			memcpy(buf, sqlite3_column_blob(s, 0), n);
		buf[n] = '\0';
		sqlite3_reset(s);
		return 1;
	}
	sqlite3_reset(s);
	return rc == SQLITE_DONE ? 0 : idx_errno(rc);
}

int idx_read_extents(sqlite3_stmt *s, struct idx_extent **ret, size_t *ret_n)
{
	bool condemned_col = sqlite3_column_count(s) > 13;
	struct idx_extent *v = NULL;
	size_t n = 0, cap = 0;
	int rc, r = 0;

	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		struct idx_extent *e;

		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			struct idx_extent *nv = realloc(v, ncap * sizeof(*v));

			if (!nv) {
				r = -ENOMEM;
				break;
			}
			v = nv;
			cap = ncap;
		}
		e = &v[n++];
		memset(e, 0, sizeof(*e));
		e->off = (uint64_t)sqlite3_column_int64(s, 0);
		e->len = (uint32_t)sqlite3_column_int64(s, 1);
		e->chunk = (uint64_t)sqlite3_column_int64(s, 2);
		if (!e->chunk)
			continue;
		if (sqlite3_column_bytes(s, 3) != HASH_KEY_SIZE ||
		    sqlite3_column_bytes(s, 8) != HASH_DIGEST_SIZE) {
			r = -EUCLEAN;
			break;
		}
		memcpy(e->key.b, sqlite3_column_blob(s, 3), HASH_KEY_SIZE);
		e->pack = (uint64_t)sqlite3_column_int64(s, 4);
		e->loc.offset = (uint64_t)sqlite3_column_int64(s, 5);
		e->loc.stored_len = (uint32_t)sqlite3_column_int64(s, 6);
		e->loc.flags = (uint32_t)sqlite3_column_int64(s, 7);
		memcpy(e->digest.b, sqlite3_column_blob(s, 8), HASH_DIGEST_SIZE);
		if (condemned_col && sqlite3_column_int(s, 13) != 0)
			continue; /* its remote pack is condemned: as good as not there */
		e->rpack = (uint64_t)sqlite3_column_int64(s, 9);
		e->rloc.offset = (uint64_t)sqlite3_column_int64(s, 10);
		e->rloc.stored_len = (uint32_t)sqlite3_column_int64(s, 11);
		e->rloc.flags = (uint32_t)sqlite3_column_int64(s, 12);
	}
	sqlite3_reset(s);
	if (r == 0 && rc != SQLITE_DONE && rc != SQLITE_ROW)
		r = idx_errno(rc);
	if (r < 0) {
		free(v);
		return r;
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

int idx_get_extents(struct idx *x, uint64_t ino, struct idx_extent **ret, size_t *ret_n)
{
	sqlite3_stmt *s = st(x, S_GET_EXTENTS);

	sqlite3_bind_int64(s, 1, (sqlite3_int64)ino);
	return idx_read_extents(s, ret, ret_n);
}

int idx_set_extents(struct idx *x, uint64_t ino, const struct idx_extent *ext, size_t n)
{
	int r;

	r = by_ino(x, S_UNREF_EXTENTS, ino);
	if (r < 0)
		return r;
	r = by_ino(x, S_DEL_EXTENTS, ino);
	if (r < 0)
		return r;
	return idx_add_extents(x, ino, ext, n);
}

int idx_add_extents(struct idx *x, uint64_t ino, const struct idx_extent *ext, size_t n)
{
	int r;

	for (size_t i = 0; i < n; i++) {
		sqlite3_stmt *s = st(x, S_ADD_EXTENT);

		sqlite3_bind_int64(s, 1, (sqlite3_int64)ino);
		sqlite3_bind_int64(s, 2, (sqlite3_int64)ext[i].off);
		sqlite3_bind_int64(s, 3, ext[i].len);
		sqlite3_bind_int64(s, 4, (sqlite3_int64)ext[i].chunk);
		r = step_done(s);
		if (r < 0)
			return r;
		if (ext[i].chunk) {
			r = by_ino(x, S_REF_CHUNK, ext[i].chunk);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

int idx_find_chunk(struct idx *x, const chunk_key *key, const chunk_digest *digest,
		   uint64_t *ret_id, uint64_t *ret_pack, struct pack_loc *ret_loc)
{
	sqlite3_stmt *s = st(x, S_FIND_CHUNK);
	int rc;

	sqlite3_bind_blob(s, 1, key->b, HASH_KEY_SIZE, SQLITE_STATIC);
	/* Several rows share a key only under a collision; the digest decides. */
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (sqlite3_column_bytes(s, 1) == HASH_DIGEST_SIZE &&
		    memcmp(sqlite3_column_blob(s, 1), digest->b, HASH_DIGEST_SIZE) == 0) {
			if (ret_id)
				*ret_id = (uint64_t)sqlite3_column_int64(s, 0);
			if (ret_pack)
				*ret_pack = (uint64_t)sqlite3_column_int64(s, 2);
			if (ret_loc) {
				ret_loc->offset = (uint64_t)sqlite3_column_int64(s, 3);
				ret_loc->stored_len = (uint32_t)sqlite3_column_int64(s, 4);
				ret_loc->flags = (uint32_t)sqlite3_column_int64(s, 5);
			}
			sqlite3_reset(s);
			return 1;
		}
	}
	sqlite3_reset(s);
	return rc == SQLITE_DONE ? 0 : idx_errno(rc);
}

int idx_add_chunk(struct idx *x, const chunk_key *key, const chunk_digest *digest, uint32_t raw_len,
		  uint64_t pack, const struct pack_loc *loc, uint64_t *ret_id)
{
	sqlite3_stmt *s = st(x, S_ADD_CHUNK);
	int r;

	sqlite3_bind_blob(s, 1, key->b, HASH_KEY_SIZE, SQLITE_STATIC);
	sqlite3_bind_blob(s, 2, digest->b, HASH_DIGEST_SIZE, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, raw_len);
	sqlite3_bind_int64(s, 4, (sqlite3_int64)pack);
	sqlite3_bind_int64(s, 5, (sqlite3_int64)loc->offset);
	sqlite3_bind_int64(s, 6, loc->stored_len);
	sqlite3_bind_int64(s, 7, loc->flags);
	r = step_done(s);
	if (r == 0)
		*ret_id = (uint64_t)sqlite3_last_insert_rowid(x->db);
	return r;
}

int idx_chunk_loc(struct idx *x, uint64_t id, uint64_t *ret_pack, struct pack_loc *ret_loc)
{
	sqlite3_stmt *s = st(x, S_CHUNK_LOC);
	int rc;

	sqlite3_bind_int64(s, 1, (sqlite3_int64)id);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*ret_pack = (uint64_t)sqlite3_column_int64(s, 0);
		ret_loc->offset = (uint64_t)sqlite3_column_int64(s, 1);
		ret_loc->stored_len = (uint32_t)sqlite3_column_int64(s, 2);
		ret_loc->flags = (uint32_t)sqlite3_column_int64(s, 3);
		sqlite3_reset(s);
		return 1;
	}
	sqlite3_reset(s);
	return rc == SQLITE_DONE ? 0 : idx_errno(rc);
}

int idx_touch_used(struct idx *x, uint64_t ino, int64_t now)
{
	sqlite3_stmt *s = st(x, S_TOUCH_USED);

	sqlite3_bind_int64(s, 1, (sqlite3_int64)ino);
	sqlite3_bind_int64(s, 2, now);
	return step_done(s);
}

int idx_ref_chunk(struct idx *x, uint64_t id, int delta)
{
	sqlite3_stmt *s = st(x, S_ADD_REFS);

	sqlite3_bind_int64(s, 1, (sqlite3_int64)id);
	sqlite3_bind_int64(s, 2, delta);
	return step_done(s);
}

int idx_recount_refs(struct idx *x)
{
	int r = idx_exec(x,
			 "UPDATE chunks SET refs = (SELECT count(*) FROM extents e WHERE "
			 "e.chunk = chunks.id) WHERE refs != (SELECT count(*) FROM extents e WHERE "
			 "e.chunk = chunks.id)");

	return r < 0 ? r : sqlite3_changes(x->db);
}

int idx_add_pack(struct idx *x, uint64_t *ret_id)
{
	sqlite3_stmt *s = st(x, S_ADD_PACK);
	int r;

	sqlite3_bind_int64(s, 1, now_ns() / 1000000000);
	r = step_done(s);
	if (r == 0)
		*ret_id = (uint64_t)sqlite3_last_insert_rowid(x->db);
	return r;
}

int idx_set_pack_size(struct idx *x, uint64_t id, uint64_t size)
{
	sqlite3_stmt *s = st(x, S_SET_PACK_SIZE);

	sqlite3_bind_int64(s, 1, (sqlite3_int64)id);
	sqlite3_bind_int64(s, 2, (sqlite3_int64)size);
	return step_done(s);
}

int idx_pack_bytes(struct idx *x, uint64_t *ret)
{
	uint64_t v[1];
	int r = query_u64s(x, "SELECT total(size) FROM packs", v, 1);

	if (r == 0)
		*ret = v[0];
	return r;
}

int idx_get_xattr(struct idx *x, uint64_t ino, const char *name, void *buf, size_t len)
{
	sqlite3_stmt *s = st(x, S_GET_XATTR);
	int rc, n;

	sqlite3_bind_int64(s, 1, (sqlite3_int64)ino);
	bind_name(s, 2, name);
	rc = sqlite3_step(s);
	if (rc != SQLITE_ROW) {
		sqlite3_reset(s);
		return rc == SQLITE_DONE ? -ENODATA : idx_errno(rc);
	}
	n = sqlite3_column_bytes(s, 0);
	if (n > 0 && len > 0 && (size_t)n <= len)
		memcpy(buf, sqlite3_column_blob(s, 0), (size_t)n);
	sqlite3_reset(s);
	return n;
}

int idx_set_xattr(struct idx *x, uint64_t ino, const char *name, const void *value, size_t len,
		  int flags)
{
	sqlite3_stmt *s;
	int exists = idx_get_xattr(x, ino, name, NULL, 0);

	if (exists < 0 && exists != -ENODATA)
		return exists;
	if (exists >= 0 && (flags & IDX_XATTR_CREATE))
		return -EEXIST;
	if (exists == -ENODATA && (flags & IDX_XATTR_REPLACE))
		return -ENODATA;
	s = st(x, exists >= 0 ? S_UPD_XATTR : S_INS_XATTR);
	sqlite3_bind_int64(s, 1, (sqlite3_int64)ino);
	bind_name(s, 2, name);
	/* A zero-length blob must still be a blob, not NULL. */
	sqlite3_bind_blob(s, 3, len ? value : "", (int)len, SQLITE_STATIC);
	return step_done(s);
}

int idx_list_xattr(struct idx *x, uint64_t ino, char *buf, size_t len)
{
	sqlite3_stmt *s = st(x, S_LIST_XATTR);
	size_t need = 0;
	int rc;

	sqlite3_bind_int64(s, 1, (sqlite3_int64)ino);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		size_t n = (size_t)sqlite3_column_bytes(s, 0);

		if (len && need + n + 1 <= len) {
			if (n > 0)
				memcpy(buf + need, sqlite3_column_blob(s, 0), n);
			buf[need + n] = '\0';
		}
		need += n + 1;
	}
	sqlite3_reset(s);
	if (rc != SQLITE_DONE)
		return idx_errno(rc);
	return (int)need;
}

int idx_remove_xattr(struct idx *x, uint64_t ino, const char *name)
{
	sqlite3_stmt *s;
	int r = idx_get_xattr(x, ino, name, NULL, 0);

	if (r < 0)
		return r;
	s = st(x, S_DEL_XATTR);
	sqlite3_bind_int64(s, 1, (sqlite3_int64)ino);
	bind_name(s, 2, name);
	return step_done(s);
}

int idx_delete_orphans(struct idx *x)
{
	sqlite3_stmt *s;
	uint64_t *inos = NULL;
	size_t n = 0, cap = 0;
	int rc, r = 0;

	rc = sqlite3_prepare_v2(x->db, "SELECT ino FROM inodes WHERE nlink = 0", -1, &s, NULL);
	if (rc != SQLITE_OK)
		return idx_errno(rc);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 64;
			uint64_t *ni = realloc(inos, ncap * sizeof(*inos));

			if (!ni) {
				r = -ENOMEM;
				break;
			}
			inos = ni;
			cap = ncap;
		}
		inos[n++] = (uint64_t)sqlite3_column_int64(s, 0);
	}
	sqlite3_finalize(s);
	if (r == 0 && rc != SQLITE_DONE)
		r = idx_errno(rc);
	for (size_t i = 0; r == 0 && i < n; i++)
		r = idx_delete_inode(x, inos[i]);
	free(inos);
	return r < 0 ? r : (int)n;
}

static int query_u64s(struct idx *x, const char *sql, uint64_t *out, int n)
{
	sqlite3_stmt *s;
	int rc;

	rc = sqlite3_prepare_v2(x->db, sql, -1, &s, NULL);
	if (rc != SQLITE_OK)
		return idx_errno(rc);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		for (int i = 0; i < n; i++)
			out[i] = (uint64_t)sqlite3_column_int64(s, i);
	sqlite3_finalize(s);
	return rc == SQLITE_ROW ? 0 : idx_errno(rc);
}

int idx_get_stats(struct idx *x, struct idx_stats *ret)
{
	uint64_t v[4];
	int r;

	memset(ret, 0, sizeof(*ret));
	r = query_u64s(x,
		       "SELECT total(mode & 61440 = 32768), total(mode & 61440 = 16384), "
		       "total(mode & 61440 = 40960), total(CASE WHEN mode & 61440 = 32768 "
		       "THEN size ELSE 0 END) FROM inodes WHERE nlink > 0",
		       v, 4);
	if (r < 0)
		return r;
	ret->files = v[0];
	ret->dirs = v[1];
	ret->symlinks = v[2];
	ret->logical_bytes = v[3];
	r = query_u64s(x,
		       "SELECT total(refs > 0), total(CASE WHEN refs > 0 THEN raw_len END), "
		       "total(CASE WHEN refs > 0 THEN stored_len END), "
		       "total(CASE WHEN refs <= 0 THEN stored_len END) FROM chunks",
		       v, 4);
	if (r < 0)
		return r;
	ret->chunks = v[0];
	ret->chunk_bytes = v[1];
	ret->stored_bytes = v[2];
	ret->dead_stored_bytes = v[3];
	r = query_u64s(x, "SELECT count(*), total(size) FROM packs", v, 2);
	if (r < 0)
		return r;
	ret->packs = v[0];
	ret->pack_bytes = v[1];
	r = query_u64s(x, "SELECT count(*) FROM chunks WHERE refs <= 0", v, 1);
	ret->dead_chunks = v[0];
	r = query_u64s(x,
		       "SELECT total(CASE WHEN pack = 0 THEN raw_len END), "
		       "total(CASE WHEN rpack = 0 THEN raw_len END) FROM chunks WHERE refs > 0",
		       v, 2);
	if (r < 0)
		return r;
	ret->remote_only_bytes = v[0];
	ret->unpushed_bytes = v[1];
	r = query_u64s(x, "SELECT count(*) FROM inodes WHERE nlink > 0", v, 1);
	if (r == 0)
		ret->others = v[0] - ret->files - ret->dirs - ret->symlinks;
	return r;
}

/*
 * The subtree of each root entry: (ino, top) pairs, each once (UNION), so a file hard-linked
 * twice inside one entry counts once. Only directories have dentries below them, so the join
 * stops at files by itself.
 */
#define TOP_TREE_CTE                                                                               \
	"WITH RECURSIVE tree(ino, top) AS ("                                                       \
	"  SELECT ino, ino FROM dentries WHERE parent = 1 AND ino != 1"                            \
	"  UNION SELECT d.ino, t.top FROM dentries d JOIN tree t ON d.parent = t.ino) "

static struct idx_top_stats *top_find(struct idx_top_stats *t, size_t n, uint64_t ino)
{
	for (size_t i = 0; i < n; i++)
		if (t[i].ino == ino)
			return &t[i];
	return NULL;
}

int idx_get_top_stats(struct idx *x, struct idx_top_stats **ret, size_t *ret_n)
{
	static const char *const sql[] = {
		"SELECT name, ino FROM dentries WHERE parent = 1 AND ino != 1 ORDER BY name",
		TOP_TREE_CTE "SELECT t.top, count(*), total(i.size) FROM tree t "
			     "JOIN inodes i ON i.ino = t.ino WHERE i.mode & 61440 = 32768 "
			     "GROUP BY t.top",
		TOP_TREE_CTE "SELECT u.top, total(c.raw_len), "
			     "total(CASE WHEN c.pack != 0 THEN c.stored_len ELSE 0 END) FROM "
			     "(SELECT DISTINCT t.top AS top, e.chunk AS chunk FROM tree t "
			     "JOIN extents e ON e.ino = t.ino WHERE e.chunk != 0) u "
			     "JOIN chunks c ON c.id = u.chunk GROUP BY u.top",
	};
	struct idx_top_stats *t = NULL, *row;
	size_t n = 0, cap = 0;
	sqlite3_stmt *s = NULL;
	/* One snapshot for the three queries, when another connection writes meanwhile. */
	bool snap = sqlite3_get_autocommit(x->db) &&
		    sqlite3_exec(x->db, "BEGIN", NULL, NULL, NULL) == SQLITE_OK;
	int rc = SQLITE_OK, r = 0;

	for (size_t q = 0; q < ARRAY_SIZE(sql) && r == 0; q++) {
		rc = sqlite3_prepare_v2(x->db, sql[q], -1, &s, NULL);
		if (rc != SQLITE_OK) {
			r = idx_errno(rc);
			break;
		}
		while (r == 0 && (rc = sqlite3_step(s)) == SQLITE_ROW) {
			uint64_t ino = (uint64_t)sqlite3_column_int64(s, q == 0 ? 1 : 0);

			if (q == 0) {
				const void *name = sqlite3_column_blob(s, 0);
				int len = sqlite3_column_bytes(s, 0);

				if (n == cap) {
					size_t nc = cap ? 2 * cap : 16;
					struct idx_top_stats *nt = realloc(t, nc * sizeof(*t));

					if (!nt) {
						r = -ENOMEM;
						break;
					}
					t = nt;
					cap = nc;
				}
				row = &t[n];
				memset(row, 0, sizeof(*row));
				row->name = malloc((size_t)len + 1);
				if (!row->name) {
					r = -ENOMEM;
					break;
				}
				if (len)
					memcpy(row->name, name, (size_t)len);
				row->name[len] = '\0';
				row->ino = ino;
				n++;
				continue;
			}
			/* An entry added since the first query (another connection wrote): skip. */
			row = top_find(t, n, ino);
			if (!row)
				continue;
			if (q == 1) {
				row->files = (uint64_t)sqlite3_column_int64(s, 1);
				row->logical_bytes = (uint64_t)sqlite3_column_double(s, 2);
			} else {
				row->unique_bytes = (uint64_t)sqlite3_column_double(s, 1);
				row->stored_bytes = (uint64_t)sqlite3_column_double(s, 2);
			}
		}
		if (r == 0 && rc != SQLITE_DONE)
			r = idx_errno(rc);
		sqlite3_finalize(s);
		s = NULL;
	}
	if (snap)
		sqlite3_exec(x->db, "COMMIT", NULL, NULL, NULL);
	if (r < 0) {
		idx_top_stats_free(t, n);
		return r;
	}
	*ret = t;
	*ret_n = n;
	return 0;
}

void idx_top_stats_free(struct idx_top_stats *t, size_t n)
{
	if (!t)
		return;
	for (size_t i = 0; i < n; i++)
		free(t[i].name);
	free(t);
}

int idx_set_chunk_local(struct idx *x, uint64_t id, const chunk_key *key, uint64_t pack,
			const struct pack_loc *loc)
{
	sqlite3_stmt *s = st(x, S_SET_LOCAL);

	sqlite3_bind_blob(s, 6, key->b, HASH_KEY_SIZE, SQLITE_STATIC);
	sqlite3_bind_int64(s, 1, (sqlite3_int64)id);
	sqlite3_bind_int64(s, 2, (sqlite3_int64)pack);
	sqlite3_bind_int64(s, 3, (sqlite3_int64)(pack ? loc->offset : 0));
	sqlite3_bind_int64(s, 4, pack ? loc->stored_len : 0);
	sqlite3_bind_int64(s, 5, pack ? loc->flags : 0);
	return step_done(s);
}

int idx_rpack_name(struct idx *x, uint64_t id, uint8_t ret_name[IDX_RPACK_NAME_SIZE])
{
	sqlite3_stmt *s = st(x, S_RPACK_NAME);
	int rc;

	sqlite3_bind_int64(s, 1, (sqlite3_int64)id);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		if (sqlite3_column_bytes(s, 0) != IDX_RPACK_NAME_SIZE) {
			sqlite3_reset(s);
			return -EUCLEAN;
		}
		memcpy(ret_name, sqlite3_column_blob(s, 0), IDX_RPACK_NAME_SIZE);
		sqlite3_reset(s);
		return 1;
	}
	sqlite3_reset(s);
	return rc == SQLITE_DONE ? 0 : idx_errno(rc);
}

int idx_rpack_ensure(struct idx *x, const uint8_t name[IDX_RPACK_NAME_SIZE], uint64_t size,
		     uint64_t *ret_id)
{
	sqlite3_stmt *s = st(x, S_RPACK_FIND);
	int rc, r;

	sqlite3_bind_blob(s, 1, name, IDX_RPACK_NAME_SIZE, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*ret_id = (uint64_t)sqlite3_column_int64(s, 0);
		sqlite3_reset(s);
		return 0;
	}
	sqlite3_reset(s);
	if (rc != SQLITE_DONE)
		return idx_errno(rc);
	s = st(x, S_RPACK_ADD);
	sqlite3_bind_blob(s, 1, name, IDX_RPACK_NAME_SIZE, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, (sqlite3_int64)size);
	r = step_done(s);
	if (r == 0)
		*ret_id = (uint64_t)sqlite3_last_insert_rowid(x->db);
	return r;
}

int idx_add_remote_chunk(struct idx *x, const chunk_key *key, const chunk_digest *digest,
			 uint32_t raw_len, uint64_t rpack, const struct pack_loc *rloc,
			 uint64_t *ret_id)
{
	sqlite3_stmt *s = st(x, S_ADD_RCHUNK);
	int r;

	sqlite3_bind_blob(s, 1, key->b, HASH_KEY_SIZE, SQLITE_STATIC);
	sqlite3_bind_blob(s, 2, digest->b, HASH_DIGEST_SIZE, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, raw_len);
	sqlite3_bind_int64(s, 4, (sqlite3_int64)rpack);
	sqlite3_bind_int64(s, 5, (sqlite3_int64)rloc->offset);
	sqlite3_bind_int64(s, 6, rloc->stored_len);
	sqlite3_bind_int64(s, 7, rloc->flags);
	r = step_done(s);
	if (r == 0)
		*ret_id = (uint64_t)sqlite3_last_insert_rowid(x->db);
	return r;
}

int idx_set_chunk_remote(struct idx *x, const chunk_key *key, const chunk_digest *digest,
			 uint64_t rpack, const struct pack_loc *rloc)
{
	sqlite3_stmt *s = st(x, S_SET_REMOTE);

	sqlite3_bind_blob(s, 1, key->b, HASH_KEY_SIZE, SQLITE_STATIC);
	sqlite3_bind_blob(s, 2, digest->b, HASH_DIGEST_SIZE, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, (sqlite3_int64)rpack);
	sqlite3_bind_int64(s, 4, (sqlite3_int64)rloc->offset);
	sqlite3_bind_int64(s, 5, rloc->stored_len);
	sqlite3_bind_int64(s, 6, rloc->flags);
	return step_done(s);
}

int idx_trace_add(struct idx *x, uint64_t ino, int64_t stamp)
{
	sqlite3_stmt *s = st(x, S_TRACE_ADD);

	sqlite3_bind_int64(s, 1, (sqlite3_int64)ino);
	sqlite3_bind_int64(s, 2, stamp);
	return step_done(s);
}

int idx_init_root(struct idx *x, uint32_t uid, uint32_t gid, int64_t now)
{
	struct idx_inode in;
	uint64_t ino;
	int r;

	r = idx_get_inode(x, IDX_ROOT_INO, &in);
	if (r != 0)
		return r < 0 ? r : 0;
	memset(&in, 0, sizeof(in));
	in.mode = S_IFDIR | 0755;
	in.uid = uid;
	in.gid = gid;
	in.nlink = 2;
	in.parent = IDX_ROOT_INO;
	in.atime = in.mtime = in.ctime = now;
	r = idx_new_inode(x, &in, &ino);
	if (r == 0 && ino != IDX_ROOT_INO)
		r = -EUCLEAN;
	return r;
}

int idx_pack_exists(struct idx *x, uint64_t id)
{
	sqlite3_stmt *s = st(x, S_PACK_EXISTS);
	int rc;

	sqlite3_bind_int64(s, 1, (sqlite3_int64)id);
	rc = sqlite3_step(s);
	sqlite3_reset(s);
	return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : idx_errno(rc);
}
