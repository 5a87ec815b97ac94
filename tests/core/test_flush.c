/*
 * Flush transactions: exact cuts, concurrency with normal transactions,
 * group commit.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>

#include "helpers.h"

/* Read n pieces of len bytes, at off, off + stride, ..., into buf (one
 * after the other) from a crash image of fd taken at `upto` events. */
static void image_read_n(struct h2_fdev *fd, size_t upto, const char *vol,
			 uint64_t off, uint64_t stride, int n, void *buf,
			 size_t len, uint64_t *tid)
{
	struct h2_crash_spec spec = {.upto = upto};
	struct h2_store_opts o = {.read_only = true};
	struct h2_fdev *img;
	struct h2_store *st;
	struct h2_vol *v;
	struct h2_store_stats s;

	cr_assert_eq(h2_fdev_crash_image(fd, &spec, &img), 0);
	cr_assert_eq(h2_store_open(h2_fdev_dev(img), &o, &st), 0, "%s",
		     h2_core_errmsg());
	cr_assert_eq(h2_vol_open(st, vol, &v), 0);
	for (int k = 0; k < n; k++)
		cr_assert_eq(h2_vol_read(v, (uint8_t *)buf + (size_t)k * len,
					 off + (uint64_t)k * stride, len),
			     0);
	h2_store_stat(st, &s);
	if (tid)
		*tid = s.durable_tid;
	h2_vol_close(v);
	h2_store_close(st);
	h2_fdev_free(img);
}

static void image_read(struct h2_fdev *fd, size_t upto, const char *vol,
		       uint64_t off, void *buf, size_t len, uint64_t *tid)
{
	image_read_n(fd, upto, vol, off, 0, 1, buf, len, tid);
}

/* --- a transaction started during a flush ------------------------------ */

struct during {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct h2_vol *v;
	int state; /* 0 idle, 1 go, 2 done */
	bool armed;
	int write_result;
};

static void *during_writer(void *arg)
{
	struct during *d = arg;
	uint8_t b[4096];

	memset(b, 'B', sizeof(b));
	pthread_mutex_lock(&d->mu);
	while (d->state != 1)
		pthread_cond_wait(&d->cv, &d->mu);
	pthread_mutex_unlock(&d->mu);
	/* Runs while the flush that froze just before is still going. */
	d->write_result = h2_vol_write(d->v, b, 0, sizeof(b), 0);
	pthread_mutex_lock(&d->mu);
	d->state = 2;
	pthread_cond_broadcast(&d->cv);
	pthread_mutex_unlock(&d->mu);
	return NULL;
}

static void during_hook(void *arg, enum h2_flush_stage stage)
{
	struct during *d = arg;
	struct timespec ts;

	if (stage != H2_FLUSH_STAGE_FROZEN || !d->armed)
		return;
	d->armed = false;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 30;
	pthread_mutex_lock(&d->mu);
	d->state = 1;
	pthread_cond_broadcast(&d->cv);
	/* If new transactions waited for the flush to end, this would time
	 * out: the flush cannot end before this hook returns. */
	while (d->state != 2)
		if (pthread_cond_timedwait(&d->cv, &d->mu, &ts) == ETIMEDOUT)
			break;
	pthread_mutex_unlock(&d->mu);
}

