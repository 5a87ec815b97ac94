/*
 * metrics.c - request, latency and connection counters (see metrics.h).
 *
 * Every counter is a C11 atomic updated with relaxed ordering: counters
 * are independent numbers, nobody synchronises through them, and on
 * x86-64 a relaxed fetch_add is one locked add on a line the updating
 * thread usually owns already.  The registry of volumes is a sorted array
 * under one mutex, touched when a handle opens or a volume is deleted,
 * and by readers; never per request.
 *
 * Lock order: m->lock is a leaf (nothing is called with it held).
 */
#include "metrics.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef _Atomic uint64_t counter;

struct hist {
	counter bucket[H2_HIST_BUCKETS];
	counter sum_ns;
};

struct opstat {
	counter requests[H2_MPROTO_COUNT];
	counter bytes;
	counter errors[H2_MCODES];
	struct hist lat;
};

struct mstats {
	struct opstat op[H2_MOP_COUNT];
};

struct h2_vmetrics {
	_Atomic int refs; /* the registry's (while listed) + holders' */
	counter handles;
	char name[128];
	struct mstats s;
};

struct h2_metrics {
	struct mstats global;
	counter conn_open[H2_MPROTO_COUNT];
	counter conn_total[H2_MPROTO_COUNT];
	counter conn_refused[H2_MPROTO_COUNT];
	counter tls_failed[H2_MPROTO_COUNT];
	uint64_t start_time_ns;
	pthread_mutex_t lock;	   /* protects vols, nvols, cap */
	struct h2_vmetrics **vols; /* sorted by name */
	size_t nvols, cap;
};

#define STATUS_INTERNAL 12 /* h2.proto: INTERNAL */

/* ---------------------------------------------------------------------- */
/* Histograms.                                                            */

_Static_assert(H2_HIST_BUCKETS == 218, "bucket layout changed: check "
				       "the Prometheus buckets and tests");

unsigned h2_hist_index(uint64_t ns)
{
	unsigned e;

	if (ns < (1ull << H2_HIST_MIN_SHIFT))
		return 0;
	e = 63u - (unsigned)__builtin_clzll(ns);
	if (e >= H2_HIST_MAX_SHIFT)
		return H2_HIST_BUCKETS - 1;
	return 1u + (e - H2_HIST_MIN_SHIFT) * H2_HIST_SUB +
	       (unsigned)((ns >> (e - H2_HIST_SUB_BITS)) & (H2_HIST_SUB - 1));
}

uint64_t h2_hist_lower(unsigned i)
{
	unsigned k, e;

	if (i == 0)
		return 0;
	if (i >= H2_HIST_BUCKETS - 1)
		return 1ull << H2_HIST_MAX_SHIFT;
	k = i - 1;
	e = H2_HIST_MIN_SHIFT + k / H2_HIST_SUB;
	return (uint64_t)(H2_HIST_SUB + k % H2_HIST_SUB)
	       << (e - H2_HIST_SUB_BITS);
}

uint64_t h2_hist_upper(unsigned i)
{
	if (i >= H2_HIST_BUCKETS - 1)
		return UINT64_MAX;
	return h2_hist_lower(i + 1);
}

uint64_t h2_hist_quantile(const struct h2_hist_snap *s, double q)
{
	double rank, cum = 0;

	if (s->count == 0)
		return 0;
	if (q < 0)
		q = 0;
	if (q > 1)
		q = 1;
	rank = q * (double)s->count;
	if (rank < 1)
		rank = 1; /* the smallest value recorded, not below it */
	for (unsigned i = 0; i < H2_HIST_BUCKETS; i++) {
		double b = (double)s->bucket[i], lo, hi, frac;

		if (b == 0 || cum + b < rank) {
			cum += b;
			continue;
		}
		lo = (double)h2_hist_lower(i);
		if (i == H2_HIST_BUCKETS - 1)
			return (uint64_t)lo;
		hi = (double)h2_hist_upper(i);
		/* The k-th of b values in a bucket sits at (k - 1/2) / b of
		 * its width: a lone value reads as the bucket's middle. */
		frac = (rank - cum - 0.5) / b;
		if (frac < 0)
			frac = 0;
		return (uint64_t)(lo + (hi - lo) * frac);
	}
	/* Only if buckets were summed while being written: the top. */
	return h2_hist_lower(H2_HIST_BUCKETS - 1);
}

uint64_t h2_hist_mean(const struct h2_hist_snap *s)
{
	return s->count ? s->sum_ns / s->count : 0;
}

static void hist_snap(const struct hist *h, struct h2_hist_snap *out)
{
	out->count = 0;
	for (unsigned i = 0; i < H2_HIST_BUCKETS; i++) {
		out->bucket[i] =
		    atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
		out->count += out->bucket[i];
	}
	out->sum_ns = atomic_load_explicit(&h->sum_ns, memory_order_relaxed);
}

