/* The Stat reply: server-wide numbers, per-volume entries filtered by
 * visibility, pages that fit one frame and cover every volume once. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "stat_reply.h"

#define NVOLS 600

/* Visible unless the name starts with "secret". */
static bool not_secret(void *arg, const char *volume)
{
	(void)arg;
	return strncmp(volume, "secret", 6) != 0;
}

static struct h2_store_stats st = {.total_bytes = 1000, .volumes = NVOLS};

static const H2__OpStats *find_op(H2__OpStats **ops, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(ops[i]->op, name) == 0)
			return ops[i];
	return NULL;
}

Test(stat_reply, global_numbers_and_ops)
{
	struct h2_metrics *m = h2_metrics_new();
	struct h2_stat_query q = {
	    .m = m, .st = &st, .visible = not_secret, .budget = 60000};
	struct h2_stat_reply *r;
	const H2__StatResult *s;
	const H2__OpStats *rd;
	uint64_t now = h2_metrics_now();

	h2_metrics_request(m, NULL, H2_MPROTO_NATIVE, H2_MOP_READ, 0, 100, now);
	h2_metrics_request(m, NULL, H2_MPROTO_NBD, H2_MOP_READ, 2, 100, now);
	h2_metrics_conn_open(m, H2_MPROTO_NBD);
	cr_assert_eq(h2_stat_reply_build(&q, &r), 0);
	s = h2_stat_reply_result(r);
	cr_assert_eq(s->total_bytes, 1000);
	cr_assert_eq(s->requests, 2);
	cr_assert_eq(s->errors, 1);
	cr_assert_eq(s->connections, 1);
	cr_assert_eq(s->nbd_connections, 1);
	cr_assert_eq(s->n_ops, H2_MOP_COUNT, "every operation, always");
	rd = find_op(s->ops, s->n_ops, "read");
	cr_assert_not_null(rd);
	cr_assert_eq(rd->requests, 2);
	cr_assert_eq(rd->native_requests, 1);
	cr_assert_eq(rd->nbd_requests, 1);
	cr_assert_eq(rd->bytes, 100);
	cr_assert_eq(rd->errors, 1);
	cr_assert_eq(rd->latency->count, 2);
	cr_assert_eq(s->n_errors_by_code, 1);
	cr_assert_eq(s->errors_by_code[0]->code, H2__STATUS__OUT_OF_RANGE);
	cr_assert_eq(s->n_volume_stats, 0);
	h2_stat_reply_free(r);
	h2_metrics_free(m);
}

/* NVOLS volumes in the store and in the registry, each with some
 * requests; every tenth is "secret-..." and invisible. */
static struct h2_vol_info *many_volumes(struct h2_metrics *m)
{
	struct h2_vol_info *vols = calloc(NVOLS, sizeof(*vols));
	uint64_t now = h2_metrics_now();

	for (int i = 0; i < NVOLS; i++) {
		struct h2_vmetrics *v;

		snprintf(vols[i].name, sizeof(vols[i].name), "%s-%04d",
			 i % 10 ? "volume-with-a-rather-long-name" : "secret",
			 i);
		vols[i].size = (uint64_t)i << 20;
		v = h2_metrics_volume_get(m, vols[i].name);
		for (int op = 0; op < H2_MOP_COUNT; op++)
			h2_metrics_request(m, v, H2_MPROTO_NATIVE, op, op % 3,
					   4096, now);
		h2_metrics_volume_put(v);
	}
	h2_stat_sort_vols(vols, NVOLS);
	return vols;
}

