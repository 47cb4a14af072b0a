/* SPDX-License-Identifier: MIT */
/*
 * fsck and gc. See maint.h.
 *
 * Both work directly on the index with SQL of their own, in one transaction each: fsck in a
 * read transaction (a consistent snapshot even while a daemon writes), gc and fsck --repair in
 * a write transaction under the store lock. gc deletes a pack file only after the transaction
 * that stops referring to it is committed and synced, so a crash at any point leaves either the
 * old pack or the new one referenced, never neither.
 */
#include "maint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "idx.h"
#include "util.h"

bool fsck_clean(const struct fsck_report *r)
{
	return r->unrepaired == 0;
}

static int exec(sqlite3 *db, const char *sql)
{
	int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);

	return rc == SQLITE_OK ? 0 : idx_errno(rc);
}

/* Run sql; for each row call cb with the statement. */
static int each_row(sqlite3 *db, const char *sql, int (*cb)(sqlite3_stmt *s, void *data),
		    void *data)
{
	sqlite3_stmt *s;
	int rc, r = 0;

	rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
	if (rc != SQLITE_OK)
		return idx_errno(rc);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		r = cb(s, data);
		if (r)
			break;
	}
	sqlite3_finalize(s);
	if (r)
		return r < 0 ? r : 0;
	return rc == SQLITE_DONE ? 0 : idx_errno(rc);
}

struct fsck_ctx {
	struct store *st;
	sqlite3 *db;
	FILE *out;
	bool repair;
	struct fsck_report *rep;
	uint8_t *buf;
	uint64_t *bad; /* ids of damaged chunks */
	size_t nbad;
	bool crashed; /* the store was not shut down cleanly: leftovers are expected */
	maint_progress_fn progress;
	void *progress_data;
	uint64_t total_bytes; /* of live chunks, for progress */
};

static int check_chunk(sqlite3_stmt *s, void *data)
{
	struct fsck_ctx *c = data;
	uint64_t id = (uint64_t)sqlite3_column_int64(s, 0);
	struct pack_loc loc;
	chunk_key key;
	chunk_digest want, got;
	uint64_t pack = (uint64_t)sqlite3_column_int64(s, 3);
	int64_t raw_len = sqlite3_column_int64(s, 4);
	int r;

	c->rep->chunks++;
	if (sqlite3_column_bytes(s, 1) != HASH_KEY_SIZE ||
	    sqlite3_column_bytes(s, 2) != HASH_DIGEST_SIZE || raw_len <= 0 ||
	    raw_len > PACK_MAX_CHUNK) {
		fprintf(c->out, "chunk %" PRIu64 ": malformed index row\n", id);
		c->rep->bad_chunks++;
		c->rep->unrepaired++;
		return 0;
	}
	memcpy(key.b, sqlite3_column_blob(s, 1), HASH_KEY_SIZE);
	memcpy(want.b, sqlite3_column_blob(s, 2), HASH_DIGEST_SIZE);
	loc.offset = (uint64_t)sqlite3_column_int64(s, 5);
	loc.stored_len = (uint32_t)sqlite3_column_int64(s, 6);
	loc.flags = (uint32_t)sqlite3_column_int64(s, 7);
	r = store_read_chunk(c->st, pack, &loc, &key, c->buf, (uint32_t)raw_len);
	if (r == 0) {
		hash_digest(c->buf, (size_t)raw_len, &got);
		if (!hash_digest_equal(&got, &want))
			r = -EIO;
	}
	if (r < 0) {
		char hex[2 * HASH_KEY_SIZE + 1];

		fprintf(c->out, "chunk %" PRIu64 " (%s) in pack %" PRIu64 " at %" PRIu64 ": %s\n",
			id, hash_hex(key.b, HASH_KEY_SIZE, hex), pack, loc.offset,
			r == -EIO ? "damaged or missing" : strerror(-r));
		c->rep->bad_chunks++;
		c->rep->unrepaired++;
		if (c->nbad % 64 == 0) {
			uint64_t *nb = realloc(c->bad, (c->nbad + 64) * sizeof(*nb));

			if (!nb)
				return -ENOMEM;
			c->bad = nb;
		}
		c->bad[c->nbad++] = id;
		return 0;
	}
	c->rep->bytes_checked += (uint64_t)raw_len;
	if (c->progress)
		c->progress(c->progress_data, c->rep->bytes_checked, c->total_bytes);
	return 0;
}

static int report_row(sqlite3_stmt *s, void *data)
{
	struct fsck_ctx *c = data;
	const char *what = sqlite3_column_count(s) > 0 && sqlite3_column_type(s, 0) == SQLITE_TEXT
				   ? (const char *)sqlite3_column_text(s, 0)
				   : "?";

	fprintf(c->out, "%s\n", what);
	return 0;
}

/*
 * Count the rows of a check query, print them, and repair with fix_sql when asked. *counter
 * gets the count.
 */
