/* SPDX-License-Identifier: MIT */
/*
 * The cold load: filling a store whose namespace is empty from merged catalogs, in bulk. A new
 * runner's store gets hundreds of thousands of rows, and one statement per row spends much of its
 * time in statement overhead: rows of each table are kept until a batch is full (blobs by
 * pointer: the caller keeps them alive until idx_bulk_end), then inserted by one multi-row
 * INSERT. Ids of inodes, dentries and chunks continue after the highest in the database.
 *
 * Invariants: chunks.refs is counted here, not given: a chunk row is written at idx_bulk_end with
 * the number of extent rows that named it, and an extent may only name a chunk added through the
 * same bulk load (or 0, a hole). Link counts and the tree's shape are the caller's (it built the
 * tree in memory).
 *
 * Not thread-safe, like every idx file; runs in the caller's transaction.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idx_priv.h"

#define BATCH_ROWS 64

struct bval {
	const void *p; /* blob, or NULL for an integer */
	sqlite3_int64 i;
	int len;
};

/* The rows of one table not inserted yet. */
struct batch {
	sqlite3 *db;
	const char *head; /* "INSERT INTO t (a, b) VALUES" */
	int ncols, nrows;
	sqlite3_stmt *full;
	struct bval *v; /* BATCH_ROWS * ncols */
	int r;          /* the first failure */
};

/* A chunk row to write at the end, once its references are counted. */
struct bchunk {
	chunk_key key;
	chunk_digest digest;
	uint32_t raw_len, refs;
	uint64_t rpack;
	struct pack_loc rloc;
};

enum { B_INODES, B_DENTRIES, B_SYMLINKS, B_EXTENTS, B_CHUNKS, B_RBASE, B_COUNT };

static const struct {
	const char *head;
	int ncols;
} batch_tables[B_COUNT] = {
	[B_INODES] = {"INSERT INTO inodes (ino, parent, mode, uid, gid, nlink, size, rdev, atime, "
		      "mtime, ctime) VALUES",
		      11},
	[B_DENTRIES] = {"INSERT INTO dentries (id, parent, name, ino) VALUES", 4},
	[B_SYMLINKS] = {"INSERT INTO symlinks (ino, target) VALUES", 2},
	[B_EXTENTS] = {"INSERT INTO extents (ino, off, len, chunk) VALUES", 4},
	[B_CHUNKS] = {"INSERT INTO chunks (id, key, digest, raw_len, pack, off, stored_len, flags, "
		      "refs, rpack, roff, rstored_len, rflags) VALUES",
		      13},
	[B_RBASE] = {"INSERT OR REPLACE INTO rbase (path, type, stamp, sig) VALUES", 4},
};

struct idx_bulk {
	struct idx *x;
	struct batch b[B_COUNT];
	uint64_t next_dentry;
	uint64_t first_chunk; /* the id of chunks[0] */
	struct bchunk *chunks;
	size_t nchunks, capchunks;
};

static sqlite3_stmt *batch_prepare(struct batch *b, int rows)
{
	size_t len = strlen(b->head) + (size_t)rows * ((size_t)b->ncols * 2 + 3) + 1;
	char *sql = malloc(len), *p;
	sqlite3_stmt *s = NULL;

	if (!sql)
		return NULL;
	p = sql + sprintf(sql, "%s", b->head);
	for (int i = 0; i < rows; i++) {
		*p++ = i ? ',' : ' ';
		*p++ = '(';
		for (int c = 0; c < b->ncols; c++) {
			if (c)
				*p++ = ',';
			*p++ = '?';
		}
		*p++ = ')';
	}
	*p = '\0';
	if (sqlite3_prepare_v2(b->db, sql, -1, &s, NULL) != SQLITE_OK)
		s = NULL;
	free(sql);
	return s;
}

static int batch_init(struct batch *b, sqlite3 *db, const char *head, int ncols)
{
	memset(b, 0, sizeof(*b));
	b->db = db;
	b->head = head;
	b->ncols = ncols;
	b->v = calloc((size_t)BATCH_ROWS * (size_t)ncols, sizeof(*b->v));
	b->full = batch_prepare(b, BATCH_ROWS);
	return b->v && b->full ? 0 : -ENOMEM;
}

