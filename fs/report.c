/* SPDX-License-Identifier: MIT */
/*
 * `pkgcachefs report`, and the session files the daemon leaves for it. See report.h.
 *
 * A report is a table with a row per top-level directory: the read counters now minus those at
 * mount, and files and bytes now minus those at mount (negative when a job deleted more than it
 * wrote), with the mount's totals from STORE/remote-stats and the last push above it. Nothing
 * here is shared between threads: the daemon calls the two session functions from its stats
 * thread's start and stop, and the CLI runs alone.
 */
#include "report.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "fetch.h"
#include "idx.h"
#include "store.h"
#include "util.h"
#include "vfs.h"

#define SESSION_MAGIC "pkgcachefs-session 1"

/* ---- the daemon's side ---- */

int report_session_begin(const char *store, struct idx *x, const struct counters *base)
{
	char path[PATH_MAX], tmp[PATH_MAX + 8];
	struct idx_top_stats *top = NULL;
	size_t ntop = 0;
	FILE *f;
	int r;

	snprintf(path, sizeof(path), "%s/session-counters", store);
	r = counters_save(path, base);
	if (r < 0)
		return r;
	r = idx_get_top_stats(x, &top, &ntop);
	if (r < 0)
		return r;
	snprintf(path, sizeof(path), "%s/session", store);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "we");
	if (!f) {
		r = -errno;
		goto out_free;
	}
	fprintf(f, "%s\nstart %lld\n", SESSION_MAGIC, (long long)time(NULL));
	for (size_t i = 0; i < ntop; i++) {
		fprintf(f, "top %" PRIu64 " %" PRIu64 " %" PRIu64 " ", top[i].files,
			top[i].logical_bytes, top[i].unique_bytes);
		counters_encode_name(f, top[i].name);
		fputc('\n', f);
	}
	r = 0;
	if (fflush(f) != 0 || ferror(f))
		r = -EIO;
	if (fclose(f) != 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0)
		unlink(tmp);
out_free:
	idx_top_stats_free(top, ntop);
	return r;
}

void report_session_end(const char *store, struct vfs *v)
{
	struct fetcher_stats fs;
	char path[PATH_MAX];
	FILE *f;

	vfs_fetch_stats(v, &fs);
	snprintf(path, sizeof(path), "%s/session", store);
	f = fopen(path, "ae");
	if (!f)
		return;
	fprintf(f, "end %lld %" PRIu64 "\n", (long long)time(NULL), fs.wait_ns);
	fclose(f);
}

/* ---- reading it back ---- */

struct rrow {
	char *name;
	uint64_t reads[CTR_COUNT];      /* this session's */
	int64_t files, logical, unique; /* now minus at mount */
};

struct rep {
	const char *store;
	bool mounted, ended;
	long long start, end;
	uint64_t wait_ns;
	struct rrow *rows;
	size_t n;
	/* STORE/remote-stats, when this session wrote it */
	bool have_remote;
	char remote[1024];
	uint64_t fetched_chunks, fetched_bytes, wire_bytes, fetch_failures, bytes_out, requests,
		request_failures;
	char push_failed[512]; /* STORE/push-failed, when this session wrote it */
};

static struct rrow *row_of(struct rep *p, const char *name)
{
	struct rrow *nr;

	for (size_t i = 0; i < p->n; i++)
		if (!strcmp(p->rows[i].name, name))
			return &p->rows[i];
	nr = realloc(p->rows, (p->n + 1) * sizeof(*nr));
	if (!nr)
		return NULL;
	p->rows = nr;
	nr = &p->rows[p->n];
	memset(nr, 0, sizeof(*nr));
	nr->name = strdup(name);
	if (!nr->name)
		return NULL;
	p->n++;
	return nr;
}

static void rep_release(struct rep *p)
{
	for (size_t i = 0; i < p->n; i++)
		free(p->rows[i].name);
	free(p->rows);
}

