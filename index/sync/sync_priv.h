/* SPDX-License-Identifier: MIT */
/*
 * What the files of namespace sync (the .c files of index/sync/) share and nobody else sees: the
 * path map, the catalog lists, the merge state of a pull or an import, and the push state read from
 * a snapshot. The public API is sync.h; the model (last writer wins per path, the base, normal-form
 * extents) is described there and in merge.c.
 *
 * Locks: none of these types is shared between threads, except struct push's upload counters
 * (push.c). The vfs mutex (the lock argument of sync_push) guards the store's idx: code that
 * touches store_idx() while the store is serving takes it; the snapshot reader (struct push's
 * connection) is push's own and needs none.
 */
#pragma once

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "catalog.h"
#include "hash.h"
#include "idx.h"
#include "pack.h"
#include "sync.h"
#include "util.h"

#define FORMAT_VERSION 1
/* Push packs are sealed past this size: small enough to upload several at once. */
#define PUSH_PACK_TARGET (16u << 20)
#define PARALLEL_DEFAULT 4
/* Traces read at mount for prefetch. */
#define TRACES_MAX 4

/* ---- the shared types ---- */

/*
 * A string-keyed hash map (open addressing, keys owned by the map), hashed with XXH3-64 under a
 * seed drawn when the map first grows: its keys are paths from remote catalogs. probes counts the
 * slots looked at, for the test that crafted names cannot make it quadratic.
 */
struct smap_slot {
	char *key;
	void *val;
};

struct smap {
	struct smap_slot *slots;
	size_t cap, n;
	uint64_t seed;
	uint64_t probes;
};

/* A set of non-zero 64-bit ids (open addressing). */
struct idset {
	uint64_t *v;
	size_t cap, n;
};

/* Object names listed on the remote. */
struct names {
	char **v;
	size_t n, cap;
};

/* Remote pack ids for a catalog's pack table, made on first use. */
struct rpack_ids {
	const struct cat *c;
	uint64_t *id;
};

/* One extent in normal form: a data chunk, or a hole of at most PACK_MAX_CHUNK. */
struct nx {
	uint32_t len;
	uint64_t chunk; /* 0: hole */
	const struct idx_extent *e;
};

/* A merge into the local namespace: a pull, or the import of a bundle. */
struct merge {
	struct store *st;
	struct idx *x;
	struct smap dirs; /* path -> (void *)ino of directories resolved */
	int64_t last_sync;
	struct sync_report *rep;
	bool local_only; /* importing a bundle: every chunk is here already, nothing is remote */
	bool cold;       /* the store was empty: nothing local to compare with (a new runner) */
	const struct sync_live *live; /* a merge into a serving store (sync_live_pull); else NULL */
};

/* A candidate for one path (the winner, once every catalog is read): its entry and catalog. */
struct cand {
	const struct cat *c;
	/* The catalog's entry, or own: a copy with the mode this host applies (a pull clears the
	 * setuid and setgid bits); its strings point into c either way. */
	const struct cat_entry *e;
	struct cat_entry own;
	struct cat_lww lww; /* e's stamp, type and signature: its place in the order of catalog.h */
};

/* The remote's entry for a path at the last sync, and whether the walk saw the path here. */
struct bentry {
	uint8_t type;
	bool seen;
	int64_t stamp;
	uint8_t sig[16];
};

/* A local entry that differs from its base: pushed as an upsert or a tombstone. */
struct pentry {
	char *path;
	uint8_t type;
	bool skip; /* its data is not readable here: left for a later push */
	uint32_t mode, uid, gid;
	int64_t mtime, stamp;
	uint64_t size;
	char *target;
	struct idx_extent *ext;
	size_t next;
	struct nx *nx;
	size_t nnx;
	uint8_t sig[16];
};

/* A chunk to upload, and where it went. */
struct upload {
	uint64_t chunk;
	const struct idx_extent *e;
	int status;     /* <0: could not be read here */
	uint32_t npack; /* which of the new packs holds it */
	struct pack_loc loc;
};

struct newpack {
	char file[64]; /* in STORE/staging */
	uint64_t size;
	uint8_t name[32];
	int status;
};

