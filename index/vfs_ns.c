/* SPDX-License-Identifier: MIT */
/*
 * Names and attributes: lookup and forget, mknod/mkdir/symlink/create's inode, link, unlink,
 * rmdir, rename, setattr, readdir, statfs and xattrs. Each operation is one index operation
 * (vfs_op_begin/vfs_op_end: undone whole on failure) in the open transaction.
 *
 * Locks: every function here takes v->lock for its whole operation, and nothing else, but
 * vfs_setattr's truncation, which goes through vfs_truncate_node (vfs_stage.c) first, with
 * v->lock not held.
 */
#include "vfs_priv.h"

#include <errno.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "util.h"

/* ---- namespace ---- */

static int check_name(const char *name)
{
	size_t len = strlen(name);

	if (len == 0)
		return -ENOENT;
	if (len > NAME_MAX_LEN)
		return -ENAMETOOLONG;
	if (strchr(name, '/'))
		return -EINVAL;
	return 0;
}

int vfs_lookup(struct vfs *v, uint64_t parent, const char *name, struct stat *ret)
{
	uint64_t ino;
	struct vnode *n;
	int r;

	r = check_name(name);
	if (r < 0)
		return r;
	vfs_lock(v);
	r = idx_lookup(v->x, parent, name, &ino);
	if (r == 0)
		r = -ENOENT;
	if (r < 0)
		goto out_unlock;
	r = vfs_get_stat(v, ino, ret);
	if (r < 0)
		goto out_unlock;
	n = vfs_node_get(v, ino);
	if (!n) {
		r = -ENOMEM;
		goto out_unlock;
	}
	n->nlookup++;
	vfs_node_set_top(v, n, parent, name);
out_unlock:
	vfs_unlock(v);
	return r;
}

void vfs_forget(struct vfs *v, uint64_t ino, uint64_t nlookup)
{
	struct vnode *n;

	vfs_lock(v);
	n = vfs_node_find(v, ino);
	if (!n)
		goto out_unlock;
	n->nlookup = nlookup >= n->nlookup ? 0 : n->nlookup - nlookup;
	if (n->nlookup > 0 || n->opens > 0 || n->busy > 0)
		goto out_unlock;
	if (vfs_begin(v) == 0)
		vfs_reap_if_unused(v, ino);
	n = vfs_node_find(v, ino);
	if (n && n->nlookup == 0 && n->opens == 0 && n->busy == 0 && n->staging_fd < 0)
		vfs_node_free(v, n);
out_unlock:
	vfs_unlock(v);
}

int vfs_getattr(struct vfs *v, uint64_t ino, struct stat *ret)
{
	int r;

	vfs_lock(v);
	r = vfs_get_stat(v, ino, ret);
	vfs_unlock(v);
	return r;
}

/* Bump mtime and ctime of a directory; v->lock held, in a transaction. */
static int touch_dir(struct vfs *v, uint64_t ino, int64_t now, int nlink_delta)
{
	struct idx_inode in;
	int r = vfs_get_inode(v, ino, &in);

	if (r < 0)
		return r;
	in.mtime = in.ctime = now;
	in.nlink = (uint32_t)((int64_t)in.nlink + nlink_delta);
	return idx_put_inode(v->x, &in);
}

/* Create an inode named name in parent; v->lock held. */
int vfs_make_node(struct vfs *v, const struct vfs_ctx *c, uint64_t parent, const char *name,
		  mode_t mode, dev_t rdev, const char *target, struct stat *ret)
{
	struct idx_inode pin, in;
	uint64_t ino, existing;
	struct vnode *n;
	int64_t now = now_ns();
	int r;

	r = check_name(name);
	if (r < 0)
		return r;
	r = vfs_begin(v);
	if (r < 0)
		return r;
	r = vfs_get_inode(v, parent, &pin);
	if (r < 0)
		return r;
	if (!S_ISDIR(pin.mode))
		return -ENOTDIR;
	if (pin.nlink == 0)
		return -ENOENT; /* creating in a removed directory */
	r = idx_lookup(v->x, parent, name, &existing);
	if (r != 0)
		return r < 0 ? r : -EEXIST;

	memset(&in, 0, sizeof(in));
	in.mode = mode;
	in.uid = c->uid;
	in.gid = c->gid;
	/* BSD group semantics in a setgid directory, as ext4 does. */
	if (pin.mode & S_ISGID) {
		in.gid = pin.gid;
		if (S_ISDIR(mode))
			in.mode |= S_ISGID;
	}
	in.nlink = S_ISDIR(mode) ? 2 : 1;
	in.parent = S_ISDIR(mode) ? parent : 0;
	in.rdev = rdev;
	in.size = target ? strlen(target) : 0;
	in.atime = in.mtime = in.ctime = now;
	r = idx_new_inode(v->x, &in, &ino);
	if (r < 0)
		return r;
	in.ino = ino;
	if (target) {
		r = idx_set_target(v->x, ino, target);
		if (r < 0)
			return r;
	}
	r = idx_add_dentry(v->x, parent, name, ino);
	if (r < 0)
		return r;
	r = touch_dir(v, parent, now, S_ISDIR(mode) ? 1 : 0);
	if (r < 0)
		return r;
	n = vfs_node_get(v, ino);
	if (!n)
		return -ENOMEM;
	n->nlookup++;
	vfs_node_set_top(v, n, parent, name);
	stat_from_inode(&in, ret);
	return 0;
}

