/*
 * I/O fault injection.
 *
 * One deterministic workload (writes of known patterns, trims, zeroes,
 * multi-operation transactions, syncs, FUA writes, volume create, resize
 * and delete, snapshots created and deleted, a clone, a rollback and a
 * close and reopen in the middle) runs first without faults, counting the
 * device's reads, writes and flushes.  Then, for every kind of request
 * and every way of failing it (EIO once, EIO until cleared, ENOSPC once,
 * a short write), it runs again on a fresh store for each N = 1 .. count
 * with the device set to fail the Nth request.  The flusher thread is
 * off, so every flush happens inside a call of the workload and the
 * requests come in the same order every time until the fault.
 *
 * Every call's result is held against these rules:
 *   - an operation that started a flush which failed returns an error, and
 *     so does every operation during which a write or flush failed (those
 *     only happen in flushes);
 *   - once a flush failed, the store refuses every modifying call and
 *     sync with -ESHUTDOWN until it is reopened;
 *   - a successful sync, FUA write, snapshot create/delete, volume delete,
 *     clone, rollback or close makes its epoch "acknowledged";
 *   - a successful read returns exactly what the model says the volume
 *     holds now (a failed one is fine: the client got an error);
 *   - after a failed flush no volume header claiming its epoch reaches the
 *     device, unless the failure was the device flush right after that
 *     header (then the header may or may not be durable, and the sync
 *     still failed); after a failed device flush no header is written at
 *     all.
 * After the workload the fault is cleared, the store closed (errors
 * ignored) and checked, and opened again: h2_check is clean (a short
 * write of a header may leave that one copy torn, which the next flush
 * rewrites), the tid T it opens at covers every acknowledged epoch and
 * every header known durable, and every volume and snapshot holds
 * exactly what the model holds after the operations of epochs <= T.  The
 * model is exact: operations that returned an error are in it only if
 * they were applied in memory before a flush failed (known from the
 * flush hook and the epoch a transaction reports).  A last write, sync
 * and close then checks clean with no exception at all.
 *
 * Reads fail too (EIO once and until cleared): a read that fails once
 * fails at most one call of the client, and never makes the store open
 * at an older image, leak, or free what is still used.
 *
 * H2_TEST_QUICK=1 (the sanitizer build) steps N with a stride of 4.
 * Debugging: H2_FAULT_N=n runs only fault point n of each sweep;
 * H2_FAULT_DUMP=1 prints the device events of each run and the errors
 * of failed reads.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include "check.h"
#include "format.h"
#include "helpers.h"
#include "internal.h"

#define BS	  4096u
#define DEV_SIZE  (40 * MiB)
#define VMAX	  (512 * 1024)
#define MEV_MAX	  96
#define FAILS_MAX 16

/* The objects the workload names. */
enum { O_A, O_B, O_C, O_D, O_AS1, O_AS2, O_BT1, NOBJ };

static const struct {
	const char *name, *vol, *snap;
	int parent; /* snapshots: their volume */
} obj[NOBJ] = {
    {"a", "a", NULL, -1},     {"b", "b", NULL, -1},
    {"c", "c", NULL, -1},     {"d", "d", NULL, -1},
    {"a@s1", "a", "s1", O_A}, {"a@s2", "a", "s2", O_A},
    {"b@t1", "b", "t1", O_B},
};

enum mkind {
	M_TXN = 1,
	M_CREATE,
	M_DELETE,
	M_RESIZE,
	M_SNAP,
	M_SNAPDEL,
	M_CLONE,
	M_ROLLBACK,
};

struct mop {
	int type; /* H2_OP_* */
	unsigned flags;
	uint64_t off, len, seed;
};

/* One operation applied to the store, in call order. */
struct mev {
	enum mkind kind;
	uint64_t epoch;
	int obj, src;
	uint64_t size;
	int nops;
	struct mop ops[4];
};

struct mstate {
	bool exists[NOBJ];
	uint64_t size[NOBJ];
	uint8_t *img[NOBJ];
};

/* A flush that failed, as the flush hook saw it. */
struct failed_flush {
	uint64_t epoch;
	size_t events; /* device events when it gave up */
};

struct run {
	struct h2_fdev *fd;
	struct h2_store *st;
	struct h2_fdev_fault rule;
	bool faulty; /* rule may fail something */
	struct mev ev[MEV_MAX];
	int nev;
	struct mstate live; /* every applied operation */
	/* The flush hook's view. */
	uint64_t flushing;
	uint64_t durable; /* newest header known durable */
	unsigned flush_fails;
	bool failed; /* this store instance failed a flush */
	struct failed_flush fails[FAILS_MAX];
	unsigned nfails;
	/* Acknowledgements and outcomes. */
	size_t closed[4]; /* device events when each store instance closed */
	unsigned nclosed;
	uint64_t need; /* every epoch <= need was acknowledged durable */
	uint64_t base_tid;
	unsigned errors, read_errors, reopens;
	bool gave_up; /* the store could not be opened */
};

static uint8_t pat[4][VMAX];

static struct mstate *ms_new(void)
{
	struct mstate *s = calloc(1, sizeof(*s));

	for (int i = 0; i < NOBJ; i++)
		s->img[i] = calloc(1, VMAX);
	return s;
}

static void ms_free(struct mstate *s)
{
	for (int i = 0; i < NOBJ; i++)
		free(s->img[i]);
	free(s);
}

static void ms_reset(struct mstate *s)
{
	for (int i = 0; i < NOBJ; i++) {
		s->exists[i] = false;
		s->size[i] = 0;
		memset(s->img[i], 0, VMAX);
	}
}

static void ms_apply(struct mstate *s, const struct mev *e)
{
	int o = e->obj;

	switch (e->kind) {
	case M_TXN:
		for (int k = 0; k < e->nops; k++) {
			const struct mop *op = &e->ops[k];

			if (op->type == H2_OP_WRITE)
				t_fill(s->img[o] + op->off, op->len, op->seed,
				       op->off);
			else
				memset(s->img[o] + op->off, 0, op->len);
		}
		break;
	case M_CREATE:
		s->exists[o] = true;
		s->size[o] = e->size;
		memset(s->img[o], 0, VMAX);
		break;
	case M_DELETE:
	case M_SNAPDEL:
		s->exists[o] = false;
		break;
	case M_RESIZE:
		if (e->size < s->size[o])
			memset(s->img[o] + e->size, 0, s->size[o] - e->size);
		s->size[o] = e->size;
		break;
	case M_SNAP:
	case M_CLONE:
	case M_ROLLBACK:
		s->exists[o] = true;
		s->size[o] = s->size[e->src];
		memcpy(s->img[o], s->img[e->src], VMAX);
		break;
	}
}

/* The store as the model has it after every operation of epoch <= tid. */
static void ms_at(struct mstate *s, const struct run *r, uint64_t tid)
{
	ms_reset(s);
	for (int i = 0; i < r->nev; i++)
		if (r->ev[i].epoch <= tid)
			ms_apply(s, &r->ev[i]);
}

static void ev_add(struct run *r, const struct mev *e)
{
	cr_assert_lt(r->nev, MEV_MAX);
	if (r->nev)
		cr_assert_geq(e->epoch, r->ev[r->nev - 1].epoch,
			      "epochs go backwards");
	r->ev[r->nev++] = *e;
	ms_apply(&r->live, e);
}

static uint64_t ev_max_epoch(const struct run *r)
{
	return r->nev ? r->ev[r->nev - 1].epoch : 0;
}