Test(flush, transaction_during_flush_runs_concurrently_and_misses_the_cut)
{
	struct h2_fdev *fd = t_fdev(64 * MiB);
	struct during d = {.mu = PTHREAD_MUTEX_INITIALIZER,
			   .cv = PTHREAD_COND_INITIALIZER};
	struct h2_store_opts o = {.no_flusher = true, .flush_hook = during_hook,
				  .flush_hook_arg = &d};
	struct h2_store *st;
	pthread_t th;
	uint8_t a[4096], r[4096];
	uint64_t tid1, tid2, itid;

	h2_fdev_record(fd);
	st = t_open_opts(fd, &o);
	cr_assert_eq(h2_vol_create(st, "v", 1 * MiB, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "v", &d.v), 0);
	memset(a, 'A', sizeof(a));
	cr_assert_eq(h2_vol_write(d.v, a, 0, sizeof(a), 0), 0);
	pthread_create(&th, NULL, during_writer, &d);
	d.armed = true;
	cr_assert_eq(h2_store_sync(st, &tid1), 0);
	cr_assert_eq(d.state, 2, "the write started during the flush did "
				 "not finish while the flush ran");
	cr_assert_eq(d.write_result, 0);
	pthread_join(th, NULL);

	/* The image of that flush holds A: B came after the cut. */
	image_read(fd, h2_fdev_event_count(fd), "v", 0, r, sizeof(r), &itid);
	cr_assert_eq(itid, tid1);
	cr_assert_arr_eq(r, a, sizeof(r));
	/* The live volume holds B, and the next flush carries it. */
	cr_assert_eq(h2_vol_read(d.v, r, 0, sizeof(r)), 0);
	cr_assert_eq(r[0], 'B');
	cr_assert_eq(h2_store_sync(st, &tid2), 0);
	cr_assert_gt(tid2, tid1);
	image_read(fd, h2_fdev_event_count(fd), "v", 0, r, sizeof(r), NULL);
	cr_assert_eq(r[0], 'B');
	cr_assert_eq(r[4095], 'B');
	h2_vol_close(d.v);
	cr_assert_eq(h2_store_close(st), 0);
	h2_fdev_free(fd);
}

/* --- continuous writer vs. flushes ------------------------------------- */

#define NSPOT 8
#define SPOT_STRIDE (300 * 1024) /* spots in different indirect blocks */

struct churn {
	struct h2_vol *v;
	bool stop;	/* __atomic: the test is done */
	uint64_t acked; /* __atomic: newest generation acknowledged */
	int err;
};

static void *churn_writer(void *arg)
{
	struct churn *c = arg;
	static uint8_t bufs[NSPOT][4096];

	for (uint64_t g = 1; !__atomic_load_n(&c->stop, __ATOMIC_RELAXED);
	     g++) {
		struct h2_op ops[NSPOT];

		for (int k = 0; k < NSPOT; k++) {
			memcpy(bufs[k], &g, sizeof(g));
			memset(bufs[k] + 8, (int)(g & 0xff), 4088);
			ops[k] = (struct h2_op){.type = H2_OP_WRITE,
						.off = (uint64_t)k * SPOT_STRIDE,
						.len = 4096,
						.buf = bufs[k]};
		}
		c->err = h2_vol_txn(c->v, ops, NSPOT, 0, NULL);
		if (c->err)
			break;
		__atomic_store_n(&c->acked, g, __ATOMIC_RELEASE);
	}
	return NULL;
}

Test(flush, flushed_image_never_holds_half_a_transaction, .timeout = 300)
{
	struct h2_fdev *fd = t_fdev(64 * MiB);
	struct h2_store_opts o = {.flush_interval_ms = 5};
	struct churn c = {0};
	struct h2_store *st;
	pthread_t th;
	uint64_t prev_tid = 0;

	h2_fdev_record(fd);
	st = t_open_opts(fd, &o);
	cr_assert_eq(h2_vol_create(st, "v", 4 * MiB, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "v", &c.v), 0);
	pthread_create(&th, NULL, churn_writer, &c);
	for (int it = 0; it < 40; it++) {
		uint64_t before = __atomic_load_n(&c.acked, __ATOMIC_ACQUIRE);
		uint64_t tid, itid, g0 = 0;
		uint8_t spots[NSPOT][4096];
		size_t upto;

		cr_assert_eq(h2_store_sync(st, &tid), 0);
		upto = h2_fdev_event_count(fd);
		/* One image, all spots: the cut is the same for each. */
		image_read_n(fd, upto, "v", 0, SPOT_STRIDE, NSPOT, spots,
			     sizeof(spots[0]), &itid);
		for (int k = 0; k < NSPOT; k++) {
			const uint8_t *r = spots[k];
			uint64_t g;

			memcpy(&g, r, sizeof(g));
			if (k == 0)
				g0 = g;
			cr_assert_eq(g, g0,
				     "image at tid %" PRIu64 " holds half a "
				     "transaction: spot 0 has generation "
				     "%" PRIu64 ", spot %d has %" PRIu64,
				     itid, g0, k, g);
			for (int i = 8; i < 4096; i++)
				cr_assert_eq(r[i], (uint8_t)(g & 0xff));
		}
		cr_assert_geq(itid, tid);
		cr_assert_geq(g0, before,
			      "a transaction acknowledged before the sync "
			      "(generation %" PRIu64 ") is missing (%" PRIu64
			      ")",
			      before, g0);
		cr_assert_geq(itid, prev_tid);
		prev_tid = itid;
	}
	__atomic_store_n(&c.stop, true, __ATOMIC_RELAXED);
	pthread_join(th, NULL);
	cr_assert_eq(c.err, 0, "%s", h2_core_errmsg());
	cr_assert_gt(c.acked, 40);
	h2_vol_close(c.v);
	cr_assert_eq(h2_store_close(st), 0);
	h2_fdev_free(fd);
}