int vfs_mknod(struct vfs *v, const struct vfs_ctx *c, uint64_t parent, const char *name,
	      mode_t mode, dev_t rdev, struct stat *ret)
{
	int r;

	switch (mode & S_IFMT) {
	case S_IFREG:
	case S_IFIFO:
	case S_IFSOCK:
	case S_IFCHR:
	case S_IFBLK:
		break;
	case 0:
		mode |= S_IFREG;
		break;
	default:
		return -EINVAL;
	}
	vfs_lock(v);
	r = vfs_op_begin(v);
	if (r == 0)
		r = vfs_op_end(v, vfs_make_node(v, c, parent, name, mode, rdev, NULL, ret));
	vfs_unlock(v);
	return r;
}

int vfs_mkdir(struct vfs *v, const struct vfs_ctx *c, uint64_t parent, const char *name,
	      mode_t mode, struct stat *ret)
{
	int r;

	vfs_lock(v);
	r = vfs_op_begin(v);
	if (r == 0)
		r = vfs_op_end(v, vfs_make_node(v, c, parent, name, S_IFDIR | (mode & 07777), 0,
						NULL, ret));
	vfs_unlock(v);
	return r;
}

int vfs_symlink(struct vfs *v, const struct vfs_ctx *c, uint64_t parent, const char *name,
		const char *target, struct stat *ret)
{
	int r;

	if (strlen(target) >= 4096)
		return -ENAMETOOLONG;
	vfs_lock(v);
	r = vfs_op_begin(v);
	if (r == 0)
		r = vfs_op_end(v,
			       vfs_make_node(v, c, parent, name, S_IFLNK | 0777, 0, target, ret));
	vfs_unlock(v);
	return r;
}

int vfs_readlink(struct vfs *v, uint64_t ino, char *buf, size_t len)
{
	int r;

	vfs_lock(v);
	r = idx_get_target(v->x, ino, buf, len);
	vfs_unlock(v);
	if (r == 0)
		return -EINVAL;
	return r < 0 ? r : 0;
}

int vfs_link(struct vfs *v, uint64_t ino, uint64_t newparent, const char *newname, struct stat *ret)
{
	struct idx_inode in;
	uint64_t existing;
	struct vnode *n;
	int64_t now = now_ns();
	int r;

	r = check_name(newname);
	if (r < 0)
		return r;
	vfs_lock(v);
	r = vfs_op_begin(v);
	if (r < 0) {
		vfs_unlock(v);
		return r;
	}
	r = vfs_get_inode(v, ino, &in);
	if (r < 0)
		goto out_unlock;
	if (S_ISDIR(in.mode)) {
		r = -EPERM;
		goto out_unlock;
	}
	if (in.nlink >= 65000) {
		r = -EMLINK;
		goto out_unlock;
	}
	r = idx_lookup(v->x, newparent, newname, &existing);
	if (r != 0) {
		r = r < 0 ? r : -EEXIST;
		goto out_unlock;
	}
	r = idx_add_dentry(v->x, newparent, newname, ino);
	if (r < 0)
		goto out_unlock;
	in.nlink++;
	in.ctime = now;
	r = idx_put_inode(v->x, &in);
	if (r == 0)
		r = touch_dir(v, newparent, now, 0);
	if (r < 0)
		goto out_unlock;
	n = vfs_node_get(v, ino);
	if (!n) {
		r = -ENOMEM;
		goto out_unlock;
	}
	n->nlookup++;
	stat_from_inode(&in, ret);
	vfs_apply_override(v, ret);
	ret->st_ctim = ns_ts(now);
	if (n->staged)
		n->ctime = now;
out_unlock:
	r = vfs_op_end(v, r);
	vfs_unlock(v);
	return r;
}

