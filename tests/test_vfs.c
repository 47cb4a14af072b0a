/* SPDX-License-Identifier: MIT */
/*
 * Filesystem core tests without a mount: the same calls the FUSE layer makes. Covers the write
 * and read path through staging and chunking, dedup across files, a forced XXH3 collision that
 * must not share content, persistence across close and reopen, rename and unlink semantics,
 * and orphans of unlinked open files.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sqlite3.h>

#include "idx_priv.h" /* white-box: the tests damage rows directly */
#include "maint.h"
#include "vfs.h"
#include "vfs_priv.h" /* white-box: the count of commits running after their close */

static char dir[] = "/tmp/pkgcachefs-test-vfs-XXXXXX";
static struct vfs *v;
static const struct vfs_ctx ctx = {.uid = 0, .gid = 0};

static void open_vfs(void)
{
	struct store *st;

	cr_assert_eq(store_open(dir, STORE_CREATE | STORE_LOCK, &st, NULL), 0);
	cr_assert_eq(vfs_open(st, NULL, &v), 0);
}

static void setup(void)
{
	cr_assert_not_null(mkdtemp(dir));
	open_vfs();
}

static void teardown(void)
{
	char cmd[300];

	if (v)
		cr_assert_eq(vfs_close(v), 0);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
}

static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
	for (size_t i = 0; i < n; i++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		p[i] = (uint8_t)(seed >> 56);
	}
}

static uint64_t write_file(const char *name, const uint8_t *data, size_t n)
{
	struct vfs_file *f;
	struct stat st;
	size_t done = 0;

	cr_assert_eq(vfs_create(v, &ctx, 1, name, 0644, O_WRONLY, &st, &f), 0);
	while (done < n) {
		size_t step = n - done < 100000 ? n - done : 100000;

		cr_assert_eq(vfs_write(v, f, data + done, step, (off_t)done, NULL, NULL),
			     (ssize_t)step);
		done += step;
	}
	cr_assert_eq(vfs_flush(v, f), 0);
	vfs_release(v, f);
	return st.st_ino;
}

static void check_file(uint64_t ino, const uint8_t *data, size_t n)
{
	struct vfs_file *f;
	uint8_t *buf = malloc(n + 100);
	size_t done = 0;

	cr_assert_eq(vfs_open_file(v, ino, O_RDONLY, &f), 0);
	while (done < n) {
		ssize_t got = vfs_read(v, f, buf + done, 131072, (off_t)done);

		cr_assert_gt(got, 0, "read at %zu: %zd", done, got);
		done += (size_t)got;
	}
	cr_assert_eq(done, n);
	cr_assert_eq(vfs_read(v, f, buf, 100, (off_t)n), 0, "read past the end");
	cr_assert_eq(memcmp(buf, data, n), 0);
	vfs_release(v, f);
	free(buf);
}

TestSuite(vfs, .init = setup, .fini = teardown);

Test(vfs, write_read_and_dedup)
{
	size_t n = 3 << 20;
	uint8_t *data = malloc(n);
	struct idx_stats s;
	uint64_t a, b;

	fill_random(data, n, 1);
	a = write_file("a", data, n);
	b = write_file("b", data, n);
	check_file(a, data, n);
	check_file(b, data, n);
	cr_assert_eq(vfs_sync(v), 0);
	cr_assert_eq(idx_get_stats(store_idx(vfs_store(v)), &s), 0);
	cr_assert_eq(s.logical_bytes, 2 * n);
	cr_assert_eq(s.chunk_bytes, n, "identical files are stored once");
	free(data);
}

/*
 * create for a name that exists (a merge made it after the kernel cached its absence): without
 * O_EXCL it opens the file there, as open(2) would; with O_EXCL it is EEXIST.
 */
Test(vfs, create_of_an_existing_name_opens_it_unless_excl)
{
	static const uint8_t data[] = "merged from the remote";
	struct vfs_ctx user = {.uid = 1000, .gid = 1000};
	struct vfs_file *f;
	struct stat st;
	uint64_t ino = write_file("there", data, sizeof(data));

	cr_assert_eq(vfs_create(v, &ctx, 1, "there", 0644, O_WRONLY | O_EXCL, &st, &f), -EEXIST);
	cr_assert_eq(vfs_create(v, &ctx, 1, "there", 0644, O_RDONLY, &st, &f), 0);
	cr_assert_eq(st.st_ino, ino);
	cr_assert_eq(st.st_size, sizeof(data));
	vfs_release(v, f);
	vfs_forget(v, ino, 1);
	check_file(ino, data, sizeof(data));
	/* Another user may not open a file only its owner may write. */
	cr_assert_eq(vfs_create(v, &user, 1, "there", 0644, O_WRONLY, &st, &f), -EACCES);
	cr_assert_eq(vfs_create(v, &ctx, 1, "there", 0644, O_WRONLY | O_TRUNC, &st, &f), 0);
	cr_assert_eq(st.st_size, 0);
	vfs_release(v, f);
	vfs_forget(v, ino, 1);
	cr_assert_eq(vfs_mkdir(v, &ctx, 1, "adir", 0755, &st), 0);
	cr_assert_eq(vfs_create(v, &ctx, 1, "adir", 0644, O_WRONLY, &st, &f), -EISDIR);
}

