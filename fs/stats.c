/* SPDX-License-Identifier: MIT */
/*
 * `pkgcachefs stats` in text, JSON and Prometheus form, and the daemon's stats thread. See
 * stats.h. The numbers come from the index (idx_get_stats, idx_get_top_stats: SQL stays in
 * index/) and from the read counters (counters.h); this file only gathers and prints them.
 *
 * A row per top-level directory joins the index's rows (what each root entry holds) with the
 * counters' rows (what was read under it): a directory deleted since still has its reads, and
 * reads of files reached no known way have a row named "" (text: "(other)").
 */
#include "stats.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pack.h"
#include "report.h"
#include "util.h"
#include "vfs.h"

int stats_collect(const char *dir, struct idx *x, bool mounted, const char *remote,
		  const struct counters *reads, struct stats_report *rep)
{
	char path[PATH_MAX];
	int r;

	memset(rep, 0, sizeof(*rep));
	rep->store = dir;
	rep->mounted = mounted;
	snprintf(rep->remote, sizeof(rep->remote), "%s", remote ? remote : "");
	r = idx_get_stats(x, &rep->s);
	if (r == 0)
		r = idx_get_top_stats(x, &rep->top, &rep->ntop);
	if (r < 0)
		return r;
	if (reads) {
		for (size_t i = 0; i < reads->n && r == 0; i++)
			r = counters_add(&rep->reads, reads->rows[i].name, reads->rows[i].v);
		return r;
	}
	snprintf(path, sizeof(path), "%s/counters", dir);
	r = counters_load(path, &rep->reads);
	if (r == -EBADMSG) {
		log_debug("%s is damaged: read counters left out", path);
		counters_release(&rep->reads);
		r = 0;
	}
	return r;
}

void stats_report_release(struct stats_report *rep)
{
	idx_top_stats_free(rep->top, rep->ntop);
	rep->top = NULL;
	rep->ntop = 0;
	counters_release(&rep->reads);
}

static uint64_t reclaimable(const struct stats_report *rep)
{
	return rep->s.dead_stored_bytes + rep->s.dead_chunks * PACK_ENTRY_OVERHEAD;
}

/* Dedup alone: logical bytes per unique byte, wherever the data lives and however compressed. */
static double dedup_ratio(const struct stats_report *rep)
{
	return rep->s.chunk_bytes ? (double)rep->s.logical_bytes / (double)rep->s.chunk_bytes : 1.0;
}

static uint64_t saved(const struct idx_top_stats *t)
{
	return t->logical_bytes > t->unique_bytes ? t->logical_bytes - t->unique_bytes : 0;
}

/* One row of the joined table: t and/or c may be NULL. */
struct row {
	const char *name;
	const struct idx_top_stats *t;
	const uint64_t *c;
};

static const uint64_t zero_counts[CTR_COUNT];

/* Calls fn for each row: the index's first (name order), then counters of names not there. */
static void for_each_row(const struct stats_report *rep,
			 void (*fn)(const struct row *r, void *data), void *data)
{
	for (size_t i = 0; i < rep->ntop; i++) {
		const struct counters_row *c = counters_find(&rep->reads, rep->top[i].name);
		struct row r = {rep->top[i].name, &rep->top[i], c ? c->v : zero_counts};

		fn(&r, data);
	}
	for (size_t i = 0; i < rep->reads.n; i++) {
		const struct counters_row *c = &rep->reads.rows[i];
		bool seen = false;
		struct row r = {c->name, NULL, c->v};

		for (size_t k = 0; k < rep->ntop && !seen; k++)
			seen = !strcmp(rep->top[k].name, c->name);
		if (!seen)
			fn(&r, data);
	}
}

static void total_reads(const struct stats_report *rep, uint64_t ret[CTR_COUNT])
{
	memset(ret, 0, sizeof(uint64_t) * CTR_COUNT);
	for (size_t i = 0; i < rep->reads.n; i++)
		for (int k = 0; k < CTR_COUNT; k++)
			ret[k] += rep->reads.rows[i].v[k];
}

/* ---- text ---- */

