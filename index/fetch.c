/* SPDX-License-Identifier: MIT */
/*
 * The fetcher. See fetch.h for what it promises.
 *
 * Data structures: a list of flights, one per chunk being fetched (single-flight), and a FIFO of
 * prefetch jobs, each one coalesced range of one remote pack. Both are protected by f->mu; the
 * index and the store are touched only under the caller's writer lock (f->lock), never while
 * holding f->mu, and no lock is held across a network request. The order of these locks among
 * the daemon's others: docs/architecture.md, "Locks".
 */
#include "fetch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define FAIL_FAST_DEFAULT_MS 5000
/* Bytes between two entries that a coalesced range may read and throw away. */
#define RANGE_GAP_MAX 4096u
/* Prefetch jobs queued at most; beyond this, prefetches are dropped (reads still fetch). */
#define QUEUE_MAX 4096

struct item {
	uint64_t chunk;
	chunk_key key;
	chunk_digest digest;
	uint32_t raw_len;
	uint64_t rpack;
	struct pack_loc rloc;
	bool mine; /* this fetch owns the item's flight */
};

struct job {
	struct job *next;
	size_t n;
	struct item items[];
};

struct flight {
	struct flight *next;
	uint64_t chunk;
	int status;
	bool done;
	unsigned refs;
};

struct fetcher {
	struct store *st;
	struct remote *r;
	pthread_mutex_t *lock; /* the caller's writer lock: the index and the pack writer */
	struct fetcher_options o;

	pthread_mutex_t mu;
	pthread_cond_t landed;     /* mu: a flight is done */
	pthread_cond_t work, idle; /* mu: a job was queued; the queue ran dry */
	struct flight *flights;    /* mu */
	struct job *head, *tail;   /* mu */
	/* mu: the last of the jobs queued by fetcher_prefetch_first, which are a prefix of the
	 * queue in their own order (FIFO among themselves, ahead of the others); NULL: none. */
	struct job *first_tail;
	size_t queued; /* mu */
	unsigned busy; /* mu: workers running a job */
	bool stop;     /* mu */
	pthread_t *threads;
	unsigned nthreads;

	int64_t down_until; /* atomic: mono ns until which the remote counts as unreachable */
	struct fetcher_stats stats; /* atomic fields */
};

