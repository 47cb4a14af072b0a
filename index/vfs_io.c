/* SPDX-License-Identifier: MIT */
/*
 * File content: storing chunks and making them a file's extents, reading committed extents
 * (locally or through the fetcher), and the open-file operations: create, open, read, write,
 * flush, fsync, release. A write either feeds the file's stream (vfs_stream.c) or goes to its
 * staging file (vfs_stage.c).
 *
 * Locks: a data operation takes v->gc_lock shared, then its node's rw (shared to read, for
 * writing to write or commit), then v->lock briefly for index and pack work; chunks are read
 * and hashed with only the first two held. f->cache_lock guards one open file's chunk cache.
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

/* ---- chunk I/O ---- */

bool vfs_all_zero(const uint8_t *p, size_t n)
{
	return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/*
 * Store one chunk (dedup by key, confirmed by digest), its key and digest computed (outside
 * the lock); v->lock held, in a transaction. Fills e's chunk, key, pack and loc.
 */
int vfs_put_hashed_chunk(struct vfs *v, const uint8_t *data, uint32_t len, const chunk_digest *dg,
			 struct idx_extent *e)
{
	chunk_digest digest = *dg;
	int r;

	r = idx_find_chunk(v->x, &e->key, &digest, &e->chunk, &e->pack, &e->loc);
	if (r < 0)
		return r;
	if (r == 1 && e->pack)
		return 0;
	if (r == 1) {
		/* Known only on the remote: the bytes are in hand, so keep a local copy. */
		r = store_append_chunk(v->st, &e->key, &digest, data, len, &e->pack, &e->loc);
		if (r < 0)
			return r;
		return idx_set_chunk_local(v->x, e->chunk, &e->key, e->pack, &e->loc);
	}
	r = store_append_chunk(v->st, &e->key, &digest, data, len, &e->pack, &e->loc);
	if (r < 0)
		return r;
	return idx_add_chunk(v->x, &e->key, &digest, len, e->pack, &e->loc, &e->chunk);
}

/* vfs_put_hashed_chunk, hashing first. */
static int put_chunk(struct vfs *v, const uint8_t *data, uint32_t len, struct idx_extent *e)
{
	chunk_digest digest;

	hash_key(data, len, &e->key);
	hash_digest(data, len, &digest);
	return vfs_put_hashed_chunk(v, data, len, &digest, e);
}

int vfs_ext_push(struct ext_vec *ev, const struct idx_extent *e)
{
	if (ev->n && !e->chunk && !ev->e[ev->n - 1].chunk &&
	    (uint64_t)ev->e[ev->n - 1].len + e->len <= UINT32_MAX) {
		ev->e[ev->n - 1].len += e->len; /* merge adjacent holes */
		return 0;
	}
	if (ev->n == ev->cap) {
		size_t ncap = ev->cap ? ev->cap * 2 : 64;
		struct idx_extent *ne = realloc(ev->e, ncap * sizeof(*ne));

		if (!ne)
			return -ENOMEM;
		ev->e = ne;
		ev->cap = ncap;
	}
	ev->e[ev->n++] = *e;
	return 0;
}

/*
 * One chunk of a file: a hole when all zero, else stored. With pin, the chunk gets a reference
 * at once, held until the extents that use it are written (streamed files), so that nothing
 * reclaims it in between.
 */
int vfs_emit_chunk(struct vfs *v, struct ext_vec *ev, uint64_t off, const uint8_t *p, uint32_t len,
		   bool pin)
{
	struct idx_extent e = {.off = off, .len = len};
	int r;

	if (!vfs_all_zero(p, len)) {
		vfs_lock(v);
		r = vfs_begin(v);
		if (r == 0)
			r = put_chunk(v, p, len, &e);
		if (r == 0 && pin)
			r = idx_ref_chunk(v->x, e.chunk, 1);
		vfs_unlock(v);
		if (r < 0)
			return r;
	}
	return vfs_ext_push(ev, &e);
}

/* Drop the pins of emitted chunks; v->lock held. */
void vfs_unpin(struct vfs *v, const struct ext_vec *ev)
{
	for (size_t i = 0; i < ev->n; i++)
		if (ev->e[i].chunk && idx_ref_chunk(v->x, ev->e[i].chunk, -1) < 0)
			log_debug("unpin of chunk %llu failed", (unsigned long long)ev->e[i].chunk);
}

/*
 * Make ev the file's extents and size its length; v->lock held. The node's cached extents
 * become ev (ownership moves; ev is emptied).
 */
int vfs_set_content(struct vfs *v, struct vnode *n, struct ext_vec *ev, uint64_t size)
{
	struct idx_inode in;
	int r;

	r = vfs_op_begin(v);
	if (r < 0)
		return r;
	r = idx_set_extents(v->x, n->ino, ev->e, ev->n);
	if (r == 0) {
		r = idx_get_inode(v->x, n->ino, &in);
		if (r == 0)
			r = -ENOENT;
	}
	if (r > 0) {
		in.size = size;
		in.mtime = n->mtime;
		in.ctime = n->ctime;
		r = idx_put_inode(v->x, &in);
	}
	if (vfs_op_end(v, r) < 0)
		return r;
	free(n->ext);
	n->ext = ev->n ? realloc(ev->e, ev->n * sizeof(*ev->e)) : NULL;
	if (!n->ext)
		free(ev->e);
	n->next_count = ev->n;
	n->ext_valid = ev->n == 0 || n->ext;
	ev->e = NULL;
	ev->n = ev->cap = 0;
	return 0;
}

/* Load committed extents into the node; rw held for writing. */
int vfs_load_extents(struct vfs *v, struct vnode *n)
{
	int r;

	if (n->ext_valid)
		return 0;
	vfs_lock(v);
	free(n->ext);
	n->ext = NULL;
	r = idx_get_extents(v->x, n->ino, &n->ext, &n->next_count);
	n->ext_valid = r == 0;
	vfs_unlock(v);
	return r;
}

/*
 * Read one committed extent's chunk into buf (len bytes). *fetched (when not NULL) is set when the
 * chunk was only on the remote when the file's extents were loaded (at open): the read needed
 * the remote, whether it fetched the chunk itself or a prefetch brought it meanwhile. 0 or -errno.
 */
int vfs_read_extent(struct vfs *v, const struct idx_extent *e, uint8_t *buf, bool *fetched)
{
	int r;

	if (!e->chunk) {
		memset(buf, 0, e->len);
		return 0;
	}
	if (!e->pack) {
		r = v->fetcher ? fetcher_read(v->fetcher, e, buf) : -EIO;
		if (r == 0 && fetched)
			*fetched = true;
		return r;
	}
	return store_read_chunk(v->st, e->pack, &e->loc, &e->key, buf, e->len);
}

/* Position in ext of the extent containing off, or n when none; ext sorted by off. */
static size_t find_extent(const struct idx_extent *ext, size_t n, uint64_t off)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (ext[mid].off + ext[mid].len <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Read committed content [off, off + size) clipped to file_size; rw held. *fetched is set when
 * some of it came from the remote. */
static ssize_t read_committed(struct vfs *v, struct vfs_file *f, struct vnode *n, uint8_t *out,
			      size_t size, uint64_t off, uint64_t file_size, bool *fetched)
{
	size_t done = 0, i;
	uint8_t *tmp = NULL;
	ssize_t r = 0;

	if (off >= file_size)
		return 0;
	size = (size_t)MIN((uint64_t)size, file_size - off);
	for (i = find_extent(n->ext, n->next_count, off); i < n->next_count && done < size; i++) {
		const struct idx_extent *e = &n->ext[i];
		uint64_t pos = off + done;
		size_t skip, take;

		if (e->off > pos) {
			/* A gap in the extents reads as zeros (a file extended by truncate). */
			take = (size_t)MIN(e->off - pos, (uint64_t)(size - done));
			memset(out + done, 0, take);
			done += take;
			if (done == size)
				break;
			pos = off + done;
		}
		skip = (size_t)(pos - e->off);
		take = MIN((size_t)e->len - skip, size - done);
		if (!e->chunk) {
			memset(out + done, 0, take);
		} else if (skip == 0 && take == e->len) {
			r = vfs_read_extent(v, e, out + done, fetched);
			if (r < 0)
				goto out;
		} else {
			pthread_mutex_lock(&f->cache_lock);
			if (f->cache_chunk != e->chunk || f->cache_len != e->len) {
				tmp = realloc(f->cache, e->len);
				if (!tmp) {
					pthread_mutex_unlock(&f->cache_lock);
					r = -ENOMEM;
					goto out;
				}
				f->cache = tmp;
				f->cache_chunk = 0;
				r = vfs_read_extent(v, e, f->cache, fetched);
				if (r < 0) {
					pthread_mutex_unlock(&f->cache_lock);
					goto out;
				}
				f->cache_chunk = e->chunk;
				f->cache_len = e->len;
			}
			memcpy(out + done, f->cache + skip, take);
			pthread_mutex_unlock(&f->cache_lock);
		}
		done += take;
	}
	if (done < size) {
		memset(out + done, 0, size - done);
		done = size;
	}
	r = (ssize_t)done;
out:
	return r;
}

/* ---- open files ---- */

static int file_new(struct vnode *n, struct vfs_file **ret)
{
	struct vfs_file *f = calloc(1, sizeof(*f));

	if (!f)
		return -ENOMEM;
	f->n = n;
	pthread_mutex_init(&f->cache_lock, NULL);
	*ret = f;
	return 0;
}

static int open_node(struct vfs *v, struct vnode *n, struct vfs_file **ret_f)
{
	int r;

	r = file_new(n, ret_f);
	if (r < 0)
		return r;
	vfs_lock_for_commit(v, n);
	if (n->staging_fd < 0 && !n->stream) {
		r = vfs_load_extents(v, n);
		/* Whole-file prefetch: a file opened is about to be read whole, as a rule. It goes
		 * ahead of the access trace's prefetch, which may hold minutes of transfers. */
		if (r == 0 && v->fetcher && v->opts.open_prefetch_last)
			fetcher_prefetch(v->fetcher, n->ext, n->next_count);
		else if (r == 0 && v->fetcher)
			fetcher_prefetch_first(v->fetcher, n->ext, n->next_count);
	}
	vfs_unlock_for_commit(v, n);
	if (r < 0) {
		free(*ret_f);
		return r;
	}
	return 0;
}

/*
 * The kernel sends create for a name it believes missing. A merge from the remote may have made it
 * meanwhile (the kernel's negative entry is invalidated only after the merge's batch): without
 * O_EXCL, open(2) must then open the file that is there, as on any filesystem, not fail with
 * EEXIST (found by tests/remote-e2e/soak.sh). Entered with -EEXIST; the file's attributes and
 * handle on success, with one more lookup reference for the entry the kernel is given.
 */
static int create_existing(struct vfs *v, const struct vfs_ctx *c, uint64_t parent,
			   const char *name, int flags, struct stat *ret, struct vfs_file **ret_f)
{
	int r;

	if (flags & O_EXCL)
		return -EEXIST;
	r = vfs_lookup(v, parent, name, ret);
	if (r < 0)
		return r == -ENOENT ? -EEXIST : r;
	if (!S_ISREG(ret->st_mode))
		r = S_ISDIR(ret->st_mode) ? -EISDIR : -EEXIST;
	else if (c->uid != 0 && !(ret->st_mode & (c->uid == ret->st_uid ? S_IWUSR : S_IWOTH)))
		r = -EACCES; /* the kernel checked the directory, not this file */
	if (r == 0)
		r = vfs_open_file(v, ret->st_ino, flags, ret_f);
	if (r == 0)
		r = vfs_getattr(v, ret->st_ino, ret);
	if (r < 0) {
		if (*ret_f) {
			vfs_release(v, *ret_f);
			*ret_f = NULL;
		}
		vfs_forget(v, ret->st_ino, 1);
	}
	return r;
}

int vfs_create(struct vfs *v, const struct vfs_ctx *c, uint64_t parent, const char *name,
	       mode_t mode, int flags, struct stat *ret, struct vfs_file **ret_f)
{
	struct vnode *n;
	int r;

	*ret_f = NULL;
	vfs_lock(v);
	r = vfs_op_begin(v);
	if (r == 0)
		r = vfs_op_end(v, vfs_make_node(v, c, parent, name, S_IFREG | (mode & 07777), 0,
						NULL, ret));
	if (r < 0) {
		vfs_unlock(v);
		return r == -EEXIST ? create_existing(v, c, parent, name, flags, ret, ret_f) : r;
	}
	n = vfs_node_find(v, ret->st_ino);
	n->opens++;
	vfs_unlock(v);
	r = open_node(v, n, ret_f);
	if (r < 0) {
		vfs_lock(v);
		n->opens--;
		vfs_unlock(v);
	}
	return r;
}

int vfs_open_file(struct vfs *v, uint64_t ino, int flags, struct vfs_file **ret_f)
{
	struct stat st;
	struct vnode *n;
	int r;

	vfs_lock(v);
	r = vfs_get_stat(v, ino, &st);
	if (r == 0 && S_ISDIR(st.st_mode))
		r = -EISDIR;
	n = r == 0 ? vfs_node_get(v, ino) : NULL;
	if (r == 0 && !n)
		r = -ENOMEM;
	if (r == 0)
		n->opens++;
	if (r == 0 && v->opts.max_size && vfs_begin(v) == 0)
		idx_touch_used(v->x, ino, now_ns() / 1000000000);
	/* The access trace: what this job used, for the next job's prefetch and for retention. */
	if (r == 0 && v->fetcher && vfs_begin(v) == 0)
		idx_trace_add(v->x, ino, now_ns());
	vfs_unlock(v);
	if (r < 0)
		return r;
	r = open_node(v, n, ret_f);
	if (r == 0 && (flags & O_TRUNC)) {
		/*
		 * The kernel passes O_TRUNC to open when it does not truncate first. Linux
		 * truncates on O_RDONLY | O_TRUNC too (having checked write permission): so do we
		 * (found by tests/difftest).
		 */
		pthread_rwlock_rdlock(&v->gc_lock);
		pthread_rwlock_wrlock(&n->rw);
		r = vfs_truncate_to_zero(v, n);
		pthread_rwlock_unlock(&n->rw);
		pthread_rwlock_unlock(&v->gc_lock);
		if (r < 0)
			vfs_release(v, *ret_f);
		return r;
	}
	if (r < 0) {
		vfs_lock(v);
		n->opens--;
		vfs_unlock(v);
	}
	return r;
}

static ssize_t read_file(struct vfs *v, struct vfs_file *f, void *buf, size_t size, off_t off,
			 bool *fetched)
{
	struct vnode *n = f->n;
	uint64_t file_size;
	ssize_t r;

	if (off < 0)
		return -EINVAL;
	pthread_rwlock_rdlock(&v->gc_lock);
	pthread_rwlock_rdlock(&n->rw);
	if (n->stream) {
		/* Reading a file being streamed: give it a staging file to read from. */
		pthread_rwlock_unlock(&n->rw);
		pthread_rwlock_wrlock(&n->rw);
		r = n->stream ? vfs_stream_spill(v, n) : 0;
		pthread_rwlock_unlock(&n->rw);
		if (r < 0) {
			pthread_rwlock_unlock(&v->gc_lock);
			return r;
		}
		pthread_rwlock_rdlock(&n->rw);
	}
	if (n->staging_fd >= 0) {
		r = pread(n->staging_fd, buf, size, off);
		if (r < 0)
			r = -errno;
		goto out_unlock;
	}
	vfs_lock(v);
	{
		struct stat st;

		r = vfs_get_stat(v, n->ino, &st);
		file_size = (uint64_t)st.st_size;
	}
	vfs_unlock(v);
	if (r < 0)
		goto out_unlock;
	if (!n->ext_valid) {
		r = -EIO;
		goto out_unlock;
	}
	r = read_committed(v, f, n, buf, size, (uint64_t)off, file_size, fetched);
out_unlock:
	pthread_rwlock_unlock(&n->rw);
	pthread_rwlock_unlock(&v->gc_lock);
	return r;
}

ssize_t vfs_read(struct vfs *v, struct vfs_file *f, void *buf, size_t size, off_t off)
{
	bool fetched = false;
	ssize_t r = read_file(v, f, buf, size, off, &fetched);

	vfs_count_read(v, f->n, r, fetched);
	return r;
}

ssize_t vfs_write(struct vfs *v, struct vfs_file *f, const void *buf, size_t size, off_t off,
		  void (*early_reply)(void *ctx, size_t n), void *ctx)
{
	struct vnode *n = f->n;
	ssize_t r;

	if (off < 0)
		return -EINVAL;
	pthread_rwlock_rdlock(&v->gc_lock);
	pthread_rwlock_wrlock(&n->rw);
	if (!n->stream && n->staging_fd < 0 && off == 0) {
		struct stat st;

		vfs_lock(v);
		r = vfs_get_stat(v, n->ino, &st);
		vfs_unlock(v);
		if (r < 0)
			goto out_unlock;
		if (st.st_size == 0) {
			r = vfs_stream_start(v, n);
			if (r < 0)
				goto out_unlock;
		}
	}
	if (n->stream && (uint64_t)off == n->stream->base + n->stream->len) {
		/* A full disk fails the write itself, not only the close that follows. */
		vfs_lock(v);
		r = store_check_space(v->st, size);
		vfs_unlock(v);
		if (r < 0)
			goto out_unlock;
		r = vfs_stream_add(v, n, buf, size);
		if (r < 0)
			goto out_unlock;
		r = (ssize_t)size;
		vfs_lock(v);
		n->size = (uint64_t)off + size;
		n->mtime = n->ctime = now_ns();
		vfs_unlock(v);
		/*
		 * The bytes are ours: let the writer go on while we chunk and hash them, so its
		 * next write crosses the kernel while this one is digested. A failure to store
		 * them is reported by flush (close) and fsync, as a page cache's would be.
		 */
		if (early_reply) {
			early_reply(ctx, size);
			vfs_stream_process(v, n);
		} else {
			int e = vfs_stream_process(v, n);

			if (e == -ENOMEM)
				r = e;
		}
		goto out_unlock;
	}
	r = vfs_stage(v, n);
	if (r < 0)
		goto out_unlock;
	vfs_lock(v);
	r = store_check_space(v->st, size);
	vfs_unlock(v);
	if (r < 0)
		goto out_unlock;
	r = pwrite(n->staging_fd, buf, size, off);
	if (r < 0) {
		r = -errno;
		goto out_unlock;
	}
	n->dirty = true;
	vfs_lock(v);
	if ((uint64_t)off + (uint64_t)r > n->size)
		n->size = (uint64_t)off + (uint64_t)r;
	n->mtime = n->ctime = now_ns();
	vfs_unlock(v);
out_unlock:
	pthread_rwlock_unlock(&n->rw);
	pthread_rwlock_unlock(&v->gc_lock);
	if (r == -ENOSPC)
		vfs_note_enospc(v, -ENOSPC);
	return r;
}

int vfs_flush_early(struct vfs *v, struct vfs_file *f, void (*early_reply)(void *ctx), void *ctx)
{
	struct vnode *n = f->n;
	bool early = false;
	int r = 0;

	vfs_lock_for_commit(v, n);
	/*
	 * A stream's bytes were taken, and their room checked, by its writes. Once every chunk
	 * but the tail is stored (an error so far still reaches close), let the closer go on
	 * while the tail and the extents are stored, as a local filesystem's close(2) returns
	 * before its writeback. The node's rw, held until the commit is done, orders every later
	 * access to the file after it.
	 */
	if (early_reply && n->stream) {
		r = vfs_stream_settle(v, n);
		early = r == 0;
	}
	if (early) {
		vfs_lock(v);
		v->closing++;
		vfs_unlock(v);
		early_reply(ctx);
	}
	if (r == 0)
		r = vfs_commit_node(v, n);
	if (early) {
		if (r < 0)
			log_warn("inode %llu: storing its data after close failed: %s; it is tried "
				 "again at release",
				 (unsigned long long)n->ino, strerror(-r));
		vfs_lock(v);
		if (--v->closing == 0)
			pthread_cond_broadcast(&v->closed);
		vfs_unlock(v);
	}
	vfs_unlock_for_commit(v, n);
	return vfs_note_enospc(v, r);
}

int vfs_flush(struct vfs *v, struct vfs_file *f)
{
	return vfs_flush_early(v, f, NULL, NULL);
}

int vfs_fsync(struct vfs *v, struct vfs_file *f, bool datasync)
{
	int r = 0;

	if (f)
		r = vfs_flush(v, f);
	if (r == 0)
		r = vfs_sync(v);
	return r;
}

void vfs_release(struct vfs *v, struct vfs_file *f)
{
	struct vnode *n = f->n;
	uint64_t ino = n->ino;
	bool last;
	int r;

	/*
	 * Decide whether this is the last close under the file's lock: an open racing with this
	 * release either counted itself before (then this is not the last) or loads the extents
	 * after we are done with them.
	 */
	vfs_lock_for_commit(v, n);
	vfs_lock(v);
	last = n->opens == 1;
	vfs_unlock(v);
	if (last) {
		r = vfs_commit_node(v, n);
		if (r < 0) {
			log_warn("inode %llu: changes lost at close: %s", (unsigned long long)ino,
				 strerror(-r));
			vfs_stream_discard(v, n);
		}
		vfs_unstage(v, n);
		/* Closed files keep no extents in memory: 100k files must not cost 100k lists. */
		free(n->ext);
		n->ext = NULL;
		n->next_count = 0;
		n->ext_valid = false;
	}
	vfs_unlock_for_commit(v, n);
	vfs_lock(v);
	n->opens--;
	if (n->opens == 0 && n->nlookup == 0 && n->busy == 0) {
		if (vfs_begin(v) == 0)
			vfs_reap_if_unused(v, ino);
		n = vfs_node_find(v, ino); /* reaping may have freed it */
		if (n && n->opens == 0 && n->nlookup == 0 && n->busy == 0 && n->staging_fd < 0 &&
		    !n->stream)
			vfs_node_free(v, n);
	}
	vfs_unlock(v);
	pthread_mutex_destroy(&f->cache_lock);
	free(f->cache);
	free(f);
}