Test(vfs, sparse_and_partial_reads)
{
	struct vfs_file *f;
	struct stat st;
	uint8_t buf[1000], zero[1000] = {0};

	cr_assert_eq(vfs_create(v, &ctx, 1, "sparse", 0644, O_RDWR, &st, &f), 0);
	cr_assert_eq(vfs_write(v, f, "end", 3, 10 << 20, NULL, NULL), 3);
	cr_assert_eq(vfs_flush(v, f), 0);
	vfs_release(v, f);
	cr_assert_eq(vfs_getattr(v, st.st_ino, &st), 0);
	cr_assert_eq(st.st_size, (10 << 20) + 3);
	cr_assert_eq(vfs_open_file(v, st.st_ino, O_RDONLY, &f), 0);
	cr_assert_eq(vfs_read(v, f, buf, sizeof(buf), 5 << 20), (ssize_t)sizeof(buf));
	cr_assert_eq(memcmp(buf, zero, sizeof(buf)), 0);
	cr_assert_eq(vfs_read(v, f, buf, sizeof(buf), (10 << 20) + 1), 2);
	cr_assert_eq(memcmp(buf, "nd", 2), 0);
	vfs_release(v, f);
}

/* A chunk whose key collides with another's must still read back as its own bytes. */
Test(vfs, forced_key_collision_does_not_share)
{
	size_t n = 4096;
	uint8_t a[4096], b[4096];
	chunk_key kb;
	sqlite3_stmt *s;
	uint64_t ia, ib;

	fill_random(a, n, 11);
	fill_random(b, n, 22);
	ia = write_file("a", a, n);
	/* Forge: give a's stored chunk the key b's content will have. */
	hash_key(b, n, &kb);
	cr_assert_eq(vfs_sync(v), 0);
	cr_assert_eq(sqlite3_prepare_v2(idx_sqlite(store_idx(vfs_store(v))),
					"UPDATE chunks SET key = ?1", -1, &s, NULL),
		     SQLITE_OK);
	sqlite3_bind_blob(s, 1, kb.b, sizeof(kb.b), SQLITE_STATIC);
	cr_assert_eq(sqlite3_step(s), SQLITE_DONE);
	sqlite3_finalize(s);
	ib = write_file("b", b, n);
	check_file(ib, b, n);
	(void)ia;
}

Test(vfs, persists_across_reopen)
{
	size_t n = 1 << 20;
	uint8_t *data = malloc(n);
	struct stat st;
	uint64_t a;

	fill_random(data, n, 5);
	a = write_file("kept", data, n);
	cr_assert_eq(vfs_close(v), 0);
	v = NULL;
	open_vfs();
	cr_assert_eq(vfs_lookup(v, 1, "kept", &st), 0);
	cr_assert_eq(st.st_ino, a);
	cr_assert_eq(st.st_size, (off_t)n);
	check_file(a, data, n);
	free(data);
}

Test(vfs, rename_semantics)
{
	struct stat st;
	uint64_t a, b;

	a = write_file("a", (const uint8_t *)"AAAA", 4);
	b = write_file("b", (const uint8_t *)"BB", 2);
	cr_assert_eq(vfs_rename(v, 1, "a", 1, "b", RENAME_NOREPLACE), -EEXIST);
	cr_assert_eq(vfs_rename(v, 1, "a", 1, "b", RENAME_EXCHANGE), 0);
	cr_assert_eq(vfs_lookup(v, 1, "a", &st), 0);
	cr_assert_eq(st.st_ino, b);
	cr_assert_eq(vfs_rename(v, 1, "a", 1, "b", 0), 0);
	cr_assert_eq(vfs_lookup(v, 1, "a", &st), -ENOENT);
	cr_assert_eq(vfs_lookup(v, 1, "b", &st), 0);
	cr_assert_eq(st.st_ino, b);
	cr_assert_eq(vfs_mkdir(v, &ctx, 1, "d", 0755, &st), 0);
	cr_assert_eq(vfs_rename(v, 1, "d", st.st_ino, "inside", 0), -EINVAL);
	cr_assert_eq(vfs_rename(v, 1, "b", 1, "d", 0), -EISDIR);
	(void)a;
}

