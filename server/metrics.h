/*
 * metrics.h - h2d's counters: requests, bytes, errors and latency by
 * operation, for the whole server and per volume; connections.  What
 * `h2ctl stat` (dispatch.c) and the Prometheus endpoint (prom.c,
 * metrics_http.c) report.
 *
 * Cost on the request path: h2_metrics_request() is a handful of relaxed
 * atomic additions on counters owned by the server and by the request's
 * volume, and no lock and no allocation.  The volume's counters are found
 * once, when a handle is opened (h2_metrics_volume_get, under the
 * registry's mutex), and cached in the handle.
 *
 * Latency is kept in log-linear histograms (as HdrHistogram does): below
 * 2^10 ns one bucket, then 8 buckets per power of two up to 2^37 ns
 * (137 s), then one overflow bucket.  A bucket is at most 12.5% wide, so
 * a percentile read from it (interpolated inside the bucket) is within
 * 12.5% of the true value.  Buckets are counted exactly: the count of
 * requests at or under any bucket boundary is exact, which is what a
 * Prometheus histogram's "le" buckets need.
 *
 * Volume counters live in a registry keyed by name, sorted by name.  An
 * entry appears when a volume is first opened (native handle or NBD
 * export) and stays until the volume is deleted (h2_metrics_volume_forget),
 * so its counters only grow while the volume exists.  Holders (open
 * handles) keep a reference: an entry forgotten while a handle still
 * holds it stays valid for that holder and is freed with its last
 * reference, so delete and rename never free counters in use.
 *
 * Thread-safety: every function is thread-safe unless noted.  Readers
 * (snapshots) see each counter exactly but not all counters at the same
 * instant: a snapshot taken while requests finish may count a request in
 * one counter and not yet in another.
 */
#ifndef H2D_METRICS_H
#define H2D_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Operations, as reported ("read", ...: h2_metrics_op_name). */
enum h2_mop {
	H2_MOP_READ = 0,
	H2_MOP_WRITE,
	H2_MOP_TRIM,
	H2_MOP_WRITE_ZEROES,
	H2_MOP_FLUSH,
	H2_MOP_TXN,
	H2_MOP_BLOCK_STATUS,
	H2_MOP_OTHER, /* Hello, Ping, volume admin, Stat, ... */
	H2_MOP_COUNT
};

/* The protocol a request or connection came in by. */
enum h2_mproto { H2_MPROTO_NATIVE = 0, H2_MPROTO_NBD, H2_MPROTO_COUNT };

/* Status codes counted: h2.proto's Status values 0 .. H2_MCODES - 1;
 * larger ones are counted as INTERNAL. */
#define H2_MCODES 17 /* through HAS_DEPENDENTS */

/* ---------------------------------------------------------------------- */
/* Histograms.                                                            */

#define H2_HIST_MIN_SHIFT 10 /* first power of two: 1024 ns */
#define H2_HIST_MAX_SHIFT 37 /* overflow from 2^37 ns = 137 s */
#define H2_HIST_SUB_BITS  3  /* 8 buckets per power of two */
#define H2_HIST_SUB	  (1u << H2_HIST_SUB_BITS)
/* [0, 2^10) | 8 x 27 log-linear buckets | [2^37, inf) */
#define H2_HIST_BUCKETS                                                        \
	(2u + (H2_HIST_MAX_SHIFT - H2_HIST_MIN_SHIFT) * H2_HIST_SUB)

/* A histogram read out: plain numbers. */
struct h2_hist_snap {
	uint64_t bucket[H2_HIST_BUCKETS];
	uint64_t count;	 /* sum of the buckets */
	uint64_t sum_ns; /* sum of the values recorded */
};

/* The bucket a value (ns) falls in.  Pure. */
unsigned h2_hist_index(uint64_t ns);
/* Lowest value of bucket i, and the value just past its end
 * (UINT64_MAX for the overflow bucket).  Pure. */
uint64_t h2_hist_lower(unsigned i);
uint64_t h2_hist_upper(unsigned i);
/*
 * The q-quantile (0 <= q <= 1) in ns: the value of rank q x count (at
 * least 1), found in its bucket and placed linearly inside it (the k-th
 * of n values in a bucket at (k - 1/2) / n of its width); the overflow
 * bucket answers its lower bound.  0 for an empty histogram.  Pure.
 */
uint64_t h2_hist_quantile(const struct h2_hist_snap *s, double q);
/* Mean in ns (0 if empty).  Pure. */
uint64_t h2_hist_mean(const struct h2_hist_snap *s);

/* ---------------------------------------------------------------------- */
/* Counters.                                                              */

struct h2_metrics;  /* the server's: global counters + volume registry */
struct h2_vmetrics; /* one volume's counters */