static int check_query(struct fsck_ctx *c, const char *count_sql, const char *show_sql,
		       const char *fix_sql, uint64_t *counter)
{
	sqlite3_stmt *s;
	uint64_t n = 0;
	int rc, r;

	rc = sqlite3_prepare_v2(c->db, count_sql, -1, &s, NULL);
	if (rc != SQLITE_OK)
		return idx_errno(rc);
	if (sqlite3_step(s) == SQLITE_ROW)
		n = (uint64_t)sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	*counter += n;
	if (n == 0)
		return 0;
	r = each_row(c->db, show_sql, report_row, c);
	if (r < 0)
		return r;
	if (c->repair && fix_sql) {
		r = exec(c->db, fix_sql);
		if (r < 0)
			return r;
		c->rep->repaired += n;
	} else {
		c->rep->unrepaired += n;
	}
	return 0;
}

static int check_extents_of(sqlite3_stmt *s, void *data)
{
	struct fsck_ctx *c = data;
	uint64_t ino = (uint64_t)sqlite3_column_int64(s, 0);
	uint64_t size = (uint64_t)sqlite3_column_int64(s, 1);
	uint64_t count = (uint64_t)sqlite3_column_int64(s, 2);
	uint64_t total = (uint64_t)sqlite3_column_int64(s, 3);
	uint64_t end = (uint64_t)sqlite3_column_int64(s, 4);

	c->rep->inodes++;
	/* Extents are contiguous from 0 and end at the size, or there are none (all zeros). */
	if (count > 0 && (total != end || end != size)) {
		fprintf(c->out,
			"inode %" PRIu64 ": extents cover %" PRIu64 " of %" PRIu64 " bytes\n", ino,
			total, size);
		c->rep->bad_extents++;
		c->rep->unrepaired++;
	}
	return 0;
}

/* Pack files that the index does not know. */
static int check_leaked_packs(struct fsck_ctx *c)
{
	int fd = dup(store_packs_fd(c->st));
	DIR *d;
	struct dirent *de;
	sqlite3_stmt *s;
	int rc;

	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	rewinddir(d);
	rc = sqlite3_prepare_v2(c->db, "SELECT 1 FROM packs WHERE id = ?1", -1, &s, NULL);
	if (rc != SQLITE_OK) {
		closedir(d);
		return idx_errno(rc);
	}
	while ((de = readdir(d))) {
		unsigned long long id;
		char extra;

		if (de->d_name[0] == '.')
			continue;
		if (sscanf(de->d_name, "%16llx.pac%c", &id, &extra) != 2 || extra != 'k') {
			if (c->out)
				fprintf(c->out, "packs/%s: not a pack name (left alone)\n",
					de->d_name);
			continue;
		}
		sqlite3_reset(s);
		sqlite3_bind_int64(s, 1, (sqlite3_int64)id);
		if (sqlite3_step(s) == SQLITE_ROW)
			continue;
		if (c->out)
			fprintf(c->out, "packs/%s: not in the index (left by a crash)%s\n",
				de->d_name,
				c->repair    ? ": removed"
				: c->crashed ? ": the next mount or gc removes it"
					     : "");
		c->rep->leaked_packs++;
		if (c->repair && unlinkat(store_packs_fd(c->st), de->d_name, 0) == 0)
			c->rep->repaired++;
		else if (!c->crashed)
			c->rep->unrepaired++;
	}
	sqlite3_finalize(s);
	closedir(d);
	return 0;
}

static int check_pack_present(sqlite3_stmt *s, void *data)
{
	struct fsck_ctx *c = data;
	uint64_t id = (uint64_t)sqlite3_column_int64(s, 0);
	char name[32];
	struct stat stt;

	store_pack_name(id, name, sizeof(name));
	if (fstatat(store_packs_fd(c->st), name, &stt, 0) < 0) {
		fprintf(c->out, "pack %s is missing\n", name);
		c->rep->missing_packs++;
		c->rep->unrepaired++;
	}
	return 0;
}

/* A path of ino from the root (one of its names), into buf, built from the end. */
static void path_of(sqlite3 *db, uint64_t ino, char *buf, size_t len)
{
	sqlite3_stmt *s;
	size_t pos = len - 1;
	int depth = 0;

	buf[pos] = '\0';
	if (sqlite3_prepare_v2(db, "SELECT parent, name FROM dentries WHERE ino = ?1 LIMIT 1", -1,
			       &s, NULL) != SQLITE_OK) {
		snprintf(buf, len, "?");
		return;
	}
	while (ino != IDX_ROOT_INO && depth++ < 256) {
		size_t n;

		sqlite3_reset(s);
		sqlite3_bind_int64(s, 1, (sqlite3_int64)ino);
		if (sqlite3_step(s) != SQLITE_ROW)
			break; /* no name left: the path stays relative to where it was lost */
		n = (size_t)sqlite3_column_bytes(s, 1);
		if (n + 1 > pos)
			break;
		pos -= n;
		memcpy(buf + pos, sqlite3_column_blob(s, 1), n);
		buf[--pos] = '/';
		ino = (uint64_t)sqlite3_column_int64(s, 0);
	}
	sqlite3_finalize(s);
	memmove(buf, buf + pos, len - pos);
	if (!buf[0])
		snprintf(buf, len, "/");
}