static void batch_int(struct batch *b, int col, sqlite3_int64 i)
{
	b->v[b->nrows * b->ncols + col] = (struct bval){.i = i};
}

static void batch_blob(struct batch *b, int col, const void *p, int len)
{
	b->v[b->nrows * b->ncols + col] = (struct bval){.p = p, .len = len};
}

static void batch_exec(struct batch *b, sqlite3_stmt *s, int rows)
{
	for (int k = 0; k < rows * b->ncols; k++) {
		if (b->v[k].p)
			sqlite3_bind_blob(s, k + 1, b->v[k].p, b->v[k].len, SQLITE_STATIC);
		else
			sqlite3_bind_int64(s, k + 1, b->v[k].i);
	}
	if (b->r == 0 && sqlite3_step(s) != SQLITE_DONE)
		b->r = idx_errno(sqlite3_errcode(b->db));
	sqlite3_reset(s);
}

/* The row being filled is complete: insert the batch when it is full. The first failure. */
static int batch_row_done(struct batch *b)
{
	if (++b->nrows < BATCH_ROWS)
		return b->r;
	batch_exec(b, b->full, BATCH_ROWS);
	b->nrows = 0;
	return b->r;
}

/* Insert what is left and free the batch; the first failure, or 0. */
static int batch_flush(struct batch *b)
{
	if (b->nrows && b->r == 0) {
		sqlite3_stmt *rest = batch_prepare(b, b->nrows);

		if (rest)
			batch_exec(b, rest, b->nrows);
		else
			b->r = -EIO;
		sqlite3_finalize(rest);
	}
	sqlite3_finalize(b->full);
	free(b->v);
	b->full = NULL;
	b->v = NULL;
	return b->r;
}

/* The highest inode, dentry and chunk ids in use (0 for an empty table). */
static int max_ids(struct idx *x, uint64_t ret[3])
{
	sqlite3_stmt *s = idx_stmt(x, "SELECT (SELECT max(ino) FROM inodes), (SELECT max(id) FROM "
				      "dentries), (SELECT max(id) FROM chunks)");

	if (!s)
		return -EIO;
	memset(ret, 0, 3 * sizeof(*ret));
	if (sqlite3_step(s) == SQLITE_ROW)
		for (int i = 0; i < 3; i++)
			ret[i] = (uint64_t)sqlite3_column_int64(s, i);
	sqlite3_reset(s);
	return 0;
}

int idx_bulk_begin(struct idx *x, struct idx_bulk **ret, uint64_t *ret_first_ino)
{
	struct idx_bulk *b = calloc(1, sizeof(*b));
	uint64_t max[3];
	int r = 0;

	if (!b)
		return -ENOMEM;
	b->x = x;
	for (int i = 0; i < B_COUNT && r == 0; i++)
		r = batch_init(&b->b[i], idx_sqlite(x), batch_tables[i].head,
			       batch_tables[i].ncols);
	if (r == 0)
		r = max_ids(x, max);
	if (r < 0) {
		idx_bulk_end(b);
		return r;
	}
	b->next_dentry = max[1] + 1;
	b->first_chunk = max[2] + 1;
	*ret_first_ino = (max[0] > IDX_ROOT_INO ? max[0] : IDX_ROOT_INO) + 1;
	*ret = b;
	return 0;
}

int idx_bulk_inode(struct idx_bulk *b, const struct idx_inode *in)
{
	struct batch *t = &b->b[B_INODES];

	batch_int(t, 0, (sqlite3_int64)in->ino);
	batch_int(t, 1, (sqlite3_int64)in->parent);
	batch_int(t, 2, in->mode);
	batch_int(t, 3, in->uid);
	batch_int(t, 4, in->gid);
	batch_int(t, 5, in->nlink);
	batch_int(t, 6, (sqlite3_int64)in->size);
	batch_int(t, 7, (sqlite3_int64)in->rdev);
	batch_int(t, 8, in->atime);
	batch_int(t, 9, in->mtime);
	batch_int(t, 10, in->ctime);
	return batch_row_done(t);
}

