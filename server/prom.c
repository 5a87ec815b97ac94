/*
 * prom.c - the Prometheus text exposition of h2d's counters (see prom.h).
 *
 * A family's lines must come together under its # HELP / # TYPE, so the
 * per-volume families are written volume by volume from snapshots taken
 * once at the start: the numbers of one scrape then agree with each other
 * (a volume's _count is its requests_total summed over protocols).  A
 * snapshot keeps only what is exported (the histogram folded to its
 * power-of-two "le" bounds): about 3 KiB per volume.
 *
 * A value at exactly a bound (2^k ns) is counted in the bucket above it,
 * as metrics.h's buckets are [lower, upper): an off-by-one-nanosecond
 * that no latency measured in ns can notice.
 */
#include "prom.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"

/* "le" bounds: 2^H2_HIST_MIN_SHIFT .. 2^H2_HIST_MAX_SHIFT ns. */
#define PROM_LE (H2_HIST_MAX_SHIFT - H2_HIST_MIN_SHIFT + 1)

/* One operation's exported numbers. */
struct prom_op {
	uint64_t requests[H2_MPROTO_COUNT];
	uint64_t bytes;
	uint64_t errors[H2_MCODES];
	uint64_t le[PROM_LE]; /* cumulative: values below 2^(MIN + k) ns */
	uint64_t count, sum_ns;
};

struct prom_vol {
	const char *name; /* borrowed from the reference held in refs */
	uint64_t handles;
	struct prom_op op[H2_MOP_COUNT];
};

void h2_prom_label_value(FILE *f, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '\\':
			fputs("\\\\", f);
			break;
		case '"':
			fputs("\\\"", f);
			break;
		case '\n':
			fputs("\\n", f);
			break;
		default:
			fputc(*s, f);
			break;
		}
	}
}

/* Fold a full snapshot into what is exported. */
static void fold(const struct h2_msnap *s, struct prom_op *out)
{
	for (unsigned op = 0; op < H2_MOP_COUNT; op++) {
		const struct h2_mop_snap *o = &s->op[op];
		struct prom_op *d = &out[op];
		uint64_t cum = 0;
		unsigned k = 0;

		memcpy(d->requests, o->requests, sizeof(d->requests));
		d->bytes = o->bytes;
		memcpy(d->errors, o->errors, sizeof(d->errors));
		for (unsigned i = 0; i < H2_HIST_BUCKETS - 1; i++) {
			cum += o->lat.bucket[i];
			if (k < PROM_LE &&
			    h2_hist_upper(i) == 1ull << (H2_HIST_MIN_SHIFT + k))
				d->le[k++] = cum;
		}
		d->count = o->lat.count;
		d->sum_ns = o->lat.sum_ns;
	}
}

static uint64_t op_requests(const struct prom_op *o)
{
	uint64_t n = 0;

	for (unsigned p = 0; p < H2_MPROTO_COUNT; p++)
		n += o->requests[p];
	return n;
}