Test(vfs, unlinked_open_file_lives_until_release)
{
	struct vfs_file *f;
	struct stat st;
	uint8_t buf[8];
	uint64_t a;
	struct fsck_report rep;

	a = write_file("gone", (const uint8_t *)"content!", 8);
	cr_assert_eq(vfs_open_file(v, a, O_RDONLY, &f), 0);
	cr_assert_eq(vfs_unlink(v, 1, "gone"), 0);
	cr_assert_eq(vfs_lookup(v, 1, "gone", &st), -ENOENT);
	cr_assert_eq(vfs_read(v, f, buf, 8, 0), 8);
	cr_assert_eq(memcmp(buf, "content!", 8), 0);
	vfs_release(v, f);
	vfs_forget(v, a, 1); /* the lookup reference vfs_create took */
	cr_assert_eq(vfs_getattr(v, a, &st), -ENOENT);
	cr_assert_eq(vfs_sync(v), 0);
	cr_assert_eq(maint_fsck(vfs_store(v), false, true, stderr, &rep, NULL, NULL), 0);
	cr_assert(fsck_clean(&rep));
}

/* A staged file unlinked while open leaves nothing in staging/ once it is closed and forgotten. */
Test(vfs, unlinked_staged_file_leaves_no_staging_file)
{
	uint8_t data[300];
	struct vfs_file *f;
	struct stat st;
	char name[64];

	fill_random(data, sizeof(data), 5);
	cr_assert_eq(vfs_create(v, &ctx, 1, "staged", 0644, O_RDWR, &st, &f), 0);
	cr_assert_eq(vfs_write(v, f, data + 100, 200, 100, NULL, NULL), 200);
	cr_assert_eq(vfs_write(v, f, data, 100, 0, NULL, NULL), 100); /* not a stream: staged */
	snprintf(name, sizeof(name), "%s/staging/%llu", dir, (unsigned long long)st.st_ino);
	cr_assert_eq(access(name, F_OK), 0, "a random write stages the file");
	cr_assert_eq(vfs_unlink(v, 1, "staged"), 0);
	vfs_release(v, f);
	vfs_forget(v, st.st_ino, 1);
	cr_assert_eq(vfs_getattr(v, st.st_ino, &st), -ENOENT);
	cr_assert_eq(access(name, F_OK), -1, "%s outlived its file", name);
	cr_assert_eq(errno, ENOENT);
}

Test(vfs, directories_and_links)
{
	struct stat d, st;
	uint64_t f;

	cr_assert_eq(vfs_mkdir(v, &ctx, 1, "dir", 0755, &d), 0);
	cr_assert_eq(d.st_nlink, 2);
	cr_assert_eq(vfs_mkdir(v, &ctx, d.st_ino, "sub", 0755, &st), 0);
	cr_assert_eq(vfs_getattr(v, d.st_ino, &d), 0);
	cr_assert_eq(d.st_nlink, 3);
	cr_assert_eq(vfs_rmdir(v, 1, "dir"), -ENOTEMPTY);
	f = write_file("f", (const uint8_t *)"x", 1);
	cr_assert_eq(vfs_link(v, f, d.st_ino, "hard", &st), 0);
	cr_assert_eq(st.st_nlink, 2);
	cr_assert_eq(vfs_link(v, d.st_ino, 1, "dirlink", &st), -EPERM);
	cr_assert_eq(vfs_symlink(v, &ctx, 1, "sym", "f", &st), 0);
	{
		char buf[16];

		cr_assert_eq(vfs_readlink(v, st.st_ino, buf, sizeof(buf)), 0);
		cr_assert_str_eq(buf, "f");
	}
	cr_assert_eq(vfs_unlink(v, 1, "f"), 0);
	cr_assert_eq(vfs_lookup(v, d.st_ino, "hard", &st), 0);
	cr_assert_eq(st.st_nlink, 1);
	cr_assert_eq(vfs_rmdir(v, d.st_ino, "sub"), 0);
	cr_assert_eq(vfs_unlink(v, d.st_ino, "hard"), 0);
	cr_assert_eq(vfs_rmdir(v, 1, "dir"), 0);
}

/* Little-endian ACL xattr entries: tag, perm, id. */
static size_t acl_put(unsigned char *p, size_t n, uint16_t tag, uint16_t perm, uint32_t id)
{
	unsigned char *e = p + 4 + 8 * n;

	p[0] = 2, p[1] = p[2] = p[3] = 0;
	e[0] = (unsigned char)tag, e[1] = (unsigned char)(tag >> 8);
	e[2] = (unsigned char)perm, e[3] = 0;
	for (int i = 0; i < 4; i++)
		e[4 + i] = (unsigned char)(id >> (8 * i));
	return 4 + 8 * (n + 1);
}