/* Drop one name of ino; v->lock held, in a transaction. */
static int drop_name(struct vfs *v, uint64_t ino, int64_t now)
{
	struct idx_inode in;
	struct vnode *n;
	int r = vfs_get_inode(v, ino, &in);

	if (r < 0)
		return r;
	if (S_ISDIR(in.mode))
		in.nlink = 0;
	else if (in.nlink > 0)
		in.nlink--;
	in.ctime = now;
	n = vfs_node_find(v, ino);
	if (n && n->staged)
		n->ctime = now;
	r = idx_put_inode(v->x, &in);
	if (r < 0)
		return r;
	return in.nlink == 0 ? vfs_reap_if_unused(v, ino) : 0;
}

/* unlink (dir false) and rmdir (dir true): drop the name, and the inode with its last name. */
static int remove_name(struct vfs *v, uint64_t parent, const char *name, bool dir)
{
	struct idx_inode in;
	uint64_t ino;
	int64_t now = now_ns();
	int r;

	vfs_lock(v);
	r = vfs_op_begin(v);
	if (r < 0) {
		vfs_unlock(v);
		return r;
	}
	r = vfs_lookup_ino(v, parent, name, &ino);
	if (r < 0)
		goto out_unlock;
	r = vfs_get_inode(v, ino, &in);
	if (r < 0)
		goto out_unlock;
	if (!dir && S_ISDIR(in.mode)) {
		r = -EISDIR;
		goto out_unlock;
	}
	if (dir && !S_ISDIR(in.mode)) {
		r = -ENOTDIR;
		goto out_unlock;
	}
	if (dir) {
		r = idx_dir_is_empty(v->x, ino);
		if (r <= 0) {
			r = r < 0 ? r : -ENOTEMPTY;
			goto out_unlock;
		}
	}
	r = idx_del_dentry(v->x, parent, name);
	if (r == 0)
		r = touch_dir(v, parent, now, dir ? -1 : 0); /* a subdirectory's ".." link */
	if (r == 0)
		r = drop_name(v, ino, now);
out_unlock:
	r = vfs_op_end(v, r);
	vfs_unlock(v);
	return r;
}

int vfs_unlink(struct vfs *v, uint64_t parent, const char *name)
{
	return remove_name(v, parent, name, false);
}

int vfs_rmdir(struct vfs *v, uint64_t parent, const char *name)
{
	if (strcmp(name, ".") == 0)
		return -EINVAL;
	if (strcmp(name, "..") == 0)
		return -ENOTEMPTY;
	return remove_name(v, parent, name, true);
}

/* 1 when dir is anc or below it; v->lock held. */
static int is_descendant(struct vfs *v, uint64_t dir, uint64_t anc)
{
	struct idx_inode in;
	unsigned depth = 0;

	while (depth++ < 100000) {
		int r;

		if (dir == anc)
			return 1;
		if (dir == IDX_ROOT_INO)
			return 0;
		r = idx_get_inode(v->x, dir, &in);
		if (r <= 0)
			return r < 0 ? r : 0;
		dir = in.parent;
	}
	return -ELOOP;
}

static int set_ctime(struct vfs *v, struct idx_inode *in, int64_t now)
{
	struct vnode *n = vfs_node_find(v, in->ino);

	in->ctime = now;
	if (n && n->staged)
		n->ctime = now;
	return idx_put_inode(v->x, in);
}