/* Counters of one operation, read out. */
struct h2_mop_snap {
	uint64_t requests[H2_MPROTO_COUNT];
	uint64_t bytes;
	uint64_t errors[H2_MCODES];
	struct h2_hist_snap lat;
};

/* Every operation's counters, read out (about 15 KiB). */
struct h2_msnap {
	struct h2_mop_snap op[H2_MOP_COUNT];
};

/* Connection counters, read out. */
struct h2_mconn_snap {
	uint64_t open[H2_MPROTO_COUNT];	      /* now */
	uint64_t total[H2_MPROTO_COUNT];      /* accepted since start */
	uint64_t refused[H2_MPROTO_COUNT];    /* limit reached, shutting down */
	uint64_t tls_failed[H2_MPROTO_COUNT]; /* handshake failed, timed out,
						 or no client certificate */
};

/* NULL if out of memory. */
struct h2_metrics *h2_metrics_new(void);
/* Frees the registry; volume entries still referenced by a holder live on
 * until put.  NULL is a no-op. */
void h2_metrics_free(struct h2_metrics *m);

/* CLOCK_MONOTONIC in ns: request start times. */
uint64_t h2_metrics_now(void);
/* CLOCK_REALTIME in ns when m was created. */
uint64_t h2_metrics_start_time(const struct h2_metrics *m);

/* "read", "write", "trim", "write_zeroes", "flush", "txn",
 * "block_status", "other". */
const char *h2_metrics_op_name(enum h2_mop op);
/* "native", "nbd". */
const char *h2_metrics_proto_name(enum h2_mproto proto);

/*
 * One finished request (its reply queued).  v: the volume it named, or
 * NULL.  status: an h2.proto Status value (0 = OK).  bytes: what the
 * request covered (counted only when status is OK).  start_ns: from
 * h2_metrics_now() when the request was received whole.
 */
void h2_metrics_request(struct h2_metrics *m, struct h2_vmetrics *v,
			enum h2_mproto proto, enum h2_mop op, unsigned status,
			uint64_t bytes, uint64_t start_ns);

/* Connection events. */
void h2_metrics_conn_open(struct h2_metrics *m, enum h2_mproto proto);
void h2_metrics_conn_close(struct h2_metrics *m, enum h2_mproto proto);
void h2_metrics_conn_refused(struct h2_metrics *m, enum h2_mproto proto);
void h2_metrics_tls_failed(struct h2_metrics *m, enum h2_mproto proto);

/*
 * The counters of volume name, created on first use; the caller gets a
 * reference (drop it with h2_metrics_volume_put).  NULL if out of memory
 * (the caller then counts that volume's requests globally only).
 */
struct h2_vmetrics *h2_metrics_volume_get(struct h2_metrics *m,
					  const char *name);
/* The counters of volume name if it has an entry (with a reference, as
 * h2_metrics_volume_get), else NULL. */
struct h2_vmetrics *h2_metrics_volume_find(struct h2_metrics *m,
					   const char *name);
/* Drop a reference; NULL is a no-op. */
void h2_metrics_volume_put(struct h2_vmetrics *v);
/* Volume name was deleted: remove its entry from the registry. */
void h2_metrics_volume_forget(struct h2_metrics *m, const char *name);
/* A handle (native) or export (NBD) on the volume opened or closed. */
void h2_metrics_volume_handle(struct h2_vmetrics *v, bool open);
/* The volume's name (as long as the caller holds a reference). */
const char *h2_metrics_volume_name(const struct h2_vmetrics *v);
/* Handles open on it now. */
uint64_t h2_metrics_volume_handles(const struct h2_vmetrics *v);

/*
 * The registry's volumes, sorted by name, each with a reference the
 * caller drops (h2_metrics_volume_put each, then free() the array).
 * 0 with *out NULL when there are none; -ENOMEM.
 */
int h2_metrics_volumes(struct h2_metrics *m, struct h2_vmetrics ***out,
		       size_t *n);

/* Read the counters out. */
void h2_metrics_snapshot(const struct h2_metrics *m, struct h2_msnap *out);
void h2_metrics_volume_snapshot(const struct h2_vmetrics *v,
				struct h2_msnap *out);
void h2_metrics_conn_snapshot(const struct h2_metrics *m,
			      struct h2_mconn_snap *out);

/* Sums over a snapshot: requests of every protocol and operation, and
 * errors of every code and operation. */
uint64_t h2_msnap_requests(const struct h2_msnap *s);
uint64_t h2_msnap_errors(const struct h2_msnap *s);
/* Errors of one operation, every code. */
uint64_t h2_mop_snap_errors(const struct h2_mop_snap *o);

#endif
