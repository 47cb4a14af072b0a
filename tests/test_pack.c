/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for pack files: append and read back, the compression choice, every kind of damage
 * a pack can suffer on disk (flipped bytes in data, entry headers, the footer; a torn tail; a file
 * that is not a pack at all), and a write failure in the middle of an append, simulated with
 * RLIMIT_FSIZE so that it is deterministic and needs no root.
 *
 * Each test works in its own temporary directory, removed by the fixture.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <zstd.h>

#include "pack.h"

#define FILE_HDR 64u
#define ENTRY_HDR 72u
#define FOOTER_REC 68u
#define TRAILER 32u

static char tmpdir[64];
static int dfd = -1;

static void setup(void)
{
	strcpy(tmpdir, "/tmp/test_pack.XXXXXX");
	cr_assert_not_null(mkdtemp(tmpdir));
	dfd = open(tmpdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	cr_assert_geq(dfd, 0);
}

static void teardown(void)
{
	DIR *d;
	struct dirent *de;

	if (dfd < 0)
		return;
	d = fdopendir(dfd);
	if (!d)
		return;
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			unlinkat(dirfd(d), de->d_name, 0);
	closedir(d);
	rmdir(tmpdir);
	dfd = -1;
}

TestSuite(pack, .init = setup, .fini = teardown);

/* splitmix64: deterministic test data */
static uint64_t rnd(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

struct chunk {
	uint8_t *data;
	uint32_t len;
	bool text;
	chunk_key key;
	chunk_digest digest;
	struct pack_loc loc;
};

static void chunk_fill(struct chunk *c, uint32_t len, bool text, uint64_t seed)
{
	static const char *const words[] = {"package", "cache ", "chunk", "index\n", "pack",
					    "zstd ",   "store",  "file ", "data",    "version\n",
					    "lib",     "python", "npm ",  "cargo",   "wheel "};
	uint64_t s = seed;
	uint32_t i = 0;

	c->data = malloc(len);
	cr_assert_not_null(c->data);
	c->len = len;
	c->text = text;
	if (text) {
		while (i < len) {
			const char *w = words[rnd(&s) % (sizeof(words) / sizeof(words[0]))];

			for (size_t k = 0; w[k] && i < len; k++)
				c->data[i++] = (uint8_t)w[k];
		}
	} else {
		for (; i < len; i++)
			c->data[i] = (uint8_t)(rnd(&s) >> 56);
	}
	hash_key(c->data, len, &c->key);
	hash_digest(c->data, len, &c->digest);
}

static void chunks_free(struct chunk *cs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(cs[i].data);
}

static struct pack_writer *pack_with(const char *name, uint64_t pack_id, struct chunk *cs, size_t n,
				     bool compress)
{
	struct pack_writer *w = NULL;

	cr_assert_eq(pack_writer_create(dfd, name, pack_id, &w), 0);
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(pack_writer_append(w, &cs[i].key, &cs[i].digest, cs[i].data, cs[i].len,
						compress, &cs[i].loc),
			     0, "append %zu", i);
	return w;
}

/* Five small chunks, two of them compressible, in an unsealed pack `name`. */
static void small_pack(const char *name, struct chunk cs[5], bool seal)
{
	struct pack_writer *w;

	for (int i = 0; i < 5; i++)
		chunk_fill(&cs[i], 3000 + 1000 * (uint32_t)i, i % 2 == 1, 100 + (uint64_t)i);
	w = pack_with(name, 7, cs, 5, true);
	cr_assert_eq(cs[1].loc.flags, PACK_F_ZSTD);
	cr_assert_eq(cs[0].loc.flags, 0);
	if (seal)
		cr_assert_eq(pack_writer_seal(w), 0);
	pack_writer_free(w);
}

static int open_pack(const char *name, int flags)
{
	int fd = openat(dfd, name, flags | O_CLOEXEC);

	cr_assert_geq(fd, 0, "open %s: %s", name, strerror(errno));
	return fd;
}

static uint64_t file_size(int fd)
{
	struct stat st;

	cr_assert_eq(fstat(fd, &st), 0);
	return (uint64_t)st.st_size;
}

static void flip(const char *name, uint64_t off)
{
	int fd = open_pack(name, O_RDWR);
	uint8_t b;

	cr_assert_eq(pread(fd, &b, 1, (off_t)off), 1);
	b ^= 0x20;
	cr_assert_eq(pwrite(fd, &b, 1, (off_t)off), 1);
	close(fd);
}

static void cut(const char *name, uint64_t size)
{
	int fd = open_pack(name, O_RDWR);

	cr_assert_eq(ftruncate(fd, (off_t)size), 0);
	close(fd);
}

static int read_back(int fd, const struct chunk *c)
{
	uint8_t *buf = malloc(c->len);
	int r;

	cr_assert_not_null(buf);
	r = pack_read_chunk(fd, &c->loc, &c->key, buf, c->len);
	if (r == 0)
		cr_assert_eq(memcmp(buf, c->data, c->len), 0, "chunk at %llu differs",
			     (unsigned long long)c->loc.offset);
	free(buf);
	return r;
}

struct collected {
	struct pack_entry *e;
	size_t n;
	size_t stop_at; /* return 42 from the callback for this entry; SIZE_MAX: never */
};

static int collect_cb(const struct pack_entry *e, void *userdata)
{
	struct collected *c = userdata;

	c->e = realloc(c->e, (c->n + 1) * sizeof(*c->e));
	cr_assert_not_null(c->e);
	c->e[c->n++] = *e;
	return c->n - 1 == c->stop_at ? 42 : 0;
}

/* pack_scan of `name`; the entries land in *got, the return value is pack_scan's. */
static int scan(const char *name, struct collected *got, uint64_t *ret_id, uint64_t *ret_end)
{
	int fd = open_pack(name, O_RDONLY);
	int r;

	*got = (struct collected){.stop_at = SIZE_MAX};
	r = pack_scan(fd, collect_cb, got, ret_id, ret_end);
	close(fd);
	return r;
}

static void assert_entries(const struct collected *got, const struct chunk *cs, size_t n)
{
	cr_assert_eq(got->n, n, "scan found %zu entries, expected %zu", got->n, n);
	for (size_t i = 0; i < n; i++) {
		const struct pack_entry *e = &got->e[i];

		cr_assert(hash_key_equal(&e->key, &cs[i].key), "entry %zu key", i);
		cr_assert(hash_digest_equal(&e->digest, &cs[i].digest), "entry %zu digest", i);
		cr_assert_eq(e->raw_len, cs[i].len, "entry %zu raw_len", i);
		cr_assert_eq(e->loc.offset, cs[i].loc.offset, "entry %zu offset", i);
		cr_assert_eq(e->loc.stored_len, cs[i].loc.stored_len, "entry %zu stored_len", i);
		cr_assert_eq(e->loc.flags, cs[i].loc.flags, "entry %zu flags", i);
	}
}

static uint64_t entry_end(const struct chunk *c)
{
	return c->loc.offset + ENTRY_HDR + c->loc.stored_len;
}

Test(pack, roundtrip_many_chunks)
{
	enum { N = 300 };
	static const uint32_t sizes[] = {1, 2, 15, 16, 17, 100, 4096, 65536, 65537, 262144};
	struct chunk *cs = calloc(N + 2, sizeof(*cs));
	struct pack_writer *w;
	uint64_t seed = 1, expect_off = FILE_HDR;
	int fd;

	cr_assert_not_null(cs);
	for (size_t i = 0; i < N; i++) {
		uint32_t len = i < 40 ? sizes[i % 10] : 1 + (uint32_t)(rnd(&seed) % 300000);

		chunk_fill(&cs[i], len, (i / 2) % 2 == 1, i);
	}
	chunk_fill(&cs[N], PACK_MAX_CHUNK, true, 1000);
	chunk_fill(&cs[N + 1], PACK_MAX_CHUNK, false, 1001);

	w = pack_with("rt.pack", 99, cs, N + 2, true);
	fd = pack_writer_fd(w);
	cr_assert_eq(pack_writer_size(w), file_size(fd));
	for (size_t i = 0; i < N + 2; i++) {
		const struct chunk *c = &cs[i];

		cr_assert_eq(c->loc.offset, expect_off, "entries are contiguous");
		expect_off = entry_end(c);
		if (!c->text || c->len == 1) {
			cr_assert_eq(c->loc.flags, 0, "chunk %zu (len %u) stored raw", i, c->len);
			cr_assert_eq(c->loc.stored_len, c->len);
		} else if (c->len >= 1024) {
			cr_assert_eq(c->loc.flags, PACK_F_ZSTD, "text chunk %zu compressed", i);
			cr_assert_leq(c->loc.stored_len, c->len - c->len / 16);
		}
		/* Readable through the writer's fd before the pack is sealed. */
		cr_assert_eq(read_back(fd, c), 0, "chunk %zu", i);
	}
	cr_assert_eq(pack_writer_sync(w), 0);
	cr_assert_eq(pack_writer_sync(w), 0);
	cr_assert_eq(pack_writer_seal(w), 0);
	pack_writer_free(w);

	fd = open_pack("rt.pack", O_RDONLY);
	for (size_t i = N + 2; i-- > 0;)
		cr_assert_eq(read_back(fd, &cs[i]), 0, "chunk %zu after seal", i);
	close(fd);
	chunks_free(cs, N + 2);
	free(cs);
}

Test(pack, compress_false_stores_raw)
{
	struct chunk c;
	struct pack_writer *w;

	chunk_fill(&c, 100000, true, 5);
	w = pack_with("raw.pack", 1, &c, 1, false);
	cr_assert_eq(c.loc.flags, 0);
	cr_assert_eq(c.loc.stored_len, c.len);
	cr_assert_eq(read_back(pack_writer_fd(w), &c), 0);
	pack_writer_free(w);
	chunks_free(&c, 1);
}

Test(pack, invalid_arguments)
{
	struct chunk c;
	struct pack_writer *w;
	struct pack_loc loc, bad;
	uint8_t *buf;
	int fd;

	chunk_fill(&c, 50000, true, 3);
	w = pack_with("inval.pack", 1, &c, 1, true);
	cr_assert_eq(pack_writer_append(w, &c.key, &c.digest, c.data, 0, true, &loc), -EINVAL);
	cr_assert_eq(
		pack_writer_append(w, &c.key, &c.digest, c.data, PACK_MAX_CHUNK + 1, true, &loc),
		-EINVAL);
	cr_assert_eq(pack_writer_size(w), entry_end(&c), "failed appends wrote nothing");

	fd = pack_writer_fd(w);
	buf = malloc(c.len + 1);
	bad = c.loc;
	bad.flags = 0x2;
	cr_assert_eq(pack_read_chunk(fd, &bad, &c.key, buf, c.len), -EINVAL);
	bad = c.loc;
	bad.stored_len = c.len + 1;
	cr_assert_eq(pack_read_chunk(fd, &bad, &c.key, buf, c.len), -EINVAL);
	bad = c.loc;
	bad.offset = 10;
	cr_assert_eq(pack_read_chunk(fd, &bad, &c.key, buf, c.len), -EINVAL);
	cr_assert_eq(pack_read_chunk(fd, &c.loc, &c.key, buf, 0), -EINVAL);
	/* Consistent arguments that disagree with the entry header: damage, not a caller bug. */
	cr_assert_eq(pack_read_chunk(fd, &c.loc, &c.key, buf, c.len + 1), -EIO);
	bad = c.loc;
	bad.stored_len--;
	cr_assert_eq(pack_read_chunk(fd, &bad, &c.key, buf, c.len), -EIO);
	bad = c.loc;
	bad.offset += 1;
	cr_assert_eq(pack_read_chunk(fd, &bad, &c.key, buf, c.len), -EIO);
	bad = c.loc;
	bad.offset = entry_end(&c);
	cr_assert_eq(pack_read_chunk(fd, &bad, &c.key, buf, c.len), -EIO, "past the end");

	cr_assert_eq(pack_writer_seal(w), 0);
	cr_assert_eq(pack_writer_append(w, &c.key, &c.digest, c.data, c.len, true, &loc), -EINVAL);
	cr_assert_eq(pack_writer_seal(w), -EINVAL);
	pack_writer_free(w);
	pack_writer_free(NULL);
	free(buf);
	chunks_free(&c, 1);
}

Test(pack, wrong_key_is_eio)
{
	struct chunk cs[5];
	int fd;

	small_pack("key.pack", cs, true);
	fd = open_pack("key.pack", O_RDONLY);
	for (int i = 0; i < 2; i++) {
		chunk_key k = cs[i].key;
		uint8_t *buf = malloc(cs[i].len);

		k.b[i == 0 ? 0 : HASH_KEY_SIZE - 1] ^= 1;
		cr_assert_eq(pack_read_chunk(fd, &cs[i].loc, &k, buf, cs[i].len), -EIO);
		/* Another chunk's key, same location. */
		cr_assert_eq(pack_read_chunk(fd, &cs[i].loc, &cs[i + 2].key, buf, cs[i].len), -EIO);
		cr_assert_eq(read_back(fd, &cs[i]), 0);
		free(buf);
	}
	close(fd);
	chunks_free(cs, 5);
}

Test(pack, flipped_data_byte_is_eio)
{
	struct chunk cs[5];
	int fd;

	small_pack("data.pack", cs, false);
	fd = open_pack("data.pack", O_RDONLY);
	/* cs[0] is stored raw, cs[1] compressed: both must catch damage anywhere in the data. */
	for (int i = 0; i < 2; i++) {
		uint64_t data = cs[i].loc.offset + ENTRY_HDR;
		const uint64_t offs[] = {data, data + cs[i].loc.stored_len / 2,
					 data + cs[i].loc.stored_len - 1};

		for (int k = 0; k < 3; k++) {
			flip("data.pack", offs[k]);
			cr_assert_eq(read_back(fd, &cs[i]), -EIO, "chunk %d, byte %llu", i,
				     (unsigned long long)offs[k]);
			flip("data.pack", offs[k]);
			cr_assert_eq(read_back(fd, &cs[i]), 0);
		}
	}
	close(fd);
	chunks_free(cs, 5);
}

Test(pack, flipped_entry_header_byte_is_eio)
{
	struct chunk cs[5];
	int fd;

	small_pack("hdr.pack", cs, false);
	fd = open_pack("hdr.pack", O_RDONLY);
	for (int i = 0; i < 2; i++) {
		for (uint64_t b = 0; b < ENTRY_HDR; b++) {
			flip("hdr.pack", cs[i].loc.offset + b);
			cr_assert_eq(read_back(fd, &cs[i]), -EIO, "chunk %d, header byte %llu", i,
				     (unsigned long long)b);
			flip("hdr.pack", cs[i].loc.offset + b);
		}
		cr_assert_eq(read_back(fd, &cs[i]), 0);
	}
	close(fd);
	chunks_free(cs, 5);
}

Test(pack, truncated_file_fails_cleanly)
{
	struct chunk cs[5];
	struct collected got;
	uint64_t end = 0;
	int fd;

	small_pack("trunc.pack", cs, true);
	cut("trunc.pack", cs[4].loc.offset + ENTRY_HDR + 10);
	fd = open_pack("trunc.pack", O_RDONLY);
	cr_assert_eq(read_back(fd, &cs[4]), -EIO);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(read_back(fd, &cs[i]), 0);
	close(fd);
	cr_assert_eq(scan("trunc.pack", &got, NULL, &end), 0);
	assert_entries(&got, cs, 4);
	cr_assert_eq(end, cs[4].loc.offset);
	free(got.e);

	cut("trunc.pack", 10);
	fd = open_pack("trunc.pack", O_RDONLY);
	for (int i = 0; i < 5; i++)
		cr_assert_eq(read_back(fd, &cs[i]), -EIO);
	close(fd);
	cr_assert_eq(scan("trunc.pack", &got, NULL, NULL), -EINVAL);
	cr_assert_eq(got.n, 0);

	cut("trunc.pack", 0);
	cr_assert_eq(scan("trunc.pack", &got, NULL, NULL), -EINVAL);
	chunks_free(cs, 5);
}

Test(pack, scan_sealed_uses_footer)
{
	struct chunk cs[5];
	struct collected got;
	uint64_t id = 0, end = 0;
	int fd;

	small_pack("foot.pack", cs, true);
	cr_assert_eq(scan("foot.pack", &got, &id, &end), 0);
	assert_entries(&got, cs, 5);
	cr_assert_eq(id, 7);
	cr_assert_eq(end, entry_end(&cs[4]));
	fd = open_pack("foot.pack", O_RDONLY);
	cr_assert_eq(file_size(fd), end + 5 * FOOTER_REC + TRAILER);
	close(fd);
	free(got.e);

	/* Damage an entry header: the footer alone still lists every entry, so it was used. */
	flip("foot.pack", cs[2].loc.offset + 20);
	cr_assert_eq(scan("foot.pack", &got, &id, &end), 0);
	assert_entries(&got, cs, 5);
	free(got.e);
	chunks_free(cs, 5);
}

Test(pack, scan_unsealed_walks_entries)
{
	struct chunk cs[5];
	struct collected got;
	struct pack_writer *w;
	uint64_t id = 0, end = 0;

	for (int i = 0; i < 5; i++)
		chunk_fill(&cs[i], 20000 + (uint32_t)i, i % 2 == 0, 40 + (uint64_t)i);
	w = pack_with("open.pack", 0xfedcba9876543210ull, cs, 5, true);

	/* While the writer is still open, through its own fd. */
	got = (struct collected){.stop_at = SIZE_MAX};
	cr_assert_eq(pack_scan(pack_writer_fd(w), collect_cb, &got, &id, &end), 0);
	assert_entries(&got, cs, 5);
	cr_assert_eq(id, 0xfedcba9876543210ull);
	cr_assert_eq(end, pack_writer_size(w));
	free(got.e);
	pack_writer_free(w);

	cr_assert_eq(scan("open.pack", &got, &id, &end), 0);
	assert_entries(&got, cs, 5);
	cr_assert_eq(end, entry_end(&cs[4]));
	free(got.e);

	/* An empty pack: a header and nothing else. */
	cr_assert_eq(pack_writer_create(dfd, "empty.pack", 3, &w), 0);
	pack_writer_free(w);
	cr_assert_eq(scan("empty.pack", &got, &id, &end), 0);
	cr_assert_eq(got.n, 0);
	cr_assert_eq(id, 3);
	cr_assert_eq(end, FILE_HDR);

	/* An empty sealed pack: a header and a footer with no records. */
	cr_assert_eq(pack_writer_create(dfd, "empty2.pack", 4, &w), 0);
	cr_assert_eq(pack_writer_seal(w), 0);
	pack_writer_free(w);
	cr_assert_eq(scan("empty2.pack", &got, &id, &end), 0);
	cr_assert_eq(got.n, 0);
	cr_assert_eq(end, FILE_HDR);
	chunks_free(cs, 5);
}

Test(pack, scan_torn_tail)
{
	struct chunk cs[5];
	struct collected got;
	uint64_t end = 0;

	small_pack("torn.pack", cs, false);
	const uint64_t off = cs[4].loc.offset;
	const uint64_t cuts[] = {off + 1,
				 off + 40,
				 off + ENTRY_HDR - 1,
				 off + ENTRY_HDR,
				 off + ENTRY_HDR + cs[4].loc.stored_len / 2,
				 entry_end(&cs[4]) - 1};

	/* Cut from the longest to the shortest, so that each cut is a truncation. */
	for (size_t k = sizeof(cuts) / sizeof(cuts[0]); k-- > 0;) {
		cut("torn.pack", cuts[k]);
		cr_assert_eq(scan("torn.pack", &got, NULL, &end), 0);
		assert_entries(&got, cs, 4);
		cr_assert_eq(end, off, "cut at %llu", (unsigned long long)cuts[k]);
		free(got.e);
	}

	/* Garbage after the last whole entry is a torn tail too. */
	cut("torn.pack", off);
	cut("torn.pack", off + 4096);
	flip("torn.pack", off + 100);
	cr_assert_eq(scan("torn.pack", &got, NULL, &end), 0);
	assert_entries(&got, cs, 4);
	cr_assert_eq(end, off);
	free(got.e);
	chunks_free(cs, 5);
}

Test(pack, scan_truncated_footer_falls_back)
{
	struct chunk cs[5];
	struct collected got;
	uint64_t end = 0;
	int fd;
	uint64_t size;

	small_pack("tf.pack", cs, true);
	fd = open_pack("tf.pack", O_RDONLY);
	size = file_size(fd);
	close(fd);
	cut("tf.pack", size - 1);
	cr_assert_eq(scan("tf.pack", &got, NULL, &end), 0);
	assert_entries(&got, cs, 5);
	cr_assert_eq(end, entry_end(&cs[4]));
	free(got.e);
	chunks_free(cs, 5);
}

Test(pack, scan_corrupt_footer_falls_back)
{
	struct chunk cs[5];
	struct collected got;
	uint64_t end = 0, foot, size;
	int fd;

	small_pack("cf.pack", cs, true);
	fd = open_pack("cf.pack", O_RDONLY);
	size = file_size(fd);
	close(fd);
	foot = entry_end(&cs[4]);

	/* A record, and each field of the trailer: magic, count, offset, checksum. */
	const uint64_t offs[] = {foot + 3,           foot + 2 * FOOTER_REC + 50, size - TRAILER + 2,
				 size - TRAILER + 8, size - TRAILER + 16,        size - 1};
	for (size_t k = 0; k < sizeof(offs) / sizeof(offs[0]); k++) {
		flip("cf.pack", offs[k]);
		cr_assert_eq(scan("cf.pack", &got, NULL, &end), 0);
		assert_entries(&got, cs, 5);
		cr_assert_eq(end, foot, "footer byte %llu", (unsigned long long)offs[k]);
		free(got.e);

		/* Proof that the walk ran: a damaged entry header now ends it. */
		flip("cf.pack", cs[3].loc.offset + 5);
		cr_assert_eq(scan("cf.pack", &got, NULL, &end), 0);
		assert_entries(&got, cs, 3);
		cr_assert_eq(end, cs[3].loc.offset);
		free(got.e);
		flip("cf.pack", cs[3].loc.offset + 5);
		flip("cf.pack", offs[k]);
	}

	/* Undamaged again: the footer is back in use and the damaged entry goes unnoticed. */
	flip("cf.pack", cs[3].loc.offset + 5);
	cr_assert_eq(scan("cf.pack", &got, NULL, &end), 0);
	assert_entries(&got, cs, 5);
	free(got.e);
	chunks_free(cs, 5);
}

Test(pack, scan_callback_stops_walk)
{
	struct chunk cs[5];
	struct collected got = {.stop_at = 2};
	uint64_t id = 1234, end = 5678;
	int fd;

	small_pack("stop.pack", cs, false);
	fd = open_pack("stop.pack", O_RDONLY);
	cr_assert_eq(pack_scan(fd, collect_cb, &got, &id, &end), 42);
	cr_assert_eq(got.n, 3);
	cr_assert_eq(id, 1234, "outputs written only on success");
	cr_assert_eq(end, 5678);
	free(got.e);
	close(fd);
	chunks_free(cs, 5);
}

Test(pack, scan_callback_stops_footer_walk)
{
	struct chunk cs[5];
	struct collected got = {.stop_at = 0};
	int fd;

	small_pack("stopf.pack", cs, true);
	fd = open_pack("stopf.pack", O_RDONLY);
	cr_assert_eq(pack_scan(fd, collect_cb, &got, NULL, NULL), 42);
	cr_assert_eq(got.n, 1);
	cr_assert_eq(pack_scan(fd, NULL, NULL, NULL, NULL), 0, "a NULL callback only validates");
	free(got.e);
	close(fd);
	chunks_free(cs, 5);
}

static void write_file(const char *name, const void *data, size_t len)
{
	int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, data, len), (ssize_t)len);
	close(fd);
}

