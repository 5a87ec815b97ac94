/* Counters: histogram buckets and percentiles, request and connection
 * counting, the volume registry's lifetimes, concurrent updates. */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

#define US  1000ull
#define MS  1000000ull
#define SEC 1000000000ull

/* A histogram of the given values. */
static struct h2_hist_snap *hist_of(const uint64_t *v, size_t n)
{
	struct h2_hist_snap *s = calloc(1, sizeof(*s));

	cr_assert_not_null(s);
	for (size_t i = 0; i < n; i++) {
		s->bucket[h2_hist_index(v[i])]++;
		s->count++;
		s->sum_ns += v[i];
	}
	return s;
}

/* |got - want| <= tol x want */
static void assert_near(uint64_t got, uint64_t want, double tol,
			const char *what)
{
	double d = fabs((double)got - (double)want);

	cr_assert_leq(d, tol * (double)want, "%s: %llu, want %llu +- %.1f%%",
		      what, (unsigned long long)got, (unsigned long long)want,
		      tol * 100);
}

Test(hist, bucket_edges_are_exact)
{
	cr_assert_eq(h2_hist_index(0), 0);
	cr_assert_eq(h2_hist_index(1023), 0);
	cr_assert_eq(h2_hist_index(1024), 1);
	cr_assert_eq(h2_hist_lower(1), 1024);
	cr_assert_eq(h2_hist_upper(1), 1024 + 128);
	cr_assert_eq(h2_hist_index((1ull << 37) - 1), H2_HIST_BUCKETS - 2);
	cr_assert_eq(h2_hist_index(1ull << 37), H2_HIST_BUCKETS - 1);
	cr_assert_eq(h2_hist_index(UINT64_MAX), H2_HIST_BUCKETS - 1);
	cr_assert_eq(h2_hist_upper(H2_HIST_BUCKETS - 1), UINT64_MAX);
	for (unsigned i = 0; i < H2_HIST_BUCKETS - 1; i++) {
		uint64_t lo = h2_hist_lower(i), hi = h2_hist_upper(i);

		cr_assert_lt(lo, hi, "bucket %u", i);
		cr_assert_eq(h2_hist_lower(i + 1), hi, "bucket %u", i);
		cr_assert_eq(h2_hist_index(lo), i, "lower of %u", i);
		cr_assert_eq(h2_hist_index(hi - 1), i, "top of %u", i);
		cr_assert_eq(h2_hist_index(hi), i + 1, "past %u", i);
		/* Log-linear: no bucket wider than 1/8 of where it starts. */
		if (i > 0)
			cr_assert_leq((hi - lo) * 8, lo, "bucket %u", i);
	}
}

Test(hist, empty_histogram_reads_zero)
{
	struct h2_hist_snap s = {0};

	cr_assert_eq(h2_hist_quantile(&s, 0.5), 0);
	cr_assert_eq(h2_hist_quantile(&s, 0.99), 0);
	cr_assert_eq(h2_hist_mean(&s), 0);
}

Test(hist, uniform_distribution_percentiles_within_a_bucket)
{
	size_t n = 100000;
	uint64_t *v = malloc(n * sizeof(*v));
	struct h2_hist_snap *s;

	/* 1 us .. 100 ms in even steps. */
	for (size_t i = 0; i < n; i++)
		v[i] = (i + 1) * US;
	s = hist_of(v, n);
	assert_near(h2_hist_quantile(s, 0.50), 50 * MS, 0.125, "p50");
	assert_near(h2_hist_quantile(s, 0.99), 99 * MS, 0.125, "p99");
	assert_near(h2_hist_quantile(s, 0.999), 99900 * US, 0.125, "p999");
	assert_near(h2_hist_quantile(s, 0.10), 10 * MS, 0.125, "p10");
	/* The mean is exact: it comes from the sum. */
	cr_assert_eq(h2_hist_mean(s), (n + 1) * US / 2);
	free(s);
	free(v);
}

