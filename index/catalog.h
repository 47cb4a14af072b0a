/* SPDX-License-Identifier: MIT */
/*
 * Catalogs: the namespace objects a remote exchanges between hosts.
 *
 * A catalog is one immutable object of a remote: a table of packs, a table of chunks (each in one
 * of those packs) and a list of namespace entries (files made of extents that index the chunk
 * table, directories, symlinks, tombstones, or trace records). One byte format serves every kind:
 * a host's delta from one push, a snapshot compacting many catalogs, a job's read trace, the packs
 * gc has condemned, an export bundle's table of contents. Byte layout: docs/format.md.
 *
 * Catalogs come from a remote that anyone with write access can poison, so cat_decode treats its
 * input as hostile: every count and length is checked against the bytes that remain and against
 * the limits below before anything is allocated, every index against its table, and anything
 * malformed is -EBADMSG with no partial result. The writer applies the same rules to what it is
 * given (-EINVAL), so whatever it writes decodes.
 *
 * Entries are kept sorted by path (bytewise) and a path appears once per catalog; pack names and
 * chunks (key, digest) appear once per table. This makes the encoding of a given content unique up
 * to the order of the pack and chunk tables, which is insertion order.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t by value in struct cat_sig */
#include <xxhash.h>

#include "hash.h"

/* Catalog kinds (the header's kind field). */
enum cat_kind {
	CAT_DELTA = 1,    /* one host's changes in one push */
	CAT_SNAPSHOT = 2, /* the compaction of many catalogs */
	CAT_TRACE = 3, /* paths a job read (CAT_E_READ entries only), for prefetch and retention */
	CAT_CONDEMNED = 4, /* packs gc intends to delete: a pack table, no chunks, no entries */
	CAT_BUNDLE = 5,    /* an export bundle's table of contents */
};

/* Entry types. */
enum cat_kind_entry {
	CAT_E_FILE = 1,
	CAT_E_DIR = 2,
	CAT_E_SYMLINK = 3,
	CAT_E_GONE = 4, /* tombstone: the path was removed at stamp */
	CAT_E_READ = 5, /* trace: the path was read at stamp */
};

/* Limits: a decoder refuses anything larger, a writer refuses to produce it (-E2BIG). */
#define CAT_MAX_BODY (UINT64_C(1) << 30) /* decompressed body bytes */
#define CAT_MAX_ENTRIES 50000000u
#define CAT_MAX_EXTENTS (UINT64_C(1) << 31) /* extents of all entries together */
#define CAT_PATH_MAX 4095u                  /* bytes of a path or a symlink target */
#define CAT_NAME_MAX 255u                   /* bytes of one path component */
/*
 * How far ahead of this host's clock a remote entry's stamp may be (the clock skew allowed between
 * hosts). A later one would win every conflict for good (INT64_MAX: forever) and overflow the
 * "stamp + 1" of a tombstone: the merge refuses such entries by name (pick_winners).
 */
#define CAT_STAMP_SKEW_NS (24ll * 3600 * 1000000000)

/* The stamp that wins over s by the least, with no overflow (a stamp an older version took in). */
static inline int64_t cat_stamp_after(int64_t s)
{
	return s < INT64_MAX ? s + 1 : s;
}

/* A remote pack object: "packs/<64 lower-case hex digits of name>.pack". */
struct cat_pack {
	uint8_t name[32];
	uint64_t size; /* bytes of the pack object */
};

/* A chunk and where it lives. Same rules as a pack entry header (docs/format.md). */
struct cat_chunk {
	chunk_key key;
	chunk_digest digest;
	uint32_t raw_len;    /* 1..PACK_MAX_CHUNK */
	uint32_t pack;       /* index into the pack table */
	uint64_t off;        /* offset of the chunk's entry header in that pack */
	uint32_t stored_len; /* bytes of chunk data after the 72-byte entry header */
	uint32_t flags;      /* PACK_F_*: raw needs stored_len == raw_len, zstd 1..raw_len */
};

#define CAT_HOLE UINT32_MAX

struct cat_extent {
	uint32_t len;   /* 1..PACK_MAX_CHUNK; for a chunk, its raw_len */
	uint32_t chunk; /* index into the chunk table, or CAT_HOLE: len zero bytes */
};