static void text_row(const struct row *r, void *data)
{
	FILE *f = data;
	char b1[32], b2[32], b3[32];
	const char *name = r->name[0] ? r->name : "(other)";

	if (r->t)
		fprintf(f, "  %-16s %9" PRIu64 " %11s %11s %11s", name, r->t->files,
			format_size(r->t->logical_bytes, b1, sizeof(b1)),
			format_size(r->t->unique_bytes, b2, sizeof(b2)),
			format_size(saved(r->t), b3, sizeof(b3)));
	else
		fprintf(f, "  %-16s %9s %11s %11s %11s", name, "-", "-", "-", "-");
	fprintf(f, " %9" PRIu64 " %9" PRIu64 " %7" PRIu64 "\n", r->c[CTR_READS_LOCAL],
		r->c[CTR_READS_FETCHED], r->c[CTR_READS_FAILED]);
}

/* A value of STORE/merge-stats (the daemon's live merges): 1, or 0 when absent. */
static int merge_stat(const char *store, const char *key, int64_t *ret)
{
	char path[PATH_MAX], line[256];
	size_t len = strlen(key);
	FILE *f;
	int found = 0;

	snprintf(path, sizeof(path), "%s/merge-stats", store);
	f = fopen(path, "re");
	while (f && !found && fgets(line, sizeof(line), f))
		if (!strncmp(line, key, len) && line[len] == '=')
			found = sscanf(line + len + 1, "%" SCNd64, ret) == 1;
	if (f)
		fclose(f);
	return found;
}

void stats_print_text(FILE *f, const struct stats_report *rep)
{
	const struct idx_stats *s = &rep->s;
	uint64_t tot[CTR_COUNT];
	char b1[32], b2[32], b3[32], b4[32];

	fprintf(f, "store:           %s%s\n", rep->store, rep->mounted ? " (mounted)" : "");
	fprintf(f, "files:           %" PRIu64 "\n", s->files);
	fprintf(f, "directories:     %" PRIu64 "\n", s->dirs);
	fprintf(f, "symlinks:        %" PRIu64 "\n", s->symlinks);
	fprintf(f, "logical bytes:   %s\n", format_size(s->logical_bytes, b1, sizeof(b1)));
	fprintf(f, "unique bytes:    %s (in %" PRIu64 " chunks)\n",
		format_size(s->chunk_bytes, b2, sizeof(b2)), s->chunks);
	fprintf(f, "stored bytes:    %s (in %" PRIu64 " packs)\n",
		format_size(s->pack_bytes, b3, sizeof(b3)), s->packs);
	fprintf(f, "dedup ratio:     %.2fx\n", dedup_ratio(rep));
	fprintf(f, "reclaimable:     %s (run pkgcachefs gc)\n",
		format_size(reclaimable(rep), b4, sizeof(b4)));
	total_reads(rep, tot);
	fprintf(f,
		"reads:           %" PRIu64 " local (%s), %" PRIu64
		" from the remote (%s), %" PRIu64 " failed\n",
		tot[CTR_READS_LOCAL], format_size(tot[CTR_BYTES_LOCAL], b1, sizeof(b1)),
		tot[CTR_READS_FETCHED], format_size(tot[CTR_BYTES_FETCHED], b2, sizeof(b2)),
		tot[CTR_READS_FAILED]);
	if (*rep->remote) {
		char path[PATH_MAX], line[256];
		FILE *rf;

		fprintf(f, "remote:          %s\n", rep->remote);
		fprintf(f, "only on remote:  %s (fetched when read)\n",
			format_size(s->remote_only_bytes, b1, sizeof(b1)));
		fprintf(f, "not pushed:      %s\n", format_size(s->unpushed_bytes, b2, sizeof(b2)));
		snprintf(path, sizeof(path), "%s/remote-stats", rep->store);
		rf = fopen(path, "re");
		while (rf && fgets(line, sizeof(line), rf)) {
			uint64_t val;

			if (sscanf(line, "fetched_bytes=%" SCNu64, &val) == 1)
				fprintf(f, "last session:    fetched %s",
					format_size(val, b3, sizeof(b3)));
			else if (sscanf(line, "bytes_out=%" SCNu64, &val) == 1)
				fprintf(f, ", sent %s\n", format_size(val, b3, sizeof(b3)));
		}
		if (rf)
			fclose(rf);
		{
			int64_t when = 0, cats = 0, applied = 0, bytes = 0, ns = 0, fails = 0;

			if (merge_stat(rep->store, "last_time", &when) && when > 0) {
				time_t t = (time_t)(when / 1000000000);
				char ts[64];

				merge_stat(rep->store, "last_catalogs", &cats);
				merge_stat(rep->store, "last_applied", &applied);
				merge_stat(rep->store, "last_bytes", &bytes);
				merge_stat(rep->store, "last_ns", &ns);
				strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", localtime(&t));
				fprintf(f,
					"last merge:      %s, %" PRId64 " catalogs (%s), %" PRId64
					" names applied, %.3f s\n",
					ts, cats, format_size((uint64_t)bytes, b3, sizeof(b3)),
					applied, (double)ns / 1e9);
			}
			if (merge_stat(rep->store, "merge_failures", &fails) && fails > 0)
				fprintf(f, "merge failures:  %" PRId64 " since the mount\n", fails);
		}
	}
	if (rep->ntop || rep->reads.n) {
		fprintf(f, "\nper top-level directory:         %11s %11s %9s %9s %7s\n", "stored",
			"", "reads", "reads", "reads");
		fprintf(f, "  %-16s %9s %11s %11s %11s %9s %9s %7s\n", "name", "files", "logical",
			"(unique)", "saved", "local", "remote", "failed");
		for_each_row(rep, text_row, f);
	}
}