static void put_le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

Test(pack, not_a_pack_is_einval)
{
	uint8_t junk[4096];
	uint8_t hdr[FILE_HDR] = "PKCFPACK";
	struct collected got;
	uint64_t s = 9;
	int fd;

	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)rnd(&s);
	write_file("junk", junk, sizeof(junk));
	cr_assert_eq(scan("junk", &got, NULL, NULL), -EINVAL);
	write_file("empty", "", 0);
	cr_assert_eq(scan("empty", &got, NULL, NULL), -EINVAL);
	write_file("short", "PKCFPACK", 8);
	cr_assert_eq(scan("short", &got, NULL, NULL), -EINVAL);

	/* A well-formed header of a version this code does not know. */
	put_le(hdr + 8, 2, 4);
	put_le(hdr + 56, hash_check64(hdr, 56), 8);
	write_file("v2", hdr, sizeof(hdr));
	cr_assert_eq(scan("v2", &got, NULL, NULL), -EINVAL);
	/* Version 1 with that same layout is an empty pack... */
	put_le(hdr + 8, 1, 4);
	put_le(hdr + 56, hash_check64(hdr, 56), 8);
	write_file("v1", hdr, sizeof(hdr));
	cr_assert_eq(scan("v1", &got, NULL, NULL), 0);
	/* ...and a damaged header is damage. */
	hdr[20] ^= 1;
	write_file("v1bad", hdr, sizeof(hdr));
	cr_assert_eq(scan("v1bad", &got, NULL, NULL), -EIO);

	fd = open(tmpdir, O_RDONLY | O_DIRECTORY);
	cr_assert_eq(pack_scan(fd, collect_cb, &got, NULL, NULL), -EINVAL);
	close(fd);
	cr_assert_eq(got.n, 0);
}

