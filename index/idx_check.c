/* SPDX-License-Identifier: MIT */
/*
 * The queries of fsck and gc (index/maint.c): consistency checks and their repairs, walks over
 * files, packs and chunks, and the few writes gc makes (dropping dead chunks and local copies,
 * moving a chunk to another pack, deleting a pack's row). See idx.h, "fsck and gc".
 *
 * They run in a transaction of their own that idx_maint_begin opens, outside the group commit of
 * idx_begin: fsck in a read snapshot, gc and fsck --repair in a write transaction under the store
 * lock. The repairs restore the invariants of idx.h from the rows that are authoritative:
 * dentries for nlink, extents for chunks.refs. The walks prepare a statement of their own
 * (their callbacks may use the cached ones); the point queries use idx_stmt.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "idx_priv.h"
#include "util.h"

int idx_maint_begin(struct idx *x, bool write)
{
	return idx_exec(x, write ? "BEGIN IMMEDIATE" : "BEGIN");
}

int idx_maint_end(struct idx *x, bool commit)
{
	if (commit)
		return idx_exec(x, "COMMIT");
	idx_exec(x, "ROLLBACK");
	return 0;
}

/*
 * Each check: how many rows break it, a line for each, and the repair (NULL: none here). The
 * nlink and refs repairs recount from dentries and extents, which are authoritative.
 */