/* RENAME_EXCHANGE of two existing names (checked by rename_locked); v->lock held. */
static int rename_exchange(struct vfs *v, uint64_t parent, const char *name, uint64_t newparent,
			   const char *newname, struct idx_inode *src, struct idx_inode *dst,
			   int64_t now)
{
	uint64_t sino = src->ino, dino = dst->ino;
	bool sdir = S_ISDIR(src->mode), ddir = S_ISDIR(dst->mode);
	int r;

	r = idx_set_dentry(v->x, parent, name, dino);
	if (r == 0)
		r = idx_set_dentry(v->x, newparent, newname, sino);
	if (r < 0)
		return r;
	if (parent != newparent && sdir != ddir) {
		/* The directory moved; link counts of the parents follow it. */
		r = touch_dir(v, parent, now, sdir ? -1 : 1);
		if (r == 0)
			r = touch_dir(v, newparent, now, sdir ? 1 : -1);
	} else {
		r = touch_dir(v, parent, now, 0);
		if (r == 0 && parent != newparent)
			r = touch_dir(v, newparent, now, 0);
	}
	if (r < 0)
		return r;
	if (sdir)
		src->parent = newparent;
	if (ddir)
		dst->parent = parent;
	r = set_ctime(v, src, now);
	if (r == 0)
		r = set_ctime(v, dst, now);
	return r;
}

/* Move name to newname, replacing what newname names (dino, or 0 for nothing; checked by
 * rename_locked); v->lock held. */
static int rename_move(struct vfs *v, uint64_t parent, const char *name, uint64_t newparent,
		       const char *newname, struct idx_inode *src, uint64_t dino, bool ddir,
		       int64_t now)
{
	uint64_t sino = src->ino;
	bool sdir = S_ISDIR(src->mode);
	int r;

	if (dino) {
		if (sdir && !ddir)
			return -ENOTDIR;
		if (!sdir && ddir)
			return -EISDIR;
		if (ddir) {
			r = idx_dir_is_empty(v->x, dino);
			if (r <= 0)
				return r < 0 ? r : -ENOTEMPTY;
		}
		r = idx_set_dentry(v->x, newparent, newname, sino);
		if (r == 0 && ddir)
			r = touch_dir(v, newparent, now, -1); /* the replaced directory's link */
		if (r == 0)
			r = drop_name(v, dino, now);
	} else {
		r = idx_add_dentry(v->x, newparent, newname, sino);
	}
	if (r < 0)
		return r;
	r = idx_del_dentry(v->x, parent, name);
	if (r < 0)
		return r;
	if (parent != newparent) {
		r = touch_dir(v, parent, now, sdir ? -1 : 0);
		if (r == 0)
			r = touch_dir(v, newparent, now, sdir ? 1 : 0);
	} else {
		r = touch_dir(v, parent, now, 0);
	}
	if (r < 0)
		return r;
	if (sdir)
		src->parent = newparent;
	return set_ctime(v, src, now);
}

static int rename_locked(struct vfs *v, uint64_t parent, const char *name, uint64_t newparent,
			 const char *newname, unsigned flags)
{
	struct idx_inode src, dst;
	uint64_t sino, dino = 0;
	int64_t now = now_ns();
	bool sdir, ddir = false;
	int r;

	r = check_name(newname);
	if (r < 0)
		return r;
	r = vfs_begin(v);
	if (r < 0)
		return r;
	r = vfs_lookup_ino(v, parent, name, &sino);
	if (r < 0)
		return r;
	r = vfs_get_inode(v, sino, &src);
	if (r < 0)
		return r;
	sdir = S_ISDIR(src.mode);
	r = idx_lookup(v->x, newparent, newname, &dino);
	if (r < 0)
		return r;
	if (r == 1) {
		r = vfs_get_inode(v, dino, &dst);
		if (r < 0)
			return r;
		ddir = S_ISDIR(dst.mode);
	} else {
		dino = 0;
	}
	if ((flags & RENAME_EXCHANGE) && !dino)
		return -ENOENT;
	if ((flags & RENAME_NOREPLACE) && dino)
		return -EEXIST;
	if (dino == sino)
		return 0; /* two names of one inode: POSIX says do nothing */

	/* A directory may not move below itself. */
	if (sdir && parent != newparent) {
		r = is_descendant(v, newparent, sino);
		if (r != 0)
			return r < 0 ? r : -EINVAL;
	}
	if ((flags & RENAME_EXCHANGE) && ddir && parent != newparent) {
		r = is_descendant(v, parent, dino);
		if (r != 0)
			return r < 0 ? r : -EINVAL;
	}

	if (flags & RENAME_EXCHANGE)
		return rename_exchange(v, parent, name, newparent, newname, &src, &dst, now);
	return rename_move(v, parent, name, newparent, newname, &src, dino, ddir, now);
}

