/*
 * Crash consistency.
 *
 * A workload of random transactions (writes, trims, zeroes, multi-op
 * batches, volume creation, resize) runs on a recording fault device,
 * with syncs in between.  Every transaction's epoch is known (h2_vol_txn
 * returns it), so the oracle for a store that opens at header tid T is
 * exact: the volumes after every transaction of epoch <= T, applied to a
 * model.  We then replay crash states:
 *
 *   - every prefix of the device's history that ends at a device flush;
 *   - random prefixes where the writes after the last flush are each
 *     applied, dropped, torn at a 512-byte boundary or turned to garbage,
 *     in a random order.
 *
 * Each state must open, check clean (no leaked or double-owned block),
 * hold exactly the oracle's contents for its tid, and that tid must cover
 * every transaction acknowledged by a sync that returned before the
 * crash point.  H2_CRASH_STATES sets the number of random states
 * (default 3000; H2_TEST_QUICK=1 uses 600 for the sanitizer build).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

#include "check.h"
#include "helpers.h"

#define NVOL 3
#define VOL_MAX (768 * 1024)

struct mop {
	int vol;
	int type;	/* H2_OP_* or 0 for resize */
	unsigned flags;
	uint64_t off, len;
	uint64_t seed;	/* data of writes: t_fill(seed, off) */
};

struct mtxn {
	uint64_t epoch;
	int nops;
	struct mop ops[4];
};

struct model {
	uint64_t size[NVOL];
	uint64_t create_epoch[NVOL];
	struct mtxn *txn;
	size_t ntxn, captxn;
	/* syncs: after event index ev, tid covers all epochs <= tid */
	size_t sync_ev[512];
	uint64_t sync_tid[512];
	size_t nsync;
};

static const char *vname[NVOL] = {"alpha", "beta", "gamma"};

static void apply_op(uint8_t *img, uint64_t *size, const struct mop *op)
{
	if (op->type == 0) {
		if (op->off < *size)
			memset(img + op->off, 0, *size - op->off);
		*size = op->off;
		return;
	}
	if (op->type == H2_OP_WRITE)
		t_fill(img + op->off, op->len, op->seed, op->off);
	else
		memset(img + op->off, 0, op->len);
}

/* The model's volumes after every transaction with epoch <= tid. */
static void model_state(const struct model *m, uint64_t tid,
			uint8_t *img[NVOL], uint64_t size[NVOL], bool exists[NVOL])
{
	for (int v = 0; v < NVOL; v++) {
		memset(img[v], 0, VOL_MAX);
		size[v] = m->size[v];
		exists[v] = m->create_epoch[v] && m->create_epoch[v] <= tid;
	}
	for (size_t i = 0; i < m->ntxn && m->txn[i].epoch <= tid; i++)
		for (int k = 0; k < m->txn[i].nops; k++) {
			const struct mop *op = &m->txn[i].ops[k];

			apply_op(img[op->vol], &size[op->vol], op);
		}
}

