/* SPDX-License-Identifier: MIT */
/*
 * What the files of the index (index/idx*.c) share and nobody else sees: the SQLite handle and a
 * cache of prepared statements. Only idx*.c include this header; everything outside the index
 * reaches the database through the operations of idx.h, which keep its invariants (idx.h).
 *
 * Statements: idx.c prepares its own hot set at open; the other idx_*.c files ask idx_stmt() for
 * theirs, keyed by the address of a string literal, so each is prepared once per connection and
 * lives until idx_close.
 */
#pragma once

#include <sqlite3.h>

#include "idx.h"

#define IDX_STMT_CACHE_MAX 128

struct idx_stmt_cache {
	const char *sql[IDX_STMT_CACHE_MAX]; /* the literal's address is the key */
	sqlite3_stmt *stmt[IDX_STMT_CACHE_MAX];
	size_t n;
};

/* The connection. Lives as long as x; never closed or used across threads by the caller. */
sqlite3 *idx_sqlite(struct idx *x);
/*
 * The prepared statement for sql, which must be a string literal (its address is the cache key),
 * reset and with its bindings cleared. NULL when it cannot be prepared (logged at debug) or the
 * cache is full. Owned by x.
 */
sqlite3_stmt *idx_stmt(struct idx *x, const char *sql);
/* Run sql (several statements allowed, no rows returned). 0 or -errno. */
int idx_exec(struct idx *x, const char *sql);
/* Step a statement that returns no rows, then reset it. 0 or -errno. */
int idx_step_done(sqlite3_stmt *s);
/* Bind a file name (a BLOB: names need not be UTF-8); name must outlive the step. */
void idx_bind_name(sqlite3_stmt *s, int i, const char *name);