static const struct {
	const char *count, *show, *fix;
} checks[] = {
	[IDX_CHECK_ORPHANS] =
		{
			"SELECT count(*) FROM inodes WHERE nlink = 0",
			"SELECT 'inode ' || ino || ': no name left (orphan)' FROM inodes "
			"WHERE nlink = 0",
			NULL, /* idx_delete_orphans, which also drops their extents */
		},
	[IDX_CHECK_DANGLING_DENTRIES] =
		{
			"SELECT count(*) FROM dentries d LEFT JOIN inodes i ON i.ino = d.ino "
			"WHERE i.ino IS NULL",
			"SELECT 'entry ' || quote(d.name) || ' in directory ' || d.parent || "
			"' names missing inode ' || d.ino FROM dentries d LEFT JOIN inodes i ON "
			"i.ino = d.ino WHERE i.ino IS NULL",
			"DELETE FROM dentries WHERE ino NOT IN (SELECT ino FROM inodes)",
		},
	[IDX_CHECK_FILE_NLINK] =
		{
			"SELECT count(*) FROM inodes i WHERE i.mode & 61440 != 16384 AND "
			"i.nlink != (SELECT count(*) FROM dentries d WHERE d.ino = i.ino) AND "
			"i.nlink > 0",
			"SELECT 'inode ' || i.ino || ': nlink ' || i.nlink || ', names ' || "
			"(SELECT count(*) FROM dentries d WHERE d.ino = i.ino) FROM inodes i "
			"WHERE i.mode & 61440 != 16384 AND i.nlink != (SELECT count(*) FROM "
			"dentries d WHERE d.ino = i.ino) AND i.nlink > 0",
			"UPDATE inodes SET nlink = (SELECT count(*) FROM dentries d WHERE d.ino = "
			"inodes.ino) WHERE mode & 61440 != 16384 AND nlink > 0",
		},
	[IDX_CHECK_DIR_NLINK] =
		{
			"SELECT count(*) FROM inodes i WHERE i.mode & 61440 = 16384 AND "
			"i.nlink > 0 AND i.nlink != 2 + (SELECT count(*) FROM dentries d JOIN "
			"inodes j ON j.ino = d.ino WHERE d.parent = i.ino AND j.mode & 61440 = "
			"16384)",
			"SELECT 'directory ' || i.ino || ': nlink ' || i.nlink FROM inodes i WHERE "
			"i.mode & 61440 = 16384 AND i.nlink > 0 AND i.nlink != 2 + (SELECT "
			"count(*) FROM dentries d JOIN inodes j ON j.ino = d.ino WHERE d.parent = "
			"i.ino AND j.mode & 61440 = 16384)",
			"UPDATE inodes SET nlink = 2 + (SELECT count(*) FROM dentries d JOIN "
			"inodes "
			"j ON j.ino = d.ino WHERE d.parent = inodes.ino AND j.mode & 61440 = "
			"16384) "
			"WHERE mode & 61440 = 16384 AND nlink > 0",
		},
	[IDX_CHECK_DANGLING_EXTENTS] =
		{
			"SELECT count(*) FROM extents e LEFT JOIN chunks c ON c.id = e.chunk "
			"WHERE e.chunk != 0 AND c.id IS NULL",
			"SELECT 'inode ' || e.ino || ' at ' || e.off || ': extent names missing "
			"chunk ' || e.chunk FROM extents e LEFT JOIN chunks c ON c.id = e.chunk "
			"WHERE e.chunk != 0 AND c.id IS NULL",
			NULL,
		},
	[IDX_CHECK_REFS_LOW] =
		{
			"SELECT count(*) FROM chunks c WHERE c.refs < (SELECT count(*) FROM "
			"extents e WHERE e.chunk = c.id)",
			"SELECT 'chunk ' || c.id || ': refs ' || c.refs || ', used ' || (SELECT "
			"count(*) FROM extents e WHERE e.chunk = c.id) FROM chunks c WHERE "
			"c.refs < (SELECT count(*) FROM extents e WHERE e.chunk = c.id)",
			"UPDATE chunks SET refs = (SELECT count(*) FROM extents e WHERE e.chunk = "
			"chunks.id) WHERE refs < (SELECT count(*) FROM extents e WHERE e.chunk = "
			"chunks.id)",
		},
	[IDX_CHECK_REFS_HIGH] =
		{
			"SELECT count(*) FROM chunks c WHERE c.refs > (SELECT count(*) FROM "
			"extents e WHERE e.chunk = c.id)",
			"SELECT 'chunk ' || c.id || ': refs ' || c.refs || ', used ' || (SELECT "
			"count(*) FROM extents e WHERE e.chunk = c.id) FROM chunks c WHERE "
			"c.refs > (SELECT count(*) FROM extents e WHERE e.chunk = c.id)",
			"UPDATE chunks SET refs = (SELECT count(*) FROM extents e WHERE e.chunk = "
			"chunks.id) WHERE refs > (SELECT count(*) FROM extents e WHERE e.chunk = "
			"chunks.id)",
		},
	/* Chunks only on the remote are checked when fetched, against the same digest. */
	[IDX_CHECK_UNSTORED_CHUNKS] =
		{
			"SELECT count(*) FROM chunks WHERE refs > 0 AND pack = 0 AND rpack = 0",
			"SELECT 'chunk ' || id || ' is neither here nor on the remote' FROM chunks "
			"WHERE refs > 0 AND pack = 0 AND rpack = 0",
			NULL,
		},
};

bool idx_check_repairable(enum idx_check check)
{
	return (size_t)check < ARRAY_SIZE(checks) && checks[check].fix;
}

/* Prepare sql for a walk (a statement of its own, finalized by the caller). */
static int walk_prepare(struct idx *x, const char *sql, sqlite3_stmt **ret)
{
	int rc = sqlite3_prepare_v2(idx_sqlite(x), sql, -1, ret, NULL);

	return rc == SQLITE_OK ? 0 : idx_errno(rc);
}

/* Step s to its end; 0, or -errno when it did not reach SQLITE_DONE. */
static int walk_end(sqlite3_stmt *s, int rc)
{
	sqlite3_finalize(s);
	return rc == SQLITE_DONE ? 0 : idx_errno(rc);
}

/* A callback ended the walk with r (non-zero): its error, or 0 for a positive early stop. */
static int walk_stop(sqlite3_stmt *s, int r)
{
	sqlite3_finalize(s);
	return r < 0 ? r : 0;
}