static void family(FILE *f, const char *name, const char *type,
		   const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label set: {volume="..",proto="..",op="..",code="..",le=".."} with
 * the NULL ones left out (and nothing at all when every one is NULL). */
struct lbl {
	const char *volume, *proto, *op, *code, *le;
};

static void labels(FILE *f, const struct lbl *l)
{
	const char *names[] = {"volume", "proto", "op", "code", "le"};
	const char *vals[] = {l->volume, l->proto, l->op, l->code, l->le};
	bool any = false;

	for (unsigned i = 0; i < 5; i++) {
		if (!vals[i])
			continue;
		fprintf(f, "%s%s=\"", any ? "," : "{", names[i]);
		h2_prom_label_value(f, vals[i]);
		fputc('"', f);
		any = true;
	}
	if (any)
		fputc('}', f);
}

static void sample(FILE *f, const char *name, const struct lbl *l, uint64_t v)
{
	fputs(name, f);
	labels(f, l);
	fprintf(f, " %" PRIu64 "\n", v);
}

static void sample_sec(FILE *f, const char *name, const struct lbl *l,
		       uint64_t ns)
{
	fputs(name, f);
	labels(f, l);
	fprintf(f, " %" PRIu64 ".%09" PRIu64 "\n", ns / 1000000000u,
		ns % 1000000000u);
}

static void simple(FILE *f, const char *name, const char *type,
		   const char *help, uint64_t v)
{
	struct lbl none = {0};

	family(f, name, type, help);
	sample(f, name, &none, v);
}

/* ---------------------------------------------------------------------- */
/* Request families, for the server (vol NULL) or one volume.             */

static void w_requests(FILE *f, const char *name, const char *vol,
		       const struct prom_op *ops, bool only_used)
{
	for (unsigned op = 0; op < H2_MOP_COUNT; op++) {
		if (only_used && op_requests(&ops[op]) == 0)
			continue;
		for (unsigned p = 0; p < H2_MPROTO_COUNT; p++) {
			struct lbl l = {.volume = vol,
					.proto = h2_metrics_proto_name(p),
					.op = h2_metrics_op_name(op)};

			sample(f, name, &l, ops[op].requests[p]);
		}
	}
}

static void w_bytes(FILE *f, const char *name, const char *vol,
		    const struct prom_op *ops, bool only_used)
{
	for (unsigned op = 0; op < H2_MOP_COUNT; op++) {
		struct lbl l = {.volume = vol, .op = h2_metrics_op_name(op)};

		if (only_used && op_requests(&ops[op]) == 0)
			continue;
		sample(f, name, &l, ops[op].bytes);
	}
}

static void w_errors(FILE *f, const char *name, const char *vol,
		     const struct prom_op *ops)
{
	for (unsigned op = 0; op < H2_MOP_COUNT; op++)
		for (unsigned c = 0; c < H2_MCODES; c++) {
			struct lbl l = {.volume = vol,
					.op = h2_metrics_op_name(op),
					.code = h2_status_name((H2__Status)c)};

			if (ops[op].errors[c])
				sample(f, name, &l, ops[op].errors[c]);
		}
}

static void w_hist(FILE *f, const char *name, const char *vol,
		   const struct prom_op *ops, bool only_used)
{
	char bname[128], le[32];

	for (unsigned op = 0; op < H2_MOP_COUNT; op++) {
		const struct prom_op *o = &ops[op];
		struct lbl l = {.volume = vol, .op = h2_metrics_op_name(op)};

		if (only_used && o->count == 0)
			continue;
		snprintf(bname, sizeof(bname), "%s_bucket", name);
		for (unsigned k = 0; k < PROM_LE; k++) {
			snprintf(le, sizeof(le), "%.12g",
				 (double)(1ull << (H2_HIST_MIN_SHIFT + k)) /
				     1e9);
			l.le = le;
			sample(f, bname, &l, o->le[k]);
		}
		l.le = "+Inf";
		sample(f, bname, &l, o->count);
		l.le = NULL;
		snprintf(bname, sizeof(bname), "%s_sum", name);
		sample_sec(f, bname, &l, o->sum_ns);
		snprintf(bname, sizeof(bname), "%s_count", name);
		sample(f, bname, &l, o->count);
	}
}

/* ---------------------------------------------------------------------- */
/* The server.                                                            */

static void w_server(FILE *f, const struct h2_prom_input *in,
		     const struct prom_op *ops)
{
	const struct h2_store_stats *st = in->st;
	struct h2_mconn_snap cs;
	struct lbl l = {0};

	family(f, "h2_build_info", "gauge", "h2d's version (always 1).");
	fputs("h2_build_info{version=\"", f);
	h2_prom_label_value(f, in->version);
	fputs("\"} 1\n", f);
	family(f, "h2_start_time_seconds", "gauge",
	       "When h2d started, in seconds since the Unix epoch.");
	sample_sec(f, "h2_start_time_seconds", &l,
		   h2_metrics_start_time(in->m));

	h2_metrics_conn_snapshot(in->m, &cs);
	family(f, "h2_connections", "gauge", "Connections open now.");
	for (unsigned p = 0; p < H2_MPROTO_COUNT; p++) {
		l.proto = h2_metrics_proto_name(p);
		sample(f, "h2_connections", &l, cs.open[p]);
	}
	family(f, "h2_connections_total", "counter", "Connections accepted.");
	for (unsigned p = 0; p < H2_MPROTO_COUNT; p++) {
		l.proto = h2_metrics_proto_name(p);
		sample(f, "h2_connections_total", &l, cs.total[p]);
	}
	family(f, "h2_connections_refused_total", "counter",
	       "Connections refused (connection limit, shutting down).");
	for (unsigned p = 0; p < H2_MPROTO_COUNT; p++) {
		l.proto = h2_metrics_proto_name(p);
		sample(f, "h2_connections_refused_total", &l, cs.refused[p]);
	}
	family(f, "h2_tls_handshake_failures_total", "counter",
	       "TLS handshakes that failed, timed out or brought no "
	       "verified client certificate.");
	for (unsigned p = 0; p < H2_MPROTO_COUNT; p++) {
		l.proto = h2_metrics_proto_name(p);
		sample(f, "h2_tls_handshake_failures_total", &l,
		       cs.tls_failed[p]);
	}
	l.proto = NULL;

	simple(f, "h2_store_size_bytes", "gauge",
	       "Allocatable space of the store.", st->total_bytes);
	simple(f, "h2_store_used_bytes", "gauge",
	       "Space allocated, as of the last flush.", st->used_bytes);
	simple(f, "h2_store_free_bytes", "gauge",
	       "Space free (not allocated, not reserved for dirty data).",
	       st->free_bytes);
	simple(f, "h2_store_dirty_bytes", "gauge",
	       "Data modified and not yet flushed.", st->dirty_bytes);
	simple(f, "h2_store_cached_bytes", "gauge",
	       "Metadata and dirty data held in memory.", st->cached_bytes);
	simple(f, "h2_store_volumes", "gauge", "Volumes in the store.",
	       st->volumes);
	simple(f, "h2_store_snapshots", "gauge", "Snapshots in the store.",
	       st->snapshots);
	simple(f, "h2_store_snapshot_bytes", "gauge",
	       "Space held only by snapshots (freed by deleting them all), "
	       "as of the last flush.",
	       st->snapshot_bytes);
	simple(f, "h2_store_durable_tid", "gauge",
	       "Transaction id of the newest durable flush.", st->durable_tid);
	simple(f, "h2_flushes_total", "counter",
	       "Flushes that wrote a volume header.", st->flushes);
	family(f, "h2_flush_seconds_total", "counter",
	       "Time spent in those flushes.");
	sample_sec(f, "h2_flush_seconds_total", &l, st->flush_ns_total);
	family(f, "h2_flush_last_seconds", "gauge",
	       "Duration of the last flush.");
	sample_sec(f, "h2_flush_last_seconds", &l, st->last_flush_ns);
	simple(f, "h2_device_written_bytes_total", "counter",
	       "Bytes written to the device.", st->dev_bytes_written);
	simple(f, "h2_device_read_bytes_total", "counter",
	       "Bytes read from the device.", st->dev_bytes_read);
	simple(f, "h2_device_flushes_total", "counter",
	       "Device cache flushes (fdatasync).", st->dev_flushes);
	simple(f, "h2_client_written_bytes_total", "counter",
	       "Bytes clients wrote (write amplification is "
	       "h2_device_written_bytes_total over this).",
	       st->client_bytes_written);
	simple(f, "h2_client_read_bytes_total", "counter",
	       "Bytes clients read.", st->client_bytes_read);
	simple(f, "h2_write_waits_total", "counter",
	       "Writers held back at the dirty data hard limit.",
	       st->write_waits);

	family(f, "h2_requests_total", "counter",
	       "Requests answered, by protocol and operation.");
	w_requests(f, "h2_requests_total", NULL, ops, false);
	family(f, "h2_request_bytes_total", "counter",
	       "Bytes covered by successful requests (data read or "
	       "written; range trimmed, zeroed or mapped).");
	w_bytes(f, "h2_request_bytes_total", NULL, ops, false);
	family(f, "h2_request_errors_total", "counter",
	       "Requests answered with an error, by status code.");
	w_errors(f, "h2_request_errors_total", NULL, ops);
	family(f, "h2_request_duration_seconds", "histogram",
	       "Time from a request's arrival to its reply being queued.");
	w_hist(f, "h2_request_duration_seconds", NULL, ops, false);
}

/* ---------------------------------------------------------------------- */
/* Volumes.                                                               */

static void w_volumes(FILE *f, const struct h2_prom_input *in,
		      const struct prom_vol *pv, size_t n)
{
	struct lbl l = {0};

	family(f, "h2_volume_size_bytes", "gauge", "Size of the volume.");
	for (size_t i = 0; i < in->nvols; i++) {
		l.volume = in->vols[i].name;
		sample(f, "h2_volume_size_bytes", &l, in->vols[i].size);
	}
	family(f, "h2_volume_used_bytes", "gauge",
	       "Space the volume's data takes, as of the last flush.");
	for (size_t i = 0; i < in->nvols; i++) {
		l.volume = in->vols[i].name;
		sample(f, "h2_volume_used_bytes", &l, in->vols[i].used_bytes);
	}
	family(f, "h2_volume_snapshots", "gauge",
	       "Snapshots of the volume.");
	for (size_t i = 0; i < in->nvols; i++) {
		l.volume = in->vols[i].name;
		sample(f, "h2_volume_snapshots", &l, in->vols[i].snapshots);
	}
	family(f, "h2_volume_snapshot_bytes", "gauge",
	       "Space its snapshots hold and it does not, as of the last "
	       "flush.");
	for (size_t i = 0; i < in->nvols; i++) {
		l.volume = in->vols[i].name;
		sample(f, "h2_volume_snapshot_bytes", &l,
		       in->vols[i].snap_bytes);
	}
	family(f, "h2_volume_open_handles", "gauge",
	       "Handles (native) and exports (NBD) open on the volume.");
	for (size_t i = 0; i < n; i++) {
		l.volume = pv[i].name;
		sample(f, "h2_volume_open_handles", &l, pv[i].handles);
	}
	family(f, "h2_volume_requests_total", "counter",
	       "Requests answered on the volume, by protocol and operation.");
	for (size_t i = 0; i < n; i++)
		w_requests(f, "h2_volume_requests_total", pv[i].name, pv[i].op,
			   true);
	family(f, "h2_volume_request_bytes_total", "counter",
	       "Bytes covered by successful requests on the volume.");
	for (size_t i = 0; i < n; i++)
		w_bytes(f, "h2_volume_request_bytes_total", pv[i].name,
			pv[i].op, true);
	family(f, "h2_volume_request_errors_total", "counter",
	       "Requests on the volume answered with an error.");
	for (size_t i = 0; i < n; i++)
		w_errors(f, "h2_volume_request_errors_total", pv[i].name,
			 pv[i].op);
	family(f, "h2_volume_request_duration_seconds", "histogram",
	       "Time from a request's arrival to its reply being queued, "
	       "on the volume.");
	for (size_t i = 0; i < n; i++)
		w_hist(f, "h2_volume_request_duration_seconds", pv[i].name,
		       pv[i].op, true);
}

int h2_prom_write(FILE *f, const struct h2_prom_input *in)
{
	struct h2_msnap *full = malloc(sizeof(*full));
	struct prom_op global[H2_MOP_COUNT];
	struct h2_vmetrics **refs = NULL;
	struct prom_vol *pv = NULL;
	size_t n = 0;
	int r = -ENOMEM;

	if (!full || h2_metrics_volumes(in->m, &refs, &n) < 0)
		goto out;
	pv = calloc(n + 1, sizeof(*pv));
	if (!pv)
		goto out;
	h2_metrics_snapshot(in->m, full);
	fold(full, global);
	for (size_t i = 0; i < n; i++) {
		pv[i].name = h2_metrics_volume_name(refs[i]);
		pv[i].handles = h2_metrics_volume_handles(refs[i]);
		h2_metrics_volume_snapshot(refs[i], full);
		fold(full, pv[i].op);
	}
	w_server(f, in, global);
	w_volumes(f, in, pv, n);
	r = fflush(f) == 0 && !ferror(f) ? 0 : -EIO;
out:
	for (size_t i = 0; i < n; i++)
		h2_metrics_volume_put(refs[i]);
	free(refs);
	free(pv);
	free(full);
	return r;
}