int vfs_rename(struct vfs *v, uint64_t parent, const char *name, uint64_t newparent,
	       const char *newname, unsigned flags)
{
	int r;

	if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE))
		return -EINVAL;
	if ((flags & RENAME_NOREPLACE) && (flags & RENAME_EXCHANGE))
		return -EINVAL;
	vfs_lock(v);
	r = vfs_op_begin(v);
	if (r == 0)
		r = vfs_op_end(v, rename_locked(v, parent, name, newparent, newname, flags));
	vfs_unlock(v);
	return r;
}

/* The truncation of a setattr, before its other changes; v->lock not held. */
static int setattr_size(struct vfs *v, uint64_t ino, uint64_t size, struct vfs_file *f)
{
	struct idx_inode in;
	struct vnode *n;
	bool keep_staged;
	int r;

	vfs_lock(v);
	r = idx_get_inode(v->x, ino, &in);
	if (r == 1 && S_ISDIR(in.mode))
		r = -EISDIR;
	else if (r == 1 && !S_ISREG(in.mode))
		r = -EINVAL;
	n = vfs_node_get(v, ino);
	if (n)
		n->busy++; /* keep the node while truncating */
	/* An open file stays staged until its last close commits it. */
	keep_staged = f || (n && n->opens > 0);
	vfs_unlock(v);
	if (!n)
		return -ENOMEM;
	if (r == 1)
		r = vfs_truncate_node(v, n, size, keep_staged);
	else if (r == 0)
		r = -ENOENT;
	vfs_lock(v);
	n->busy--;
	vfs_unlock(v);
	return r;
}

/* Apply attr's fields named by to_set to in; a staged node's times and size win over the
 * index's, and follow the change. v->lock held. */
static void apply_attrs(struct idx_inode *in, struct vnode *n, const struct stat *attr, int to_set,
			int64_t now)
{
	if (to_set & VFS_SET_MODE)
		in->mode = (in->mode & S_IFMT) | (attr->st_mode & 07777);
	if (to_set & VFS_SET_UID)
		in->uid = attr->st_uid;
	if (to_set & VFS_SET_GID)
		in->gid = attr->st_gid;
	if (to_set & VFS_SET_ATIME_NOW)
		in->atime = now;
	else if (to_set & VFS_SET_ATIME)
		in->atime = ts_ns(&attr->st_atim);
	if (to_set & VFS_SET_MTIME_NOW)
		in->mtime = now;
	else if (to_set & VFS_SET_MTIME)
		in->mtime = ts_ns(&attr->st_mtim);
	/* Any change but a pure truncation (its ctime comes with the data), and a chown to
	 * -1:-1 (no bits at all), moves ctime, as on ext4. */
	if (to_set & VFS_SET_CTIME)
		in->ctime = ts_ns(&attr->st_ctim);
	else if ((to_set & ~(VFS_SET_SIZE)) || to_set == 0)
		in->ctime = now;
	if (n && n->staged) {
		if (to_set & (VFS_SET_MTIME | VFS_SET_MTIME_NOW))
			n->mtime = in->mtime;
		else
			in->mtime = n->mtime;
		if ((to_set & ~(VFS_SET_SIZE)) || to_set == 0)
			n->ctime = in->ctime;
		else
			in->ctime = n->ctime;
		in->size = n->size;
	}
}

int vfs_setattr(struct vfs *v, uint64_t ino, const struct stat *attr, int to_set,
		struct vfs_file *f, struct stat *ret)
{
	struct idx_inode in;
	struct vnode *n;
	int64_t now = now_ns();
	int r;

	if (to_set & VFS_SET_SIZE) {
		r = setattr_size(v, ino, (uint64_t)attr->st_size, f);
		if (r < 0)
			return r;
	}

	vfs_lock(v);
	r = vfs_op_begin(v);
	if (r < 0) {
		vfs_unlock(v);
		return r;
	}
	r = vfs_get_inode(v, ino, &in);
	if (r < 0)
		goto out_unlock;
	n = vfs_node_find(v, ino);
	apply_attrs(&in, n, attr, to_set, now);
	r = idx_put_inode(v->x, &in);
	if (r < 0)
		goto out_unlock;
	stat_from_inode(&in, ret);
	vfs_apply_override(v, ret);
out_unlock:
	r = vfs_op_end(v, r);
	vfs_unlock(v);
	return r;
}

/* ---- directories ---- */

