/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for pack files read from disk or fetched from a remote (built and run by
 * tests/fuzz/run-fuzz.sh, not by meson): pack_scan (file header, footer, the sequential walk of
 * entry headers over a torn tail), then pack_read_chunk and pack_decode_entry on every entry the
 * scan reports.
 *
 * An input is a pack file, put in a memfd. It is tried as it is, and, when it starts with the
 * pack magic, resealed: the header checksum, every entry header checksum along the walk, and the
 * footer trailer's checksum recomputed, so that mutations get past the checksums to the lengths,
 * offsets and the zstd frames behind them.
 *
 * Invariants: pack_scan returns 0, -EINVAL or -EIO; the end it reports lies within the file, past
 * every entry, which lie end to end from offset 64 and describe a chunk a pack can hold; reading
 * an entry gives 0 or -EIO, never another error, and 0 only for bytes that hash to the entry's
 * key; pack_decode_entry of the same bytes agrees with pack_read_chunk and with the SHA-256.
 *
 * Built with -DFUZZ_GEN instead of -fsanitize=fuzzer, it is a main() that writes the seed corpus
 * (packs made by the real writer, sealed, unsealed and torn, and a few damaged ones) into the
 * directory given as its argument.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"
#include "hash.h"
#include "pack.h"

#define HDR 64u
#define ENTRY 72u
#define REC 68u
#define TRAILER 32u
#define MAX_ENTRIES 2048u

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
	return le32(p) | (uint64_t)le32(p + 4) << 32;
}