/* Flush hook: the flushing thread is the caller's (no flusher thread). */
static void hook(void *arg, enum h2_flush_stage stage)
{
	struct run *r = arg;
	struct h2_store_stats s;

	if (!r->st)
		return;
	h2_store_stat(r->st, &s);
	if (stage == H2_FLUSH_STAGE_FROZEN) {
		r->flushing = s.durable_tid + 1;
		return;
	}
	if (stage != H2_FLUSH_STAGE_DONE)
		return;
	if (s.durable_tid == r->flushing) {
		r->durable = s.durable_tid;
		return;
	}
	r->flush_fails++;
	r->failed = true;
	cr_assert_lt(r->nfails, FAILS_MAX);
	r->fails[r->nfails].epoch = r->flushing;
	r->fails[r->nfails].events = h2_fdev_event_count(r->fd);
	r->nfails++;
}

static bool open_store(struct run *r)
{
	struct h2_store_opts o = {
	    .no_flusher = true, .flush_hook = hook, .flush_hook_arg = r};
	struct h2_store *st;
	int ret = h2_store_open(h2_fdev_dev(r->fd), &o, &st);

	if (ret < 0)
		return false;
	r->st = st;
	r->failed = false;
	return true;
}

/* Open as a client would: try again once if that fails. */
static bool open_retry(struct run *r)
{
	if (open_store(r) || open_store(r))
		return true;
	r->gave_up = true;
	return false;
}

/* State around one call of the workload. */
struct mark {
	bool was_failed;
	uint64_t fired;
	unsigned flush_fails;
	uint64_t epoch; /* the epoch a modification would join */
};

static void op_begin(struct run *r, struct mark *m)
{
	struct h2_fdev_fault_stats fs;
	struct h2_store_stats s;

	h2_fdev_fault_stats(r->fd, &fs);
	h2_store_stat(r->st, &s);
	m->fired = fs.failed;
	m->was_failed = r->failed;
	m->flush_fails = r->flush_fails;
	m->epoch = s.durable_tid + 1;
}

/*
 * The rules every call obeys (file comment).  acks: the call returns only
 * once its epoch is durable.  Returns whether the call's change was
 * applied, guessing "if the call failed because its own flush did" for
 * calls that do not say (maybe_applied).
 */
static bool op_end(struct run *r, const struct mark *m, int ret, bool acks,
		   bool maybe_applied, const char *what)
{
	struct h2_fdev_fault_stats fs;
	bool flush_failed = r->flush_fails > m->flush_fails;

	h2_fdev_fault_stats(r->fd, &fs);
	if (flush_failed)
		cr_assert_lt(ret, 0, "%s succeeded although its flush failed",
			     what);
	if (fs.failed > m->fired && r->rule.op != H2_FDEV_READ)
		cr_assert_lt(ret, 0,
			     "%s succeeded although a device %s "
			     "failed under it",
			     what,
			     r->rule.op == H2_FDEV_WRITE ? "write" : "flush");
	/* A failed store refuses everything with -ESHUTDOWN (except that a
	 * missing volume is missing; close reports the failure itself). */
	if (m->was_failed && ret != -ENOENT && strcmp(what, "close") != 0)
		cr_assert_eq(ret, -ESHUTDOWN, "%s on a failed store: %d", what,
			     ret);
	if (ret < 0)
		r->errors++;
	if (ret == 0) {
		if (acks && m->epoch > r->need)
			r->need = m->epoch;
		return true;
	}
	if (m->was_failed)
		return false;
	return maybe_applied && flush_failed;
}

static int open_vol(struct run *r, int o, struct h2_vol **v)
{
	return h2_vol_open(r->st, obj[o].name, v);
}

/* A transaction on volume o; flags may hold H2_IO_FUA. */
static void s_txn(struct run *r, int o, const struct mop *ops, int n,
		  unsigned flags)
{
	struct h2_op hops[4];
	struct mev e = {.kind = M_TXN, .obj = o, .nops = n};
	struct h2_vol *v;
	struct mark m;
	uint64_t epoch = 0;
	int ret;

	if (!r->st)
		return;
	op_begin(r, &m);
	for (int k = 0; k < n; k++) {
		e.ops[k] = ops[k];
		if (ops[k].type == H2_OP_WRITE)
			t_fill(pat[k], ops[k].len, ops[k].seed, ops[k].off);
		hops[k] = (struct h2_op){.type = ops[k].type,
					 .flags = ops[k].flags,
					 .off = ops[k].off,
					 .len = ops[k].len,
					 .buf = pat[k]};
	}
	ret = open_vol(r, o, &v);
	if (ret == 0) {
		ret = h2_vol_txn(v, hops, (size_t)n, flags, &epoch);
		h2_vol_close(v);
	}
	/* A transaction reports its epoch exactly when it was applied. */
	op_end(r, &m, ret, flags & H2_IO_FUA, false, "transaction");
	if (epoch) {
		cr_assert(!m.was_failed);
		cr_assert_eq(epoch, m.epoch);
		e.epoch = epoch;
		ev_add(r, &e);
	}
}

static void s_write(struct run *r, int o, uint64_t off, uint64_t len,
		    uint64_t seed, unsigned flags)
{
	struct mop op = {
	    .type = H2_OP_WRITE, .off = off, .len = len, .seed = seed};

	s_txn(r, o, &op, 1, flags);
}

static void s_trim(struct run *r, int o, uint64_t off, uint64_t len)
{
	struct mop op = {.type = H2_OP_TRIM, .off = off, .len = len};

	s_txn(r, o, &op, 1, 0);
}

static void s_create(struct run *r, int o, uint64_t size)
{
	struct mev e = {.kind = M_CREATE, .obj = o, .size = size};
	struct mark m;
	int ret;

	if (!r->st)
		return;
	op_begin(r, &m);
	ret = h2_vol_create(r->st, obj[o].name, size, NULL);
	e.epoch = m.epoch;
	if (op_end(r, &m, ret, false, false, "volume create"))
		ev_add(r, &e);
}

static void s_resize(struct run *r, int o, uint64_t size)
{
	struct mev e = {.kind = M_RESIZE, .obj = o, .size = size};
	struct mark m;
	int ret;

	if (!r->st)
		return;
	op_begin(r, &m);
	ret = h2_vol_resize(r->st, obj[o].name, size);
	e.epoch = m.epoch;
	if (op_end(r, &m, ret, false, false, "resize"))
		ev_add(r, &e);
}

static void s_delete(struct run *r, int o)
{
	struct mev e = {.kind = M_DELETE, .obj = o};
	struct mark m;
	int ret;

	if (!r->st)
		return;
	op_begin(r, &m);
	ret = h2_vol_delete(r->st, obj[o].name);
	e.epoch = m.epoch;
	if (op_end(r, &m, ret, true, true, "volume delete"))
		ev_add(r, &e);
}

static void s_snap(struct run *r, int o)
{
	struct mev e = {.kind = M_SNAP, .obj = o, .src = obj[o].parent};
	struct h2_snap_info si;
	struct mark m;
	int ret;

	if (!r->st)
		return;
	op_begin(r, &m);
	ret = h2_snap_create(r->st, obj[o].vol, obj[o].snap, &si);
	if (ret == 0)
		cr_assert_eq(si.tid, m.epoch);
	e.epoch = m.epoch;
	if (op_end(r, &m, ret, true, true, "snapshot create"))
		ev_add(r, &e);
}

static void s_snapdel(struct run *r, int o)
{
	struct mev e = {.kind = M_SNAPDEL, .obj = o};
	struct mark m;
	int ret;

	if (!r->st)
		return;
	op_begin(r, &m);
	ret = h2_snap_delete(r->st, obj[o].vol, obj[o].snap);
	e.epoch = m.epoch;
	if (op_end(r, &m, ret, true, true, "snapshot delete"))
		ev_add(r, &e);
}

