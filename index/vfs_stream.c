/* SPDX-License-Identifier: MIT */
/*
 * The streaming writer: a file written front to back from empty is cut into chunks as the
 * bytes arrive, and two hashing threads hash and store the chunks while the writer goes on;
 * flush makes the chunks (each pinned meanwhile) the file's extents. Any other access spills
 * the stream into a staging file (vfs_stream_spill).
 *
 * Locks: a stream belongs to its node's rw (held for writing by every function here). The
 * queue of jobs and each job's done flag and status are under v->hq_lock; a hashing thread
 * takes v->lock (never with hq_lock) to store a chunk and write its location into the job.
 */
#include "vfs_priv.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

/* ---- hashing threads ---- */

/* Hash and store one job's chunk; runs on a hashing thread. */
static void run_job(struct vfs *v, struct hash_job *j)
{
	struct idx_extent e = j->e;
	chunk_digest digest;
	int r = 0;

	if (!vfs_all_zero(j->data, e.len)) {
		hash_key(j->data, e.len, &e.key);
		hash_digest(j->data, e.len, &digest);
		vfs_lock(v);
		r = vfs_begin(v);
		if (r == 0)
			r = vfs_put_hashed_chunk(v, j->data, e.len, &digest, &e);
		if (r == 0)
			r = idx_ref_chunk(v->x, e.chunk, 1); /* the stream's pin */
		if (r == 0)
			j->e = e; /* under v->lock, so gc's refresh sees it whole */
		vfs_unlock(v);
	}
	pthread_mutex_lock(&v->hq_lock);
	j->status = r;
	j->done = true;
	pthread_cond_broadcast(&v->hq_done);
	pthread_mutex_unlock(&v->hq_lock);
}

static void *hasher_thread(void *arg)
{
	struct vfs *v = arg;

	pthread_mutex_lock(&v->hq_lock);
	for (;;) {
		struct hash_job *j;

		while (!v->hq_head && !v->hq_stop)
			pthread_cond_wait(&v->hq_work, &v->hq_lock);
		j = v->hq_head;
		if (!j)
			break;
		v->hq_head = j->next;
		if (!v->hq_head)
			v->hq_tail = NULL;
		pthread_mutex_unlock(&v->hq_lock);
		run_job(v, j);
		pthread_mutex_lock(&v->hq_lock);
	}
	pthread_mutex_unlock(&v->hq_lock);
	return NULL;
}

/* Queue a copy of a cut chunk; rw held. */
static int queue_chunk(struct vfs *v, struct stream *sm, uint64_t off, const uint8_t *p,
		       uint32_t len)
{
	struct hash_job *j;

	if (sm->njobs == sm->capjobs) {
		size_t ncap = sm->capjobs ? sm->capjobs * 2 : 16;
		struct hash_job **nj = realloc(sm->jobs, ncap * sizeof(*nj));

		if (!nj)
			return -ENOMEM;
		sm->jobs = nj;
		sm->capjobs = ncap;
	}
	j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->data = malloc(len);
	if (!j->data) {
		free(j);
		return -ENOMEM;
	}
	memcpy(j->data, p, len);
	j->e.off = off;
	j->e.len = len;
	sm->jobs[sm->njobs++] = j;
	pthread_mutex_lock(&v->hq_lock);
	if (v->hq_tail)
		v->hq_tail->next = j;
	else
		v->hq_head = j;
	v->hq_tail = j;
	pthread_cond_signal(&v->hq_work);
	pthread_mutex_unlock(&v->hq_lock);
	return 0;
}

/*
 * Move finished jobs, in file order, into the stream's extents; with wait, all of them. A job
 * that failed (a full disk) is tried once more here; if it fails again it stays first in line
 * and its error is returned. rw held.
 */
static int collect_jobs(struct vfs *v, struct stream *sm, bool wait)
{
	size_t k = 0;
	int r = 0;

	while (k < sm->njobs) {
		struct hash_job *j = sm->jobs[k];

		pthread_mutex_lock(&v->hq_lock);
		while (wait && !j->done)
			pthread_cond_wait(&v->hq_done, &v->hq_lock);
		if (!j->done) {
			pthread_mutex_unlock(&v->hq_lock);
			break;
		}
		pthread_mutex_unlock(&v->hq_lock);
		if (j->status < 0) {
			struct ext_vec one = {0};

			r = vfs_emit_chunk(v, &one, j->e.off, j->data, j->e.len, true);
			if (r < 0)
				break;
			j->e = one.e[0];
			free(one.e);
		}
		r = vfs_ext_push(&sm->ev, &j->e);
		if (r < 0)
			break;
		free(j->data);
		free(j);
		k++;
	}
	if (k > 0) {
		memmove(sm->jobs, sm->jobs + k, (sm->njobs - k) * sizeof(*sm->jobs));
		sm->njobs -= k;
	}
	return r;
}