Test(pack, create_refuses_existing_name)
{
	struct chunk cs[5];
	struct pack_writer *w = NULL;
	struct collected got;

	small_pack("dup.pack", cs, true);
	cr_assert_eq(pack_writer_create(dfd, "dup.pack", 8, &w), -EEXIST);
	cr_assert_null(w, "*ret untouched on failure");
	cr_assert_eq(scan("dup.pack", &got, NULL, NULL), 0);
	assert_entries(&got, cs, 5);
	free(got.e);
	cr_assert_eq(pack_writer_create(dfd, "nodir/x.pack", 8, &w), -ENOENT);
	chunks_free(cs, 5);
}

Test(pack, created_mode_0600)
{
	struct pack_writer *w;
	struct stat st;
	mode_t old = umask(0);

	cr_assert_eq(pack_writer_create(dfd, "mode.pack", 1, &w), 0);
	umask(old);
	cr_assert_eq(fstat(pack_writer_fd(w), &st), 0);
	cr_assert_eq(st.st_mode & 07777, 0600);
	cr_assert_eq(pack_writer_size(w), FILE_HDR);
	cr_assert_eq((uint64_t)st.st_size, FILE_HDR);
	pack_writer_free(w);
}

static void set_fsize_limit(rlim_t lim)
{
	struct rlimit rl;

	cr_assert_eq(getrlimit(RLIMIT_FSIZE, &rl), 0);
	rl.rlim_cur = lim;
	cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
}