static void report(struct fetcher *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void report(struct fetcher *f, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	__atomic_add_fetch(&f->stats.failures, 1, __ATOMIC_RELAXED);
	if (!f->o.report)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	f->o.report(f->o.data, msg);
}

static bool unreachable_error(int r)
{
	return r == -ECONNREFUSED || r == -EHOSTUNREACH || r == -ETIMEDOUT || r == -ENETUNREACH;
}

/* Where the chunk lives here now: 1 with its pack and location, 0 when only remote. */
static int local_loc(struct fetcher *f, uint64_t chunk, uint64_t *ret_pack,
		     struct pack_loc *ret_loc)
{
	int r;

	pthread_mutex_lock(f->lock);
	r = idx_chunk_loc(store_idx(f->st), chunk, ret_pack, ret_loc);
	pthread_mutex_unlock(f->lock);
	if (r == 1 && *ret_pack == 0)
		r = 0;
	return r;
}

/* Flights: mu held. A new flight for chunk, or NULL when one is already on its way. */
static struct flight *flight_claim(struct fetcher *f, uint64_t chunk)
{
	struct flight *fl;

	for (fl = f->flights; fl; fl = fl->next)
		if (fl->chunk == chunk)
			return NULL;
	fl = calloc(1, sizeof(*fl));
	if (!fl)
		return NULL;
	fl->chunk = chunk;
	fl->refs = 1;
	fl->next = f->flights;
	f->flights = fl;
	return fl;
}

static struct flight *flight_find(struct fetcher *f, uint64_t chunk)
{
	for (struct flight *fl = f->flights; fl; fl = fl->next)
		if (fl->chunk == chunk)
			return fl;
	return NULL;
}

static void flight_put(struct fetcher *f, struct flight *fl)
{
	if (--fl->refs)
		return;
	for (struct flight **p = &f->flights; *p; p = &(*p)->next) {
		if (*p == fl) {
			*p = fl->next;
			break;
		}
	}
	free(fl);
}

static void flight_land(struct fetcher *f, uint64_t chunk, int status)
{
	struct flight *fl;

	pthread_mutex_lock(&f->mu);
	fl = flight_find(f, chunk);
	if (fl && !fl->done) {
		fl->done = true;
		fl->status = status;
		pthread_cond_broadcast(&f->landed);
		flight_put(f, fl);
	}
	pthread_mutex_unlock(&f->mu);
}

static void pack_object_name(const uint8_t name[IDX_RPACK_NAME_SIZE], char *buf, size_t len)
{
	char hex[2 * IDX_RPACK_NAME_SIZE + 1];

	snprintf(buf, len, "packs/%s.pack", hash_hex(name, IDX_RPACK_NAME_SIZE, hex));
}

/*
 * Fetch the range covering items[0..n) (one remote pack, sorted by offset), verify each item
 * that is mine and store it here. When out is given, item 0's raw bytes are copied there.
 * Returns 0 when every item of mine was verified, else the first failure (-EIO on bad data).
 */
static int fetch_range(struct fetcher *f, struct item *items, size_t n, void *out)
{
	uint8_t name[IDX_RPACK_NAME_SIZE];
	char obj[128];
	uint64_t start = items[0].rloc.offset;
	uint64_t end =
		items[n - 1].rloc.offset + PACK_ENTRY_HDR_SIZE + items[n - 1].rloc.stored_len;
	void *data = NULL;
	size_t got = 0;
	uint8_t **raw;
	int r, first = 0;

	raw = calloc(n, sizeof(*raw));
	if (!raw)
		return -ENOMEM;
	pthread_mutex_lock(f->lock);
	r = idx_rpack_name(store_idx(f->st), items[0].rpack, name);
	pthread_mutex_unlock(f->lock);
	if (r <= 0) {
		report(f, "remote pack %llu of chunk %llu is not in the index",
		       (unsigned long long)items[0].rpack, (unsigned long long)items[0].chunk);
		first = -EIO;
		goto out;
	}
	pack_object_name(name, obj, sizeof(obj));
	r = remote_get(f->r, obj, start, end - start, &data, &got);
	if (r < 0) {
		if (unreachable_error(r))
			__atomic_store_n(&f->down_until,
					 mono_ns() + (int64_t)f->o.fail_fast_ms * 1000000,
					 __ATOMIC_RELAXED);
		report(f, "fetch of %s [%llu, +%llu) failed: %s", obj, (unsigned long long)start,
		       (unsigned long long)(end - start), remote_last_error());
		first = -EIO;
		goto out;
	}
	__atomic_add_fetch(&f->stats.wire_bytes, got, __ATOMIC_RELAXED);
	for (size_t i = 0; i < n; i++) {
		struct item *it = &items[i];
		uint64_t at = it->rloc.offset - start;
		size_t len = PACK_ENTRY_HDR_SIZE + (size_t)it->rloc.stored_len;

		if (!it->mine)
			continue;
		raw[i] = malloc(it->raw_len ? it->raw_len : 1);
		r = raw[i] ? 0 : -ENOMEM;
		if (r == 0 && (got < at || got - at < len))
			r = -EIO;
		if (r == 0)
			r = pack_decode_entry((uint8_t *)data + at, len, &it->rloc, &it->key,
					      &it->digest, raw[i], it->raw_len);
		if (r < 0) {
			report(f,
			       "chunk at %s offset %llu failed verification against the writer's "
			       "SHA-256: the remote object is damaged, truncated or forged",
			       obj, (unsigned long long)it->rloc.offset);
			free(raw[i]);
			raw[i] = NULL;
			if (!first)
				first = -EIO;
			continue;
		}
		__atomic_add_fetch(&f->stats.chunks, 1, __ATOMIC_RELAXED);
		__atomic_add_fetch(&f->stats.bytes, it->raw_len, __ATOMIC_RELAXED);
	}
	if (out && raw[0])
		memcpy(out, raw[0], items[0].raw_len);

	/* Keep what was verified. Failing to store (a full disk) costs only the next read. */
	pthread_mutex_lock(f->lock);
	for (size_t i = 0; i < n; i++) {
		struct idx *x = store_idx(f->st);
		struct pack_loc loc;
		uint64_t pack;

		if (!raw[i])
			continue;
		if (idx_op_begin(x) < 0)
			break;
		r = store_append_chunk(f->st, &items[i].key, &items[i].digest, raw[i],
				       items[i].raw_len, &pack, &loc);
		if (r == 0)
			r = idx_set_chunk_local(x, items[i].chunk, &items[i].key, pack, &loc);
		idx_op_end(x, r < 0);
		if (r < 0)
			break;
	}
	pthread_mutex_unlock(f->lock);
out:
	for (size_t i = 0; i < n; i++)
		free(raw[i]);
	free(raw);
	free(data);
	return first;
}

static bool remote_down(struct fetcher *f)
{
	return mono_ns() < __atomic_load_n(&f->down_until, __ATOMIC_RELAXED);
}

static int read_chunk(struct fetcher *f, const struct idx_extent *e, void *buf)
{
	struct item it = {
		.chunk = e->chunk,
		.key = e->key,
		.digest = e->digest,
		.raw_len = e->len,
		.rpack = e->rpack,
		.rloc = e->rloc,
		.mine = true,
	};
	struct flight *fl;
	struct pack_loc loc;
	uint64_t pack;
	int r;

	for (;;) {
		r = local_loc(f, e->chunk, &pack, &loc);
		if (r == 1) {
			__atomic_add_fetch(&f->stats.local_hits, 1, __ATOMIC_RELAXED);
			return store_read_chunk(f->st, pack, &loc, &e->key, buf, e->len);
		}
		if (r < 0)
			return r;
		if (!e->rpack) {
			report(f, "chunk %llu is neither here nor on the remote",
			       (unsigned long long)e->chunk);
			return -EIO;
		}
		if (remote_down(f)) {
			__atomic_add_fetch(&f->stats.failures, 1, __ATOMIC_RELAXED);
			return -EIO;
		}
		pthread_mutex_lock(&f->mu);
		fl = flight_claim(f, e->chunk);
		if (fl) {
			pthread_mutex_unlock(&f->mu);
			break;
		}
		/* On its way already (or out of memory): wait for it, then look again. */
		fl = flight_find(f, e->chunk);
		if (!fl) {
			pthread_mutex_unlock(&f->mu);
			return -ENOMEM;
		}
		fl->refs++;
		while (!fl->done)
			pthread_cond_wait(&f->landed, &f->mu);
		r = fl->status;
		flight_put(f, fl);
		pthread_mutex_unlock(&f->mu);
		if (r < 0)
			return -EIO;
	}
	r = fetch_range(f, &it, 1, buf);
	flight_land(f, e->chunk, r);
	return r < 0 ? -EIO : 0;
}

/* The time a reader waits here is what a job loses to the remote: `pkgcachefs report` shows it. */
int fetcher_read(struct fetcher *f, const struct idx_extent *e, void *buf)
{
	int64_t t0 = mono_ns();
	int r = read_chunk(f, e, buf);

	__atomic_add_fetch(&f->stats.wait_ns, (uint64_t)(mono_ns() - t0), __ATOMIC_RELAXED);
	return r;
}

static int item_cmp(const void *a, const void *b)
{
	const struct item *x = a, *y = b;

	if (x->rpack != y->rpack)
		return x->rpack < y->rpack ? -1 : 1;
	if (x->rloc.offset != y->rloc.offset)
		return x->rloc.offset < y->rloc.offset ? -1 : 1;
	return 0;
}

/* mu held. Queue a job for items[0..n) at the tail, or when first behind the other first jobs. */
static void enqueue(struct fetcher *f, const struct item *items, size_t n, bool first)
{
	struct job *j;

	if (f->queued >= QUEUE_MAX)
		return;
	j = malloc(sizeof(*j) + n * sizeof(*items));
	if (!j)
		return;
	j->next = NULL;
	j->n = n;
	memcpy(j->items, items, n * sizeof(*items));
	if (first) {
		struct job **link = f->first_tail ? &f->first_tail->next : &f->head;

		j->next = *link;
		*link = j;
		if (!j->next)
			f->tail = j;
		f->first_tail = j;
	} else {
		if (f->tail)
			f->tail->next = j;
		else
			f->head = j;
		f->tail = j;
	}
	f->queued++;
	pthread_cond_signal(&f->work);
}

static void prefetch(struct fetcher *f, const struct idx_extent *e, size_t n, bool first)
{
	struct item *items;
	size_t m = 0, start;

	items = malloc((n ? n : 1) * sizeof(*items));
	if (!items)
		return;
	for (size_t i = 0; i < n; i++) {
		if (!e[i].chunk || e[i].pack || !e[i].rpack)
			continue;
		items[m++] = (struct item){
			.chunk = e[i].chunk,
			.key = e[i].key,
			.digest = e[i].digest,
			.raw_len = e[i].len,
			.rpack = e[i].rpack,
			.rloc = e[i].rloc,
		};
	}
	qsort(items, m, sizeof(*items), item_cmp);
	pthread_mutex_lock(&f->mu);
	for (size_t i = 0; i < m; i = start) {
		uint64_t end =
			items[i].rloc.offset + PACK_ENTRY_HDR_SIZE + items[i].rloc.stored_len;
		uint64_t lo = items[i].rloc.offset;
		size_t j = i + 1;

		for (; j < m; j++) {
			uint64_t next_end = items[j].rloc.offset + PACK_ENTRY_HDR_SIZE +
					    items[j].rloc.stored_len;

			if (items[j].rpack != items[i].rpack || items[j].rloc.offset < end ||
			    items[j].rloc.offset - end > RANGE_GAP_MAX ||
			    next_end - lo > f->o.range_max)
				break;
			end = next_end;
		}
		start = j;
		enqueue(f, &items[i], j - i, first);
	}
	pthread_mutex_unlock(&f->mu);
	free(items);
}

void fetcher_prefetch(struct fetcher *f, const struct idx_extent *e, size_t n)
{
	prefetch(f, e, n, false);
}

void fetcher_prefetch_first(struct fetcher *f, const struct idx_extent *e, size_t n)
{
	prefetch(f, e, n, true);
}

/* Run one prefetch job: claim the items nobody is fetching and that are still only remote. */
static void run_job(struct fetcher *f, struct job *j)
{
	size_t mine = 0, lo = j->n, hi = 0;
	struct pack_loc loc;
	uint64_t pack;

	for (size_t i = 0; i < j->n; i++) {
		struct flight *fl;

		if (local_loc(f, j->items[i].chunk, &pack, &loc) != 0)
			continue;
		pthread_mutex_lock(&f->mu);
		fl = flight_claim(f, j->items[i].chunk);
		pthread_mutex_unlock(&f->mu);
		if (!fl)
			continue;
		j->items[i].mine = true;
		mine++;
		lo = MIN(lo, i);
		hi = i + 1;
	}
	if (!mine)
		return;
	if (remote_down(f)) {
		for (size_t i = lo; i < hi; i++)
			if (j->items[i].mine)
				flight_land(f, j->items[i].chunk, -EIO);
		return;
	}
	/* One request per run of items this job owns: bytes others fetch, or that are here,
	 * must not cross the wire again. */
	for (size_t i = lo; i < hi;) {
		size_t k = i;

		if (!j->items[i].mine) {
			i++;
			continue;
		}
		while (k < hi && j->items[k].mine)
			k++;
		fetch_range(f, &j->items[i], k - i, NULL);
		i = k;
	}
	for (size_t i = lo; i < hi; i++) {
		if (!j->items[i].mine)
			continue;
		/* Landed as a success or not, readers look the location up again. */
		flight_land(f, j->items[i].chunk,
			    local_loc(f, j->items[i].chunk, &pack, &loc) == 1 ? 0 : -EIO);
	}
}

static void *worker(void *arg)
{
	struct fetcher *f = arg;

	pthread_mutex_lock(&f->mu);
	for (;;) {
		struct job *j;

		while (!f->head && !f->stop)
			pthread_cond_wait(&f->work, &f->mu);
		if (f->stop)
			break;
		j = f->head;
		f->head = j->next;
		if (!f->head)
			f->tail = NULL;
		if (f->first_tail == j)
			f->first_tail = NULL;
		f->queued--;
		f->busy++;
		pthread_mutex_unlock(&f->mu);
		run_job(f, j);
		free(j);
		pthread_mutex_lock(&f->mu);
		f->busy--;
		if (!f->head && !f->busy)
			pthread_cond_broadcast(&f->idle);
	}
	pthread_mutex_unlock(&f->mu);
	return NULL;
}

int fetcher_new(struct store *st, struct remote *r, pthread_mutex_t *lock,
		const struct fetcher_options *o, struct fetcher **ret)
{
	struct fetcher *f;

	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->st = st;
	f->r = r;
	f->lock = lock;
	if (o)
		f->o = *o;
	if (!f->o.workers)
		f->o.workers = FETCH_WORKERS_DEFAULT;
	f->o.workers = MIN(f->o.workers, FETCH_WORKERS_MAX);
	if (!f->o.range_max)
		f->o.range_max = FETCH_RANGE_DEFAULT;
	f->o.range_max = MIN(MAX(f->o.range_max, FETCH_RANGE_MIN), FETCH_RANGE_MAX);
	if (!f->o.fail_fast_ms)
		f->o.fail_fast_ms = FAIL_FAST_DEFAULT_MS;
	pthread_mutex_init(&f->mu, NULL);
	pthread_cond_init(&f->landed, NULL);
	pthread_cond_init(&f->work, NULL);
	pthread_cond_init(&f->idle, NULL);
	f->threads = calloc(f->o.workers, sizeof(*f->threads));
	if (!f->threads) {
		fetcher_free(f);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < f->o.workers; i++) {
		if (pthread_create(&f->threads[i], NULL, worker, f) != 0) {
			fetcher_free(f);
			return -EAGAIN;
		}
		f->nthreads++;
	}
	*ret = f;
	return 0;
}

void fetcher_drain(struct fetcher *f)
{
	pthread_mutex_lock(&f->mu);
	while (f->head || f->busy)
		pthread_cond_wait(&f->idle, &f->mu);
	pthread_mutex_unlock(&f->mu);
}

void fetcher_free(struct fetcher *f)
{
	if (!f)
		return;
	pthread_mutex_lock(&f->mu);
	f->stop = true;
	pthread_cond_broadcast(&f->work);
	pthread_mutex_unlock(&f->mu);
	for (unsigned i = 0; i < f->nthreads; i++)
		pthread_join(f->threads[i], NULL);
	while (f->head) {
		struct job *j = f->head;

		f->head = j->next;
		free(j);
	}
	while (f->flights) {
		struct flight *fl = f->flights;

		f->flights = fl->next;
		free(fl);
	}
	free(f->threads);
	pthread_cond_destroy(&f->idle);
	pthread_cond_destroy(&f->work);
	pthread_cond_destroy(&f->landed);
	pthread_mutex_destroy(&f->mu);
	free(f);
}

void fetcher_get_stats(struct fetcher *f, struct fetcher_stats *ret)
{
	ret->chunks = __atomic_load_n(&f->stats.chunks, __ATOMIC_RELAXED);
	ret->bytes = __atomic_load_n(&f->stats.bytes, __ATOMIC_RELAXED);
	ret->wire_bytes = __atomic_load_n(&f->stats.wire_bytes, __ATOMIC_RELAXED);
	ret->failures = __atomic_load_n(&f->stats.failures, __ATOMIC_RELAXED);
	ret->local_hits = __atomic_load_n(&f->stats.local_hits, __ATOMIC_RELAXED);
	ret->wait_ns = __atomic_load_n(&f->stats.wait_ns, __ATOMIC_RELAXED);
}

bool fetcher_idle_below(struct fetcher *f, size_t n)
{
	bool idle;

	pthread_mutex_lock(&f->mu);
	idle = f->queued + f->busy < n;
	pthread_mutex_unlock(&f->mu);
	return idle;
}
