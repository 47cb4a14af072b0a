/* SPDX-License-Identifier: MIT */
/*
 * Index tests: schema creation and versioning, inodes and entries, extents with reference
 * counting, chunk lookup confirmed by digest, xattrs, orphans, and group transactions with
 * per-operation savepoints.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "idx.h"
#include "idx_priv.h" /* white-box: the tests read and damage rows directly */

static char dir[] = "/tmp/pkgcachefs-test-idx-XXXXXX";
static char path[256];
static struct idx *x;

static void setup(void)
{
	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/index.db", dir);
	cr_assert_eq(idx_open(path, true, &x), 0);
	cr_assert_eq(idx_cache_inodes(x), 0); /* as store_open does for the lock holder */
}

static void teardown(void)
{
	char cmd[300];

	idx_close(x);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
}

static uint64_t new_file(uint64_t parent, const char *name)
{
	struct idx_inode in = {.mode = 0100644, .nlink = 1};
	uint64_t ino;

	cr_assert_eq(idx_new_inode(x, &in, &ino), 0);
	cr_assert_eq(idx_add_dentry(x, parent, name, ino), 0);
	return ino;
}

static uint64_t chunk_refs(uint64_t id)
{
	sqlite3_stmt *s;
	uint64_t refs = UINT64_MAX;

	sqlite3_prepare_v2(idx_sqlite(x), "SELECT refs FROM chunks WHERE id = ?1", -1, &s, NULL);
	sqlite3_bind_int64(s, 1, (sqlite3_int64)id);
	if (sqlite3_step(s) == SQLITE_ROW)
		refs = (uint64_t)sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return refs;
}

TestSuite(idx, .init = setup, .fini = teardown);

Test(idx, inode_roundtrip)
{
	struct idx_inode in = {.mode = 0100640,
			       .uid = 1000,
			       .gid = 100,
			       .nlink = 1,
			       .size = 12,
			       .rdev = 0,
			       .atime = 1,
			       .mtime = 1234567890123456789,
			       .ctime = 3};
	struct idx_inode out;
	uint64_t a, b;

	cr_assert_eq(idx_begin(x), 0);
	cr_assert_eq(idx_new_inode(x, &in, &a), 0);
	cr_assert_eq(idx_new_inode(x, &in, &b), 0);
	cr_assert_gt(b, a);
	cr_assert_eq(idx_get_inode(x, a, &out), 1);
	cr_assert_eq(out.mode, 0100640);
	cr_assert_eq(out.uid, 1000);
	cr_assert_eq(out.mtime, 1234567890123456789);
	cr_assert_eq(idx_get_inode(x, 999999, &out), 0);
	cr_assert_eq(idx_commit(x), 0);
}

Test(idx, dentries)
{
	uint64_t f, got;

	cr_assert_eq(idx_begin(x), 0);
	f = new_file(1, "a\xff-not-utf8");
	cr_assert_eq(idx_lookup(x, 1, "a\xff-not-utf8", &got), 1);
	cr_assert_eq(got, f);
	cr_assert_eq(idx_lookup(x, 1, "b", &got), 0);
	cr_assert_eq(idx_add_dentry(x, 1, "a\xff-not-utf8", f), -EEXIST);
	cr_assert_eq(idx_dir_is_empty(x, 1), 0);
	cr_assert_eq(idx_del_dentry(x, 1, "a\xff-not-utf8"), 0);
	cr_assert_eq(idx_dir_is_empty(x, 1), 1);
}

