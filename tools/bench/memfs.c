// SPDX-License-Identifier: MIT
/*
 * memfs: a FUSE filesystem that keeps everything in memory and does no other work, to measure
 * what the kernel's FUSE path and libfuse's loop cost alone (tools/bench/bench.sh, target
 * "memfs"). It answers the kernel as pkgcachefs does: the same capabilities, entry and
 * attribute timeouts, readdirplus, keep_cache, no opendir, trivial access ACLs taken as a
 * chmod and security.* lookups answered with ENODATA. So a bench.sh op on memfs is the floor
 * under the same op on pkgcachefs: the part no daemon-side work can remove.
 *
 * Not installed, not a product: no persistence, no hard links, no rename over directories,
 * no xattrs kept. One lock around everything; libfuse's multi-threaded loop.
 *
 * usage: memfs [-f] [-o default_permissions] [-o loop=pkgcachefs[,spin_us=US]] MOUNTPOINT
 *   default_permissions: as pkgcachefs mounts (bench.sh passes it); leave it out to measure
 *     what the kernel's permission checks cost in requests.
 *   loop=pkgcachefs: serve with pkgcachefs's request loop (fs/loop.c, spin_us as its mount
 *     option, default 50) instead of libfuse's multi-threaded one.
 */
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "loop.h"

#define TIMEOUT 86400.0
#define NBUCKETS (1u << 18)

struct dent {
	uint64_t parent, ino;
	char *name;
	struct dent *next; /* hash chain */
};

struct node {
	struct stat st;
	uint64_t nlookup;
	unsigned opens;
	char *data; /* regular files */
	size_t cap;
	struct dent **list; /* directories: entries in creation order, NULL once removed */
	size_t nlist, caplist;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct node **nodes; /* by inode number; NULL when free */
static size_t nnodes, capnodes;
static struct dent *buckets[NBUCKETS];

static uint32_t dent_hash(uint64_t parent, const char *name)
{
	uint64_t h = parent * 0x9e3779b97f4a7c15ull;

	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 0x100000001b3ull;
	return (uint32_t)(h ^ (h >> 32)) & (NBUCKETS - 1);
}

static struct dent **dent_slot(uint64_t parent, const char *name)
{
	struct dent **d = &buckets[dent_hash(parent, name)];

	while (*d && ((*d)->parent != parent || strcmp((*d)->name, name)))
		d = &(*d)->next;
	return d;
}

static struct node *node_of(fuse_ino_t ino)
{
	return ino < nnodes ? nodes[ino] : NULL;
}

static void now(struct timespec *ts)
{
	clock_gettime(CLOCK_REALTIME, ts);
}

static struct node *node_new(mode_t mode, const struct fuse_ctx *c)
{
	struct node *n = calloc(1, sizeof(*n));

	if (!n)
		return NULL;
	if (nnodes == capnodes) {
		size_t cap = capnodes ? 2 * capnodes : 1024;
		struct node **p = realloc(nodes, cap * sizeof(*p));

		if (!p) {
			free(n);
			return NULL;
		}
		nodes = p;
		capnodes = cap;
	}
	if (nnodes == 0)
		nodes[nnodes++] = NULL; /* inode 0 is not one */
	n->st.st_ino = nnodes;
	n->st.st_mode = mode;
	n->st.st_nlink = S_ISDIR(mode) ? 2 : 1;
	n->st.st_uid = c ? c->uid : 0;
	n->st.st_gid = c ? c->gid : 0;
	n->st.st_blksize = 4096;
	now(&n->st.st_mtim);
	n->st.st_atim = n->st.st_ctim = n->st.st_mtim;
	nodes[nnodes++] = n;
	return n;
}

static void node_maybe_free(struct node *n)
{
	if (n->st.st_nlink > 0 || n->nlookup > 0 || n->opens > 0 || n->st.st_ino == FUSE_ROOT_ID)
		return;
	nodes[n->st.st_ino] = NULL;
	free(n->data);
	free(n->list);
	free(n);
}

static void reply_entry(fuse_req_t req, struct node *n)
{
	struct fuse_entry_param e = {.ino = n->st.st_ino,
				     .attr = n->st,
				     .attr_timeout = TIMEOUT,
				     .entry_timeout = TIMEOUT};

	n->nlookup++;
	fuse_reply_entry(req, &e);
}

static void mf_init(void *userdata, struct fuse_conn_info *conn)
{
	conn->max_write = 1 << 20;
	conn->max_readahead = 1 << 20;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	conn->want &= ~(FUSE_CAP_FLOCK_LOCKS | FUSE_CAP_POSIX_LOCKS | FUSE_CAP_WRITEBACK_CACHE);
}

static void mf_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct dent *d;

