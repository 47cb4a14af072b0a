/* SPDX-License-Identifier: MIT */
/*
 * Remote sync without a mount: several "hosts" (stores in one temp dir, each with its own vfs)
 * share one file:// remote. Covers the cold runner (names without data, data fetched on first
 * read and only that), pushing twice, the union of several hosts' pushes, last writer wins,
 * deletions and their race with writes elsewhere, forged and truncated remote objects (EIO,
 * never wrong bytes), and eviction that keeps names when the data is safely on the remote.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "catalog.h"
#include "chunker.h"
#include "hash.h"
#include "maint.h"
#include "remote.h"
#include "sync.h"
#include "util.h"
#include "vfs.h"

#include "sync/sync_priv.h" /* the path map */

static char dir[] = "/tmp/pkgcachefs-test-sync-XXXXXX";
static char url[128];
static const struct vfs_ctx ctx = {.uid = 0, .gid = 0};

struct host {
	char store[128];
	struct remote *r;
	struct vfs *v;
	struct sync_report pulled;
};

static void setup(void)
{
	char path[128];

	cr_assert_not_null(mkdtemp(dir));
	snprintf(url, sizeof(url), "file://%s/remote", dir);
	snprintf(path, sizeof(path), "%s/remote", dir);
	cr_assert_eq(mkdir(path, 0700), 0);
}

static void teardown(void)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
}