Test(idx, extents_keep_refcounts)
{
	chunk_key k1 = {{1}}, k2 = {{2}};
	chunk_digest d1 = {{1}}, d2 = {{2}};
	struct pack_loc loc = {.offset = 64, .stored_len = 10};
	uint64_t c1, c2, f, g;
	struct idx_extent e[3] = {{0}};
	struct idx_extent *got;
	size_t n;

	cr_assert_eq(idx_begin(x), 0);
	cr_assert_eq(idx_add_chunk(x, &k1, &d1, 10, 1, &loc, &c1), 0);
	cr_assert_eq(idx_add_chunk(x, &k2, &d2, 10, 1, &loc, &c2), 0);
	f = new_file(1, "f");
	g = new_file(1, "g");
	/* The same chunk twice in one file, a hole, then another file sharing it. */
	e[0] = (struct idx_extent){.off = 0, .len = 10, .chunk = c1};
	e[1] = (struct idx_extent){.off = 10, .len = 100, .chunk = 0};
	e[2] = (struct idx_extent){.off = 110, .len = 10, .chunk = c1};
	cr_assert_eq(idx_set_extents(x, f, e, 3), 0);
	cr_assert_eq(chunk_refs(c1), 2);
	e[0].chunk = c2;
	cr_assert_eq(idx_set_extents(x, g, e, 1), 0);
	cr_assert_eq(chunk_refs(c2), 1);
	cr_assert_eq(idx_get_extents(x, f, &got, &n), 0);
	cr_assert_eq(n, 3);
	cr_assert_eq(got[1].chunk, 0);
	cr_assert_eq(got[2].off, 110);
	cr_assert(hash_key_equal(&got[2].key, &k1));
	free(got);
	/* Replacing and deleting drop references exactly. */
	cr_assert_eq(idx_set_extents(x, f, e, 1), 0);
	cr_assert_eq(chunk_refs(c1), 0);
	cr_assert_eq(chunk_refs(c2), 2);
	cr_assert_eq(idx_delete_inode(x, g), 0);
	cr_assert_eq(chunk_refs(c2), 1);
}

static uint64_t new_dir(uint64_t parent, const char *name)
{
	struct idx_inode in = {.mode = 040755, .nlink = 2, .parent = parent};
	uint64_t ino;

	cr_assert_eq(idx_new_inode(x, &in, &ino), 0);
	cr_assert_eq(idx_add_dentry(x, parent, name, ino), 0);
	return ino;
}

static void set_size(uint64_t ino, uint64_t size)
{
	struct idx_inode in;

	cr_assert_eq(idx_get_inode(x, ino, &in), 1);
	in.size = size;
	cr_assert_eq(idx_put_inode(x, &in), 0);
}

/*
 * Per top-level directory: files and logical bytes over the whole subtree, unique bytes counted
 * once per distinct chunk within a directory (and again in each other directory that uses it),
 * hard links once, empty directories and root-level files as rows of their own.
 */