	pthread_mutex_lock(&mu);
	d = *dent_slot(parent, name);
	if (d) {
		reply_entry(req, node_of(d->ino));
	} else {
		/* A negative entry cached as long as the positive ones (ino 0). */
		struct fuse_entry_param e = {.entry_timeout = TIMEOUT};

		fuse_reply_entry(req, &e);
	}
	pthread_mutex_unlock(&mu);
}

static void forget_one(fuse_ino_t ino, uint64_t nlookup)
{
	struct node *n = node_of(ino);

	if (!n)
		return;
	n->nlookup = nlookup >= n->nlookup ? 0 : n->nlookup - nlookup;
	node_maybe_free(n);
}

static void mf_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	pthread_mutex_lock(&mu);
	forget_one(ino, nlookup);
	pthread_mutex_unlock(&mu);
	fuse_reply_none(req);
}

static void mf_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	pthread_mutex_lock(&mu);
	for (size_t i = 0; i < count; i++)
		forget_one(forgets[i].ino, forgets[i].nlookup);
	pthread_mutex_unlock(&mu);
	fuse_reply_none(req);
}

static void mf_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct node *n;

	pthread_mutex_lock(&mu);
	n = node_of(ino);
	if (n)
		fuse_reply_attr(req, &n->st, TIMEOUT);
	else
		fuse_reply_err(req, ENOENT);
	pthread_mutex_unlock(&mu);
}

static int resize(struct node *n, size_t size)
{
	if (size > n->cap) {
		size_t cap = n->cap ? n->cap : 4096;
		char *p;

		while (cap < size)
			cap *= 2;
		p = realloc(n->data, cap);
		if (!p)
			return ENOMEM;
		n->data = p;
		n->cap = cap;
	}
	if (size > (size_t)n->st.st_size)
		memset(n->data + n->st.st_size, 0, size - (size_t)n->st.st_size);
	n->st.st_size = (off_t)size;
	n->st.st_blocks = (blkcnt_t)((size + 511) / 512);
	return 0;
}

static void mf_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	struct node *n;
	int err = 0;

	pthread_mutex_lock(&mu);
	n = node_of(ino);
	if (!n) {
		err = ENOENT;
		goto out;
	}
	if (to_set & FUSE_SET_ATTR_MODE)
		n->st.st_mode = (n->st.st_mode & S_IFMT) | (attr->st_mode & 07777);
	if (to_set & FUSE_SET_ATTR_UID)
		n->st.st_uid = attr->st_uid;
	if (to_set & FUSE_SET_ATTR_GID)
		n->st.st_gid = attr->st_gid;
	if ((to_set & FUSE_SET_ATTR_SIZE) && (err = resize(n, (size_t)attr->st_size)))
		goto out;
	if (to_set & FUSE_SET_ATTR_ATIME_NOW)
		now(&n->st.st_atim);
	else if (to_set & FUSE_SET_ATTR_ATIME)
		n->st.st_atim = attr->st_atim;
	if (to_set & FUSE_SET_ATTR_MTIME_NOW)
		now(&n->st.st_mtim);
	else if (to_set & FUSE_SET_ATTR_MTIME)
		n->st.st_mtim = attr->st_mtim;
	now(&n->st.st_ctim);
out:
	if (err)
		fuse_reply_err(req, err);
	else
		fuse_reply_attr(req, &n->st, TIMEOUT);
	pthread_mutex_unlock(&mu);
}