/* Open host name's store on the remote, pull with so (may be NULL) and serve it. */
static void host_open_with(struct host *h, const char *name, uint64_t max_size,
			   const struct sync_options *so)
{
	struct vfs_options o = {.max_size = max_size};
	char err[256] = "";
	struct store *st;

	snprintf(h->store, sizeof(h->store), "%s/%s", dir, name);
	cr_assert_eq(store_open(h->store, STORE_CREATE | STORE_LOCK, &st, NULL), 0);
	cr_assert_eq(remote_open(url, NULL, &h->r, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(sync_check_remote(st, h->r, SYNC_REMOTE_CREATE | SYNC_REMOTE_BIND, err,
				       sizeof(err)),
		     0, "%s", err);
	cr_assert_eq(sync_pull(st, h->r, so, &h->pulled), 0);
	o.remote = h->r;
	cr_assert_eq(vfs_open(st, &o, &h->v), 0);
}

static void host_open(struct host *h, const char *name, uint64_t max_size)
{
	host_open_with(h, name, max_size, NULL);
}

static void host_push(struct host *h, struct sync_report *rep)
{
	struct sync_report tmp;

	cr_assert_eq(vfs_push(h->v, NULL, rep ? rep : &tmp), 0, "push: %s", remote_last_error());
}

static void host_close(struct host *h)
{
	cr_assert_eq(vfs_close(h->v), 0);
	remote_free(h->r);
	h->v = NULL;
}

/* fsck of a closed host's store: link counts, references, extents all consistent. */
static void fsck_ok(const struct host *h)
{
	struct fsck_report rep;
	struct store *st;
	FILE *out = fopen("/dev/null", "w");

	cr_assert_eq(store_open(h->store, STORE_LOCK, &st, NULL), 0);
	cr_assert_eq(maint_fsck(st, false, false, out, &rep, NULL, NULL), 0);
	cr_assert(fsck_clean(&rep), "fsck of %s: %llu unrepaired", h->store,
		  (unsigned long long)rep.unrepaired);
	store_close(st);
	fclose(out);
}

static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
	for (size_t i = 0; i < n; i++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		p[i] = (uint8_t)(seed >> 56);
	}
}

/* Write a whole file named name in directory parent. */
static uint64_t put(struct host *h, uint64_t parent, const char *name, const uint8_t *data,
		    size_t n)
{
	struct vfs_file *f;
	struct stat st;

	if (vfs_lookup(h->v, parent, name, &st) == 0) {
		vfs_forget(h->v, st.st_ino, 1);
		cr_assert_eq(vfs_open_file(h->v, st.st_ino, O_WRONLY | O_TRUNC, &f), 0);
	} else {
		cr_assert_eq(vfs_create(h->v, &ctx, parent, name, 0644, O_WRONLY, &st, &f), 0);
	}
	for (size_t done = 0; done < n;) {
		size_t step = n - done < 100000 ? n - done : 100000;

		cr_assert_eq(vfs_write(h->v, f, data + done, step, (off_t)done, NULL, NULL),
			     (ssize_t)step);
		done += step;
	}
	cr_assert_eq(vfs_flush(h->v, f), 0);
	vfs_release(h->v, f);
	return st.st_ino;
}

/* ino of path (components separated by '/'), 0 when absent. */
static uint64_t lookup(struct host *h, const char *path)
{
	char buf[256], *save, *tok;
	uint64_t ino = 1;
	struct stat st;

	snprintf(buf, sizeof(buf), "%s", path);
	for (tok = strtok_r(buf, "/", &save); tok; tok = strtok_r(NULL, "/", &save)) {
		if (vfs_lookup(h->v, ino, tok, &st) != 0)
			return 0;
		ino = st.st_ino;
	}
	return ino;
}

/* Read all of path; its size into *ret_n. Returns 0 or the read's -errno. */
static int slurp(struct host *h, const char *path, uint8_t *buf, size_t cap, size_t *ret_n)
{
	uint64_t ino = lookup(h, path);
	struct vfs_file *f;
	ssize_t n;
	size_t done = 0;

	cr_assert_neq(ino, 0, "%s is missing", path);
	cr_assert_eq(vfs_open_file(h->v, ino, O_RDONLY, &f), 0);
	while ((n = vfs_read(h->v, f, buf + done, MIN(cap - done, 131072), (off_t)done)) > 0)
		done += (size_t)n;
	vfs_release(h->v, f);
	*ret_n = done;
	return n < 0 ? (int)n : 0;
}

static void check(struct host *h, const char *path, const uint8_t *want, size_t n)
{
	uint8_t *buf = malloc(n + 4096);
	size_t got = 0;

	int rs = slurp(h, path, buf, n + 4096, &got);

	cr_assert_eq(rs, 0, "%s: read failed: %d", path, rs);
	cr_assert_eq(got, n, "%s: %zu bytes, want %zu", path, got, n);
	cr_assert(memcmp(buf, want, n) == 0, "%s: wrong bytes", path);
	free(buf);
}

TestSuite(sync, .init = setup, .fini = teardown, .timeout = 120);

#define MB (1u << 20)

Test(sync, cold_host_sees_names_and_fetches_only_what_it_reads)
{
	struct host a = {0}, b = {0};
	uint8_t *d1 = malloc(MB), *d2 = malloc(3 * MB);
	struct fetcher_stats fs;
	struct stat st;
	char target[64];
	uint64_t sub;

	fill_random(d1, MB, 1);
	fill_random(d2, 3 * MB, 2);
	host_open(&a, "a", 0);
	cr_assert_eq(vfs_mkdir(a.v, &ctx, 1, "wheels", 0750, &st), 0);
	sub = st.st_ino;
	put(&a, sub, "one.whl", d1, MB);
	put(&a, sub, "two.whl", d2, 3 * MB);
	cr_assert_eq(vfs_symlink(a.v, &ctx, 1, "latest", "wheels/two.whl", &st), 0);
	host_push(&a, NULL);
	host_close(&a);

	host_open(&b, "b", 0);
	cr_assert_geq(b.pulled.applied, 4);
	/* The tree has its shape: the root holds wheels/ and latest, wheels/ the two files. */
	cr_assert_eq(vfs_getattr(b.v, 1, &st), 0);
	cr_assert(S_ISDIR(st.st_mode));
	cr_assert_eq(st.st_nlink, 3, "root nlink %lu", (unsigned long)st.st_nlink);
	cr_assert_eq(lookup(&b, "one.whl"), 0);
	cr_assert_neq(lookup(&b, "wheels"), 1);
	cr_assert_neq(lookup(&b, "wheels/two.whl"), 0);
	cr_assert_eq(vfs_getattr(b.v, lookup(&b, "wheels/two.whl"), &st), 0);
	cr_assert_eq(st.st_size, 3 * MB);
	cr_assert_eq(vfs_getattr(b.v, lookup(&b, "wheels"), &st), 0);
	cr_assert_eq(st.st_mode & 07777, 0750);
	cr_assert_eq(vfs_readlink(b.v, lookup(&b, "latest"), target, sizeof(target)), 0);
	cr_assert_str_eq(target, "wheels/two.whl");
	vfs_fetch_stats(b.v, &fs);
	cr_assert_eq(fs.bytes, 0, "nothing is fetched before it is read");

	check(&b, "wheels/one.whl", d1, MB);
	vfs_fetch_drain(b.v);
	vfs_fetch_stats(b.v, &fs);
	cr_assert_eq(fs.bytes, MB, "fetched %llu bytes for a 1 MiB read",
		     (unsigned long long)fs.bytes);
	cr_assert_leq(fs.wire_bytes, MB + MB / 10);
	/* Read again: local now. */
	check(&b, "wheels/one.whl", d1, MB);
	vfs_fetch_drain(b.v);
	vfs_fetch_stats(b.v, &fs);
	cr_assert_eq(fs.bytes, MB);
	check(&b, "wheels/two.whl", d2, 3 * MB);
	host_close(&b);
	fsck_ok(&b);
	free(d1);
	free(d2);
}

Test(sync, second_push_uploads_nothing_and_new_data_only_once)
{
	struct host a = {0};
	struct sync_report rep;
	uint8_t *d = malloc(2 * MB);

	fill_random(d, 2 * MB, 3);
	host_open(&a, "a", 0);
	put(&a, 1, "x", d, 2 * MB);
	host_push(&a, &rep);
	cr_assert_eq(rep.upserts, 1);
	cr_assert_geq(rep.bytes_uploaded, 2 * MB);
	host_push(&a, &rep);
	cr_assert_eq(rep.upserts + rep.tombstones, 0);
	cr_assert_eq(rep.bytes_uploaded, 0);
	/* A copy of the same content under another name: no data goes up again. */
	put(&a, 1, "y", d, 2 * MB);
	host_push(&a, &rep);
	cr_assert_eq(rep.upserts, 1);
	cr_assert_eq(rep.bytes_uploaded, 0);
	host_close(&a);
	free(d);
}

Test(sync, many_hosts_union_and_last_writer_wins)
{
	struct host h[3];
	uint8_t *d = malloc(6 * 100000);
	char name[32];

	memset(h, 0, sizeof(h));
	fill_random(d, 6 * 100000, 4);
	for (int i = 0; i < 3; i++) {
		snprintf(name, sizeof(name), "h%d", i);
		host_open(&h[i], name, 0);
	}
	/* Each writes its own file and the same shared one, later hosts later. */
	for (int i = 0; i < 3; i++) {
		snprintf(name, sizeof(name), "own-%d", i);
		put(&h[i], 1, name, d + i * 100000, 100000);
		usleep(2000);
		put(&h[i], 1, "shared", d + (3 + i) * 100000, 100000);
	}
	/* Pushed in reverse order: the stamps, not the push order, decide. */
	for (int i = 2; i >= 0; i--)
		host_push(&h[i], NULL);
	for (int i = 0; i < 3; i++)
		host_close(&h[i]);

	host_open(&h[0], "fresh", 0);
	for (int i = 0; i < 3; i++) {
		snprintf(name, sizeof(name), "own-%d", i);
		check(&h[0], name, d + i * 100000, 100000);
	}
	check(&h[0], "shared", d + 5 * 100000, 100000);
	host_close(&h[0]);
	fsck_ok(&h[0]);
	free(d);
}

Test(sync, deletions_propagate_but_lose_to_later_writes)
{
	struct host a = {0}, b = {0};
	uint8_t d[1000], e[1000];
	size_t n;

	fill_random(d, sizeof(d), 5);
	fill_random(e, sizeof(e), 6);
	host_open(&a, "a", 0);
	put(&a, 1, "gone", d, sizeof(d));
	put(&a, 1, "contested", d, sizeof(d));
	host_push(&a, NULL);

	host_open(&b, "b", 0);
	check(&b, "gone", d, sizeof(d));
	/* A deletes both; B rewrites one after A's last sync. */
	cr_assert_eq(vfs_unlink(a.v, 1, "gone"), 0);
	cr_assert_eq(vfs_unlink(a.v, 1, "contested"), 0);
	put(&b, 1, "contested", e, sizeof(e));
	host_push(&b, NULL);
	host_push(&a, NULL);
	host_close(&a);
	host_close(&b);

	host_open(&a, "fresh", 0);
	cr_assert_eq(lookup(&a, "gone"), 0, "the deletion reached a new host");
	check(&a, "contested", e, sizeof(e));
	host_close(&a);

	/* B, warm, merges A's tombstone for the file it did not touch. */
	host_open(&b, "b", 0);
	cr_assert_eq(lookup(&b, "gone"), 0);
	check(&b, "contested", e, sizeof(e));
	cr_assert_eq(slurp(&b, "contested", d, sizeof(d), &n), 0);
	host_close(&b);
}

/* The one pack object of the remote, opened for writing. */
static int remote_pack_fd(char *path, size_t len)
{
	char pdir[256];
	struct dirent *de;
	DIR *dd;
	int fd = -1;

	snprintf(pdir, sizeof(pdir), "%s/remote/packs", dir);
	dd = opendir(pdir);
	cr_assert_not_null(dd);
	while ((de = readdir(dd))) {
		if (strstr(de->d_name, ".pack")) {
			snprintf(path, len, "%s/%s", pdir, de->d_name);
			fd = open(path, O_RDWR);
			break;
		}
	}
	closedir(dd);
	cr_assert_geq(fd, 0);
	return fd;
}

Test(sync, forged_or_truncated_remote_data_reads_as_eio)
{
	struct host a = {0}, b = {0};
	uint8_t *d = malloc(MB), *buf = malloc(MB + 4096), byte;
	char path[512];
	struct stat st;
	size_t n;
	int fd;

	fill_random(d, MB, 7);
	host_open(&a, "a", 0);
	put(&a, 1, "f", d, MB);
	host_push(&a, NULL);
	host_close(&a);

	/* Forge: change one byte of chunk data, keeping every header intact. */
	fd = remote_pack_fd(path, sizeof(path));
	cr_assert_eq(pread(fd, &byte, 1, 4096), 1);
	byte ^= 0x55;
	cr_assert_eq(pwrite(fd, &byte, 1, 4096), 1);
	host_open(&b, "b", 0);
	cr_assert_eq(slurp(&b, "f", buf, MB + 4096, &n), -EIO);
	host_close(&b);

	/* Repair it, then truncate the object: EIO again, then the full object reads fine. */
	byte ^= 0x55;
	cr_assert_eq(pwrite(fd, &byte, 1, 4096), 1);
	cr_assert_eq(fstat(fd, &st), 0);
	cr_assert_eq(ftruncate(fd, st.st_size / 2), 0);
	host_open(&b, "b2", 0);
	cr_assert_eq(slurp(&b, "f", buf, MB + 4096, &n), -EIO);
	host_close(&b);
	close(fd);
	free(d);
	free(buf);
}

Test(sync, eviction_keeps_names_of_pushed_data)
{
	struct host a = {0};
	uint8_t *d = malloc(8 * MB);
	struct gc_report rep;
	struct fetcher_stats fs;
	char name[16];

	fill_random(d, 8 * MB, 8);
	host_open(&a, "a", 0);
	for (int i = 0; i < 8; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		put(&a, 1, name, d + i * MB, MB);
	}
	/* Not pushed yet: nothing may be dropped. */
	cr_assert_eq(vfs_gc(a.v, 2 * MB, &rep), 0);
	cr_assert_eq(rep.evicted_files, 0);
	host_push(&a, NULL);
	cr_assert_eq(vfs_gc(a.v, 2 * MB, &rep), 0);
	cr_assert_geq(rep.evicted_files, 6);
	cr_assert_leq(rep.bytes_after, 3 * MB);
	for (int i = 0; i < 8; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		cr_assert_neq(lookup(&a, name), 0, "%s lost its name", name);
		check(&a, name, d + i * MB, MB);
	}
	vfs_fetch_stats(a.v, &fs);
	cr_assert_geq(fs.bytes, 6 * MB, "evicted files were fetched back");
	host_close(&a);
	free(d);
}

Test(sync, bundles_export_import_incremental_and_damaged)
{
	struct host a = {0}, b = {0};
	uint8_t *d = malloc(3 * MB);
	char full[256], inc[256], cmd[600];
	struct sync_report rep;
	struct store *st;

	fill_random(d, 3 * MB, 9);
	snprintf(full, sizeof(full), "%s/full.bundle", dir);
	snprintf(inc, sizeof(inc), "%s/inc.bundle", dir);
	host_open(&a, "a", 0);
	put(&a, 1, "one", d, MB);
	host_close(&a);
	cr_assert_eq(store_open(a.store, 0, &st, NULL), 0);
	cr_assert_eq(sync_export(st, NULL, full, NULL, NULL, &rep), 0);
	store_close(st);
	host_open(&a, "a", 0);
	put(&a, 1, "two", d + MB, 2 * MB);
	put(&a, 1, "one-again", d, MB);
	host_close(&a);
	cr_assert_eq(store_open(a.store, 0, &st, NULL), 0);
	cr_assert_eq(sync_export(st, full, inc, NULL, NULL, &rep), 0);
	/* Only the new data: the 2 MiB file, not the copy of one. */
	cr_assert_lt(rep.bytes_uploaded, 2 * MB + MB / 4, "incremental bundle %llu bytes",
		     (unsigned long long)rep.bytes_uploaded);
	store_close(st);

	snprintf(b.store, sizeof(b.store), "%s/b", dir);
	cr_assert_eq(store_open(b.store, STORE_CREATE | STORE_LOCK, &st, NULL), 0);
	cr_assert_eq(sync_import(st, inc, NULL, NULL, &rep), -ENOENT, "base not imported yet");
	cr_assert_eq(sync_import(st, full, NULL, NULL, &rep), 0);
	cr_assert_eq(sync_import(st, inc, NULL, NULL, &rep), 0);
	cr_assert_eq(store_close(st), 0);
	host_open(&b, "b", 0);
	check(&b, "one", d, MB);
	check(&b, "two", d + MB, 2 * MB);
	check(&b, "one-again", d, MB);
	host_close(&b);

	/* Damaged (a flipped byte in the data) and truncated bundles change nothing. */
	snprintf(cmd, sizeof(cmd),
		 "printf '\\x00' | dd of=%s bs=1 seek=$(( $(stat -c %%s %s) - 5000 )) "
		 "conv=notrunc status=none",
		 inc, inc);
	cr_assert_eq(system(cmd), 0);
	cr_assert_eq(store_open(dir, 0, &st, NULL), -ENOENT);
	snprintf(b.store, sizeof(b.store), "%s/c", dir);
	cr_assert_eq(store_open(b.store, STORE_CREATE | STORE_LOCK, &st, NULL), 0);
	cr_assert_eq(sync_import(st, full, NULL, NULL, &rep), 0);
	cr_assert_eq(sync_import(st, inc, NULL, NULL, &rep), -EBADMSG);
	cr_assert_eq(truncate(full, 100000), 0);
	cr_assert_eq(sync_import(st, full, NULL, NULL, &rep), -EBADMSG);
	cr_assert_eq(store_close(st), 0);
	free(d);
}

/* Found by tests/fuzz/fuzz_bundle.c: a table of contents of another kind or chunk size was freed
 * twice. */
Test(sync, a_bundle_of_another_chunk_size_or_kind_is_refused)
{
	static const uint8_t host[16] = {1};
	const struct chunker_params *cp = &chunker_default_params;
	struct cat_writer *w;
	struct sync_report rep;
	struct store *st;
	uint8_t sha[32], hdr[16] = "PKGCBND1";
	char path[256];
	void *toc;
	size_t len;
	FILE *f;

	snprintf(path, sizeof(path), "%s/s", dir);
	cr_assert_eq(store_open(path, STORE_CREATE | STORE_LOCK, &st, NULL), 0);
	snprintf(path, sizeof(path), "%s/other.bundle", dir);
	for (int k = 0; k < 2; k++) {
		cr_assert_eq(cat_writer_new(k ? CAT_DELTA : CAT_BUNDLE, host, 1, cp->min,
					    k ? cp->avg : cp->avg * 2, cp->max, &w),
			     0);
		cr_assert_eq(cat_writer_finish(w, &toc, &len, sha), 0);
		for (int i = 0; i < 8; i++)
			hdr[8 + i] = (uint8_t)((uint64_t)len >> (8 * i));
		f = fopen(path, "wb");
		cr_assert(f && fwrite(hdr, 1, 16, f) == 16 && fwrite(toc, 1, len, f) == len);
		cr_assert_eq(fclose(f), 0);
		free(toc);
		cr_assert_eq(sync_import(st, path, NULL, NULL, &rep), -EPROTO);
	}
	cr_assert_eq(store_close(st), 0);
}

Test(sync, a_damaged_catalog_is_left_out_and_stops_remote_gc)
{
	struct host a = {0}, b = {0};
	struct sync_gc_report grep_;
	uint8_t d[5000], e[5000];
	char cmd[600];
	struct store *st;

	fill_random(d, sizeof(d), 10);
	fill_random(e, sizeof(e), 11);
	host_open(&a, "a", 0);
	put(&a, 1, "first", d, sizeof(d));
	host_push(&a, NULL);
	host_close(&a);
	/* Damage the only catalog so far, then push a second one from another host. */
	snprintf(cmd, sizeof(cmd),
		 "f=$(ls %s/remote/ns/*.cat | head -1); printf 'X' | dd of=$f bs=1 seek=100 "
		 "conv=notrunc status=none",
		 dir);
	cr_assert_eq(system(cmd), 0);
	host_open(&b, "b", 0);
	put(&b, 1, "second", e, sizeof(e));
	host_push(&b, NULL);
	host_close(&b);

	host_open(&a, "fresh", 0);
	cr_assert_eq(lookup(&a, "first"), 0, "what the damaged catalog held is missing");
	check(&a, "second", e, sizeof(e));
	host_close(&a);

	cr_assert_eq(store_open(b.store, STORE_LOCK, &st, NULL), 0);
	cr_assert_eq(remote_open(url, NULL, &b.r, cmd, sizeof(cmd)), 0);
	cr_assert_eq(sync_gc(st, b.r, 0, 0, NULL, &grep_), -EBADMSG,
		     "gc must not collect while a catalog cannot be read");
	remote_free(b.r);
	store_close(st);
}

static int count_packs(void)
{
	char pdir[256];
	struct dirent *de;
	DIR *dd;
	int n = 0;

	snprintf(pdir, sizeof(pdir), "%s/remote/packs", dir);
	dd = opendir(pdir);
	cr_assert_not_null(dd);
	while ((de = readdir(dd)))
		n += strstr(de->d_name, ".pack") != NULL;
	closedir(dd);
	return n;
}

Test(sync, remote_gc_condemns_then_deletes_and_stale_hosts_upload_again)
{
	struct host a = {0}, c = {0};
	struct sync_gc_report rep;
	uint8_t *d = malloc(2 * MB);
	struct store *st;
	char err[256];

	fill_random(d, 2 * MB, 12);
	host_open(&a, "a", 0);
	put(&a, 1, "old", d, MB);
	host_push(&a, NULL);
	put(&a, 1, "kept", d + MB, MB);
	host_push(&a, NULL);
	cr_assert_eq(count_packs(), 2);
	/* c knows where old's chunks are on the remote. */
	host_open(&c, "c", 0);
	host_close(&c);
	cr_assert_eq(vfs_unlink(a.v, 1, "old"), 0);
	host_push(&a, NULL);
	host_close(&a);

	cr_assert_eq(store_open(a.store, STORE_LOCK, &st, NULL), 0);
	cr_assert_eq(remote_open(url, NULL, &a.r, err, sizeof(err)), 0);
	cr_assert_eq(sync_gc(st, a.r, 0, 3600, NULL, &rep), 0);
	cr_assert_eq(rep.packs_condemned, 1);
	cr_assert_eq(rep.packs_deleted, 0, "not before the grace period");
	cr_assert_eq(count_packs(), 2);
	cr_assert_eq(sync_gc(st, a.r, 0, 0, NULL, &rep), 0);
	cr_assert_eq(rep.packs_deleted, 1);
	cr_assert_eq(count_packs(), 1);
	remote_free(a.r);
	store_close(st);

	/* c writes old's content again: it must not point at the deleted pack. */
	host_open(&c, "c", 0);
	put(&c, 1, "again", d, MB);
	host_push(&c, NULL);
	host_close(&c);
	host_open(&a, "fresh", 0);
	cr_assert_eq(lookup(&a, "old"), 0);
	check(&a, "kept", d + MB, MB);
	check(&a, "again", d, MB);
	host_close(&a);
	free(d);
}

Test(sync, a_store_moved_to_another_remote_pushes_everything_there)
{
	struct host a = {0}, b = {0};
	uint8_t d[20000];
	char url2[300], path[200], err[256];
	struct sync_report rep;
	struct store *st;
	struct remote *r2;

	fill_random(d, sizeof(d), 13);
	host_open(&a, "a", 0);
	put(&a, 1, "f", d, sizeof(d));
	host_push(&a, NULL);
	host_close(&a);
	snprintf(path, sizeof(path), "%s/remote2", dir);
	cr_assert_eq(mkdir(path, 0700), 0);
	snprintf(url2, sizeof(url2), "file://%s", path);

	/* A cold host holds data only on the first remote: it may not move. */
	host_open(&b, "b", 0);
	host_close(&b);
	cr_assert_eq(store_open(b.store, STORE_LOCK, &st, NULL), 0);
	cr_assert_eq(remote_open(url2, NULL, &r2, err, sizeof(err)), 0);
	cr_assert_eq(
		sync_check_remote(st, r2, SYNC_REMOTE_CREATE | SYNC_REMOTE_BIND, err, sizeof(err)),
		-EXDEV);
	remote_free(r2);
	store_close(st);

	/* The writer's store holds everything: it moves, and pushes all of it. */
	cr_assert_eq(store_open(a.store, STORE_LOCK, &st, NULL), 0);
	cr_assert_eq(remote_open(url2, NULL, &r2, err, sizeof(err)), 0);
	cr_assert_eq(
		sync_check_remote(st, r2, SYNC_REMOTE_CREATE | SYNC_REMOTE_BIND, err, sizeof(err)),
		0, "%s", err);
	cr_assert_eq(sync_push(st, r2, NULL, NULL, &rep), 0);
	cr_assert_eq(rep.upserts, 1);
	cr_assert_geq(rep.bytes_uploaded, sizeof(d));
	remote_free(r2);
	store_close(st);
}

Test(sync, an_untrusted_store_never_pushes)
{
	struct host a = {0};
	struct sync_report rep;
	uint8_t d[1000];
	struct store *st;

	fill_random(d, sizeof(d), 14);
	host_open(&a, "a", 0);
	put(&a, 1, "f", d, sizeof(d));
	host_close(&a);
	cr_assert_eq(store_open(a.store, STORE_LOCK, &st, NULL), 0);
	cr_assert_eq(idx_begin(store_idx(st)), 0);
	cr_assert_eq(idx_meta_set(store_idx(st), "untrusted", "1"), 0);
	cr_assert_eq(idx_commit(store_idx(st)), 0);
	cr_assert_eq(remote_open(url, NULL, &a.r, (char[256]){0}, 256), 0);
	cr_assert_eq(sync_push(st, a.r, NULL, NULL, &rep), -EPERM);
	remote_free(a.r);
	store_close(st);
}

Test(sync, one_push_with_a_chunk_used_far_apart)
{
	struct host a = {0}, b = {0};
	struct sync_report rep;
	uint8_t *x = malloc(MB), *y = malloc(12 * MB);
	char name[16];

	fill_random(x, MB, 15);
	fill_random(y, 12 * MB, 16);
	host_open(&a, "a", 0);
	/* x's chunks recur after far more than a few dozen other chunks, three times. */
	for (int i = 0; i < 3; i++) {
		snprintf(name, sizeof(name), "x%d", i);
		put(&a, 1, name, x, MB);
		snprintf(name, sizeof(name), "y%d", i);
		put(&a, 1, name, y + i * 4 * MB, 4 * MB);
	}
	host_push(&a, &rep);
	/* x's data goes up once: 13 MiB of unique data, not 15. */
	cr_assert_lt(rep.bytes_uploaded, 13 * MB + MB / 2, "uploaded %llu bytes",
		     (unsigned long long)rep.bytes_uploaded);
	host_close(&a);
	host_open(&b, "b", 0);
	for (int i = 0; i < 3; i++) {
		snprintf(name, sizeof(name), "x%d", i);
		check(&b, name, x, MB);
		snprintf(name, sizeof(name), "y%d", i);
		check(&b, name, y + i * 4 * MB, 4 * MB);
	}
	host_close(&b);
	free(x);
	free(y);
}

Test(sync, a_rerun_of_an_interrupted_push_finds_its_packs)
{
	struct host a = {0};
	uint8_t *d = malloc(3 * MB);
	struct sync_report rep;
	char cmd[700];

	fill_random(d, 3 * MB, 17);
	host_open(&a, "a", 0);
	put(&a, 1, "f", d, 3 * MB);
	host_close(&a);
	/* The same store twice: one push completes, the other plays its rerun after a crash that
	 * came between the packs and the catalog. */
	snprintf(cmd, sizeof(cmd), "cp -a %s/a %s/a2", dir, dir);
	cr_assert_eq(system(cmd), 0);
	host_open(&a, "a", 0);
	host_push(&a, &rep);
	cr_assert_geq(rep.packs_uploaded, 1);
	host_close(&a);
	snprintf(cmd, sizeof(cmd), "rm %s/remote/ns/*.cat", dir);
	cr_assert_eq(system(cmd), 0);
	sleep(1); /* a pack made a second later must still be the same bytes */
	host_open(&a, "a2", 0);
	host_push(&a, &rep);
	cr_assert_eq(rep.packs_uploaded, 0, "%llu packs uploaded again",
		     (unsigned long long)rep.packs_uploaded);
	cr_assert_geq(rep.packs_present, 1);
	cr_assert_eq(rep.bytes_uploaded, 0);
	host_close(&a);
	host_open(&a, "fresh", 0);
	check(&a, "f", d, 3 * MB);
	host_close(&a);
	free(d);
}

Test(sync, a_directory_wins_over_a_file_at_the_same_path)
{
	struct host a = {0}, b = {0};
	uint8_t d[3000];
	struct stat st;
	uint64_t dir_ino;

	fill_random(d, sizeof(d), 18);
	host_open(&a, "a", 0);
	host_open(&b, "b", 0);
	put(&a, 1, "x", d, 1000);
	usleep(2000);
	cr_assert_eq(vfs_mkdir(b.v, &ctx, 1, "x", 0755, &st), 0);
	put(&b, st.st_ino, "inner", d + 1000, 1000);
	usleep(2000);
	/* The file is written last, so it wins "x"; but "x/inner" needs x to be a directory. */
	put(&a, 1, "x", d + 2000, 1000);
	host_push(&b, NULL);
	host_push(&a, NULL);
	host_close(&a);
	host_close(&b);
	/* A cold host (bulk load) and a warm one (merge) end the same. */
	host_open(&a, "fresh", 0);
	dir_ino = lookup(&a, "x");
	cr_assert_neq(dir_ino, 0);
	cr_assert_eq(vfs_getattr(a.v, dir_ino, &st), 0);
	cr_assert(S_ISDIR(st.st_mode), "x is a directory");
	check(&a, "x/inner", d + 1000, 1000);
	host_close(&a);
	fsck_ok(&a);
	host_open(&b, "b", 0);
	cr_assert_eq(vfs_getattr(b.v, lookup(&b, "x"), &st), 0);
	cr_assert(S_ISDIR(st.st_mode));
	check(&b, "x/inner", d + 1000, 1000);
	host_close(&b);
	fsck_ok(&b);
}

/*
 * Whoever can write a file:// remote can plant a FIFO, a device or a symlink where an object
 * should be. A FIFO used to hang the reader in open(2) for ever; each is now -EIO with a message
 * naming the object, at once. (A timeout of 10 s makes a hang a failure, not a stuck suite.)
 */
Test(sync, file_remote_refuses_what_is_not_a_regular_file, .timeout = 10)
{
	char path[256], err[256] = "";
	struct remote *r;
	uint64_t size;
	size_t len;
	void *data;

	cr_assert_eq(remote_open(url, NULL, &r, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(remote_put(r, "packs/real", "abc", 3), 0);
	snprintf(path, sizeof(path), "%s/remote/packs/fifo", dir);
	cr_assert_eq(mkfifo(path, 0600), 0);
	snprintf(path, sizeof(path), "%s/remote/packs/link", dir);
	cr_assert_eq(symlink("real", path), 0);

	cr_assert_eq(remote_get(r, "packs/fifo", 0, 0, &data, &len), -EIO);
	cr_assert(strstr(remote_last_error(), "not a regular file"), "%s", remote_last_error());
	cr_assert_eq(remote_head(r, "packs/fifo", &size), -EIO);
	cr_assert_eq(remote_get(r, "packs/link", 0, 0, &data, &len), -EIO);
	cr_assert(strstr(remote_last_error(), "symbolic link"), "%s", remote_last_error());
	cr_assert_eq(remote_head(r, "packs/link", &size), -EIO);
	cr_assert_eq(remote_get(r, "packs/real", 0, 0, &data, &len), 0);
	cr_assert_eq(len, 3);
	free(data);
	remote_free(r);
}

/*
 * Stamps order last-writer-wins, and come from whoever can write the remote. A forged catalog
 * stamped INT64_MAX would delete a path on every host and win every later write to it for good;
 * stamps later than this host's clock plus CAT_STAMP_SKEW_NS are now refused, and what lies
 * within the skew is still taken.
 */
Test(sync, entries_stamped_beyond_the_clock_skew_are_refused)
{
	static const uint8_t writer[16] = {7};
	const struct chunker_params *cp = &chunker_default_params;
	const int64_t hour = 3600ll * 1000000000, now = now_ns();
	const struct cat_entry forged[] = {
		{.path = "poison", .type = CAT_E_DIR, .mode = S_IFDIR | 0755, .stamp = INT64_MAX},
		{.path = "skewed", .type = CAT_E_DIR, .mode = S_IFDIR | 0755, .stamp = now + hour},
		{.path = "tomorrow",
		 .type = CAT_E_DIR,
		 .mode = S_IFDIR | 0755,
		 .stamp = now + CAT_STAMP_SKEW_NS + hour},
		{.path = "victim", .type = CAT_E_GONE, .stamp = INT64_MAX},
	};
	struct host a = {0};
	struct cat_writer *w;
	uint8_t d[4000], sha[32];
	char name[160], hex[65];
	void *cat;
	size_t len;

	fill_random(d, sizeof(d), 21);
	host_open(&a, "a", 0);
	put(&a, 1, "victim", d, sizeof(d));
	host_push(&a, NULL);
	cr_assert_eq(cat_writer_new(CAT_DELTA, writer, now, cp->min, cp->avg, cp->max, &w), 0);
	for (size_t i = 0; i < sizeof(forged) / sizeof(forged[0]); i++)
		cr_assert_eq(cat_writer_add_entry(w, &forged[i]), 0, "%s", forged[i].path);
	cr_assert_eq(cat_writer_finish(w, &cat, &len, sha), 0);
	snprintf(name, sizeof(name), "ns/%016llx-%s.cat", (unsigned long long)now,
		 hash_hex(sha, 32, hex));
	cr_assert_eq(remote_put(a.r, name, cat, len), 0);
	free(cat);
	host_close(&a);

	host_open(&a, "fresh", 0);
	check(&a, "victim", d, sizeof(d));
	cr_assert_eq(lookup(&a, "poison"), 0, "a stamp of INT64_MAX is refused");
	cr_assert_eq(lookup(&a, "tomorrow"), 0, "a stamp beyond the skew is refused");
	cr_assert_neq(lookup(&a, "skewed"), 0, "a stamp within the skew is taken");
	host_close(&a);
	fsck_ok(&a);
}

/* Put a catalog holding entries e[0..n) on the remote, as anyone who can write to it could. */
static void put_forged(const struct cat_entry *e, size_t n)
{
	static const uint8_t writer[16] = {9};
	const struct chunker_params *cp = &chunker_default_params;
	const int64_t now = now_ns();
	struct remote *r;
	struct cat_writer *w;
	char name[160], hex[65], err[256] = "";
	uint8_t sha[32];
	void *cat;
	size_t len;

	cr_assert_eq(remote_open(url, NULL, &r, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(cat_writer_new(CAT_DELTA, writer, now, cp->min, cp->avg, cp->max, &w), 0);
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(cat_writer_add_entry(w, &e[i]), 0, "%s", e[i].path);
	cr_assert_eq(cat_writer_finish(w, &cat, &len, sha), 0);
	snprintf(name, sizeof(name), "ns/%016llx-%s.cat", (unsigned long long)now,
		 hash_hex(sha, 32, hex));
	cr_assert_eq(remote_put(r, name, cat, len), 0);
	free(cat);
	remote_free(r);
}

/* The permission bits (07777) of path, which must exist. */
static unsigned perm(struct host *h, const char *path)
{
	uint64_t ino = lookup(h, path);
	struct stat st;

	cr_assert_neq(ino, 0, "%s is missing", path);
	cr_assert_eq(vfs_getattr(h->v, ino, &st), 0);
	return st.st_mode & 07777;
}

/*
 * Modes came from the remote verbatim: a catalog holding a setuid root program handed it to
 * every host that pulled. The setuid and setgid bits are now cleared by every pull, cold or not,
 * unless the store's mount asked to keep them; the sticky bit stays (it only restricts). Nothing
 * is pushed back for the cleared bits: the base records the entry as this host applied it.
 */
Test(sync, pulled_setuid_and_setgid_bits_are_cleared)
{
	const int64_t now = now_ns();
	const struct cat_entry forged[] = {
		{.path = "bin", .type = CAT_E_DIR, .mode = S_IFDIR | 0755, .stamp = now},
		{.path = "bin/tool", .type = CAT_E_FILE, .mode = S_IFREG | 04755, .stamp = now},
		{.path = "bin/tool2", .type = CAT_E_FILE, .mode = S_IFREG | 06711, .stamp = now},
		{.path = "shared", .type = CAT_E_DIR, .mode = S_IFDIR | 02775, .stamp = now},
		{.path = "tmp", .type = CAT_E_DIR, .mode = S_IFDIR | 01777, .stamp = now},
	};
	struct host a = {0}, b = {0}, c = {0};
	struct sync_report rep;
	struct store *st;
	uint8_t d[3000];

	fill_random(d, sizeof(d), 5);
	host_open(&a, "a", 0);
	put(&a, 1, "mine", d, sizeof(d)); /* so that a's next pull merges, not a cold load */
	host_push(&a, NULL);
	host_close(&a);
	put_forged(forged, sizeof(forged) / sizeof(forged[0]));

	host_open(&b, "cold", 0);
	cr_assert_eq(perm(&b, "bin/tool"), 0755, "cold load: setuid cleared");
	cr_assert_eq(perm(&b, "bin/tool2"), 0711, "cold load: setuid and setgid cleared");
	cr_assert_eq(perm(&b, "shared"), 0775, "cold load: setgid directory cleared");
	cr_assert_eq(perm(&b, "tmp"), 01777, "cold load: sticky kept");
	host_push(&b, &rep);
	cr_assert_eq(rep.upserts + rep.tombstones, 0, "the cleared bits are not pushed back");
	host_close(&b);

	host_open(&a, "a", 0);
	cr_assert_eq(perm(&a, "bin/tool"), 0755, "merge: setuid cleared");
	cr_assert_eq(perm(&a, "bin/tool2"), 0711, "merge: setuid and setgid cleared");
	cr_assert_eq(perm(&a, "shared"), 0775, "merge: setgid directory cleared");
	cr_assert_eq(perm(&a, "tmp"), 01777, "merge: sticky kept");
	host_push(&a, &rep);
	cr_assert_eq(rep.upserts + rep.tombstones, 0, "the cleared bits are not pushed back");
	host_close(&a);

	/* A store whose mount said keep_suid keeps them. */
	snprintf(c.store, sizeof(c.store), "%s/keep", dir);
	cr_assert_eq(store_open(c.store, STORE_CREATE | STORE_LOCK, &st, NULL), 0);
	cr_assert_eq(sync_set_keep_suid(st, true), 0);
	store_close(st);
	host_open(&c, "keep", 0);
	cr_assert_eq(perm(&c, "bin/tool"), 04755, "keep_suid keeps setuid");
	cr_assert_eq(perm(&c, "shared"), 02775, "keep_suid keeps setgid");
	host_close(&c);
	fsck_ok(&a);
	fsck_ok(&b);
	fsck_ok(&c);
}

/* The target of symbolic link path, "" when path is missing. */
static const char *link_target(struct host *h, const char *path, char *buf, size_t len)
{
	uint64_t ino = lookup(h, path);

	buf[0] = '\0';
	if (ino)
		cr_assert_geq(vfs_readlink(h->v, ino, buf, len), 0, "%s", path);
	return buf;
}

/*
 * Symbolic link targets came from the remote unchecked: a writer could plant
 * index-v5/.../entry -> /home/user/.bashrc, and npm's next append to its index went there. A
 * pull now refuses targets that are absolute or climb above the mount's root, and "a/../.."
 * forms (a could be a link itself); relative targets inside, as pnpm, npm and uv write them, pass.
 */
Test(sync, pulled_symlinks_pointing_outside_the_mount_are_refused)
{
	const int64_t now = now_ns();
	static const struct {
		const char *path, *target;
		bool taken;
	} links[] = {
		{"abs", "/etc/passwd", false},
		{"archive-v0/id/lib/ok", "../../../wheels-v1/x", true},
		{"archive-v0/id/lib/too-far", "../../../../x", false},
		{"d/dot", "..", true},
		{"d/inside", "sub/./file", true},
		{"d/mid", "sub/../../../x", false},
		{"d/mid-inside", "sub/../x", false},
		{"top", ".", true},
		{"up", "../outside", false},
		{"wheels-v1/pkg", "../archive-v0/id", true},
	};
	const size_t n = sizeof(links) / sizeof(links[0]);
	struct cat_entry forged[sizeof(links) / sizeof(links[0])];
	struct host a = {0}, b = {0};
	char buf[256];
	uint8_t d[3000];

	for (size_t i = 0; i < n; i++)
		forged[i] = (struct cat_entry){.path = links[i].path,
					       .type = CAT_E_SYMLINK,
					       .mode = S_IFLNK | 0777,
					       .size = strlen(links[i].target),
					       .target = links[i].target,
					       .stamp = now};
	fill_random(d, sizeof(d), 6);
	host_open(&a, "a", 0);
	put(&a, 1, "mine", d, sizeof(d));
	host_push(&a, NULL);
	host_close(&a);
	put_forged(forged, n);

	host_open(&b, "cold", 0);
	host_open(&a, "a", 0);
	for (size_t i = 0; i < n; i++) {
		const char *want = links[i].taken ? links[i].target : "";

		cr_expect_str_eq(link_target(&b, links[i].path, buf, sizeof(buf)), want,
				 "cold load: %s -> %s", links[i].path, links[i].target);
		cr_expect_str_eq(link_target(&a, links[i].path, buf, sizeof(buf)), want,
				 "merge: %s -> %s", links[i].path, links[i].target);
		cr_expect_eq(symlink_target_contained(links[i].path, links[i].target),
			     links[i].taken, "%s -> %s", links[i].path, links[i].target);
	}
	host_close(&a);
	host_close(&b);
	fsck_ok(&a);
	fsck_ok(&b);
}

/*
 * A bundle (a CI system's cache archive, which a job of lower trust may have written) is taken as
 * a pull takes a catalog: setuid bits cleared unless keep_suid, links out of the mount refused.
 */
Test(sync, imported_bundles_are_taken_as_pulls_are)
{
	struct host a = {0}, b = {0}, c = {0};
	struct stat attr = {.st_mode = 04755}, st;
	char bundle[256], buf[64];
	struct sync_report rep;
	struct store *s;
	uint8_t d[3000];
	uint64_t ino;

	fill_random(d, sizeof(d), 8);
	snprintf(bundle, sizeof(bundle), "%s/hostile.bundle", dir);
	host_open(&a, "a", 0);
	ino = put(&a, 1, "tool", d, sizeof(d));
	cr_assert_eq(vfs_setattr(a.v, ino, &attr, VFS_SET_MODE, NULL, &st), 0);
	cr_assert_eq(st.st_mode & 07777, 04755);
	cr_assert_eq(vfs_symlink(a.v, &ctx, 1, "abs", "/etc/passwd", &st), 0);
	cr_assert_eq(vfs_symlink(a.v, &ctx, 1, "rel", "tool", &st), 0);
	host_close(&a);
	cr_assert_eq(store_open(a.store, 0, &s, NULL), 0);
	cr_assert_eq(sync_export(s, NULL, bundle, NULL, NULL, &rep), 0);
	store_close(s);

	snprintf(b.store, sizeof(b.store), "%s/b", dir);
	cr_assert_eq(store_open(b.store, STORE_CREATE | STORE_LOCK, &s, NULL), 0);
	cr_assert_eq(sync_import(s, bundle, NULL, NULL, &rep), 0);
	store_close(s);
	host_open(&b, "b", 0);
	check(&b, "tool", d, sizeof(d));
	cr_assert_eq(perm(&b, "tool"), 0755, "setuid cleared");
	cr_assert_eq(lookup(&b, "abs"), 0, "an absolute link is refused");
	cr_assert_str_eq(link_target(&b, "rel", buf, sizeof(buf)), "tool");
	host_close(&b);

	snprintf(c.store, sizeof(c.store), "%s/c", dir);
	cr_assert_eq(store_open(c.store, STORE_CREATE | STORE_LOCK, &s, NULL), 0);
	cr_assert_eq(sync_set_keep_suid(s, true), 0);
	cr_assert_eq(sync_import(s, bundle, NULL, NULL, &rep), 0);
	store_close(s);
	host_open(&c, "c", 0);
	cr_assert_eq(perm(&c, "tool"), 04755, "keep_suid keeps setuid");
	host_close(&c);
	fsck_ok(&b);
	fsck_ok(&c);
}

/* FNV-1a 64, the path map's old unseeded hash: what an attacker could aim names at. */
static uint64_t fnv1a(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	while (*s)
		h = (h ^ (uint8_t)*s++) * 1099511628211ull;
	return h;
}

/* n names whose FNV-1a hashes agree in the low 12 bits (every table up to 4096 slots). */
static char **colliding_names(size_t n)
{
	char **v = calloc(n, sizeof(*v));
	char name[32];

	cr_assert_not_null(v);
	for (uint64_t k = 0, i = 0; i < n; k++) {
		snprintf(name, sizeof(name), "site/%010llx", (unsigned long long)k);
		if ((fnv1a(name) & 0xfff) == 0)
			cr_assert_not_null(v[i++] = strdup(name));
	}
	return v;
}

/*
 * The path map is keyed by paths from remote catalogs. Unseeded, 1,000 crafted names landed in
 * one probe chain: half a million slot visits for one merge, quadratic in the names. Seeded, the
 * same names cost a few visits each.
 */
Test(sync, crafted_colliding_paths_do_not_make_the_path_map_quadratic)
{
	const size_t n = 1000;
	char **names = colliding_names(n);
	struct smap m = {0};

	for (size_t i = 0; i < n; i++)
		cr_assert_eq(smap_put(&m, names[i], names[i]), 0);
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(smap_get(&m, names[i]), names[i]);
	cr_assert_lt(m.probes, 20 * 2 * n, "%llu slot visits for %zu names",
		     (unsigned long long)m.probes, 2 * n);
	smap_free(&m, NULL);
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* Bytes a remote has received since it was opened. */
static uint64_t bytes_in(const struct remote *r)
{
	struct remote_counters c;

	remote_get_counters(r, &c);
	return c.bytes_in;
}

/* Put size bytes of garbage under a catalog's name: it fails to verify. */
static void put_bad_catalog(struct host *h, const char *tag, size_t size)
{
	uint8_t *junk = malloc(size);
	char name[160];

	cr_assert_not_null(junk);
	fill_random(junk, size, 77);
	snprintf(name, sizeof(name), "ns/%016llx-%s%s.cat", (unsigned long long)now_ns(), tag,
		 "00000000000000000000000000000000000000000000000000000000");
	cr_assert_eq(remote_put(h->r, name, junk, size), 0);
	free(junk);
}

/*
 * A catalog that fails to decode used to be downloaded again by every pull, on every host, for
 * as long as it stayed there. It is now remembered in the index and left alone for a day, both by
 * the pull at open and by the live merge of a serving store.
 */
Test(sync, bad_catalogs_are_downloaded_once)
{
	const size_t junk = 200000;
	struct host a = {0};
	struct sync_report rep;
	uint8_t d[3000];
	uint64_t before;

	fill_random(d, sizeof(d), 5);
	host_open(&a, "a", 0);
	put(&a, 1, "good", d, sizeof(d));
	host_push(&a, NULL);
	put_bad_catalog(&a, "aaaaaaaa", junk);
	host_close(&a);

	host_open(&a, "b", 0);
	cr_assert_geq(bytes_in(a.r), junk, "the first pull reads the bad catalog");
	check(&a, "good", d, sizeof(d));
	host_close(&a);
	host_open(&a, "b", 0);
	cr_assert_lt(bytes_in(a.r), junk, "the second pull read the bad catalog again");

	/* The live merge: one more bad catalog, read by the first merge only. */
	put_bad_catalog(&a, "bbbbbbbb", junk);
	before = bytes_in(a.r);
	cr_assert_eq(vfs_pull(a.v, false, NULL, NULL, NULL, &rep), 0);
	cr_assert_geq(bytes_in(a.r) - before, junk);
	before = bytes_in(a.r);
	cr_assert_eq(vfs_pull(a.v, false, NULL, NULL, NULL, &rep), 0);
	cr_assert_lt(bytes_in(a.r) - before, junk, "the live merge read the bad catalog again");
	host_close(&a);
	fsck_ok(&a);
}

/*
 * A pull holds at most about batch_entries entries of decoded catalogs at once, and merging in
 * batches gives what one merge of everything gives: replacements, deletions, and an entry of a
 * later catalog stamped older than the one already merged (it loses in its own batch too).
 */
Test(sync, a_pull_in_batches_merges_what_one_pull_merges)
{
	static const uint8_t writer[16] = {9};
	const struct chunker_params *cp = &chunker_default_params;
	struct host a = {0}, whole = {0}, batched = {0}, live = {0};
	struct sync_options one = {.batch_entries = 1};
	struct sync_report rep;
	const struct cat_entry stale = {
		.path = "f3", .type = CAT_E_DIR, .mode = S_IFDIR | 0755, .stamp = 1};
	uint8_t d[5][3000], d1[2500];
	struct cat_writer *w;
	char name[160], hex[65], fname[8];
	uint8_t sha[32];
	void *cat;
	size_t len;

	host_open(&a, "a", 0);
	host_open(&live, "live", 0); /* mounted before anything is pushed: merges live */
	for (int i = 0; i < 5; i++) {
		fill_random(d[i], sizeof(d[i]), 40 + (unsigned)i);
		snprintf(fname, sizeof(fname), "f%d", i);
		put(&a, 1, fname, d[i], sizeof(d[i]));
	}
	host_push(&a, NULL);
	fill_random(d1, sizeof(d1), 99);
	put(&a, 1, "f1", d1, sizeof(d1));
	cr_assert_eq(vfs_unlink(a.v, 1, "f2"), 0);
	host_push(&a, NULL);
	/* A later catalog whose entry for f3 is stamped 1 ns after the epoch. */
	cr_assert_eq(cat_writer_new(CAT_DELTA, writer, now_ns(), cp->min, cp->avg, cp->max, &w), 0);
	cr_assert_eq(cat_writer_add_entry(w, &stale), 0);
	cr_assert_eq(cat_writer_finish(w, &cat, &len, sha), 0);
	snprintf(name, sizeof(name), "ns/%016llx-%s.cat", (unsigned long long)now_ns(),
		 hash_hex(sha, 32, hex));
	cr_assert_eq(remote_put(a.r, name, cat, len), 0);
	free(cat);
	host_close(&a);

	host_open(&whole, "whole", 0);
	cr_assert_eq(whole.pulled.batches, 1);
	host_open_with(&batched, "batched", 0, &one);
	cr_assert_geq(batched.pulled.batches, 3, "%llu batches",
		      (unsigned long long)batched.pulled.batches);
	cr_assert_eq(batched.pulled.catalogs_read, whole.pulled.catalogs_read);
	cr_assert_eq(vfs_pull(live.v, false, NULL, NULL, &one, &rep), 0);
	cr_assert_geq(rep.batches, 3, "live merge: %llu batches", (unsigned long long)rep.batches);
	cr_assert_eq(rep.catalogs_read, whole.pulled.catalogs_read);
	for (struct host *h = &whole; h; h = h == &whole     ? &batched
					     : h == &batched ? &live
							     : NULL) {
		check(h, "f0", d[0], sizeof(d[0]));
		check(h, "f1", d1, sizeof(d1));
		cr_assert_eq(lookup(h, "f2"), 0, "%s: f2 was deleted", h->store);
		check(h, "f3", d[3], sizeof(d[3]));
		check(h, "f4", d[4], sizeof(d[4]));
	}
	host_close(&whole);
	host_close(&batched);
	host_close(&live);
	fsck_ok(&whole);
	fsck_ok(&batched);
	fsck_ok(&live);
}

/*
 * A path as deep as the format allows (2,000 levels in 4,000 bytes) from a remote catalog. The
 * merge resolved and made its directories recursively, 8 KiB of stack per level: such a catalog
 * killed every host that pulled it, at mount and in the live merge.
 */
Test(sync, a_path_2000_levels_deep_is_merged_without_recursion)
{
	static const uint8_t writer[16] = {11};
	const struct chunker_params *cp = &chunker_default_params;
	static char deep[2 * 2000 + 2];
	struct cat_entry e = {.type = CAT_E_DIR, .mode = S_IFDIR | 0755};
	struct host a = {0};
	struct sync_report rep;
	struct cat_writer *w;
	char name[160], hex[65];
	uint8_t sha[32];
	uint64_t ino, parent = 1;
	void *cat;
	size_t len;

	for (size_t i = 0; i < 2000; i++)
		memcpy(deep + 2 * i, "d/", 2);
	deep[2 * 2000 - 1] = '\0'; /* "d/d/.../d": 2,000 components */
	host_open(&a, "a", 0);
	e.path = deep;
	e.stamp = now_ns();
	cr_assert_eq(cat_writer_new(CAT_DELTA, writer, e.stamp, cp->min, cp->avg, cp->max, &w), 0);
	cr_assert_eq(cat_writer_add_entry(w, &e), 0);
	cr_assert_eq(cat_writer_finish(w, &cat, &len, sha), 0);
	snprintf(name, sizeof(name), "ns/%016llx-%s.cat", (unsigned long long)e.stamp,
		 hash_hex(sha, 32, hex));
	cr_assert_eq(remote_put(a.r, name, cat, len), 0);
	free(cat);

	/* The live merge of a serving store, on a thread's stack... */
	cr_assert_eq(vfs_pull(a.v, false, NULL, NULL, NULL, &rep), 0);
	host_close(&a);
	/* ...and the pull of a fresh store. */
	host_open(&a, "fresh", 0);
	for (int i = 0; i < 2000; i++) {
		struct stat st;

		cr_assert_eq(vfs_lookup(a.v, parent, "d", &st), 0, "level %d", i);
		cr_assert(S_ISDIR(st.st_mode));
		ino = st.st_ino;
		parent = ino;
	}
	host_close(&a);
	fsck_ok(&a);
}

/* Hooks of a live merge run without a vfs: count what each batch applied. */
struct batch_count {
	size_t names, batch, largest, batches;
	bool wanted;
};

static void count_changed(void *data, uint64_t parent, const char *name, uint64_t ino)
{
	struct batch_count *c = data;

	(void)parent, (void)name, (void)ino;
	c->names++;
	c->batch++;
}

static int count_in_use(void *data, uint64_t ino)
{
	(void)data, (void)ino;
	return 0;
}

static void count_batch_done(void *data)
{
	struct batch_count *c = data;

	if (c->batch > c->largest)
		c->largest = c->batch;
	if (c->batch)
		c->batches++;
	c->batch = 0;
}

static bool count_lock_wanted(void *data)
{
	return ((struct batch_count *)data)->wanted;
}

/* Merge the remote live into a fresh store named name, a request "waiting" all along or never. */
static void live_merge_counted(const char *name, bool wanted, struct batch_count *c)
{
	struct sync_live hooks = {.data = c,
				  .changed = count_changed,
				  .in_use = count_in_use,
				  .batch_done = count_batch_done,
				  .lock_wanted = count_lock_wanted};
	pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	struct sync_report rep;
	struct remote *r;
	struct store *st;
	char path[160], err[256] = "";

	memset(c, 0, sizeof(*c));
	c->wanted = wanted;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	cr_assert_eq(store_open(path, STORE_CREATE | STORE_LOCK, &st, NULL), 0);
	cr_assert_eq(remote_open(url, NULL, &r, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(
		sync_check_remote(st, r, SYNC_REMOTE_CREATE | SYNC_REMOTE_BIND, err, sizeof(err)),
		0, "%s", err);
	cr_assert_eq(sync_live_pull(st, r, &lock, &hooks, NULL, &rep), 0);
	cr_assert_eq(idx_commit(store_idx(st)), 0);
	cr_assert_eq(store_close(st), 0);
	remote_free(r);
}

/*
 * While a request waits for the writer lock, the live merge ends its batch after
 * SYNC_LIVE_MIN_BATCH entries instead of SYNC_LIVE_BATCH, and still applies everything.
 */
Test(sync, a_waiting_request_cuts_the_live_merge_batch_short)
{
	const size_t files = 300;
	struct batch_count busy, idle;
	struct host a = {0};
	uint8_t d[100];
	char name[16];

	host_open(&a, "a", 0);
	for (size_t i = 0; i < files; i++) {
		fill_random(d, sizeof(d), i);
		snprintf(name, sizeof(name), "f%03zu", i);
		put(&a, 1, name, d, sizeof(d));
	}
	host_push(&a, NULL);
	host_close(&a);

	live_merge_counted("idle", false, &idle);
	live_merge_counted("busy", true, &busy);
	cr_assert_eq(idle.names, files);
	cr_assert_eq(busy.names, files);
	cr_assert_eq(idle.largest, SYNC_LIVE_BATCH);
	cr_assert_eq(busy.largest, SYNC_LIVE_MIN_BATCH);
	cr_assert_geq(busy.batches, files / SYNC_LIVE_MIN_BATCH, "%zu batches", busy.batches);
}
