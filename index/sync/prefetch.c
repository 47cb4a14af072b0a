/* SPDX-License-Identifier: MIT */
/*
 * What to bring in before it is read: the inodes the most recent jobs read (their access traces),
 * and fetching every file whose data is only on the remote. Both run with the store not serving;
 * sync_fetch_all makes its own mutex for the fetcher and takes it around each index read.
 */
#include "sync_priv.h"

int sync_recent_reads(struct store *st, struct remote *rem, int64_t max_age_s, uint64_t **ret_inos,
		      size_t *ret_n)
{
	struct idx *x = store_idx(st);
	struct merge m = {.st = st, .x = x};
	struct names ns = {0};
	uint64_t *inos = NULL;
	size_t n = 0, cap = 0, used = 0;
	int64_t oldest = now_ns() - max_age_s * 1000000000;
	int r;

	r = list_sorted(rem, "trace/", &ns);
	for (size_t i = ns.n; i-- > 0 && r == 0 && used < TRACES_MAX;) {
		const char *base = ns.v[i] + strlen("trace/");
		struct cat *c;

		if ((int64_t)strtoull(base, NULL, 16) < oldest)
			break;
		if (load_catalog(st, rem, ns.v[i], &c, NULL) < 0)
			continue;
		used++;
		for (size_t j = 0; j < c->n_entries && r == 0; j++) {
			const struct cat_entry *e = &c->entries[j];
			const char *name = strrchr(e->path, '/');
			char dir[IDX_PATH_MAX + 1];
			uint64_t parent, ino;

			if (e->type != CAT_E_READ)
				continue;
			snprintf(dir, sizeof(dir), "%.*s", name ? (int)(name - e->path) : 0,
				 e->path);
			if (resolve_dir(&m, dir, &parent) != 1 ||
			    idx_lookup(x, parent, name ? name + 1 : e->path, &ino) != 1)
				continue;
			if (n == cap) {
				size_t ncap = cap ? cap * 2 : 256;
				uint64_t *nv = realloc(inos, ncap * sizeof(*nv));

				if (!nv) {
					r = -ENOMEM;
					break;
				}
				inos = nv;
				cap = ncap;
			}
			inos[n++] = ino;
		}
		cat_free(c);
	}
	smap_free(&m.dirs, NULL);
	names_free(&ns);
	if (r < 0) {
		free(inos);
		return r;
	}
	*ret_inos = inos;
	*ret_n = n;
	return 0;
}

/* ---- fetching everything ---- */

int sync_fetch_all(struct store *st, struct remote *rem,
		   void (*progress)(void *data, uint64_t done, uint64_t total), void *data,
		   struct fetcher_stats *ret)
{
	pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	struct idx *x = store_idx(st);
	struct fetcher *f = NULL;
	struct fetcher_stats fs;
	uint64_t *inos = NULL, total = 0;
	size_t n = 0;
	int r;

	memset(ret, 0, sizeof(*ret));
	r = idx_remote_only_files(x, &inos, &n, &total);
	if (r < 0)
		return r;
	r = fetcher_new(st, rem, &lock, NULL, &f);
	if (r < 0) {
		free(inos);
		return r;
	}
	for (size_t i = 0; i <= n; i++) {
		/* Keep the queue short: memory stays bounded and progress honest. */
		while (!fetcher_idle_below(f, i == n ? 1 : 64)) {
			fetcher_get_stats(f, &fs);
			if (progress)
				progress(data, fs.bytes, total);
			usleep(20000);
		}
		if (i < n) {
			struct idx_extent *ext = NULL;
			size_t ne = 0;

			pthread_mutex_lock(&lock);
			r = idx_get_extents(x, inos[i], &ext, &ne);
			pthread_mutex_unlock(&lock);
			if (r < 0)
				break;
			fetcher_prefetch(f, ext, ne);
			free(ext);
		}
	}
	fetcher_drain(f);
	fetcher_get_stats(f, ret);
	if (progress)
		progress(data, ret->bytes, total);
	fetcher_free(f);
	free(inos);
	if (r == 0)
		r = store_sync_packs(st);
	if (r == 0)
		r = idx_commit(x);
	return r;
}