/* STORE/session: start, the top rows at mount (subtracted), the end line. 0, -ENOENT, -EBADMSG. */
static int load_session(struct rep *p)
{
	char path[PATH_MAX], line[128 + 3 * CTR_NAME_MAX], name[CTR_NAME_MAX + 1];
	bool first = true, started = false;
	FILE *f;
	int r = 0;

	snprintf(path, sizeof(path), "%s/session", p->store);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (r == 0 && fgets(line, sizeof(line), f)) {
		size_t len = strlen(line);
		uint64_t a, b, c;
		long long t;
		int off = 0;

		if (len == 0 || line[len - 1] != '\n') {
			r = -EBADMSG;
			break;
		}
		line[len - 1] = '\0';
		if (first) {
			first = false;
			if (strcmp(line, SESSION_MAGIC))
				r = -EBADMSG;
		} else if (sscanf(line, "start %lld%n", &t, &off) == 1 && !line[off]) {
			p->start = t;
			started = true;
		} else if (sscanf(line, "end %lld %" SCNu64 "%n", &t, &a, &off) == 2 &&
			   !line[off]) {
			p->end = t;
			p->wait_ns = a;
			p->ended = true;
		} else if (sscanf(line, "top %" SCNu64 " %" SCNu64 " %" SCNu64 " %n", &a, &b, &c,
				  &off) == 3 &&
			   off > 0 && counters_decode_name(line + off, name) == 0) {
			struct rrow *w = row_of(p, name);

			if (!w) {
				r = -ENOMEM;
				break;
			}
			w->files -= (int64_t)a;
			w->logical -= (int64_t)b;
			w->unique -= (int64_t)c;
		} else {
			r = -EBADMSG;
		}
	}
	fclose(f);
	if (r == 0 && !started)
		r = -EBADMSG;
	return r;
}

/* Whether the file at path was written at or after the session's start. */
static bool this_session(const struct rep *p, const char *path)
{
	struct stat sb;

	return stat(path, &sb) == 0 && (long long)sb.st_mtime >= p->start;
}

static void load_remote_stats(struct rep *p)
{
	char path[PATH_MAX], line[1200];
	FILE *f;

	snprintf(path, sizeof(path), "%s/remote-stats", p->store);
	if (!this_session(p, path) || !(f = fopen(path, "re")))
		return;
	p->have_remote = true;
	while (fgets(line, sizeof(line), f)) {
		static const struct {
			const char *key;
			size_t off;
		} keys[] = {
			{"fetched_chunks=", offsetof(struct rep, fetched_chunks)},
			{"fetched_bytes=", offsetof(struct rep, fetched_bytes)},
			{"fetch_wire_bytes=", offsetof(struct rep, wire_bytes)},
			{"fetch_failures=", offsetof(struct rep, fetch_failures)},
			{"bytes_out=", offsetof(struct rep, bytes_out)},
			{"requests=", offsetof(struct rep, requests)},
			{"request_failures=", offsetof(struct rep, request_failures)},
		};

		line[strcspn(line, "\n")] = '\0';
		if (!strncmp(line, "remote=", 7)) {
			snprintf(p->remote, sizeof(p->remote), "%.1000s", line + 7);
			continue;
		}
		for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
			size_t kl = strlen(keys[i].key);
			char *end;
			uint64_t v;

			if (strncmp(line, keys[i].key, kl))
				continue;
			errno = 0;
			v = strtoull(line + kl, &end, 10);
			if (!errno && end != line + kl && !*end)
				*(uint64_t *)((char *)p + keys[i].off) = v;
		}
	}
	fclose(f);
}

/* STORE/push-failed: the daemon writes it when the push at unmount fails, removes it when
 * that push works. */
static void load_push(struct rep *p)
{
	char path[PATH_MAX];
	FILE *f;

	snprintf(path, sizeof(path), "%s/push-failed", p->store);
	if (this_session(p, path) && (f = fopen(path, "re"))) {
		if (fgets(p->push_failed, sizeof(p->push_failed), f))
			p->push_failed[strcspn(p->push_failed, "\n")] = '\0';
		fclose(f);
	}
}