/* A new name in parent for a new node; mu held. */
static int make(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct node **ret)
{
	struct node *p = node_of(parent), *n;
	struct dent **slot, *d;

	if (!p || !S_ISDIR(p->st.st_mode))
		return ENOENT;
	slot = dent_slot(parent, name);
	if (*slot)
		return EEXIST;
	if (p->nlist == p->caplist) {
		size_t cap = p->caplist ? 2 * p->caplist : 8;
		struct dent **l = realloc(p->list, cap * sizeof(*l));

		if (!l)
			return ENOMEM;
		p->list = l;
		p->caplist = cap;
	}
	d = calloc(1, sizeof(*d));
	n = d ? node_new(mode, fuse_req_ctx(req)) : NULL;
	if (!n || !(d->name = strdup(name))) {
		free(d);
		return ENOMEM;
	}
	d->parent = parent;
	d->ino = n->st.st_ino;
	*slot = d;
	p->list[p->nlist++] = d;
	if (S_ISDIR(mode))
		p->st.st_nlink++;
	now(&p->st.st_mtim);
	p->st.st_ctim = p->st.st_mtim;
	*ret = n;
	return 0;
}

static void mf_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct node *n;
	int err;

	pthread_mutex_lock(&mu);
	err = make(req, parent, name, S_IFDIR | (mode & 07777), &n);
	if (err)
		fuse_reply_err(req, err);
	else
		reply_entry(req, n);
	pthread_mutex_unlock(&mu);
}

static void mf_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	struct fuse_entry_param e = {.attr_timeout = TIMEOUT, .entry_timeout = TIMEOUT};
	struct node *n;
	int err;

	pthread_mutex_lock(&mu);
	err = make(req, parent, name, S_IFREG | (mode & 07777), &n);
	if (err) {
		fuse_reply_err(req, err);
	} else {
		n->nlookup++;
		n->opens++;
		e.ino = n->st.st_ino;
		e.attr = n->st;
		fi->keep_cache = 1;
		fuse_reply_create(req, &e, fi);
	}
	pthread_mutex_unlock(&mu);
}

static void remove_name(fuse_req_t req, fuse_ino_t parent, const char *name, bool dir)
{
	struct node *p, *n;
	struct dent **slot, *d;
	int err = 0;

	pthread_mutex_lock(&mu);
	p = node_of(parent);
	slot = dent_slot(parent, name);
	d = *slot;
	if (!p || !d) {
		err = ENOENT;
		goto out;
	}
	n = node_of(d->ino);
	if (dir != !!S_ISDIR(n->st.st_mode)) {
		err = dir ? ENOTDIR : EISDIR;
		goto out;
	}
	if (dir) {
		for (size_t i = 0; i < n->nlist; i++)
			if (n->list[i]) {
				err = ENOTEMPTY;
				goto out;
			}
		p->st.st_nlink--;
	}
	for (size_t i = 0; i < p->nlist; i++)
		if (p->list[i] == d)
			p->list[i] = NULL;
	*slot = d->next;
	free(d->name);
	free(d);
	n->st.st_nlink = 0;
	now(&p->st.st_mtim);
	p->st.st_ctim = n->st.st_ctim = p->st.st_mtim;
	node_maybe_free(n);
out:
	fuse_reply_err(req, err);
	pthread_mutex_unlock(&mu);
}

static void mf_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	remove_name(req, parent, name, false);
}

static void mf_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	remove_name(req, parent, name, true);
}

static void mf_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct node *n;

	pthread_mutex_lock(&mu);
	n = node_of(ino);
	if (!n) {
		fuse_reply_err(req, ENOENT);
	} else {
		if (fi->flags & O_TRUNC)
			resize(n, 0);
		n->opens++;
		fi->keep_cache = 1;
		fuse_reply_open(req, fi);
	}
	pthread_mutex_unlock(&mu);
}

static void mf_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct node *n;

	pthread_mutex_lock(&mu);
	n = node_of(ino);
	if (!n || off >= n->st.st_size)
		fuse_reply_buf(req, NULL, 0);
	else
		fuse_reply_buf(req, n->data + off,
			       (size_t)n->st.st_size - (size_t)off < size
				       ? (size_t)n->st.st_size - (size_t)off
				       : size);
	pthread_mutex_unlock(&mu);
}

