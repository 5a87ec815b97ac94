/*
 * ctl_stat.c - h2ctl stat [VOLUME]: the server's statistics.
 *
 * Without VOLUME: the server-wide numbers (space, flushes, connections,
 * requests), a table of the operations seen with their latency
 * percentiles, and a table of the volumes used since the server started
 * that this client may see.  With VOLUME: that volume's numbers and its
 * operations.  --json prints one document with everything, the same
 * shape either way ("volume_stats" then holds the one volume); byte
 * counts and nanoseconds are exact integers.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

/* Longest name h2_volume_info can carry (its name[] keeps a NUL). */
#define NAME_MAX_LEN (sizeof(((h2_volume_info *)0)->name) - 1)

/* "1 GiB (1073741824 bytes)" */
static const char *bytes(uint64_t v, char *buf, size_t n)
{
	char h[32];

	snprintf(buf, n, "%s (%" PRIu64 " bytes)", ctl_size(v, h, sizeof(h)),
		 v);
	return buf;
}

/* A duration: "850 ns", "12.3 us", "4.56 ms", "1.23 s"; "-" when unknown
 * (no requests). */
static const char *dur(uint64_t ns, bool known, char *buf, size_t n)
{
	if (!known)
		snprintf(buf, n, "-");
	else if (ns < 1000)
		snprintf(buf, n, "%" PRIu64 " ns", ns);
	else if (ns < 1000000)
		snprintf(buf, n, "%.1f us", (double)ns / 1e3);
	else if (ns < 1000000000)
		snprintf(buf, n, "%.2f ms", (double)ns / 1e6);
	else
		snprintf(buf, n, "%.2f s", (double)ns / 1e9);
	return buf;
}

static const char *u64(uint64_t v, char *buf, size_t n)
{
	snprintf(buf, n, "%" PRIu64, v);
	return buf;
}

/* "OUT_OF_RANGE 2, NOT_FOUND 1", or "none". */
static const char *error_list(h2_error_stats *const *e, size_t n, char *buf,
			      size_t len)
{
	size_t o = 0;

	snprintf(buf, len, "none");
	for (size_t i = 0; i < n && o < len; i++)
		o += (size_t)snprintf(buf + o, len - o, "%s%s %" PRIu64,
				      i ? ", " : "", e[i]->code, e[i]->count);
	return buf;
}

/* ---------------------------------------------------------------------- */
/* JSON.                                                                  */

static cJSON *latency_json(const h2_latency *l)
{
	cJSON *o = cJSON_CreateObject();

	if (o && ctl_json_u64(o, "count", l->count) &&
	    ctl_json_u64(o, "sum_ns", l->sum_ns) &&
	    ctl_json_u64(o, "mean_ns", l->mean_ns) &&
	    ctl_json_u64(o, "p50_ns", l->p50_ns) &&
	    ctl_json_u64(o, "p99_ns", l->p99_ns) &&
	    ctl_json_u64(o, "p999_ns", l->p999_ns))
		return o;
	cJSON_Delete(o);
	return NULL;
}

/* {"read": {...}, ...} */
static cJSON *ops_json(h2_op_stats *const *ops, size_t n)
{
	cJSON *o = cJSON_CreateObject();

	for (size_t i = 0; o && i < n; i++) {
		const h2_op_stats *s = ops[i];
		cJSON *e = cJSON_CreateObject(), *l;

		if (!e || !cJSON_AddItemToObject(o, s->op, e)) {
			cJSON_Delete(e);
			goto fail;
		}
		if (!ctl_json_u64(e, "requests", s->requests) ||
		    !ctl_json_u64(e, "native_requests", s->native_requests) ||
		    !ctl_json_u64(e, "nbd_requests", s->nbd_requests) ||
		    !ctl_json_u64(e, "bytes", s->bytes) ||
		    !ctl_json_u64(e, "errors", s->errors))
			goto fail;
		l = latency_json(&s->latency);
		if (!l || !cJSON_AddItemToObject(e, "latency", l)) {
			cJSON_Delete(l);
			goto fail;
		}
	}
	return o;
fail:
	cJSON_Delete(o);
	return NULL;
}