Test(hist, point_mass_and_tail)
{
	size_t n = 10000;
	uint64_t *v = malloc(n * sizeof(*v));
	struct h2_hist_snap *s;

	/* 99% at 200 us, 1% at 40 ms: p50 and p99 see the body, p99.9 the
	 * tail. */
	for (size_t i = 0; i < n; i++)
		v[i] = i < n - n / 100 ? 200 * US : 40 * MS;
	s = hist_of(v, n);
	assert_near(h2_hist_quantile(s, 0.50), 200 * US, 0.125, "p50");
	assert_near(h2_hist_quantile(s, 0.99), 200 * US, 0.125, "p99");
	assert_near(h2_hist_quantile(s, 0.999), 40 * MS, 0.125, "p999");
	assert_near(h2_hist_quantile(s, 1.0), 40 * MS, 0.125, "max");
	free(s);
	free(v);
}

Test(hist, single_value_reads_its_bucket)
{
	uint64_t v = 45139;
	struct h2_hist_snap *s = hist_of(&v, 1);
	uint64_t q = h2_hist_quantile(s, 0.5);
	unsigned i = h2_hist_index(v);

	cr_assert_geq(q, h2_hist_lower(i));
	cr_assert_lt(q, h2_hist_upper(i));
	assert_near(q, v, 0.125, "p50");
	free(s);
}

Test(hist, overflow_reads_its_lower_bound)
{
	uint64_t v[4] = {1 * MS, 200 * SEC, 300 * SEC, 1000 * SEC};
	struct h2_hist_snap *s = hist_of(v, 4);

	cr_assert_eq(s->bucket[H2_HIST_BUCKETS - 1], 3);
	/* At least 137 s: the histogram cannot say more. */
	cr_assert_eq(h2_hist_quantile(s, 0.99), 1ull << H2_HIST_MAX_SHIFT);
	assert_near(h2_hist_quantile(s, 0.25), 1 * MS, 0.125, "p25");
	free(s);
}

Test(hist, tiny_values_land_in_the_first_bucket)
{
	uint64_t v[3] = {0, 1, 1023};
	struct h2_hist_snap *s = hist_of(v, 3);

	cr_assert_eq(s->bucket[0], 3);
	cr_assert_lt(h2_hist_quantile(s, 0.99), 1024);
	free(s);
}

/* ---------------------------------------------------------------------- */

Test(metrics, requests_bytes_and_errors_are_counted_by_op_and_proto)
{
	struct h2_metrics *m = h2_metrics_new();
	struct h2_vmetrics *v = h2_metrics_volume_get(m, "vm1");
	struct h2_msnap *g = malloc(sizeof(*g)), *vs = malloc(sizeof(*vs));
	uint64_t now = h2_metrics_now();

	h2_metrics_request(m, v, H2_MPROTO_NATIVE, H2_MOP_READ, 0, 4096, now);
	h2_metrics_request(m, v, H2_MPROTO_NBD, H2_MOP_READ, 0, 512, now);
	/* An error: no bytes. */
	h2_metrics_request(m, v, H2_MPROTO_NATIVE, H2_MOP_READ, 2, 4096, now);
	h2_metrics_request(m, NULL, H2_MPROTO_NATIVE, H2_MOP_OTHER, 0, 0, now);
	/* Unknown status codes count as INTERNAL (12). */
	h2_metrics_request(m, v, H2_MPROTO_NATIVE, H2_MOP_WRITE, 99, 1, now);
	h2_metrics_snapshot(m, g);
	h2_metrics_volume_snapshot(v, vs);

	cr_assert_eq(g->op[H2_MOP_READ].requests[H2_MPROTO_NATIVE], 2);
	cr_assert_eq(g->op[H2_MOP_READ].requests[H2_MPROTO_NBD], 1);
	cr_assert_eq(g->op[H2_MOP_READ].bytes, 4096 + 512);
	cr_assert_eq(g->op[H2_MOP_READ].errors[2], 1);
	cr_assert_eq(g->op[H2_MOP_READ].lat.count, 3);
	cr_assert_eq(g->op[H2_MOP_OTHER].requests[H2_MPROTO_NATIVE], 1);
	cr_assert_eq(g->op[H2_MOP_WRITE].errors[12], 1);
	cr_assert_eq(g->op[H2_MOP_WRITE].bytes, 0);
	cr_assert_eq(h2_msnap_requests(g), 5);
	cr_assert_eq(h2_msnap_errors(g), 2);
	/* The volume saw all but the request without a volume. */
	cr_assert_eq(h2_msnap_requests(vs), 4);
	cr_assert_eq(vs->op[H2_MOP_OTHER].requests[H2_MPROTO_NATIVE], 0);
	cr_assert_eq(vs->op[H2_MOP_READ].bytes, 4096 + 512);
	cr_assert_eq(h2_mop_snap_errors(&vs->op[H2_MOP_READ]), 1);

	h2_metrics_volume_put(v);
	h2_metrics_free(m);
	free(g);
	free(vs);
}

