/* SPDX-License-Identifier: MIT */
/*
 * fsck and gc. See maint.h.
 *
 * Both reach the index only through its fsck and gc operations (idx.h, index/idx_check.c), in
 * one transaction each: fsck in a read transaction (a consistent snapshot even while a daemon
 * writes), gc and fsck --repair in a write transaction under the store lock. gc deletes a pack
 * file only after the transaction that stops referring to it is committed and synced, so a crash
 * at any point leaves either the old pack or the new one referenced, never neither.
 */
#include "maint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "idx.h"
#include "util.h"

bool fsck_clean(const struct fsck_report *r)
{
	return r->unrepaired == 0;
}

struct fsck_ctx {
	struct store *st;
	struct idx *x;
	FILE *out;
	bool repair;
	struct fsck_report *rep;
	uint8_t *buf;
	uint64_t *bad; /* ids of damaged chunks */
	size_t nbad;
	bool crashed; /* the store was not shut down cleanly: leftovers are expected */
	maint_progress_fn progress;
	void *progress_data;
	uint64_t total_bytes; /* of live chunks, for progress */
};

static int check_chunk(void *data, const struct idx_chunk_row *row)
{
	struct fsck_ctx *c = data;
	chunk_digest got;
	int r;

	c->rep->chunks++;
	if (row->malformed) {
		fprintf(c->out, "chunk %" PRIu64 ": malformed index row\n", row->id);
		c->rep->bad_chunks++;
		c->rep->unrepaired++;
		return 0;
	}
	r = store_read_chunk(c->st, row->pack, &row->loc, &row->key, c->buf, row->raw_len);
	if (r == 0) {
		hash_digest(c->buf, row->raw_len, &got);
		if (!hash_digest_equal(&got, &row->digest))
			r = -EIO;
	}
	if (r < 0) {
		char hex[2 * HASH_KEY_SIZE + 1];

		fprintf(c->out, "chunk %" PRIu64 " (%s) in pack %" PRIu64 " at %" PRIu64 ": %s\n",
			row->id, hash_hex(row->key.b, HASH_KEY_SIZE, hex), row->pack,
			row->loc.offset, r == -EIO ? "damaged or missing" : strerror(-r));
		c->rep->bad_chunks++;
		c->rep->unrepaired++;
		if (c->nbad % 64 == 0) {
			uint64_t *nb = realloc(c->bad, (c->nbad + 64) * sizeof(*nb));

			if (!nb)
				return -ENOMEM;
			c->bad = nb;
		}
		c->bad[c->nbad++] = row->id;
		return 0;
	}
	c->rep->bytes_checked += row->raw_len;
	if (c->progress)
		c->progress(c->progress_data, c->rep->bytes_checked, c->total_bytes);
	return 0;
}

static void print_line(void *data, const char *line)
{
	struct fsck_ctx *c = data;

	fprintf(c->out, "%s\n", line);
}

/*
 * Run one check of the index: print what breaks it, repair it when asked and the check can be.
 * *counter gets the count.
 */
static int check(struct fsck_ctx *c, enum idx_check what, uint64_t *counter)
{
	uint64_t n = 0;
	int r = idx_check(c->x, what, c->repair, print_line, c, &n);

	if (r < 0)
		return r;
	*counter += n;
	if (c->repair && idx_check_repairable(what))
		c->rep->repaired += n;
	else
		c->rep->unrepaired += n;
	return 0;
}

static int check_extents_of(void *data, const struct idx_file_extents *f)
{
	struct fsck_ctx *c = data;

	c->rep->inodes++;
	/* Extents are contiguous from 0 and end at the size, or there are none (all zeros). */
	if (f->count > 0 && (f->covered != f->end || f->end != f->size)) {
		fprintf(c->out,
			"inode %" PRIu64 ": extents cover %" PRIu64 " of %" PRIu64 " bytes\n",
			f->ino, f->covered, f->size);
		c->rep->bad_extents++;
		c->rep->unrepaired++;
	}
	return 0;
}