/* {"OUT_OF_RANGE": 2, ...} */
static cJSON *errors_json(h2_error_stats *const *e, size_t n)
{
	cJSON *o = cJSON_CreateObject();

	for (size_t i = 0; o && i < n; i++)
		if (!ctl_json_u64(o, e[i]->code, e[i]->count)) {
			cJSON_Delete(o);
			return NULL;
		}
	return o;
}

static bool add(cJSON *o, const char *key, cJSON *item)
{
	if (item && cJSON_AddItemToObject(o, key, item))
		return true;
	cJSON_Delete(item);
	return false;
}

static cJSON *volume_json(const h2_volume_stats *v)
{
	cJSON *o = cJSON_CreateObject();

	if (o && cJSON_AddStringToObject(o, "name", v->name) &&
	    ctl_json_u64(o, "size", v->size) &&
	    ctl_json_u64(o, "used_bytes", v->used_bytes) &&
	    ctl_json_u64(o, "open_handles", v->open_handles) &&
	    ctl_json_u64(o, "requests", v->requests) &&
	    ctl_json_u64(o, "errors", v->errors) &&
	    add(o, "errors_by_code",
		errors_json(v->errors_by_code, v->nerrors)) &&
	    add(o, "ops", ops_json(v->ops, v->nops)))
		return o;
	cJSON_Delete(o);
	return NULL;
}

static int stat_json(const struct ctl *ctl, const h2_stat_report *r)
{
	const h2_stats *s = &r->totals;
	const char *id = h2_client_identity(ctl->client);
	cJSON *o = cJSON_CreateObject(), *vols;
	bool ok = o != NULL;

	ok = ok && cJSON_AddStringToObject(o, "server", ctl->server);
	ok = ok && (id ? cJSON_AddStringToObject(o, "identity", id)
		       : cJSON_AddNullToObject(o, "identity"));
	ok = ok && ctl_json_u64(o, "total_bytes", s->total_bytes) &&
	     ctl_json_u64(o, "used_bytes", s->used_bytes) &&
	     ctl_json_u64(o, "free_bytes", s->free_bytes) &&
	     ctl_json_u64(o, "dirty_bytes", s->dirty_bytes) &&
	     ctl_json_u64(o, "cached_bytes", r->cached_bytes) &&
	     ctl_json_u64(o, "block_size", r->block_size) &&
	     ctl_json_u64(o, "flushes", s->flushes) &&
	     ctl_json_u64(o, "flush_ns_total", s->flush_ns_total) &&
	     ctl_json_u64(o, "last_flush_ns", r->last_flush_ns) &&
	     ctl_json_u64(o, "durable_tid", s->durable_tid) &&
	     ctl_json_u64(o, "dev_bytes_written", s->dev_bytes_written) &&
	     ctl_json_u64(o, "dev_bytes_read", r->dev_bytes_read) &&
	     ctl_json_u64(o, "dev_flushes", r->dev_flushes) &&
	     ctl_json_u64(o, "client_bytes_written", s->client_bytes_written) &&
	     ctl_json_u64(o, "client_bytes_read", s->client_bytes_read) &&
	     ctl_json_u64(o, "write_waits", r->write_waits) &&
	     ctl_json_u64(o, "volumes", s->volumes) &&
	     ctl_json_u64(o, "snapshots", r->snapshots) &&
	     ctl_json_u64(o, "snapshot_bytes", r->snapshot_bytes) &&
	     ctl_json_u64(o, "connections", s->connections) &&
	     ctl_json_u64(o, "native_connections", r->native_connections) &&
	     ctl_json_u64(o, "nbd_connections", r->nbd_connections) &&
	     ctl_json_u64(o, "native_connections_total",
			  r->native_connections_total) &&
	     ctl_json_u64(o, "nbd_connections_total",
			  r->nbd_connections_total) &&
	     ctl_json_u64(o, "connections_refused", r->connections_refused) &&
	     ctl_json_u64(o, "tls_handshake_failures",
			  r->tls_handshake_failures) &&
	     ctl_json_u64(o, "start_time_ns", r->start_time_ns) &&
	     ctl_json_u64(o, "requests", s->requests) &&
	     ctl_json_u64(o, "errors", s->errors);
	/* null rather than a division by zero before any client write. */
	ok = ok &&
	     (s->client_bytes_written
		  ? cJSON_AddNumberToObject(o, "write_amplification",
					    (double)s->dev_bytes_written /
						(double)s->client_bytes_written)
		  : cJSON_AddNullToObject(o, "write_amplification"));
	ok = ok && add(o, "errors_by_code",
		       errors_json(r->errors_by_code, r->nerrors));
	ok = ok && add(o, "ops", ops_json(r->ops, r->nops));
	vols = ok ? cJSON_AddArrayToObject(o, "volume_stats") : NULL;
	ok = vols != NULL;
	for (size_t i = 0; ok && i < r->nvolumes; i++) {
		cJSON *v = volume_json(r->volumes[i]);

		ok = v && cJSON_AddItemToArray(vols, v);
		if (!ok)
			cJSON_Delete(v);
	}
	if (!ok) {
		cJSON_Delete(o);
		o = NULL;
	}
	return ctl_json_print(o);
}