/* Say which files read damaged data: reads of them fail with EIO. */
static void report_damaged_files(struct fsck_ctx *c)
{
	sqlite3_stmt *s;
	char path[4096];

	if (sqlite3_prepare_v2(c->db, "SELECT DISTINCT ino FROM extents WHERE chunk = ?1", -1, &s,
			       NULL) != SQLITE_OK)
		return;
	for (size_t i = 0; i < c->nbad; i++) {
		sqlite3_reset(s);
		sqlite3_bind_int64(s, 1, (sqlite3_int64)c->bad[i]);
		while (sqlite3_step(s) == SQLITE_ROW) {
			uint64_t ino = (uint64_t)sqlite3_column_int64(s, 0);

			path_of(c->db, ino, path, sizeof(path));
			fprintf(c->out,
				"file %s (inode %" PRIu64 ") uses damaged chunk %" PRIu64
				": reads of it fail with EIO; delete it and let the package "
				"manager fetch it again\n",
				path, ino, c->bad[i]);
		}
	}
	sqlite3_finalize(s);
}

int maint_remove_leaked_packs(struct store *st)
{
	struct fsck_report rep = {0};
	struct fsck_ctx c = {.st = st, .db = idx_db(store_idx(st)), .repair = true, .rep = &rep};
	int r = check_leaked_packs(&c);

	return r < 0 ? r : (int)rep.repaired;
}