/* Pack files that the index does not know. */
static int check_leaked_packs(struct fsck_ctx *c)
{
	int fd = dup(store_packs_fd(c->st));
	DIR *d;
	struct dirent *de;
	int r = 0;

	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	rewinddir(d);
	while ((de = readdir(d))) {
		unsigned long long id;
		char extra;

		if (de->d_name[0] == '.')
			continue;
		if (sscanf(de->d_name, "%16llx.pac%c", &id, &extra) != 2 || extra != 'k') {
			if (c->out)
				fprintf(c->out, "packs/%s: not a pack name (left alone)\n",
					de->d_name);
			continue;
		}
		r = idx_pack_exists(c->x, id);
		if (r < 0)
			break;
		if (r == 1) {
			r = 0;
			continue;
		}
		r = 0;
		if (c->out)
			fprintf(c->out, "packs/%s: not in the index (left by a crash)%s\n",
				de->d_name,
				c->repair    ? ": removed"
				: c->crashed ? ": the next mount or gc removes it"
					     : "");
		c->rep->leaked_packs++;
		if (c->repair && unlinkat(store_packs_fd(c->st), de->d_name, 0) == 0)
			c->rep->repaired++;
		else if (!c->crashed)
			c->rep->unrepaired++;
	}
	closedir(d);
	return r;
}

static int check_pack_present(void *data, const struct idx_pack_usage *p)
{
	struct fsck_ctx *c = data;
	char name[32];
	struct stat stt;

	store_pack_name(p->id, name, sizeof(name));
	if (fstatat(store_packs_fd(c->st), name, &stt, 0) < 0) {
		fprintf(c->out, "pack %s is missing\n", name);
		c->rep->missing_packs++;
		c->rep->unrepaired++;
	}
	return 0;
}

struct damaged {
	struct fsck_ctx *c;
	uint64_t chunk;
};

static int report_damaged_file(void *data, uint64_t ino)
{
	struct damaged *d = data;
	char path[IDX_PATH_MAX + 1];

	if (idx_path(d->c->x, ino, path, sizeof(path)) < 0)
		snprintf(path, sizeof(path), "(no name left)");
	fprintf(d->c->out,
		"file /%s (inode %" PRIu64 ") uses damaged chunk %" PRIu64
		": reads of it fail with EIO; delete it and let the package manager fetch it "
		"again\n",
		path, ino, d->chunk);
	return 0;
}

/* Say which files read damaged data: reads of them fail with EIO. */
static void report_damaged_files(struct fsck_ctx *c)
{
	for (size_t i = 0; i < c->nbad; i++) {
		struct damaged d = {c, c->bad[i]};

		idx_each_file_using_chunk(c->x, c->bad[i], report_damaged_file, &d);
	}
}

int maint_remove_leaked_packs(struct store *st)
{
	struct fsck_report rep = {0};
	struct fsck_ctx c = {.st = st, .x = store_idx(st), .repair = true, .rep = &rep};
	int r = check_leaked_packs(&c);

	return r < 0 ? r : (int)rep.repaired;
}

/*
 * More references than uses are the pins of files being written: normal while mounted, and left
 * by a crash otherwise, which the next mount (or gc) recounts. Only after a clean shutdown, or
 * when repairing, are they a fault.
 */
static int check_pins(struct fsck_ctx *c, bool live)
{
	uint64_t pins = 0;
	int r;

	if (!(live || c->crashed) || c->repair)
		return check(c, IDX_CHECK_REFS_HIGH, &c->rep->bad_refs);
	r = idx_check(c->x, IDX_CHECK_REFS_HIGH, false, NULL, NULL, &pins);
	if (r < 0)
		return r;
	c->rep->pinned = pins;
	if (pins)
		fprintf(c->out,
			"%" PRIu64 " chunks pinned by files being written%s: the next mount or gc "
			"recounts them\n",
			pins, live ? "" : " when the daemon stopped");
	return 0;
}

