/* SPDX-License-Identifier: MIT */
/*
 * The remote's config ("config": format and chunker parameters, an id) and the binding of the
 * store's sync state to one remote. Runs with the store not serving, or locked by the CLI: it
 * takes no lock.
 */
#include "sync_priv.h"

/*
 * Tie the store's sync state to one remote. The state (catalogs seen, base, remote locations)
 * means nothing against another remote; it is reset when the store moves to a new one, unless
 * data of the old one is still only there.
 */
static int bind_remote(struct store *st, const char *id, char *err, size_t errlen)
{
	struct idx *x = store_idx(st);
	char old[128] = "";
	struct idx_stats s;
	int r;

	r = idx_meta_get(x, "remote_id", old, sizeof(old));
	if (r < 0)
		return r;
	if (r == 1 && strcmp(old, id) == 0)
		return 0;
	if (r == 1) {
		r = idx_get_stats(x, &s);
		if (r < 0)
			return r;
		if (s.remote_only_bytes) {
			snprintf(err, errlen,
				 "this store caches another remote and holds %" PRIu64
				 " bytes that are only there: pull them from it first, or use a "
				 "new store for this remote",
				 s.remote_only_bytes);
			return -EXDEV;
		}
	}
	r = idx_begin(x);
	if (r == 0 && *old)
		r = idx_sync_forget(x);
	if (r == 0)
		r = idx_meta_set(x, "remote_id", id);
	if (r == 0)
		r = idx_commit(x);
	else
		idx_rollback(x);
	return r;
}

int sync_check_remote(struct store *st, struct remote *rem, unsigned flags, char *err,
		      size_t errlen)
{
	const struct chunker_params *cp = store_chunker_params(st);
	unsigned format = 0, mn = 0, avg = 0, mx = 0;
	char text[512], id[128] = "";
	void *data = NULL;
	size_t len = 0;
	int r;

	r = remote_get(rem, "config", 0, 0, &data, &len);
	if (r == -ENOENT) {
		uint8_t rnd[16];
		int n;

		if (!(flags & SYNC_REMOTE_CREATE))
			return 0; /* a new, empty remote: nothing to read, nothing to bind to yet */
		if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
			return -EIO;
		hash_hex(rnd, sizeof(rnd), id);
		n = snprintf(text, sizeof(text),
			     "# pkgcachefs remote\nformat = %d\nchunk_min = %u\n"
			     "chunk_avg = %u\nchunk_max = %u\nid = %s\n",
			     FORMAT_VERSION, cp->min, cp->avg, cp->max, id);
		r = remote_put(rem, "config", text, (size_t)n);
		if (r < 0) {
			snprintf(err, errlen, "cannot write the remote's config: %s",
				 remote_last_error());
			return r;
		}
		return flags & SYNC_REMOTE_BIND ? bind_remote(st, id, err, errlen) : 0;
	}
	if (r < 0) {
		snprintf(err, errlen, "cannot read the remote's config: %s", remote_last_error());
		return r;
	}
	if (len >= sizeof(text)) {
		free(data);
		snprintf(err, errlen, "the remote's config is not a pkgcachefs config");
		return -EPROTO;
	}
	memcpy(text, data, len);
	text[len] = '\0';
	free(data);
	for (char *save, *line = strtok_r(text, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		sscanf(line, "format = %u", &format);
		sscanf(line, "chunk_min = %u", &mn);
		sscanf(line, "chunk_avg = %u", &avg);
		sscanf(line, "chunk_max = %u", &mx);
		sscanf(line, "id = %64[0-9a-f]", id);
	}
	if (format > FORMAT_VERSION) {
		snprintf(err, errlen, "the remote was written by a newer pkgcachefs (format %u)",
			 format);
		return -EPROTO;
	}
	if (format == 0 || mn != cp->min || avg != cp->avg || mx != cp->max) {
		snprintf(err, errlen,
			 "the remote's chunk sizes (%u/%u/%u) differ from this store's (%u/%u/%u): "
			 "use a new store for this remote",
			 mn, avg, mx, cp->min, cp->avg, cp->max);
		return -EPROTO;
	}
	if (!*id)
		snprintf(id, sizeof(id), "url:%.120s", remote_url(rem));
	return flags & SYNC_REMOTE_BIND ? bind_remote(st, id, err, errlen) : 0;
}
