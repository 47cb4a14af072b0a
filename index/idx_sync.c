/* SPDX-License-Identifier: MIT */
/*
 * Remote bookkeeping in the index: what namespace sync (index/sync/) remembers of one remote.
 * Tables (docs/format.md): rseen (catalogs already read, and whether merged into the namespace),
 * rbase (per path, the remote's entry as of the last sync), rpacks (remote packs and their
 * condemned flag), rtrace (files opened since the last push), and the meta values sync keeps.
 * Also the reads a push makes of its snapshot (a connection of idx_open_reader) that the
 * namespace operations of idx.c do not already offer.
 *
 * Like every idx file, not thread-safe: the caller serialises calls on one connection (the vfs
 * mutex while the store is serving). Writes happen in the caller's transaction (idx_begin).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idx_priv.h"

int64_t idx_meta_get_i64(struct idx *x, const char *key)
{
	char buf[32];

	if (idx_meta_get(x, key, buf, sizeof(buf)) != 1)
		return 0;
	return strtoll(buf, NULL, 10);
}

int idx_meta_set_i64(struct idx *x, const char *key, int64_t v)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%" PRId64, v);
	return idx_meta_set(x, key, buf);
}

int idx_sync_forget(struct idx *x)
{
	return idx_exec(x, "DELETE FROM rseen; DELETE FROM rbad; DELETE FROM rbase; "
			   "DELETE FROM rtrace; "
			   "UPDATE chunks SET rpack = 0, roff = 0, rstored_len = 0, "
			   "rflags = 0 WHERE rpack != 0; DELETE FROM rpacks; "
			   "DELETE FROM meta WHERE key = 'rsync_time'");
}

int idx_sync_blank(struct idx *x)
{
	sqlite3_stmt *s = idx_stmt(x, "SELECT 1 FROM rbase UNION ALL SELECT 1 FROM chunks LIMIT 1");
	int rc;

	if (!s)
		return -EIO;
	rc = sqlite3_step(s);
	sqlite3_reset(s);
	if (rc == SQLITE_ROW)
		return 0;
	return rc == SQLITE_DONE ? 1 : idx_errno(rc);
}

int idx_set_big_cache(struct idx *x, bool big)
{
	return idx_exec(x, big ? "PRAGMA cache_size=-262144" : "PRAGMA cache_size=-16384");
}

/* ---- rseen ---- */

int idx_rseen_get(struct idx *x, const char *name, bool *ret_merged)
{
	sqlite3_stmt *s = idx_stmt(x, "SELECT merged FROM rseen WHERE name = ?1");
	int rc, r = 0;

	if (!s)
		return -EIO;
	sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*ret_merged = sqlite3_column_int(s, 0) != 0;
		r = 1;
	} else if (rc != SQLITE_DONE) {
		r = idx_errno(rc);
	}
	sqlite3_reset(s);
	return r;
}

int idx_rseen_mark(struct idx *x, const char *name, bool merged)
{
	sqlite3_stmt *s =
		idx_stmt(x, "INSERT INTO rseen (name, merged) VALUES (?1, ?2) ON CONFLICT "
			    "(name) DO UPDATE SET merged = max(merged, ?2)");

	if (!s)
		return -EIO;
	sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 2, merged);
	return idx_step_done(s);
}

/* ---- rbad ---- */

int idx_rbad_since(struct idx *x, const char *name, int64_t since)
{
	sqlite3_stmt *s = idx_stmt(x, "SELECT 1 FROM rbad WHERE name = ?1 AND at >= ?2");
	int rc;

	if (!s)
		return -EIO;
	sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, since);
	rc = sqlite3_step(s);
	sqlite3_reset(s);
	if (rc == SQLITE_ROW)
		return 1;
	return rc == SQLITE_DONE ? 0 : idx_errno(rc);
}

int idx_rbad_mark(struct idx *x, const char *name, int64_t at)
{
	sqlite3_stmt *s = idx_stmt(x, "INSERT INTO rbad (name, at) VALUES (?1, ?2) ON "
				      "CONFLICT (name) DO UPDATE SET at = ?2");

	if (!s)
		return -EIO;
	sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, at);
	return idx_step_done(s);
}

/* ---- rbase ---- */

int idx_rbase_get(struct idx *x, const char *path, uint8_t *ret_type, int64_t *ret_stamp,
		  uint8_t ret_sig[16])
{
	sqlite3_stmt *s = idx_stmt(x, "SELECT type, stamp, sig FROM rbase WHERE path = ?1");
	int rc;

	if (!s)
		return -EIO;
	idx_bind_name(s, 1, path);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW && sqlite3_column_bytes(s, 2) == 16) {
		*ret_type = (uint8_t)sqlite3_column_int(s, 0);
		*ret_stamp = sqlite3_column_int64(s, 1);
		memcpy(ret_sig, sqlite3_column_blob(s, 2), 16);
		sqlite3_reset(s);
		return 1;
	}
	sqlite3_reset(s);
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : idx_errno(rc);
}

int idx_rbase_put(struct idx *x, const char *path, uint8_t type, int64_t stamp,
		  const uint8_t sig[16])
{
	sqlite3_stmt *s =
		idx_stmt(x, "INSERT OR REPLACE INTO rbase (path, type, stamp, sig) VALUES "
			    "(?1, ?2, ?3, ?4)");

	if (!s)
		return -EIO;
	idx_bind_name(s, 1, path);
	sqlite3_bind_int(s, 2, type);
	sqlite3_bind_int64(s, 3, stamp);
	sqlite3_bind_blob(s, 4, sig, 16, SQLITE_STATIC);
	return idx_step_done(s);
}