int maint_fsck(struct store *st, bool repair, bool live, FILE *out, struct fsck_report *ret,
	       maint_progress_fn progress, void *progress_data)
{
	struct fsck_ctx c = {.st = st,
			     .db = idx_db(store_idx(st)),
			     .out = out,
			     .repair = repair,
			     .progress = progress,
			     .progress_data = progress_data};
	int r;

	memset(ret, 0, sizeof(*ret));
	c.rep = ret;
	{
		char clean[8] = "";

		c.crashed =
			idx_meta_get(store_idx(st), "clean_shutdown", clean, sizeof(clean)) <= 0 ||
			strcmp(clean, "1") != 0;
	}
	c.buf = malloc(PACK_MAX_CHUNK);
	if (!c.buf)
		return -ENOMEM;
	r = exec(c.db, repair ? "BEGIN IMMEDIATE" : "BEGIN");
	if (r < 0)
		goto out_free;

	if (repair && !live) {
		r = check_query(&c, "SELECT count(*) FROM inodes WHERE nlink = 0",
				"SELECT 'inode ' || ino || ': no name left (orphan)' FROM inodes "
				"WHERE nlink = 0",
				NULL, &ret->orphans);
		if (r < 0)
			goto out_rollback;
		if (ret->orphans) {
			r = idx_delete_orphans(store_idx(st));
			if (r < 0)
				goto out_rollback;
			ret->unrepaired -= ret->orphans;
			ret->repaired += ret->orphans;
		}
	}
	r = check_query(&c,
			"SELECT count(*) FROM dentries d LEFT JOIN inodes i ON i.ino = d.ino "
			"WHERE i.ino IS NULL",
			"SELECT 'entry ' || quote(d.name) || ' in directory ' || d.parent || "
			"' names missing inode ' || d.ino FROM dentries d LEFT JOIN inodes i ON "
			"i.ino = d.ino WHERE i.ino IS NULL",
			"DELETE FROM dentries WHERE ino NOT IN (SELECT ino FROM inodes)",
			&ret->bad_dentries);
	if (r < 0)
		goto out_rollback;
	r = check_query(&c,
			"SELECT count(*) FROM inodes i WHERE i.mode & 61440 != 16384 AND "
			"i.nlink != (SELECT count(*) FROM dentries d WHERE d.ino = i.ino) AND "
			"i.nlink > 0",
			"SELECT 'inode ' || i.ino || ': nlink ' || i.nlink || ', names ' || "
			"(SELECT count(*) FROM dentries d WHERE d.ino = i.ino) FROM inodes i "
			"WHERE i.mode & 61440 != 16384 AND i.nlink != (SELECT count(*) FROM "
			"dentries d WHERE d.ino = i.ino) AND i.nlink > 0",
			"UPDATE inodes SET nlink = (SELECT count(*) FROM dentries d WHERE d.ino = "
			"inodes.ino) WHERE mode & 61440 != 16384 AND nlink > 0",
			&ret->bad_nlinks);
	if (r < 0)
		goto out_rollback;
	r = check_query(
		&c,
		"SELECT count(*) FROM inodes i WHERE i.mode & 61440 = 16384 AND "
		"i.nlink > 0 AND i.nlink != 2 + (SELECT count(*) FROM dentries d JOIN "
		"inodes j ON j.ino = d.ino WHERE d.parent = i.ino AND j.mode & 61440 = "
		"16384)",
		"SELECT 'directory ' || i.ino || ': nlink ' || i.nlink FROM inodes i WHERE "
		"i.mode & 61440 = 16384 AND i.nlink > 0 AND i.nlink != 2 + (SELECT "
		"count(*) FROM dentries d JOIN inodes j ON j.ino = d.ino WHERE d.parent = "
		"i.ino AND j.mode & 61440 = 16384)",
		"UPDATE inodes SET nlink = 2 + (SELECT count(*) FROM dentries d JOIN inodes "
		"j ON j.ino = d.ino WHERE d.parent = inodes.ino AND j.mode & 61440 = 16384) "
		"WHERE mode & 61440 = 16384 AND nlink > 0",
		&ret->bad_nlinks);
	if (r < 0)
		goto out_rollback;
	r = check_query(&c,
			"SELECT count(*) FROM extents e LEFT JOIN chunks c ON c.id = e.chunk "
			"WHERE e.chunk != 0 AND c.id IS NULL",
			"SELECT 'inode ' || e.ino || ' at ' || e.off || ': extent names missing "
			"chunk ' || e.chunk FROM extents e LEFT JOIN chunks c ON c.id = e.chunk "
			"WHERE e.chunk != 0 AND c.id IS NULL",
			NULL, &ret->dangling_extents);
	if (r < 0)
		goto out_rollback;
	/* Fewer references than uses would let gc drop live data: always damage. */
	r = check_query(
		&c,
		"SELECT count(*) FROM chunks c WHERE c.refs < (SELECT count(*) FROM "
		"extents e WHERE e.chunk = c.id)",
		"SELECT 'chunk ' || c.id || ': refs ' || c.refs || ', used ' || (SELECT "
		"count(*) FROM extents e WHERE e.chunk = c.id) FROM chunks c WHERE c.refs < "
		"(SELECT count(*) FROM extents e WHERE e.chunk = c.id)",
		"UPDATE chunks SET refs = (SELECT count(*) FROM extents e WHERE e.chunk = "
		"chunks.id) WHERE refs < (SELECT count(*) FROM extents e WHERE e.chunk = "
		"chunks.id)",
		&ret->bad_refs);
	if (r < 0)
		goto out_rollback;
	/*
	 * More references than uses are the pins of files being written: normal while mounted,
	 * and left by a crash otherwise, which the next mount (or gc) recounts. Only after a
	 * clean shutdown are they a fault.
	 */
	{
		uint64_t pins = 0;
		bool expected = live || c.crashed;

		if (expected && !repair) {
			r = check_query(&c,
					"SELECT count(*) FROM chunks c WHERE c.refs > (SELECT "
					"count(*) FROM extents e WHERE e.chunk = c.id)",
					"SELECT NULL WHERE 0", NULL, &pins);
			if (r < 0)
				goto out_rollback;
			ret->unrepaired -= pins;
			ret->pinned = pins;
			if (pins)
				fprintf(out,
					"%" PRIu64
					" chunks pinned by files being written%s: the next "
					"mount or gc recounts them\n",
					pins, live ? "" : " when the daemon stopped");
		} else {
			r = check_query(
				&c,
				"SELECT count(*) FROM chunks c WHERE c.refs > (SELECT "
				"count(*) FROM extents e WHERE e.chunk = c.id)",
				"SELECT 'chunk ' || c.id || ': refs ' || c.refs || ', used ' || "
				"(SELECT count(*) FROM extents e WHERE e.chunk = c.id) FROM "
				"chunks c WHERE c.refs > (SELECT count(*) FROM extents e WHERE "
				"e.chunk = c.id)",
				"UPDATE chunks SET refs = (SELECT count(*) FROM extents e WHERE "
				"e.chunk = chunks.id) WHERE refs > (SELECT count(*) FROM "
				"extents e WHERE e.chunk = chunks.id)",
				&ret->bad_refs);
			if (r < 0)
				goto out_rollback;
		}
	}
	r = each_row(c.db,
		     "SELECT i.ino, i.size, count(e.off), total(e.len), max(e.off + e.len) FROM "
		     "inodes i LEFT JOIN extents e ON e.ino = i.ino WHERE i.mode & 61440 = 32768 "
		     "GROUP BY i.ino",
		     check_extents_of, &c);
	if (r < 0)
		goto out_rollback;
	r = each_row(c.db, "SELECT id FROM packs", check_pack_present, &c);
	if (r < 0)
		goto out_rollback;
	if (progress) {
		sqlite3_stmt *s;

		if (sqlite3_prepare_v2(
			    c.db, "SELECT total(raw_len) FROM chunks WHERE refs > 0 AND pack != 0",
			    -1, &s, NULL) == SQLITE_OK) {
			if (sqlite3_step(s) == SQLITE_ROW)
				c.total_bytes = (uint64_t)sqlite3_column_int64(s, 0);
			sqlite3_finalize(s);
		}
	}
	/* Chunks only on the remote are checked when fetched, against the same digest. */
	r = check_query(&c, "SELECT count(*) FROM chunks WHERE refs > 0 AND pack = 0 AND rpack = 0",
			"SELECT 'chunk ' || id || ' is neither here nor on the remote' FROM chunks "
			"WHERE refs > 0 AND pack = 0 AND rpack = 0",
			NULL, &ret->bad_chunks);
	if (r < 0)
		goto out_rollback;
	r = each_row(c.db,
		     "SELECT id, key, digest, pack, raw_len, off, stored_len, flags FROM chunks "
		     "WHERE refs > 0 AND pack != 0 ORDER BY pack, off",
		     check_chunk, &c);
	if (r < 0)
		goto out_rollback;
	if (c.nbad)
		report_damaged_files(&c);
	if (!live) {
		r = check_leaked_packs(&c);
		if (r < 0)
			goto out_rollback;
	}
	r = exec(c.db, "COMMIT");
	goto out_free;
out_rollback:
	exec(c.db, "ROLLBACK");
out_free:
	free(c.buf);
	free(c.bad);
	return r;
}

