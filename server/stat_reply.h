/*
 * stat_reply.h - the answer to a Stat request (h2.proto StatResult):
 * the engine's numbers, connection and per-operation counters, and the
 * per-volume entries the asking client may see, paged to fit one frame.
 *
 * No event loop and no store calls here: dispatch.c gathers the engine's
 * numbers and the volume list on a worker, then builds the reply on the
 * loop thread; the unit tests build replies directly.
 */
#ifndef H2D_STAT_REPLY_H
#define H2D_STAT_REPLY_H

#include <stdbool.h>
#include <stddef.h>

#include "h2.pb-c.h"
#include "h2core.h"
#include "metrics.h"

struct h2_stat_query {
	struct h2_metrics *m;
	const struct h2_store_stats *st;
	/* Volumes of the store, sorted by name (strcmp): sizes and used
	 * space; an entry of the registry not in here is left out. */
	const struct h2_vol_info *vols;
	size_t nvols;
	const char *volume; /* only this volume (in vols), or NULL */
	const char *after;  /* volumes sorted after this name; NULL: all */
	/* Whether the client may see a volume (rights other than none). */
	bool (*visible)(void *arg, const char *volume);
	void *arg;
	/* Most bytes the packed StatResult may take (entries that would
	 * go over are left for the next page; the first always goes in). */
	size_t budget;
};

struct h2_stat_reply;

/* Build the reply; 0 or -ENOMEM.  Free *out with h2_stat_reply_free. */
int h2_stat_reply_build(const struct h2_stat_query *q,
			struct h2_stat_reply **out);
/* The StatResult, valid until the reply is freed. */
H2__StatResult *h2_stat_reply_result(struct h2_stat_reply *r);
/* NULL is a no-op. */
void h2_stat_reply_free(struct h2_stat_reply *r);

/* Sort h2_vol_info by name (for h2_stat_query.vols). */
void h2_stat_sort_vols(struct h2_vol_info *vols, size_t n);

#endif
