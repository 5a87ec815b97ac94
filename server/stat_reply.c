/*
 * stat_reply.c - build a StatResult (see stat_reply.h).
 *
 * Everything the protobuf structures point to lives in the h2_stat_reply
 * (operation names are static strings), so one free releases it all.
 * Paging: entries are added in name order while the packed size stays
 * under the budget, measured with protobuf-c's own size function, so the
 * reply is never over the frame limit however many volumes there are.
 */
#include "stat_reply.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pb_op {
	H2__OpStats o;
	H2__LatencySummary l;
};

struct pb_errs {
	H2__ErrorCount e[H2_MCODES];
	H2__ErrorCount *p[H2_MCODES];
};

struct pb_vol {
	H2__VolumeStats vs;
	char name[256];
	struct pb_op ops[H2_MOP_COUNT];
	H2__OpStats *opp[H2_MOP_COUNT];
	struct pb_errs errs;
};

struct h2_stat_reply {
	H2__StatResult sr;
	struct pb_op ops[H2_MOP_COUNT];
	H2__OpStats *opp[H2_MOP_COUNT];
	struct pb_errs errs;
	struct pb_vol **vols;
	H2__VolumeStats **vsp;
	size_t nvols, cap;
	char next_after[256];
	struct h2_msnap snap; /* scratch */
};

static int by_name(const void *a, const void *b)
{
	return strcmp(((const struct h2_vol_info *)a)->name,
		      ((const struct h2_vol_info *)b)->name);
}

void h2_stat_sort_vols(struct h2_vol_info *vols, size_t n)
{
	if (n > 1)
		qsort(vols, n, sizeof(*vols), by_name);
}

static const struct h2_vol_info *find_vol(const struct h2_stat_query *q,
					  const char *name)
{
	struct h2_vol_info key;

	snprintf(key.name, sizeof(key.name), "%s", name);
	if (!q->nvols)
		return NULL;
	return bsearch(&key, q->vols, q->nvols, sizeof(*q->vols), by_name);
}

static void fill_op(struct pb_op *p, enum h2_mop op,
		    const struct h2_mop_snap *s)
{
	h2__op_stats__init(&p->o);
	h2__latency_summary__init(&p->l);
	p->o.op = (char *)h2_metrics_op_name(op);
	p->o.native_requests = s->requests[H2_MPROTO_NATIVE];
	p->o.nbd_requests = s->requests[H2_MPROTO_NBD];
	p->o.requests = p->o.native_requests + p->o.nbd_requests;
	p->o.bytes = s->bytes;
	p->o.errors = h2_mop_snap_errors(s);
	p->l.count = s->lat.count;
	p->l.sum_ns = s->lat.sum_ns;
	p->l.p50_ns = h2_hist_quantile(&s->lat, 0.50);
	p->l.p99_ns = h2_hist_quantile(&s->lat, 0.99);
	p->l.p999_ns = h2_hist_quantile(&s->lat, 0.999);
	p->o.latency = &p->l;
}

/* The non-zero error codes of s, summed over operations. */
static size_t fill_errors(struct pb_errs *e, const struct h2_msnap *s)
{
	size_t n = 0;

	for (unsigned c = 0; c < H2_MCODES; c++) {
		uint64_t k = 0;

		for (unsigned op = 0; op < H2_MOP_COUNT; op++)
			k += s->op[op].errors[c];
		if (!k)
			continue;
		h2__error_count__init(&e->e[n]);
		e->e[n].code = (H2__Status)c;
		e->e[n].count = k;
		e->p[n] = &e->e[n];
		n++;
	}
	return n;
}

static void fill_global(struct h2_stat_reply *r, const struct h2_stat_query *q)
{
	const struct h2_store_stats *st = q->st;
	H2__StatResult *sr = &r->sr;
	struct h2_mconn_snap cs;

	h2__stat_result__init(sr);
	sr->total_bytes = st->total_bytes;
	sr->used_bytes = st->used_bytes;
	sr->free_bytes = st->free_bytes;
	sr->dirty_bytes = st->dirty_bytes;
	sr->flushes = st->flushes;
	sr->flush_ns_total = st->flush_ns_total;
	sr->last_flush_ns = st->last_flush_ns;
	sr->durable_tid = st->durable_tid;
	sr->dev_bytes_written = st->dev_bytes_written;
	sr->dev_bytes_read = st->dev_bytes_read;
	sr->dev_flushes = st->dev_flushes;
	sr->client_bytes_written = st->client_bytes_written;
	sr->client_bytes_read = st->client_bytes_read;
	sr->write_waits = st->write_waits;
	sr->cached_bytes = st->cached_bytes;
	sr->volumes = st->volumes;
	sr->snapshots = st->snapshots;
	sr->snapshot_bytes = st->snapshot_bytes;
	sr->block_size = st->block_size;

	h2_metrics_conn_snapshot(q->m, &cs);
	sr->native_connections = cs.open[H2_MPROTO_NATIVE];
	sr->nbd_connections = cs.open[H2_MPROTO_NBD];
	sr->connections = sr->native_connections + sr->nbd_connections;
	sr->native_connections_total = cs.total[H2_MPROTO_NATIVE];
	sr->nbd_connections_total = cs.total[H2_MPROTO_NBD];
	sr->connections_refused =
	    cs.refused[H2_MPROTO_NATIVE] + cs.refused[H2_MPROTO_NBD];
	sr->tls_handshake_failures =
	    cs.tls_failed[H2_MPROTO_NATIVE] + cs.tls_failed[H2_MPROTO_NBD];
	sr->start_time_ns = h2_metrics_start_time(q->m);

	h2_metrics_snapshot(q->m, &r->snap);
	sr->requests = h2_msnap_requests(&r->snap);
	sr->errors = h2_msnap_errors(&r->snap);
	for (unsigned op = 0; op < H2_MOP_COUNT; op++) {
		fill_op(&r->ops[op], op, &r->snap.op[op]);
		r->opp[op] = &r->ops[op].o;
	}
	sr->n_ops = H2_MOP_COUNT;
	sr->ops = r->opp;
	sr->n_errors_by_code = fill_errors(&r->errs, &r->snap);
	sr->errors_by_code = r->errs.p;
}