/* An ACL that is only a mode sets the mode, as chmod; any other is not supported. */
Test(vfs, access_acl_of_a_mode_is_a_chmod)
{
	const struct vfs_ctx user = {.uid = 1000, .gid = 1000};
	unsigned char acl[64];
	struct stat st;
	bool changed = false;
	uint64_t f = write_file("f", (const uint8_t *)"x", 1);
	size_t n;

	acl_put(acl, 0, 0x01, 7, ~0u);
	acl_put(acl, 1, 0x04, 5, ~0u);
	n = acl_put(acl, 2, 0x20, 1, ~0u);
	cr_assert_eq(vfs_set_access_acl(v, &ctx, f, acl, n, &changed), 0);
	cr_assert(changed);
	cr_assert_eq(vfs_getattr(v, f, &st), 0);
	cr_assert_eq(st.st_mode, S_IFREG | 0751, "mode %o", st.st_mode);
	cr_assert_eq(vfs_set_access_acl(v, &ctx, f, acl, n, &changed), 0);
	cr_assert_not(changed, "the same mode again");
	cr_assert_eq(vfs_set_access_acl(v, &user, f, acl, n, &changed), -EPERM);
	cr_assert_eq(vfs_set_access_acl(v, &ctx, f, acl, n - 1, &changed), -EOPNOTSUPP);
	cr_assert_eq(vfs_set_access_acl(v, &ctx, f, NULL, 0, &changed), -EOPNOTSUPP);
	/* user::rwx user:1000:rwx group::r-x mask::rwx other::--x */
	acl_put(acl, 0, 0x01, 7, ~0u);
	acl_put(acl, 1, 0x02, 7, 1000);
	acl_put(acl, 2, 0x04, 5, ~0u);
	acl_put(acl, 3, 0x10, 7, ~0u);
	n = acl_put(acl, 4, 0x20, 1, ~0u);
	cr_assert_eq(vfs_set_access_acl(v, &ctx, f, acl, n, &changed), -EOPNOTSUPP);
	acl_put(acl, 1, 0x04, 8, ~0u);
	acl_put(acl, 2, 0x20, 1, ~0u);
	cr_assert_eq(vfs_set_access_acl(v, &ctx, f, acl, 28, &changed), -EOPNOTSUPP, "perm 8");
	cr_assert_eq(vfs_getattr(v, f, &st), 0);
	cr_assert_eq(st.st_mode, S_IFREG | 0751);
}

struct early_seen {
	uint64_t ino;
	int calls;
	size_t extents;   /* the file's extents in the index when the reply went */
	unsigned closing; /* commits vfs_push would wait for, then */
};

static void note_early_reply(void *arg)
{
	struct early_seen *e = arg;
	struct idx_extent *ext = NULL;
	size_t n = 0;

	vfs_lock(v);
	cr_assert_eq(idx_get_extents(store_idx(vfs_store(v)), e->ino, &ext, &n), 0);
	e->closing = v->closing;
	vfs_unlock(v);
	free(ext);
	e->extents = n;
	e->calls++;
}

/* close(2) of a file written from its start is answered before its last chunk is stored. */
Test(vfs, close_of_a_stream_is_answered_before_the_store)
{
	uint8_t data[3000];
	struct early_seen seen = {0}, staged = {0};
	struct vfs_file *f;
	struct stat st;

	fill_random(data, sizeof(data), 7);
	cr_assert_eq(vfs_create(v, &ctx, 1, "early", 0644, O_WRONLY, &st, &f), 0);
	seen.ino = st.st_ino;
	cr_assert_eq(vfs_write(v, f, data, sizeof(data), 0, NULL, NULL), (ssize_t)sizeof(data));
	cr_assert_eq(vfs_flush_early(v, f, note_early_reply, &seen), 0);
	cr_assert_eq(seen.calls, 1);
	cr_assert_eq(seen.extents, 0, "the reply went after the data was stored");
	cr_assert_eq(seen.closing, 1, "vfs_push would not wait for the commit");
	cr_assert_eq(v->closing, 0);
	vfs_release(v, f);
	vfs_forget(v, seen.ino, 1);
	check_file(seen.ino, data, sizeof(data));

	/* Written first past its start, a file is staged; its close is answered after the store. */
	cr_assert_eq(vfs_create(v, &ctx, 1, "staged", 0644, O_WRONLY, &st, &f), 0);
	staged.ino = st.st_ino;
	cr_assert_eq(vfs_write(v, f, data + 100, sizeof(data) - 100, 100, NULL, NULL),
		     (ssize_t)sizeof(data) - 100);
	cr_assert_eq(vfs_write(v, f, data, 100, 0, NULL, NULL), 100);
	cr_assert_eq(vfs_flush_early(v, f, note_early_reply, &staged), 0);
	cr_assert_eq(staged.calls, 0, "a staged file's close was answered early");
	vfs_release(v, f);
	vfs_forget(v, staged.ino, 1);
	check_file(staged.ino, data, sizeof(data));
}

