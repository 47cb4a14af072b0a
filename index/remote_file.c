/* SPDX-License-Identifier: MIT */
/*
 * The file:// remote: objects are plain files under a directory, typically a network share
 * (NFS, SMB) or a folder synchronised between machines.
 *
 * Readers must never see a partial object, so a put writes "<name>.<pid>.<random>.tmp" in the
 * object's own directory, fsyncs it, renames it over the name and fsyncs the directory. Listings
 * skip "*.tmp", and names ending in ".tmp" are refused (remote_name_valid), so an upload in flight
 * is invisible. Sub-directories are created on demand with mode 0777 less the umask: the share's
 * owner decides who may write. A file's size comes from fstat; a range past it is -EIO.
 */
#include "remote_priv.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

static char *obj_path(const struct remote *r, const char *name)
{
	char *p;

	if (asprintf(&p, "%s/%s", r->dir, name) < 0)
		return NULL;
	return p;
}

static int file_get(struct remote *r, const char *name, uint64_t off, uint64_t len,
		    struct remote_sink *s)
{
	char *path = obj_path(r, name);
	struct stat st;
	uint64_t n;
	int fd, ret;

	if (!path)
		return -ENOMEM;
	atomic_fetch_add(&r->requests, 1);
	/*
	 * Whoever can write the remote's directory can plant a FIFO (an open for reading would
	 * wait for a writer forever), a device or a symlink: O_NONBLOCK makes the open return,
	 * O_NOFOLLOW refuses the symlink, and only a regular file is read.
	 */
	fd = open(path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		if (ret == -ELOOP) {
			remote_set_error("GET %s/%s: a symbolic link, not an object", r->url, name);
			ret = -EIO;
		}
		free(path);
		return ret;
	}
	free(path);
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		goto out_close;
	}
	if (!S_ISREG(st.st_mode)) {
		if (!S_ISDIR(st.st_mode))
			remote_set_error("GET %s/%s: not a regular file (mode %06o)", r->url, name,
					 (unsigned)st.st_mode);
		ret = S_ISDIR(st.st_mode) ? -ENOENT : -EIO;
		goto out_close;
	}
	if ((off > 0 && off >= (uint64_t)st.st_size) || (len && off + len > (uint64_t)st.st_size)) {
		remote_set_error("GET %s/%s: %llu bytes at %llu asked, the object has %llu "
				 "(truncated object)",
				 r->url, name, (unsigned long long)len, (unsigned long long)off,
				 (unsigned long long)st.st_size);
		ret = -EIO;
		goto out_close;
	}
	n = len ? len : (uint64_t)st.st_size - off;
	if (n > s->limit) {
		ret = -EFBIG;
		goto out_close;
	}
	if (!s->fixed) {
		s->buf = malloc(n ? n : 1);
		if (!s->buf) {
			ret = -ENOMEM;
			goto out_close;
		}
	}
	ret = pread_all(fd, s->buf, n, (off_t)off);
	if (ret == 0) {
		s->len = n;
		atomic_fetch_add(&r->bytes_in, n);
	}
out_close:
	close(fd);
	return ret;
}

/* mkdir -p of the directories leading to name. */
static int make_parents(const struct remote *r, const char *name)
{
	char *path = obj_path(r, name);
	size_t base = strlen(r->dir) + 1;
	int ret = 0;

	if (!path)
		return -ENOMEM;
	for (char *p = path + base; (p = strchr(p, '/')); p++) {
		*p = '\0';
		if (mkdir(path, 0777) < 0 && errno != EEXIST) {
			ret = -errno;
			*p = '/';
			break;
		}
		*p = '/';
	}
	free(path);
	return ret;
}

static int fsync_parent(const char *path)
{
	char *dir = strdup(path), *slash;
	int fd, ret = 0;

	if (!dir)
		return -ENOMEM;
	slash = strrchr(dir, '/');
	if (slash == dir)
		slash[1] = '\0';
	else if (slash)
		*slash = '\0';
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
	} else {
		/* Some network filesystems refuse fsync on a directory: the rename is still done.
		 */
		if (fsync(fd) < 0 && errno != EINVAL && errno != ENOTSUP && errno != EBADF)
			ret = -errno;
		close(fd);
	}
	free(dir);
	return ret;
}

static int copy_src(int fd, const struct remote_src *src)
{
	char *buf;
	uint64_t done = 0;
	int ret = 0;

	if (src->fd < 0)
		return pwrite_all(fd, src->data, src->len, 0);
	buf = malloc(1 << 20);
	if (!buf)
		return -ENOMEM;
	while (done < src->len) {
		size_t n = (size_t)MIN(src->len - done, (uint64_t)(1 << 20));

		ret = pread_all(src->fd, buf, n, (off_t)done);
		if (ret == 0)
			ret = pwrite_all(fd, buf, n, (off_t)done);
		if (ret)
			break;
		done += n;
	}
	free(buf);
	return ret;
}