/* Everything for the report of the store p->store (opened read-only as st). 0 or -errno. */
static int collect(struct rep *p, struct store *st)
{
	struct counters now = COUNTERS_INIT, then = COUNTERS_INIT;
	struct idx_top_stats *top = NULL;
	char path[PATH_MAX];
	size_t ntop = 0;
	int r;

	r = load_session(p);
	if (r < 0)
		return r;
	snprintf(path, sizeof(path), "%s/counters", p->store);
	r = counters_load(path, &now);
	snprintf(path, sizeof(path), "%s/session-counters", p->store);
	if (r == 0)
		r = counters_load(path, &then);
	if (r == 0)
		r = idx_get_top_stats(store_idx(st), &top, &ntop);
	for (size_t i = 0; i < ntop && r == 0; i++) {
		struct rrow *w = row_of(p, top[i].name);

		if (!w) {
			r = -ENOMEM;
			break;
		}
		w->files += (int64_t)top[i].files;
		w->logical += (int64_t)top[i].logical_bytes;
		w->unique += (int64_t)top[i].unique_bytes;
	}
	for (size_t i = 0; i < now.n && r == 0; i++) {
		const struct counters_row *c = counters_find(&then, now.rows[i].name);
		struct rrow *w = row_of(p, now.rows[i].name);

		if (!w) {
			r = -ENOMEM;
			break;
		}
		for (int k = 0; k < CTR_COUNT; k++) {
			uint64_t was = c ? c->v[k] : 0;

			/* Counters only grow: a smaller value means they were reset. */
			w->reads[k] = now.rows[i].v[k] >= was ? now.rows[i].v[k] - was : 0;
		}
	}
	idx_top_stats_free(top, ntop);
	counters_release(&now);
	counters_release(&then);
	if (r < 0)
		return r;
	load_remote_stats(p);
	load_push(p);
	return 0;
}

static bool row_active(const struct rrow *w)
{
	for (int k = 0; k < CTR_COUNT; k++)
		if (w->reads[k])
			return true;
	return w->files || w->logical || w->unique;
}

static int row_cmp(const void *a, const void *b)
{
	return strcmp(((const struct rrow *)a)->name, ((const struct rrow *)b)->name);
}

static void totals(const struct rep *p, struct rrow *t)
{
	memset(t, 0, sizeof(*t));
	for (size_t i = 0; i < p->n; i++) {
		for (int k = 0; k < CTR_COUNT; k++)
			t->reads[k] += p->rows[i].reads[k];
		t->files += p->rows[i].files;
		t->logical += p->rows[i].logical;
		t->unique += p->rows[i].unique;
	}
}

static long long seconds(const struct rep *p)
{
	return (p->ended ? p->end : (long long)time(NULL)) - p->start;
}

/* "+1.2 MiB", "-300 B", "0 B" */
static const char *signed_size(int64_t v, char buf[40], size_t len)
{
	char b[24];

	format_size(v < 0 ? (uint64_t)-v : (uint64_t)v, b, sizeof(b));
	snprintf(buf, len, "%s%s", v > 0 ? "+" : v < 0 ? "-" : "", b);
	return buf;
}

static const char *push_state(const struct rep *p)
{
	if (*p->push_failed)
		return "failed";
	return p->have_remote && !p->mounted ? "done" : "none";
}

/* ---- text and Markdown: the same table, two dialects ---- */

static void print_table(FILE *f, const struct rep *p, bool md)
{
	const char *sep = md ? " | " : "  ";
	char b[6][40];
	struct rrow t;

	totals(p, &t);
	if (md)
		fputs("| directory | reads local | bytes local | reads remote | bytes remote | "
		      "failed | files | logical bytes | unique bytes |\n"
		      "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
		      f);
	else
		fprintf(f, "  %-16s%s%9s %10s %9s %10s %6s %7s %11s %11s\n", "directory", sep,
			"reads", "local", "remote", "fetched", "failed", "files", "logical",
			"unique");
	for (size_t i = 0; i <= p->n; i++) {
		const struct rrow *w = i < p->n ? &p->rows[i] : &t;
		const char *name = i < p->n ? (*w->name ? w->name : "(other)") : "total";

		if (i < p->n && !row_active(w))
			continue;
		format_size(w->reads[CTR_BYTES_LOCAL], b[0], sizeof(b[0]));
		format_size(w->reads[CTR_BYTES_FETCHED], b[1], sizeof(b[1]));
		signed_size(w->logical, b[2], sizeof(b[2]));
		signed_size(w->unique, b[3], sizeof(b[3]));
		if (md) {
			fputs(i < p->n ? "| `" : "| **", f);
			for (const char *c = name; *c; c++)
				fputc(*c == '|' || *c == '`' || *c == '\n' ? '_' : *c, f);
			fprintf(f,
				"%s | %" PRIu64 " | %s | %" PRIu64 " | %s | %" PRIu64 " | %+" PRId64
				" | %s | %s |\n",
				i < p->n ? "`" : "**", w->reads[CTR_READS_LOCAL], b[0],
				w->reads[CTR_READS_FETCHED], b[1], w->reads[CTR_READS_FAILED],
				w->files, b[2], b[3]);
		} else {
			fprintf(f,
				"  %-16s%s%9" PRIu64 " %10s %9" PRIu64 " %10s %6" PRIu64
				" %+7" PRId64 " %11s %11s\n",
				name, sep, w->reads[CTR_READS_LOCAL], b[0],
				w->reads[CTR_READS_FETCHED], b[1], w->reads[CTR_READS_FAILED],
				w->files, b[2], b[3]);
		}
	}
}

