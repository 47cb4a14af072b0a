/* SPDX-License-Identifier: MIT */
/*
 * The kernel's side of a live merge: the names a merge changed, told to the kernel through the
 * FUSE session so that its dentries (negative ones too), attributes and page cache do not serve
 * the old state. Called by the merge after each batch, with no lock held: the kernel may hold a
 * notification until a request in flight is answered, and that request may wait for v->lock.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <fuse_lowlevel.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "sync.h"
#include "util.h"
#include "vfs.h"

static struct fuse_session *live_se; /* set before the loop starts, cleared after it ends */

void live_set_session(struct fuse_session *se)
{
	__atomic_store_n(&live_se, se, __ATOMIC_RELEASE);
}

static void live_inval(void *data, const struct vfs_inval *iv, size_t n)
{
	struct fuse_session *se = __atomic_load_n(&live_se, __ATOMIC_ACQUIRE);
	uint64_t *count = data;

	if (!se)
		return;
	for (size_t i = 0; i < n; i++) {
		int r;

		if (iv[i].ino) {
			/* Replaced in place: attributes and cached pages go. */
			r = fuse_lowlevel_notify_inval_inode(se, iv[i].ino, 0, 0);
			if (r < 0 && r != -ENOENT)
				log_debug("inval inode %llu: %s", (unsigned long long)iv[i].ino,
					  strerror(-r));
		}
		/* Made, replaced or removed: the dentry, positive or negative, goes; and the
		 * parent's attributes (its mtime, nlink) with it. */
		r = fuse_lowlevel_notify_inval_entry(se, iv[i].parent, iv[i].name,
						     strlen(iv[i].name));
		if (r < 0 && r != -ENOENT)
			log_debug("inval entry %llu/%s: %s", (unsigned long long)iv[i].parent,
				  iv[i].name, strerror(-r));
		(*count)++;
	}
}

void live_inval_attr(uint64_t ino)
{
	struct fuse_session *se = __atomic_load_n(&live_se, __ATOMIC_ACQUIRE);
	int r;

	if (!se)
		return;
	/* A negative offset: attributes only, no page-cache work, so that this may be sent while
	 * a request on the inode is still unanswered. */
	r = fuse_lowlevel_notify_inval_inode(se, ino, -1, 0);
	if (r < 0 && r != -ENOENT)
		log_debug("inval inode %llu: %s", (unsigned long long)ino, strerror(-r));
}

int live_pull(struct vfs *v, bool fetch_data, const struct sync_options *o, struct sync_report *rep,
	      uint64_t *ret_invals)
{
	*ret_invals = 0;
	return vfs_pull(v, fetch_data, live_inval, ret_invals, o, rep);
}

/* Merges of this daemon, for `pkgcachefs stats` and the metrics (STORE/merge-stats). */
static uint64_t merges, merge_failures, names_applied;

void live_record(const char *store, int r, int64_t wall_ns, int64_t took_ns,
		 const struct sync_report *rep)
{
	static struct sync_report last;
	static int64_t last_wall, last_took;
	char path[4096], tmp[4200];
	FILE *f;

	if (r < 0) {
		merge_failures++;
	} else {
		merges++;
		names_applied += rep->applied;
		last = *rep;
		last_wall = wall_ns;
		last_took = took_ns;
	}
	snprintf(path, sizeof(path), "%s/merge-stats", store);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "we");
	if (!f)
		return;
	fprintf(f,
		"merges=%" PRIu64 "\nmerge_failures=%" PRIu64 "\nnames_applied=%" PRIu64
		"\nlast_time=%lld\nlast_catalogs=%" PRIu64 "\nlast_applied=%" PRIu64
		"\nlast_bytes=%" PRIu64 "\nlast_ns=%lld\nlast_error=%d\n",
		merges, merge_failures, names_applied, (long long)last_wall, last.catalogs_read,
		last.applied, last.catalog_bytes, (long long)last_took, r < 0 ? -r : 0);
	if (fclose(f) == 0)
		rename(tmp, path);
	else
		unlink(tmp);
}