struct push {
	struct store *st;
	struct remote *rem;
	struct idx *snap; /* a reader holding one snapshot of the index (idx_open_reader) */
	struct smap base; /* path -> struct bentry * */
	struct pentry *pe;
	size_t npe, cappe;
	struct upload *up_v;
	size_t nup, capup;
	struct newpack *np;
	size_t nnp;
	int64_t last_sync;
	struct sync_report *rep;
	const struct sync_options *o;
};

/* ---- pathmap.c ---- */

/* The slot of key: its own, or the empty one where it would go (m->cap must be non-zero). */
struct smap_slot *smap_slot(struct smap *m, const char *key);
/* The value of key, NULL when absent. */
void *smap_get(struct smap *m, const char *key);
/* Set key to val (copying key when new). 0 or -ENOMEM. */
int smap_put(struct smap *m, const char *key, void *val);
/* Free the map; free_val (may be NULL) is called on each value. */
void smap_free(struct smap *m, void (*free_val)(void *));
/* Add id: 1 when it was new, 0 when already there, -ENOMEM. */
int idset_add(struct idset *s, uint64_t id);

/* ---- common.c ---- */

/* This store's host id, made (and kept in meta) once. */
int host_id(struct idx *x, uint8_t ret[16]);
/* "dir/<16 hex>-<64 hex>.ext" names: does the SHA-256 in the name match the bytes? */
bool name_matches(const char *name, const void *data, size_t len);
/* The name of a new object: dir, created in 16 hex, '-', sha in hex, ext. */
void object_name(const char *dir, const char *ext, int64_t created, const uint8_t sha[32],
		 char *buf, size_t len);
/* "packs/<name in hex>.pack" */
void pack_object(const uint8_t name[32], char *buf, size_t len);
/* A chunk's key and digest in hex (96 characters and a NUL). */
void chunk_id_hex(const chunk_key *k, const chunk_digest *d, char buf[97]);
/* The normal form of a file's extents covering size bytes; *ret malloc'ed, pointing into e.
 * -EUCLEAN for extents past the size or overlapping. */
int nx_normalize(const struct idx_extent *e, size_t n, uint64_t size, struct nx **ret,
		 size_t *ret_n);
/* The signature of a local entry, as cat_entry_sig computes it for a catalog entry. */
void local_sig(uint8_t type, const struct idx_inode *in, const char *target, const struct nx *x,
	       size_t n, uint8_t ret[16]);

/* ---- merge.c: catalogs ---- */

void names_free(struct names *ns);
/* A remote_list callback: keeps the names ending in .cat or .trc. */
int collect_name(const char *name, uint64_t size, void *data);
/* The catalogs (and traces) under dir, sorted by name, that is by creation time. */
int list_sorted(struct remote *rem, const char *dir, struct names *ret);
/* Fetch, verify (name, chunker parameters) and decode one catalog; *bytes (may be NULL) grows by
 * its size. -EBADMSG, -EPROTO for a damaged, forged or foreign one. */
int load_catalog(struct store *st, struct remote *rem, const char *name, struct cat **ret,
		 uint64_t *bytes);
void cats_free(struct cat **cats, size_t n);
/*
 * Fetch every catalog of ns for which want(data, name) says yes (want NULL: all), in order, until
 * they hold max_entries entries or more (0: no limit). A catalog gone since the listing is
 * skipped; a bad one is reported to o->bad_catalog, added to *ret_bad (may be NULL; names_free
 * it) and skipped. *ret and *ret_names (pointing into ns) are malloc'ed: cats_free and free.
 * 0 when every wanted catalog was fetched, 1 when the limit stopped it, -errno.
 */
int fetch_catalogs(struct store *st, struct remote *rem, const struct names *ns,
		   bool (*want)(void *data, const char *name), void *data,
		   const struct sync_options *o, size_t max_entries, struct cat ***ret,
		   char ***ret_names, size_t *ret_n, uint64_t *bytes, struct names *ret_bad);
/*
 * A catalog that failed to verify or decode is not downloaded again for this long (it is
 * content-named: the same name stays bad; the wait covers a transfer cut short, and a catalog of
 * a newer format read again after an upgrade).
 */