int idx_bulk_dentry(struct idx_bulk *b, uint64_t parent, const char *name, uint64_t ino)
{
	struct batch *t = &b->b[B_DENTRIES];

	batch_int(t, 0, (sqlite3_int64)b->next_dentry++);
	batch_int(t, 1, (sqlite3_int64)parent);
	batch_blob(t, 2, name, (int)strlen(name));
	batch_int(t, 3, (sqlite3_int64)ino);
	return batch_row_done(t);
}

int idx_bulk_symlink(struct idx_bulk *b, uint64_t ino, const char *target)
{
	struct batch *t = &b->b[B_SYMLINKS];

	batch_int(t, 0, (sqlite3_int64)ino);
	batch_blob(t, 1, target, (int)strlen(target));
	return batch_row_done(t);
}

int idx_bulk_chunk(struct idx_bulk *b, const chunk_key *key, const chunk_digest *digest,
		   uint32_t raw_len, uint64_t rpack, const struct pack_loc *rloc, uint64_t *ret_id)
{
	if (b->nchunks == b->capchunks) {
		size_t ncap = b->capchunks ? b->capchunks * 2 : 4096;
		struct bchunk *nv = realloc(b->chunks, ncap * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		b->chunks = nv;
		b->capchunks = ncap;
	}
	b->chunks[b->nchunks] = (struct bchunk){
		.key = *key, .digest = *digest, .raw_len = raw_len, .rpack = rpack, .rloc = *rloc};
	*ret_id = b->first_chunk + b->nchunks++;
	return 0;
}

int idx_bulk_extent(struct idx_bulk *b, uint64_t ino, uint64_t off, uint32_t len, uint64_t chunk)
{
	struct batch *t = &b->b[B_EXTENTS];

	if (chunk && (chunk < b->first_chunk || chunk - b->first_chunk >= b->nchunks))
		return -EINVAL;
	if (chunk)
		b->chunks[chunk - b->first_chunk].refs++;
	batch_int(t, 0, (sqlite3_int64)ino);
	batch_int(t, 1, (sqlite3_int64)off);
	batch_int(t, 2, len);
	batch_int(t, 3, (sqlite3_int64)chunk);
	return batch_row_done(t);
}

int idx_bulk_rbase(struct idx_bulk *b, const char *path, uint8_t type, int64_t stamp,
		   const uint8_t sig[16])
{
	struct batch *t = &b->b[B_RBASE];

	batch_blob(t, 0, path, (int)strlen(path));
	batch_int(t, 1, type);
	batch_int(t, 2, stamp);
	batch_blob(t, 3, sig, 16);
	return batch_row_done(t);
}

/* One row per chunk added, with its count of extents; remote only (no local pack). */
static int write_chunks(struct idx_bulk *b)
{
	struct batch *t = &b->b[B_CHUNKS];
	int r = 0;

	for (size_t i = 0; i < b->nchunks && r == 0; i++) {
		const struct bchunk *c = &b->chunks[i];

		batch_int(t, 0, (sqlite3_int64)(b->first_chunk + i));
		batch_blob(t, 1, c->key.b, HASH_KEY_SIZE);
		batch_blob(t, 2, c->digest.b, HASH_DIGEST_SIZE);
		batch_int(t, 3, c->raw_len);
		batch_int(t, 4, 0);
		batch_int(t, 5, 0);
		batch_int(t, 6, 0);
		batch_int(t, 7, 0);
		batch_int(t, 8, c->refs);
		batch_int(t, 9, (sqlite3_int64)c->rpack);
		batch_int(t, 10, (sqlite3_int64)c->rloc.offset);
		batch_int(t, 11, c->rloc.stored_len);
		batch_int(t, 12, c->rloc.flags);
		r = batch_row_done(t);
	}
	return r;
}

int idx_bulk_end(struct idx_bulk *b)
{
	int r = 0, r2;

	if (!b)
		return 0;
	if (b->b[B_CHUNKS].full)
		r = write_chunks(b);
	for (int i = 0; i < B_COUNT; i++) {
		r2 = b->b[i].full || b->b[i].v ? batch_flush(&b->b[i]) : -ENOMEM;
		if (r == 0)
			r = r2;
	}
	free(b->chunks);
	free(b);
	return r;
}
