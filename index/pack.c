/* SPDX-License-Identifier: MIT */
/*
 * Pack files: the writer, the chunk reader and the scanner.
 *
 * A pack is a 64-byte file header, then entries laid end to end (a 72-byte entry header, then
 * stored_len bytes of chunk data), then, once sealed, a footer: one 68-byte record per entry and a
 * 32-byte trailer. Every integer is little-endian and encoded byte by byte, so the format does not
 * depend on the host. Byte layout: docs/format-pack.md.
 *
 * The writer's invariant: the file holds exactly w->end bytes of whole entries (unless tail_dirty
 * says a failed write left bytes past it that could not be cut off yet), so an append that fails
 * half-way is undone by ftruncate and the pack is as it was. Entries are contiguous: a pack
 * without a footer is read by walking entry headers from offset 64, and a crash tears at most the
 * last entry, which the walk detects through the header checksum and the file size.
 *
 * Readers share nothing but the file descriptor: pack_read_chunk uses pread only, with a per-thread
 * zstd context and scratch buffer, and trusts nothing it reads: lengths are bounds-checked and the
 * raw bytes must hash to the key the caller asked for.
 */
#include "pack.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <zstd.h>

#define PACK_MAGIC "PKCFPACK"
#define PACK_VERSION 1u
#define PACK_HDR_SIZE 64u
#define PACK_HDR_CSUM_OFF 56u

#define ENTRY_MAGIC 0x45434b50u /* "PKCE" once stored little-endian */
#define ENTRY_HDR_SIZE 72u
#define ENTRY_CSUM_OFF 64u

#define FOOTER_REC_SIZE 68u
#define TRAILER_MAGIC "PKCFFOOT"
#define TRAILER_SIZE 32u
#define TRAILER_CSUM_OFF 24u

#define ZSTD_LEVEL 1

/* Compressed chunks up to this size are read through a per-thread buffer, larger ones malloc. */
#define READ_CACHE_MAX (1u << 20)

/* A decoded entry header. */
struct entry_hdr {
	uint32_t flags;
	uint32_t raw_len;
	uint32_t stored_len;
	chunk_key key;
	chunk_digest digest;
};

struct pack_writer {
	int fd;
	uint64_t end;    /* file header plus every whole entry (plus the footer once sealed) */
	bool unsynced;   /* something was written since the last successful sync */
	bool tail_dirty; /* a failed write may have left bytes past end: cut them before writing */
	bool sealed;
	ZSTD_CCtx *cctx; /* created on the first compressed append */
	uint8_t *scratch;
	size_t scratch_cap;
	struct pack_entry *entries; /* every entry appended, for the footer */
	size_t n_entries;
	size_t cap_entries;
};