/* ---- JSON ---- */

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
	fputc('"', f);
}

static void json_counts(FILE *f, const uint64_t *c)
{
	fprintf(f,
		"\"reads_local\": %" PRIu64 ", \"read_bytes_local\": %" PRIu64
		", \"reads_fetched\": %" PRIu64 ", \"read_bytes_fetched\": %" PRIu64
		", \"reads_failed\": %" PRIu64,
		c[CTR_READS_LOCAL], c[CTR_BYTES_LOCAL], c[CTR_READS_FETCHED], c[CTR_BYTES_FETCHED],
		c[CTR_READS_FAILED]);
}

struct json_ctx {
	FILE *f;
	bool first;
};

static void json_row(const struct row *r, void *data)
{
	struct json_ctx *j = data;
	static const struct idx_top_stats none;
	const struct idx_top_stats *t = r->t ? r->t : &none;

	fputs(j->first ? "{\"name\": " : ", {\"name\": ", j->f);
	j->first = false;
	json_str(j->f, r->name);
	fprintf(j->f,
		", \"files\": %" PRIu64 ", \"logical_bytes\": %" PRIu64
		", \"unique_bytes\": %" PRIu64 ", \"stored_bytes\": %" PRIu64
		", \"saved_bytes\": %" PRIu64 ", ",
		t->files, t->logical_bytes, t->unique_bytes, t->stored_bytes, saved(t));
	json_counts(j->f, r->c);
	fputc('}', j->f);
}

void stats_print_json(FILE *f, const struct stats_report *rep)
{
	const struct idx_stats *s = &rep->s;
	bool rem = *rep->remote;
	struct json_ctx j = {f, true};
	uint64_t tot[CTR_COUNT];

	fputs("{\"store\": ", f);
	json_str(f, rep->store);
	fprintf(f,
		", \"mounted\": %s, \"files\": %" PRIu64 ", \"directories\": %" PRIu64
		", \"symlinks\": %" PRIu64 ", \"other_inodes\": %" PRIu64
		", \"logical_bytes\": %" PRIu64 ", \"unique_bytes\": %" PRIu64
		", \"stored_bytes\": %" PRIu64 ", \"live_stored_bytes\": %" PRIu64
		", \"dedup_ratio\": %.3f, \"chunks\": %" PRIu64 ", \"dead_chunks\": %" PRIu64
		", \"packs\": %" PRIu64 ", \"reclaimable_bytes\": %" PRIu64 ", ",
		rep->mounted ? "true" : "false", s->files, s->dirs, s->symlinks, s->others,
		s->logical_bytes, s->chunk_bytes, s->pack_bytes, s->stored_bytes, dedup_ratio(rep),
		s->chunks, s->dead_chunks, s->packs, reclaimable(rep));
	total_reads(rep, tot);
	json_counts(f, tot);
	fputs(", \"top_level\": [", f);
	for_each_row(rep, json_row, &j);
	/* The keys of the first version keep their order: scripts grep for the last one. */
	fputs("], \"remote\": ", f);
	json_str(f, rep->remote);
	fprintf(f, ", \"remote_only_bytes\": %" PRIu64 ", \"unpushed_bytes\": %" PRIu64 "}\n",
		rem ? s->remote_only_bytes : 0, rem ? s->unpushed_bytes : 0);
}

/* ---- Prometheus ---- */

/* A label value: backslash, double quote and newline escaped. */
static void prom_label(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			fprintf(f, "\\%c", *s);
		else if (*s == '\n')
			fputs("\\n", f);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}

