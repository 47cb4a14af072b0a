/* SPDX-License-Identifier: MIT */
/*
 * The FUSE low-level operations. Each one decodes the request, calls one vfs function that
 * returns 0 or -errno, and replies; all the filesystem's logic lives in index/vfs.c.
 *
 * Every change goes through this mount, so the kernel may cache entries, attributes and file
 * pages for long (keep_cache on every open); negative lookups are cached too, which spares
 * Python's import probing a round trip per miss.
 */
#include "ops.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "cli.h"
#include "util.h"
#include "vfs.h"

#define TIMEOUT 86400.0
#define MAX_WRITE (1u << 20)

/*
 * Requests received, by operation (and, for setattr and xattrs, by what they asked), and the
 * time their handlers took, for `tools/bench/fuse-ops.sh`: relaxed atomic additions and two
 * vDSO clock reads, which cost nothing next to a round trip. ops_counts_dump prints them.
 */
enum {
	OPC_INIT,
	OPC_LOOKUP,
	OPC_FORGET,
	OPC_FORGET_MULTI,
	OPC_GETATTR,
	OPC_SETATTR,
	OPC_READLINK,
	OPC_MKNOD,
	OPC_MKDIR,
	OPC_SYMLINK,
	OPC_LINK,
	OPC_UNLINK,
	OPC_RMDIR,
	OPC_RENAME,
	OPC_CREATE,
	OPC_OPEN,
	OPC_READ,
	OPC_WRITE,
	OPC_FLUSH,
	OPC_RELEASE,
	OPC_FSYNC,
	OPC_OPENDIR,
	OPC_READDIR,
	OPC_READDIRPLUS,
	OPC_FSYNCDIR,
	OPC_STATFS,
	OPC_SETXATTR,
	OPC_GETXATTR,
	OPC_LISTXATTR,
	OPC_REMOVEXATTR,
	OPC_SETATTR_MODE,
	OPC_SETATTR_OWNER,
	OPC_SETATTR_SIZE,
	OPC_SETATTR_TIMES,
	OPC_GETXATTR_SECURITY,
	OPC_GETXATTR_ACL,
	OPC_SETXATTR_ACL,
	OPC_COUNT
};

static const char *const opc_names[OPC_COUNT] = {
	[OPC_INIT] = "init",
	[OPC_LOOKUP] = "lookup",
	[OPC_FORGET] = "forget",
	[OPC_FORGET_MULTI] = "forget_multi",
	[OPC_GETATTR] = "getattr",
	[OPC_SETATTR] = "setattr",
	[OPC_READLINK] = "readlink",
	[OPC_MKNOD] = "mknod",
	[OPC_MKDIR] = "mkdir",
	[OPC_SYMLINK] = "symlink",
	[OPC_LINK] = "link",
	[OPC_UNLINK] = "unlink",
	[OPC_RMDIR] = "rmdir",
	[OPC_RENAME] = "rename",
	[OPC_CREATE] = "create",
	[OPC_OPEN] = "open",
	[OPC_READ] = "read",
	[OPC_WRITE] = "write",
	[OPC_FLUSH] = "flush",
	[OPC_RELEASE] = "release",
	[OPC_FSYNC] = "fsync",
	[OPC_OPENDIR] = "opendir",
	[OPC_READDIR] = "readdir",
	[OPC_READDIRPLUS] = "readdirplus",
	[OPC_FSYNCDIR] = "fsyncdir",
	[OPC_STATFS] = "statfs",
	[OPC_SETXATTR] = "setxattr",
	[OPC_GETXATTR] = "getxattr",
	[OPC_LISTXATTR] = "listxattr",
	[OPC_REMOVEXATTR] = "removexattr",
	[OPC_SETATTR_MODE] = "setattr.mode",
	[OPC_SETATTR_OWNER] = "setattr.owner",
	[OPC_SETATTR_SIZE] = "setattr.size",
	[OPC_SETATTR_TIMES] = "setattr.times",
	[OPC_GETXATTR_SECURITY] = "getxattr.security",
	[OPC_GETXATTR_ACL] = "getxattr.acl",
	[OPC_SETXATTR_ACL] = "setxattr.acl",
};

static _Atomic uint64_t opc[OPC_COUNT];
static _Atomic uint64_t opc_ns[OPC_COUNT];

#define COUNT(op) atomic_fetch_add_explicit(&opc[op], 1, memory_order_relaxed)

struct op_clock {
	int op;
	int64_t start;
};

static void op_clock_stop(const struct op_clock *c)
{
	atomic_fetch_add_explicit(&opc_ns[c->op], (uint64_t)(mono_ns() - c->start),
				  memory_order_relaxed);
}