int idx_check(struct idx *x, enum idx_check check, bool fix,
	      void (*show)(void *data, const char *line), void *data, uint64_t *ret_n)
{
	sqlite3_stmt *s;
	uint64_t n = 0;
	int rc, r;

	if ((size_t)check >= ARRAY_SIZE(checks) || !checks[check].count)
		return -EINVAL;
	r = walk_prepare(x, checks[check].count, &s);
	if (r < 0)
		return r;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		n = (uint64_t)sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	if (rc != SQLITE_ROW)
		return idx_errno(rc) ? idx_errno(rc) : -EIO;
	if (n && show) {
		r = walk_prepare(x, checks[check].show, &s);
		if (r < 0)
			return r;
		while ((rc = sqlite3_step(s)) == SQLITE_ROW)
			show(data, sqlite3_column_type(s, 0) == SQLITE_TEXT
					   ? (const char *)sqlite3_column_text(s, 0)
					   : "?");
		r = walk_end(s, rc);
		if (r < 0)
			return r;
	}
	if (n && fix && checks[check].fix) {
		r = idx_exec(x, checks[check].fix);
		if (r < 0)
			return r;
	}
	*ret_n = n;
	return 0;
}

int idx_each_file_extents(struct idx *x, int (*cb)(void *data, const struct idx_file_extents *f),
			  void *data)
{
	sqlite3_stmt *s;
	int rc, r;

	r = walk_prepare(x,
			 "SELECT i.ino, i.size, count(e.off), total(e.len), max(e.off + e.len) "
			 "FROM inodes i LEFT JOIN extents e ON e.ino = i.ino WHERE i.mode & 61440 "
			 "= 32768 GROUP BY i.ino",
			 &s);
	if (r < 0)
		return r;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		struct idx_file_extents f = {
			.ino = (uint64_t)sqlite3_column_int64(s, 0),
			.size = (uint64_t)sqlite3_column_int64(s, 1),
			.count = (uint64_t)sqlite3_column_int64(s, 2),
			.covered = (uint64_t)sqlite3_column_int64(s, 3),
			.end = (uint64_t)sqlite3_column_int64(s, 4),
		};

		r = cb(data, &f);
		if (r)
			return walk_stop(s, r);
	}
	return walk_end(s, rc);
}

int idx_each_pack(struct idx *x, bool usage, int (*cb)(void *data, const struct idx_pack_usage *p),
		  void *data)
{
	sqlite3_stmt *s;
	int rc, r;

	r = walk_prepare(
		x,
		usage ? "SELECT p.id, p.size, (SELECT total(c.stored_len + ?1) FROM chunks "
			"c WHERE c.pack = p.id) FROM packs p"
		      : "SELECT id, size, 0 FROM packs",
		&s);
	if (r < 0)
		return r;
	if (usage)
		sqlite3_bind_int64(s, 1, PACK_ENTRY_HDR_SIZE);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		struct idx_pack_usage p = {
			.id = (uint64_t)sqlite3_column_int64(s, 0),
			.size = (uint64_t)sqlite3_column_int64(s, 1),
			.live = (uint64_t)sqlite3_column_int64(s, 2),
		};

		r = cb(data, &p);
		if (r)
			return walk_stop(s, r);
	}
	return walk_end(s, rc);
}

int idx_local_live_bytes(struct idx *x, uint64_t *ret_raw, uint64_t *ret_stored)
{
	sqlite3_stmt *s = idx_stmt(x, "SELECT total(raw_len), total(stored_len) FROM chunks "
				      "WHERE refs > 0 AND pack != 0");
	int rc;

	if (!s)
		return -EIO;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		if (ret_raw)
			*ret_raw = (uint64_t)sqlite3_column_int64(s, 0);
		if (ret_stored)
			*ret_stored = (uint64_t)sqlite3_column_int64(s, 1);
	}
	sqlite3_reset(s);
	return rc == SQLITE_ROW ? 0 : idx_errno(rc) ? idx_errno(rc) : -EIO;
}