Test(idx, top_level_aggregation)
{
	chunk_key k1 = {{1}}, k2 = {{2}}, k3 = {{3}};
	chunk_digest d1 = {{1}}, d2 = {{2}}, d3 = {{3}};
	struct pack_loc l1 = {.offset = 64, .stored_len = 40};
	struct pack_loc l2 = {.offset = 200, .stored_len = 70};
	struct pack_loc l3 = {.offset = 400, .stored_len = 10};
	uint64_t c1, c2, c3, pip, http, npm, a, b, c, d, lone;
	struct idx_extent e[3] = {{0}};
	struct idx_top_stats *t;
	size_t n;

	cr_assert_eq(idx_begin(x), 0);
	cr_assert_eq(idx_init_root(x, 0, 0, 1), 0);
	cr_assert_eq(idx_add_chunk(x, &k1, &d1, 100, 1, &l1, &c1), 0);
	cr_assert_eq(idx_add_chunk(x, &k2, &d2, 100, 1, &l2, &c2), 0);
	cr_assert_eq(idx_add_chunk(x, &k3, &d3, 50, 0, &l3, &c3), 0); /* only on a remote */
	pip = new_dir(1, "pip");
	http = new_dir(pip, "http");
	npm = new_dir(1, "npm");
	new_dir(1, "uv"); /* empty */
	/* pip: a = c1 c1 (200 bytes), b = c1 c2 (200 bytes) deeper down, and c a hard link of b
	 * in the same directory: 400 logical, 200 unique, 110 stored. */
	a = new_file(pip, "a");
	b = new_file(http, "b");
	cr_assert_eq(idx_add_dentry(x, pip, "b-link", b), 0);
	e[0] = (struct idx_extent){.off = 0, .len = 100, .chunk = c1};
	e[1] = (struct idx_extent){.off = 100, .len = 100, .chunk = c1};
	cr_assert_eq(idx_set_extents(x, a, e, 2), 0);
	set_size(a, 200);
	e[1].chunk = c2;
	cr_assert_eq(idx_set_extents(x, b, e, 2), 0);
	set_size(b, 200);
	/* npm: c = c2 + a hole + c3 (remote only): 250 logical, 150 unique, 70 stored here. */
	c = new_file(npm, "c");
	e[0] = (struct idx_extent){.off = 0, .len = 100, .chunk = c2};
	e[1] = (struct idx_extent){.off = 100, .len = 100, .chunk = 0};
	e[2] = (struct idx_extent){.off = 200, .len = 50, .chunk = c3};
	cr_assert_eq(idx_set_extents(x, c, e, 3), 0);
	set_size(c, 250);
	/* A symlink counts as no file. */
	{
		struct idx_inode in = {.mode = 0120777, .nlink = 1};

		cr_assert_eq(idx_new_inode(x, &in, &d), 0);
		cr_assert_eq(idx_add_dentry(x, npm, "link", d), 0);
	}
	/* A file right under the root is a row of its own. */
	lone = new_file(1, "README");
	set_size(lone, 7);
	cr_assert_eq(idx_commit(x), 0);

	cr_assert_eq(idx_get_top_stats(x, &t, &n), 0);
	cr_assert_eq(n, 4);
	cr_assert_str_eq(t[0].name, "README");
	cr_assert_eq(t[0].files, 1);
	cr_assert_eq(t[0].logical_bytes, 7);
	cr_assert_eq(t[0].unique_bytes, 0);
	cr_assert_str_eq(t[1].name, "npm");
	cr_assert_eq(t[1].ino, npm);
	cr_assert_eq(t[1].files, 1);
	cr_assert_eq(t[1].logical_bytes, 250);
	cr_assert_eq(t[1].unique_bytes, 150);
	cr_assert_eq(t[1].stored_bytes, 70);
	cr_assert_str_eq(t[2].name, "pip");
	cr_assert_eq(t[2].files, 2);
	cr_assert_eq(t[2].logical_bytes, 400);
	cr_assert_eq(t[2].unique_bytes, 200);
	cr_assert_eq(t[2].stored_bytes, 110);
	cr_assert_str_eq(t[3].name, "uv");
	cr_assert_eq(t[3].files + t[3].logical_bytes + t[3].unique_bytes, 0);
	idx_top_stats_free(t, n);

	/* An empty root has no rows. */
	cr_assert_eq(idx_del_dentry(x, 1, "pip"), 0);
	cr_assert_eq(idx_del_dentry(x, 1, "npm"), 0);
	cr_assert_eq(idx_del_dentry(x, 1, "uv"), 0);
	cr_assert_eq(idx_del_dentry(x, 1, "README"), 0);
	cr_assert_eq(idx_get_top_stats(x, &t, &n), 0);
	cr_assert_eq(n, 0);
	idx_top_stats_free(t, n);
	idx_top_stats_free(NULL, 0);
}

Test(idx, chunk_match_needs_digest)
{
	chunk_key k = {{7}};
	chunk_digest d1 = {{1}}, d2 = {{2}};
	struct pack_loc loc = {.offset = 64, .stored_len = 10};
	uint64_t a, b, got;

	cr_assert_eq(idx_begin(x), 0);
	cr_assert_eq(idx_add_chunk(x, &k, &d1, 10, 1, &loc, &a), 0);
	cr_assert_eq(idx_find_chunk(x, &k, &d2, &got, NULL, NULL), 0,
		     "a key match alone must not dedup");
	cr_assert_eq(idx_add_chunk(x, &k, &d2, 10, 1, &loc, &b), 0);
	cr_assert_eq(idx_find_chunk(x, &k, &d2, &got, NULL, NULL), 1);
	cr_assert_eq(got, b);
	cr_assert_eq(idx_find_chunk(x, &k, &d1, &got, NULL, NULL), 1);
	cr_assert_eq(got, a);
}

Test(idx, xattrs)
{
	char buf[64];
	uint64_t f;

	cr_assert_eq(idx_begin(x), 0);
	f = new_file(1, "f");
	cr_assert_eq(idx_set_xattr(x, f, "user.a", "1", 1, IDX_XATTR_REPLACE), -ENODATA);
	cr_assert_eq(idx_set_xattr(x, f, "user.a", "1", 1, IDX_XATTR_CREATE), 0);
	cr_assert_eq(idx_set_xattr(x, f, "user.a", "22", 2, IDX_XATTR_CREATE), -EEXIST);
	cr_assert_eq(idx_set_xattr(x, f, "user.a", "22", 2, 0), 0);
	cr_assert_eq(idx_set_xattr(x, f, "user.empty", "", 0, 0), 0);
	cr_assert_eq(idx_get_xattr(x, f, "user.a", buf, sizeof(buf)), 2);
	cr_assert_eq(memcmp(buf, "22", 2), 0);
	cr_assert_eq(idx_get_xattr(x, f, "user.empty", buf, sizeof(buf)), 0);
	cr_assert_eq(idx_list_xattr(x, f, buf, sizeof(buf)), 18);
	cr_assert_str_eq(buf, "user.a");
	cr_assert_str_eq(buf + 7, "user.empty");
	cr_assert_eq(idx_remove_xattr(x, f, "user.a"), 0);
	cr_assert_eq(idx_remove_xattr(x, f, "user.a"), -ENODATA);
}

