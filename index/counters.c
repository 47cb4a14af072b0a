/* SPDX-License-Identifier: MIT */
/*
 * Read counters per top-level directory and their file, STORE/counters. See counters.h for the
 * format. A handful of rows (one per tool sharing the mount): linear search is enough.
 */
#include "counters.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

#define COUNTERS_MAGIC "pkgcachefs-counters 1"
#define NAME_BYTES_MAX CTR_NAME_MAX

void counters_release(struct counters *c)
{
	for (size_t i = 0; i < c->n; i++)
		free(c->rows[i].name);
	free(c->rows);
	c->rows = NULL;
	c->n = c->cap = 0;
}

const struct counters_row *counters_find(const struct counters *c, const char *name)
{
	for (size_t i = 0; i < c->n; i++)
		if (!strcmp(c->rows[i].name, name))
			return &c->rows[i];
	return NULL;
}

int counters_add(struct counters *c, const char *name, const uint64_t v[CTR_COUNT])
{
	struct counters_row *row = (struct counters_row *)counters_find(c, name);

	if (!row) {
		if (c->n == c->cap) {
			size_t nc = c->cap ? 2 * c->cap : 8;
			struct counters_row *nr = realloc(c->rows, nc * sizeof(*nr));

			if (!nr)
				return -ENOMEM;
			c->rows = nr;
			c->cap = nc;
		}
		row = &c->rows[c->n];
		memset(row, 0, sizeof(*row));
		row->name = strdup(name);
		if (!row->name)
			return -ENOMEM;
		c->n++;
	}
	for (int i = 0; i < CTR_COUNT; i++)
		row->v[i] += v[i];
	return 0;
}

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	return -1;
}

int counters_decode_name(const char *in, char *out)
{
	size_t n = 0;

	if (!strcmp(in, "."))
		in = CTR_OTHER;
	for (; *in; in++) {
		int ch = (unsigned char)*in;

		if (ch <= ' ' || ch > '~' || ch == '/')
			return -EBADMSG;
		if (ch == '%') {
			int hi = hexval(in[1]), lo = hi < 0 ? -1 : hexval(in[2]);

			if (lo < 0)
				return -EBADMSG;
			ch = hi * 16 + lo;
			if (ch == 0 || ch == '/')
				return -EBADMSG;
			in += 2;
		}
		if (n == NAME_BYTES_MAX)
			return -EBADMSG;
		out[n++] = (char)ch;
	}
	out[n] = '\0';
	return 0;
}

void counters_encode_name(FILE *f, const char *name)
{
	if (!*name) {
		fputc('.', f);
		return;
	}
	for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
		if (*p <= ' ' || *p > '~' || *p == '%')
			fprintf(f, "%%%02X", *p);
		else
			fputc(*p, f);
	}
}

int counters_load(const char *path, struct counters *c)
{
	char line[64 + CTR_COUNT * 21 + 3 * NAME_BYTES_MAX], name[NAME_BYTES_MAX + 1];
	bool first = true;
	FILE *f;
	int r = 0;

	f = fopen(path, "re");
	if (!f)
		return errno == ENOENT ? 0 : -errno;
	while (r == 0 && fgets(line, sizeof(line), f)) {
		uint64_t v[CTR_COUNT];
		char *p = line, *end;
		size_t len = strlen(line);

		if (len == 0 || line[len - 1] != '\n') {
			r = -EBADMSG; /* too long, or cut short */
			break;
		}
		line[len - 1] = '\0';
		if (first) {
			first = false;
			if (strcmp(line, COUNTERS_MAGIC))
				r = -EBADMSG;
			continue;
		}
		for (int i = 0; i < CTR_COUNT && r == 0; i++) {
			if (*p < '0' || *p > '9') {
				r = -EBADMSG;
				break;
			}
			errno = 0;
			v[i] = strtoull(p, &end, 10);
			if (errno || *end != ' ')
				r = -EBADMSG;
			p = end + 1;
		}
		if (r == 0)
			r = counters_decode_name(p, name);
		if (r == 0)
			r = counters_add(c, name, v);
	}
	if (r == 0 && ferror(f))
		r = -EIO;
	fclose(f);
	return r;
}

int counters_save(const char *path, const struct counters *c)
{
	char tmp[4096];
	FILE *f;
	int r = 0;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	f = fopen(tmp, "we");
	if (!f)
		return -errno;
	fprintf(f, "%s\n", COUNTERS_MAGIC);
	for (size_t i = 0; i < c->n; i++) {
		for (int k = 0; k < CTR_COUNT; k++)
			fprintf(f, "%" PRIu64 " ", c->rows[i].v[k]);
		counters_encode_name(f, c->rows[i].name);
		fputc('\n', f);
	}
	if (fflush(f) != 0 || ferror(f))
		r = errno ? -errno : -EIO;
	if (fclose(f) != 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0)
		unlink(tmp);
	return r;
}