/* ---------------------------------------------------------------------- */
/* Tables.                                                                */

/* The operations with requests, one row each; false on ENOMEM. */
static bool ops_table(h2_op_stats *const *ops, size_t n)
{
	static const char *const head[] = {"OPERATION", "REQUESTS", "NBD",
					   "ERRORS",	"BYTES",    "MEAN",
					   "P50",	"P99",	    "P99.9"};
	static const enum ctl_align align[] = {CTL_LEFT,  CTL_RIGHT, CTL_RIGHT,
					       CTL_RIGHT, CTL_RIGHT, CTL_RIGHT,
					       CTL_RIGHT, CTL_RIGHT, CTL_RIGHT};
	struct ctl_table *t = ctl_table_new(9, head, align);
	bool ok = t != NULL, any = false;

	for (size_t i = 0; ok && i < n; i++) {
		const h2_op_stats *s = ops[i];
		const h2_latency *l = &s->latency;
		char c[8][32];

		if (!s->requests)
			continue;
		any = true;
		ok = ctl_table_addv(t, s->op, u64(s->requests, c[0], 32),
				    u64(s->nbd_requests, c[1], 32),
				    u64(s->errors, c[2], 32),
				    ctl_size(s->bytes, c[3], 32),
				    dur(l->mean_ns, l->count, c[4], 32),
				    dur(l->p50_ns, l->count, c[5], 32),
				    dur(l->p99_ns, l->count, c[6], 32),
				    dur(l->p999_ns, l->count, c[7], 32));
	}
	if (ok && any) {
		putchar('\n');
		ctl_table_print(t, stdout);
	}
	ctl_table_free(t);
	return ok;
}

/* One operation's p99 of v, or "-". */
static const char *op_p99(const h2_volume_stats *v, const char *op, char *buf,
			  size_t n)
{
	const h2_op_stats *s = h2_op_stats_find(v->ops, v->nops, op);

	return dur(s ? s->latency.p99_ns : 0, s && s->latency.count, buf, n);
}

static uint64_t op_bytes(const h2_volume_stats *v, const char *op)
{
	const h2_op_stats *s = h2_op_stats_find(v->ops, v->nops, op);

	return s ? s->bytes : 0;
}