static void s_clone(struct run *r, int o, int snap)
{
	struct mev e = {.kind = M_CLONE, .obj = o, .src = snap};
	struct mark m;
	int ret;

	if (!r->st)
		return;
	op_begin(r, &m);
	ret = h2_snap_clone(r->st, obj[snap].vol, obj[snap].snap, obj[o].name,
			    NULL);
	e.epoch = m.epoch;
	if (op_end(r, &m, ret, true, true, "clone"))
		ev_add(r, &e);
}

static void s_rollback(struct run *r, int snap)
{
	struct mev e = {
	    .kind = M_ROLLBACK, .obj = obj[snap].parent, .src = snap};
	struct mark m;
	int ret;

	if (!r->st)
		return;
	op_begin(r, &m);
	ret = h2_vol_rollback(r->st, obj[snap].vol, obj[snap].snap, 0);
	e.epoch = m.epoch;
	if (op_end(r, &m, ret, true, true, "rollback"))
		ev_add(r, &e);
}

static void s_sync(struct run *r)
{
	struct mark m;
	uint64_t tid = 0;
	int ret;

	if (!r->st)
		return;
	op_begin(r, &m);
	ret = h2_store_sync(r->st, &tid);
	op_end(r, &m, ret, false, false, "sync");
	if (ret == 0) {
		cr_assert_geq(tid, ev_max_epoch(r),
			      "sync returned tid %" PRIu64
			      " before the last change",
			      tid);
		if (tid > r->need)
			r->need = tid;
	}
}

/* Read a whole volume or snapshot: an error, or the model's bytes. */
static void s_read(struct run *r, int o)
{
	static uint8_t got[VMAX];
	struct h2_vol *v;
	int ret;

	if (!r->st)
		return;
	ret = open_vol(r, o, &v);
	if (!r->live.exists[o]) {
		cr_assert_neq(ret, 0, "%s exists but should not", obj[o].name);
		return;
	}
	/* Only a snapshot whose creation failed is missing. */
	if (ret < 0 && !obj[o].snap)
		cr_assert_eq(r->rule.op, H2_FDEV_READ, "open %s: %s",
			     obj[o].name, h2_core_errmsg());
	if (ret < 0) {
		if (getenv("H2_FAULT_DUMP"))
			fprintf(stderr, "open %s: %s\n", obj[o].name,
				h2_core_errmsg());
		r->read_errors++;
		return;
	}
	cr_assert_eq(h2_vol_size(v), r->live.size[o], "%s: size", obj[o].name);
	ret = h2_vol_read(v, got, 0, r->live.size[o]);
	h2_vol_close(v);
	/* Only the device's reads fail reads, even in a failed store. */
	if (ret < 0)
		cr_assert_eq(r->rule.op, H2_FDEV_READ, "read %s: %s",
			     obj[o].name, h2_core_errmsg());
	if (ret < 0) {
		if (getenv("H2_FAULT_DUMP"))
			fprintf(stderr, "read %s: %s\n", obj[o].name,
				h2_core_errmsg());
		r->read_errors++;
		return;
	}
	for (uint64_t i = 0; i < r->live.size[o]; i++)
		if (got[i] != r->live.img[o][i])
			cr_assert_fail("%s: a successful read returned byte "
				       "%" PRIu64 " = %u, the model has %u",
				       obj[o].name, i, got[i],
				       r->live.img[o][i]);
}

/* Close: errors are the client's; success acknowledges everything. */
static void s_close(struct run *r)
{
	struct mark m;
	int ret;

	if (!r->st)
		return;
	op_begin(r, &m);
	ret = h2_store_close(r->st);
	op_end(r, &m, ret, false, false, "close");
	if (r->failed)
		cr_assert_lt(ret, 0, "close succeeded on a failed store");
	if (ret == 0 && ev_max_epoch(r) > r->need)
		r->need = ev_max_epoch(r);
	r->st = NULL;
	cr_assert_lt(r->nclosed, 4);
	r->closed[r->nclosed++] = h2_fdev_event_count(r->fd);
}

/* Every header write event: the tid of a complete, valid header. */
static bool ev_header_tid(const struct h2_fdev_event *ev, uint64_t dev_size,
			  bool *partial, uint64_t *tid)
{
	unsigned n = h2_hdr_copies(dev_size);
	struct h2_volhdr h;
	const char *why;

	for (unsigned i = 0; i < n; i++) {
		uint64_t lo = h2_hdr_offset(i), hi = lo + H2_HDR_REGION;

		if (ev->op != H2_FDEV_WRITE || ev->off >= hi ||
		    ev->off + ev->len <= lo)
			continue;
		*partial = true;
		if (ev->off != lo || ev->len < sizeof(h) ||
		    h2_hdr_validate(ev->data, ev->len, dev_size, &why) < 0)
			return true;
		memcpy(&h, ev->data, sizeof(h));
		*partial = false;
		*tid = h.tid;
		return true;
	}
	return false;
}

/*
 * No header claims a failed flush's epoch unless the device flush right
 * after it is what failed; nothing is written to a header after a failed
 * device flush by the store instance that saw it fail (one opened later
 * starts from what it finds on the device).
 */
static void check_headers(struct run *r, const char *what)
{
	size_t n = h2_fdev_event_count(r->fd), end = n;
	struct h2_fdev_fault_stats fs;

	h2_fdev_fault_stats(r->fd, &fs);
	for (unsigned k = r->nclosed; k > 0; k--)
		if (r->closed[k - 1] >= fs.first_event)
			end = r->closed[k - 1];
	for (size_t i = 0; i < n; i++) {
		const struct h2_fdev_event *ev = h2_fdev_event(r->fd, i);
		bool partial;
		uint64_t tid = 0;

		if (!ev_header_tid(ev, DEV_SIZE, &partial, &tid))
			continue;
		if (r->rule.op == H2_FDEV_FLUSH && fs.failed && i < end)
			cr_assert_lt(i, fs.first_event,
				     "%s: header written (event %zu) after the "
				     "device flush failed (event %zu)",
				     what, i, fs.first_event);
		if (partial)
			continue;
		for (unsigned k = 0; k < r->nfails; k++) {
			bool next_flush_failed;

			if (tid != r->fails[k].epoch || i >= r->fails[k].events)
				continue;
			next_flush_failed = r->rule.op == H2_FDEV_FLUSH &&
					    fs.failed &&
					    fs.first_event == i + 1;
			cr_assert(next_flush_failed,
				  "%s: flush %" PRIu64 " failed but wrote a "
				  "valid header for itself (event %zu)",
				  what, tid, i);
		}
	}
}