static void mf_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct node *n;
	int err = ENOENT;

	pthread_mutex_lock(&mu);
	n = node_of(ino);
	if (n && (size_t)off + size > (size_t)n->st.st_size)
		err = resize(n, (size_t)off + size);
	else if (n)
		err = 0;
	if (err) {
		fuse_reply_err(req, err);
	} else {
		memcpy(n->data + off, buf, size);
		now(&n->st.st_mtim);
		n->st.st_ctim = n->st.st_mtim;
		fuse_reply_write(req, size);
	}
	pthread_mutex_unlock(&mu);
}

static void mf_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fuse_reply_err(req, 0);
}

static void mf_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct node *n;

	pthread_mutex_lock(&mu);
	n = node_of(ino);
	if (n && n->opens > 0) {
		n->opens--;
		node_maybe_free(n);
	}
	pthread_mutex_unlock(&mu);
	fuse_reply_err(req, 0);
}

/* As pkgcachefs: no opendir, so the kernel skips opendir and releasedir and caches listings. */
static void mf_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fuse_reply_err(req, ENOSYS);
}

/* Offsets: 0 ".", 1 "..", then list index + 2. */
static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus)
{
	struct node *n, *c = NULL;
	char *buf = malloc(size);
	size_t used = 0;

	pthread_mutex_lock(&mu);
	n = node_of(ino);
	if (!buf || !n) {
		fuse_reply_err(req, buf ? ENOENT : ENOMEM);
		goto out;
	}
	for (size_t i = (size_t)off; i < n->nlist + 2; i++) {
		struct fuse_entry_param e = {0};
		const char *name;
		size_t len;

		if (i < 2) {
			name = i == 0 ? "." : "..";
			e.attr = n->st; /* the kernel takes only the type of . and .. */
		} else if (n->list[i - 2]) {
			name = n->list[i - 2]->name;
			c = node_of(n->list[i - 2]->ino);
			e.ino = c->st.st_ino;
			e.attr = c->st;
			e.attr_timeout = e.entry_timeout = TIMEOUT;
		} else {
			continue;
		}
		if (plus)
			len = fuse_add_direntry_plus(req, buf + used, size - used, name, &e,
						     (off_t)i + 1);
		else
			len = fuse_add_direntry(req, buf + used, size - used, name, &e.attr,
						(off_t)i + 1);
		if (len > size - used)
			break;
		if (plus && e.ino)
			c->nlookup++;
		used += len;
	}
	fuse_reply_buf(req, buf, used);
out:
	pthread_mutex_unlock(&mu);
	free(buf);
}

static void mf_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, false);
}

static void mf_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, true);
}

/* A trivial access ACL (owner, group, other entries only) is a chmod, as on ext4. */
static void mf_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			size_t size, int flags)
{
	static const unsigned tags[3] = {0x01, 0x04, 0x20}; /* ACL_USER_OBJ, _GROUP_OBJ, _OTHER */
	const unsigned char *v = (const unsigned char *)value;
	struct node *n;
	mode_t mode = 0;
	int err = 0;

	if (strcmp(name, "system.posix_acl_access") || size != 4 + 3 * 8 || v[0] != 2) {
		fuse_reply_err(req, EOPNOTSUPP);
		return;
	}
	for (int i = 0; i < 3; i++) {
		const unsigned char *e = v + 4 + 8 * i;
		unsigned tag = e[0] | e[1] << 8, perm = (e[2] | e[3] << 8) & 7;

		if (tag != tags[i]) {
			fuse_reply_err(req, EOPNOTSUPP);
			return;
		}
		mode |= perm << (3 * (2 - i));
	}
	pthread_mutex_lock(&mu);
	n = node_of(ino);
	if (n) {
		n->st.st_mode = (n->st.st_mode & ~0777u) | mode;
		now(&n->st.st_ctim);
	} else {
		err = ENOENT;
	}
	pthread_mutex_unlock(&mu);
	fuse_reply_err(req, err);
}

static void mf_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	fuse_reply_err(req, ENODATA);
}