static bool volumes_table(const h2_stat_report *r)
{
	static const char *const head[] = {
	    "VOLUME", "SIZE", "USED",	 "OPEN",     "REQUESTS",
	    "ERRORS", "READ", "WRITTEN", "READ P99", "WRITE P99"};
	static const enum ctl_align align[] = {
	    CTL_LEFT,  CTL_RIGHT, CTL_RIGHT, CTL_RIGHT, CTL_RIGHT,
	    CTL_RIGHT, CTL_RIGHT, CTL_RIGHT, CTL_RIGHT, CTL_RIGHT};
	struct ctl_table *t;
	bool ok;

	if (!r->nvolumes)
		return true;
	t = ctl_table_new(10, head, align);
	ok = t != NULL;
	for (size_t i = 0; ok && i < r->nvolumes; i++) {
		const h2_volume_stats *v = r->volumes[i];
		char c[9][32];

		ok = ctl_table_addv(
		    t, v->name, ctl_size(v->size, c[0], 32),
		    ctl_size(v->used_bytes, c[1], 32),
		    u64(v->open_handles, c[2], 32), u64(v->requests, c[3], 32),
		    u64(v->errors, c[4], 32),
		    ctl_size(op_bytes(v, "read"), c[5], 32),
		    ctl_size(op_bytes(v, "write"), c[6], 32),
		    op_p99(v, "read", c[7], 32), op_p99(v, "write", c[8], 32));
	}
	if (ok) {
		putchar('\n');
		ctl_table_print(t, stdout);
	}
	ctl_table_free(t);
	return ok;
}

/* The server-wide key/value list. */
static bool global_table(const struct ctl *ctl, const h2_stat_report *r)
{
	const h2_stats *s = &r->totals;
	const char *id = h2_client_identity(ctl->client);
	struct ctl_table *t = ctl_table_new(2, NULL, NULL);
	char v[16][128], d[3][32];
	bool ok;

	if (!t)
		return false;
	if (s->flushes)
		snprintf(v[4], sizeof(v[4]),
			 "%" PRIu64 " (average %s, last %s)", s->flushes,
			 dur(s->flush_ns_total / s->flushes, true, d[0], 32),
			 dur(r->last_flush_ns, true, d[1], 32));
	else
		snprintf(v[4], sizeof(v[4]), "0");
	if (s->client_bytes_written)
		snprintf(v[8], sizeof(v[8]), "%.2f",
			 (double)s->dev_bytes_written /
			     (double)s->client_bytes_written);
	else
		snprintf(v[8], sizeof(v[8]), "-");
	snprintf(v[5], sizeof(v[5]),
		 "%" PRIu64 " open (%" PRIu64 " native, %" PRIu64
		 " NBD); %" PRIu64 " accepted, %" PRIu64 " refused, %" PRIu64
		 " failed TLS",
		 s->connections, r->native_connections, r->nbd_connections,
		 r->native_connections_total + r->nbd_connections_total,
		 r->connections_refused, r->tls_handshake_failures);
	snprintf(v[11], sizeof(v[11]), "%" PRIu64 " (%" PRIu64 " errors)",
		 s->requests, s->errors);
	snprintf(v[15], sizeof(v[15]),
		 "%" PRIu64 " (holding %s only they use)", r->snapshots,
		 ctl_size(r->snapshot_bytes, d[2], 32));
	ok = ctl_table_addv(t, "server", ctl->server) &&
	     ctl_table_addv(t, "identity", id ? id : "-") &&
	     ctl_table_addv(t, "started",
			    ctl_time(r->start_time_ns, v[13], 128)) &&
	     ctl_table_addv(t, "total", bytes(s->total_bytes, v[0], 128)) &&
	     ctl_table_addv(t, "used", bytes(s->used_bytes, v[1], 128)) &&
	     ctl_table_addv(t, "free", bytes(s->free_bytes, v[2], 128)) &&
	     ctl_table_addv(t, "dirty", bytes(s->dirty_bytes, v[3], 128)) &&
	     ctl_table_addv(t, "durable tid", u64(s->durable_tid, v[9], 128)) &&
	     ctl_table_addv(t, "flushes", v[4]) &&
	     ctl_table_addv(t, "client written",
			    bytes(s->client_bytes_written, v[12], 128)) &&
	     ctl_table_addv(t, "client read",
			    bytes(s->client_bytes_read, v[6], 128)) &&
	     ctl_table_addv(t, "device written",
			    bytes(s->dev_bytes_written, v[7], 128)) &&
	     ctl_table_addv(t, "write amplification", v[8]) &&
	     ctl_table_addv(t, "volumes", u64(s->volumes, v[10], 128)) &&
	     ctl_table_addv(t, "snapshots", v[15]) &&
	     ctl_table_addv(t, "connections", v[5]) &&
	     ctl_table_addv(t, "requests", v[11]) &&
	     ctl_table_addv(
		 t, "errors",
		 error_list(r->errors_by_code, r->nerrors, v[14], 128));
	if (ok)
		ctl_table_print(t, stdout);
	ctl_table_free(t);
	return ok;
}

