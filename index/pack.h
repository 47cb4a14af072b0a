/* SPDX-License-Identifier: MIT */
/*
 * Pack files: append-only containers of chunks.
 *
 * A pack is a file header, then entries (an entry header followed by the chunk's stored bytes,
 * zstd-compressed only where that saves space), and, once sealed, a footer that lists every
 * entry. Each entry header carries the chunk's XXH3-128 key, its SHA-256 digest, its raw and
 * stored lengths, and a checksum of the header itself, so a pack describes itself: the index can
 * be rebuilt from packs alone, and a pack whose tail was torn by a crash is still readable up to
 * the last whole entry. Byte layout: docs/format.md.
 *
 * Packs are untrusted input when read: every length is bounds-checked, every decompressed chunk
 * is checked against its key, and a mismatch is -EIO, never wrong bytes.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hash.h"

/* Where a chunk lives inside a pack. */
struct pack_loc {
	uint64_t offset;     /* of the entry header, from the start of the pack file */
	uint32_t stored_len; /* bytes of chunk data after the entry header */
	uint32_t flags;      /* PACK_F_* */
};

#define PACK_F_ZSTD 0x1u

/* Bytes a pack spends on each chunk besides its data: the entry header and, once sealed, the
 * footer record. */
#define PACK_ENTRY_OVERHEAD (72u + 68u)

/* Largest raw chunk a pack accepts. */
#define PACK_MAX_CHUNK (16u << 20)

struct pack_writer;

/*
 * Create pack file `name` inside directory dirfd (O_EXCL: it must not exist) and write its header.
 * pack_id is recorded in the header, with the creation time unless pack_id is 0: a pack for a
 * remote or a bundle, named by the SHA-256 of its bytes, must be the same bytes for the same
 * chunks. On success *ret is owned by the caller (pack_writer_free).
 */
int pack_writer_create(int dirfd, const char *name, uint64_t pack_id, struct pack_writer **ret);

/*
 * Append one chunk. The data is compressed with zstd when compress is true and that makes it
 * smaller by at least 1/16; otherwise stored raw. The writer is not thread-safe: callers serialise.
 * Returns 0 and fills *ret_loc, or -errno (-ENOSPC on a full disk: the pack is truncated back to
 * its previous end, so nothing already appended is damaged and the writer stays usable).
 */
int pack_writer_append(struct pack_writer *w, const chunk_key *key, const chunk_digest *digest,
		       const void *data, uint32_t raw_len, bool compress, struct pack_loc *ret_loc);

/* fdatasync the pack; 0 or -errno. Cheap when nothing was appended since the last sync. */
int pack_writer_sync(struct pack_writer *w);
/* Whether something was appended since the last successful pack_writer_sync. */
bool pack_writer_unsynced(const struct pack_writer *w);

/* Current size in bytes of the pack file. */
uint64_t pack_writer_size(const struct pack_writer *w);

/* The pack's file descriptor, for readers of chunks already appended (valid until free). */
int pack_writer_fd(const struct pack_writer *w);

/* Write the footer and fsync. After this only pack_writer_free is valid. 0 or -errno. */
int pack_writer_seal(struct pack_writer *w);

/* Close without sealing (the pack stays readable, its footer missing). Accepts NULL. */
void pack_writer_free(struct pack_writer *w);

/*
 * Read the chunk at loc from the pack open as fd into buf (raw_len bytes), decompressing when
 * needed and verifying the XXH3-128 key. 0, -EIO when the bytes are damaged or do not match key,
 * or another -errno from the read.
 */
int pack_read_chunk(int fd, const struct pack_loc *loc, const chunk_key *key, void *buf,
		    uint32_t raw_len);

/* Bytes of an entry header, which precedes each chunk's stored data. */
#define PACK_ENTRY_HDR_SIZE 72u

/*
 * Decode one whole entry (header and stored data, len bytes, as fetched from a remote copy of a
 * pack) that should hold the chunk (key, digest) at loc, into buf (raw_len bytes). Checks the
 * header against loc, the data against the key and against the SHA-256 digest: 0 or -EIO.
 */
int pack_decode_entry(const void *entry, size_t len, const struct pack_loc *loc,
		      const chunk_key *key, const chunk_digest *digest, void *buf,
		      uint32_t raw_len);

/* One entry found by pack_scan. */
struct pack_entry {
	chunk_key key;
	chunk_digest digest;
	uint32_t raw_len;
	struct pack_loc loc;
};

/*
 * Walk every entry of the pack open as fd, calling cb for each in file order; a non-zero return
 * from cb stops the walk and is returned. Uses the footer when it is present and valid, otherwise
 * scans entry headers from the start and stops at the first damaged or incomplete one.
 * *ret_pack_id gets the id from the header, *ret_valid_end the offset just past the last good entry
 * (either may be NULL). Returns 0, cb's non-zero value, -EINVAL when the file header is not a pack
 * header, or -errno.
 */
int pack_scan(int fd, int (*cb)(const struct pack_entry *e, void *userdata), void *userdata,
	      uint64_t *ret_pack_id, uint64_t *ret_valid_end);