/* The checks of the index alone, in order; orphans first, since removing them fixes others. */
static int check_index(struct fsck_ctx *c, bool live)
{
	struct fsck_report *rep = c->rep;
	int r;

	if (c->repair && !live) {
		r = check(c, IDX_CHECK_ORPHANS, &rep->orphans);
		if (r < 0)
			return r;
		if (rep->orphans) {
			r = idx_delete_orphans(c->x);
			if (r < 0)
				return r;
			rep->unrepaired -= rep->orphans;
			rep->repaired += rep->orphans;
		}
	}
	if ((r = check(c, IDX_CHECK_DANGLING_DENTRIES, &rep->bad_dentries)) < 0 ||
	    (r = check(c, IDX_CHECK_FILE_NLINK, &rep->bad_nlinks)) < 0 ||
	    (r = check(c, IDX_CHECK_DIR_NLINK, &rep->bad_nlinks)) < 0 ||
	    (r = check(c, IDX_CHECK_DANGLING_EXTENTS, &rep->dangling_extents)) < 0 ||
	    /* Fewer references than uses would let gc drop live data: always damage. */
	    (r = check(c, IDX_CHECK_REFS_LOW, &rep->bad_refs)) < 0 || (r = check_pins(c, live)) < 0)
		return r;
	return idx_each_file_extents(c->x, check_extents_of, c);
}

int maint_fsck(struct store *st, bool repair, bool live, FILE *out, struct fsck_report *ret,
	       maint_progress_fn progress, void *progress_data)
{
	struct fsck_ctx c = {.st = st,
			     .x = store_idx(st),
			     .out = out,
			     .repair = repair,
			     .rep = ret,
			     .progress = progress,
			     .progress_data = progress_data};
	char clean[8] = "";
	int r;

	memset(ret, 0, sizeof(*ret));
	c.crashed = idx_meta_get(c.x, "clean_shutdown", clean, sizeof(clean)) <= 0 ||
		    strcmp(clean, "1") != 0;
	c.buf = malloc(PACK_MAX_CHUNK);
	if (!c.buf)
		return -ENOMEM;
	r = idx_maint_begin(c.x, repair);
	if (r < 0)
		goto out_free;
	r = check_index(&c, live);
	if (r == 0)
		r = idx_each_pack(c.x, false, check_pack_present, &c);
	if (r == 0 && progress && idx_local_live_bytes(c.x, &c.total_bytes, NULL) < 0)
		c.total_bytes = 0;
	if (r == 0)
		r = check(&c, IDX_CHECK_UNSTORED_CHUNKS, &ret->bad_chunks);
	if (r == 0)
		r = idx_each_local_chunk(c.x, 0, check_chunk, &c);
	if (r < 0)
		goto out_rollback;
	if (c.nbad)
		report_damaged_files(&c);
	if (!live) {
		r = check_leaked_packs(&c);
		if (r < 0)
			goto out_rollback;
	}
	r = idx_maint_end(c.x, true);
	goto out_free;
out_rollback:
	idx_maint_end(c.x, false);
out_free:
	free(c.buf);
	free(c.bad);
	return r;
}

/* ---- gc ---- */

struct packs {
	struct idx_pack_usage *v;
	size_t n, cap;
};