/* A chunk row, bounds-checked: the index is on disk, and fsck exists for when it is damaged. */
static void read_chunk_row(sqlite3_stmt *s, struct idx_chunk_row *c)
{
	int64_t raw_len = sqlite3_column_int64(s, 4);

	memset(c, 0, sizeof(*c));
	c->id = (uint64_t)sqlite3_column_int64(s, 0);
	c->pack = (uint64_t)sqlite3_column_int64(s, 3);
	if (sqlite3_column_bytes(s, 1) != HASH_KEY_SIZE ||
	    sqlite3_column_bytes(s, 2) != HASH_DIGEST_SIZE || raw_len <= 0 ||
	    raw_len > PACK_MAX_CHUNK) {
		c->malformed = true;
		return;
	}
	memcpy(c->key.b, sqlite3_column_blob(s, 1), HASH_KEY_SIZE);
	memcpy(c->digest.b, sqlite3_column_blob(s, 2), HASH_DIGEST_SIZE);
	c->raw_len = (uint32_t)raw_len;
	c->loc.offset = (uint64_t)sqlite3_column_int64(s, 5);
	c->loc.stored_len = (uint32_t)sqlite3_column_int64(s, 6);
	c->loc.flags = (uint32_t)sqlite3_column_int64(s, 7);
}

int idx_each_local_chunk(struct idx *x, uint64_t pack,
			 int (*cb)(void *data, const struct idx_chunk_row *c), void *data)
{
	sqlite3_stmt *s;
	int rc, r;

	r = walk_prepare(
		x,
		pack ? "SELECT id, key, digest, pack, raw_len, off, stored_len, flags FROM "
		       "chunks WHERE pack = ?1 ORDER BY off"
		     : "SELECT id, key, digest, pack, raw_len, off, stored_len, flags FROM "
		       "chunks WHERE refs > 0 AND pack != 0 ORDER BY pack, off",
		&s);
	if (r < 0)
		return r;
	if (pack)
		sqlite3_bind_int64(s, 1, (sqlite3_int64)pack);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		struct idx_chunk_row c;

		read_chunk_row(s, &c);
		r = cb(data, &c);
		if (r)
			return walk_stop(s, r);
	}
	return walk_end(s, rc);
}

int idx_each_file_using_chunk(struct idx *x, uint64_t chunk, int (*cb)(void *data, uint64_t ino),
			      void *data)
{
	sqlite3_stmt *s;
	int rc, r;

	r = walk_prepare(x, "SELECT DISTINCT ino FROM extents WHERE chunk = ?1", &s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, (sqlite3_int64)chunk);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		r = cb(data, (uint64_t)sqlite3_column_int64(s, 0));
		if (r)
			return walk_stop(s, r);
	}
	return walk_end(s, rc);
}

int idx_lru_files(struct idx *x, unsigned skip, struct idx_lru_file *v, size_t max, size_t *ret_n)
{
	sqlite3_stmt *s;
	size_t n = 0;
	int rc, r;

	r = walk_prepare(x,
			 "SELECT d.parent, d.name, i.ino FROM inodes i JOIN dentries d "
			 "ON d.ino = i.ino WHERE i.mode & 61440 = 32768 AND i.size > 0 "
			 "ORDER BY max(i.used, i.mtime / 1000000000), i.ino LIMIT ?2 OFFSET ?1",
			 &s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, skip);
	sqlite3_bind_int64(s, 2, (sqlite3_int64)max);
	while (n < max && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		int len = sqlite3_column_bytes(s, 1);

		v[n].parent = (uint64_t)sqlite3_column_int64(s, 0);
		v[n].ino = (uint64_t)sqlite3_column_int64(s, 2);
		v[n].name = strndup(len > 0 ? sqlite3_column_blob(s, 1) : "", (size_t)MAX(len, 0));
		if (!v[n].name)
			break;
		n++;
	}
	sqlite3_finalize(s);
	*ret_n = n;
	return 0;
}