static void run_workload(struct h2_fdev *fd, struct model *m, uint64_t seed,
			 int ntx)
{
	struct h2_store *st = t_open(fd, false);
	struct h2_vol *v[NVOL] = {0};
	static uint8_t buf[4][64 * 1024];
	uint64_t rs = seed;

	for (int i = 0; i < ntx; i++) {
		int vol = (int)(t_rand(&rs) % NVOL);
		struct mtxn t = {0};
		struct h2_op ops[4];
		uint64_t epoch = 0;
		int r;

		if (!v[vol]) {
			uint64_t size = VOL_MAX / 2 + vol * 4096 * 7;
			struct mop mk = {0};

			cr_assert_eq(h2_vol_create(st, vname[vol], size,
						      NULL),
				     0, "%s", h2_core_errmsg());
			cr_assert_eq(h2_vol_open(st, vname[vol], &v[vol]),
				     0);
			(void)mk;
			/* The creation epoch: the next sync covers it. */
			{
				struct h2_store_stats s;

				h2_store_stat(st, &s);
				m->create_epoch[vol] = s.durable_tid + 1;
			}
			m->size[vol] = size;
		}
		t.nops = 1 + (int)(t_rand(&rs) % 4 == 0 ? t_rand(&rs) % 4 : 0);
		for (int k = 0; k < t.nops; k++) {
			struct mop *op = &t.ops[k];
			uint64_t size = h2_vol_size(v[vol]);
			uint64_t roll = t_rand(&rs) % 100;

			op->vol = vol;
			if (roll < 65) {
				op->type = H2_OP_WRITE;
			} else if (roll < 85) {
				op->type = H2_OP_TRIM;
			} else {
				op->type = H2_OP_ZERO;
				op->flags = roll % 2 ? H2_IO_NO_HOLE : 0;
			}
			op->len = 1 + t_rand(&rs) % (t_rand(&rs) % 3 == 0
							     ? 64 * 1024
							     : 9000);
			if (t_rand(&rs) % 3 == 0)
				op->len = (op->len + 4095) & ~4095ull;
			if (op->len > size)
				op->len = size;
			op->off = t_rand(&rs) % (size - op->len + 1);
			if (t_rand(&rs) % 3 == 0)
				op->off &= ~4095ull;
			op->seed = t_rand(&rs);
			if (op->type == H2_OP_WRITE)
				t_fill(buf[k], op->len, op->seed, op->off);
			ops[k] = (struct h2_op){.type = op->type,
						.flags = op->flags,
						.off = op->off,
						.len = op->len,
						.buf = buf[k]};
		}
		r = h2_vol_txn(v[vol], ops, (size_t)t.nops, 0, &epoch);
		cr_assert_eq(r, 0, "txn %d: %s", i, h2_core_errmsg());
		t.epoch = epoch;
		if (m->ntxn == m->captxn) {
			m->captxn = m->captxn ? m->captxn * 2 : 256;
			m->txn = realloc(m->txn, m->captxn * sizeof(*m->txn));
		}
		m->txn[m->ntxn++] = t;
		if (t_rand(&rs) % 100 < 3 && h2_vol_size(v[vol]) > 20000) {
			/* Shrink by a few blocks (a resize transaction). */
			uint64_t ns = h2_vol_size(v[vol]) - 5000;
			struct mtxn rz = {.nops = 1};

			rz.ops[0] = (struct mop){.vol = vol, .type = 0,
						 .off = ns};
			h2_vol_close(v[vol]);
			cr_assert_eq(h2_vol_resize(st, vname[vol], ns), 0);
			cr_assert_eq(h2_vol_open(st, vname[vol], &v[vol]),
				     0);
			{
				struct h2_store_stats s;

				h2_store_stat(st, &s);
				rz.epoch = s.durable_tid + 1;
			}
			m->txn[m->ntxn++] = rz;
			if (m->ntxn == m->captxn) {
				m->captxn *= 2;
				m->txn = realloc(m->txn,
						 m->captxn * sizeof(*m->txn));
			}
		}
		if (t_rand(&rs) % 100 < 12 && m->nsync < 512) {
			uint64_t tid;

			cr_assert_eq(h2_store_sync(st, &tid), 0);
			m->sync_ev[m->nsync] = h2_fdev_event_count(fd);
			m->sync_tid[m->nsync] = tid;
			m->nsync++;
		}
	}
	for (int k = 0; k < NVOL; k++)
		h2_vol_close(v[k]);
	cr_assert_eq(h2_store_close(st), 0);
}

struct verify_ctx {
	struct model *m;
	uint8_t *img[NVOL];
	uint8_t *got;
	uint64_t checked, torn_headers;
};

/* Open one crash image and hold it against the oracle. */
static void verify_image(struct verify_ctx *vc, struct h2_fdev *img,
			 size_t upto, const char *what)
{
	struct h2_store_opts o = {.read_only = true};
	struct h2_check_report *rep;
	struct h2_store *st;
	struct h2_store_stats s;
	uint64_t size[NVOL], need = 0;
	bool exists[NVOL];
	int r;

	r = h2_check(h2_fdev_dev(img), &rep);
	cr_assert_eq(r, 0);
	if (rep->status == H2_CHECK_PROBLEMS && t_torn_next_header_only(rep))
		vc->torn_headers++;
	else if (rep->status != H2_CHECK_CLEAN) {
		for (size_t i = 0; i < rep->nproblems && i < 5; i++)
			fprintf(stderr, "  %s: %s\n", rep->problems[i].where,
				rep->problems[i].what);
		cr_assert_fail("%s (upto %zu): check status %d, %zu problems",
			       what, upto, rep->status, rep->nproblems);
	}
	h2_check_report_free(rep);

	r = h2_store_open(h2_fdev_dev(img), &o, &st);
	cr_assert_eq(r, 0, "%s (upto %zu): open failed: %s", what, upto,
		     h2_core_errmsg());
	h2_store_stat(st, &s);
	for (size_t i = 0; i < vc->m->nsync; i++)
		if (vc->m->sync_ev[i] <= upto && vc->m->sync_tid[i] > need)
			need = vc->m->sync_tid[i];
	cr_assert_geq(s.durable_tid, need,
		      "%s (upto %zu): opened at tid %" PRIu64 " but a sync "
		      "acknowledged tid %" PRIu64 " before the crash",
		      what, upto, s.durable_tid, need);
	model_state(vc->m, s.durable_tid, vc->img, size, exists);
	for (int k = 0; k < NVOL; k++) {
		struct h2_vol *v;

		r = h2_vol_open(st, vname[k], &v);
		if (!exists[k]) {
			cr_assert_eq(r, -ENOENT, "%s: volume %s exists at tid "
						 "%" PRIu64 " too early",
				     what, vname[k], s.durable_tid);
			continue;
		}
		cr_assert_eq(r, 0, "%s (upto %zu): volume %s missing at tid "
				   "%" PRIu64,
			     what, upto, vname[k], s.durable_tid);
		cr_assert_eq(h2_vol_size(v), size[k],
			     "%s: volume %s size %" PRIu64 " != %" PRIu64, what,
			     vname[k], h2_vol_size(v), size[k]);
		cr_assert_eq(h2_vol_read(v, vc->got, 0, size[k]), 0, "%s: %s",
			     what, h2_core_errmsg());
		if (memcmp(vc->got, vc->img[k], size[k]) != 0) {
			uint64_t at = 0;

			while (vc->got[at] == vc->img[k][at])
				at++;
			cr_assert_fail("%s (upto %zu, tid %" PRIu64 "): volume "
				       "%s differs from the oracle at byte "
				       "%" PRIu64,
				       what, upto, s.durable_tid, vname[k], at);
		}
		h2_vol_close(v);
	}
	h2_store_close(st);
	vc->checked++;
}