Test(pack, append_after_write_failure)
{
	struct chunk cs[6], big;
	struct collected got;
	struct pack_writer *w;
	struct pack_loc loc;
	struct rlimit saved;
	uint64_t size;
	int fd;

	for (int i = 0; i < 4; i++)
		chunk_fill(&cs[i], 10000, i % 2 == 0, 60 + (uint64_t)i);
	chunk_fill(&big, 65536, false, 70);
	chunk_fill(&cs[4], 500, false, 71);
	chunk_fill(&cs[5], 65536, false, 72);

	w = pack_with("full.pack", 1, cs, 4, true);
	fd = pack_writer_fd(w);
	size = pack_writer_size(w);
	cr_assert_eq(pack_writer_sync(w), 0);

	/* Room for 1000 more bytes: the big append is cut short by the kernel, then fails. */
	cr_assert_eq(getrlimit(RLIMIT_FSIZE, &saved), 0);
	signal(SIGXFSZ, SIG_IGN);
	set_fsize_limit(size + 1000);
	loc.offset = 12345;
	cr_assert_eq(pack_writer_append(w, &big.key, &big.digest, big.data, big.len, true, &loc),
		     -EFBIG);
	cr_assert_eq(loc.offset, 12345, "*ret_loc untouched on failure");
	cr_assert_eq(pack_writer_size(w), size);
	cr_assert_eq(file_size(fd), size, "the partial write was cut off");
	for (int i = 0; i < 4; i++)
		cr_assert_eq(read_back(fd, &cs[i]), 0);

	/* The writer is still usable: what fits goes in. */
	cr_assert_eq(pack_writer_append(w, &cs[4].key, &cs[4].digest, cs[4].data, cs[4].len, true,
					&cs[4].loc),
		     0);
	cr_assert_eq(cs[4].loc.offset, size);
	cr_assert_eq(read_back(fd, &cs[4]), 0);

	/* Sealing fails the same way and leaves the pack as it was. */
	set_fsize_limit(pack_writer_size(w) + 10);
	cr_assert_eq(pack_writer_seal(w), -EFBIG);
	cr_assert_eq(file_size(fd), pack_writer_size(w));

	cr_assert_eq(setrlimit(RLIMIT_FSIZE, &saved), 0);
	cr_assert_eq(pack_writer_append(w, &cs[5].key, &cs[5].digest, cs[5].data, cs[5].len, true,
					&cs[5].loc),
		     0);
	cr_assert_eq(pack_writer_seal(w), 0);
	pack_writer_free(w);

	cr_assert_eq(scan("full.pack", &got, NULL, NULL), 0);
	assert_entries(&got, cs, 6);
	free(got.e);
	fd = open_pack("full.pack", O_RDONLY);
	for (int i = 0; i < 6; i++)
		cr_assert_eq(read_back(fd, &cs[i]), 0);
	close(fd);
	chunks_free(cs, 6);
	chunks_free(&big, 1);
}