/* One volume's key/value list. */
static bool volume_table(const h2_volume_stats *vs)
{
	struct ctl_table *t = ctl_table_new(2, NULL, NULL);
	char v[5][128];
	bool ok;

	if (!t)
		return false;
	snprintf(v[3], sizeof(v[3]), "%" PRIu64 " (%" PRIu64 " errors)",
		 vs->requests, vs->errors);
	ok = ctl_table_addv(t, "volume", vs->name) &&
	     ctl_table_addv(t, "size", bytes(vs->size, v[0], 128)) &&
	     ctl_table_addv(t, "used", bytes(vs->used_bytes, v[1], 128)) &&
	     ctl_table_addv(t, "open handles",
			    u64(vs->open_handles, v[2], 128)) &&
	     ctl_table_addv(t, "requests", v[3]) &&
	     ctl_table_addv(
		 t, "errors",
		 error_list(vs->errors_by_code, vs->nerrors, v[4], 128));
	if (ok)
		ctl_table_print(t, stdout);
	ctl_table_free(t);
	return ok;
}

int ctl_stat(struct ctl *ctl, int argc, char **argv)
{
	const char *name;
	h2_stat_report *r = NULL;
	bool ok;
	int rc, np, e;

	if ((rc = ctl_positional(ctl, argc, argv, 0, 1, &np)))
		return rc;
	name = np ? argv[0] : NULL;
	if (name && (!*name || strlen(name) > NAME_MAX_LEN))
		return ctl_usage(ctl, "the volume name must be 1 to %zu bytes",
				 NAME_MAX_LEN);
	if ((rc = ctl_connect(ctl)))
		return rc;
	e = h2_stat_report_get(ctl->client, name, &r);
	if (e < 0) {
		if (name)
			return ctl_fail_h2(ctl, e,
					   "cannot get statistics of volume "
					   "\"%s\"",
					   name);
		return ctl_fail_h2(ctl, e, "cannot get statistics from %s",
				   ctl->server);
	}
	if (ctl->json) {
		rc = stat_json(ctl, r);
		h2_stat_report_free(r);
		return rc;
	}
	if (name && r->nvolumes != 1) {
		h2_stat_report_free(r);
		return ctl_fail("%s sent no statistics for volume \"%s\" (an "
				"older h2d?)",
				ctl->server, name);
	}
	if (name) {
		ok = volume_table(r->volumes[0]) &&
		     ops_table(r->volumes[0]->ops, r->volumes[0]->nops);
	} else {
		ok = global_table(ctl, r) && ops_table(r->ops, r->nops) &&
		     volumes_table(r);
	}
	h2_stat_report_free(r);
	return ok ? ctl_stdout_done() : ctl_fail("out of memory");
}