/*
 * A namespace entry. Rules (checked by cat_decode and cat_writer_add_entry):
 * - path: cat_path_valid();
 * - mode: permission bits (07777) plus the file type bits of type: S_IFREG for FILE, S_IFDIR
 *   for DIR, S_IFLNK for SYMLINK; exactly 0 for GONE and READ;
 * - size: FILE the sum of its extent lens, SYMLINK strlen(target), 0 for the others;
 * - target: SYMLINK only (1..CAT_PATH_MAX bytes, no NUL), NULL otherwise;
 * - extents: FILE only, n_ext 0 for the others;
 * - READ entries only in CAT_TRACE catalogs, and CAT_TRACE catalogs hold nothing else.
 * - stamp: 0 .. INT64_MAX (how far ahead of the clock is the merge's rule, CAT_STAMP_SKEW_NS);
 * uid, gid and mtime are free; GONE and READ entries carry them but nothing reads them.
 */
struct cat_entry {
	const char *path; /* relative, '/'-separated: see cat_path_valid */
	uint8_t type;     /* enum cat_kind_entry */
	uint32_t mode;
	uint32_t uid;
	uint32_t gid;
	int64_t mtime; /* ns since the epoch */
	int64_t stamp; /* ns since the epoch: last-writer-wins order */
	uint64_t size;
	const char *target; /* symlinks only, else NULL */
	uint32_t n_ext;
	const struct cat_extent *ext; /* files only (NULL when n_ext is 0) */
};

/* A decoded catalog. All memory is owned by it and lives until cat_free. */
struct cat {
	uint32_t kind;                            /* enum cat_kind */
	int64_t created;                          /* ns since the epoch */
	uint8_t host[16];                         /* id of the writing host */
	uint32_t chunk_min, chunk_avg, chunk_max; /* the writer's chunker (the caller compares) */
	const struct cat_pack *packs;
	size_t n_packs;
	const struct cat_chunk *chunks;
	size_t n_chunks;
	const struct cat_entry *entries; /* sorted by path, bytewise; paths unique */
	size_t n_entries;
};

/*
 * Decode the catalog object data[0..len). On success *ret is the caller's (cat_free). Returns 0,
 * -EBADMSG for anything malformed (truncated, damaged, forged, over a limit), -EPROTONOSUPPORT
 * when the magic is right but the format version is newer than this build knows ("written by a
 * newer pkgcachefs"), or -ENOMEM. Never a partial result: *ret is untouched on error.
 */
int cat_decode(const void *data, size_t len, struct cat **ret);

/* Accepts NULL. */
void cat_free(struct cat *c);

/*
 * True for a relative '/'-separated path: not empty, no leading or trailing '/', no empty, "." or
 * ".." component, each component at most CAT_NAME_MAX bytes, the whole at most CAT_PATH_MAX.
 */
bool cat_path_valid(const char *path);

/* The entry type a file of this mode travels as (CAT_E_FILE, _DIR, _SYMLINK), or 0 for the types
 * that stay local (fifos, sockets, devices). */
uint8_t cat_type_of_mode(uint32_t mode);

/*
 * The writer: collects tables and entries and serialises them. Not thread-safe. Entries may be
 * added in any order; they are sorted at finish.
 */
struct cat_writer;

/*
 * kind is an enum cat_kind; the chunker parameters must pass chunker_params_validate. 0, -EINVAL
 * or -ENOMEM. On success *ret is the caller's (cat_writer_finish or cat_writer_free).
 */
int cat_writer_new(uint32_t kind, const uint8_t host[16], int64_t created, uint32_t chunk_min,
		   uint32_t chunk_avg, uint32_t chunk_max, struct cat_writer **ret);

/*
 * Add a pack, deduplicated by name: adding a name again returns its first index (and keeps the
 * first size). 0 and *ret_index, -ENOMEM, or -E2BIG over a limit.
 */
int cat_writer_add_pack(struct cat_writer *w, const uint8_t name[32], uint64_t size,
			uint32_t *ret_index);