/* ---------------------------------------------------------------------- */
/* Counting.                                                              */

static inline void add(counter *c, uint64_t v)
{
	atomic_fetch_add_explicit(c, v, memory_order_relaxed);
}

static inline uint64_t get(const counter *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

uint64_t h2_metrics_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void count(struct mstats *s, enum h2_mproto proto, enum h2_mop op,
		  unsigned status, uint64_t bytes, uint64_t ns, unsigned idx)
{
	struct opstat *o = &s->op[op];

	add(&o->requests[proto], 1);
	add(&o->lat.bucket[idx], 1);
	add(&o->lat.sum_ns, ns);
	if (status == 0)
		add(&o->bytes, bytes);
	else
		add(&o->errors[status], 1);
}

void h2_metrics_request(struct h2_metrics *m, struct h2_vmetrics *v,
			enum h2_mproto proto, enum h2_mop op, unsigned status,
			uint64_t bytes, uint64_t start_ns)
{
	uint64_t now = h2_metrics_now();
	uint64_t ns = now > start_ns ? now - start_ns : 0;
	unsigned idx = h2_hist_index(ns);

	if ((unsigned)op >= H2_MOP_COUNT)
		op = H2_MOP_OTHER;
	if ((unsigned)proto >= H2_MPROTO_COUNT)
		proto = H2_MPROTO_NATIVE;
	if (status >= H2_MCODES)
		status = STATUS_INTERNAL;
	count(&m->global, proto, op, status, bytes, ns, idx);
	if (v)
		count(&v->s, proto, op, status, bytes, ns, idx);
}

void h2_metrics_conn_open(struct h2_metrics *m, enum h2_mproto proto)
{
	add(&m->conn_open[proto], 1);
	add(&m->conn_total[proto], 1);
}

void h2_metrics_conn_close(struct h2_metrics *m, enum h2_mproto proto)
{
	atomic_fetch_sub_explicit(&m->conn_open[proto], 1,
				  memory_order_relaxed);
}

void h2_metrics_conn_refused(struct h2_metrics *m, enum h2_mproto proto)
{
	add(&m->conn_refused[proto], 1);
}

void h2_metrics_tls_failed(struct h2_metrics *m, enum h2_mproto proto)
{
	add(&m->tls_failed[proto], 1);
}

const char *h2_metrics_op_name(enum h2_mop op)
{
	static const char *const names[H2_MOP_COUNT] = {
	    "read",  "write", "trim",	      "write_zeroes",
	    "flush", "txn",   "block_status", "other"};

	return (unsigned)op < H2_MOP_COUNT ? names[op] : "other";
}

const char *h2_metrics_proto_name(enum h2_mproto proto)
{
	return proto == H2_MPROTO_NBD ? "nbd" : "native";
}

/* ---------------------------------------------------------------------- */
/* The registry.                                                          */

struct h2_metrics *h2_metrics_new(void)
{
	struct h2_metrics *m = calloc(1, sizeof(*m));
	struct timespec ts;

	if (!m)
		return NULL;
	pthread_mutex_init(&m->lock, NULL);
	clock_gettime(CLOCK_REALTIME, &ts);
	m->start_time_ns =
	    (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	return m;
}

void h2_metrics_free(struct h2_metrics *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->nvols; i++)
		h2_metrics_volume_put(m->vols[i]);
	free(m->vols);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

uint64_t h2_metrics_start_time(const struct h2_metrics *m)
{
	return m->start_time_ns;
}

/* Index of name in m->vols, or where it would go (*found false). */
static size_t do_find(const struct h2_metrics *m, const char *name, bool *found)
{
	size_t lo = 0, hi = m->nvols;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(m->vols[mid]->name, name);

		if (c == 0) {
			*found = true;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = false;
	return lo;
}

struct h2_vmetrics *h2_metrics_volume_get(struct h2_metrics *m,
					  const char *name)
{
	struct h2_vmetrics *v = NULL;
	bool found;
	size_t at;

	if (strlen(name) >= sizeof(v->name))
		return NULL;
	pthread_mutex_lock(&m->lock);
	at = do_find(m, name, &found);
	if (found) {
		v = m->vols[at];
		atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
		goto out;
	}
	if (m->nvols == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 16;
		void *p = realloc(m->vols, cap * sizeof(*m->vols));

		if (!p)
			goto out;
		m->vols = p;
		m->cap = cap;
	}
	v = calloc(1, sizeof(*v));
	if (!v)
		goto out;
	atomic_init(&v->refs, 2); /* the registry's and the caller's */
	snprintf(v->name, sizeof(v->name), "%s", name);
	memmove(&m->vols[at + 1], &m->vols[at],
		(m->nvols - at) * sizeof(*m->vols));
	m->vols[at] = v;
	m->nvols++;
out:
	pthread_mutex_unlock(&m->lock);
	return v;
}

struct h2_vmetrics *h2_metrics_volume_find(struct h2_metrics *m,
					   const char *name)
{
	struct h2_vmetrics *v = NULL;
	bool found;
	size_t at;

	pthread_mutex_lock(&m->lock);
	at = do_find(m, name, &found);
	if (found) {
		v = m->vols[at];
		atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
	}
	pthread_mutex_unlock(&m->lock);
	return v;
}

void h2_metrics_volume_put(struct h2_vmetrics *v)
{
	if (v &&
	    atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) == 1)
		free(v);
}

void h2_metrics_volume_forget(struct h2_metrics *m, const char *name)
{
	struct h2_vmetrics *v = NULL;
	bool found;
	size_t at;

	pthread_mutex_lock(&m->lock);
	at = do_find(m, name, &found);
	if (found) {
		v = m->vols[at];
		memmove(&m->vols[at], &m->vols[at + 1],
			(m->nvols - at - 1) * sizeof(*m->vols));
		m->nvols--;
	}
	pthread_mutex_unlock(&m->lock);
	h2_metrics_volume_put(v);
}

void h2_metrics_volume_handle(struct h2_vmetrics *v, bool open)
{
	if (open)
		add(&v->handles, 1);
	else
		atomic_fetch_sub_explicit(&v->handles, 1, memory_order_relaxed);
}

const char *h2_metrics_volume_name(const struct h2_vmetrics *v)
{
	return v->name;
}

uint64_t h2_metrics_volume_handles(const struct h2_vmetrics *v)
{
	return get(&v->handles);
}

int h2_metrics_volumes(struct h2_metrics *m, struct h2_vmetrics ***out,
		       size_t *n)
{
	struct h2_vmetrics **a = NULL;
	size_t k;

	pthread_mutex_lock(&m->lock);
	k = m->nvols;
	if (k) {
		a = malloc(k * sizeof(*a));
		if (!a) {
			pthread_mutex_unlock(&m->lock);
			return -ENOMEM;
		}
		for (size_t i = 0; i < k; i++) {
			a[i] = m->vols[i];
			atomic_fetch_add_explicit(&a[i]->refs, 1,
						  memory_order_relaxed);
		}
	}
	pthread_mutex_unlock(&m->lock);
	*out = a;
	*n = k;
	return 0;
}

/* ---------------------------------------------------------------------- */
/* Reading.                                                               */

static void mstats_snap(const struct mstats *s, struct h2_msnap *out)
{
	for (unsigned op = 0; op < H2_MOP_COUNT; op++) {
		const struct opstat *o = &s->op[op];
		struct h2_mop_snap *d = &out->op[op];

		for (unsigned p = 0; p < H2_MPROTO_COUNT; p++)
			d->requests[p] = get(&o->requests[p]);
		d->bytes = get(&o->bytes);
		for (unsigned c = 0; c < H2_MCODES; c++)
			d->errors[c] = get(&o->errors[c]);
		hist_snap(&o->lat, &d->lat);
	}
}

void h2_metrics_snapshot(const struct h2_metrics *m, struct h2_msnap *out)
{
	mstats_snap(&m->global, out);
}

void h2_metrics_volume_snapshot(const struct h2_vmetrics *v,
				struct h2_msnap *out)
{
	mstats_snap(&v->s, out);
}

void h2_metrics_conn_snapshot(const struct h2_metrics *m,
			      struct h2_mconn_snap *out)
{
	for (unsigned p = 0; p < H2_MPROTO_COUNT; p++) {
		out->open[p] = get(&m->conn_open[p]);
		out->total[p] = get(&m->conn_total[p]);
		out->refused[p] = get(&m->conn_refused[p]);
		out->tls_failed[p] = get(&m->tls_failed[p]);
	}
}

uint64_t h2_mop_snap_errors(const struct h2_mop_snap *o)
{
	uint64_t n = 0;

	for (unsigned c = 0; c < H2_MCODES; c++)
		n += o->errors[c];
	return n;
}

uint64_t h2_msnap_requests(const struct h2_msnap *s)
{
	uint64_t n = 0;

	for (unsigned op = 0; op < H2_MOP_COUNT; op++)
		for (unsigned p = 0; p < H2_MPROTO_COUNT; p++)
			n += s->op[op].requests[p];
	return n;
}

uint64_t h2_msnap_errors(const struct h2_msnap *s)
{
	uint64_t n = 0;

	for (unsigned op = 0; op < H2_MOP_COUNT; op++)
		n += h2_mop_snap_errors(&s->op[op]);
	return n;
}