static void put_le64(uint8_t *p, uint64_t v)
{
	for (unsigned i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Recompute every checksum a mutation would break (see the file comment). */
static void reseal(uint8_t *p, size_t size)
{
	uint64_t off = HDR;

	if (size < HDR)
		return;
	put_le64(p + 56, hash_check64(p, 56));
	while (size - off >= ENTRY && le32(p + off) == 0x45434b50u) {
		put_le64(p + off + 64, hash_check64(p + off, 64));
		off += ENTRY + (uint64_t)le32(p + off + 12);
		if (off > size)
			break;
	}
	if (size >= HDR + TRAILER && memcmp(p + size - TRAILER, "PKCFFOOT", 8) == 0) {
		uint64_t foot = le64(p + size - TRAILER + 16);

		if (foot >= HDR && foot <= size - TRAILER)
			put_le64(p + size - 8,
				 hash_check64(p + foot, size - TRAILER + 24 - (size_t)foot));
	}
}

struct seen {
	int fd;
	const uint8_t *data;
	size_t size;
	struct pack_entry e[MAX_ENTRIES];
	size_t n;
};

static int collect(const struct pack_entry *e, void *userdata)
{
	struct seen *s = userdata;

	if (s->n == MAX_ENTRIES)
		return 1;
	s->e[s->n++] = *e;
	return 0;
}

static void check_entry(struct seen *s, const struct pack_entry *e)
{
	static uint8_t big[PACK_MAX_CHUNK], big2[PACK_MAX_CHUNK];
	bool small = e->raw_len <= (1u << 20);
	uint8_t *buf = small ? malloc(e->raw_len) : big, *buf2 = small ? malloc(e->raw_len) : big2;
	uint64_t total = ENTRY + (uint64_t)e->loc.stored_len;
	chunk_key k;
	chunk_digest d;
	int r, r2;

	CHECK(buf && buf2);
	r = pack_read_chunk(s->fd, &e->loc, &e->key, buf, e->raw_len);
	CHECK(r == 0 || r == -EIO);
	if (r == 0) {
		hash_key(buf, e->raw_len, &k);
		CHECK(hash_key_equal(&k, &e->key));
	}
	/* The entry's bytes as a remote range read would return them. */
	r2 = pack_decode_entry(s->data + e->loc.offset, total, &e->loc, &e->key, &e->digest, buf2,
			       e->raw_len);
	CHECK(r2 == 0 || r2 == -EIO);
	if (r2 == 0) {
		CHECK(r == 0 && memcmp(buf, buf2, e->raw_len) == 0);
		hash_digest(buf2, e->raw_len, &d);
		CHECK(hash_digest_equal(&d, &e->digest));
	} else if (r == 0 && memcmp(s->data + e->loc.offset + 32, e->digest.b, 32) == 0) {
		/* Refused although the header and the data match the digest asked for. */
		hash_digest(buf, e->raw_len, &d);
		CHECK(!hash_digest_equal(&d, &e->digest));
	}
	/* A range one byte short, or one byte long, is refused. */
	CHECK(pack_decode_entry(s->data + e->loc.offset, total - 1, &e->loc, &e->key, &e->digest,
				buf2, e->raw_len) == -EIO);
	if (small) {
		free(buf);
		free(buf2);
	}
}

static void try_scan(int fd, const uint8_t *data, size_t size)
{
	static struct seen s;
	uint64_t id = 0, end = 0, expect = HDR;
	int r;

	CHECK(ftruncate(fd, 0) == 0);
	CHECK(pwrite(fd, data, size, 0) == (ssize_t)size);
	s.fd = fd;
	s.data = data;
	s.size = size;
	s.n = 0;
	r = pack_scan(fd, collect, &s, &id, &end);
	CHECK(r == 0 || r == 1 || r == -EINVAL || r == -EIO);
	if (r < 0) {
		CHECK(s.n == 0);
		return;
	}
	if (r == 0)
		CHECK(end >= HDR && end <= size);
	for (size_t i = 0; i < s.n; i++) {
		const struct pack_entry *e = &s.e[i];

		CHECK(e->loc.offset == expect);
		CHECK(e->raw_len >= 1 && e->raw_len <= PACK_MAX_CHUNK);
		CHECK((e->loc.flags & ~PACK_F_ZSTD) == 0);
		CHECK(e->loc.flags ? e->loc.stored_len >= 1 && e->loc.stored_len <= e->raw_len
				   : e->loc.stored_len == e->raw_len);
		expect += ENTRY + (uint64_t)e->loc.stored_len;
		CHECK(expect <= size);
		check_entry(&s, e);
	}
	if (r == 0)
		CHECK(expect == end);
	/* Without a callback the walk ends at the same place. */
	if (r == 0) {
		uint64_t end2 = 0;

		CHECK(pack_scan(fd, NULL, NULL, NULL, &end2) == 0 && end2 == end);
	}
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	static int fd = -1;
	uint8_t *copy;

	if (fd < 0) {
		fd = memfd_create("fuzz-pack", MFD_CLOEXEC);
		CHECK(fd >= 0);
	}
	try_scan(fd, data, size);
	if (size >= HDR && memcmp(data, "PKCFPACK", 8) == 0) {
		copy = malloc(size);
		CHECK(copy);
		memcpy(copy, data, size);
		reseal(copy, size);
		if (memcmp(copy, data, size) != 0)
			try_scan(fd, copy, size);
		free(copy);
	}
	return 0;
}

#ifdef FUZZ_GEN
static void fill(uint8_t *p, size_t n, uint64_t seed, bool text)
{
	static const char words[] = "def import return self class package wheel version ";

	for (size_t i = 0; i < n; i++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		p[i] = text ? (uint8_t)words[(seed >> 33) % (sizeof(words) - 1)]
			    : (uint8_t)(seed >> 56);
	}
}

/* A pack of n chunks (alternately text and random, sizes from lens) written by pack_writer. */
static void make(int dirfd, const char *name, uint64_t id, const uint32_t *lens, size_t n,
		 bool seal)
{
	struct pack_writer *w;
	struct pack_loc loc;
	uint8_t buf[8192];

	unlinkat(dirfd, name, 0);
	CHECK(pack_writer_create(dirfd, name, id, &w) == 0);
	for (size_t i = 0; i < n; i++) {
		chunk_key k;
		chunk_digest d;

		CHECK(lens[i] <= sizeof(buf));
		fill(buf, lens[i], i + 1, i % 2 == 0);
		hash_key(buf, lens[i], &k);
		hash_digest(buf, lens[i], &d);
		CHECK(pack_writer_append(w, &k, &d, buf, lens[i], true, &loc) == 0);
	}
	if (seal)
		CHECK(pack_writer_seal(w) == 0);
	pack_writer_free(w);
}

int main(int argc, char **argv)
{
	static const uint32_t lens[] = {4096, 3000, 1, 100, 8192, 17};
	int dirfd;
	uint8_t *p;
	size_t len;
	char path[4096];

	CHECK(argc == 2);
	gen_outdir = argv[1];
	dirfd = open(gen_outdir, O_RDONLY | O_DIRECTORY);
	CHECK(dirfd >= 0);
	make(dirfd, "valid-sealed", 7, lens, 6, true);
	make(dirfd, "valid-sealed-remote", 0, lens, 3, true);
	make(dirfd, "valid-unsealed", 9, lens, 6, false);
	make(dirfd, "valid-empty-sealed", 1, lens, 0, true);
	make(dirfd, "valid-header-only", 2, lens, 0, false);

	snprintf(path, sizeof(path), "%s/valid-sealed", gen_outdir);
	p = gen_slurp(path, &len);
	gen_put("torn-footer", p, len - 10);
	gen_put("torn-entry", p, HDR + ENTRY + 100);
	p[HDR + 20] ^= 1; /* a key byte of the first entry header: its checksum fails */
	gen_put("bad-entry-csum", p, len);
	p[HDR + 20] ^= 1;
	p[len - 9] ^= 1; /* the footer's checksum */
	gen_put("bad-footer-csum", p, len);
	p[len - 9] ^= 1;
	p[HDR + 8] ^= 0x40; /* raw_len of the first entry, a zstd one */
	reseal(p, len);
	gen_put("bad-lens-resealed", p, len);
	free(p);

	snprintf(path, sizeof(path), "%s/valid-unsealed", gen_outdir);
	p = gen_slurp(path, &len);
	gen_put("torn-unsealed", p, len - 1);
	p[HDR + ENTRY + 3] ^= 0x55; /* inside the first zstd frame */
	gen_put("bad-frame", p, len);
	free(p);
	gen_put("bad-empty", "", 0);
	gen_put("bad-magic-only", "PKCFPACK", 8);
	close(dirfd);
	return 0;
}
#endif
