/*
 * lib_stat.c - libh2client's statistics: h2_stat (totals) and
 * h2_stat_report_get (everything, see h2client.h).
 *
 * The server sends the per-volume entries a page at a time (as many as
 * fit in one frame, StatReq.after / StatResult.next_after); the report
 * gathers every page.  The server-wide part comes from the first page.
 * Everything in a report is allocated separately and freed by
 * h2_stat_report_free; error code names are the library's static
 * strings.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* The longest volume name, as in h2_volume_info.name. */
#define STAT_NAME_MAX (sizeof(((h2_volume_info *)0)->name) - 1)

/* One Stat request and its reply (caller frees *resp on success). */
static int stat_call(h2_client *c, const char *volume, const char *after,
		     H2__Response **resp)
{
	H2__Request rq = H2__REQUEST__INIT;
	H2__StatReq m = H2__STAT_REQ__INIT;
	struct h2_call call = {.kind = H2_CALL_MSG, .msg = &rq};
	int rc;

	m.volume = (char *)(volume ? volume : "");
	m.after = (char *)(after ? after : "");
	rq.op_case = H2__REQUEST__OP_STAT;
	rq.stat = &m;
	rc = h2_conn_call(c, &call);
	if (rc < 0) {
		h2_frame_response_free(call.resp);
		return rc;
	}
	if (call.resp->result_case != H2__RESPONSE__RESULT_STAT) {
		h2_frame_response_free(call.resp);
		return h2_ops_fail(H2_EPROTO, "the server answered Stat "
					      "without its result");
	}
	*resp = call.resp;
	return 0;
}

static void stat_totals(const H2__StatResult *s, h2_stats *out)
{
	*out = (h2_stats){
	    .total_bytes = s->total_bytes,
	    .used_bytes = s->used_bytes,
	    .free_bytes = s->free_bytes,
	    .dirty_bytes = s->dirty_bytes,
	    .flushes = s->flushes,
	    .flush_ns_total = s->flush_ns_total,
	    .durable_tid = s->durable_tid,
	    .dev_bytes_written = s->dev_bytes_written,
	    .client_bytes_written = s->client_bytes_written,
	    .client_bytes_read = s->client_bytes_read,
	    .volumes = s->volumes,
	    .connections = s->connections,
	    .requests = s->requests,
	    .errors = s->errors,
	};
}

int h2_stat(h2_client *c, h2_stats *out)
{
	H2__Response *resp = NULL;
	int rc;

	if (!c || !out)
		return h2_ops_fail(H2_EINVAL, "h2_stat: %s is NULL",
				   !c ? "c" : "out");
	rc = stat_call(c, NULL, NULL, &resp);
	if (rc < 0)
		return rc;
	stat_totals(resp->stat, out);
	h2_frame_response_free(resp);
	return 0;
}

/* ---------------------------------------------------------------------- */
/* Reports.                                                               */

static void free_ops(h2_op_stats **ops, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (!ops[i])
			continue;
		free((char *)ops[i]->op);
		free(ops[i]);
	}
	free(ops);
}

static void free_errors(h2_error_stats **e, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(e[i]);
	free(e);
}

static void free_volume(h2_volume_stats *v)
{
	if (!v)
		return;
	free((char *)v->name);
	free_ops(v->ops, v->nops);
	free_errors(v->errors_by_code, v->nerrors);
	free(v);
}

void h2_stat_report_free(h2_stat_report *r)
{
	if (!r)
		return;
	free_ops(r->ops, r->nops);
	free_errors(r->errors_by_code, r->nerrors);
	for (size_t i = 0; i < r->nvolumes; i++)
		free_volume(r->volumes[i]);
	free(r->volumes);
	free(r);
}

const h2_op_stats *h2_op_stats_find(h2_op_stats *const *ops, size_t n,
				    const char *op)
{
	for (size_t i = 0; ops && op && i < n; i++)
		if (strcmp(ops[i]->op, op) == 0)
			return ops[i];
	return NULL;
}

/* Copy the wire's operations; sums into *requests and *errors. */
static int copy_ops(H2__OpStats *const *in, size_t n, h2_op_stats ***out,
		    size_t *nout, uint64_t *requests, uint64_t *errors)
{
	h2_op_stats **ops = calloc(n + 1, sizeof(*ops));

	*out = ops;
	*nout = 0;
	if (!ops)
		return H2_ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const H2__OpStats *o = in[i];
		const H2__LatencySummary *l = o->latency;
		h2_op_stats *d = calloc(1, sizeof(*d));

		if (!d || !(d->op = strdup(o->op ? o->op : ""))) {
			free(d);
			return H2_ENOMEM;
		}
		ops[(*nout)++] = d;
		d->requests = o->requests;
		d->native_requests = o->native_requests;
		d->nbd_requests = o->nbd_requests;
		d->bytes = o->bytes;
		d->errors = o->errors;
		if (l) {
			d->latency.count = l->count;
			d->latency.sum_ns = l->sum_ns;
			d->latency.mean_ns =
			    l->count ? l->sum_ns / l->count : 0;
			d->latency.p50_ns = l->p50_ns;
			d->latency.p99_ns = l->p99_ns;
			d->latency.p999_ns = l->p999_ns;
		}
		if (requests)
			*requests += d->requests;
		if (errors)
			*errors += d->errors;
	}
	return 0;
}