Test(idx, orphans_deleted)
{
	struct idx_inode in = {.mode = 0100644, .nlink = 0};
	uint64_t o, keep;
	struct idx_inode out;

	cr_assert_eq(idx_begin(x), 0);
	cr_assert_eq(idx_new_inode(x, &in, &o), 0);
	keep = new_file(1, "kept");
	cr_assert_eq(idx_delete_orphans(x), 1);
	cr_assert_eq(idx_get_inode(x, o, &out), 0);
	cr_assert_eq(idx_get_inode(x, keep, &out), 1);
}

Test(idx, savepoint_undoes_only_failed_op)
{
	uint64_t a, got;

	cr_assert_eq(idx_op_begin(x), 0);
	a = new_file(1, "kept");
	idx_op_end(x, false);
	cr_assert_eq(idx_op_begin(x), 0);
	new_file(1, "undone");
	idx_op_end(x, true);
	cr_assert_eq(idx_commit(x), 0);
	cr_assert_eq(idx_lookup(x, 1, "kept", &got), 1);
	cr_assert_eq(got, a);
	cr_assert_eq(idx_lookup(x, 1, "undone", &got), 0);
}

/*
 * The writer's inode cache never answers with a row the database no longer holds: not after
 * a statement that bypasses idx_put_inode, nor after a savepoint or a transaction is rolled
 * back, nor after a delete.
 */
Test(idx, inode_cache_follows_every_change)
{
	struct idx_inode in = {.mode = 0100644, .nlink = 1}, out;
	char sql[128];
	uint64_t a;

	cr_assert_eq(idx_begin(x), 0);
	cr_assert_eq(idx_new_inode(x, &in, &a), 0);
	cr_assert_eq(idx_get_inode(x, a, &out), 1);
	cr_assert_eq(out.mode, 0100644);

	snprintf(sql, sizeof(sql), "UPDATE inodes SET mode = %d WHERE ino = %llu", 0100600,
		 (unsigned long long)a);
	cr_assert_eq(sqlite3_exec(idx_sqlite(x), sql, NULL, NULL, NULL), SQLITE_OK);
	cr_assert_eq(idx_get_inode(x, a, &out), 1);
	cr_assert_eq(out.mode, 0100600, "a raw UPDATE left the cached mode %o", out.mode);

	cr_assert_eq(idx_op_begin(x), 0);
	out.uid = 7;
	cr_assert_eq(idx_put_inode(x, &out), 0);
	cr_assert_eq(idx_get_inode(x, a, &out), 1);
	cr_assert_eq(out.uid, 7);
	idx_op_end(x, true);
	cr_assert_eq(idx_get_inode(x, a, &out), 1);
	cr_assert_eq(out.uid, 0, "ROLLBACK TO left the cached uid %u", out.uid);
	cr_assert_eq(idx_commit(x), 0);

	cr_assert_eq(idx_begin(x), 0);
	out.uid = 9;
	cr_assert_eq(idx_put_inode(x, &out), 0);
	cr_assert_eq(idx_rollback(x), 0);
	cr_assert_eq(idx_get_inode(x, a, &out), 1);
	cr_assert_eq(out.uid, 0, "ROLLBACK left the cached uid %u", out.uid);

	snprintf(sql, sizeof(sql), "DELETE FROM inodes WHERE ino = %llu", (unsigned long long)a);
	cr_assert_eq(sqlite3_exec(idx_sqlite(x), sql, NULL, NULL, NULL), SQLITE_OK);
	cr_assert_eq(idx_get_inode(x, a, &out), 0, "a deleted inode was still found");
}