static int file_put(struct remote *r, const char *name, const struct remote_src *src)
{
	char *path = obj_path(r, name), *tmp = NULL;
	uint32_t rnd = 0;
	int fd, ret;

	if (!path)
		return -ENOMEM;
	atomic_fetch_add(&r->requests, 1);
	if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != sizeof(rnd))
		rnd = (uint32_t)mono_ns();
	if (asprintf(&tmp, "%s.%ld.%08x.tmp", path, (long)getpid(), rnd) < 0) {
		tmp = NULL;
		ret = -ENOMEM;
		goto out_free;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
	if (fd < 0 && errno == ENOENT) {
		ret = make_parents(r, name);
		if (ret)
			goto out_free;
		fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
	}
	if (fd < 0) {
		ret = -errno;
		goto out_free;
	}
	ret = copy_src(fd, src);
	if (ret == 0 && fsync(fd) < 0)
		ret = -errno;
	if (close(fd) < 0 && ret == 0)
		ret = -errno;
	if (ret == 0 && rename(tmp, path) < 0)
		ret = -errno;
	if (ret) {
		unlink(tmp);
		goto out_free;
	}
	atomic_fetch_add(&r->bytes_out, src->len);
	ret = fsync_parent(path);
out_free:
	free(tmp);
	free(path);
	return ret;
}

static int file_head(struct remote *r, const char *name, uint64_t *ret_size)
{
	char *path = obj_path(r, name);
	struct stat st;
	int ret;

	if (!path)
		return -ENOMEM;
	atomic_fetch_add(&r->requests, 1);
	ret = lstat(path, &st) < 0 ? -errno : 0; /* a symlink is not an object (file_get) */
	free(path);
	if (ret == -ENOTDIR)
		return -ENOENT;
	if (ret)
		return ret;
	if (S_ISDIR(st.st_mode))
		return -ENOENT;
	if (!S_ISREG(st.st_mode))
		return -EIO;
	*ret_size = (uint64_t)st.st_size;
	return 0;
}

static int file_del(struct remote *r, const char *name)
{
	char *path = obj_path(r, name);
	int ret;

	if (!path)
		return -ENOMEM;
	atomic_fetch_add(&r->requests, 1);
	ret = unlink(path) < 0 ? -errno : 0;
	free(path);
	if (ret == -ENOTDIR || ret == -EISDIR)
		ret = -ENOENT;
	return ret;
}

static int file_list(struct remote *r, const char *dir, struct remote_entries *e)
{
	char *path;
	DIR *d;
	struct dirent *de;
	int ret = 0;

	if (asprintf(&path, "%s/%s", r->dir, dir) < 0)
		return -ENOMEM;
	atomic_fetch_add(&r->requests, 1);
	d = opendir(path);
	free(path);
	if (!d)
		return errno == ENOTDIR ? -ENOENT : -errno;
	for (;;) {
		struct stat st;
		size_t n;

		errno = 0;
		de = readdir(d);
		if (!de) {
			ret = -errno;
			break;
		}
		n = strlen(de->d_name);
		if (de->d_name[0] == '.' || (n >= 4 && strcmp(de->d_name + n - 4, ".tmp") == 0))
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				continue; /* deleted meanwhile */
			ret = -errno;
			break;
		}
		if (!S_ISREG(st.st_mode))
			continue;
		ret = remote_entries_add(e, de->d_name, n, (uint64_t)st.st_size);
		if (ret)
			break;
	}
	closedir(d);
	return ret;
}

static const struct remote_ops file_ops = {
	.scheme = "file",
	.get = file_get,
	.put = file_put,
	.head = file_head,
	.del = file_del,
	.list = file_list,
};

static int hexdig(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int remote_file_open(struct remote *r, const char *url, char *err, size_t errlen)
{
	const char *p = url + 7;
	struct stat st;
	char *dir;
	size_t o = 0, n;

	if (strncmp(p, "localhost/", 10) == 0)
		p += 9;
	if (p[0] != '/') {
		snprintf(err, errlen,
			 "file remote URL must name an absolute directory: file:///path");
		return -EINVAL;
	}
	n = strlen(p);
	dir = malloc(n + 1);
	if (!dir)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '%' && i + 2 < n && hexdig(p[i + 1]) >= 0 && hexdig(p[i + 2]) >= 0) {
			dir[o++] = (char)(hexdig(p[i + 1]) * 16 + hexdig(p[i + 2]));
			i += 2;
		} else if (p[i] == '?' || p[i] == '#' || p[i] == '%') {
			free(dir);
			snprintf(err, errlen, "file remote URL must be a plain path: file:///path");
			return -EINVAL;
		} else {
			dir[o++] = p[i];
		}
	}
	while (o > 1 && dir[o - 1] == '/')
		o--;
	dir[o] = '\0';
	if (o == 0 || memchr(dir, '\0', o) != NULL) {
		free(dir);
		snprintf(err, errlen, "file remote URL must be a plain path: file:///path");
		return -EINVAL;
	}
	if (stat(dir, &st) < 0) {
		int e = errno;

		snprintf(err, errlen, "remote directory %s: %s: create it or mount the share first",
			 dir, strerror(e));
		free(dir);
		return -e;
	}
	if (!S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "remote %s is not a directory", dir);
		free(dir);
		return -ENOTDIR;
	}
	r->url = strdup(url);
	if (!r->url) {
		free(dir);
		return -ENOMEM;
	}
	r->dir = dir;
	r->ops = &file_ops;
	return 0;
}
