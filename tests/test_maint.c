/* SPDX-License-Identifier: MIT */
/*
 * fsck and gc (index/maint.c over index/idx_check.c): each fault fsck looks for is made in a
 * store written through the vfs, found by name, repaired where fsck can, and a second fsck is
 * clean; gc rewrites a mostly dead pack and the surviving file reads back whole.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "idx_priv.h" /* white-box: the tests damage rows directly */
#include "maint.h"
#include "store.h"
#include "vfs.h"

static char dir[] = "/tmp/pkgcachefs-test-maint-XXXXXX";
static const struct vfs_ctx ctx = {.uid = 0, .gid = 0};

static void setup(void)
{
	cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(maint, .init = setup, .fini = teardown);

static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
	for (size_t i = 0; i < n; i++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		p[i] = (uint8_t)(seed >> 56);
	}
}

static uint64_t write_file(struct vfs *v, uint64_t parent, const char *name, size_t n,
			   uint64_t seed)
{
	uint8_t *data = malloc(n);
	struct vfs_file *f;
	struct stat st;

	cr_assert_not_null(data);
	fill_random(data, n, seed);
	cr_assert_eq(vfs_create(v, &ctx, parent, name, 0644, O_WRONLY, &st, &f), 0);
	cr_assert_eq(vfs_write(v, f, data, n, 0, NULL, NULL), (ssize_t)n);
	cr_assert_eq(vfs_flush(v, f), 0);
	vfs_release(v, f);
	free(data);
	return st.st_ino;
}

static bool file_reads_back(struct vfs *v, uint64_t ino, size_t n, uint64_t seed)
{
	uint8_t *want = malloc(n), *got = malloc(n);
	struct vfs_file *f;
	size_t done = 0;
	bool same;

	cr_assert(want && got);
	fill_random(want, n, seed);
	cr_assert_eq(vfs_open_file(v, ino, O_RDONLY, &f), 0);
	while (done < n) {
		ssize_t r = vfs_read(v, f, got + done, n - done, (off_t)done);

		if (r <= 0)
			break;
		done += (size_t)r;
	}
	vfs_release(v, f);
	same = done == n && memcmp(want, got, n) == 0;
	free(want);
	free(got);
	return same;
}

static void sql(struct store *st, const char *q)
{
	char *err = NULL;

	cr_assert_eq(sqlite3_exec(idx_sqlite(store_idx(st)), q, NULL, NULL, &err), SQLITE_OK,
		     "%s: %s", q, err ? err : "");
}

/* fsck of st into a string the caller frees. */
static char *fsck(struct store *st, bool repair, struct fsck_report *rep)
{
	char *text = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);

	cr_assert_not_null(out);
	cr_assert_eq(maint_fsck(st, repair, false, out, rep, NULL, NULL), 0);
	fclose(out);
	return text;
}

/*
 * A store with a directory "d" holding a (100 KB) and b (a hard link to a), c (200 KB), and e (an
 * empty file); ret_* get the inodes.
 */
static void make_store(uint64_t *ret_dir, uint64_t *ret_a, uint64_t *ret_c)
{
	struct store *st;
	struct vfs *v;
	struct stat sb;

	cr_assert_eq(store_open(dir, STORE_CREATE | STORE_LOCK, &st, NULL), 0);
	cr_assert_eq(vfs_open(st, NULL, &v), 0);
	cr_assert_eq(vfs_mkdir(v, &ctx, 1, "d", 0755, &sb), 0);
	*ret_dir = sb.st_ino;
	*ret_a = write_file(v, *ret_dir, "a", 100000, 1);
	*ret_c = write_file(v, *ret_dir, "c", 200000, 2);
	write_file(v, *ret_dir, "e", 0, 3);
	cr_assert_eq(vfs_link(v, *ret_a, *ret_dir, "b", &sb), 0);
	cr_assert_eq(vfs_close(v), 0);
}