static void prom_head(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP pkgcachefs_%s %s\n# TYPE pkgcachefs_%s %s\n", name, help, name, type);
}

static void prom_store(FILE *f, const struct stats_report *rep, const char *name, uint64_t v)
{
	fprintf(f, "pkgcachefs_%s{store=", name);
	prom_label(f, rep->store);
	fprintf(f, "} %" PRIu64 "\n", v);
}

/* One metric for each row, its value picked by which. */
enum prom_val {
	PV_FILES,
	PV_LOGICAL,
	PV_UNIQUE,
	PV_STORED,
	PV_SAVED,
	PV_READS_LOCAL,
	PV_READS_REMOTE,
	PV_BYTES_LOCAL,
	PV_BYTES_REMOTE,
	PV_FAILED,
};

struct prom_ctx {
	FILE *f;
	const struct stats_report *rep;
	const char *metric;
	enum prom_val which;
};

static void prom_row(const struct row *r, void *data)
{
	struct prom_ctx *p = data;
	const char *source = NULL;
	uint64_t v;

	switch (p->which) {
	case PV_FILES:
	case PV_LOGICAL:
	case PV_UNIQUE:
	case PV_STORED:
	case PV_SAVED:
		if (!r->t)
			return; /* a directory that is gone: only its counters remain */
		v = p->which == PV_FILES     ? r->t->files
		    : p->which == PV_LOGICAL ? r->t->logical_bytes
		    : p->which == PV_UNIQUE  ? r->t->unique_bytes
		    : p->which == PV_STORED  ? r->t->stored_bytes
					     : saved(r->t);
		break;
	case PV_READS_LOCAL:
		source = "local";
		v = r->c[CTR_READS_LOCAL];
		break;
	case PV_READS_REMOTE:
		source = "remote";
		v = r->c[CTR_READS_FETCHED];
		break;
	case PV_BYTES_LOCAL:
		source = "local";
		v = r->c[CTR_BYTES_LOCAL];
		break;
	case PV_BYTES_REMOTE:
		source = "remote";
		v = r->c[CTR_BYTES_FETCHED];
		break;
	default:
		v = r->c[CTR_READS_FAILED];
		break;
	}
	fprintf(p->f, "pkgcachefs_%s{store=", p->metric);
	prom_label(p->f, p->rep->store);
	fputs(",dir=", p->f);
	prom_label(p->f, r->name);
	if (source)
		fprintf(p->f, ",source=\"%s\"", source);
	fprintf(p->f, "} %" PRIu64 "\n", v);
}