/* Hold the open store against the model at its tid. */
static void check_state(struct run *r, struct h2_store *st, struct mstate *s,
			const char *what)
{
	static uint8_t got[VMAX];
	struct h2_store_stats ss;
	struct h2_vol_info *vi;
	struct h2_snap_info *si;
	size_t nv, ns, want_v = 0, want_s = 0;

	h2_store_stat(st, &ss);
	ms_at(s, r, ss.durable_tid);
	for (int o = 0; o < NOBJ; o++) {
		struct h2_vol *v;
		int ret = h2_vol_open(st, obj[o].name, &v);

		if (!s->exists[o]) {
			cr_assert_eq(ret, -ENOENT,
				     "%s: %s exists at tid "
				     "%" PRIu64,
				     what, obj[o].name, ss.durable_tid);
			continue;
		}
		if (obj[o].snap)
			want_s++;
		else
			want_v++;
		cr_assert_eq(ret, 0, "%s: %s missing at tid %" PRIu64 ": %s",
			     what, obj[o].name, ss.durable_tid,
			     h2_core_errmsg());
		cr_assert_eq(h2_vol_size(v), s->size[o],
			     "%s: %s size %" PRIu64 ", want %" PRIu64, what,
			     obj[o].name, h2_vol_size(v), s->size[o]);
		ret = h2_vol_read(v, got, 0, s->size[o]);
		cr_assert_eq(ret, 0, "%s: reading %s: %s", what, obj[o].name,
			     h2_core_errmsg());
		for (uint64_t i = 0; i < s->size[o]; i++)
			if (got[i] != s->img[o][i])
				cr_assert_fail("%s: %s at tid %" PRIu64
					       ": byte %" PRIu64 " is %u, "
					       "want %u",
					       what, obj[o].name,
					       ss.durable_tid, i, got[i],
					       s->img[o][i]);
		h2_vol_close(v);
	}
	cr_assert_eq(h2_vol_list(st, &vi, &nv), 0);
	cr_assert_eq(h2_snap_list(st, NULL, &si, &ns), 0);
	cr_assert_eq(nv, want_v, "%s: %zu volumes, want %zu", what, nv, want_v);
	cr_assert_eq(ns, want_s, "%s: %zu snapshots, want %zu", what, ns,
		     want_s);
	free(vi);
	free(si);
}

/*
 * The tid a store (re)opens at: every acknowledged epoch and every header
 * known durable, nothing past the failed flush.
 */
static void check_tid(struct run *r, uint64_t tid, bool failed,
		      const char *what)
{
	uint64_t top =
	    r->base_tid > ev_max_epoch(r) ? r->base_tid : ev_max_epoch(r);

	cr_assert_geq(tid, r->need,
		      "%s: opened at tid %" PRIu64 " but "
		      "epoch %" PRIu64 " was acknowledged durable",
		      what, tid, r->need);
	cr_assert_geq(tid, r->durable,
		      "%s: opened at tid %" PRIu64 " but "
		      "header %" PRIu64 " was durable",
		      what, tid, r->durable);
	cr_assert_leq(tid, top,
		      "%s: opened at tid %" PRIu64 " past the "
		      "last change (epoch %" PRIu64 ")",
		      what, tid, top);
	if (failed)
		cr_assert_leq(tid, r->fails[r->nfails - 1].epoch,
			      "%s: opened at tid %" PRIu64
			      " past the failed flush",
			      what, tid);
}

/* Close and reopen in the middle, as a client restarting would. */
static void s_reopen(struct run *r)
{
	struct h2_store_stats s;
	bool failed;

	if (!r->st)
		return;
	s_close(r);
	failed = r->failed;
	if (!open_retry(r))
		return;
	r->reopens++;
	h2_store_stat(r->st, &s);
	check_tid(r, s.durable_tid, failed, "reopen");
	/* What the failed flush held is gone for good: its epoch numbers
	 * are used again from here on. */
	while (r->nev && r->ev[r->nev - 1].epoch > s.durable_tid)
		r->nev--;
	ms_at(&r->live, r, s.durable_tid);
	r->durable = s.durable_tid;
}

/* The workload; every step tolerates the failure of the ones before. */
static void workload(struct run *r)
{
	struct mop t1[3] = {
	    {.type = H2_OP_WRITE, .off = 100000, .len = 9000, .seed = 3},
	    {.type = H2_OP_TRIM, .off = 0, .len = 8192},
	    {.type = H2_OP_ZERO,
	     .flags = H2_IO_NO_HOLE,
	     .off = 20000,
	     .len = 3000},
	};
	struct mop t2[4] = {
	    {.type = H2_OP_TRIM, .off = 4096, .len = 50000},
	    {.type = H2_OP_WRITE, .off = 30000, .len = 4096, .seed = 21},
	    {.type = H2_OP_ZERO, .off = 60000, .len = 5000},
	    {.type = H2_OP_WRITE, .off = 140000, .len = 10, .seed = 22},
	};

	if (!open_retry(r))
		return;
	s_create(r, O_A, 300000);
	s_create(r, O_B, 200000 + 123);
	s_write(r, O_A, 0, 65536, 1, 0);
	s_write(r, O_A, 70000, 5000, 2, 0);
	s_write(r, O_B, 3 * BS + 17, 20000, 3, 0);
	s_sync(r);
	s_txn(r, O_A, t1, 3, 0);
	s_write(r, O_B, 0, BS, 4, H2_IO_FUA);
	s_read(r, O_A);
	s_snap(r, O_AS1);
	s_write(r, O_A, 1000, 70000, 5, 0);
	s_trim(r, O_A, 131072, 65536);
	s_read(r, O_AS1);
	s_sync(r);
	s_create(r, O_C, 100000);
	s_write(r, O_C, 0, 100000, 6, 0);
	s_resize(r, O_A, 400000);
	s_resize(r, O_B, 300000 + 123); /* one level taller */
	s_write(r, O_B, 290000, 10123, 7, 0);
	s_snap(r, O_AS2);
	s_snap(r, O_BT1);
	s_write(r, O_A, 250000, 150000, 8, 0);
	s_sync(r);
	s_reopen(r);
	/* From the device now: trees, freemap pages, snapshot roots. */
	s_trim(r, O_B, 0, 262144);
	s_write(r, O_A, 5000, 3000, 9, 0);
	s_read(r, O_A);
	s_read(r, O_BT1);
	s_snapdel(r, O_AS1);
	s_clone(r, O_D, O_AS2);
	s_write(r, O_D, 8000, 12000, 10, 0);
	s_write(r, O_C, 50000, 5000, 11, H2_IO_FUA);
	s_delete(r, O_C);
	s_sync(r);
	s_rollback(r, O_AS2);
	s_write(r, O_A, 300000, 4096, 12, 0);
	s_read(r, O_A);
	s_read(r, O_D);
	s_delete(r, O_D);
	s_sync(r);
	s_snapdel(r, O_AS2);
	s_write(r, O_B, 100, 70000, 13, 0);
	s_resize(r, O_B, 150000);
	s_snapdel(r, O_BT1);
	s_sync(r);
	s_txn(r, O_B, t2, 4, H2_IO_FUA);
	s_read(r, O_B);
	s_write(r, O_A, 0, 8192, 14, 0);
	s_close(r);
}

struct figures {
	unsigned runs, fired, flush_failed, open_failed, torn;
	uint64_t errors, read_errors;
};

/*
 * One run of the workload on a copy of base with rule set (rule.nth 0:
 * count only); verify everything afterwards.
 */
static void run_one(struct h2_fdev *base, const struct h2_fdev_fault *rule,
		    struct h2_fdev_fault_stats *out, struct figures *fig)
{
	struct h2_crash_spec copy = {.upto = 0};
	struct run *r = calloc(1, sizeof(*r));
	struct mstate *s = ms_new();
	struct h2_check_report *rep;
	struct h2_fdev_fault_stats fs;
	struct h2_store_stats ss;
	char what[96];
	bool failed;