static struct store *open_store(void)
{
	struct store *st;

	cr_assert_eq(store_open(dir, STORE_LOCK, &st, NULL), 0);
	return st;
}

Test(maint, a_store_written_and_closed_is_clean)
{
	uint64_t d, a, c;
	struct fsck_report rep;
	struct store *st;
	char *text;

	make_store(&d, &a, &c);
	st = open_store();
	text = fsck(st, false, &rep);
	cr_assert(fsck_clean(&rep), "fsck said: %s", text);
	cr_assert_eq(rep.inodes, 3, "three regular files: %llu", (unsigned long long)rep.inodes);
	cr_assert_geq(rep.bytes_checked, 300000, "every chunk read back and its digest checked");
	cr_assert_gt(rep.chunks, 0);
	free(text);
	cr_assert_eq(store_close(st), 0);
}

Test(maint, each_index_fault_is_named_then_repaired)
{
	uint64_t d, a, c;
	struct fsck_report rep;
	struct store *st;
	char q[256], *text;

	make_store(&d, &a, &c);
	st = open_store();
	/* Wrong nlink on a file and on a directory, a name of no inode, refs too low and too high.
	 */
	snprintf(q, sizeof(q), "UPDATE inodes SET nlink = 5 WHERE ino = %llu",
		 (unsigned long long)a);
	sql(st, q);
	snprintf(q, sizeof(q), "UPDATE inodes SET nlink = 9 WHERE ino = %llu",
		 (unsigned long long)d);
	sql(st, q);
	snprintf(q, sizeof(q),
		 "INSERT INTO dentries (parent, name, ino) VALUES (%llu, 'ghost', 999999)",
		 (unsigned long long)d);
	sql(st, q);
	snprintf(q, sizeof(q),
		 "UPDATE chunks SET refs = 0 WHERE id = (SELECT min(chunk) FROM extents WHERE "
		 "ino = %llu)",
		 (unsigned long long)c);
	sql(st, q);
	snprintf(q, sizeof(q),
		 "UPDATE chunks SET refs = refs + 3 WHERE id = (SELECT max(chunk) FROM extents "
		 "WHERE ino = %llu)",
		 (unsigned long long)a);
	sql(st, q);
	sql(st, "UPDATE meta SET value = '1' WHERE key = 'clean_shutdown'");

	text = fsck(st, false, &rep);
	cr_assert_not(fsck_clean(&rep));
	cr_assert_eq(rep.bad_nlinks, 2, "%s", text);
	cr_assert_eq(rep.bad_dentries, 1, "%s", text);
	cr_assert_eq(rep.bad_refs, 2, "one too low, one too high after a clean shutdown: %s", text);
	cr_assert_eq(rep.repaired, 0);
	cr_assert_not_null(strstr(text, "names missing inode 999999"), "%s", text);
	cr_assert_not_null(strstr(text, ": nlink 5, names 2"), "%s", text);
	free(text);

	text = fsck(st, true, &rep);
	cr_assert_eq(rep.repaired, 5, "%s", text);
	cr_assert(fsck_clean(&rep), "%s", text);
	free(text);
	text = fsck(st, false, &rep);
	cr_assert(fsck_clean(&rep), "after the repair: %s", text);
	free(text);
	cr_assert_eq(store_close(st), 0);
}

Test(maint, damaged_data_names_the_files_that_read_it)
{
	uint64_t d, a, c;
	struct fsck_report rep;
	struct store *st;
	char name[32], *text;
	int fd;

	make_store(&d, &a, &c);
	st = open_store();
	/* Overwrite the middle of the first pack: some chunk of a or c no longer matches. */
	store_pack_name(1, name, sizeof(name));
	fd = openat(store_packs_fd(st), name, O_WRONLY);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pwrite(fd, "damage!damage!damage!", 21, 150000), 21);
	close(fd);
	store_drop_pack_fds(st);

	text = fsck(st, false, &rep);
	cr_assert_eq(rep.bad_chunks, 1, "%s", text);
	cr_assert_not_null(strstr(text, "damaged or missing"), "%s", text);
	cr_assert(strstr(text, "file /d/c ") || strstr(text, "file /d/a ") ||
			  strstr(text, "file /d/b "),
		  "the file is named by its path: %s", text);
	cr_assert_not_null(strstr(text, "reads of it fail with EIO"), "%s", text);
	free(text);
	cr_assert_eq(store_close(st), 0);
}