Test(idx, survives_reopen_and_refuses_newer_schema)
{
	uint64_t f, got;
	struct idx *y;

	cr_assert_eq(idx_begin(x), 0);
	f = new_file(1, "persist");
	cr_assert_eq(idx_commit(x), 0);
	idx_close(x);
	cr_assert_eq(idx_open(path, false, &x), 0);
	cr_assert_eq(idx_lookup(x, 1, "persist", &got), 1);
	cr_assert_eq(got, f);
	cr_assert_eq(sqlite3_exec(idx_sqlite(x),
				  "UPDATE meta SET value = '99' WHERE key = 'schema_version'", NULL,
				  NULL, NULL),
		     SQLITE_OK);
	cr_assert_eq(idx_open(path, false, &y), -EPROTO);
}

Test(idx, path_of_inode_and_reader_snapshot)
{
	char buf[IDX_PATH_MAX + 1], small[4];
	struct idx *r;
	uint64_t a, b, f, orphan, p = IDX_ROOT_INO;

	cr_assert_eq(idx_begin(x), 0);
	cr_assert_eq(idx_init_root(x, 0, 0, 1), 0);
	a = new_dir(IDX_ROOT_INO, "a");
	b = new_dir(a, "b");
	f = new_file(b, "f");
	cr_assert_eq(idx_path(x, f, buf, sizeof(buf)), 0);
	cr_assert_str_eq(buf, "a/b/f");
	cr_assert_eq(idx_path(x, IDX_ROOT_INO, buf, sizeof(buf)), 0);
	cr_assert_str_eq(buf, "");
	cr_assert_eq(idx_path(x, f, small, sizeof(small)), -ENAMETOOLONG);
	orphan = new_file(b, "o");
	cr_assert_eq(idx_del_dentry(x, b, "o"), 0);
	cr_assert_eq(idx_path(x, orphan, buf, sizeof(buf)), -ENOENT);
	/* 2,100 levels of "d": 4,199 bytes, past IDX_PATH_MAX. */
	for (int i = 0; i < 2100; i++)
		p = new_dir(p, "d");
	cr_assert_eq(idx_path(x, p, buf, sizeof(buf)), -ENAMETOOLONG);
	cr_assert_eq(idx_commit(x), 0);

	/* A reader keeps its snapshot while the writer goes on. */
	cr_assert_eq(idx_open_reader(path, &r), 0);
	cr_assert_eq(idx_begin(x), 0);
	cr_assert_eq(idx_del_dentry(x, b, "f"), 0);
	cr_assert_eq(idx_commit(x), 0);
	cr_assert_eq(idx_path(r, f, buf, sizeof(buf)), 0);
	cr_assert_str_eq(buf, "a/b/f");
	cr_assert_eq(idx_path(x, f, buf, sizeof(buf)), -ENOENT);
	idx_close(r);
}

/* size of the database file itself (not its WAL) */
static off_t db_file_size(void)
{
	struct stat st;

	cr_assert_eq(stat(path, &st), 0);
	return st.st_size;
}

/* One transaction that leaves about 5,000 pages (20 MB) in the WAL. */
static void write_pages(void)
{
	cr_assert_eq(idx_begin(x), 0);
	cr_assert_eq(sqlite3_exec(idx_sqlite(x),
				  "CREATE TABLE IF NOT EXISTS big (b BLOB);"
				  "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n"
				  " WHERE i < 5000) INSERT INTO big SELECT zeroblob(4000) FROM n",
				  NULL, NULL, NULL),
		     SQLITE_OK);
	cr_assert_eq(idx_commit(x), 0);
}

/* The commit that passes the threshold checkpoints only without deferral (the control at the
 * end); deferred, idx_checkpoint does it on its own connection, and closing gives x back its
 * automatic checkpoint. */
Test(idx, deferred_checkpoints_leave_commits_alone)
{
	struct idx_ckpt *c;
	off_t before;

	cr_assert_eq(idx_defer_checkpoints(x, &c), 0);
	before = db_file_size();
	cr_assert(!idx_checkpoint_due(c));
	write_pages();
	cr_assert_eq(db_file_size(), before, "the commit checkpointed: %lld bytes",
		     (long long)db_file_size());
	cr_assert(idx_checkpoint_due(c));
	cr_assert_eq(idx_checkpoint(c), 0);
	cr_assert_gt(db_file_size(), before + 5000 * 4000);
	cr_assert(!idx_checkpoint_due(c));
	idx_ckpt_close(x, c);

	before = db_file_size();
	write_pages();
	cr_assert_gt(db_file_size(), before + 4000 * 4000, "no automatic checkpoint after close");
}
