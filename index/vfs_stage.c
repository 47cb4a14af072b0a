/* SPDX-License-Identifier: MIT */
/*
 * Staging files: a file changed anywhere but at its end gets a sparse scratch copy,
 * STORE/staging/<ino>, holding its whole current content; commit (flush, fsync, last release)
 * cuts it into chunks, holes skipped, and makes them the file's extents. Also truncation,
 * which either empties a file's extents or goes through a staging file.
 *
 * Locks: v->gc_lock shared, then the node's rw for writing, held by the caller (or taken here
 * by vfs_lock_for_commit and vfs_truncate_node); v->lock briefly for the index.
 */
#include "vfs_priv.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

/* A run of zeros as hole extents, each at most 1 GiB. */
static int push_hole(struct ext_vec *ev, uint64_t off, uint64_t len)
{
	while (len > 0) {
		struct idx_extent e = {.off = off, .len = (uint32_t)MIN(len, (uint64_t)1 << 30)};
		int r = vfs_ext_push(ev, &e);

		if (r < 0)
			return r;
		off += e.len;
		len -= e.len;
	}
	return 0;
}

/* Chunk bytes [from, to) of fd, the chunker starting afresh at from. */
static int chunk_range(struct vfs *v, int fd, struct ext_vec *ev, uint64_t from, uint64_t to,
		       uint8_t *buf, size_t cap)
{
	struct chunker ch;
	size_t len = 0, start = 0, scanned = 0;
	uint64_t file_off = from, base = from;
	int r;

	chunker_init(&ch, &v->cp);
	for (;;) {
		if (file_off < to) {
			ssize_t got = pread(fd, buf + len, MIN(cap - len, to - file_off),
					    (off_t)file_off);

			if (got < 0)
				return -errno;
			if (got == 0)
				return -EIO; /* the staging file shrank under us: a bug */
			file_off += (uint64_t)got;
			len += (size_t)got;
		}
		while (scanned < len) {
			size_t cut = chunker_scan(&ch, buf + scanned, len - scanned);

			if (cut == CHUNKER_NO_CUT) {
				scanned = len;
				break;
			}
			scanned += cut;
			r = vfs_emit_chunk(v, ev, base, buf + start, (uint32_t)(scanned - start),
					   false);
			if (r < 0)
				return r;
			base += scanned - start;
			start = scanned;
		}
		if (file_off >= to)
			break;
		memmove(buf, buf + start, len - start);
		len -= start;
		scanned -= start;
		start = 0;
	}
	if (len > start)
		return vfs_emit_chunk(v, ev, base, buf + start, (uint32_t)(len - start), false);
	return 0;
}

/*
 * Cut the staging file into chunks and make them the file's extents. Holes of the (sparse)
 * staging file become hole extents without being read. node->rw held for writing; gc_lock
 * held shared by the caller.
 */
static int commit_staging(struct vfs *v, struct vnode *n)
{
	struct ext_vec ev = {0};
	struct stat sst;
	size_t cap = COMMIT_READ_SIZE + v->cp.max;
	uint64_t pos = 0, size;
	uint8_t *buf;
	int r = 0;

	if (fstat(n->staging_fd, &sst) < 0)
		return -errno;
	size = (uint64_t)sst.st_size;
	buf = malloc(cap);
	if (!buf)
		return -ENOMEM;
	while (pos < size && r == 0) {
		off_t data = lseek(n->staging_fd, (off_t)pos, SEEK_DATA);
		off_t hole;

		if (data < 0 && errno != ENXIO) {
			r = -errno;
			break;
		}
		if (data < 0 || (uint64_t)data >= size)
			data = (off_t)size; /* zeros to the end */
		r = push_hole(&ev, pos, (uint64_t)data - pos);
		if (r < 0 || (uint64_t)data >= size)
			break;
		hole = lseek(n->staging_fd, data, SEEK_HOLE);
		if (hole < 0 || (uint64_t)hole > size)
			hole = (off_t)size;
		r = chunk_range(v, n->staging_fd, &ev, (uint64_t)data, (uint64_t)hole, buf, cap);
		pos = (uint64_t)hole;
	}
	if (r == 0) {
		vfs_lock(v);
		r = vfs_set_content(v, n, &ev, size);
		if (r == 0)
			n->dirty = false;
		vfs_unlock(v);
	}
	free(ev.e);
	free(buf);
	return r;
}

/* Commit what was written; gc_lock held shared, node->rw held for writing. */
int vfs_commit_node(struct vfs *v, struct vnode *n)
{
	if (n->stream)
		return vfs_stream_finish(v, n);
	return n->dirty ? commit_staging(v, n) : 0;
}

/* Take the locks a commit needs, in order. */
void vfs_lock_for_commit(struct vfs *v, struct vnode *n)
{
	pthread_rwlock_rdlock(&v->gc_lock);
	pthread_rwlock_wrlock(&n->rw);
}