Test(maint, missing_and_leaked_packs)
{
	uint64_t d, a, c;
	struct fsck_report rep;
	struct store *st;
	char name[32], *text;
	int fd;

	make_store(&d, &a, &c);
	st = open_store();
	sql(st, "UPDATE meta SET value = '1' WHERE key = 'clean_shutdown'");
	store_pack_name(77, name, sizeof(name));
	fd = openat(store_packs_fd(st), name, O_WRONLY | O_CREAT, 0600);
	cr_assert_geq(fd, 0);
	close(fd);
	sql(st, "INSERT INTO packs (id, size, created) VALUES (55, 0, 0)");

	text = fsck(st, false, &rep);
	cr_assert_eq(rep.leaked_packs, 1, "%s", text);
	cr_assert_eq(rep.missing_packs, 1, "%s", text);
	cr_assert_not_null(strstr(text, "not in the index"), "%s", text);
	store_pack_name(55, name, sizeof(name));
	cr_assert_not_null(strstr(text, name), "the missing pack is named: %s", text);
	free(text);

	text = fsck(st, true, &rep);
	cr_assert_eq(rep.leaked_packs, 1, "%s", text);
	cr_assert_not_null(strstr(text, ": removed"), "%s", text);
	free(text);
	store_pack_name(77, name, sizeof(name));
	cr_assert_lt(faccessat(store_packs_fd(st), name, F_OK, 0), 0, "the leaked pack is gone");
	cr_assert_eq(store_close(st), 0);
}

Test(maint, gc_rewrites_a_mostly_dead_pack_and_keeps_the_rest)
{
	struct store *st;
	struct vfs *v;
	struct gc_report rep;
	struct fsck_report frep;
	uint64_t big, keep;
	char *text;

	cr_assert_eq(store_open(dir, STORE_CREATE | STORE_LOCK, &st, NULL), 0);
	cr_assert_eq(vfs_open(st, NULL, &v), 0);
	big = write_file(v, 1, "big", 4 << 20, 10);
	keep = write_file(v, 1, "small", 300000, 11);
	cr_assert_eq(vfs_sync(v), 0);
	cr_assert_eq(store_seal_active(st), 0, "the next writes go to a new pack");
	write_file(v, 1, "later", 10000, 12);
	cr_assert_eq(vfs_unlink(v, 1, "big"), 0);
	vfs_forget(v, big, 1); /* the kernel's lookup reference from create */
	cr_assert_eq(vfs_sync(v), 0);

	cr_assert_eq(vfs_gc(v, 0, &rep), 0);
	cr_assert_gt(rep.chunks_dropped, 0, "big's chunks are dead");
	cr_assert_eq(rep.packs_rewritten, 1, "the first pack is mostly dead: %llu rewritten",
		     (unsigned long long)rep.packs_rewritten);
	cr_assert_lt(rep.bytes_after, rep.bytes_before / 4, "before %llu, after %llu",
		     (unsigned long long)rep.bytes_before, (unsigned long long)rep.bytes_after);
	cr_assert(file_reads_back(v, keep, 300000, 11), "the live file moved whole");
	cr_assert_eq(vfs_close(v), 0);

	st = open_store();
	text = fsck(st, false, &frep);
	cr_assert(fsck_clean(&frep), "%s", text);
	free(text);
	cr_assert_eq(store_close(st), 0);
}