static void print_text(FILE *f, const struct rep *p, bool md)
{
	char b[3][32];
	const char *li = md ? "- " : "";

	if (md)
		fprintf(f, "### pkgcachefs: %s\n\n", p->store);
	else
		fprintf(f, "pkgcachefs report: store %s\n", p->store);
	fprintf(f, "%s%s for %lld s%s\n", li, p->mounted ? "mounted" : "this mount", seconds(p),
		p->mounted ? " so far (remote figures come at unmount)" : "");
	if (p->have_remote) {
		fprintf(f,
			"%sfrom the remote %s%s%s: %" PRIu64 " chunks, %s (%s on the wire), "
			"readers waited %.1f s, %" PRIu64 " failed fetches\n",
			li, md ? "`" : "", p->remote, md ? "`" : "", p->fetched_chunks,
			format_size(p->fetched_bytes, b[0], sizeof(b[0])),
			format_size(p->wire_bytes, b[1], sizeof(b[1])), (double)p->wait_ns / 1e9,
			p->fetch_failures);
		fprintf(f, "%spushed: %s sent", li, format_size(p->bytes_out, b[2], sizeof(b[2])));
		if (*p->push_failed)
			fprintf(f, "; the push at unmount FAILED: %s", p->push_failed);
		fputc('\n', f);
	} else if (!p->mounted) {
		fprintf(f, "%sno remote\n", li);
	}
	fputc('\n', f);
	print_table(f, p, md);
}

/* ---- JSON ---- */

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
		if (*c == '"' || *c == '\\')
			fprintf(f, "\\%c", *c);
		else if (*c < 0x20 || *c == 0x7f)
			fprintf(f, "\\u%04x", *c);
		else
			fputc(*c, f);
	}
	fputc('"', f);
}

static void json_row(FILE *f, const struct rrow *w)
{
	fprintf(f,
		"\"reads_local\": %" PRIu64 ", \"read_bytes_local\": %" PRIu64
		", \"reads_fetched\": %" PRIu64 ", \"read_bytes_fetched\": %" PRIu64
		", \"reads_failed\": %" PRIu64 ", \"files_delta\": %" PRId64
		", \"logical_bytes_delta\": %" PRId64 ", \"unique_bytes_delta\": %" PRId64,
		w->reads[CTR_READS_LOCAL], w->reads[CTR_BYTES_LOCAL], w->reads[CTR_READS_FETCHED],
		w->reads[CTR_BYTES_FETCHED], w->reads[CTR_READS_FAILED], w->files, w->logical,
		w->unique);
}

static void print_json(FILE *f, const struct rep *p)
{
	struct rrow t;
	bool first = true;

	totals(&*p, &t);
	fputs("{\"store\": ", f);
	json_str(f, p->store);
	fprintf(f, ", \"mounted\": %s, \"start\": %lld, \"end\": ", p->mounted ? "true" : "false",
		p->start);
	if (p->ended)
		fprintf(f, "%lld", p->end);
	else
		fputs("null", f);
	fprintf(f, ", \"seconds\": %lld, ", seconds(p));
	json_row(f, &t);
	fputs(", \"remote\": ", f);
	json_str(f, p->have_remote ? p->remote : "");
	fprintf(f,
		", \"fetched_chunks\": %" PRIu64 ", \"fetched_bytes\": %" PRIu64
		", \"fetch_wire_bytes\": %" PRIu64 ", \"fetch_failures\": %" PRIu64
		", \"fetch_wait_seconds\": %.3f, \"pushed_bytes\": %" PRIu64
		", \"requests\": %" PRIu64 ", \"request_failures\": %" PRIu64 ", \"push\": ",
		p->fetched_chunks, p->fetched_bytes, p->wire_bytes, p->fetch_failures,
		(double)p->wait_ns / 1e9, p->bytes_out, p->requests, p->request_failures);
	json_str(f, push_state(p));
	fputs(", \"push_error\": ", f);
	json_str(f, p->push_failed);
	fputs(", \"directories\": [", f);
	for (size_t i = 0; i < p->n; i++) {
		if (!row_active(&p->rows[i]))
			continue;
		fputs(first ? "{\"name\": " : ", {\"name\": ", f);
		first = false;
		json_str(f, p->rows[i].name);
		fputs(", ", f);
		json_row(f, &p->rows[i]);
		fputc('}', f);
	}
	fputs("]}\n", f);
}