/* ---- gc ---- */

struct pack_usage {
	uint64_t id, size, live;
};

static int collect_packs(sqlite3_stmt *s, void *data)
{
	struct pack_usage **v = data;
	size_t n = (size_t)(*v)[0].id; /* slot 0 counts */

	if (n % 64 == 0) {
		struct pack_usage *nv = realloc(*v, (n + 1 + 64) * sizeof(**v));

		if (!nv)
			return -ENOMEM;
		*v = nv;
	}
	(*v)[n + 1].id = (uint64_t)sqlite3_column_int64(s, 0);
	(*v)[n + 1].size = (uint64_t)sqlite3_column_int64(s, 1);
	(*v)[n + 1].live = (uint64_t)sqlite3_column_int64(s, 2);
	(*v)[0].id = n + 1;
	return 0;
}

struct victim {
	uint64_t parent, ino;
	char *name;
};

/* The least recently used files, skipping the first `skip` of them, into v (at most 64). */
static int pick_victims(sqlite3 *db, int skip, struct victim *v, size_t *ret_n)
{
	sqlite3_stmt *s;
	size_t n = 0;
	int rc;

	rc = sqlite3_prepare_v2(
		db,
		"SELECT d.parent, d.name, i.ino FROM inodes i JOIN dentries d "
		"ON d.ino = i.ino WHERE i.mode & 61440 = 32768 AND i.size > 0 "
		"ORDER BY max(i.used, i.mtime / 1000000000), i.ino LIMIT 64 OFFSET ?1",
		-1, &s, NULL);
	if (rc != SQLITE_OK)
		return idx_errno(rc);
	sqlite3_bind_int(s, 1, skip);
	while (n < 64 && (rc = sqlite3_step(s)) == SQLITE_ROW) {
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

/* Stored bytes that deleting ino would free: its chunks no other file uses. */
static uint64_t freed_by(sqlite3 *db, uint64_t ino)
{
	sqlite3_stmt *s;
	uint64_t freed = 0;

	if (sqlite3_prepare_v2(
		    db,
		    "SELECT total(c.stored_len) FROM chunks c WHERE c.id IN (SELECT chunk "
		    "FROM extents WHERE ino = ?1 AND chunk != 0) AND c.refs <= (SELECT "
		    "count(*) FROM extents e WHERE e.ino = ?1 AND e.chunk = c.id)",
		    -1, &s, NULL) != SQLITE_OK)
		return 0;
	sqlite3_bind_int64(s, 1, (sqlite3_int64)ino);
	if (sqlite3_step(s) == SQLITE_ROW)
		freed = (uint64_t)sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return freed;
}

/*
 * With a remote, the local store is a cache of it: drop the local copies of the least recently
 * used files' chunks that are safely on the remote (in a pack gc has not condemned), until live
 * local data fits max_size. Names stay; the data is fetched again when read. Data not yet pushed
 * is never dropped.
 */
static int evict_local_copies(struct store *st, uint64_t max_size, const struct gc_hooks *h,
			      uint64_t used, struct gc_report *rep)
{
	sqlite3 *db = idx_db(store_idx(st));
	sqlite3_stmt *files = NULL, *sum = NULL, *drop = NULL;
	int rc, r = 0;

	if (sqlite3_prepare_v2(
		    db,
		    "SELECT ino, size FROM inodes WHERE mode & 61440 = 32768 AND size > 0 "
		    "ORDER BY max(used, mtime / 1000000000), ino",
		    -1, &files, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(
		    db,
		    "SELECT total(stored_len) FROM chunks WHERE pack != 0 AND rpack != 0 "
		    "AND rpack NOT IN (SELECT id FROM rpacks WHERE condemned != 0) AND "
		    "id IN (SELECT chunk FROM extents WHERE ino = ?1 AND chunk != 0)",
		    -1, &sum, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db,
			       "UPDATE chunks SET pack = 0, off = 0, stored_len = 0, flags = 0 "
			       "WHERE pack != 0 AND rpack != 0 AND rpack NOT IN (SELECT id FROM "
			       "rpacks WHERE condemned != 0) AND id IN (SELECT chunk FROM extents "
			       "WHERE ino = ?1 AND chunk != 0)",
			       -1, &drop, NULL) != SQLITE_OK) {
		r = -EIO;
		goto out;
	}
	while (used > max_size && (rc = sqlite3_step(files)) == SQLITE_ROW) {
		uint64_t ino = (uint64_t)sqlite3_column_int64(files, 0), freed = 0;

		if (h && h->skip && h->skip(h->data, ino))
			continue;
		sqlite3_reset(sum);
		sqlite3_bind_int64(sum, 1, (sqlite3_int64)ino);
		if (sqlite3_step(sum) == SQLITE_ROW)
			freed = (uint64_t)sqlite3_column_int64(sum, 0);
		sqlite3_reset(sum);
		if (!freed)
			continue;
		sqlite3_reset(drop);
		sqlite3_bind_int64(drop, 1, (sqlite3_int64)ino);
		if (sqlite3_step(drop) != SQLITE_DONE) {
			r = -EIO;
			goto out;
		}
		rep->evicted_files++;
		rep->evicted_bytes += (uint64_t)sqlite3_column_int64(files, 1);
		used -= MIN(freed, used);
	}
out:
	sqlite3_finalize(files);
	sqlite3_finalize(sum);
	sqlite3_finalize(drop);
	return r;
}

/* Delete the least recently used files, one at a time, until live data fits max_size. */
static int evict(struct store *st, uint64_t max_size, const struct gc_hooks *h,
		 struct gc_report *rep)
{
	sqlite3 *db = idx_db(store_idx(st));
	struct victim v[64];
	uint64_t used = 0;
	int skipped = 0, r;

	{
		sqlite3_stmt *s;

		if (sqlite3_prepare_v2(
			    db, "SELECT total(stored_len) FROM chunks WHERE refs > 0 AND pack != 0",
			    -1, &s, NULL) != SQLITE_OK)
			return -EIO;
		if (sqlite3_step(s) == SQLITE_ROW)
			used = (uint64_t)sqlite3_column_int64(s, 0);
		sqlite3_finalize(s);
	}
	if (h && h->remote_backed)
		return evict_local_copies(st, max_size, h, used, rep);
	while (used > max_size) {
		size_t n = 0;

		r = pick_victims(db, skipped, v, &n);
		if (r < 0 || n == 0)
			return r;
		for (size_t i = 0; i < n; i++) {
			struct idx_inode in;

			if (r < 0 || used <= max_size) {
				free(v[i].name); /* done: only the rest of the batch to free */
				continue;
			}
			if (h && h->skip && h->skip(h->data, v[i].ino)) {
				skipped++; /* it stays first in line: the next batch starts after it
					    */
				free(v[i].name);
				continue;
			}
			r = idx_get_inode(store_idx(st), v[i].ino, &in);
			if (r == 1) {
				uint64_t freed = in.nlink <= 1 ? freed_by(db, v[i].ino) : 0;

				if (h && h->evicted)
					h->evicted(h->data, v[i].parent, v[i].name);
				r = idx_del_dentry(store_idx(st), v[i].parent, v[i].name);
				in.nlink = in.nlink ? in.nlink - 1 : 0;
				if (r == 0)
					r = idx_put_inode(store_idx(st), &in);
				if (r == 0 && in.nlink == 0) {
					r = idx_delete_inode(store_idx(st), v[i].ino);
					rep->evicted_files++;
					rep->evicted_bytes += in.size;
					used -= MIN(freed, used);
				}
			}
			free(v[i].name);
		}
		if (r < 0)
			return r;
	}
	return 0;
}

static int rewrite_chunk(sqlite3_stmt *s, void *data)
{
	struct store *st = ((void **)data)[0];
	uint8_t *buf = ((void **)data)[1];
	sqlite3_stmt *upd = ((void **)data)[2];
	uint64_t id = (uint64_t)sqlite3_column_int64(s, 0);
	struct pack_loc loc, nloc;
	chunk_key key;
	chunk_digest digest;
	uint64_t pack = (uint64_t)sqlite3_column_int64(s, 3), npack;
	int64_t raw_len = sqlite3_column_int64(s, 4);
	int r;

	if (sqlite3_column_bytes(s, 1) != HASH_KEY_SIZE ||
	    sqlite3_column_bytes(s, 2) != HASH_DIGEST_SIZE || raw_len <= 0 ||
	    raw_len > PACK_MAX_CHUNK)
		return -EUCLEAN;
	memcpy(key.b, sqlite3_column_blob(s, 1), HASH_KEY_SIZE);
	memcpy(digest.b, sqlite3_column_blob(s, 2), HASH_DIGEST_SIZE);
	loc.offset = (uint64_t)sqlite3_column_int64(s, 5);
	loc.stored_len = (uint32_t)sqlite3_column_int64(s, 6);
	loc.flags = (uint32_t)sqlite3_column_int64(s, 7);
	r = store_read_chunk(st, pack, &loc, &key, buf, (uint32_t)raw_len);
	if (r < 0)
		return r;
	r = store_append_chunk(st, &key, &digest, buf, (uint32_t)raw_len, &npack, &nloc);
	if (r < 0)
		return r;
	sqlite3_reset(upd);
	sqlite3_bind_int64(upd, 1, (sqlite3_int64)id);
	sqlite3_bind_int64(upd, 2, (sqlite3_int64)npack);
	sqlite3_bind_int64(upd, 3, (sqlite3_int64)nloc.offset);
	sqlite3_bind_int64(upd, 4, nloc.stored_len);
	sqlite3_bind_int64(upd, 5, nloc.flags);
	return sqlite3_step(upd) == SQLITE_DONE ? 0 : -EIO;
}

/*
 * Make the last commit durable before files it stopped referring to are deleted. The commit is
 * in the WAL (synchronous=NORMAL does not sync it): sync the WAL itself. A checkpoint is not
 * enough: with a reader holding an older snapshot (a push, a stats command) it stops short,
 * says so only in a result row, and leaves the WAL unsynced, and a power loss would then bring
 * back an index that names the deleted packs.
 */
static int make_durable(struct store *st)
{
	const char *wal = idx_wal_path(store_idx(st));
	int fd = open(wal, O_RDONLY | O_CLOEXEC), r = 0;

	if (fd < 0)
		return errno == ENOENT ? 0 : -errno; /* no WAL: the commit went to the file */
	if (fdatasync(fd) < 0)
		r = -errno;
	close(fd);
	return r;
}

static void unlink_pack(struct store *st, uint64_t id)
{
	char name[32];

	store_pack_name(id, name, sizeof(name));
	unlinkat(store_packs_fd(st), name, 0);
}

static int delete_pack_row(sqlite3 *db, uint64_t id)
{
	char sql[96];

	snprintf(sql, sizeof(sql), "DELETE FROM packs WHERE id = %" PRIu64, id);
	return exec(db, sql);
}

/* Move a pack's live chunks to the active pack, in a transaction of its own, then delete it. */
static int rewrite_pack(struct store *st, const struct pack_usage *p, uint8_t *buf)
{
	sqlite3 *db = idx_db(store_idx(st));
	sqlite3_stmt *upd = NULL;
	char sql[256];
	int r;

	r = exec(db, "BEGIN IMMEDIATE");
	if (r < 0)
		return r;
	if (sqlite3_prepare_v2(db,
			       "UPDATE chunks SET pack = ?2, off = ?3, stored_len = ?4, flags = ?5 "
			       "WHERE id = ?1",
			       -1, &upd, NULL) != SQLITE_OK) {
		r = -EIO;
		goto out_rollback;
	}
	{
		void *ctx[3] = {st, buf, upd};

		snprintf(
			sql, sizeof(sql),
			"SELECT id, key, digest, pack, raw_len, off, stored_len, flags FROM chunks "
			"WHERE pack = %" PRIu64 " ORDER BY off",
			p->id);
		r = each_row(db, sql, rewrite_chunk, ctx);
	}
	sqlite3_finalize(upd);
	upd = NULL;
	if (r == 0)
		r = delete_pack_row(db, p->id);
	/* The copies must be on disk before the index points at them. */
	if (r == 0)
		r = store_sync_packs(st);
	if (r < 0)
		goto out_rollback;
	r = exec(db, "COMMIT");
	if (r < 0)
		goto out_rollback;
	r = make_durable(st);
	store_drop_pack_fds(st);
	if (r == 0)
		unlink_pack(st, p->id);
	return r;
out_rollback:
	sqlite3_finalize(upd);
	exec(db, "ROLLBACK");
	return r;
}

int maint_gc(struct store *st, uint64_t max_size, FILE *progress, const struct gc_hooks *hooks,
	     struct gc_report *ret)
{
	sqlite3 *db = idx_db(store_idx(st));
	struct pack_usage *packs = calloc(65, sizeof(*packs));
	uint8_t *buf = malloc(PACK_MAX_CHUNK);
	bool live = hooks && hooks->live;
	int r;

	memset(ret, 0, sizeof(*ret));
	if (!packs || !buf) {
		r = -ENOMEM;
		goto out_free;
	}

	/* Phase 1: evict, drop dead chunks, delete packs with nothing live. No space needed. */
	r = exec(db, "BEGIN IMMEDIATE");
	if (r < 0)
		goto out_free;
	if (!live) {
		r = idx_delete_orphans(store_idx(st));
		if (r >= 0)
			r = idx_recount_refs(store_idx(st));
		if (r < 0)
			goto out_rollback;
	}
	if (max_size) {
		r = evict(st, max_size, hooks, ret);
		if (r < 0)
			goto out_rollback;
	}
	r = exec(db, "DELETE FROM chunks WHERE refs <= 0");
	if (r < 0)
		goto out_rollback;
	ret->chunks_dropped = (uint64_t)sqlite3_changes(db);
	r = each_row(db,
		     "SELECT p.id, p.size, (SELECT total(c.stored_len + 72) FROM chunks c WHERE "
		     "c.pack = p.id) FROM packs p",
		     collect_packs, &packs);
	if (r < 0)
		goto out_rollback;
	for (size_t i = 1; i <= packs[0].id; i++) {
		struct pack_usage *p = &packs[i];
		struct stat stt;
		char name[32];

		store_pack_name(p->id, name, sizeof(name));
		if (fstatat(store_packs_fd(st), name, &stt, 0) == 0)
			p->size = (uint64_t)stt.st_size;
		ret->bytes_before += p->size;
		if (p->live > 0 || p->id == store_active_pack(st))
			continue;
		r = delete_pack_row(db, p->id);
		if (r < 0)
			goto out_rollback;
	}
	r = exec(db, "COMMIT");
	if (r < 0)
		goto out_rollback;
	r = make_durable(st);
	if (r < 0)
		goto out_free;
	store_drop_pack_fds(st);
	for (size_t i = 1; i <= packs[0].id; i++) {
		if (packs[i].live == 0 && packs[i].id != store_active_pack(st)) {
			unlink_pack(st, packs[i].id);
			ret->packs_deleted++;
		}
	}

	/*
	 * Phase 2: rewrite mostly dead packs one at a time, so the extra space is one pack. To
	 * bring the store under max_size, packs with a tenth dead go too, while it is over.
	 */
	{
		uint64_t total = 0, todo = 0, done = 0;
		int64_t start = mono_ns();

		for (size_t i = 1; i <= packs[0].id; i++)
			if (packs[i].live > 0 || packs[i].id == store_active_pack(st))
				total += packs[i].size;
		/* For progress: the live bytes of the packs that qualify now (an upper bound). */
		for (size_t i = 1; i <= packs[0].id; i++)
			if (packs[i].live > 0 && packs[i].id != store_active_pack(st) &&
			    (packs[i].live * 2 < packs[i].size ||
			     (max_size && total > max_size &&
			      packs[i].live * 10 < packs[i].size * 9)))
				todo += packs[i].live;
		for (size_t i = 1; i <= packs[0].id; i++) {
			struct pack_usage *p = &packs[i];
			bool mostly_dead = p->live * 2 < p->size;
			bool over = max_size && total > max_size && p->live * 10 < p->size * 9;

			if (p->live == 0 || p->id == store_active_pack(st) ||
			    !(mostly_dead || over))
				continue;
			r = rewrite_pack(st, p, buf);
			if (r < 0)
				goto out_free;
			ret->packs_rewritten++;
			total -= MIN(total, p->size - MIN(p->size, p->live));
			done += p->live;
			if (progress) {
				double secs = (double)(mono_ns() - start) / 1e9;
				double rate = secs > 0 ? (double)done / secs : 0;
				char b1[32], b2[32], b3[32];

				fprintf(progress,
					"\r\033[Kgc: rewriting packs: %s of %s live (%.0f%%), %s/s",
					format_size(done, b1, sizeof(b1)),
					format_size(MAX(todo, done), b2, sizeof(b2)),
					100.0 * (double)done / (double)MAX(MAX(todo, done), 1),
					format_size((uint64_t)rate, b3, sizeof(b3)));
				if (rate > 0 && todo > done)
					fprintf(progress, ", %.0f s left",
						(double)(todo - done) / rate);
				fflush(progress);
			}
		}
		if (progress && done)
			fputc('\n', progress);
	}
	if (!live) {
		struct fsck_report frep = {0};
		struct fsck_ctx c = {.st = st, .db = db, .repair = true, .rep = &frep};

		check_leaked_packs(&c);
		ret->packs_deleted += frep.repaired;
	}
	fsync(store_packs_fd(st));
	if (idx_pack_bytes(store_idx(st), &ret->bytes_after) < 0)
		ret->bytes_after = 0;
	goto out_free;
out_rollback:
	exec(db, "ROLLBACK");
out_free:
	free(packs);
	free(buf);
	return r;
}