struct dir_list {
	struct vfs *v;
	uint64_t dir;
	bool lookup;
	int (*cb)(const char *name, const struct stat *st, uint64_t next_off, void *data);
	void *data;
};

/* Offsets: 0 ".", 1 "..", then an entry's cookie + 2. */
static int dir_entry(const char *name, const struct idx_inode *in, uint64_t cookie, void *data)
{
	struct dir_list *dl = data;
	struct stat st;
	int r;

	stat_from_inode(in, &st);
	vfs_apply_override(dl->v, &st);
	r = dl->cb(name, &st, cookie + 2, dl->data);
	if (r == 0 && dl->lookup) {
		struct vnode *n = vfs_node_get(dl->v, in->ino);

		if (!n)
			return -ENOMEM;
		n->nlookup++;
		vfs_node_set_top(dl->v, n, dl->dir, name);
	}
	return r;
}

int vfs_readdir(struct vfs *v, uint64_t ino, uint64_t off, bool lookup,
		int (*cb)(const char *name, const struct stat *st, uint64_t next_off, void *data),
		void *data)
{
	struct dir_list dl = {.v = v, .dir = ino, .lookup = lookup, .cb = cb, .data = data};
	struct idx_inode in, pin;
	struct stat st;
	int r;

	vfs_lock(v);
	r = vfs_get_inode(v, ino, &in);
	if (r < 0)
		goto out_unlock;
	if (!S_ISDIR(in.mode)) {
		r = -ENOTDIR;
		goto out_unlock;
	}
	if (off == 0) {
		stat_from_inode(&in, &st);
		if (cb(".", &st, 1, data))
			goto out_unlock;
	}
	if (off <= 1) {
		if (idx_get_inode(v->x, in.parent, &pin) != 1)
			pin = in;
		stat_from_inode(&pin, &st);
		if (cb("..", &st, 2, data))
			goto out_unlock;
	}
	r = idx_list_dir(v->x, ino, off > 2 ? off - 2 : 0, dir_entry, &dl);
	if (r > 0)
		r = 0; /* the caller's buffer is full */
out_unlock:
	vfs_unlock(v);
	return r;
}

int vfs_statfs(struct vfs *v, struct statvfs *ret)
{
	struct statvfs sv;
	char path[4096];

	snprintf(path, sizeof(path), "%s", store_dir(v->st));
	if (statvfs(path, &sv) < 0)
		return -errno;
	memset(ret, 0, sizeof(*ret));
	ret->f_bsize = 4096;
	ret->f_frsize = 4096;
	ret->f_blocks = (fsblkcnt_t)((uint64_t)sv.f_blocks * sv.f_frsize / 4096);
	ret->f_bfree = (fsblkcnt_t)((uint64_t)sv.f_bfree * sv.f_frsize / 4096);
	ret->f_bavail = (fsblkcnt_t)((uint64_t)sv.f_bavail * sv.f_frsize / 4096);
	ret->f_files = 1ull << 32;
	ret->f_ffree = (1ull << 32) - 1024;
	ret->f_favail = ret->f_ffree;
	ret->f_namemax = NAME_MAX_LEN;
	return 0;
}

/* ---- xattrs ---- */

static int check_xattr_name(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len > 255)
		return -ERANGE;
	/* ACLs are not supported (the kernel checks modes); system.* names go nowhere. */
	if (strncmp(name, "user.", 5) && strncmp(name, "trusted.", 8) &&
	    strncmp(name, "security.", 9))
		return -EOPNOTSUPP;
	return 0;
}

static int touch_ctime(struct vfs *v, uint64_t ino)
{
	struct idx_inode in;
	int r = vfs_get_inode(v, ino, &in);

	if (r < 0)
		return r;
	return set_ctime(v, &in, now_ns());
}

int vfs_setxattr(struct vfs *v, uint64_t ino, const char *name, const void *value, size_t size,
		 int flags)
{
	int r = check_xattr_name(name);

	if (r < 0)
		return r;
	if (size > XATTR_VALUE_MAX)
		return -E2BIG;
	vfs_lock(v);
	r = vfs_op_begin(v);
	if (r == 0) {
		r = idx_set_xattr(v->x, ino, name, value, size,
				  (flags & XATTR_CREATE ? IDX_XATTR_CREATE : 0) |
					  (flags & XATTR_REPLACE ? IDX_XATTR_REPLACE : 0));
		if (r == 0)
			r = touch_ctime(v, ino);
		r = vfs_op_end(v, r);
	}
	vfs_unlock(v);
	return r;
}

