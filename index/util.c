/* SPDX-License-Identifier: MIT */
/*
 * Small helpers: sizes, clocks, whole-buffer I/O and logging. See util.h.
 */
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

enum log_level log_threshold = LOG_LVL_INFO;
static bool log_syslog;

int parse_size(const char *s, uint64_t *ret)
{
	static const char units[] = "KMGTPE";
	char *end;
	double v;
	uint64_t mult = 1;

	if (!s || !*s || isspace((unsigned char)*s) || *s == '-' || *s == '+')
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || !isfinite(v) || v < 0)
		return -EINVAL;
	if (*end) {
		const char *u = strchr(units, toupper((unsigned char)*end));

		if (!u)
			return -EINVAL;
		mult = 1ull << (10 * (u - units + 1));
		end++;
		if (*end == 'i' || *end == 'I')
			end++;
		if (*end == 'b' || *end == 'B')
			end++;
	}
	if (*end)
		return -EINVAL;
	if (v * (double)mult >= 18446744073709551615.0)
		return -EINVAL;
	*ret = (uint64_t)(v * (double)mult);
	return 0;
}

char *format_size(uint64_t bytes, char *buf, size_t len)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
	double v = (double)bytes;
	unsigned i = 0;

	while (v >= 1024 && i + 1 < ARRAY_SIZE(units)) {
		v /= 1024;
		i++;
	}
	if (i == 0)
		snprintf(buf, len, "%llu B", (unsigned long long)bytes);
	else
		snprintf(buf, len, "%.1f %s", v, units[i]);
	return buf;
}

static int64_t clock_ns(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t now_ns(void)
{
	return clock_ns(CLOCK_REALTIME);
}

int64_t mono_ns(void)
{
	return clock_ns(CLOCK_MONOTONIC);
}

void mutex_unlock_give_way(pthread_mutex_t *m)
{
	/* Waking on another core takes tens of us; the pause is cheap next to a batch of the
	 * live merge (1-1.5 ms). */
	struct timespec pause = {.tv_nsec = 50000};

	pthread_mutex_unlock(m);
	nanosleep(&pause, NULL);
}

int pread_all(int fd, void *buf, size_t len, off_t off)
{
	char *p = buf;

	while (len > 0) {
		ssize_t n = pread(fd, p, len, off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

int pwrite_all(int fd, const void *buf, size_t len, off_t off)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = pwrite(fd, p, len, off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

void log_use_syslog(bool on)
{
	if (on && !log_syslog)
		openlog("pkgcachefs", LOG_PID, LOG_DAEMON);
	log_syslog = on;
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
	static const char *const names[] = {"error", "warning", "info", "debug"};
	va_list ap;

	if (lvl > log_threshold)
		return;
	va_start(ap, fmt);
	if (log_syslog) {
		vsyslog(prio[lvl], fmt, ap);
	} else {
		fprintf(stderr, "pkgcachefs: %s: ", names[lvl]);
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
	}
	va_end(ap);
}

uint64_t util_random_seed(void)
{
	uint64_t seed;
	struct timespec ts;

	if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) == (ssize_t)sizeof(seed))
		return seed;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)(uintptr_t)&seed;
}