/*
 * First in a handler: count the request, and add the handler's time when it returns, reply
 * included (a write's includes the chunking after its early reply). The cleanup attribute runs
 * op_clock_stop on every return path.
 */
#define OP(op)                                                                                     \
	COUNT(op);                                                                                 \
	struct op_clock op_clock __attribute__((cleanup(op_clock_stop))) = {(op), mono_ns()}

void ops_counts_dump(FILE *f)
{
	for (int i = 0; i < OPC_COUNT; i++) {
		uint64_t n = atomic_load_explicit(&opc[i], memory_order_relaxed);
		uint64_t ns = atomic_load_explicit(&opc_ns[i], memory_order_relaxed);

		if (!n)
			continue;
		/* "name count handler_ns"; the breakdowns (a dot in the name) have no time. */
		if (strchr(opc_names[i], '.'))
			fprintf(f, "%s %" PRIu64 "\n", opc_names[i], n);
		else
			fprintf(f, "%s %" PRIu64 " %" PRIu64 "\n", opc_names[i], n, ns);
	}
}

static struct vfs *vfs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static struct vfs_file *file_of(struct fuse_file_info *fi)
{
	return (struct vfs_file *)(uintptr_t)fi->fh;
}

static void reply_entry(fuse_req_t req, int r, const struct stat *st)
{
	struct fuse_entry_param e;

	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	memset(&e, 0, sizeof(e));
	e.ino = st->st_ino;
	e.attr = *st;
	e.attr_timeout = TIMEOUT;
	e.entry_timeout = TIMEOUT;
	fuse_reply_entry(req, &e);
}

static void reply_attr(fuse_req_t req, int r, const struct stat *st)
{
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_attr(req, st, TIMEOUT);
}

static struct vfs_ctx ctx_of(fuse_req_t req)
{
	const struct fuse_ctx *c = fuse_req_ctx(req);
	struct vfs_ctx vc = {.uid = c->uid, .gid = c->gid};

	return vc;
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	OP(OPC_INIT);
	conn->max_write = MAX_WRITE;
	conn->max_readahead = MAX_WRITE;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
		conn->want |= FUSE_CAP_CACHE_SYMLINKS;
	/* No lock operations: flock and fcntl locks stay in the kernel, right on one host. */
	conn->want &= ~(FUSE_CAP_FLOCK_LOCKS | FUSE_CAP_POSIX_LOCKS);
	/*
	 * No writeback cache: measured (docs/benchmarks.md, issue 15), it adds two setattrs of
	 * the times to every created file, takes away the overlap of a copier's reads with our
	 * chunking (the pages go at close), and the kernel would keep its own size of a file a
	 * live merge replaced in place.
	 */
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	OP(OPC_LOOKUP);
	struct stat st;
	int r = vfs_lookup(vfs_of(req), parent, name, &st);