/*
 * Add a chunk, deduplicated by (key, digest): adding one again returns its first index and keeps
 * the first location. -EINVAL when the chunk breaks a rule (c->pack must already be added; the
 * entry must lie within the pack's size) or has the same (key, digest) as a chunk already added
 * but another raw_len; -EINVAL for a CAT_CONDEMNED writer; -E2BIG; -ENOMEM.
 */
int cat_writer_add_chunk(struct cat_writer *w, const struct cat_chunk *c, uint32_t *ret_index);

/*
 * Validate the entry like cat_decode does and copy it (the caller keeps e and what it points to).
 * Extents index chunks already added. 0, -EINVAL for an invalid entry (or one that does not fit
 * the writer's kind), -EEXIST when the path was already added, -E2BIG, -ENOMEM.
 */
int cat_writer_add_entry(struct cat_writer *w, const struct cat_entry *e);

/*
 * Serialise. On success *ret_data is a malloc'ed buffer of *ret_len bytes that the caller frees,
 * and ret_sha the SHA-256 of those bytes (the whole object, trailer included) to name it by
 * content. 0, -E2BIG or -ENOMEM. Frees w in every case.
 */
int cat_writer_finish(struct cat_writer *w, void **ret_data, size_t *ret_len, uint8_t ret_sha[32]);

/* Accepts NULL. */
void cat_writer_free(struct cat_writer *w);

/*
 * Content signature: XXH3-128 (seed 0, canonical big-endian output) over a canonical encoding of
 * what a host can see of an entry, independent of chunk table order, pack location and stamp, so
 * that two hosts holding the same logical entry compute the same 16 bytes. Little-endian fields:
 *
 *   u8 type, then by type:
 *   DIR:        u32 mode, u32 uid, u32 gid                         (mtime is not included)
 *   FILE:       u32 mode, u32 uid, u32 gid, i64 mtime, u64 size, then per extent in order:
 *                 hole: u8 0, u32 len
 *                 data: u8 1, u32 len, key[16] (canonical), digest[32]
 *   SYMLINK:    u32 mode, u32 uid, u32 gid, i64 mtime, u16 target_len, target bytes
 *   GONE, READ: nothing more
 *
 * The streaming form lets the local index compute it from its own rows: begin, one
 * cat_sig_extent per extent (FILE only), end. struct cat_sig holds an XXH3 state that needs
 * 64-byte alignment: keep it on the stack (or in memory from aligned_alloc).
 */
struct cat_sig {
	XXH3_state_t st;
	uint8_t type;
};

/*
 * Start a signature. size is used for FILE only, target for SYMLINK only (NULL otherwise); the
 * other fields are used as the encoding above says.
 */
void cat_sig_begin(struct cat_sig *s, uint8_t type, uint32_t mode, uint32_t uid, uint32_t gid,
		   int64_t mtime, uint64_t size, const char *target);

/* Add one extent of a FILE: key and digest NULL for a hole. */
void cat_sig_extent(struct cat_sig *s, uint32_t len, const chunk_key *key,
		    const chunk_digest *digest);

void cat_sig_end(struct cat_sig *s, uint8_t ret_sig[16]);

/* The signature of e, whose extents index chunks (NULL when e has no extents). */
void cat_entry_sig(const struct cat_entry *e, const struct cat_chunk *chunks, uint8_t ret_sig[16]);

/*
 * Last-writer-wins order between two versions of one path: > 0 when a wins, < 0 when b wins, 0
 * when they are the same content (either may be kept). The greater stamp wins; on equal stamps,
 * identically on every host: anything beats GONE, DIR beats the other types, and then the greater
 * signature (memcmp) wins.
 *
 * cat_lww_cmp takes the fields alone, for callers that hold a signature computed elsewhere.
 */
struct cat_lww {
	int64_t stamp;
	uint8_t type;
	uint8_t sig[16];
};

int cat_lww_cmp(const struct cat_lww *a, const struct cat_lww *b);

/* The same for two entries, each with the chunk table its extents index. */
int cat_entry_cmp_lww(const struct cat_entry *a, const struct cat_chunk *a_chunks,
		      const struct cat_entry *b, const struct cat_chunk *b_chunks);