static size_t crash_states(void)
{
	const char *e = getenv("H2_CRASH_STATES");

	if (e && *e)
		return (size_t)strtoull(e, NULL, 10);
	return getenv("H2_TEST_QUICK") ? 600 : 3000;
}

Test(crash, every_crash_state_opens_at_an_exact_committed_prefix,
     .timeout = 900)
{
	struct h2_fdev *fd = t_fdev(64 * MiB);
	struct model m = {0};
	struct verify_ctx vc = {.m = &m};
	size_t nev, flushes = 0, want = crash_states();
	uint64_t rs = 0x5eed;
	uint8_t *fate;
	size_t *order;

	h2_fdev_record(fd);
	run_workload(fd, &m, 0xc0ffee, getenv("H2_TEST_QUICK") ? 300 : 600);
	nev = h2_fdev_event_count(fd);
	for (int k = 0; k < NVOL; k++)
		vc.img[k] = malloc(VOL_MAX);
	vc.got = malloc(VOL_MAX);
	fate = calloc(nev + 1, 1);
	order = calloc(nev + 1, sizeof(*order));

	/* Every flush-ended prefix, applied whole. */
	for (size_t i = 0; i < nev; i++) {
		const struct h2_fdev_event *ev = h2_fdev_event(fd, i);
		struct h2_crash_spec spec = {.upto = i + 1};
		struct h2_fdev *img;

		if (ev->op != H2_FDEV_FLUSH)
			continue;
		cr_assert_eq(h2_fdev_crash_image(fd, &spec, &img), 0);
		verify_image(&vc, img, i + 1, "flush-ended prefix");
		h2_fdev_free(img);
		flushes++;
	}
	cr_assert_gt(flushes, 20, "the workload flushed only %zu times",
		     flushes);

	/* Random crash points with the unflushed tail mangled. */
	for (size_t n = 0; n < want; n++) {
		size_t upto = 1 + t_rand(&rs) % nev;
		long last = h2_fdev_last_flush(fd, upto);
		struct h2_crash_spec spec = {.upto = upto, .fate = fate,
					     .order = order};
		struct h2_fdev *img;
		size_t tail = (size_t)(last + 1);

		for (size_t i = 0; i < upto; i++) {
			fate[i] = H2_CRASH_APPLY;
			order[i] = i;
		}
		for (size_t i = tail; i < upto; i++) {
			uint64_t roll = t_rand(&rs) % 100;

			fate[i] = roll < 45   ? H2_CRASH_APPLY
				  : roll < 75 ? H2_CRASH_DROP
				  : roll < 90 ? H2_CRASH_TORN
					      : H2_CRASH_GARBAGE;
		}
		/* Shuffle the unflushed tail's order. */
		for (size_t i = upto - 1; i > tail; i--) {
			size_t j = tail + t_rand(&rs) % (i - tail + 1);
			size_t x = order[i];

			order[i] = order[j];
			order[j] = x;
		}
		spec.torn_sectors = 1 + (uint32_t)(t_rand(&rs) % 7);
		spec.garbage_seed = t_rand(&rs);
		cr_assert_eq(h2_fdev_crash_image(fd, &spec, &img), 0);
		verify_image(&vc, img, (size_t)(last + 1), "mangled tail");
		h2_fdev_free(img);
	}
	fprintf(stderr, "crash: %zu events, %zu flush points, %" PRIu64
			" crash states verified (%" PRIu64 " with a torn "
			"next header), %zu syncs, %zu transactions\n",
		nev, flushes, vc.checked, vc.torn_headers, m.nsync, m.ntxn);
	for (int k = 0; k < NVOL; k++)
		free(vc.img[k]);
	free(vc.got);
	free(fate);
	free(order);
	free(m.txn);
	h2_fdev_free(fd);
}