Test(metrics, latency_is_measured_from_the_start_time)
{
	struct h2_metrics *m = h2_metrics_new();
	struct h2_msnap *g = malloc(sizeof(*g));
	uint64_t now = h2_metrics_now();

	/* A request that arrived 3 ms ago (and one from the future, which
	 * a clock cannot give but must not underflow). */
	h2_metrics_request(m, NULL, H2_MPROTO_NATIVE, H2_MOP_FLUSH, 0, 0,
			   now - 3 * MS);
	h2_metrics_request(m, NULL, H2_MPROTO_NATIVE, H2_MOP_TRIM, 0, 0,
			   now + SEC);
	h2_metrics_snapshot(m, g);
	cr_assert_geq(g->op[H2_MOP_FLUSH].lat.sum_ns, 3 * MS);
	cr_assert_lt(g->op[H2_MOP_FLUSH].lat.sum_ns, 3 * MS + SEC);
	cr_assert_eq(g->op[H2_MOP_TRIM].lat.bucket[0], 1);
	cr_assert_eq(g->op[H2_MOP_TRIM].lat.sum_ns, 0);
	h2_metrics_free(m);
	free(g);
}

Test(metrics, connections)
{
	struct h2_metrics *m = h2_metrics_new();
	struct h2_mconn_snap cs;

	h2_metrics_conn_open(m, H2_MPROTO_NATIVE);
	h2_metrics_conn_open(m, H2_MPROTO_NATIVE);
	h2_metrics_conn_open(m, H2_MPROTO_NBD);
	h2_metrics_conn_close(m, H2_MPROTO_NATIVE);
	h2_metrics_conn_refused(m, H2_MPROTO_NBD);
	h2_metrics_tls_failed(m, H2_MPROTO_NATIVE);
	h2_metrics_conn_snapshot(m, &cs);
	cr_assert_eq(cs.open[H2_MPROTO_NATIVE], 1);
	cr_assert_eq(cs.total[H2_MPROTO_NATIVE], 2);
	cr_assert_eq(cs.open[H2_MPROTO_NBD], 1);
	cr_assert_eq(cs.refused[H2_MPROTO_NBD], 1);
	cr_assert_eq(cs.tls_failed[H2_MPROTO_NATIVE], 1);
	cr_assert_eq(cs.tls_failed[H2_MPROTO_NBD], 0);
	h2_metrics_free(m);
}

Test(metrics, registry_is_sorted_and_shared_by_name)
{
	struct h2_metrics *m = h2_metrics_new();
	const char *names[] = {"m", "b", "z", "a", "b"};
	struct h2_vmetrics *v[5], **list;
	size_t n;

	for (int i = 0; i < 5; i++)
		v[i] = h2_metrics_volume_get(m, names[i]);
	cr_assert_eq(v[1], v[4], "one entry per name");
	cr_assert_null(h2_metrics_volume_find(m, "nope"));
	cr_assert_eq(h2_metrics_volumes(m, &list, &n), 0);
	cr_assert_eq(n, 4);
	cr_assert_str_eq(h2_metrics_volume_name(list[0]), "a");
	cr_assert_str_eq(h2_metrics_volume_name(list[1]), "b");
	cr_assert_str_eq(h2_metrics_volume_name(list[2]), "m");
	cr_assert_str_eq(h2_metrics_volume_name(list[3]), "z");
	for (size_t i = 0; i < n; i++)
		h2_metrics_volume_put(list[i]);
	free(list);
	for (int i = 0; i < 5; i++)
		h2_metrics_volume_put(v[i]);
	h2_metrics_free(m);
}

/* Run under ASan, this proves a holder's entry outlives forget and the
 * registry itself. */