/* ---- streamed writes ---- */

static void stream_free(struct stream *sm)
{
	if (!sm)
		return;
	for (size_t i = 0; i < sm->njobs; i++) {
		free(sm->jobs[i]->data);
		free(sm->jobs[i]);
	}
	free(sm->jobs);
	free(sm->ev.e);
	free(sm->buf);
	free(sm);
}

/*
 * Drop a stream whose data cannot be stored (its error was reported by flush): wait for the
 * hashing threads to finish with it, then drop every pin it holds, collected or not. The file
 * is left with its last committed content. rw held for writing, v->lock not held.
 */
void vfs_stream_discard(struct vfs *v, struct vnode *n)
{
	struct stream *sm = n->stream;

	if (!sm)
		return;
	pthread_mutex_lock(&v->hq_lock);
	for (size_t i = 0; i < sm->njobs; i++)
		while (!sm->jobs[i]->done)
			pthread_cond_wait(&v->hq_done, &v->hq_lock);
	pthread_mutex_unlock(&v->hq_lock);
	vfs_lock(v);
	if (vfs_begin(v) == 0) {
		vfs_unpin(v, &sm->ev);
		for (size_t i = 0; i < sm->njobs; i++)
			if (sm->jobs[i]->status == 0 && sm->jobs[i]->e.chunk)
				idx_ref_chunk(v->x, sm->jobs[i]->e.chunk, -1);
	}
	n->stream = NULL;
	n->staged = false;
	vfs_unlock(v);
	stream_free(sm);
}

/* Start streaming an empty file; rw held for writing. */
int vfs_stream_start(struct vfs *v, struct vnode *n)
{
	struct stream *sm = calloc(1, sizeof(*sm));

	if (!sm)
		return -ENOMEM;
	chunker_init(&sm->ch, &v->cp);
	n->stream = sm;
	vfs_lock(v);
	n->staged = true;
	n->size = 0;
	n->mtime = n->ctime = now_ns();
	vfs_unlock(v);
	return 0;
}

/* Take a write's bytes into the stream's buffer. Cheap: the chunking comes after the reply. */
int vfs_stream_add(struct vfs *v, struct vnode *n, const uint8_t *data, size_t size)
{
	struct stream *sm = n->stream;

	/* Chunks that cannot be stored (a full disk) stay buffered, but not without bound. */
	if (sm->error && sm->len > STREAM_BACKLOG_MAX)
		return sm->error;
	if (sm->len + size > sm->cap) {
		size_t ncap = MAX(sm->len + size, (size_t)v->cp.max * 2);
		uint8_t *nb = realloc(sm->buf, ncap);

		if (!nb)
			return -ENOMEM;
		sm->buf = nb;
		sm->cap = ncap;
	}
	if (size) /* a write of nothing leaves buf NULL, and memcpy wants pointers even then */
		memcpy(sm->buf + sm->len, data, size);
	sm->len += size;
	return 0;
}

/*
 * Cut what the buffer holds into chunks and store the complete ones. A chunk that cannot be
 * stored stays in the buffer and its error in sm->error, to be tried again by the next call
 * and reported by flush. rw held for writing.
 */
int vfs_stream_process(struct vfs *v, struct vnode *n)
{
	struct stream *sm = n->stream;
	size_t start = 0;
	int r = 0;

	while (sm->scanned < sm->len) {
		size_t cut = chunker_scan(&sm->ch, sm->buf + sm->scanned, sm->len - sm->scanned);

		if (cut == CHUNKER_NO_CUT) {
			sm->scanned = sm->len;
			break;
		}
		sm->scanned += cut;
		r = queue_chunk(v, sm, sm->base + start, sm->buf + start,
				(uint32_t)(sm->scanned - start));
		if (r < 0) {
			/* The cut stays unqueued: rewind so the bytes are kept and retried. */
			sm->scanned = start;
			chunker_init(&sm->ch, &v->cp);
			break;
		}
		start = sm->scanned;
		/* Bound what one writer has in flight. */
		if (sm->njobs >= STREAM_INFLIGHT_MAX) {
			pthread_mutex_lock(&v->hq_lock);
			while (!sm->jobs[0]->done)
				pthread_cond_wait(&v->hq_done, &v->hq_lock);
			pthread_mutex_unlock(&v->hq_lock);
		}
		if (sm->njobs && collect_jobs(v, sm, false) < 0)
			break;
	}
	if (start > 0) {
		memmove(sm->buf, sm->buf + start, sm->len - start);
		sm->len -= start;
		sm->scanned -= start;
		sm->base += start;
	}
	if (r == 0)
		r = collect_jobs(v, sm, false);
	sm->error = r;
	return r;
}