Test(stat_reply, pages_fit_a_frame_and_cover_every_visible_volume_once)
{
	struct h2_metrics *m = h2_metrics_new();
	struct h2_vol_info *vols = many_volumes(m);
	char after[128] = "", prev[128] = "";
	int pages = 0, seen = 0;

	for (;;) {
		struct h2_stat_query q = {.m = m,
					  .st = &st,
					  .vols = vols,
					  .nvols = NVOLS,
					  .after = *after ? after : NULL,
					  .visible = not_secret,
					  .budget = H2_FRAME_MAX_HEADER - 64};
		H2__Response resp = H2__RESPONSE__INIT;
		struct h2_stat_reply *r;
		const H2__StatResult *s;

		cr_assert_eq(h2_stat_reply_build(&q, &r), 0);
		s = h2_stat_reply_result(r);
		resp.id = UINT64_MAX;
		resp.result_case = H2__RESPONSE__RESULT_STAT;
		resp.stat = (H2__StatResult *)s;
		/* The whole frame, envelope included, is within limits. */
		cr_assert_leq(h2_frame_response_size(&resp),
			      H2_FRAME_PREFIX + H2_FRAME_MAX_HEADER);
		cr_assert_gt(s->n_volume_stats, 0);
		for (size_t i = 0; i < s->n_volume_stats; i++) {
			const H2__VolumeStats *v = s->volume_stats[i];

			cr_assert_gt(strcmp(v->name, prev), 0, "in order");
			cr_assert_neq(strncmp(v->name, "secret", 6), 0,
				      "invisible volume %s listed", v->name);
			cr_assert_eq(v->n_ops, H2_MOP_COUNT);
			snprintf(prev, sizeof(prev), "%s", v->name);
			seen++;
		}
		pages++;
		if (!*s->next_after) {
			h2_stat_reply_free(r);
			break;
		}
		cr_assert_str_eq(s->next_after, prev);
		snprintf(after, sizeof(after), "%s", s->next_after);
		h2_stat_reply_free(r);
	}
	cr_assert_eq(seen, NVOLS - NVOLS / 10);
	cr_assert_gt(pages, 1, "%d volumes should not fit one frame", seen);
	free(vols);
	h2_metrics_free(m);
}

Test(stat_reply, one_volume_even_without_counters)
{
	struct h2_metrics *m = h2_metrics_new();
	struct h2_vol_info vi = {.name = "idle", .size = 7, .used_bytes = 3};
	struct h2_stat_query q = {.m = m,
				  .st = &st,
				  .vols = &vi,
				  .nvols = 1,
				  .volume = "idle",
				  .visible = not_secret,
				  .budget = 60000};
	struct h2_stat_reply *r;
	const H2__StatResult *s;

	cr_assert_eq(h2_stat_reply_build(&q, &r), 0);
	s = h2_stat_reply_result(r);
	cr_assert_eq(s->n_volume_stats, 1);
	cr_assert_str_eq(s->volume_stats[0]->name, "idle");
	cr_assert_eq(s->volume_stats[0]->size, 7);
	cr_assert_eq(s->volume_stats[0]->used_bytes, 3);
	cr_assert_eq(s->volume_stats[0]->n_ops, 0);
	cr_assert_str_eq(s->next_after, "");
	h2_stat_reply_free(r);

	/* Invisible: no entry even when asked by name. */
	snprintf(vi.name, sizeof(vi.name), "secret-x");
	q.volume = "secret-x";
	cr_assert_eq(h2_stat_reply_build(&q, &r), 0);
	cr_assert_eq(h2_stat_reply_result(r)->n_volume_stats, 0);
	h2_stat_reply_free(r);
	h2_metrics_free(m);
}

Test(stat_reply, registry_entries_not_in_the_store_are_left_out)
{
	struct h2_metrics *m = h2_metrics_new();
	struct h2_vmetrics *gone = h2_metrics_volume_get(m, "gone");
	struct h2_vmetrics *here = h2_metrics_volume_get(m, "here");
	struct h2_vol_info vi = {.name = "here"};
	struct h2_stat_query q = {.m = m,
				  .st = &st,
				  .vols = &vi,
				  .nvols = 1,
				  .visible = not_secret,
				  .budget = 60000};
	struct h2_stat_reply *r;
	const H2__StatResult *s;

	h2_metrics_volume_handle(here, true);
	cr_assert_eq(h2_stat_reply_build(&q, &r), 0);
	s = h2_stat_reply_result(r);
	cr_assert_eq(s->n_volume_stats, 1);
	cr_assert_str_eq(s->volume_stats[0]->name, "here");
	cr_assert_eq(s->volume_stats[0]->open_handles, 1);
	h2_stat_reply_free(r);
	h2_metrics_volume_handle(here, false);
	h2_metrics_volume_put(here);
	h2_metrics_volume_put(gone);
	h2_metrics_free(m);
}
