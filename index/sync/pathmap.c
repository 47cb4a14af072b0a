/* SPDX-License-Identifier: MIT */
/*
 * The path map (smap): a string-keyed hash map with open addressing whose keys it owns, used for
 * paths (directories resolved by a merge, the base of a push, the winners per path), seeded per
 * map because those paths come from remote catalogs; and idset, a set of non-zero 64-bit ids.
 * Plain data structures: no lock, no index.
 */
#include "sync_priv.h"

#include <xxhash.h>

struct smap_slot *smap_slot(struct smap *m, const char *key)
{
	size_t i = (size_t)XXH3_64bits_withSeed(key, strlen(key), m->seed) & (m->cap - 1);

	m->probes++;
	while (m->slots[i].key && strcmp(m->slots[i].key, key) != 0) {
		i = (i + 1) & (m->cap - 1);
		m->probes++;
	}
	return &m->slots[i];
}

void *smap_get(struct smap *m, const char *key)
{
	return m->cap ? smap_slot(m, key)->val : NULL;
}

static int smap_grow(struct smap *m)
{
	struct smap old = *m;

	m->cap = old.cap ? old.cap * 2 : 1024;
	if (!old.cap)
		m->seed = util_random_seed();
	m->slots = calloc(m->cap, sizeof(*m->slots));
	if (!m->slots) {
		*m = old;
		return -ENOMEM;
	}
	m->n = 0;
	for (size_t i = 0; i < old.cap; i++) {
		if (old.slots[i].key) {
			struct smap_slot *s = smap_slot(m, old.slots[i].key);

			*s = old.slots[i];
			m->n++;
		}
	}
	free(old.slots);
	return 0;
}

/* Set key to val (copying key when new). */
int smap_put(struct smap *m, const char *key, void *val)
{
	struct smap_slot *s;

	if ((m->n + 1) * 2 > m->cap && smap_grow(m) < 0)
		return -ENOMEM;
	s = smap_slot(m, key);
	if (!s->key) {
		s->key = strdup(key);
		if (!s->key)
			return -ENOMEM;
		m->n++;
	}
	s->val = val;
	return 0;
}

/* Free the map; free_val (may be NULL) is called on each value. */
void smap_free(struct smap *m, void (*free_val)(void *))
{
	for (size_t i = 0; i < m->cap; i++) {
		if (m->slots[i].key) {
			free(m->slots[i].key);
			if (free_val)
				free_val(m->slots[i].val);
		}
	}
	free(m->slots);
	memset(m, 0, sizeof(*m));
}

/* Add id: 1 when it was new, 0 when already there, -ENOMEM. */
int idset_add(struct idset *s, uint64_t id)
{
	size_t i;

	if ((s->n + 1) * 2 > s->cap) {
		struct idset old = *s;

		s->cap = old.cap ? old.cap * 2 : 1024;
		s->v = calloc(s->cap, sizeof(*s->v));
		if (!s->v) {
			*s = old;
			return -ENOMEM;
		}
		s->n = 0;
		for (size_t k = 0; k < old.cap; k++)
			if (old.v[k])
				idset_add(s, old.v[k]);
		free(old.v);
	}
	for (i = (size_t)(id * 0x9e3779b97f4a7c15ull) & (s->cap - 1); s->v[i];
	     i = (i + 1) & (s->cap - 1))
		if (s->v[i] == id)
			return 0;
	s->v[i] = id;
	s->n++;
	return 1;
}