struct reader_arg {
	int fd;
	const struct chunk *cs;
	size_t n;
	int failures;
};

static void *reader(void *p)
{
	struct reader_arg *a = p;
	uint8_t *buf = malloc(PACK_MAX_CHUNK);

	for (int round = 0; round < 20; round++)
		for (size_t i = 0; i < a->n; i++) {
			const struct chunk *c = &a->cs[(i + (size_t)round) % a->n];

			if (pack_read_chunk(a->fd, &c->loc, &c->key, buf, c->len) != 0 ||
			    memcmp(buf, c->data, c->len) != 0)
				a->failures++;
		}
	free(buf);
	return NULL;
}

Test(pack, concurrent_readers)
{
	enum { N = 40, T = 4 };
	struct chunk cs[N];
	struct reader_arg args[T];
	pthread_t th[T];
	struct pack_writer *w;

	for (int i = 0; i < N; i++)
		chunk_fill(&cs[i], 1000 + 3000 * (uint32_t)i, i % 3 != 0, 200 + (uint64_t)i);
	/* One chunk above the per-thread buffer size, to take the malloc path. */
	free(cs[N - 1].data);
	chunk_fill(&cs[N - 1], 3u << 20, true, 300);
	w = pack_with("mt.pack", 1, cs, N, true);
	for (int t = 0; t < T; t++) {
		args[t] = (struct reader_arg){.fd = pack_writer_fd(w), .cs = cs, .n = N};
		cr_assert_eq(pthread_create(&th[t], NULL, reader, &args[t]), 0);
	}
	for (int t = 0; t < T; t++) {
		cr_assert_eq(pthread_join(th[t], NULL), 0);
		cr_assert_eq(args[t].failures, 0, "thread %d", t);
	}
	pack_writer_free(w);
	chunks_free(cs, N);
}