static void put_le32(uint8_t *p, uint32_t v)
{
	for (unsigned i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le64(uint8_t *p, uint64_t v)
{
	for (unsigned i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_le32(const uint8_t *p)
{
	uint32_t v = 0;

	for (unsigned i = 0; i < 4; i++)
		v |= (uint32_t)p[i] << (8 * i);
	return v;
}

static uint64_t get_le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* Whether flags and lengths describe an entry this version can hold. */
static bool entry_lens_valid(uint32_t flags, uint32_t raw_len, uint32_t stored_len)
{
	if (flags & ~PACK_F_ZSTD)
		return false;
	if (raw_len == 0 || raw_len > PACK_MAX_CHUNK)
		return false;
	if (flags & PACK_F_ZSTD)
		return stored_len > 0 && stored_len <= raw_len;
	return stored_len == raw_len;
}

static void entry_hdr_encode(const struct entry_hdr *h, uint8_t out[ENTRY_HDR_SIZE])
{
	put_le32(out, ENTRY_MAGIC);
	put_le32(out + 4, h->flags);
	put_le32(out + 8, h->raw_len);
	put_le32(out + 12, h->stored_len);
	memcpy(out + 16, h->key.b, HASH_KEY_SIZE);
	memcpy(out + 32, h->digest.b, HASH_DIGEST_SIZE);
	put_le64(out + ENTRY_CSUM_OFF, hash_check64(out, ENTRY_CSUM_OFF));
}

/* 0, or -EIO when the bytes are not a whole, valid entry header. */
static int entry_hdr_decode(const uint8_t in[ENTRY_HDR_SIZE], struct entry_hdr *ret)
{
	if (get_le32(in) != ENTRY_MAGIC)
		return -EIO;
	if (get_le64(in + ENTRY_CSUM_OFF) != hash_check64(in, ENTRY_CSUM_OFF))
		return -EIO;
	ret->flags = get_le32(in + 4);
	ret->raw_len = get_le32(in + 8);
	ret->stored_len = get_le32(in + 12);
	memcpy(ret->key.b, in + 16, HASH_KEY_SIZE);
	memcpy(ret->digest.b, in + 32, HASH_DIGEST_SIZE);
	if (!entry_lens_valid(ret->flags, ret->raw_len, ret->stored_len))
		return -EIO;
	return 0;
}

/* Skip n bytes already transferred from the front of an iovec array. */
static void iov_advance(struct iovec **iov, int *iovcnt, size_t n)
{
	while (*iovcnt > 0 && n >= (*iov)->iov_len) {
		n -= (*iov)->iov_len;
		(*iov)++;
		(*iovcnt)--;
	}
	if (*iovcnt > 0) {
		(*iov)->iov_base = (uint8_t *)(*iov)->iov_base + n;
		(*iov)->iov_len -= n;
	}
}

/* Write all of iov at off. 0 or -errno; the iovecs are consumed. */
static int pwritev_all(int fd, struct iovec *iov, int iovcnt, uint64_t off)
{
	while (iovcnt > 0) {
		ssize_t n = pwritev(fd, iov, iovcnt, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		off += (uint64_t)n;
		iov_advance(&iov, &iovcnt, (size_t)n);
	}
	return 0;
}

/* Read iov at off until it is full or the file ends. Bytes read, or -errno; iov is consumed. */
static ssize_t preadv_all(int fd, struct iovec *iov, int iovcnt, uint64_t off)
{
	size_t done = 0;

	while (iovcnt > 0) {
		ssize_t n = preadv(fd, iov, iovcnt, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		off += (uint64_t)n;
		done += (size_t)n;
		iov_advance(&iov, &iovcnt, (size_t)n);
	}
	return (ssize_t)done;
}

static ssize_t pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	struct iovec iov = {.iov_base = buf, .iov_len = len};

	return preadv_all(fd, &iov, 1, off);
}

static int fsync_dir(int dirfd)
{
	int fd = dirfd;
	int r = 0;

	if (dirfd == AT_FDCWD) {
		fd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0)
			return -errno;
	}
	if (fsync(fd) < 0)
		r = -errno;
	if (fd != dirfd)
		close(fd);
	return r;
}

int pack_writer_create(int dirfd, const char *name, uint64_t pack_id, struct pack_writer **ret)
{
	uint8_t hdr[PACK_HDR_SIZE] = {0};
	struct iovec iov = {.iov_base = hdr, .iov_len = sizeof(hdr)};
	struct pack_writer *w;
	int r;

	if (!name || !ret)
		return -EINVAL;

	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;

	w->fd = openat(dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (w->fd < 0) {
		r = -errno;
		goto out_free;
	}

	memcpy(hdr, PACK_MAGIC, 8);
	put_le32(hdr + 8, PACK_VERSION);
	put_le64(hdr + 16, pack_id);
	/* Pack id 0 is a remote's or a bundle's pack, named by its SHA-256: the same chunks must
	 * give the same bytes, so a rerun of an interrupted push finds its packs already there. */
	put_le64(hdr + 24, pack_id ? (uint64_t)time(NULL) : 0);
	put_le64(hdr + PACK_HDR_CSUM_OFF, hash_check64(hdr, PACK_HDR_CSUM_OFF));
	r = pwritev_all(w->fd, &iov, 1, 0);
	if (r < 0)
		goto out_unlink;

	/* The index will point into this pack: its name must survive a crash. */
	r = fsync_dir(dirfd);
	if (r < 0)
		goto out_unlink;

	w->end = PACK_HDR_SIZE;
	w->unsynced = true;
	*ret = w;
	return 0;

out_unlink:
	unlinkat(dirfd, name, 0);
	close(w->fd);
out_free:
	free(w);
	return r;
}

/*
 * Cut the file back to w->end after a failed write. When even that fails, tail_dirty makes the
 * next append or seal try again before writing. 0 or -errno.
 */
static int writer_undo(struct pack_writer *w)
{
	int r;

	do
		r = ftruncate(w->fd, (off_t)w->end);
	while (r < 0 && errno == EINTR);
	w->tail_dirty = r < 0;
	w->unsynced = true;
	return r < 0 ? -errno : 0;
}

static int writer_clean_tail(struct pack_writer *w)
{
	return w->tail_dirty ? writer_undo(w) : 0;
}

static int writer_reserve_scratch(struct pack_writer *w, size_t len)
{
	uint8_t *p;

	if (w->scratch_cap >= len)
		return 0;
	p = realloc(w->scratch, len);
	if (!p)
		return -ENOMEM;
	w->scratch = p;
	w->scratch_cap = len;
	return 0;
}

/*
 * Compress data into w->scratch when that saves at least raw_len/16 bytes (and at least one).
 * *ret_stored_len is its size, or 0 to store the chunk raw. 0 or -ENOMEM.
 */
static int writer_maybe_compress(struct pack_writer *w, const void *data, uint32_t raw_len,
				 uint32_t *ret_stored_len)
{
	uint32_t saving = raw_len / 16 > 0 ? raw_len / 16 : 1;
	uint32_t cap = raw_len - saving;
	size_t n;
	int r;

	*ret_stored_len = 0;
	if (cap == 0)
		return 0;
	if (!w->cctx) {
		w->cctx = ZSTD_createCCtx();
		if (!w->cctx)
			return -ENOMEM;
	}
	r = writer_reserve_scratch(w, cap);
	if (r < 0)
		return r;
	/*
	 * A destination of cap bytes makes zstd give up once the saving is out of reach. No trial
	 * on a sample first: level 1 already skips through incompressible input at ~9 GB/s
	 * (zstd 1.5.4, 64 KiB random chunks), faster than the write, while a 4 KiB trial cost ~9%
	 * on text and misjudged partly compressible chunks.
	 */
	n = ZSTD_compressCCtx(w->cctx, w->scratch, cap, data, raw_len, ZSTD_LEVEL);
	if (!ZSTD_isError(n))
		*ret_stored_len = (uint32_t)n;
	return 0;
}

static int writer_reserve_entry(struct pack_writer *w)
{
	struct pack_entry *p;
	size_t cap;

	if (w->n_entries < w->cap_entries)
		return 0;
	cap = w->cap_entries ? 2 * w->cap_entries : 64;
	p = reallocarray(w->entries, cap, sizeof(*p));
	if (!p)
		return -ENOMEM;
	w->entries = p;
	w->cap_entries = cap;
	return 0;
}

int pack_writer_append(struct pack_writer *w, const chunk_key *key, const chunk_digest *digest,
		       const void *data, uint32_t raw_len, bool compress, struct pack_loc *ret_loc)
{
	uint8_t hdr_buf[ENTRY_HDR_SIZE];
	struct entry_hdr hdr = {.flags = 0, .raw_len = raw_len, .stored_len = raw_len};
	struct iovec iov[2];
	const void *stored = data;
	uint32_t zlen = 0;
	struct pack_entry *e;
	int r;

	if (!w || !key || !digest || !data || !ret_loc)
		return -EINVAL;
	if (w->sealed || raw_len == 0 || raw_len > PACK_MAX_CHUNK)
		return -EINVAL;

	r = writer_clean_tail(w);
	if (r < 0)
		return r;
	/* Reserve the footer record first: no entry on disk may be missing from the footer. */
	r = writer_reserve_entry(w);
	if (r < 0)
		return r;

	if (compress) {
		r = writer_maybe_compress(w, data, raw_len, &zlen);
		if (r < 0)
			return r;
	}
	if (zlen > 0) {
		hdr.flags = PACK_F_ZSTD;
		hdr.stored_len = zlen;
		stored = w->scratch;
	}
	hdr.key = *key;
	hdr.digest = *digest;
	entry_hdr_encode(&hdr, hdr_buf);

	iov[0] = (struct iovec){.iov_base = hdr_buf, .iov_len = ENTRY_HDR_SIZE};
	iov[1] = (struct iovec){.iov_base = (void *)stored, .iov_len = hdr.stored_len};
	r = pwritev_all(w->fd, iov, 2, w->end);
	if (r < 0) {
		/*
		 * ENOSPC, EFBIG (RLIMIT_FSIZE), EIO: whatever landed is cut off again. The write's
		 * error is the one to report; a failed cut is retried by the next append.
		 */
		writer_undo(w);
		return r;
	}

	e = &w->entries[w->n_entries++];
	e->key = *key;
	e->digest = *digest;
	e->raw_len = raw_len;
	e->loc = (struct pack_loc){
		.offset = w->end, .stored_len = hdr.stored_len, .flags = hdr.flags};
	w->end += ENTRY_HDR_SIZE + (uint64_t)hdr.stored_len;
	w->unsynced = true;
	*ret_loc = e->loc;
	return 0;
}

int pack_writer_sync(struct pack_writer *w)
{
	if (!w)
		return -EINVAL;
	if (!w->unsynced)
		return 0;
	if (fdatasync(w->fd) < 0)
		return -errno;
	w->unsynced = false;
	return 0;
}

bool pack_writer_unsynced(const struct pack_writer *w)
{
	return w && w->unsynced;
}

uint64_t pack_writer_size(const struct pack_writer *w)
{
	return w->end;
}

int pack_writer_fd(const struct pack_writer *w)
{
	return w->fd;
}

static void footer_rec_encode(const struct pack_entry *e, uint8_t out[FOOTER_REC_SIZE])
{
	memcpy(out, e->key.b, HASH_KEY_SIZE);
	memcpy(out + 16, e->digest.b, HASH_DIGEST_SIZE);
	put_le32(out + 48, e->raw_len);
	put_le64(out + 52, e->loc.offset);
	put_le32(out + 60, e->loc.stored_len);
	put_le32(out + 64, e->loc.flags);
}

static void footer_rec_decode(const uint8_t in[FOOTER_REC_SIZE], struct pack_entry *ret)
{
	memcpy(ret->key.b, in, HASH_KEY_SIZE);
	memcpy(ret->digest.b, in + 16, HASH_DIGEST_SIZE);
	ret->raw_len = get_le32(in + 48);
	ret->loc.offset = get_le64(in + 52);
	ret->loc.stored_len = get_le32(in + 60);
	ret->loc.flags = get_le32(in + 64);
}

int pack_writer_seal(struct pack_writer *w)
{
	struct iovec iov;
	uint8_t *buf, *t;
	size_t len;
	int r;

	if (!w || w->sealed)
		return -EINVAL;
	r = writer_clean_tail(w);
	if (r < 0)
		return r;

	len = w->n_entries * FOOTER_REC_SIZE + TRAILER_SIZE;
	buf = malloc(len);
	if (!buf)
		return -ENOMEM;
	for (size_t i = 0; i < w->n_entries; i++)
		footer_rec_encode(&w->entries[i], buf + i * FOOTER_REC_SIZE);
	t = buf + len - TRAILER_SIZE;
	memcpy(t, TRAILER_MAGIC, 8);
	put_le64(t + 8, w->n_entries);
	put_le64(t + 16, w->end);
	put_le64(t + TRAILER_CSUM_OFF, hash_check64(buf, len - TRAILER_SIZE + TRAILER_CSUM_OFF));

	iov = (struct iovec){.iov_base = buf, .iov_len = len};
	r = pwritev_all(w->fd, &iov, 1, w->end);
	if (r < 0) {
		writer_undo(w);
		goto out_free_buf;
	}
	w->end += len;
	w->sealed = true;
	w->unsynced = true;
	if (fsync(w->fd) < 0) {
		r = -errno;
		goto out_free_buf;
	}
	w->unsynced = false;

out_free_buf:
	free(buf);
	return r;
}

void pack_writer_free(struct pack_writer *w)
{
	if (!w)
		return;
	close(w->fd);
	ZSTD_freeCCtx(w->cctx);
	free(w->scratch);
	free(w->entries);
	free(w);
}

/* Per-thread read state, freed by the key's destructor when the thread exits. */
struct read_ctx {
	ZSTD_DCtx *dctx;
	uint8_t *buf;
	size_t cap;
};

static pthread_key_t read_ctx_key;
static pthread_once_t read_ctx_once = PTHREAD_ONCE_INIT;
static int read_ctx_key_err;

static void read_ctx_free(void *p)
{
	struct read_ctx *c = p;

	if (!c)
		return;
	ZSTD_freeDCtx(c->dctx);
	free(c->buf);
	free(c);
}

static void read_ctx_key_init(void)
{
	read_ctx_key_err = pthread_key_create(&read_ctx_key, read_ctx_free);
}

/* This thread's read state, or NULL when out of memory. */
static struct read_ctx *read_ctx_get(void)
{
	struct read_ctx *c;

	pthread_once(&read_ctx_once, read_ctx_key_init);
	if (read_ctx_key_err)
		return NULL;
	c = pthread_getspecific(read_ctx_key);
	if (c)
		return c;
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->dctx = ZSTD_createDCtx();
	if (!c->dctx || pthread_setspecific(read_ctx_key, c) != 0) {
		read_ctx_free(c);
		return NULL;
	}
	return c;
}

/* A buffer of len bytes for compressed data: the thread's own, or a fresh one in *ret_owned. */
static uint8_t *read_ctx_buf(struct read_ctx *c, size_t len, uint8_t **ret_owned)
{
	uint8_t *p;

	*ret_owned = NULL;
	if (len > READ_CACHE_MAX) {
		*ret_owned = malloc(len);
		return *ret_owned;
	}
	if (c->cap < len) {
		p = realloc(c->buf, len);
		if (!p)
			return NULL;
		c->buf = p;
		c->cap = len;
	}
	return c->buf;
}

int pack_read_chunk(int fd, const struct pack_loc *loc, const chunk_key *key, void *buf,
		    uint32_t raw_len)
{
	uint8_t hdr_buf[ENTRY_HDR_SIZE];
	struct entry_hdr hdr;
	struct iovec iov[2];
	struct read_ctx *ctx = NULL;
	uint8_t *zbuf = NULL, *owned = NULL;
	uint64_t total;
	chunk_key got;
	ssize_t n;
	int r;

	if (!loc || !key || !buf)
		return -EINVAL;
	if (!entry_lens_valid(loc->flags, raw_len, loc->stored_len))
		return -EINVAL;
	total = ENTRY_HDR_SIZE + (uint64_t)loc->stored_len;
	if (loc->offset < PACK_HDR_SIZE || loc->offset > (uint64_t)INT64_MAX - total)
		return -EINVAL;

	iov[0] = (struct iovec){.iov_base = hdr_buf, .iov_len = ENTRY_HDR_SIZE};
	if (loc->flags & PACK_F_ZSTD) {
		ctx = read_ctx_get();
		if (!ctx)
			return -ENOMEM;
		zbuf = read_ctx_buf(ctx, loc->stored_len, &owned);
		if (!zbuf)
			return -ENOMEM;
		iov[1] = (struct iovec){.iov_base = zbuf, .iov_len = loc->stored_len};
	} else {
		/* Raw data lands straight in the caller's buffer. */
		iov[1] = (struct iovec){.iov_base = buf, .iov_len = raw_len};
	}

	n = preadv_all(fd, iov, 2, loc->offset);
	if (n < 0) {
		r = (int)n;
		goto out_free_owned;
	}
	r = -EIO;
	if ((uint64_t)n != total)
		goto out_free_owned;
	if (entry_hdr_decode(hdr_buf, &hdr) < 0)
		goto out_free_owned;
	if (hdr.flags != loc->flags || hdr.stored_len != loc->stored_len ||
	    hdr.raw_len != raw_len || !hash_key_equal(&hdr.key, key))
		goto out_free_owned;

	if (loc->flags & PACK_F_ZSTD) {
		size_t got_len =
			ZSTD_decompressDCtx(ctx->dctx, buf, raw_len, zbuf, loc->stored_len);

		if (ZSTD_isError(got_len) || got_len != raw_len)
			goto out_free_owned;
	}

	hash_key(buf, raw_len, &got);
	if (hash_key_equal(&got, key))
		r = 0;

out_free_owned:
	free(owned);
	return r;
}

int pack_decode_entry(const void *entry, size_t len, const struct pack_loc *loc,
		      const chunk_key *key, const chunk_digest *digest, void *buf, uint32_t raw_len)
{
	const uint8_t *in = entry;
	struct entry_hdr hdr;
	struct read_ctx *ctx;
	chunk_key got;
	chunk_digest got_digest;

	if (!entry_lens_valid(loc->flags, raw_len, loc->stored_len))
		return -EIO;
	if (len != ENTRY_HDR_SIZE + (size_t)loc->stored_len)
		return -EIO;
	if (entry_hdr_decode(in, &hdr) < 0)
		return -EIO;
	if (hdr.flags != loc->flags || hdr.stored_len != loc->stored_len ||
	    hdr.raw_len != raw_len || !hash_key_equal(&hdr.key, key) ||
	    !hash_digest_equal(&hdr.digest, digest))
		return -EIO;
	if (loc->flags & PACK_F_ZSTD) {
		size_t got_len;

		ctx = read_ctx_get();
		if (!ctx)
			return -ENOMEM;
		got_len = ZSTD_decompressDCtx(ctx->dctx, buf, raw_len, in + ENTRY_HDR_SIZE,
					      loc->stored_len);
		if (ZSTD_isError(got_len) || got_len != raw_len)
			return -EIO;
	} else {
		memcpy(buf, in + ENTRY_HDR_SIZE, raw_len);
	}
	hash_key(buf, raw_len, &got);
	if (!hash_key_equal(&got, key))
		return -EIO;
	/* The key is not collision resistant; the writer's SHA-256 is what a forger cannot meet. */
	hash_digest(buf, raw_len, &got_digest);
	return hash_digest_equal(&got_digest, digest) ? 0 : -EIO;
}

/* Decoded file header. 0, -EINVAL when it is not a pack header, -EIO when it is damaged. */
static int pack_hdr_read(int fd, uint64_t size, uint64_t *ret_pack_id)
{
	uint8_t hdr[PACK_HDR_SIZE];
	ssize_t n;

	if (size < PACK_HDR_SIZE)
		return -EINVAL;
	n = pread_all(fd, hdr, sizeof(hdr), 0);
	if (n < 0)
		return (int)n;
	if ((size_t)n != sizeof(hdr) || memcmp(hdr, PACK_MAGIC, 8) != 0)
		return -EINVAL;
	if (get_le64(hdr + PACK_HDR_CSUM_OFF) != hash_check64(hdr, PACK_HDR_CSUM_OFF))
		return -EIO;
	if (get_le32(hdr + 8) != PACK_VERSION)
		return -EINVAL;
	*ret_pack_id = get_le64(hdr + 16);
	return 0;
}

/*
 * Load and check the footer of a pack of size bytes. 0 with *ret_buf (the records, freed by the
 * caller), *ret_count and *ret_end (the footer's offset, just past the last entry); 1 when there
 * is no usable footer; or -errno from the read.
 */
static int footer_load(int fd, uint64_t size, uint8_t **ret_buf, uint64_t *ret_count,
		       uint64_t *ret_end)
{
	uint8_t trailer[TRAILER_SIZE];
	uint64_t count, foot_off, len, expect;
	uint8_t *buf;
	ssize_t n;
	int r = 1;

	if (size < PACK_HDR_SIZE + TRAILER_SIZE)
		return 1;
	n = pread_all(fd, trailer, sizeof(trailer), size - TRAILER_SIZE);
	if (n < 0)
		return (int)n;
	if ((size_t)n != sizeof(trailer) || memcmp(trailer, TRAILER_MAGIC, 8) != 0)
		return 1;
	count = get_le64(trailer + 8);
	foot_off = get_le64(trailer + 16);
	if (foot_off < PACK_HDR_SIZE || foot_off > size - TRAILER_SIZE)
		return 1;
	len = size - foot_off;
	if (count != (len - TRAILER_SIZE) / FOOTER_REC_SIZE ||
	    (len - TRAILER_SIZE) % FOOTER_REC_SIZE != 0)
		return 1;
	/* Each entry takes more room than its footer record: a cheap bound before allocating. */
	if (count > (foot_off - PACK_HDR_SIZE) / ENTRY_HDR_SIZE || (size_t)len != len)
		return 1;

	buf = malloc(len);
	if (!buf)
		return 1; /* the sequential scan needs no memory */
	n = pread_all(fd, buf, len, foot_off);
	if (n < 0) {
		r = (int)n;
		goto out_free_buf;
	}
	if ((uint64_t)n != len)
		goto out_free_buf;
	if (get_le64(buf + len - TRAILER_SIZE + TRAILER_CSUM_OFF) !=
	    hash_check64(buf, len - TRAILER_SIZE + TRAILER_CSUM_OFF))
		goto out_free_buf;

	/* Entries must tile the file from header to footer, exactly as the writer lays them. */
	expect = PACK_HDR_SIZE;
	for (uint64_t i = 0; i < count; i++) {
		struct pack_entry e;

		footer_rec_decode(buf + i * FOOTER_REC_SIZE, &e);
		if (!entry_lens_valid(e.loc.flags, e.raw_len, e.loc.stored_len))
			goto out_free_buf;
		if (e.loc.offset != expect ||
		    foot_off - expect < ENTRY_HDR_SIZE + (uint64_t)e.loc.stored_len)
			goto out_free_buf;
		expect += ENTRY_HDR_SIZE + (uint64_t)e.loc.stored_len;
	}
	if (expect != foot_off)
		goto out_free_buf;

	*ret_buf = buf;
	*ret_count = count;
	*ret_end = foot_off;
	return 0;

out_free_buf:
	free(buf);
	return r;
}

/* Walk entry headers from the file header; *ret_end is where the walk stopped. As pack_scan. */
static int scan_sequential(int fd, uint64_t size, int (*cb)(const struct pack_entry *e, void *),
			   void *userdata, uint64_t *ret_end)
{
	uint64_t off = PACK_HDR_SIZE;
	uint8_t hdr_buf[ENTRY_HDR_SIZE];
	struct entry_hdr hdr;
	struct pack_entry e;
	ssize_t n;
	int r;

	while (size - off >= ENTRY_HDR_SIZE) {
		n = pread_all(fd, hdr_buf, sizeof(hdr_buf), off);
		if (n < 0)
			return (int)n;
		if ((size_t)n != sizeof(hdr_buf) || entry_hdr_decode(hdr_buf, &hdr) < 0)
			break;
		if (size - off - ENTRY_HDR_SIZE < hdr.stored_len)
			break;
		e = (struct pack_entry){
			.key = hdr.key,
			.digest = hdr.digest,
			.raw_len = hdr.raw_len,
			.loc = {.offset = off, .stored_len = hdr.stored_len, .flags = hdr.flags},
		};
		if (cb) {
			r = cb(&e, userdata);
			if (r != 0)
				return r;
		}
		off += ENTRY_HDR_SIZE + (uint64_t)hdr.stored_len;
	}
	*ret_end = off;
	return 0;
}

int pack_scan(int fd, int (*cb)(const struct pack_entry *e, void *userdata), void *userdata,
	      uint64_t *ret_pack_id, uint64_t *ret_valid_end)
{
	uint64_t pack_id = 0, count = 0, end = 0;
	uint8_t *foot = NULL;
	struct stat st;
	int r;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;

	r = pack_hdr_read(fd, (uint64_t)st.st_size, &pack_id);
	if (r < 0)
		return r;

	r = footer_load(fd, (uint64_t)st.st_size, &foot, &count, &end);
	if (r < 0)
		return r;
	if (r > 0) {
		r = scan_sequential(fd, (uint64_t)st.st_size, cb, userdata, &end);
		if (r != 0)
			return r;
	} else {
		for (uint64_t i = 0; i < count && cb; i++) {
			struct pack_entry e;

			footer_rec_decode(foot + i * FOOTER_REC_SIZE, &e);
			r = cb(&e, userdata);
			if (r != 0)
				goto out_free_foot;
		}
	}

	if (ret_pack_id)
		*ret_pack_id = pack_id;
	if (ret_valid_end)
		*ret_valid_end = end;

out_free_foot:
	free(foot);
	return r;
}