/* --- group commit ------------------------------------------------------ */

struct syncer {
	struct h2_store *st;
	struct h2_vol *v;
	int id;
	int err;
};

static void *sync_thread(void *arg)
{
	struct syncer *s = arg;
	uint8_t b[4096];

	memset(b, s->id, sizeof(b));
	for (int i = 0; i < 20 && !s->err; i++) {
		s->err = h2_vol_write(s->v, b, (uint64_t)s->id * 4096, 4096, 0);
		if (!s->err)
			s->err = h2_store_sync(s->st, NULL);
	}
	return NULL;
}

Test(flush, concurrent_syncs_share_flushes)
{
	struct h2_fdev *fd = t_fdev(64 * MiB);
	struct h2_store_opts o = {.flush_interval_ms = 60000};
	struct h2_store *st = t_open_opts(fd, &o);
	struct syncer s[8];
	pthread_t th[8];
	struct h2_store_stats stats;
	struct h2_vol *v;

	cr_assert_eq(h2_vol_create(st, "v", 1 * MiB, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	for (int i = 0; i < 8; i++) {
		s[i] = (struct syncer){.st = st, .v = v, .id = i};
		pthread_create(&th[i], NULL, sync_thread, &s[i]);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(th[i], NULL);
		cr_assert_eq(s[i].err, 0);
	}
	h2_store_stat(st, &stats);
	/* 160 syncs of 160 writes; each sync needs a flush after its write,
	 * but syncs that wait together share one. */
	cr_assert_leq(stats.flushes, 160);
	cr_assert_geq(stats.flushes, 1);
	fprintf(stderr, "group commit: 160 syncs -> %" PRIu64 " flushes\n",
		stats.flushes);
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);
	h2_fdev_free(fd);
}

/* --- writers wait above the hard dirty limit ----------------------------- */

Test(flush, writers_wait_above_the_hard_limit)
{
	struct h2_fdev *fd = t_fdev(64 * MiB);
	struct h2_store_opts o = {.flush_interval_ms = 60000,
				  .dirty_max = 256 * 1024,
				  .dirty_hard = 512 * 1024};
	struct h2_store *st = t_open_opts(fd, &o);
	static uint8_t b[64 * 1024];
	struct h2_store_stats s;
	struct h2_vol *v;

	cr_assert_eq(h2_vol_create(st, "v", 16 * MiB, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	for (int i = 0; i < 256; i++) {
		cr_assert_eq(h2_vol_write(v, b, (uint64_t)i * sizeof(b), sizeof(b),
				      0),
			     0);
		h2_store_stat(st, &s);
		/* Bounded: the hard limit plus one write and its metadata. */
		cr_assert_leq(s.dirty_bytes, 512 * 1024 + sizeof(b) + 64 * 1024,
			      "dirty %" PRIu64, s.dirty_bytes);
	}
	h2_store_stat(st, &s);
	cr_assert_gt(s.flushes, 10);
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);
	h2_fdev_free(fd);
}