void stats_print_prometheus(FILE *f, const struct stats_report *rep)
{
	static const struct {
		const char *name, *type, *help;
		enum prom_val a, b; /* two series (source local, remote) or one (b == a) */
	} per_dir[] = {
		{"dir_files", "gauge", "Regular files under a top-level directory.", PV_FILES,
		 PV_FILES},
		{"dir_logical_bytes", "gauge", "Sum of the sizes of those files.", PV_LOGICAL,
		 PV_LOGICAL},
		{"dir_unique_bytes", "gauge",
		 "Bytes of the distinct chunks those files use (what they take stored once).",
		 PV_UNIQUE, PV_UNIQUE},
		{"dir_stored_bytes", "gauge",
		 "Local stored (compressed) bytes of those chunks; data only on the remote is not "
		 "counted.",
		 PV_STORED, PV_STORED},
		{"dir_saved_bytes", "gauge", "Logical minus unique bytes: what dedup saves there.",
		 PV_SAVED, PV_SAVED},
		{"reads_total", "counter",
		 "Read requests the daemon served, by where the data came from.", PV_READS_LOCAL,
		 PV_READS_REMOTE},
		{"read_bytes_total", "counter", "Bytes of those reads.", PV_BYTES_LOCAL,
		 PV_BYTES_REMOTE},
		{"read_failures_total", "counter", "Read requests that returned an error.",
		 PV_FAILED, PV_FAILED},
	};
	const struct idx_stats *s = &rep->s;

	prom_head(f, "mounted", "gauge", "1 while a daemon serves the store.");
	prom_store(f, rep, "mounted", rep->mounted);
	prom_head(f, "files", "gauge", "Regular files in the store.");
	prom_store(f, rep, "files", s->files);
	prom_head(f, "logical_bytes", "gauge", "Sum of the sizes of all files.");
	prom_store(f, rep, "logical_bytes", s->logical_bytes);
	prom_head(f, "unique_bytes", "gauge", "Bytes of the distinct chunks in use.");
	prom_store(f, rep, "unique_bytes", s->chunk_bytes);
	prom_head(f, "stored_bytes", "gauge", "Bytes of the local pack files.");
	prom_store(f, rep, "stored_bytes", s->pack_bytes);
	prom_head(f, "reclaimable_bytes", "gauge", "Bytes gc could reclaim.");
	prom_store(f, rep, "reclaimable_bytes", reclaimable(rep));
	prom_head(f, "chunks", "gauge", "Distinct chunks in use.");
	prom_store(f, rep, "chunks", s->chunks);
	prom_head(f, "packs", "gauge", "Local pack files.");
	prom_store(f, rep, "packs", s->packs);
	if (*rep->remote) {
		prom_head(f, "remote_only_bytes", "gauge",
			  "Unique bytes only on the remote (fetched when read).");
		prom_store(f, rep, "remote_only_bytes", s->remote_only_bytes);
		prom_head(f, "unpushed_bytes", "gauge", "Unique bytes not on the remote yet.");
		prom_store(f, rep, "unpushed_bytes", s->unpushed_bytes);
	}
	{
		static const struct {
			const char *key, *name, *help;
		} m[] = {
			{"merges", "merges_total", "Live merges of what other hosts pushed."},
			{"names_applied", "merge_names_applied_total",
			 "Remote entries those merges applied."},
			{"merge_failures", "merge_failures_total",
			 "Live merges that failed (the remote down, a bad catalog)."},
		};

		for (size_t i = 0; i < ARRAY_SIZE(m); i++) {
			int64_t val = 0;

			merge_stat(rep->store, m[i].key, &val);
			prom_head(f, m[i].name, "counter", m[i].help);
			prom_store(f, rep, m[i].name, (uint64_t)val);
		}
	}
	for (size_t i = 0; i < ARRAY_SIZE(per_dir); i++) {
		struct prom_ctx p = {f, rep, per_dir[i].name, per_dir[i].a};

		prom_head(f, per_dir[i].name, per_dir[i].type, per_dir[i].help);
		for_each_row(rep, prom_row, &p);
		if (per_dir[i].b != per_dir[i].a) {
			p.which = per_dir[i].b;
			for_each_row(rep, prom_row, &p);
		}
	}
}

/* ---- the daemon's stats thread ---- */

struct stats_daemon {
	struct vfs *v;
	const char *store, *remote, *metrics_file;
	unsigned metrics_s, period_ms;
	struct counters base; /* what STORE/counters held at mount */
	uint64_t last_sum;    /* of the counters last written */
	struct idx *x;        /* a read connection of the thread's own, for the metrics file */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop; /* lock */
	pthread_t th;
};

static struct stats_daemon *the_sd;

/* base + this session, into ret (released by the caller). */
static int snapshot(struct stats_daemon *sd, struct counters *ret, uint64_t *ret_sum)
{
	int r = 0;

	*ret = (struct counters)COUNTERS_INIT;
	for (size_t i = 0; i < sd->base.n && r == 0; i++)
		r = counters_add(ret, sd->base.rows[i].name, sd->base.rows[i].v);
	if (r == 0)
		r = vfs_add_read_counters(sd->v, ret);
	*ret_sum = 0;
	for (size_t i = 0; i < ret->n; i++)
		for (int k = 0; k < CTR_COUNT; k++)
			*ret_sum += ret->rows[i].v[k];
	return r;
}

static void save_counters(struct stats_daemon *sd, const struct counters *c, uint64_t sum)
{
	char path[PATH_MAX];
	int r;

	if (sum == sd->last_sum)
		return;
	snprintf(path, sizeof(path), "%s/counters", sd->store);
	r = counters_save(path, c);
	if (r < 0)
		log_warn("cannot write %s: %s", path, strerror(-r));
	else
		sd->last_sum = sum;
}