#define SYNC_BAD_CATALOG_RETRY_S 86400
/* Whether a merge wants name: not merged yet, and not known bad (idx_rbad) since since. */
struct want_merge {
	struct idx *x;
	int64_t since; /* wall seconds: now less SYNC_BAD_CATALOG_RETRY_S */
};
bool want_unmerged(void *data, const char *name);
/* Remember bad (fetch_catalogs' ret_bad) in the index, now; one log line. 0 or -errno. */
int remember_bad_catalogs(struct idx *x, const struct names *bad);
/*
 * The winner per path over cats[0..n) into map (values: struct cand *, freed with free). Entries
 * stamped beyond the clock skew are always refused. With PICK_PULL (the entries go into this
 * host's namespace: pull, the daemon's pull) symbolic links whose target is absolute or leaves
 * the mount are refused too (symlink_target_contained), and the setuid and setgid bits are
 * cleared unless PICK_KEEP_SUID; compaction and remote gc rewrite the remote and change nothing.
 * Each kind of refusal is one warning naming the first path and the count.
 */
#define PICK_PULL 1u
#define PICK_KEEP_SUID 2u
int pick_winners(struct cat **cats, size_t n, unsigned flags, struct smap *map);
/* The PICK_ flags of a pull into the store of x (its "keep_suid" meta value). */
unsigned pull_pick_flags(struct idx *x);
/*
 * Whether symbolic link path (relative to the mount's root) pointing at target stays inside the
 * mount: target is relative, and is zero or more ".." (at most as many as path has directories
 * above it) followed by names that are never "..". "a/../.." is refused although it looks
 * contained: a could be a symbolic link itself, which only the leading form rules out.
 */
bool symlink_target_contained(const char *path, const char *target);
/* The winners sorted by path: *ret malloc'ed, pointing into map. */
int sorted_winners(struct smap *map, struct cand ***ret, size_t *ret_n);

/* ---- merge.c: the local namespace ---- */

/* The remote pack id of pack of m's catalog, recorded in the index at first use. */
int rpack_id(struct idx *x, struct rpack_ids *m, uint32_t pack, uint64_t *ret);
struct pack_loc chunk_rloc(const struct cat_chunk *ch);
/* Note every chunk catalog c says the remote has, for dedup at push. */
int learn_chunks(struct idx *x, const struct cat *c);
/* ino of the directory at path ("" is the root): 1, 0 when missing or not a directory. */
int resolve_dir(struct merge *m, const char *path, uint64_t *ret);
int adjust_nlink(struct idx *x, uint64_t ino, int delta);
/* Remove name (inode ino) from directory parent, a directory with all it holds. */
int remove_entry(struct merge *m, uint64_t parent, const char *name, uint64_t ino);
/* Make the local namespace hold entry e (of catalog c; ids NULL when m->local_only). */
int merge_apply(struct merge *m, const struct cat *c, struct rpack_ids *ids,
		const struct cat_entry *e);
/* The local entry at path: 1 with its type, stamp (ctime) and signature; 0 when absent. */
int local_entry(struct merge *m, const char *path, uint8_t *ret_type, int64_t *ret_stamp,
		uint8_t ret_sig[16]);
/* Merge one winner against the base and the local entry, then record it as the new base. */
int merge_entry(struct merge *m, struct cand *cd, struct rpack_ids *ids);

/* ---- coldload.c ---- */

/* Fill an empty store with the winners (m->cold), in the caller's transaction. */
int cold_load(struct merge *m, struct cand **win, size_t nwin, struct cat **cats, size_t ncats,
	      struct rpack_ids *ids);

/* ---- snapshot.c ---- */

/* Open p->snap, a reader of the store's index holding one snapshot. */
int snap_open(struct push *p);
/* The base, from the snapshot, into p->base. */
int snap_load_base(struct push *p);
/* Walk directory dir (path prefix, "" for the root): every entry that differs from its base
 * becomes a pentry; base entries seen are marked. */
int snap_walk(struct push *p, uint64_t dir, const char *prefix);
/* Base paths the walk did not see were deleted here: tombstones. */
int add_tombstones(struct push *p);
struct pentry *pentry_add(struct push *p);
void pentry_free(struct pentry *p);
/* The catalog entry of pe, its extents cx. */
struct cat_entry cat_entry_of(const struct pentry *pe, const struct cat_extent *cx);
/* Free what p holds and close its snapshot (p itself is the caller's). */
void push_free(struct push *p);
