/* SPDX-License-Identifier: MIT */
/*
 * Chunk identities.
 *
 * A chunk is named by its XXH3-128 key: fast enough to compute on every write and every read,
 * but not collision resistant (crafted colliding inputs exist). So every chunk also carries a
 * SHA-256 digest, and two contents are only ever shared when their digests match too. The key is
 * for lookup and corruption checks; the digest is for identity.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HASH_KEY_SIZE 16
#define HASH_DIGEST_SIZE 32

/* XXH3-128 of a chunk, stored in canonical (big-endian) byte order. */
typedef struct {
	uint8_t b[HASH_KEY_SIZE];
} chunk_key;

/* SHA-256 of a chunk. */
typedef struct {
	uint8_t b[HASH_DIGEST_SIZE];
} chunk_digest;

void hash_key(const void *data, size_t len, chunk_key *ret);
void hash_digest(const void *data, size_t len, chunk_digest *ret);

bool hash_key_equal(const chunk_key *a, const chunk_key *b);
bool hash_digest_equal(const chunk_digest *a, const chunk_digest *b);

/* Lower-case hex into buf, which must hold 2 * size + 1 bytes. Returns buf. */
char *hash_hex(const uint8_t *bytes, size_t size, char *buf);

/* 64-bit XXH3 of a small buffer, used for header checksums in on-disk structures. */
uint64_t hash_check64(const void *data, size_t len);