static int collect_pack(void *data, const struct idx_pack_usage *p)
{
	struct packs *ps = data;

	if (ps->n == ps->cap) {
		size_t ncap = ps->cap ? ps->cap * 2 : 64;
		struct idx_pack_usage *nv = realloc(ps->v, ncap * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		ps->v = nv;
		ps->cap = ncap;
	}
	ps->v[ps->n++] = *p;
	return 0;
}

struct evict_ctx {
	struct idx *x;
	uint64_t max_size, used;
	const struct gc_hooks *h;
	struct gc_report *rep;
};

static int evict_local_copy(void *data, uint64_t ino, uint64_t size)
{
	struct evict_ctx *e = data;
	uint64_t freed = 0;
	int r;

	if (e->used <= e->max_size)
		return 1;
	if (e->h && e->h->skip && e->h->skip(e->h->data, ino))
		return 0;
	if (idx_local_copy_bytes(e->x, ino, &freed) < 0 || !freed)
		return 0;
	r = idx_drop_local_copies(e->x, ino);
	if (r < 0)
		return r;
	e->rep->evicted_files++;
	e->rep->evicted_bytes += size;
	e->used -= MIN(freed, e->used);
	return 0;
}

/*
 * With a remote, the local store is a cache of it: drop the local copies of the least recently
 * used files' chunks that are safely on the remote (in a pack gc has not condemned), until live
 * local data fits max_size. Names stay; the data is fetched again when read. Data not yet pushed
 * is never dropped.
 */
static int evict_local_copies(struct store *st, uint64_t max_size, const struct gc_hooks *h,
			      uint64_t used, struct gc_report *rep)
{
	struct evict_ctx e = {store_idx(st), max_size, used, h, rep};

	return idx_each_file_lru(e.x, evict_local_copy, &e);
}

/* Delete one file's name (and the file with its last name); *used drops by what that freed. */
static int evict_file(struct idx *x, const struct idx_lru_file *f, const struct gc_hooks *h,
		      uint64_t *used, struct gc_report *rep)
{
	struct idx_inode in;
	uint64_t freed = 0;
	int r = idx_get_inode(x, f->ino, &in);

	if (r != 1)
		return r;
	if (in.nlink <= 1 && idx_bytes_freed_by(x, f->ino, &freed) < 0)
		freed = 0;
	if (h && h->evicted)
		h->evicted(h->data, f->parent, f->name);
	r = idx_del_dentry(x, f->parent, f->name);
	in.nlink = in.nlink ? in.nlink - 1 : 0;
	if (r == 0)
		r = idx_put_inode(x, &in);
	if (r == 0 && in.nlink == 0) {
		r = idx_delete_inode(x, f->ino);
		rep->evicted_files++;
		rep->evicted_bytes += in.size;
		*used -= MIN(freed, *used);
	}
	return r;
}

/* Delete the least recently used files, one at a time, until live data fits max_size. */
static int evict(struct store *st, uint64_t max_size, const struct gc_hooks *h,
		 struct gc_report *rep)
{
	struct idx *x = store_idx(st);
	struct idx_lru_file v[64];
	uint64_t used = 0;
	unsigned skipped = 0;
	int r;

	r = idx_local_live_bytes(x, NULL, &used);
	if (r < 0)
		return r;
	if (h && h->remote_backed)
		return evict_local_copies(st, max_size, h, used, rep);
	while (used > max_size) {
		size_t n = 0;

		r = idx_lru_files(x, skipped, v, ARRAY_SIZE(v), &n);
		if (r < 0 || n == 0)
			return r;
		for (size_t i = 0; i < n; i++) {
			if (r < 0 || used <= max_size) {
				free(v[i].name); /* done: only the rest of the batch to free */
				continue;
			}
			if (h && h->skip && h->skip(h->data, v[i].ino))
				skipped++; /* it stays first in line: the next batch starts after it
					    */
			else
				r = evict_file(x, &v[i], h, &used, rep);
			free(v[i].name);
		}
		if (r < 0)
			return r;
	}
	return 0;
}

struct rewrite_ctx {
	struct store *st;
	uint8_t *buf;
};

static int rewrite_chunk(void *data, const struct idx_chunk_row *c)
{
	struct rewrite_ctx *w = data;
	struct pack_loc nloc;
	uint64_t npack;
	int r;

	if (c->malformed)
		return -EUCLEAN;
	r = store_read_chunk(w->st, c->pack, &c->loc, &c->key, w->buf, c->raw_len);
	if (r < 0)
		return r;
	r = store_append_chunk(w->st, &c->key, &c->digest, w->buf, c->raw_len, &npack, &nloc);
	if (r < 0)
		return r;
	return idx_move_chunk(store_idx(w->st), c->id, npack, &nloc);
}

/*
 * Make the last commit durable before files it stopped referring to are deleted. The commit is
 * in the WAL (synchronous=NORMAL does not sync it): sync the WAL itself. A checkpoint is not
 * enough: with a reader holding an older snapshot (a push, a stats command) it stops short,
 * says so only in a result row, and leaves the WAL unsynced, and a power loss would then bring
 * back an index that names the deleted packs.
 */
static int make_durable(struct store *st)
{
	const char *wal = idx_wal_path(store_idx(st));
	int fd = open(wal, O_RDONLY | O_CLOEXEC), r = 0;

	if (fd < 0)
		return errno == ENOENT ? 0 : -errno; /* no WAL: the commit went to the file */
	if (fdatasync(fd) < 0)
		r = -errno;
	close(fd);
	return r;
}

static void unlink_pack(struct store *st, uint64_t id)
{
	char name[32];

	store_pack_name(id, name, sizeof(name));
	unlinkat(store_packs_fd(st), name, 0);
}

/* Move a pack's live chunks to the active pack, in a transaction of its own, then delete it. */
static int rewrite_pack(struct store *st, const struct idx_pack_usage *p, uint8_t *buf)
{
	struct idx *x = store_idx(st);
	struct rewrite_ctx w = {st, buf};
	int r;

	r = idx_maint_begin(x, true);
	if (r < 0)
		return r;
	r = idx_each_local_chunk(x, p->id, rewrite_chunk, &w);
	if (r == 0)
		r = idx_delete_pack(x, p->id);
	/* The copies must be on disk before the index points at them. */
	if (r == 0)
		r = store_sync_packs(st);
	if (r == 0)
		r = idx_maint_end(x, true);
	if (r < 0) {
		idx_maint_end(x, false);
		return r;
	}
	r = make_durable(st);
	store_drop_pack_fds(st);
	if (r == 0)
		unlink_pack(st, p->id);
	return r;
}

/*
 * Phase 1: evict, drop dead chunks, forget packs with nothing live, in one transaction; then,
 * once that is durable, delete their files. No space needed. ps gets every pack with its usage.
 */
static int gc_drop(struct store *st, uint64_t max_size, const struct gc_hooks *hooks,
		   struct packs *ps, struct gc_report *ret)
{
	struct idx *x = store_idx(st);
	int r = idx_maint_begin(x, true);

	if (r < 0)
		return r;
	if (!(hooks && hooks->live)) {
		r = idx_delete_orphans(x);
		if (r >= 0)
			r = idx_recount_refs(x);
	}
	if (r >= 0 && max_size)
		r = evict(st, max_size, hooks, ret);
	if (r >= 0)
		r = idx_delete_dead_chunks(x, &ret->chunks_dropped);
	if (r >= 0)
		r = idx_each_pack(x, true, collect_pack, ps);
	for (size_t i = 0; r >= 0 && i < ps->n; i++) {
		struct idx_pack_usage *p = &ps->v[i];
		struct stat stt;
		char name[32];

		store_pack_name(p->id, name, sizeof(name));
		if (fstatat(store_packs_fd(st), name, &stt, 0) == 0)
			p->size = (uint64_t)stt.st_size;
		ret->bytes_before += p->size;
		if (p->live == 0 && p->id != store_active_pack(st))
			r = idx_delete_pack(x, p->id);
	}
	if (r >= 0)
		r = idx_maint_end(x, true);
	if (r < 0) {
		idx_maint_end(x, false);
		return r;
	}
	r = make_durable(st);
	if (r < 0)
		return r;
	store_drop_pack_fds(st);
	for (size_t i = 0; i < ps->n; i++) {
		if (ps->v[i].live == 0 && ps->v[i].id != store_active_pack(st)) {
			unlink_pack(st, ps->v[i].id);
			ret->packs_deleted++;
		}
	}
	return 0;
}

static void gc_progress(FILE *progress, uint64_t done, uint64_t todo, int64_t start)
{
	double secs = (double)(mono_ns() - start) / 1e9;
	double rate = secs > 0 ? (double)done / secs : 0;
	char b1[32], b2[32], b3[32];

	fprintf(progress, "\r\033[Kgc: rewriting packs: %s of %s live (%.0f%%), %s/s",
		format_size(done, b1, sizeof(b1)), format_size(MAX(todo, done), b2, sizeof(b2)),
		100.0 * (double)done / (double)MAX(MAX(todo, done), 1),
		format_size((uint64_t)rate, b3, sizeof(b3)));
	if (rate > 0 && todo > done)
		fprintf(progress, ", %.0f s left", (double)(todo - done) / rate);
	fflush(progress);
}

/* Whether gc rewrites pack p: mostly dead, or a tenth dead while the store is over max_size. */
static bool worth_rewriting(struct store *st, const struct idx_pack_usage *p, uint64_t max_size,
			    uint64_t total)
{
	bool mostly_dead = p->live * 2 < p->size;
	bool over = max_size && total > max_size && p->live * 10 < p->size * 9;

	return p->live > 0 && p->id != store_active_pack(st) && (mostly_dead || over);
}

/* Phase 2: rewrite packs one at a time, so the extra space is one pack. */
static int gc_rewrite(struct store *st, uint64_t max_size, const struct packs *ps, uint8_t *buf,
		      FILE *progress, struct gc_report *ret)
{
	uint64_t total = 0, todo = 0, done = 0;
	int64_t start = mono_ns();
	int r;

	for (size_t i = 0; i < ps->n; i++)
		if (ps->v[i].live > 0 || ps->v[i].id == store_active_pack(st))
			total += ps->v[i].size;
	/* For progress: the live bytes of the packs that qualify now (an upper bound). */
	for (size_t i = 0; i < ps->n; i++)
		if (worth_rewriting(st, &ps->v[i], max_size, total))
			todo += ps->v[i].live;
	for (size_t i = 0; i < ps->n; i++) {
		const struct idx_pack_usage *p = &ps->v[i];

		if (!worth_rewriting(st, p, max_size, total))
			continue;
		r = rewrite_pack(st, p, buf);
		if (r < 0)
			return r;
		ret->packs_rewritten++;
		total -= MIN(total, p->size - MIN(p->size, p->live));
		done += p->live;
		if (progress)
			gc_progress(progress, done, todo, start);
	}
	if (progress && done)
		fputc('\n', progress);
	return 0;
}

int maint_gc(struct store *st, uint64_t max_size, FILE *progress, const struct gc_hooks *hooks,
	     struct gc_report *ret)
{
	struct packs ps = {0};
	uint8_t *buf = malloc(PACK_MAX_CHUNK);
	int r;

	memset(ret, 0, sizeof(*ret));
	if (!buf)
		return -ENOMEM;
	r = gc_drop(st, max_size, hooks, &ps, ret);
	if (r == 0)
		r = gc_rewrite(st, max_size, &ps, buf, progress, ret);
	if (r == 0 && !(hooks && hooks->live)) {
		struct fsck_report frep = {0};
		struct fsck_ctx c = {.st = st, .x = store_idx(st), .repair = true, .rep = &frep};

		check_leaked_packs(&c);
		ret->packs_deleted += frep.repaired;
	}
	if (r == 0) {
		fsync(store_packs_fd(st));
		if (idx_pack_bytes(store_idx(st), &ret->bytes_after) < 0)
			ret->bytes_after = 0;
	}
	free(ps.v);
	free(buf);
	return r;
}