int vfs_stream_settle(struct vfs *v, struct vnode *n)
{
	int r = vfs_stream_process(v, n);

	return r < 0 ? r : collect_jobs(v, n->stream, true);
}

/* Emit the tail and make the streamed chunks the file's content; rw held for writing. */
int vfs_stream_finish(struct vfs *v, struct vnode *n)
{
	struct stream *sm = n->stream;
	uint64_t size = sm->base + sm->len;
	int r;

	r = vfs_stream_settle(v, n);
	if (r < 0)
		return r;
	if (sm->len > 0) {
		r = vfs_emit_chunk(v, &sm->ev, sm->base, sm->buf, (uint32_t)sm->len, true);
		if (r < 0)
			return r;
		sm->base += sm->len;
		sm->len = sm->scanned = 0;
		chunker_init(&sm->ch, &v->cp);
	}
	vfs_lock(v);
	{
		struct ext_vec pins = sm->ev;

		/* set_content takes the vector; the pins are the same chunks, dropped after. */
		pins.e = malloc(MAX(sm->ev.n, (size_t)1) * sizeof(*pins.e));
		if (!pins.e) {
			r = -ENOMEM;
		} else {
			if (sm->ev.n) /* an empty file has no vector yet */
				memcpy(pins.e, sm->ev.e, sm->ev.n * sizeof(*pins.e));
			r = vfs_set_content(v, n, &sm->ev, size);
			if (r == 0)
				vfs_unpin(v, &pins);
			free(pins.e);
		}
	}
	if (r == 0) {
		n->staged = false;
		n->stream = NULL;
	}
	vfs_unlock(v);
	if (r == 0)
		stream_free(sm);
	return r;
}

/* Turn a stream into a staging file holding the same bytes; rw held for writing. */
int vfs_stream_spill(struct vfs *v, struct vnode *n)
{
	struct stream *sm = n->stream;
	char name[32];
	uint8_t *buf = NULL;
	int fd, r;

	r = collect_jobs(v, sm, true);
	if (r < 0)
		return r;
	snprintf(name, sizeof(name), "%llu", (unsigned long long)n->ino);
	fd = openat(store_staging_fd(v->st), name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	for (size_t i = 0; i < sm->ev.n && r == 0; i++) {
		const struct idx_extent *e = &sm->ev.e[i];

		if (!e->chunk)
			continue;
		buf = realloc(buf, e->len);
		if (!buf) {
			r = -ENOMEM;
			break;
		}
		r = vfs_read_extent(v, e, buf, NULL);
		if (r == 0)
			r = pwrite_all(fd, buf, e->len, (off_t)e->off);
	}
	free(buf);
	if (r == 0 && sm->len)
		r = pwrite_all(fd, sm->buf, sm->len, (off_t)sm->base);
	if (r == 0 && ftruncate(fd, (off_t)(sm->base + sm->len)) < 0)
		r = -errno;
	if (r < 0) {
		close(fd);
		unlinkat(store_staging_fd(v->st), name, 0);
		return r;
	}
	n->staging_fd = fd;
	n->dirty = true;
	vfs_lock(v);
	vfs_unpin(v, &sm->ev);
	n->stream = NULL;
	vfs_unlock(v);
	stream_free(sm);
	return 0;
}

/* ---- the hashing threads' lifetime ---- */

void vfs_hashers_stop(struct vfs *v, int n)
{
	pthread_mutex_lock(&v->hq_lock);
	v->hq_stop = true;
	pthread_cond_broadcast(&v->hq_work);
	pthread_mutex_unlock(&v->hq_lock);
	for (int i = 0; i < n; i++)
		pthread_join(v->hashers[i], NULL);
}

/* Start the hashing threads (and their queue); 0 or -errno, with none left running. */
int vfs_hashers_start(struct vfs *v)
{
	pthread_mutex_init(&v->hq_lock, NULL);
	pthread_cond_init(&v->hq_work, NULL);
	pthread_cond_init(&v->hq_done, NULL);
	for (int i = 0; i < HASHERS; i++) {
		int r = -pthread_create(&v->hashers[i], NULL, hasher_thread, v);

		if (r < 0) {
			vfs_hashers_stop(v, i);
			return r;
		}
	}
	return 0;
}