/* A sequential writer is chunked as it writes; a read or a write elsewhere spills to staging. */
Test(vfs, stream_spills_on_read_and_random_write)
{
	size_t n = 2 << 20;
	uint8_t *data = malloc(n), buf[4096];
	struct vfs_file *f;
	struct stat st;

	fill_random(data, n, 9);
	cr_assert_eq(vfs_create(v, &ctx, 1, "s", 0644, O_RDWR, &st, &f), 0);
	cr_assert_eq(vfs_write(v, f, data, n / 2, 0, NULL, NULL), (ssize_t)(n / 2));
	cr_assert_eq(vfs_getattr(v, st.st_ino, &st), 0);
	cr_assert_eq(st.st_size, (off_t)(n / 2), "size grows while streaming");
	cr_assert_eq(vfs_read(v, f, buf, sizeof(buf), 1000), (ssize_t)sizeof(buf));
	cr_assert_eq(memcmp(buf, data + 1000, sizeof(buf)), 0);
	cr_assert_eq(vfs_write(v, f, data + n / 2, n / 2, (off_t)(n / 2), NULL, NULL),
		     (ssize_t)(n / 2));
	data[10] ^= 0xff;
	cr_assert_eq(vfs_write(v, f, data + 10, 1, 10, NULL, NULL), 1);
	cr_assert_eq(vfs_flush(v, f), 0);
	vfs_release(v, f);
	check_file(st.st_ino, data, n);
	free(data);
}

/* Chunks of a file being streamed are pinned until it is closed, and only until then. */
Test(vfs, pins_held_until_close)
{
	size_t n = 1 << 20;
	uint8_t *data = malloc(n);
	struct vfs_file *f;
	struct stat st;
	struct fsck_report rep;
	struct store *st2;

	fill_random(data, n, 3);
	cr_assert_eq(vfs_create(v, &ctx, 1, "s", 0644, O_RDWR, &st, &f), 0);
	cr_assert_eq(vfs_write(v, f, data, n, 0, NULL, NULL), (ssize_t)n);
	/* Look at the store from outside, as the next mount after a crash would. Chunks are
	 * hashed by background threads: give them up to 5 s to get there. */
	cr_assert_eq(store_open(dir, 0, &st2, NULL), 0);
	for (int tries = 0; tries < 500; tries++) {
		cr_assert_eq(vfs_sync(v), 0);
		cr_assert_eq(maint_fsck(st2, false, true, stderr, &rep, NULL, NULL), 0);
		if (rep.pinned > 0)
			break;
		usleep(10000);
	}
	cr_assert_gt(rep.pinned, 0, "pins are visible before the file is closed");
	cr_assert_eq(rep.bad_refs, 0);
	cr_assert(fsck_clean(&rep), "pins of a live or crashed daemon are not damage");
	store_close(st2);
	cr_assert_eq(vfs_flush(v, f), 0);
	vfs_release(v, f);
	cr_assert_eq(vfs_sync(v), 0);
	cr_assert_eq(maint_fsck(vfs_store(v), false, true, stderr, &rep, NULL, NULL), 0);
	cr_assert(fsck_clean(&rep));
	free(data);
}

/* Eviction to a size keeps open files, drops the least recently used, and loses nothing else. */
Test(vfs, gc_evicts_to_size)
{
	size_t n = 1 << 20;
	uint8_t *data = malloc(n);
	uint64_t ino[10];
	struct vfs_file *open_f;
	struct gc_report rep;
	struct fsck_report frep;
	uint64_t bytes;
	int kept = 0;

	for (int i = 0; i < 10; i++) {
		char name[16];

		fill_random(data, n, 100 + (uint64_t)i);
		snprintf(name, sizeof(name), "f%d", i);
		ino[i] = write_file(name, data, n);
	}
	cr_assert_eq(vfs_open_file(v, ino[0], O_RDONLY, &open_f), 0, "the oldest, but open");
	cr_assert_eq(vfs_gc(v, 3 << 20, &rep), 0);
	/* 10 MiB of distinct data into 3 MiB: the 7 oldest that are not open go, no more. */
	cr_assert_eq(rep.evicted_files, 7, "evicted %llu files",
		     (unsigned long long)rep.evicted_files);
	cr_assert_eq(idx_pack_bytes(store_idx(vfs_store(v)), &bytes), 0);
	cr_assert_leq(bytes, (3 << 20) + (1 << 20), "packs hold %llu bytes",
		      (unsigned long long)bytes);
	for (int i = 0; i < 10; i++) {
		struct stat st;

		if (vfs_getattr(v, ino[i], &st) == 0) {
			fill_random(data, n, 100 + (uint64_t)i);
			check_file(ino[i], data, n);
			kept++;
		}
	}
	cr_assert_eq(kept, 3, "kept %d files", kept);
	fill_random(data, n, 100);
	check_file(ino[0], data, n);
	vfs_release(v, open_f);
	cr_assert_eq(vfs_sync(v), 0);
	cr_assert_eq(maint_fsck(vfs_store(v), false, true, stderr, &frep, NULL, NULL), 0);
	cr_assert(fsck_clean(&frep));
	free(data);
}