	if (r == -ENOENT) {
		/* A negative entry, cached by the kernel until something creates the name. */
		struct fuse_entry_param e;

		memset(&e, 0, sizeof(e));
		e.entry_timeout = TIMEOUT;
		fuse_reply_entry(req, &e);
		return;
	}
	reply_entry(req, r, &st);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	OP(OPC_FORGET);
	vfs_forget(vfs_of(req), ino, nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	OP(OPC_FORGET_MULTI);
	for (size_t i = 0; i < count; i++)
		vfs_forget(vfs_of(req), forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	OP(OPC_GETATTR);
	struct stat st;

	reply_attr(req, vfs_getattr(vfs_of(req), ino, &st), &st);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	OP(OPC_SETATTR);
	static const struct {
		int fuse, vfs;
	} map[] = {
		{FUSE_SET_ATTR_MODE, VFS_SET_MODE},
		{FUSE_SET_ATTR_UID, VFS_SET_UID},
		{FUSE_SET_ATTR_GID, VFS_SET_GID},
		{FUSE_SET_ATTR_SIZE, VFS_SET_SIZE},
		{FUSE_SET_ATTR_ATIME, VFS_SET_ATIME},
		{FUSE_SET_ATTR_MTIME, VFS_SET_MTIME},
		{FUSE_SET_ATTR_ATIME_NOW, VFS_SET_ATIME_NOW},
		{FUSE_SET_ATTR_MTIME_NOW, VFS_SET_MTIME_NOW},
		{FUSE_SET_ATTR_CTIME, VFS_SET_CTIME},
	};
	struct stat st;
	int set = 0;

	for (size_t i = 0; i < ARRAY_SIZE(map); i++)
		if (to_set & map[i].fuse)
			set |= map[i].vfs;
	if (set & VFS_SET_MODE)
		COUNT(OPC_SETATTR_MODE);
	if (set & (VFS_SET_UID | VFS_SET_GID))
		COUNT(OPC_SETATTR_OWNER);
	if (set & VFS_SET_SIZE)
		COUNT(OPC_SETATTR_SIZE);
	if (set & (VFS_SET_ATIME | VFS_SET_MTIME | VFS_SET_ATIME_NOW | VFS_SET_MTIME_NOW))
		COUNT(OPC_SETATTR_TIMES);
	reply_attr(req, vfs_setattr(vfs_of(req), ino, attr, set, fi ? file_of(fi) : NULL, &st),
		   &st);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	OP(OPC_READLINK);
	char buf[4096];
	int r = vfs_readlink(vfs_of(req), ino, buf, sizeof(buf));

	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_readlink(req, buf);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	OP(OPC_MKNOD);
	struct vfs_ctx c = ctx_of(req);
	struct stat st;

	reply_entry(req, vfs_mknod(vfs_of(req), &c, parent, name, mode, rdev, &st), &st);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	OP(OPC_MKDIR);
	struct vfs_ctx c = ctx_of(req);
	struct stat st;

	reply_entry(req, vfs_mkdir(vfs_of(req), &c, parent, name, mode, &st), &st);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	OP(OPC_SYMLINK);
	struct vfs_ctx c = ctx_of(req);
	struct stat st;

	reply_entry(req, vfs_symlink(vfs_of(req), &c, parent, name, link, &st), &st);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	OP(OPC_LINK);
	struct stat st;

	reply_entry(req, vfs_link(vfs_of(req), ino, newparent, newname, &st), &st);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	OP(OPC_UNLINK);
	fuse_reply_err(req, -vfs_unlink(vfs_of(req), parent, name));
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	OP(OPC_RMDIR);
	fuse_reply_err(req, -vfs_rmdir(vfs_of(req), parent, name));
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	OP(OPC_RENAME);
	fuse_reply_err(req, -vfs_rename(vfs_of(req), parent, name, newparent, newname, flags));
}

static void reply_open(fuse_req_t req, struct fuse_file_info *fi, struct vfs_file *f)
{
	fi->fh = (uintptr_t)f;
	fi->keep_cache = 1;
	if (fuse_reply_open(req, fi) == -ENOENT)
		vfs_release(vfs_of(req), f); /* the caller was interrupted */
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	OP(OPC_CREATE);
	struct vfs_ctx c = ctx_of(req);
	struct fuse_entry_param e;
	struct vfs_file *f;
	struct stat st;
	int r;

	r = vfs_create(vfs_of(req), &c, parent, name, mode, fi->flags, &st, &f);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	memset(&e, 0, sizeof(e));
	e.ino = st.st_ino;
	e.attr = st;
	e.attr_timeout = TIMEOUT;
	e.entry_timeout = TIMEOUT;
	fi->fh = (uintptr_t)f;
	fi->keep_cache = 1;
	if (fuse_reply_create(req, &e, fi) == -ENOENT)
		vfs_release(vfs_of(req), f);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	OP(OPC_OPEN);
	struct vfs_file *f;
	int r = vfs_open_file(vfs_of(req), ino, fi->flags, &f);

	if (r < 0)
		fuse_reply_err(req, -r);
	else
		reply_open(req, fi, f);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	OP(OPC_READ);
	char *buf = malloc(size ? size : 1);
	ssize_t r;

	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	r = vfs_read(vfs_of(req), file_of(fi), buf, size, off);
	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else
		fuse_reply_buf(req, buf, (size_t)r);
	free(buf);
}

/* A request vfs may answer before it has finished with it (a write, a close). */
struct early_reply {
	fuse_req_t req;
	bool replied;
};

static void early_write_reply(void *ctx, size_t n)
{
	struct early_reply *w = ctx;

	fuse_reply_write(w->req, n);
	w->replied = true;
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	OP(OPC_WRITE);
	struct early_reply w = {.req = req};
	ssize_t r = vfs_write(vfs_of(req), file_of(fi), buf, size, off, early_write_reply, &w);

	if (w.replied)
		return;
	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else
		fuse_reply_write(req, (size_t)r);
}

static void early_flush_reply(void *ctx)
{
	struct early_reply *w = ctx;

	fuse_reply_err(w->req, 0);
	w->replied = true;
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	OP(OPC_FLUSH);
	struct early_reply w = {.req = req};
	int r = vfs_flush_early(vfs_of(req), file_of(fi), early_flush_reply, &w);

	if (!w.replied)
		fuse_reply_err(req, -r);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	OP(OPC_RELEASE);
	vfs_release(vfs_of(req), file_of(fi));
	fuse_reply_err(req, 0);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	OP(OPC_FSYNC);
	fuse_reply_err(req, -vfs_fsync(vfs_of(req), file_of(fi), datasync));
}

/*
 * No opendir: the kernel then skips opendir and releasedir round trips and caches directory
 * listings itself (it invalidates them when an entry changes through this mount).
 */
static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	OP(OPC_OPENDIR);
	fuse_reply_err(req, ENOSYS);
}

struct dir_reply {
	fuse_req_t req;
	char *buf;
	size_t size, used;
	bool plus;
};

static int add_dirent(const char *name, const struct stat *st, uint64_t next_off, void *data)
{
	struct dir_reply *dr = data;
	bool dot = !strcmp(name, ".") || !strcmp(name, "..");
	char *p = dr->buf + dr->used;
	size_t left = dr->size - dr->used, n;

	if (dr->plus) {
		struct fuse_entry_param e;

		memset(&e, 0, sizeof(e));
		e.attr = *st;
		if (!dot) {
			e.ino = st->st_ino;
			e.attr_timeout = TIMEOUT;
			e.entry_timeout = TIMEOUT;
		}
		n = fuse_add_direntry_plus(dr->req, p, left, name, &e, (off_t)next_off);
		if (n > left)
			return 1;
	} else {
		n = fuse_add_direntry(dr->req, p, left, name, st, (off_t)next_off);
		if (n > left)
			return 1;
	}
	dr->used += n;
	return 0;
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus)
{
	struct dir_reply dr = {.req = req, .size = size, .plus = plus};
	int r;

	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	dr.buf = malloc(size);
	if (!dr.buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	r = vfs_readdir(vfs_of(req), ino, (uint64_t)off, plus, add_dirent, &dr);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_buf(req, dr.buf, dr.used);
	free(dr.buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	OP(OPC_READDIR);
	do_readdir(req, ino, size, off, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	OP(OPC_READDIRPLUS);
	do_readdir(req, ino, size, off, true);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	OP(OPC_FSYNCDIR);
	fuse_reply_err(req, -vfs_sync(vfs_of(req)));
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	OP(OPC_STATFS);
	struct statvfs sv;
	int r = vfs_statfs(vfs_of(req), &sv);

	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_statfs(req, &sv);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			size_t size, int flags)
{
	OP(OPC_SETXATTR);
	if (!strncmp(name, "system.posix_acl_", 17))
		COUNT(OPC_SETXATTR_ACL);
	if (!strcmp(name, "system.posix_acl_access")) {
		/* cp -a sets an ACL like this on every file and directory; when it is only a mode,
		 * taking it spares the chmod that would follow a refusal. */
		struct vfs_ctx c = ctx_of(req);
		bool changed = false;
		int r = vfs_set_access_acl(vfs_of(req), &c, ino, value, size, &changed);

		if (changed)
			live_inval_attr(ino);
		fuse_reply_err(req, -r);
		return;
	}
	fuse_reply_err(req, -vfs_setxattr(vfs_of(req), ino, name, value, size, flags));
}

/* getxattr and listxattr: size 0 asks for the size, else the bytes. buf is freed here. */
static void reply_xattr(fuse_req_t req, int r, char *buf, size_t size)
{
	if (r < 0)
		fuse_reply_err(req, -r);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)r);
	else
		fuse_reply_buf(req, buf, (size_t)r);
	free(buf);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	OP(OPC_GETXATTR);
	char *buf = size ? malloc(size) : NULL;

	if (!strncmp(name, "security.", 9))
		COUNT(OPC_GETXATTR_SECURITY);
	else if (!strncmp(name, "system.posix_acl_", 17))
		COUNT(OPC_GETXATTR_ACL);
	if (size && !buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	reply_xattr(req, vfs_getxattr(vfs_of(req), ino, name, buf, size), buf, size);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	OP(OPC_LISTXATTR);
	char *buf = size ? malloc(size) : NULL;

	if (size && !buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	reply_xattr(req, vfs_listxattr(vfs_of(req), ino, buf, size), buf, size);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	OP(OPC_REMOVEXATTR);
	fuse_reply_err(req, -vfs_removexattr(vfs_of(req), ino, name));
}

const struct fuse_lowlevel_ops pkgcachefs_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.readlink = op_readlink,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.symlink = op_symlink,
	.link = op_link,
	.unlink = op_unlink,
	.rmdir = op_rmdir,
	.rename = op_rename,
	.create = op_create,
	.open = op_open,
	.read = op_read,
	.write = op_write,
	.flush = op_flush,
	.release = op_release,
	.fsync = op_fsync,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.fsyncdir = op_fsyncdir,
	.statfs = op_statfs,
	.setxattr = op_setxattr,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.removexattr = op_removexattr,
};