void vfs_unlock_for_commit(struct vfs *v, struct vnode *n)
{
	pthread_rwlock_unlock(&n->rw);
	pthread_rwlock_unlock(&v->gc_lock);
}

/* Give the node a staging file holding its committed content; rw held for writing. */
int vfs_stage(struct vfs *v, struct vnode *n)
{
	char name[32];
	struct stat st;
	uint8_t *buf = NULL;
	int fd, r;

	if (n->staging_fd >= 0)
		return 0;
	if (n->stream)
		return vfs_stream_spill(v, n);
	vfs_lock(v);
	r = vfs_get_stat(v, n->ino, &st);
	vfs_unlock(v);
	if (r < 0)
		return r;
	r = vfs_load_extents(v, n);
	if (r < 0)
		return r;
	{
		/* Room for the data, not for the holes of a sparse file. */
		uint64_t data = 0;

		for (size_t i = 0; i < n->next_count; i++)
			if (n->ext[i].chunk)
				data += n->ext[i].len;
		vfs_lock(v);
		r = store_check_space(v->st, data);
		vfs_unlock(v);
	}
	if (r < 0)
		return r;
	snprintf(name, sizeof(name), "%llu", (unsigned long long)n->ino);
	fd = openat(store_staging_fd(v->st), name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	for (size_t i = 0; i < n->next_count; i++) {
		const struct idx_extent *e = &n->ext[i];

		if (!e->chunk || e->off >= (uint64_t)st.st_size)
			continue;
		buf = realloc(buf, e->len);
		if (!buf) {
			r = -ENOMEM;
			goto out_close;
		}
		r = vfs_read_extent(v, e, buf, NULL);
		if (r == 0)
			r = pwrite_all(fd, buf, (size_t)MIN((uint64_t)e->len, st.st_size - e->off),
				       (off_t)e->off);
		if (r < 0)
			goto out_close;
	}
	if (ftruncate(fd, st.st_size) < 0) {
		r = -errno;
		goto out_close;
	}
	free(buf);
	n->staging_fd = fd;
	vfs_lock(v);
	n->staged = true;
	n->size = (uint64_t)st.st_size;
	n->mtime = ts_ns(&st.st_mtim);
	n->ctime = ts_ns(&st.st_ctim);
	vfs_unlock(v);
	return 0;
out_close:
	free(buf);
	close(fd);
	unlinkat(store_staging_fd(v->st), name, 0);
	return r;
}

/* Drop the staging file of a clean node; rw held for writing. */
void vfs_unstage(struct vfs *v, struct vnode *n)
{
	char name[32];

	if (n->staging_fd < 0)
		return;
	close(n->staging_fd);
	n->staging_fd = -1;
	n->dirty = false;
	snprintf(name, sizeof(name), "%llu", (unsigned long long)n->ino);
	unlinkat(store_staging_fd(v->st), name, 0);
	vfs_lock(v);
	n->staged = false;
	vfs_unlock(v);
}

/* ---- attributes ---- */

/*
 * Truncation to zero, the common case (O_TRUNC): no copy of the old content, just empty
 * extents; the next write at 0 streams. gc_lock and rw held.
 */
int vfs_truncate_to_zero(struct vfs *v, struct vnode *n)
{
	struct ext_vec none = {0};
	int64_t now = now_ns();
	int r;

	if (n->staging_fd >= 0) {
		if (ftruncate(n->staging_fd, 0) < 0)
			return -errno;
		vfs_lock(v);
		n->size = 0;
		n->mtime = n->ctime = now;
		vfs_unlock(v);
		n->dirty = true;
		return 0;
	}
	vfs_stream_discard(v, n);
	vfs_lock(v);
	n->mtime = n->ctime = now;
	r = vfs_set_content(v, n, &none, 0);
	if (r == 0)
		n->staged = false;
	vfs_unlock(v);
	return r;
}

int vfs_truncate_node(struct vfs *v, struct vnode *n, uint64_t size, bool keep_staged)
{
	int r;

	pthread_rwlock_rdlock(&v->gc_lock);
	pthread_rwlock_wrlock(&n->rw);
	if (size == 0) {
		r = vfs_truncate_to_zero(v, n);
		goto out_unlock;
	}
	r = vfs_stage(v, n);
	if (r < 0)
		goto out_unlock;
	if (ftruncate(n->staging_fd, (off_t)size) < 0) {
		r = -errno;
		goto out_unlock;
	}
	vfs_lock(v);
	n->size = size;
	n->mtime = n->ctime = now_ns();
	vfs_unlock(v);
	n->dirty = true;
	if (!keep_staged) {
		r = commit_staging(v, n);
		if (r == 0)
			vfs_unstage(v, n);
	}
out_unlock:
	pthread_rwlock_unlock(&n->rw);
	pthread_rwlock_unlock(&v->gc_lock);
	return r;
}