/*
 * A POSIX ACL in its xattr form (little endian): a u32 version 2, then entries of u16 tag,
 * u16 perm, u32 id, in tag order. The only ones this filesystem takes are the three entries
 * of a mode (user::, group::, other::), which is what `cp -a`, `install` and friends set when
 * the source has no ACL; their bits become the mode, as on a filesystem with ACLs.
 */
#define ACL_XATTR_VERSION 2
#define ACL_TAG_USER_OBJ 0x01
#define ACL_TAG_GROUP_OBJ 0x04
#define ACL_TAG_OTHER 0x20

static uint32_t le16_at(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}

static int acl_mode_bits(const unsigned char *p, size_t size, mode_t *ret)
{
	static const uint16_t tags[3] = {ACL_TAG_USER_OBJ, ACL_TAG_GROUP_OBJ, ACL_TAG_OTHER};
	mode_t mode = 0;

	if (!p || size != 4 + 3 * 8 || (le16_at(p) | le16_at(p + 2) << 16) != ACL_XATTR_VERSION)
		return -EOPNOTSUPP;
	for (int i = 0; i < 3; i++) {
		const unsigned char *e = p + 4 + 8 * i;
		uint32_t perm = le16_at(e + 2);

		if (le16_at(e) != tags[i] || perm > 7)
			return -EOPNOTSUPP;
		mode |= (mode_t)perm << (6 - 3 * i);
	}
	*ret = mode;
	return 0;
}

int vfs_set_access_acl(struct vfs *v, const struct vfs_ctx *c, uint64_t ino, const void *value,
		       size_t size, bool *ret_changed)
{
	struct idx_inode in;
	uint32_t old;
	mode_t bits;
	int r = acl_mode_bits(value, size, &bits);

	if (r < 0)
		return r;
	vfs_lock(v);
	r = vfs_op_begin(v);
	if (r < 0) {
		vfs_unlock(v);
		return r;
	}
	r = vfs_get_inode(v, ino, &in);
	if (r < 0)
		goto out_unlock;
	/* Who may chmod may set an ACL (the kernel leaves system.* names to the filesystem). */
	if (c->uid != 0 && c->uid != in.uid) {
		r = -EPERM;
		goto out_unlock;
	}
	old = in.mode;
	in.mode = (in.mode & ~0777u) | bits;
	/* As the kernel's posix_acl_update_mode: set-group-ID goes unless the caller is in the
	 * file's group (its primary group only: this is what the request tells) or root. */
	if (c->uid != 0 && c->gid != in.gid)
		in.mode &= ~(uint32_t)S_ISGID;
	in.ctime = now_ns();
	r = idx_put_inode(v->x, &in);
	if (r == 0)
		*ret_changed = in.mode != old;
out_unlock:
	r = vfs_op_end(v, r);
	vfs_unlock(v);
	return r;
}

int vfs_getxattr(struct vfs *v, uint64_t ino, const char *name, void *buf, size_t size)
{
	int r = check_xattr_name(name);

	if (r == -EOPNOTSUPP)
		return -ENODATA;
	if (r < 0)
		return r;
	vfs_lock(v);
	r = idx_get_xattr(v->x, ino, name, buf, size);
	vfs_unlock(v);
	if (r >= 0 && size > 0 && (size_t)r > size)
		return -ERANGE;
	return r;
}

int vfs_listxattr(struct vfs *v, uint64_t ino, char *buf, size_t size)
{
	int r;

	vfs_lock(v);
	r = idx_list_xattr(v->x, ino, buf, size);
	vfs_unlock(v);
	if (r >= 0 && size > 0 && (size_t)r > size)
		return -ERANGE;
	return r;
}

int vfs_removexattr(struct vfs *v, uint64_t ino, const char *name)
{
	int r = check_xattr_name(name);

	if (r == -EOPNOTSUPP)
		return -ENODATA;
	if (r < 0)
		return r;
	vfs_lock(v);
	r = vfs_op_begin(v);
	if (r == 0) {
		r = idx_remove_xattr(v->x, ino, name);
		if (r == 0)
			r = touch_ctime(v, ino);
		r = vfs_op_end(v, r);
	}
	vfs_unlock(v);
	return r;
}