/* An entry for volume vi with v's counters (v NULL: none yet). */
static struct pb_vol *make_vol(struct h2_stat_reply *r,
			       const struct h2_vol_info *vi,
			       struct h2_vmetrics *v)
{
	struct pb_vol *p = calloc(1, sizeof(*p));
	size_t n = 0;

	if (!p)
		return NULL;
	h2__volume_stats__init(&p->vs);
	snprintf(p->name, sizeof(p->name), "%s", vi->name);
	p->vs.name = p->name;
	p->vs.size = vi->size;
	p->vs.used_bytes = vi->used_bytes;
	if (!v)
		return p;
	p->vs.open_handles = h2_metrics_volume_handles(v);
	h2_metrics_volume_snapshot(v, &r->snap);
	for (unsigned op = 0; op < H2_MOP_COUNT; op++) {
		const struct h2_mop_snap *s = &r->snap.op[op];

		if (s->requests[H2_MPROTO_NATIVE] +
			s->requests[H2_MPROTO_NBD] ==
		    0)
			continue;
		fill_op(&p->ops[n], op, s);
		p->opp[n] = &p->ops[n].o;
		n++;
	}
	p->vs.n_ops = n;
	p->vs.ops = p->opp;
	p->vs.n_errors = fill_errors(&p->errs, &r->snap);
	p->vs.errors = p->errs.p;
	return p;
}

static int add_vol(struct h2_stat_reply *r, struct pb_vol *p)
{
	if (r->nvols == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 16;
		struct pb_vol **v = realloc(r->vols, cap * sizeof(*v));
		H2__VolumeStats **vs;

		if (!v)
			return -ENOMEM;
		r->vols = v;
		vs = realloc(r->vsp, cap * sizeof(*vs));
		if (!vs)
			return -ENOMEM;
		r->vsp = vs;
		r->cap = cap;
	}
	r->vols[r->nvols] = p;
	r->vsp[r->nvols] = &p->vs;
	r->nvols++;
	r->sr.n_volume_stats = r->nvols;
	r->sr.volume_stats = r->vsp;
	return 0;
}

/* Bytes a length-delimited field of n bytes takes (tag of 1 or 2 bytes,
 * varint length, body). */
static size_t field_size(size_t n)
{
	size_t v = 1;

	for (size_t k = n; k >= 0x80; k >>= 7)
		v++;
	return 2 + v + n;
}

/* Without a volume: the registry's entries after q->after, while they
 * fit. */
static int add_page(struct h2_stat_reply *r, const struct h2_stat_query *q)
{
	struct h2_vmetrics **refs = NULL;
	size_t n = 0, used, i;
	int err;

	err = h2_metrics_volumes(q->m, &refs, &n);
	if (err < 0)
		return err;
	/* Room for next_after, should it be needed. */
	used = h2__stat_result__get_packed_size(&r->sr) +
	       field_size(sizeof(r->next_after));
	for (i = 0; i < n; i++) {
		const char *name = h2_metrics_volume_name(refs[i]);
		const struct h2_vol_info *vi;
		struct pb_vol *p;
		size_t sz;

		if (q->after && strcmp(name, q->after) <= 0)
			continue;
		vi = find_vol(q, name);
		if (!vi || !q->visible(q->arg, name))
			continue;
		p = make_vol(r, vi, refs[i]);
		if (!p) {
			err = -ENOMEM;
			break;
		}
		sz = field_size(h2__volume_stats__get_packed_size(&p->vs));
		if (r->nvols > 0 && used + sz > q->budget) {
			free(p);
			snprintf(r->next_after, sizeof(r->next_after), "%s",
				 r->vols[r->nvols - 1]->name);
			break;
		}
		err = add_vol(r, p);
		if (err < 0) {
			free(p);
			break;
		}
		used += sz;
	}
	for (i = 0; i < n; i++)
		h2_metrics_volume_put(refs[i]);
	free(refs);
	return err;
}

int h2_stat_reply_build(const struct h2_stat_query *q,
			struct h2_stat_reply **out)
{
	struct h2_stat_reply *r = calloc(1, sizeof(*r));
	int err = 0;

	if (!r)
		return -ENOMEM;
	fill_global(r, q);
	r->sr.next_after = r->next_after;
	if (q->volume) {
		const struct h2_vol_info *vi = find_vol(q, q->volume);

		if (vi && q->visible(q->arg, vi->name)) {
			struct h2_vmetrics *v =
			    h2_metrics_volume_find(q->m, vi->name);
			struct pb_vol *p = make_vol(r, vi, v);

			h2_metrics_volume_put(v);
			err = p ? add_vol(r, p) : -ENOMEM;
			if (err < 0)
				free(p);
		}
	} else {
		err = add_page(r, q);
	}
	if (err < 0) {
		h2_stat_reply_free(r);
		return err;
	}
	*out = r;
	return 0;
}

H2__StatResult *h2_stat_reply_result(struct h2_stat_reply *r)
{
	return &r->sr;
}

void h2_stat_reply_free(struct h2_stat_reply *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->nvols; i++)
		free(r->vols[i]);
	free(r->vols);
	free(r->vsp);
	free(r);
}