/* A cache can hold private packages: nothing in the store is readable by others. */
Test(vfs, store_files_are_private)
{
	static const char *const names[] = {"", "config", "index.db", "lock", "packs", "staging"};
	uint8_t data[70000];
	char path[512];
	struct stat st;

	fill_random(data, sizeof(data), 99);
	write_file("f", data, sizeof(data));
	cr_assert_eq(vfs_sync(v), 0);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		cr_assert_eq(stat(path, &st), 0, "%s", path);
		cr_assert_eq(st.st_mode & 077, 0, "%s has mode %o", path, st.st_mode & 07777);
	}
	snprintf(path, sizeof(path), "%s/packs/%016x.pack", dir, 1);
	cr_assert_eq(stat(path, &st), 0, "%s", path);
	cr_assert_eq(st.st_mode & 07777, 0600, "a pack has mode %o", st.st_mode & 07777);
}

/*
 * Read counters: each read counts under the top-level directory its file was reached through,
 * a failed read counts as failed, and the counters survive a trip through STORE/counters
 * (percent-encoded names, the "other" row, and a damaged file refused).
 */
Test(vfs, read_counters_per_top_level)
{
	size_t n = 200000;
	uint8_t *data = malloc(n), buf[4096];
	struct counters c = COUNTERS_INIT, back = COUNTERS_INIT;
	const struct counters_row *row;
	struct vfs_file *f;
	struct stat st, pip, sub;
	char path[512];
	FILE *fp;

	fill_random(data, n, 7);
	cr_assert_eq(vfs_mkdir(v, &ctx, 1, "pip", 0755, &pip), 0);
	cr_assert_eq(vfs_mkdir(v, &ctx, pip.st_ino, "http", 0755, &sub), 0);
	cr_assert_eq(vfs_create(v, &ctx, sub.st_ino, "wheel", 0644, O_WRONLY, &st, &f), 0);
	cr_assert_eq(vfs_write(v, f, data, n, 0, NULL, NULL), (ssize_t)n);
	cr_assert_eq(vfs_flush(v, f), 0);
	vfs_release(v, f);
	cr_assert_eq(vfs_sync(v), 0);

	/* Two reads of committed data, one past the end. */
	cr_assert_eq(vfs_open_file(v, st.st_ino, O_RDONLY, &f), 0);
	cr_assert_eq(vfs_read(v, f, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
	cr_assert_eq(vfs_read(v, f, buf, sizeof(buf), 100000), (ssize_t)sizeof(buf));
	cr_assert_eq(vfs_read(v, f, buf, sizeof(buf), (off_t)n), 0);
	cr_assert_eq(vfs_read(v, f, buf, sizeof(buf), -1), -EINVAL);
	vfs_release(v, f);
	cr_assert_eq(vfs_add_read_counters(v, &c), 0);
	row = counters_find(&c, "pip");
	cr_assert_not_null(row);
	cr_assert_eq(row->v[CTR_READS_LOCAL], 3);
	cr_assert_eq(row->v[CTR_BYTES_LOCAL], 2 * sizeof(buf));
	cr_assert_eq(row->v[CTR_READS_FETCHED], 0);
	cr_assert_eq(row->v[CTR_READS_FAILED], 1);
	cr_assert_null(counters_find(&c, "http"), "only top-level names count");

	/* Round trip through the file, added to what is there; odd names survive. */
	cr_assert_eq(counters_add(&c, "a b%\n\xff", (uint64_t[CTR_COUNT]){1, 2, 3, 4, 5}), 0);
	cr_assert_eq(counters_add(&c, CTR_OTHER, (uint64_t[CTR_COUNT]){9, 0, 0, 0, 0}), 0);
	snprintf(path, sizeof(path), "%s/counters", dir);
	cr_assert_eq(counters_load(path, &back), 0, "a missing file is empty");
	cr_assert_eq(back.n, 0);
	cr_assert_eq(counters_save(path, &c), 0);
	cr_assert_eq(counters_load(path, &back), 0);
	cr_assert_eq(counters_load(path, &back), 0);
	cr_assert_eq(back.n, 3);
	row = counters_find(&back, "pip");
	cr_assert_eq(row->v[CTR_READS_LOCAL], 6);
	row = counters_find(&back, "a b%\n\xff");
	cr_assert_not_null(row);
	cr_assert_eq(row->v[CTR_READS_FAILED], 10);
	row = counters_find(&back, CTR_OTHER);
	cr_assert_not_null(row);
	cr_assert_eq(row->v[CTR_READS_LOCAL], 18);
	counters_release(&back);

	/* Damage: a bad magic, a short line, a slash in a name. */
	fp = fopen(path, "w");
	fputs("pkgcachefs-counters 1\n1 2 3 4 5 ok\n1 2 3 x\n", fp);
	fclose(fp);
	cr_assert_eq(counters_load(path, &back), -EBADMSG);
	counters_release(&back);
	fp = fopen(path, "w");
	fputs("pkgcachefs-counters 1\n1 2 3 4 5 a%2Fb\n", fp);
	fclose(fp);
	cr_assert_eq(counters_load(path, &back), -EBADMSG);
	counters_release(&back);
	fp = fopen(path, "w");
	fputs("pkgcachefs-counters 9\n", fp);
	fclose(fp);
	cr_assert_eq(counters_load(path, &back), -EBADMSG);
	counters_release(&back);
	counters_release(&c);
	free(data);
}

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	cr_assert_not_null(f, "%s", path);
	fputs(text, f);
	cr_assert_eq(fclose(f), 0);
}

static void assert_text(const char *path, const char *text)
{
	char buf[256] = "";
	FILE *f = fopen(path, "r");

	cr_assert_not_null(f, "%s", path);
	cr_assert_not_null(fgets(buf, sizeof(buf), f) ? buf : (char *)(*text ? NULL : buf));
	fclose(f);
	cr_assert_str_eq(buf, text, "%s was changed through a link", path);
}

/*
 * The store directory is an attack surface when root mounts a store another user can write
 * (docs/security.md "The store directory"): a store writable by others, or not ours, is refused;
 * a symbolic link in place of staging/, daemon.pid or a state file never makes us unlink or
 * truncate what it points to; and only a process holding the store's lock is named as its daemon.
 */
Test(store_dir, hostile_store_directories_are_refused)
{
	char sdir[] = "/tmp/pkgcachefs-test-sdir-XXXXXX",
	     vdir[] = "/tmp/pkgcachefs-test-victim-XXXXXX";
	char path[600], victim[600], why[600], cmd[700];
	struct store *st;
	pid_t pid, child;

	cr_assert_not_null(mkdtemp(sdir));
	cr_assert_not_null(mkdtemp(vdir));
	snprintf(victim, sizeof(victim), "%s/precious", vdir);
	write_text(victim, "precious\n");

	/* Writable by others, or owned by another user: refused, with a reason. */
	cr_assert_eq(chmod(sdir, 0777), 0);
	cr_assert_eq(store_open(sdir, STORE_CREATE, &st, NULL), -EPERM);
	cr_assert_eq(store_check_dir(sdir, why, sizeof(why)), -EPERM);
	cr_assert(strstr(why, "writable"), "%s", why);
	cr_assert_eq(chmod(sdir, 0700), 0);
	if (geteuid() == 0) {
		cr_assert_eq(chown(sdir, 65534, 65534), 0);
		cr_assert_eq(store_open(sdir, STORE_CREATE, &st, NULL), -EPERM);
		cr_assert_eq(chown(sdir, 0, 0), 0);
	}
	cr_assert_eq(store_open(sdir, STORE_CREATE, &st, NULL), 0);
	store_close(st);

	/* staging/ replaced by a link to the victim's directory: refused, nothing unlinked. */
	snprintf(path, sizeof(path), "%s/staging", sdir);
	cr_assert_eq(rmdir(path), 0);
	cr_assert_eq(symlink(vdir, path), 0);
	cr_assert_eq(store_open(sdir, STORE_LOCK, &st, NULL), -EPERM);
	assert_text(victim, "precious\n");
	cr_assert_eq(unlink(path), 0);
	cr_assert_eq(mkdir(path, 0700), 0);

	/* daemon.pid and the state files as links: replaced, never written through. */
	snprintf(path, sizeof(path), "%s/daemon.pid", sdir);
	cr_assert_eq(symlink(victim, path), 0);
	snprintf(path, sizeof(path), "%s/exit-status", sdir);
	cr_assert_eq(symlink(victim, path), 0);
	snprintf(path, sizeof(path), "%s/config.tmp", sdir);
	cr_assert_eq(symlink(victim, path), 0);
	cr_assert_eq(store_open(sdir, STORE_LOCK, &st, NULL), 0);
	cr_assert_eq(store_write_pid(st), 0);
	cr_assert_eq(store_replace_file(sdir, "exit-status", "0\n", 2, true), 0);
	cr_assert_eq(
		store_set_remote_config(st, &(struct store_remote_cfg){.url = "file:///nowhere"}),
		0);
	assert_text(victim, "precious\n");
	cr_assert_lt(store_openat(sdir, "precious-link", O_RDONLY, 0), 0);

	/* We hold the lock: the pid file names us, and we are its daemon. */
	cr_assert_eq(store_daemon_pid(sdir, &pid), 0);
	cr_assert_eq(pid, getpid());
	/* A pid file naming another process (one not holding the lock) names no daemon. */
	child = fork();
	cr_assert_geq(child, 0);
	if (child == 0) {
		/* exec closes the inherited lock descriptor (O_CLOEXEC), as a stranger has none */
		execlp("sleep", "sleep", "60", (char *)NULL);
		_exit(127);
	}
	usleep(200000);
	snprintf(path, sizeof(path), "%s/daemon.pid", sdir);
	snprintf(cmd, sizeof(cmd), "%d\n", (int)child);
	write_text(path, cmd);
	cr_assert_eq(store_daemon_pid(sdir, &pid), -ESRCH);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	store_close(st);

	snprintf(cmd, sizeof(cmd), "rm -rf %s %s", sdir, vdir);
	cr_assert_eq(system(cmd), 0);
}

/* The remote's TLS files are part of the store's config: recorded, read back, validated. */
Test(store_dir, remote_tls_files_are_recorded_with_the_url)
{
	char sdir[] = "/tmp/pkgcachefs-test-tls-XXXXXX";
	char path[600], cmd[700];
	struct store_remote_cfg rc = {.url = "https://cache.example.com/pkgcache/",
				      .ca_file = "/etc/pkgcachefs/ca.pem",
				      .client_cert = "/etc/pkgcachefs/runner.pem",
				      .client_key = "/etc/pkgcachefs/runner.key"};
	struct store_remote_cfg relative = {.url = "https://cache.example.com/pkgcache/",
					    .ca_file = "ca.pem"};
	struct store_remote_cfg none = {.url = ""};
	const struct store_remote_cfg *got;
	struct chunker_params p;
	struct store *st;

	cr_assert_not_null(mkdtemp(sdir));
	cr_assert_eq(store_open(sdir, STORE_CREATE, &st, NULL), 0);
	cr_assert_eq(store_set_remote_config(st, &rc), 0);
	cr_assert_eq(store_set_remote_config(st, &relative), -EINVAL);
	store_close(st);

	cr_assert_eq(store_open(sdir, 0, &st, NULL), 0);
	got = store_remote_config(st);
	cr_assert_str_eq(store_remote(st), rc.url);
	cr_assert_str_eq(got->ca_file, rc.ca_file);
	cr_assert_str_eq(got->client_cert, rc.client_cert);
	cr_assert_str_eq(got->client_key, rc.client_key);
	/* Clearing the URL clears its files. */
	cr_assert_eq(store_set_remote_config(st, &none), 0);
	cr_assert_str_eq(store_remote_config(st)->ca_file, "");
	store_close(st);

	/* A relative path or a repeated key in the file is damage, not a guess. */
	snprintf(path, sizeof(path),
		 "format = 1\nchunk_min = 16384\nchunk_avg = 65536\n"
		 "chunk_max = 262144\nremote = https://h/\nremote_ca_file = /ca.pem\n");
	cr_assert_eq(store_parse_config(path, strlen(path), &p, &relative), 0);
	cr_assert_str_eq(relative.ca_file, "/ca.pem");
	snprintf(path, sizeof(path),
		 "format = 1\nchunk_min = 16384\nchunk_avg = 65536\n"
		 "chunk_max = 262144\nremote = https://h/\nremote_ca_file = ca.pem\n");
	cr_assert_eq(store_parse_config(path, strlen(path), &p, &relative), -EUCLEAN);
	snprintf(path, sizeof(path),
		 "format = 1\nchunk_min = 16384\nchunk_avg = 65536\n"
		 "chunk_max = 262144\nremote = https://h/\nremote = https://i/\n");
	cr_assert_eq(store_parse_config(path, strlen(path), &p, &relative), -EUCLEAN);

	snprintf(cmd, sizeof(cmd), "rm -rf %s", sdir);
	cr_assert_eq(system(cmd), 0);
}