static uint64_t get_le(const uint8_t *p, int n)
{
	uint64_t v = 0;

	for (int i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* An entry header encoded from docs/format-pack.md, independently of pack.c. */
static void spec_entry_hdr(uint8_t out[ENTRY_HDR], uint32_t flags, uint32_t raw_len,
			   uint32_t stored_len, const chunk_key *key, const chunk_digest *digest)
{
	memcpy(out, "PKCE", 4);
	put_le(out + 4, flags, 4);
	put_le(out + 8, raw_len, 4);
	put_le(out + 12, stored_len, 4);
	memcpy(out + 16, key->b, 16);
	memcpy(out + 32, digest->b, 32);
	put_le(out + 64, hash_check64(out, 64), 8);
}

Test(pack, format_matches_spec)
{
	struct chunk cs[5];
	uint8_t *f, want[ENTRY_HDR];
	uint64_t size, foot, now = (uint64_t)time(NULL);
	int fd;

	small_pack("spec.pack", cs, true);
	fd = open_pack("spec.pack", O_RDONLY);
	size = file_size(fd);
	f = malloc(size);
	cr_assert_eq(pread(fd, f, size, 0), (ssize_t)size);
	close(fd);

	cr_assert_eq(memcmp(f, "PKCFPACK", 8), 0);
	cr_assert_eq(get_le(f + 8, 4), 1, "version");
	cr_assert_eq(get_le(f + 12, 4), 0, "reserved");
	cr_assert_eq(get_le(f + 16, 8), 7, "pack_id");
	cr_assert(get_le(f + 24, 8) + 60 >= now && get_le(f + 24, 8) <= now, "created");
	for (int i = 32; i < 56; i++)
		cr_assert_eq(f[i], 0, "reserved byte %d", i);
	cr_assert_eq(get_le(f + 56, 8), hash_check64(f, 56));

	for (int i = 0; i < 5; i++) {
		spec_entry_hdr(want, cs[i].loc.flags, cs[i].len, cs[i].loc.stored_len, &cs[i].key,
			       &cs[i].digest);
		cr_assert_eq(memcmp(f + cs[i].loc.offset, want, ENTRY_HDR), 0, "entry %d", i);
		if (!(cs[i].loc.flags & PACK_F_ZSTD))
			cr_assert_eq(
				memcmp(f + cs[i].loc.offset + ENTRY_HDR, cs[i].data, cs[i].len), 0);
	}

	foot = entry_end(&cs[4]);
	cr_assert_eq(size, foot + 5 * FOOTER_REC + TRAILER);
	for (int i = 0; i < 5; i++) {
		const uint8_t *r = f + foot + (uint64_t)i * FOOTER_REC;

		cr_assert_eq(memcmp(r, cs[i].key.b, 16), 0);
		cr_assert_eq(memcmp(r + 16, cs[i].digest.b, 32), 0);
		cr_assert_eq(get_le(r + 48, 4), cs[i].len);
		cr_assert_eq(get_le(r + 52, 8), cs[i].loc.offset);
		cr_assert_eq(get_le(r + 60, 4), cs[i].loc.stored_len);
		cr_assert_eq(get_le(r + 64, 4), cs[i].loc.flags);
	}
	cr_assert_eq(memcmp(f + size - 32, "PKCFFOOT", 8), 0);
	cr_assert_eq(get_le(f + size - 24, 8), 5);
	cr_assert_eq(get_le(f + size - 16, 8), foot);
	cr_assert_eq(get_le(f + size - 8, 8), hash_check64(f + foot, size - 8 - foot));
	free(f);
	chunks_free(cs, 5);
}

/*
 * A hand-made pack whose one entry is a valid zstd frame of the wrong length, with a valid header
 * checksum and the right key. The caller's buffer already holds the right bytes, and a frame of
 * random data is made of raw blocks, so zstd leaves the rest of the buffer alone: only the
 * exact-length check can notice a short frame.
 */
static void crafted_frame_test(uint32_t frame_len_of_raw, bool text)
{
	uint8_t hdr[FILE_HDR] = "PKCFPACK", ehdr[ENTRY_HDR];
	struct chunk c;
	struct pack_loc loc;
	struct collected got;
	uint8_t *frame, *buf;
	size_t cap, flen;
	int fd;

	chunk_fill(&c, 10000, text, 77);
	buf = malloc(c.len);
	memcpy(buf, c.data, c.len);
	{
		uint8_t *src = malloc(frame_len_of_raw);

		for (uint32_t i = 0; i < frame_len_of_raw; i++)
			src[i] = c.data[i % c.len];
		cap = ZSTD_compressBound(frame_len_of_raw);
		frame = malloc(cap);
		flen = ZSTD_compress(frame, cap, src, frame_len_of_raw, 1);
		free(src);
	}
	cr_assert(!ZSTD_isError(flen));
	cr_assert_leq(flen, c.len);

	put_le(hdr + 8, 1, 4);
	put_le(hdr + 56, hash_check64(hdr, 56), 8);
	spec_entry_hdr(ehdr, PACK_F_ZSTD, c.len, (uint32_t)flen, &c.key, &c.digest);
	fd = openat(dfd, "craft.pack", O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pwrite(fd, hdr, FILE_HDR, 0), FILE_HDR);
	cr_assert_eq(pwrite(fd, ehdr, ENTRY_HDR, FILE_HDR), ENTRY_HDR);
	cr_assert_eq(pwrite(fd, frame, flen, FILE_HDR + ENTRY_HDR), (ssize_t)flen);

	/* The walk takes the entry at its word: it does not read entry data. */
	got = (struct collected){.stop_at = SIZE_MAX};
	cr_assert_eq(pack_scan(fd, collect_cb, &got, NULL, NULL), 0);
	cr_assert_eq(got.n, 1);
	loc = got.e[0].loc;
	cr_assert_eq(pack_read_chunk(fd, &loc, &c.key, buf, c.len), -EIO);
	close(fd);
	free(got.e);
	free(frame);
	free(buf);
	chunks_free(&c, 1);
}

Test(pack, short_zstd_frame_is_eio)
{
	crafted_frame_test(9000, false);
}

Test(pack, long_zstd_frame_is_eio)
{
	crafted_frame_test(12000, true);
}