/* The one number (a total) that s yields for inode ino as ?1. s comes from idx_stmt. */
static int total_for_ino(sqlite3_stmt *s, uint64_t ino, uint64_t *ret)
{
	int rc;

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, (sqlite3_int64)ino);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*ret = (uint64_t)sqlite3_column_int64(s, 0);
	sqlite3_reset(s);
	return rc == SQLITE_ROW ? 0 : idx_errno(rc) ? idx_errno(rc) : -EIO;
}

int idx_bytes_freed_by(struct idx *x, uint64_t ino, uint64_t *ret)
{
	return total_for_ino(
		idx_stmt(x, "SELECT total(c.stored_len) FROM chunks c WHERE c.id IN (SELECT chunk "
			    "FROM extents WHERE ino = ?1 AND chunk != 0) AND c.refs <= (SELECT "
			    "count(*) FROM extents e WHERE e.ino = ?1 AND e.chunk = c.id)"),
		ino, ret);
}

int idx_each_file_lru(struct idx *x, int (*cb)(void *data, uint64_t ino, uint64_t size), void *data)
{
	sqlite3_stmt *s;
	int rc, r;

	r = walk_prepare(x,
			 "SELECT ino, size FROM inodes WHERE mode & 61440 = 32768 AND size > 0 "
			 "ORDER BY max(used, mtime / 1000000000), ino",
			 &s);
	if (r < 0)
		return r;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		r = cb(data, (uint64_t)sqlite3_column_int64(s, 0),
		       (uint64_t)sqlite3_column_int64(s, 1));
		if (r)
			return walk_stop(s, r);
	}
	return walk_end(s, rc);
}

/* The chunks of ?1 with a local copy and a copy in a remote pack that gc has not condemned. */
#define ON_BOTH_SIDES                                                                              \
	"pack != 0 AND rpack != 0 AND rpack NOT IN (SELECT id FROM rpacks WHERE condemned != 0) "  \
	"AND id IN (SELECT chunk FROM extents WHERE ino = ?1 AND chunk != 0)"

int idx_local_copy_bytes(struct idx *x, uint64_t ino, uint64_t *ret)
{
	return total_for_ino(
		idx_stmt(x, "SELECT total(stored_len) FROM chunks WHERE " ON_BOTH_SIDES), ino, ret);
}

int idx_drop_local_copies(struct idx *x, uint64_t ino)
{
	sqlite3_stmt *s = idx_stmt(x, "UPDATE chunks SET pack = 0, off = 0, stored_len = 0, flags "
				      "= 0 WHERE " ON_BOTH_SIDES);

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, (sqlite3_int64)ino);
	return idx_step_done(s);
}

int idx_delete_dead_chunks(struct idx *x, uint64_t *ret_n)
{
	int r = idx_exec(x, "DELETE FROM chunks WHERE refs <= 0");

	if (r == 0 && ret_n)
		*ret_n = (uint64_t)sqlite3_changes(idx_sqlite(x));
	return r;
}

int idx_delete_pack(struct idx *x, uint64_t id)
{
	sqlite3_stmt *s = idx_stmt(x, "DELETE FROM packs WHERE id = ?1");

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, (sqlite3_int64)id);
	return idx_step_done(s);
}

int idx_move_chunk(struct idx *x, uint64_t id, uint64_t pack, const struct pack_loc *loc)
{
	sqlite3_stmt *s = idx_stmt(
		x,
		"UPDATE chunks SET pack = ?2, off = ?3, stored_len = ?4, flags = ?5 WHERE id = ?1");

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, (sqlite3_int64)id);
	sqlite3_bind_int64(s, 2, (sqlite3_int64)pack);
	sqlite3_bind_int64(s, 3, (sqlite3_int64)loc->offset);
	sqlite3_bind_int64(s, 4, loc->stored_len);
	sqlite3_bind_int64(s, 5, loc->flags);
	return idx_step_done(s);
}