static void write_metrics(struct stats_daemon *sd, const struct counters *c, bool mounted)
{
	struct stats_report rep;
	char path[PATH_MAX], tmp[PATH_MAX + 8];
	FILE *f;
	int r;

	if (!sd->x) {
		snprintf(path, sizeof(path), "%s/index.db", sd->store);
		r = idx_open(path, false, &sd->x);
		if (r < 0) {
			log_warn("metrics: cannot read the index %s: %s", path, strerror(-r));
			return;
		}
	}
	r = stats_collect(sd->store, sd->x, mounted, sd->remote, c, &rep);
	if (r < 0) {
		log_warn("metrics: reading the index: %s", strerror(-r));
		stats_report_release(&rep);
		return;
	}
	snprintf(tmp, sizeof(tmp), "%s.tmp", sd->metrics_file);
	f = fopen(tmp, "we");
	if (!f) {
		log_warn("metrics: cannot write %s: %s", tmp, strerror(errno));
		stats_report_release(&rep);
		return;
	}
	stats_print_prometheus(f, &rep);
	stats_report_release(&rep);
	if (fclose(f) != 0 || rename(tmp, sd->metrics_file) < 0) {
		log_warn("metrics: cannot write %s: %s", sd->metrics_file, strerror(errno));
		unlink(tmp);
	}
}

static void *stats_thread(void *arg)
{
	struct stats_daemon *sd = arg;
	int64_t next_metrics = mono_ns();

	pthread_mutex_lock(&sd->lock);
	while (!sd->stop) {
		struct counters c;
		struct timespec ts;
		uint64_t sum;

		pthread_mutex_unlock(&sd->lock);
		if (snapshot(sd, &c, &sum) == 0) {
			save_counters(sd, &c, sum);
			if (sd->metrics_file && mono_ns() >= next_metrics) {
				write_metrics(sd, &c, true);
				next_metrics = mono_ns() + (int64_t)sd->metrics_s * 1000000000;
			}
		}
		counters_release(&c);
		pthread_mutex_lock(&sd->lock);
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += sd->period_ms / 1000;
		ts.tv_nsec += (long)(sd->period_ms % 1000) * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		if (!sd->stop)
			pthread_cond_timedwait(&sd->cond, &sd->lock, &ts);
	}
	pthread_mutex_unlock(&sd->lock);
	return NULL;
}

int stats_daemon_start(struct vfs *v, const char *store, const char *remote,
		       const char *metrics_file, unsigned metrics_s, unsigned period_ms)
{
	struct stats_daemon *sd = calloc(1, sizeof(*sd));
	char path[PATH_MAX];
	int r;

	if (!sd)
		return -ENOMEM;
	sd->v = v;
	sd->store = store;
	sd->remote = remote;
	sd->metrics_file = metrics_file && *metrics_file ? metrics_file : NULL;
	sd->metrics_s = metrics_s ? metrics_s : 15;
	sd->period_ms = MAX(period_ms, 250u);
	snprintf(path, sizeof(path), "%s/counters", store);
	r = counters_load(path, &sd->base);
	if (r < 0) {
		/* Counters are no reason to refuse a mount: start them again. */
		log_warn("%s: %s; the read counters start from zero", path,
			 r == -EBADMSG ? "damaged" : strerror(-r));
		counters_release(&sd->base);
	}
	/* Where this session starts, for `pkgcachefs report` (the thread's index connection). */
	snprintf(path, sizeof(path), "%s/index.db", store);
	r = idx_open(path, false, &sd->x);
	if (r == 0)
		r = report_session_begin(store, sd->x, &sd->base);
	if (r < 0)
		log_warn("%s: cannot record the session's start (%s): no pkgcachefs report for it",
			 store, strerror(-r));
	pthread_mutex_init(&sd->lock, NULL);
	pthread_cond_init(&sd->cond, NULL);
	r = -pthread_create(&sd->th, NULL, stats_thread, sd);
	if (r < 0) {
		idx_close(sd->x);
		counters_release(&sd->base);
		free(sd);
		return r;
	}
	the_sd = sd;
	return 0;
}

void stats_daemon_stop(void)
{
	struct stats_daemon *sd = the_sd;
	struct counters c;
	uint64_t sum;

	if (!sd)
		return;
	pthread_mutex_lock(&sd->lock);
	sd->stop = true;
	pthread_cond_signal(&sd->cond);
	pthread_mutex_unlock(&sd->lock);
	pthread_join(sd->th, NULL);
	the_sd = NULL;
	if (snapshot(sd, &c, &sum) == 0) {
		save_counters(sd, &c, sum);
		if (sd->metrics_file)
			write_metrics(sd, &c, false);
	}
	counters_release(&c);
	report_session_end(sd->store, sd->v);
	idx_close(sd->x);
	counters_release(&sd->base);
	pthread_mutex_destroy(&sd->lock);
	pthread_cond_destroy(&sd->cond);
	free(sd);
}