/* ---- the command ---- */

static const char report_usage[] =
	"usage: pkgcachefs report [--store DIR] [--json | --markdown] [--output FILE]\n"
	"\n"
	"What the last mount of the store did (the current one while mounted): reads served\n"
	"locally and from the remote, bytes fetched and the seconds readers waited for them,\n"
	"files and bytes written new, what the unmount pushed; per top-level directory (pip, npm,\n"
	"...). Run it after `pkgcachefs umount` for the whole job.\n"
	"\n"
	"  --json          one JSON object (keys in pkgcachefs-report(1))\n"
	"  --markdown      a Markdown table, for $GITHUB_STEP_SUMMARY or a job artifact\n"
	"  --output FILE   append to FILE instead of writing to stdout\n";

int cli_report(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"store", required_argument, NULL, 's'}, {"json", no_argument, NULL, 'j'},
		{"markdown", no_argument, NULL, 'm'},    {"output", required_argument, NULL, 'o'},
		{"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0}};
	const char *output = NULL;
	char *defstore = NULL;
	struct rep p = {0};
	struct store *st;
	char path[PATH_MAX];
	pid_t owner = 0;
	int c, fd, r, fmt = 0;
	FILE *f = stdout;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			p.store = optarg;
			break;
		case 'j':
		case 'm':
			if (fmt && fmt != c) {
				fprintf(stderr,
					"pkgcachefs: report: --json or --markdown, not both\n");
				return 2;
			}
			fmt = c;
			break;
		case 'o':
			output = optarg;
			break;
		case 'h':
			fputs(report_usage, stdout);
			return 0;
		default:
			fputs(report_usage, stderr);
			return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "pkgcachefs: unexpected argument '%s'\n", argv[optind]);
		fputs(report_usage, stderr);
		return 2;
	}
	if (!p.store)
		p.store = defstore = store_default_dir();
	if (!p.store) {
		fprintf(stderr, "pkgcachefs: no store given and no default (pass --store)\n");
		return 2;
	}
	r = store_open(p.store, 0, &st, &owner);
	if (r < 0) {
		cli_store_error(p.store, r, owner);
		free(defstore);
		return 1;
	}
	snprintf(path, sizeof(path), "%s/lock", p.store);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		if (flock(fd, LOCK_SH | LOCK_NB) < 0 && errno == EWOULDBLOCK)
			p.mounted = true;
		close(fd);
	}
	r = collect(&p, st);
	store_close(st);
	if (r == -ENOENT) {
		fprintf(stderr,
			"pkgcachefs: report: no session recorded in %s: mount it with this "
			"pkgcachefs first\n",
			p.store);
		goto out;
	}
	if (r < 0) {
		fprintf(stderr, "pkgcachefs: report: reading %s: %s\n", p.store,
			r == -EBADMSG ? "STORE/session or a counters file is damaged"
				      : strerror(-r));
		goto out;
	}
	qsort(p.rows, p.n, sizeof(*p.rows), row_cmp);
	if (output) {
		f = fopen(output, "ae");
		if (!f) {
			fprintf(stderr, "pkgcachefs: report: cannot open %s: %s\n", output,
				strerror(errno));
			r = -errno;
			goto out;
		}
	}
	if (fmt == 'j')
		print_json(f, &p);
	else
		print_text(f, &p, fmt == 'm');
	if (output ? fclose(f) != 0 : fflush(f) != 0) {
		fprintf(stderr, "pkgcachefs: report: writing: %s\n", strerror(errno));
		r = -EIO;
	}
out:
	rep_release(&p);
	free(defstore);
	return r < 0 ? 1 : 0;
}