Test(metrics, forgotten_volume_stays_valid_for_its_holders)
{
	struct h2_metrics *m = h2_metrics_new();
	struct h2_vmetrics *held = h2_metrics_volume_get(m, "vm1"), *fresh;
	struct h2_msnap *s = malloc(sizeof(*s));
	struct h2_vmetrics **list;
	size_t n;

	h2_metrics_volume_handle(held, true);
	h2_metrics_request(m, held, H2_MPROTO_NATIVE, H2_MOP_WRITE, 0, 10,
			   h2_metrics_now());
	h2_metrics_volume_forget(m, "vm1");
	cr_assert_eq(h2_metrics_volumes(m, &list, &n), 0);
	cr_assert_eq(n, 0);
	cr_assert_null(h2_metrics_volume_find(m, "vm1"));
	/* The holder still counts into its (now unlisted) entry. */
	h2_metrics_request(m, held, H2_MPROTO_NATIVE, H2_MOP_WRITE, 0, 10,
			   h2_metrics_now());
	h2_metrics_volume_snapshot(held, s);
	cr_assert_eq(s->op[H2_MOP_WRITE].bytes, 20);
	cr_assert_str_eq(h2_metrics_volume_name(held), "vm1");
	/* A new volume of that name starts from zero. */
	fresh = h2_metrics_volume_get(m, "vm1");
	cr_assert_neq(fresh, held);
	h2_metrics_volume_snapshot(fresh, s);
	cr_assert_eq(h2_msnap_requests(s), 0);
	cr_assert_eq(h2_metrics_volume_handles(fresh), 0);
	h2_metrics_volume_put(fresh);
	/* The registry goes first, the holder last. */
	h2_metrics_free(m);
	cr_assert_eq(h2_metrics_volume_handles(held), 1);
	h2_metrics_volume_handle(held, false);
	h2_metrics_volume_put(held);
	free(s);
}

#define THREADS	   4
#define PER_THREAD 200000

struct worker_arg {
	struct h2_metrics *m;
	struct h2_vmetrics *v;
	int id;
};

static void *worker(void *p)
{
	struct worker_arg *a = p;
	uint64_t now = h2_metrics_now();

	for (int i = 0; i < PER_THREAD; i++)
		h2_metrics_request(a->m, a->v, a->id & 1, H2_MOP_WRITE,
				   (i % 100) == 0 ? 8 : 0, 4096, now);
	return NULL;
}

Test(metrics, concurrent_updates_lose_nothing)
{
	struct h2_metrics *m = h2_metrics_new();
	struct h2_vmetrics *v = h2_metrics_volume_get(m, "vm1");
	struct worker_arg a[THREADS];
	pthread_t t[THREADS];
	struct h2_msnap *s = malloc(sizeof(*s));
	uint64_t total = (uint64_t)THREADS * PER_THREAD;

	for (int i = 0; i < THREADS; i++) {
		a[i] = (struct worker_arg){m, v, i};
		cr_assert_eq(pthread_create(&t[i], NULL, worker, &a[i]), 0);
	}
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	h2_metrics_volume_snapshot(v, s);
	cr_assert_eq(h2_msnap_requests(s), total);
	cr_assert_eq(s->op[H2_MOP_WRITE].lat.count, total);
	cr_assert_eq(s->op[H2_MOP_WRITE].errors[8], total / 100);
	cr_assert_eq(s->op[H2_MOP_WRITE].bytes, (total - total / 100) * 4096);
	h2_metrics_snapshot(m, s);
	cr_assert_eq(s->op[H2_MOP_WRITE].requests[0] +
			 s->op[H2_MOP_WRITE].requests[1],
		     total);
	h2_metrics_volume_put(v);
	h2_metrics_free(m);
	free(s);
}

/* The request path's cost, printed (never a pass/fail on time). */
Test(metrics, cost_per_request_is_printed)
{
	struct h2_metrics *m = h2_metrics_new();
	struct h2_vmetrics *v = h2_metrics_volume_get(m, "vm1");
	uint64_t n = 2000000, t0, t1;

	t0 = h2_metrics_now();
	for (uint64_t i = 0; i < n; i++)
		h2_metrics_request(m, v, H2_MPROTO_NATIVE, H2_MOP_READ, 0, 4096,
				   t0);
	t1 = h2_metrics_now();
	cr_log_info("h2_metrics_request: %.1f ns per request (global + "
		    "volume, one thread, clock read included)",
		    (double)(t1 - t0) / (double)n);
	h2_metrics_volume_put(v);
	h2_metrics_free(m);
}