static void mf_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	if (size == 0)
		fuse_reply_xattr(req, 0);
	else
		fuse_reply_buf(req, NULL, 0);
}

static void mf_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	fuse_reply_err(req, ENODATA);
}

static void mf_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv = {.f_bsize = 4096, .f_frsize = 4096, .f_namemax = 255};

	sv.f_blocks = sv.f_bfree = sv.f_bavail = 1ull << 30;
	sv.f_files = sv.f_ffree = sv.f_favail = 1ull << 30;
	fuse_reply_statfs(req, &sv);
}

static const struct fuse_lowlevel_ops ops = {
	.init = mf_init,
	.lookup = mf_lookup,
	.forget = mf_forget,
	.forget_multi = mf_forget_multi,
	.getattr = mf_getattr,
	.setattr = mf_setattr,
	.mkdir = mf_mkdir,
	.create = mf_create,
	.unlink = mf_unlink,
	.rmdir = mf_rmdir,
	.open = mf_open,
	.read = mf_read,
	.write = mf_write,
	.flush = mf_flush,
	.release = mf_release,
	.opendir = mf_opendir,
	.readdir = mf_readdir,
	.readdirplus = mf_readdirplus,
	.setxattr = mf_setxattr,
	.getxattr = mf_getxattr,
	.listxattr = mf_listxattr,
	.removexattr = mf_removexattr,
	.statfs = mf_statfs,
};

struct memfs_opts {
	char *loop;
	unsigned spin_us;
};

static const struct fuse_opt memfs_opts_spec[] = {
	{"loop=%s", offsetof(struct memfs_opts, loop), 0},
	{"spin_us=%u", offsetof(struct memfs_opts, spin_us), 0},
	FUSE_OPT_END,
};

int main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct memfs_opts mo = {.spin_us = 50};
	struct fuse_cmdline_opts opts;
	struct fuse_session *se;
	struct fuse_loop_config *cfg = NULL;
	int r = 1;

	if (fuse_opt_parse(&args, &mo, memfs_opts_spec, NULL) != 0 ||
	    fuse_parse_cmdline(&args, &opts) != 0)
		return 1;
	if (mo.loop && strcmp(mo.loop, "pkgcachefs") && strcmp(mo.loop, "libfuse")) {
		fprintf(stderr, "memfs: loop=%s: the loops are pkgcachefs and libfuse\n", mo.loop);
		return 1;
	}
	if (opts.show_help || !opts.mountpoint) {
		printf("usage: %s [-f] [-o default_permissions] MOUNTPOINT\n", argv[0]);
		fuse_cmdline_help();
		return opts.show_help ? 0 : 1;
	}
	if (!node_new(S_IFDIR | 0755, NULL)) /* the root, inode 1 */
		return 1;
	se = fuse_session_new(&args, &ops, sizeof(ops), NULL);
	if (!se)
		goto out;
	if (fuse_set_signal_handlers(se) != 0 || fuse_session_mount(se, opts.mountpoint) != 0)
		goto out_destroy;
	fuse_daemonize(opts.foreground);
	if (mo.loop && !strcmp(mo.loop, "pkgcachefs")) {
		struct loop_stats ls;

		r = loop_run(se, 16, mo.spin_us, &ls);
	} else if (opts.singlethread) {
		r = fuse_session_loop(se);
	} else {
		cfg = fuse_loop_cfg_create();
		if (!cfg)
			goto out_unmount;
		fuse_loop_cfg_set_clone_fd(cfg, opts.clone_fd);
		fuse_loop_cfg_set_max_threads(cfg, opts.max_threads);
		fuse_loop_cfg_set_idle_threads(cfg, opts.max_idle_threads);
		r = fuse_session_loop_mt(se, cfg);
		fuse_loop_cfg_destroy(cfg);
	}
out_unmount:
	fuse_session_unmount(se);
out_destroy:
	fuse_remove_signal_handlers(se);
	fuse_session_destroy(se);
out:
	free(opts.mountpoint);
	free(mo.loop);
	fuse_opt_free_args(&args);
	return r ? 1 : 0;
}