int idx_rbase_each(struct idx *x,
		   int (*cb)(const char *path, uint8_t type, int64_t stamp, const uint8_t sig[16],
			     void *data),
		   void *data)
{
	sqlite3_stmt *s = idx_stmt(x, "SELECT path, type, stamp, sig FROM rbase");
	char path[IDX_PATH_MAX + 1];
	int rc, r = 0;

	if (!s)
		return -EIO;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		int len = sqlite3_column_bytes(s, 0);

		if (len <= 0 || len > IDX_PATH_MAX || sqlite3_column_bytes(s, 3) != 16)
			continue;
		memcpy(path, sqlite3_column_blob(s, 0), (size_t)len);
		path[len] = '\0';
		r = cb(path, (uint8_t)sqlite3_column_int(s, 1), sqlite3_column_int64(s, 2),
		       sqlite3_column_blob(s, 3), data);
		if (r)
			break;
	}
	sqlite3_reset(s);
	if (r)
		return r;
	return rc == SQLITE_DONE ? 0 : idx_errno(rc);
}

/* ---- rpacks ---- */

int idx_rpack_condemn(struct idx *x, uint64_t id)
{
	sqlite3_stmt *s = idx_stmt(x, "UPDATE rpacks SET condemned = 1 WHERE id = ?1");

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, (sqlite3_int64)id);
	return idx_step_done(s);
}

int idx_rpack_get(struct idx *x, uint64_t id, uint8_t ret_name[IDX_RPACK_NAME_SIZE],
		  uint64_t *ret_size)
{
	sqlite3_stmt *s = idx_stmt(x, "SELECT name, size FROM rpacks WHERE id = ?1");
	int rc, r;

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, (sqlite3_int64)id);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		r = -EUCLEAN;
		if (sqlite3_column_bytes(s, 0) == IDX_RPACK_NAME_SIZE) {
			memcpy(ret_name, sqlite3_column_blob(s, 0), IDX_RPACK_NAME_SIZE);
			*ret_size = (uint64_t)sqlite3_column_int64(s, 1);
			r = 1;
		}
	} else {
		r = rc == SQLITE_DONE ? 0 : idx_errno(rc);
	}
	sqlite3_reset(s);
	return r;
}

/* ---- rtrace ---- */

int idx_trace_each(struct idx *x, int (*cb)(uint64_t ino, int64_t stamp, void *data), void *data)
{
	sqlite3_stmt *s = idx_stmt(x, "SELECT ino, stamp FROM rtrace");
	int rc, r = 0;

	if (!s)
		return -EIO;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		r = cb((uint64_t)sqlite3_column_int64(s, 0), sqlite3_column_int64(s, 1), data);
		if (r)
			break;
	}
	sqlite3_reset(s);
	if (r)
		return r;
	return rc == SQLITE_DONE ? 0 : idx_errno(rc);
}

int idx_trace_forget(struct idx *x, int64_t upto)
{
	sqlite3_stmt *s = idx_stmt(x, "DELETE FROM rtrace WHERE stamp <= ?1");

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, upto);
	return idx_step_done(s);
}

/* ---- reads for push and fetch ---- */

int idx_get_extents_pushable(struct idx *x, uint64_t ino, struct idx_extent **ret, size_t *ret_n)
{
	sqlite3_stmt *s =
		idx_stmt(x, "SELECT e.off, e.len, e.chunk, c.key, c.pack, c.off, "
			    "c.stored_len, c.flags, c.digest, c.rpack, c.roff, "
			    "c.rstored_len, c.rflags, coalesce(p.condemned, 0) FROM extents "
			    "e LEFT JOIN chunks c ON c.id = e.chunk LEFT JOIN rpacks p ON "
			    "p.id = c.rpack WHERE e.ino = ?1 ORDER BY e.off");

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, (sqlite3_int64)ino);
	return idx_read_extents(s, ret, ret_n);
}

int idx_remote_only_files(struct idx *x, uint64_t **ret_inos, size_t *ret_n, uint64_t *ret_bytes)
{
	sqlite3_stmt *s = idx_stmt(x, "SELECT DISTINCT e.ino FROM extents e JOIN chunks c ON "
				      "c.id = e.chunk WHERE c.pack = 0");
	uint64_t *inos = NULL, total = 0;
	size_t n = 0, cap = 0;

	if (!s)
		return -EIO;
	while (sqlite3_step(s) == SQLITE_ROW) {
		if (n == cap) {
			uint64_t *nv;

			cap = cap ? cap * 2 : 1024;
			nv = realloc(inos, cap * sizeof(*nv));
			if (!nv) {
				sqlite3_reset(s);
				free(inos);
				return -ENOMEM;
			}
			inos = nv;
		}
		inos[n++] = (uint64_t)sqlite3_column_int64(s, 0);
	}
	sqlite3_reset(s);
	s = idx_stmt(x, "SELECT total(raw_len) FROM chunks WHERE pack = 0 AND refs > 0");
	if (s) {
		if (sqlite3_step(s) == SQLITE_ROW)
			total = (uint64_t)sqlite3_column_int64(s, 0);
		sqlite3_reset(s);
	}
	*ret_inos = inos;
	*ret_n = n;
	*ret_bytes = total;
	return 0;
}