	snprintf(what, sizeof(what), "%s fault on %s #%" PRIu64 "%s",
		 rule->short_write	? "short"
		 : rule->err == -ENOSPC ? "ENOSPC"
					: "EIO",
		 rule->op == H2_FDEV_READ    ? "read"
		 : rule->op == H2_FDEV_WRITE ? "write"
					     : "flush",
		 rule->nth, rule->persistent ? " (persistent)" : "");
	cr_assert_eq(h2_fdev_crash_image(base, &copy, &r->fd), 0);
	for (int i = 0; i < NOBJ; i++)
		r->live.img[i] = calloc(1, VMAX);
	r->base_tid = 1;
	r->rule = *rule;
	h2_fdev_record(r->fd);
	h2_fdev_fault_set(r->fd, rule);
	workload(r);
	h2_fdev_fault_stats(r->fd, &fs);
	h2_fdev_fault_clear(r->fd);
	if (r->st)
		s_close(r);
	if (rule->nth && rule->nth != UINT64_MAX)
		cr_assert_geq(fs.failed, 1,
			      "%s: never fired (%" PRIu64
			      " seen): the workload is not deterministic",
			      what, fs.seen);
	if (getenv("H2_FAULT_DUMP"))
		for (size_t i = 0; i < h2_fdev_event_count(r->fd); i++) {
			const struct h2_fdev_event *ev =
			    h2_fdev_event(r->fd, i);

			fprintf(stderr,
				"ev %zu: %s off %" PRIu64 " len %" PRIu64 "\n",
				i, ev->op == H2_FDEV_FLUSH ? "FLUSH" : "write",
				ev->off, ev->len);
		}
	check_headers(r, what);

	/* The fault is gone: the store checks clean and opens. */
	cr_assert_eq(h2_check(h2_fdev_dev(r->fd), &rep), 0);
	if (rep->status != H2_CHECK_CLEAN) {
		bool torn = rule->short_write && t_torn_next_header_only(rep);

		if (!torn)
			for (size_t i = 0; i < rep->nproblems; i++)
				fprintf(stderr, "%s: %s: %s\n", what,
					rep->problems[i].where,
					rep->problems[i].what);
		cr_assert(torn, "%s: check status %d after the fault", what,
			  rep->status);
		fig->torn++;
	}
	h2_check_report_free(rep);
	failed = r->failed;
	cr_assert(open_store(r),
		  "%s: the store does not open after the "
		  "fault: %s",
		  what, h2_core_errmsg());
	h2_store_stat(r->st, &ss);
	check_tid(r, ss.durable_tid, failed, what);
	check_state(r, r->st, s, what);

	/* And works on: a write that is synced lands in a clean store. */
	{
		uint8_t buf[BS];
		struct h2_vol *v;

		memset(buf, 0x5a, sizeof(buf));
		if (h2_vol_open(r->st, "z", &v) == -ENOENT)
			cr_assert_eq(h2_vol_create(r->st, "z", VMAX, NULL), 0);
		cr_assert_eq(h2_vol_open(r->st, "z", &v), 0);
		cr_assert_eq(h2_vol_write(v, buf, 12345, sizeof(buf), 0), 0);
		h2_vol_close(v);
		cr_assert_eq(h2_store_sync(r->st, NULL), 0,
			     "%s: sync after "
			     "the fault: %s",
			     what, h2_core_errmsg());
		cr_assert_eq(h2_store_close(r->st), 0);
		r->st = NULL;
	}
	t_check_clean(r->fd, what);

	/* One failed device read fails one client call at most. */
	if (rule->op == H2_FDEV_READ && !rule->persistent)
		cr_assert_leq(r->read_errors, 1, "%s: %u reads failed", what,
			      r->read_errors);
	fig->runs++;
	fig->fired += fs.failed > 0;
	fig->flush_failed += r->nfails > 0;
	fig->open_failed += r->gave_up;
	fig->errors += r->errors;
	fig->read_errors += r->read_errors;
	if (out)
		*out = fs;
	ms_free(s);
	for (int i = 0; i < NOBJ; i++)
		free(r->live.img[i]);
	h2_fdev_free(r->fd);
	free(r);
}

static bool quick(void)
{
	const char *e = getenv("H2_TEST_QUICK");

	return e && *e && strcmp(e, "0") != 0;
}

/* A formatted device every run starts from (copy-on-write copies). */
static struct h2_fdev *base_device(void)
{
	return t_fdev(DEV_SIZE);
}

/* The workload alone: nothing fails, and everything it did is there. */
Test(faults, workload_without_faults_is_exact_and_counted)
{
	struct h2_fdev *base = base_device();
	struct figures fig = {0};
	struct h2_fdev_fault_stats fs[3];
	enum h2_fdev_op ops[3] = {H2_FDEV_READ, H2_FDEV_WRITE, H2_FDEV_FLUSH};

	for (int k = 0; k < 3; k++) {
		struct h2_fdev_fault count = {.op = ops[k]};

		run_one(base, &count, &fs[k], &fig);
	}
	cr_assert_eq(fig.errors, 0);
	cr_assert_eq(fig.read_errors, 0);
	cr_assert_eq(fig.flush_failed, 0);
	cr_assert_gt(fs[0].seen, 20);
	cr_assert_gt(fs[1].seen, 50);
	cr_assert_gt(fs[2].seen, 20);
	fprintf(stderr,
		"faults: the workload makes %" PRIu64 " reads, "
		"%" PRIu64 " writes, %" PRIu64 " flushes\n",
		fs[0].seen, fs[1].seen, fs[2].seen);
	h2_fdev_free(base);
}

struct mode {
	enum h2_fdev_op op;
	int err;
	bool persistent, short_write;
	uint64_t short_len;
};

