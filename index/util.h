/* SPDX-License-Identifier: MIT */
/*
 * Small helpers shared by the core library, the daemon and the CLI: size parsing and printing,
 * time in nanoseconds, whole-buffer I/O that retries short transfers and EINTR, and logging.
 */
#pragma once

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/*
 * Parse "123", "10k", "64M", "1.5G", "2TiB" (binary multiples; a trailing "B" or "iB" is allowed)
 * into bytes. 0, or -EINVAL for anything else (empty, negative, trailing junk, overflow).
 */
int parse_size(const char *s, uint64_t *ret);

/* "1.5 GiB" style, into buf of size len. Returns buf. */
char *format_size(uint64_t bytes, char *buf, size_t len);

/* CLOCK_REALTIME in nanoseconds. */
int64_t now_ns(void);

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t mono_ns(void);

/*
 * A seed for a hash table keyed by what a remote sends (getrandom, else the clock): a fixed hash
 * would let a forged catalog make every insert collide.
 */
uint64_t util_random_seed(void);

/*
 * Unlock m and pause briefly, for a thread that runs a loop of short batches under m and takes
 * it again at once: glibc's mutexes are not fair, and such a thread gets m back before the
 * waiter its unlock woke is even running, so back to back its batches shut every other user of
 * m out for the whole loop. The pause lets a woken waiter in.
 */
void mutex_unlock_give_way(pthread_mutex_t *m);

/* pread/pwrite the whole buffer; 0, -EIO on a short read at end of file, or -errno. */
int pread_all(int fd, void *buf, size_t len, off_t off);
int pwrite_all(int fd, const void *buf, size_t len, off_t off);

/* Logging. Core code logs at debug only; the daemon and CLI choose what to say. */
enum log_level { LOG_LVL_ERROR, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };
extern enum log_level log_threshold;
/* Where messages go: stderr (default) or syslog once the daemon has detached. */
void log_use_syslog(bool on);
void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)
