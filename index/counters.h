/* SPDX-License-Identifier: MIT */
/*
 * Read counters per top-level directory: how many reads the daemon served from local packs, how
 * many needed data from the remote, and how many failed, with their bytes. The daemon keeps them
 * in memory (vfs.h), adds them to what earlier sessions left in STORE/counters, and rewrites that
 * file every second or so and at exit, so that `pkgcachefs stats` in another process shows them
 * while the store is mounted. They only grow (a store's whole life), as Prometheus counters do.
 *
 * STORE/counters is text, written to a temporary file and renamed over:
 *
 *   pkgcachefs-counters 1
 *   <reads_local> <bytes_local> <reads_fetched> <bytes_fetched> <reads_failed> <name>
 *   ...
 *
 * one line per top-level directory, numbers in decimal; <name> is percent-encoded (bytes below
 * '!', above '~', and '%' as %XX), and "." stands for reads of no known top-level directory.
 * The file is untrusted input: a malformed line is an error, never a crash.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum {
	CTR_READS_LOCAL,   /* reads served from local packs or a file being written */
	CTR_BYTES_LOCAL,   /* their bytes */
	CTR_READS_FETCHED, /* reads that needed data from the remote */
	CTR_BYTES_FETCHED, /* their bytes (the whole read, not only what was fetched) */
	CTR_READS_FAILED,  /* reads that returned an error */
	CTR_COUNT
};

/* A top-level name the counters of reads of no known top-level directory go under. */
#define CTR_OTHER ""

struct counters_row {
	char *name; /* owned */
	uint64_t v[CTR_COUNT];
};

struct counters {
	struct counters_row *rows; /* owned; n of them, in the order they were added */
	size_t n, cap;
};

/* An empty set; counters_release frees what it holds and leaves it empty. */
#define COUNTERS_INIT                                                                              \
	{                                                                                          \
		NULL, 0, 0                                                                         \
	}
void counters_release(struct counters *c);

/* Add v to the row of name (created when new). 0 or -ENOMEM. */
int counters_add(struct counters *c, const char *name, const uint64_t v[CTR_COUNT]);
/* The row of name, or NULL. Lives until c changes. */
const struct counters_row *counters_find(const struct counters *c, const char *name);

/* Add what the file at path holds to c. 0 (also when the file does not exist), -EBADMSG when it
 * is malformed (c then holds what came before the bad line), or -errno. */
int counters_load(const char *path, struct counters *c);
/* The name encoding of the file, for other files of the store that name top-level directories
 * (fs/report.c's STORE/session): encode writes name to f ("." for CTR_OTHER); decode reads in
 * into out (CTR_NAME_MAX + 1 bytes), 0 or -EBADMSG for a malformed or too long name. */
#define CTR_NAME_MAX 255
void counters_encode_name(FILE *f, const char *name);
int counters_decode_name(const char *in, char *out);
/* Write c to path atomically (path.tmp, then rename). 0 or -errno. */
int counters_save(const char *path, const struct counters *c);