static int copy_errors(H2__ErrorCount *const *in, size_t n,
		       h2_error_stats ***out, size_t *nout)
{
	h2_error_stats **e = calloc(n + 1, sizeof(*e));

	*out = e;
	*nout = 0;
	if (!e)
		return H2_ENOMEM;
	for (size_t i = 0; i < n; i++) {
		h2_error_stats *d = calloc(1, sizeof(*d));

		if (!d)
			return H2_ENOMEM;
		e[(*nout)++] = d;
		d->code = h2_status_name(in[i]->code);
		d->err = h2_ops_status_err(in[i]->code);
		d->count = in[i]->count;
	}
	return 0;
}

static int copy_volume(const H2__VolumeStats *in, h2_volume_stats **out)
{
	h2_volume_stats *v = calloc(1, sizeof(*v));
	int rc;

	*out = v;
	if (!v || !(v->name = strdup(in->name ? in->name : "")))
		return H2_ENOMEM;
	v->size = in->size;
	v->used_bytes = in->used_bytes;
	v->open_handles = in->open_handles;
	rc = copy_ops(in->ops, in->n_ops, &v->ops, &v->nops, &v->requests,
		      &v->errors);
	if (rc == 0)
		rc = copy_errors(in->errors, in->n_errors, &v->errors_by_code,
				 &v->nerrors);
	return rc;
}

/* The first page's server-wide part. */
static int copy_global(const H2__StatResult *s, h2_stat_report *r)
{
	int rc;

	stat_totals(s, &r->totals);
	r->last_flush_ns = s->last_flush_ns;
	r->dev_bytes_read = s->dev_bytes_read;
	r->dev_flushes = s->dev_flushes;
	r->write_waits = s->write_waits;
	r->cached_bytes = s->cached_bytes;
	r->block_size = s->block_size;
	r->native_connections = s->native_connections;
	r->nbd_connections = s->nbd_connections;
	r->native_connections_total = s->native_connections_total;
	r->nbd_connections_total = s->nbd_connections_total;
	r->connections_refused = s->connections_refused;
	r->tls_handshake_failures = s->tls_handshake_failures;
	r->start_time_ns = s->start_time_ns;
	r->snapshots = s->snapshots;
	r->snapshot_bytes = s->snapshot_bytes;
	rc = copy_ops(s->ops, s->n_ops, &r->ops, &r->nops, NULL, NULL);
	if (rc == 0)
		rc = copy_errors(s->errors_by_code, s->n_errors_by_code,
				 &r->errors_by_code, &r->nerrors);
	return rc;
}

/* Append a page's volumes. */
static int add_volumes(const H2__StatResult *s, h2_stat_report *r, size_t *cap)
{
	for (size_t i = 0; i < s->n_volume_stats; i++) {
		int rc;

		if (r->nvolumes == *cap) {
			size_t ncap = *cap ? *cap * 2 : 16;
			h2_volume_stats **p =
			    realloc(r->volumes, ncap * sizeof(*p));

			if (!p)
				return H2_ENOMEM;
			r->volumes = p;
			*cap = ncap;
		}
		rc = copy_volume(s->volume_stats[i], &r->volumes[r->nvolumes]);
		if (r->volumes[r->nvolumes])
			r->nvolumes++;
		if (rc < 0)
			return rc;
	}
	return 0;
}

int h2_stat_report_get(h2_client *c, const char *volume, h2_stat_report **out)
{
	h2_stat_report *r;
	char after[STAT_NAME_MAX + 1] = "";
	size_t cap = 0;
	bool first = true;
	int rc = 0;

	if (!c || !out)
		return h2_ops_fail(H2_EINVAL, "h2_stat_report_get: %s is NULL",
				   !c ? "c" : "out");
	if (volume && (!*volume || strlen(volume) > STAT_NAME_MAX))
		return h2_ops_fail(H2_EINVAL,
				   "h2_stat_report_get: volume name must be "
				   "1..%zu bytes",
				   STAT_NAME_MAX);
	r = calloc(1, sizeof(*r));
	if (!r)
		return h2_ops_fail(H2_ENOMEM, "out of memory");
	r->size = sizeof(*r);
	for (;;) {
		H2__Response *resp = NULL;
		const H2__StatResult *s;
		const char *next;
		bool more;

		rc = stat_call(c, volume, after, &resp);
		if (rc < 0)
			break;
		s = resp->stat;
		if (first)
			rc = copy_global(s, r);
		first = false;
		if (rc == 0)
			rc = add_volumes(s, r, &cap);
		next = s->next_after ? s->next_after : "";
		more = *next != 0;
		/* A page must move forward, or a broken server would keep
		 * us asking forever. */
		if (rc == 0 && more &&
		    (volume || strcmp(next, after) <= 0 ||
		     strlen(next) > STAT_NAME_MAX))
			rc = h2_ops_fail(H2_EPROTO,
					 "the server's statistics pages do "
					 "not advance (\"%.128s\" after "
					 "\"%s\")",
					 next, after);
		else if (rc == 0 && more)
			snprintf(after, sizeof(after), "%s", next);
		h2_frame_response_free(resp);
		if (rc < 0 || !more)
			break;
	}
	if (rc == H2_ENOMEM)
		h2_ops_fail(rc, "out of memory");
	if (rc < 0) {
		h2_stat_report_free(r);
		return rc;
	}
	*out = r;
	return 0;
}
