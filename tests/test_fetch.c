/* SPDX-License-Identifier: MIT */
/*
 * The fetcher's contracts (index/fetch.h) without a mount. A "writer" host writes files through
 * a vfs and pushes them to a file:// remote in a temp dir; a cold store pulls the names
 * (extents known, data only on the remote) and a fetcher alone then serves its reads. Covers:
 * single-flight per chunk, coalesced range requests for a prefetch, verification (a forged or
 * truncated remote pack gives -EIO and never wrong bytes, and is not kept), failing fast after
 * a connection failure, and the statistics the read counters rely on.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fetch.h"
#include "remote.h"
#include "sync.h"
#include "util.h"
#include "vfs.h"

static char dir[] = "/tmp/pkgcachefs-test-fetch-XXXXXX";
static char url[128];
static const struct vfs_ctx ctx = {.uid = 0, .gid = 0};

static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
	for (size_t i = 0; i < n; i++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		p[i] = (uint8_t)(seed >> 56);
	}
}

/* The writer: one file per entry of sizes, named f0, f1..., content seeded by its number. */
static void write_and_push(const size_t *sizes, size_t n)
{
	struct vfs_options o = {0};
	struct sync_report rep;
	char path[160], err[256] = "";
	struct store *st;
	struct remote *r;
	struct vfs *v;

	snprintf(path, sizeof(path), "%s/writer", dir);
	cr_assert_eq(store_open(path, STORE_CREATE | STORE_LOCK, &st, NULL), 0);
	cr_assert_eq(remote_open(url, NULL, &r, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(
		sync_check_remote(st, r, SYNC_REMOTE_CREATE | SYNC_REMOTE_BIND, err, sizeof(err)),
		0, "%s", err);
	o.remote = r;
	cr_assert_eq(vfs_open(st, &o, &v), 0);
	for (size_t i = 0; i < n; i++) {
		uint8_t *data = malloc(sizes[i]);
		struct vfs_file *f;
		struct stat sb;
		char name[16];

		cr_assert_not_null(data);
		fill_random(data, sizes[i], i + 1);
		snprintf(name, sizeof(name), "f%zu", i);
		cr_assert_eq(vfs_create(v, &ctx, IDX_ROOT_INO, name, 0644, O_WRONLY, &sb, &f), 0);
		cr_assert_eq(vfs_write(v, f, data, sizes[i], 0, NULL, NULL), (ssize_t)sizes[i]);
		cr_assert_eq(vfs_flush(v, f), 0);
		vfs_release(v, f);
		free(data);
	}
	cr_assert_eq(vfs_push(v, NULL, &rep), 0, "push: %s", remote_last_error());
	cr_assert_eq(vfs_close(v), 0);
	remote_free(r);
}

/* A cold store: names and extents pulled, every chunk only on the remote. */
struct cold {
	struct store *st;
	struct remote *r;
	pthread_mutex_t lock; /* the writer lock a vfs would pass */
	struct fetcher *f;
};

static void cold_open(struct cold *c, const char *remote_url, const struct fetcher_options *fo)
{
	struct sync_report rep;
	char path[160], err[256] = "";
	struct remote *pull;

	snprintf(path, sizeof(path), "%s/cold", dir);
	cr_assert_eq(store_open(path, STORE_CREATE | STORE_LOCK, &c->st, NULL), 0);
	cr_assert_eq(remote_open(url, NULL, &pull, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(sync_check_remote(c->st, pull, SYNC_REMOTE_BIND, err, sizeof(err)), 0, "%s",
		     err);
	cr_assert_eq(sync_pull(c->st, pull, NULL, &rep), 0);
	remote_free(pull);
	cr_assert_eq(remote_open(remote_url, &(struct remote_options){.retries = REMOTE_NO_RETRY},
				 &c->r, err, sizeof(err)),
		     0, "%s", err);
	pthread_mutex_init(&c->lock, NULL);
	cr_assert_eq(fetcher_new(c->st, c->r, &c->lock, fo, &c->f), 0);
}

static void cold_close(struct cold *c)
{
	fetcher_free(c->f);
	remote_free(c->r);
	store_close(c->st);
	pthread_mutex_destroy(&c->lock);
}

/* The extents of file fN of the cold store; freed by the caller. */
static struct idx_extent *extents_of(struct cold *c, size_t i, size_t *ret_n)
{
	struct idx_extent *ext = NULL;
	char name[16];
	uint64_t ino;

	snprintf(name, sizeof(name), "f%zu", i);
	pthread_mutex_lock(&c->lock);
	cr_assert_eq(idx_lookup(store_idx(c->st), IDX_ROOT_INO, name, &ino), 1);
	cr_assert_eq(idx_get_extents(store_idx(c->st), ino, &ext, ret_n), 0);
	pthread_mutex_unlock(&c->lock);
	cr_assert_gt(*ret_n, 0);
	for (size_t k = 0; k < *ret_n; k++)
		cr_assert(ext[k].chunk && !ext[k].pack && ext[k].rpack,
			  "extent %zu of %s should be only on the remote", k, name);
	return ext;
}

/* 1 when the chunk has a local copy now, 0 when it is still only on the remote. */
static int is_local(struct cold *c, uint64_t chunk)
{
	struct pack_loc loc;
	uint64_t pack = 0;
	int r;

	pthread_mutex_lock(&c->lock);
	r = idx_chunk_loc(store_idx(c->st), chunk, &pack, &loc);
	pthread_mutex_unlock(&c->lock);
	cr_assert_eq(r, 1);
	return pack != 0;
}

static uint64_t requests(struct cold *c)
{
	struct remote_counters rc;

	remote_get_counters(c->r, &rc);
	return rc.requests;
}

/* Check buf against the writer's bytes of extent e of file i (content seeded by i + 1). */
static void check_bytes(size_t i, size_t size, const struct idx_extent *e, const uint8_t *buf)
{
	uint8_t *data = malloc(size);

	cr_assert_not_null(data);
	fill_random(data, size, i + 1);
	cr_assert(e->off + e->len <= size);
	cr_assert(memcmp(data + e->off, buf, e->len) == 0, "wrong bytes at %llu",
		  (unsigned long long)e->off);
	free(data);
}

/* The single pack file in the remote's packs/ (the writer pushed once). */
static void remote_pack_path(char *buf, size_t len)
{
	char packs[160];
	struct dirent *de;
	DIR *d;
	int found = 0;

	snprintf(packs, sizeof(packs), "%s/remote/packs", dir);
	d = opendir(packs);
	cr_assert_not_null(d);
	while ((de = readdir(d))) {
		if (strstr(de->d_name, ".pack")) {
			snprintf(buf, len, "%s/%s", packs, de->d_name);
			found++;
		}
	}
	closedir(d);
	cr_assert_eq(found, 1, "%d remote packs", found);
}

static void setup(void)
{
	char path[160];

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

TestSuite(fetch, .init = setup, .fini = teardown);

struct reader {
	struct cold *c;
	const struct idx_extent *e;
	uint8_t *buf;
	int r;
};

static void *read_one(void *arg)
{
	struct reader *rd = arg;

	rd->r = fetcher_read(rd->c->f, rd->e, rd->buf);
	return NULL;
}

Test(fetch, single_flight_per_chunk)
{
	enum { READERS = 8 };
	size_t size = 300000, n;
	struct cold c;
	struct idx_extent *ext;
	struct reader rd[READERS];
	pthread_t th[READERS];
	struct fetcher_stats s;
	uint64_t before;

	write_and_push(&size, 1);
	cold_open(&c, url, NULL);
	ext = extents_of(&c, 0, &n);
	before = requests(&c);
	for (int i = 0; i < READERS; i++) {
		rd[i] = (struct reader){.c = &c, .e = &ext[0], .buf = malloc(ext[0].len)};
		cr_assert_not_null(rd[i].buf);
		cr_assert_eq(pthread_create(&th[i], NULL, read_one, &rd[i]), 0);
	}
	for (int i = 0; i < READERS; i++) {
		pthread_join(th[i], NULL);
		cr_assert_eq(rd[i].r, 0, "reader %d: %d", i, rd[i].r);
		check_bytes(0, size, &ext[0], rd[i].buf);
		free(rd[i].buf);
	}
	/* Eight readers of one missing chunk: one remote request, one chunk fetched. */
	cr_assert_eq(requests(&c) - before, 1);
	fetcher_get_stats(c.f, &s);
	cr_assert_eq(s.chunks, 1);
	cr_assert_eq(s.bytes, ext[0].len);
	cr_assert_eq(s.failures, 0);
	cr_assert_eq(is_local(&c, ext[0].chunk), 1);
	free(ext);
	cold_close(&c);
}

Test(fetch, prefetch_coalesces_adjacent_chunks)
{
	size_t size = 3u << 20, n;
	struct cold c;
	struct idx_extent *ext;
	struct fetcher_stats s;
	uint64_t before, raw = 0;

	write_and_push(&size, 1);
	cold_open(&c, url, NULL);
	ext = extents_of(&c, 0, &n);
	cr_assert_gt(n, 8, "a 3 MiB file should be many chunks, got %zu", n);
	for (size_t k = 0; k < n; k++)
		raw += ext[k].len;
	before = requests(&c);
	fetcher_prefetch(c.f, ext, n);
	fetcher_drain(c.f);
	/* One file pushed together: its chunks are adjacent in one pack, fetched in one range. */
	cr_assert_eq(requests(&c) - before, 1, "%llu requests for %zu chunks",
		     (unsigned long long)(requests(&c) - before), n);
	fetcher_get_stats(c.f, &s);
	cr_assert_eq(s.chunks, n);
	cr_assert_eq(s.bytes, raw);
	cr_assert_geq(s.wire_bytes, s.chunks * PACK_ENTRY_HDR_SIZE);
	for (size_t k = 0; k < n; k++) {
		uint8_t *buf = malloc(ext[k].len);

		cr_assert_eq(is_local(&c, ext[k].chunk), 1);
		/* The extents as seen before the prefetch: served locally, no request. */
		cr_assert_eq(fetcher_read(c.f, &ext[k], buf), 0);
		check_bytes(0, size, &ext[k], buf);
		free(buf);
	}
	cr_assert_eq(requests(&c) - before, 1);
	fetcher_get_stats(c.f, &s);
	cr_assert_eq(s.local_hits, n);
	free(ext);
	cold_close(&c);
}

Test(fetch, range_max_bounds_each_request)
{
	struct fetcher_options fo = {.range_max = FETCH_RANGE_MIN};
	size_t size = 3u << 20, n;
	struct cold c;
	struct idx_extent *ext;
	struct fetcher_stats s;
	uint64_t before, got;

	write_and_push(&size, 1);
	cold_open(&c, url, &fo);
	ext = extents_of(&c, 0, &n);
	before = requests(&c);
	fetcher_prefetch(c.f, ext, n);
	fetcher_drain(c.f);
	got = requests(&c) - before;
	fetcher_get_stats(c.f, &s);
	cr_assert_eq(s.chunks, n);
	/* A range holds at least one entry (up to 256 KiB) and stays within range_max otherwise:
	 * at least wire / (range_max + one entry) requests, at most one per chunk. */
	cr_assert_geq(got, s.wire_bytes / (FETCH_RANGE_MIN + (256u << 10) + PACK_ENTRY_HDR_SIZE),
		      "%llu requests for %llu bytes", (unsigned long long)got,
		      (unsigned long long)s.wire_bytes);
	cr_assert_gt(got, 1);
	cr_assert_leq(got, n);
	for (size_t k = 0; k < n; k++) {
		uint8_t *buf = malloc(ext[k].len);

		cr_assert_eq(fetcher_read(c.f, &ext[k], buf), 0);
		check_bytes(0, size, &ext[k], buf);
		free(buf);
	}
	free(ext);
	cold_close(&c);
}

/* Where chunk landed in the local store, as one number that grows with each append. */
static uint64_t landed_at(struct cold *c, uint64_t chunk)
{
	struct pack_loc loc;
	uint64_t pack = 0;

	pthread_mutex_lock(&c->lock);
	cr_assert_eq(idx_chunk_loc(store_idx(c->st), chunk, &pack, &loc), 1);
	pthread_mutex_unlock(&c->lock);
	cr_assert_neq(pack, 0);
	return pack << 40 | loc.offset;
}

Test(fetch, prefetch_first_goes_ahead_of_the_queue)
{
	struct fetcher_options fo = {.workers = 1, .range_max = FETCH_RANGE_MIN};
	size_t sizes[3] = {3u << 20, 300000, 300000}, n0, n1, n2, before_last = 0;
	struct idx_extent *e0, *e1, *e2;
	uint64_t last1 = 0, first2 = UINT64_MAX;
	struct cold c;

	write_and_push(sizes, 3);
	cold_open(&c, url, &fo);
	e0 = extents_of(&c, 0, &n0);
	e1 = extents_of(&c, 1, &n1);
	e2 = extents_of(&c, 2, &n2);
	/* The writer lock held: the one worker stops at its first job, so the queue is all there
	 * when the other files are put first. */
	pthread_mutex_lock(&c.lock);
	fetcher_prefetch(c.f, e0, n0);
	fetcher_prefetch_first(c.f, e1, n1);
	fetcher_prefetch_first(c.f, e2, n2);
	pthread_mutex_unlock(&c.lock);
	fetcher_drain(c.f);
	for (size_t k = 0; k < n1; k++)
		last1 = MAX(last1, landed_at(&c, e1[k].chunk));
	for (size_t k = 0; k < n2; k++)
		first2 = MIN(first2, landed_at(&c, e2[k].chunk));
	for (size_t k = 0; k < n0; k++)
		before_last += landed_at(&c, e0[k].chunk) < last1;
	/* Only the first job of file 0 (the worker had it already: a range of 64 KiB holds one
	 * or two chunks) may land before the whole of file 1; in queue order all of it would. */
	cr_assert_leq(before_last, 2, "%zu of %zu chunks of the queued file landed first",
		      before_last, n0);
	/* Among files put first, the first opened comes first: its reader is further along. */
	cr_assert_lt(last1, first2, "file 2, put first later, landed before file 1");
	free(e0);
	free(e1);
	free(e2);
	cold_close(&c);
}

/* Flip one byte in the middle of the remote pack's data of extent e. */
static void forge(const struct idx_extent *e)
{
	char path[600];
	uint8_t b;
	off_t at = (off_t)(e->rloc.offset + PACK_ENTRY_HDR_SIZE + e->rloc.stored_len / 2);
	int fd;

	remote_pack_path(path, sizeof(path));
	fd = open(path, O_RDWR);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, &b, 1, at), 1);
	b ^= 0x5a;
	cr_assert_eq(pwrite(fd, &b, 1, at), 1);
	close(fd);
}

Test(fetch, forged_pack_is_eio_never_wrong_bytes)
{
	size_t size = 300000, n;
	struct cold c;
	struct idx_extent *ext;
	struct fetcher_stats s;
	uint8_t *buf;

	write_and_push(&size, 1);
	cold_open(&c, url, NULL);
	ext = extents_of(&c, 0, &n);
	cr_assert_gt(n, 1);
	forge(&ext[1]);
	buf = malloc(ext[1].len);
	memset(buf, 0xee, ext[1].len);
	cr_assert_eq(fetcher_read(c.f, &ext[1], buf), -EIO);
	cr_assert_eq(is_local(&c, ext[1].chunk), 0, "a forged chunk must not be kept");
	/* Again: still refused (nothing bad was cached), and its neighbour still reads right. */
	cr_assert_eq(fetcher_read(c.f, &ext[1], buf), -EIO);
	free(buf);
	buf = malloc(ext[0].len);
	cr_assert_eq(fetcher_read(c.f, &ext[0], buf), 0);
	check_bytes(0, size, &ext[0], buf);
	free(buf);
	fetcher_get_stats(c.f, &s);
	cr_assert_eq(s.failures, 2);
	cr_assert_eq(s.chunks, 1);
	free(ext);
	cold_close(&c);
}

Test(fetch, truncated_pack_is_eio)
{
	size_t size = 1u << 20, n;
	struct cold c;
	struct idx_extent *ext;
	char path[600];
	uint8_t *buf;
	size_t last;

	write_and_push(&size, 1);
	cold_open(&c, url, NULL);
	ext = extents_of(&c, 0, &n);
	last = n - 1;
	remote_pack_path(path, sizeof(path));
	/* Cut the pack inside the last chunk's entry. */
	cr_assert_eq(truncate(path, (off_t)(ext[last].rloc.offset + PACK_ENTRY_HDR_SIZE +
					    ext[last].rloc.stored_len / 2)),
		     0);
	buf = malloc(ext[last].len);
	cr_assert_eq(fetcher_read(c.f, &ext[last], buf), -EIO);
	cr_assert_eq(is_local(&c, ext[last].chunk), 0);
	free(buf);
	/*
	 * A prefetch of the whole file asks for one range reaching past the cut, which the remote
	 * refuses whole (as HTTP does with 416): nothing is kept from it, and a read of an intact
	 * chunk, asking for its own range, still gets the right bytes.
	 */
	fetcher_prefetch(c.f, ext, n);
	fetcher_drain(c.f);
	cr_assert_eq(is_local(&c, ext[last].chunk), 0);
	buf = malloc(ext[0].len);
	cr_assert_eq(fetcher_read(c.f, &ext[0], buf), 0);
	check_bytes(0, size, &ext[0], buf);
	free(buf);
	free(ext);
	cold_close(&c);
}

/* A port on 127.0.0.1 with nothing listening. */
static int closed_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	cr_assert_geq(fd, 0);
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	return ntohs(a.sin_port);
}

static int reports;

static void count_report(void *data, const char *msg)
{
	__atomic_add_fetch(&reports, 1, __ATOMIC_RELAXED);
}

Test(fetch, fails_fast_after_a_connection_failure)
{
	size_t size = 300000, n;
	struct fetcher_options fo = {.fail_fast_ms = 60000, .report = count_report};
	struct cold c;
	struct idx_extent *ext;
	struct fetcher_stats s;
	char down[128];
	uint8_t *buf;
	uint64_t before;
	int64_t t0;

	write_and_push(&size, 1);
	snprintf(down, sizeof(down), "http://127.0.0.1:%d/remote", closed_port());
	cold_open(&c, down, &fo);
	ext = extents_of(&c, 0, &n);
	cr_assert_gt(n, 2);
	buf = malloc(ext[0].len > ext[1].len ? ext[0].len : ext[1].len);
	before = requests(&c);
	cr_assert_eq(fetcher_read(c.f, &ext[0], buf), -EIO);
	cr_assert_gt(requests(&c), before, "the first read should have tried the remote");
	cr_assert_eq(__atomic_load_n(&reports, __ATOMIC_RELAXED), 1);
	/* Within fail_fast_ms: -EIO at once, without asking the remote again. */
	before = requests(&c);
	t0 = mono_ns();
	for (size_t k = 1; k < n; k++)
		cr_assert_eq(fetcher_read(c.f, &ext[k], buf), -EIO);
	cr_assert_eq(requests(&c), before);
	cr_assert_lt(mono_ns() - t0, 1000000000, "failing fast took over a second");
	fetcher_get_stats(c.f, &s);
	cr_assert_eq(s.failures, n);
	cr_assert_eq(s.chunks, 0);
	free(buf);
	free(ext);
	cold_close(&c);
}

Test(fetch, stats_tell_fetched_from_local_hits)
{
	size_t size = 300000, n;
	struct cold c;
	struct idx_extent *ext;
	struct fetcher_stats s;
	uint8_t *buf;
	uint64_t before;

	write_and_push(&size, 1);
	cold_open(&c, url, NULL);
	ext = extents_of(&c, 0, &n);
	buf = malloc(ext[0].len);
	fetcher_get_stats(c.f, &s);
	cr_assert(s.chunks == 0 && s.bytes == 0 && s.wire_bytes == 0 && s.local_hits == 0 &&
		  s.failures == 0);
	before = requests(&c);
	cr_assert_eq(fetcher_read(c.f, &ext[0], buf), 0);
	fetcher_get_stats(c.f, &s);
	cr_assert_eq(s.chunks, 1);
	cr_assert_eq(s.bytes, ext[0].len);
	cr_assert_geq(s.wire_bytes, PACK_ENTRY_HDR_SIZE);
	cr_assert_eq(s.local_hits, 0);
	/*
	 * A reader holding the extents from before (e.pack still 0) gets the bytes locally: 0 like
	 * a fetch (vfs counts the read as fetched either way), counted as a local hit, no request.
	 */
	memset(buf, 0, ext[0].len);
	cr_assert_eq(fetcher_read(c.f, &ext[0], buf), 0);
	check_bytes(0, size, &ext[0], buf);
	fetcher_get_stats(c.f, &s);
	cr_assert_eq(s.chunks, 1);
	cr_assert_eq(s.local_hits, 1);
	cr_assert_eq(requests(&c) - before, 1);
	free(buf);
	free(ext);
	cold_close(&c);
}