/* Fail every Nth request of one kind in one way (stride in quick mode). */
static void sweep(const struct mode *md)
{
	struct h2_fdev *base = base_device();
	struct h2_fdev_fault count = {.op = md->op};
	struct h2_fdev_fault_stats fs;
	struct figures fig = {0};
	uint64_t stride = quick() ? 4 : 1, total;
	struct timespec t0, t1;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	run_one(base, &count, &fs, &fig);
	total = fs.seen;
	memset(&fig, 0, sizeof(fig));
	for (uint64_t n = 1; n <= total; n += stride) {
		const char *only = getenv("H2_FAULT_N"); /* debugging */

		if (only && *only && strtoull(only, NULL, 10) != n)
			continue;
		struct h2_fdev_fault f = {.op = md->op,
					  .nth = n,
					  .err = md->err,
					  .persistent = md->persistent,
					  .short_write = md->short_write,
					  .short_len = md->short_len};

		run_one(base, &f, NULL, &fig);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	cr_assert_eq(fig.fired, fig.runs);
	fprintf(stderr,
		"faults: %-5s %-6s %-10s %-8s: %u fault points of "
		"%" PRIu64 " (%u flushes failed, %u opens refused, %u torn "
		"headers, %" PRIu64 " errors returned, %" PRIu64
		" read errors) in %.1f s\n",
		md->op == H2_FDEV_READ	  ? "read"
		: md->op == H2_FDEV_WRITE ? "write"
					  : "flush",
		md->err == -ENOSPC ? "ENOSPC" : "EIO",
		md->persistent ? "persistent" : "once",
		md->short_len	  ? "1 sector"
		: md->short_write ? "short"
				  : "",
		fig.runs, total, fig.flush_failed, fig.open_failed, fig.torn,
		fig.errors, fig.read_errors,
		(double)(t1.tv_sec - t0.tv_sec) +
		    (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	h2_fdev_free(base);
}

Test(faults, every_write_fails_once_with_eio, .timeout = 600)
{
	sweep(&(struct mode){.op = H2_FDEV_WRITE, .err = -EIO});
}

Test(faults, every_write_fails_persistently, .timeout = 600)
{
	sweep(&(struct mode){
	    .op = H2_FDEV_WRITE, .err = -EIO, .persistent = true});
}

Test(faults, every_write_fails_once_with_enospc, .timeout = 600)
{
	sweep(&(struct mode){.op = H2_FDEV_WRITE, .err = -ENOSPC});
}

Test(faults, every_write_is_short_once, .timeout = 600)
{
	sweep(&(struct mode){
	    .op = H2_FDEV_WRITE, .err = -EIO, .short_write = true});
}

/* Only the first sector lands: a header keeps its old selector bits. */
Test(faults, every_write_lands_one_sector_once, .timeout = 600)
{
	sweep(&(struct mode){.op = H2_FDEV_WRITE,
			     .err = -EIO,
			     .short_write = true,
			     .short_len = 512});
}

Test(faults, every_flush_fails_once, .timeout = 600)
{
	sweep(&(struct mode){.op = H2_FDEV_FLUSH, .err = -EIO});
}

Test(faults, every_flush_fails_persistently, .timeout = 600)
{
	sweep(&(struct mode){
	    .op = H2_FDEV_FLUSH, .err = -EIO, .persistent = true});
}

Test(faults, every_flush_fails_once_with_enospc, .timeout = 600)
{
	sweep(&(struct mode){.op = H2_FDEV_FLUSH, .err = -ENOSPC});
}

Test(faults, every_read_fails_once, .timeout = 600)
{
	sweep(&(struct mode){.op = H2_FDEV_READ, .err = -EIO});
}

Test(faults, every_read_fails_persistently, .timeout = 600)
{
	sweep(&(struct mode){
	    .op = H2_FDEV_READ, .err = -EIO, .persistent = true});
}

/* ---------------------------------------------------------------------- */
/* Regressions found by the sweeps, each on its own.                      */

/* A volume with a snapshot that alone holds all of its first image. */
static struct h2_fdev *snapshot_holding_everything(uint8_t *img, uint64_t size)
{
	struct h2_fdev *fd = t_fdev(DEV_SIZE);
	struct h2_store *st = t_open(fd, false);
	struct h2_vol *v;

	cr_assert_eq(h2_vol_create(st, "v", size, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	t_fill(img, size, 1, 0);
	cr_assert_eq(h2_vol_write(v, img, 0, size, 0), 0);
	cr_assert_eq(h2_snap_create(st, "v", "s", NULL), 0);
	t_fill(pat[0], size, 2, 0);
	cr_assert_eq(h2_vol_write(v, pat[0], 0, size, 0), 0);
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);
	return fd;
}

/*
 * A flush must not write into blocks it frees: until its header is
 * durable the previous image still uses them.  Deleting a snapshot frees
 * its blocks and rewrites the directory in the same flush; a freshly
 * opened store allocates from the start of the device, where the freed
 * blocks are.  The flush's device flush fails, so the store stays at the
 * previous image, which must still read back whole.
 */
Test(faults, a_flush_never_writes_into_blocks_it_frees)
{
	uint64_t size = 256 * 1024;
	uint8_t *img = malloc(size), *got = malloc(size);
	struct h2_fdev *fd = snapshot_holding_everything(img, size);
	struct h2_fdev_fault f = {.op = H2_FDEV_FLUSH, .nth = 1};
	struct h2_store *st = t_open(fd, false);
	struct h2_vol *s;

	h2_fdev_fault_set(fd, &f);
	cr_assert_lt(h2_snap_delete(st, "v", "s"), 0);
	h2_store_close(st);
	h2_fdev_fault_clear(fd);
	t_check_clean(fd, "after the failed snapshot deletion");
	st = t_open(fd, false);
	cr_assert_eq(h2_vol_open(st, "v@s", &s), 0);
	cr_assert_eq(h2_vol_read(s, got, 0, size), 0, "%s", h2_core_errmsg());
	cr_assert(memcmp(got, img, size) == 0);
	h2_vol_close(s);
	cr_assert_eq(h2_snap_delete(st, "v", "s"), 0);
	cr_assert_eq(h2_store_close(st), 0);
	t_check_clean(fd, "after the snapshot deletion");
	free(img);
	free(got);
	h2_fdev_free(fd);
}

/*
 * A header copy that cannot be read may be the newest one: opening at an
 * older copy instead would lose synced data, and the older freemap would
 * hand out blocks the newer image uses.  The read of the newest copy
 * fails once; the open must fail (or find the newest copy anyway), never
 * open an older image.
 */
Test(faults, unreadable_newest_header_never_opens_an_older_image)
{
	struct h2_fdev *fd = t_fdev(DEV_SIZE);
	struct h2_store *st = t_open(fd, false);
	unsigned copies = h2_hdr_copies(DEV_SIZE);
	struct h2_store_opts o = {.no_flusher = true};
	struct h2_store_stats s;
	struct h2_vol *v;
	uint64_t tid = 0;
	uint8_t buf[BS], got[BS];
	int r;

	cr_assert_eq(h2_vol_create(st, "v", VMAX, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	for (uint64_t i = 0; i < 5; i++) {
		t_fill(buf, BS, i, 0);
		cr_assert_eq(h2_vol_write(v, buf, 0, BS, 0), 0);
		cr_assert_eq(h2_store_sync(st, &tid), 0);
	}
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);

	/* Open reads the copies in order: copy i is read number i + 1. */
	h2_fdev_fault_set(fd, &(struct h2_fdev_fault){.op = H2_FDEV_READ,
						      .nth = tid % copies + 1});
	r = h2_store_open(h2_fdev_dev(fd), &o, &st);
	if (r == 0) {
		h2_store_stat(st, &s);
		cr_assert_eq(s.durable_tid, tid,
			     "opened at tid %" PRIu64
			     ", the newest header is %" PRIu64,
			     s.durable_tid, tid);
		h2_store_close(st);
	} else {
		cr_assert_eq(r, -EIO, "%d: %s", r, h2_core_errmsg());
	}
	h2_fdev_fault_clear(fd);
	st = t_open(fd, false);
	h2_store_stat(st, &s);
	cr_assert_eq(s.durable_tid, tid);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	cr_assert_eq(h2_vol_read(v, got, 0, BS), 0);
	cr_assert(memcmp(got, buf, BS) == 0);
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);
	t_check_clean(fd, "after reopening");
	h2_fdev_free(fd);
}

/* Reads h2_store_open makes on fd (the last one: the last volume root). */
static uint64_t open_reads(struct h2_fdev *fd)
{
	struct h2_fdev_fault count = {.op = H2_FDEV_READ};
	struct h2_fdev_fault_stats fs;
	struct h2_store *st;

	h2_fdev_fault_set(fd, &count);
	st = t_open(fd, false);
	h2_fdev_fault_stats(fd, &fs);
	h2_fdev_fault_clear(fd);
	cr_assert_eq(h2_store_close(st), 0);
	return fs.seen;
}

/*
 * Open fd with the read of volume "v"'s root failing: roots are read
 * last, in directory slot order; `after` records follow v's.
 */
static struct h2_store *open_without_root(struct h2_fdev *fd, uint64_t after)
{
	struct h2_fdev_fault f = {.op = H2_FDEV_READ,
				  .nth = open_reads(fd) - after};
	struct h2_fdev_fault_stats fs;
	struct h2_store *st;

	h2_fdev_fault_set(fd, &f);
	st = t_open(fd, false);
	h2_fdev_fault_stats(fd, &fs);
	cr_assert_eq(fs.failed, 1, "the open did not read the root");
	return st;
}

/*
 * A volume whose root block could not be read when the store opened is
 * deleted, or rolled back, without leaking its tree: the read error was
 * the device's, the blocks are fine, and the flush that settles the
 * deletion reads them.
 */
Test(faults, volume_with_an_unread_root_is_deleted_without_a_leak)
{
	uint64_t size = 256 * 1024;
	uint8_t *img = malloc(size), *got = malloc(size);
	struct h2_fdev *fd = snapshot_holding_everything(img, size);
	struct h2_store *st;
	struct h2_vol *v;

	/* Rollback: the volume's own tree goes, the snapshot's comes. */
	st = open_without_root(fd, 1);
	cr_assert_eq(h2_vol_rollback(st, "v", "s", 0), 0, "%s",
		     h2_core_errmsg());
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	cr_assert_eq(h2_vol_read(v, got, 0, size), 0, "%s", h2_core_errmsg());
	cr_assert(memcmp(got, img, size) == 0);
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);
	t_check_clean(fd, "after the rollback");

	/* Delete (the snapshot first, it is not the point here). */
	st = t_open(fd, false);
	cr_assert_eq(h2_snap_delete(st, "v", "s"), 0);
	cr_assert_eq(h2_store_close(st), 0);
	st = open_without_root(fd, 0);
	cr_assert_eq(h2_vol_delete(st, "v"), 0, "%s", h2_core_errmsg());
	cr_assert_eq(h2_store_close(st), 0);
	t_check_clean(fd, "after the deletion");
	free(img);
	free(got);
	h2_fdev_free(fd);
}

/*
 * Settling frees reads the trees being freed (and, for a snapshot, the
 * one after it, to see what they share).  A read that fails there must
 * fail the flush: skipping the subtree leaks it, and taking the other
 * tree for empty frees blocks it still uses.  Every read of a snapshot
 * deletion and of a volume deletion on trees that are only on the
 * device fails in turn; the store must check clean afterwards and hold
 * what it held, minus what was deleted if that call succeeded.
 */
Test(faults, reads_failing_while_frees_settle_fail_the_flush)
{
	uint64_t size = VMAX;
	uint8_t *s1 = malloc(size), *s2 = malloc(size), *vv = malloc(size);
	uint8_t *got = malloc(size);
	struct h2_fdev *base = t_fdev(DEV_SIZE);
	struct h2_store *st = t_open(base, false);
	struct h2_vol *v;
	unsigned points = 0;

	cr_assert_eq(h2_vol_create(st, "v", size, NULL), 0);
	cr_assert_eq(h2_vol_create(st, "w", size, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	t_fill(s1, size, 1, 0);
	cr_assert_eq(h2_vol_write(v, s1, 0, size, 0), 0);
	cr_assert_eq(h2_snap_create(st, "v", "s1", NULL), 0);
	memcpy(s2, s1, size);
	t_fill(s2 + 4096, size / 2, 2, 4096);
	cr_assert_eq(h2_vol_write(v, s2 + 4096, 4096, size / 2, 0), 0);
	cr_assert_eq(h2_snap_create(st, "v", "s2", NULL), 0);
	memcpy(vv, s2, size);
	t_fill(vv + size / 4, size / 4, 3, size / 4);
	cr_assert_eq(h2_vol_write(v, vv + size / 4, size / 4, size / 4, 0), 0);
	h2_vol_close(v);
	cr_assert_eq(h2_vol_open(st, "w", &v), 0);
	cr_assert_eq(h2_vol_write(v, vv, 0, size, 0), 0);
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);

	for (int what = 0; what < 2; what++) {
		const char *gone = what == 0 ? "v@s1" : "w";
		uint64_t reads = 0;

		for (uint64_t n = 0; n == 0 || n <= reads; n++) {
			struct h2_crash_spec copy = {.upto = 0};
			struct h2_fdev_fault f = {.op = H2_FDEV_READ, .nth = n};
			struct h2_fdev_fault_stats fs;
			struct h2_fdev *fd;
			int r;

			cr_assert_eq(h2_fdev_crash_image(base, &copy, &fd), 0);
			st = t_open(fd, false);
			h2_fdev_fault_set(fd, &f);
			r = what == 0 ? h2_snap_delete(st, "v", "s1")
				      : h2_vol_delete(st, "w");
			h2_fdev_fault_stats(fd, &fs);
			h2_fdev_fault_clear(fd);
			h2_store_close(st);
			if (n == 0) {
				cr_assert_eq(r, 0);
				reads = fs.seen;
				cr_assert_gt(reads, 3);
				h2_fdev_free(fd);
				continue;
			}
			points++;
			t_check_clean(fd, gone);
			st = t_open(fd, false);
			r = h2_vol_open(st, gone, &v);
			if (r == 0)
				h2_vol_close(v);
			cr_assert(r == 0 || r == -ENOENT);
			for (int k = 0; k < 4; k++) {
				static const char *const nm[] = {"v@s1", "v@s2",
								 "v", "w"};
				const uint8_t *want = k == 0   ? s1
						      : k == 1 ? s2
							       : vv;

				if (strcmp(nm[k], gone) == 0)
					continue;
				cr_assert_eq(h2_vol_open(st, nm[k], &v), 0);
				cr_assert_eq(h2_vol_read(v, got, 0, size), 0);
				cr_assert(memcmp(got, want, size) == 0,
					  "%s after read %" PRIu64 " failed",
					  nm[k], n);
				h2_vol_close(v);
			}
			cr_assert_eq(h2_store_close(st), 0);
			t_check_clean(fd, "after a last flush");
			h2_fdev_free(fd);
		}
	}
	fprintf(stderr, "faults: %u reads failed while deleting\n", points);
	free(s1);
	free(s2);
	free(vv);
	free(got);
	h2_fdev_free(base);
}

/*
 * After a flush fails writing data, the store refuses writes until it is
 * reopened, but what it acknowledged is still in memory and reads keep
 * returning it: not a checksum error (the block the flush meant to write
 * never got the data) telling the client the block is damaged.
 */
Test(faults, reads_after_a_failed_data_write_return_the_data)
{
	struct h2_fdev *fd = t_fdev(DEV_SIZE);
	struct h2_store *st = t_open(fd, false);
	uint64_t size = VMAX;
	uint8_t *img = malloc(size), *got = malloc(size);
	struct h2_vol *v;

	for (uint64_t n = 1; n <= 2; n++) {
		struct h2_fdev_fault f = {.op = H2_FDEV_WRITE, .nth = n};
		char name[8];

		snprintf(name, sizeof(name), "v%" PRIu64, n);
		cr_assert_eq(h2_vol_create(st, name, size, NULL), 0);
		cr_assert_eq(h2_vol_open(st, name, &v), 0);
		t_fill(img, size, n, 0);
		/* The flush's first, then its second device write fails. */
		cr_assert_eq(h2_vol_write(v, img, 0, size / 2, 0), 0);
		cr_assert_eq(
		    h2_vol_write(v, img + size - 8192, size - 8192, 8192, 0),
		    0);
		h2_fdev_fault_set(fd, &f);
		cr_assert_lt(h2_store_sync(st, NULL), 0);
		h2_fdev_fault_clear(fd);
		memset(img + size / 2, 0, size / 2 - 8192);
		cr_assert_eq(h2_vol_read(v, got, 0, size), 0,
			     "write %" PRIu64 " failed: %s", n,
			     h2_core_errmsg());
		cr_assert(memcmp(got, img, size) == 0);
		cr_assert_eq(h2_vol_write(v, img, 0, 1, 0), -ESHUTDOWN,
			     "a failed store refuses writes");
		h2_vol_close(v);
		h2_store_close(st);
		st = t_open(fd, false);
	}
	cr_assert_eq(h2_store_close(st), 0);
	t_check_clean(fd, "after reopening");
	free(img);
	free(got);
	h2_fdev_free(fd);
}

/*
 * A volume root that did not read when the store opened is read again
 * when the volume is next used: one transient error must not make the
 * volume (or a snapshot) unusable until the store is reopened, nor be
 * reported as a damaged block.
 */
Test(faults, a_root_that_did_not_read_at_open_is_read_again)
{
	uint64_t size = 256 * 1024;
	uint8_t *img = malloc(size), *got = malloc(size), *now = malloc(size);
	struct h2_fdev *fd = snapshot_holding_everything(img, size);
	struct h2_fdev_fault persist = {
	    .op = H2_FDEV_READ, .nth = 1, .persistent = true};
	struct h2_store *st;
	struct h2_vol *v;
	uint8_t b;

	t_fill(now, size, 2, 0);
	/* Reads: a snapshot whose root did not read. */
	st = open_without_root(fd, 0);
	cr_assert_eq(h2_vol_open(st, "v@s", &v), 0);
	cr_assert_eq(h2_vol_read(v, got, 0, size), 0, "%s", h2_core_errmsg());
	cr_assert(memcmp(got, img, size) == 0);
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);

	/* Writes, and a snapshot of the volume. */
	st = open_without_root(fd, 1);
	cr_assert_eq(h2_snap_create(st, "v", "s2", NULL), 0, "%s",
		     h2_core_errmsg());
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	cr_assert_eq(h2_vol_write(v, "x", 7, 1, 0), 0, "%s", h2_core_errmsg());
	now[7] = 'x';
	cr_assert_eq(h2_vol_read(v, got, 0, size), 0);
	cr_assert(memcmp(got, now, size) == 0);
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);

	/* While the device still fails, the error says so: no "damaged". */
	st = open_without_root(fd, 2);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	h2_fdev_fault_set(fd, &persist);
	cr_assert_eq(h2_vol_read(v, &b, 0, 1), -EIO);
	cr_assert_null(strstr(h2_core_errmsg(), "damaged"), "%s",
		       h2_core_errmsg());
	h2_fdev_fault_clear(fd);
	cr_assert_eq(h2_vol_read(v, &b, 7, 1), 0);
	cr_assert_eq(b, 'x');
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);
	t_check_clean(fd, "at the end");
	free(img);
	free(got);
	free(now);
	h2_fdev_free(fd);
}

/*
 * The same rules with the flusher thread running (every millisecond):
 * whichever flush meets the failing device, syncs and FUA writes that
 * need it fail, later writes are refused, close reports the failure, and
 * what was synced before is there after reopening.
 */
Test(faults, flusher_thread_failure_fails_syncs_and_later_writes)
{
	struct h2_store_opts o = {.flush_interval_ms = 1};
	enum h2_fdev_op kinds[2] = {H2_FDEV_WRITE, H2_FDEV_FLUSH};

	for (int k = 0; k < 2; k++) {
		struct h2_fdev *fd = t_fdev(DEV_SIZE);
		struct h2_store *st = t_open_opts(fd, &o);
		struct h2_fdev_fault f = {
		    .op = kinds[k], .nth = 1, .persistent = true};
		uint8_t a[BS], b[BS], got[BS];
		struct h2_vol *v;
		int r;

		t_fill(a, BS, 1, 0);
		t_fill(b, BS, 2, 0);
		cr_assert_eq(h2_vol_create(st, "v", VMAX, NULL), 0);
		cr_assert_eq(h2_vol_open(st, "v", &v), 0);
		cr_assert_eq(h2_vol_write(v, a, 0, BS, 0), 0);
		cr_assert_eq(h2_store_sync(st, NULL), 0);
		h2_fdev_fault_set(fd, &f);
		/* Accepted into memory, or refused if the flusher already
		 * failed; never durable. */
		r = h2_vol_write(v, b, 0, BS, 0);
		cr_assert(r == 0 || r == -ESHUTDOWN, "%d", r);
		cr_assert_lt(h2_store_sync(st, NULL), 0);
		cr_assert_lt(h2_vol_write(v, b, BS, BS, H2_IO_FUA), 0);
		cr_assert_eq(h2_vol_write(v, b, 2 * BS, BS, 0), -ESHUTDOWN);
		cr_assert_lt(h2_snap_create(st, "v", "s", NULL), 0);
		h2_vol_close(v);
		cr_assert_lt(h2_store_close(st), 0);
		h2_fdev_fault_clear(fd);
		t_check_clean(fd, "after the failure");
		st = t_open(fd, false);
		cr_assert_eq(h2_vol_open(st, "v", &v), 0);
		cr_assert_eq(h2_vol_read(v, got, 0, BS), 0);
		cr_assert(memcmp(got, a, BS) == 0 || memcmp(got, b, BS) == 0);
		cr_assert_eq(h2_vol_read(v, got, 2 * BS, BS), 0);
		cr_assert_eq(got[0], 0, "a refused write is not there");
		h2_vol_close(v);
		cr_assert_eq(h2_store_close(st), 0);
		h2_fdev_free(fd);
	}
}

/*
 * The error codes of a failure (h2core.h): the call whose flush failed
 * gets the device's error; every later write, sync, FUA write and
 * snapshot of that store gets -ESHUTDOWN (the store failed and refuses
 * them until reopened; the servers answer clients with an I/O error,
 * as dispatch.c and nbd.c say); reads still work.
 */
Test(faults, a_failed_store_refuses_with_eshutdown)
{
	struct h2_store_opts flusher = {.flush_interval_ms = 1000};
	struct h2_store_opts caller = {.no_flusher = true};
	const struct h2_store_opts *opts[2] = {&caller, &flusher};

	for (int k = 0; k < 2; k++) {
		struct h2_fdev *fd = t_fdev(DEV_SIZE);
		struct h2_store *st = t_open_opts(fd, opts[k]);
		struct h2_fdev_fault f = {
		    .op = H2_FDEV_WRITE, .nth = 1, .err = -ENOSPC};
		uint8_t buf[BS] = {1}, got[BS];
		struct h2_vol *v;

		cr_assert_eq(h2_vol_create(st, "v", VMAX, NULL), 0);
		cr_assert_eq(h2_vol_open(st, "v", &v), 0);
		cr_assert_eq(h2_vol_write(v, buf, 0, BS, 0), 0);
		h2_fdev_fault_set(fd, &f);
		cr_assert_eq(h2_store_sync(st, NULL), -ENOSPC, "%s",
			     h2_core_errmsg());
		cr_assert_eq(h2_store_sync(st, NULL), -ESHUTDOWN);
		cr_assert_eq(h2_vol_write(v, buf, 0, BS, 0), -ESHUTDOWN);
		cr_assert_eq(h2_vol_write(v, buf, 0, BS, H2_IO_FUA),
			     -ESHUTDOWN);
		cr_assert_eq(h2_vol_trim(v, 0, BS, 0), -ESHUTDOWN);
		cr_assert_eq(h2_snap_create(st, "v", "s", NULL), -ESHUTDOWN);
		cr_assert_eq(h2_vol_create(st, "w", BS, NULL), -ESHUTDOWN);
		cr_assert_eq(h2_vol_read(v, got, 0, BS), 0);
		cr_assert(memcmp(got, buf, BS) == 0);
		h2_vol_close(v);
		cr_assert_eq(h2_store_close(st), -ENOSPC,
			     "close reports the failure");
		t_check_clean(fd, "after the failure");
		h2_fdev_free(fd);
	}
}
