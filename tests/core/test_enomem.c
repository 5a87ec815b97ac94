/*
 * test_enomem.c - running out of memory in the engine.
 *
 * A workload of engine calls (large and unaligned writes, transactions of
 * many operations and ones that trim what they write, trims over blocks
 * of the running epoch, resizes that shrink a volume and give a tree a
 * level, a snapshot, a clone, a rollback, deletes) runs while tests/common/mfault.h
 * fails the Nth allocation the engine makes, on any thread (the caller's
 * and the flusher's), for N = 1, 2, ... until a run makes fewer; a
 * second test fails SPAN allocations in a row from the Nth on.
 *
 * Every call must either succeed or fail with -ENOMEM having changed
 * nothing: the volumes read back exactly the model, and what it would
 * have created or deleted is as it was; the call is then made again and
 * must get through within SPAN + 2 tries.  Nothing may abort or hang: the
 * flusher waits for memory rather than fail (flush.c), so syncs succeed.
 * No install phase allocates beyond what its transaction set aside
 * (h2_store_stats.unreserved_allocs); at the end the store closes cleanly
 * and checks clean, and in the sanitizer build nothing leaks.
 *
 * The store is a file in /dev/shm, through the real file device (the
 * fault-injecting device allocates as it records writes).
 * The persistent test starts its windows at every 4th N (they overlap).
 * H2_TEST_QUICK=1 (the sanitizer build) takes every 2nd N, every 8th
 * for the persistent test; H2_SOAK=1 (scripts/soak) walks spans of 4,
 * 16 and 64 from every N; EM_STRIDE overrides; EM_N=n runs N = n only
 * (MF_TRACE=1: where it failed).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/lsan_interface.h>
#endif

#include "check.h"
#include "dev.h"
#include "h2core.h"
#include "mfault.h"

#define MiB	  (1ull << 20)
#define DEV_SIZE  (32 * MiB)
#define VOL_SIZE  (2 * MiB)  /* a tree of two levels */
#define X_SIZE	  (200 << 10) /* one level, until it grows to X_BIG */
#define X_BIG	  MiB
#define SPAN	  16

static char em_base[64], em_path[64]; /* base image, a run's copy */
static uint64_t em_n;	  /* the run's first failing allocation */
static uint64_t em_tries; /* a call must get through within */

/* The volumes as acknowledged. */
struct em {
	struct h2_store *st;
	struct h2_vol *v; /* "v", open throughout */
	uint8_t *m;	  /* v's contents, VOL_SIZE bytes of room */
	uint64_t size;
	uint8_t *sm; /* snapshot v@s */
	uint64_t ssize;
	bool have_s, have_w, have_x;
	uint8_t *wm; /* clone w of v@s */
	uint8_t *xm; /* volume x, X_BIG bytes of room */
	uint64_t xsize;
	uint8_t *buf;
	unsigned enomem; /* calls refused for lack of memory */
};

/* Byte i of what a write with seed k leaves at offset off. */
static uint8_t pat(unsigned k, uint64_t off)
{
	return (uint8_t)(k * 37 ^ (off >> 9) ^ off ^ 0x5a);
}

static void pat_fill(uint8_t *b, unsigned k, uint64_t off, uint64_t len)
{
	for (uint64_t i = 0; i < len; i++)
		b[i] = pat(k, off + i);
}

/* Compare volume name (size bytes) with want. */
static void verify_vol(struct em *e, const char *name, const uint8_t *want,
		       uint64_t size, const char *when)
{
	struct h2_vol *v;
	uint64_t chunk = MiB;
	int r;

	r = h2_vol_open(e->st, name, &v);
	cr_assert_eq(r, 0, "N=%llu %s: open %s: %s", (unsigned long long)em_n,
		     when, name, h2_core_errmsg());
	cr_assert_eq(h2_vol_size(v), size, "N=%llu %s: %s changed size",
		     (unsigned long long)em_n, when, name);
	for (uint64_t off = 0; off < size; off += chunk) {
		uint64_t n = size - off < chunk ? size - off : chunk;

		r = h2_vol_read(v, e->buf, off, n);
		cr_assert_eq(r, 0, "N=%llu %s: read %s: %s",
			     (unsigned long long)em_n, when, name,
			     h2_core_errmsg());
		if (memcmp(e->buf, want + off, n) != 0) {
			for (uint64_t i = 0; i < n; i++)
				if (e->buf[i] != want[off + i])
					cr_assert_fail(
					    "N=%llu %s: %s byte %llu is %02x, "
					    "acknowledged %02x",
					    (unsigned long long)em_n, when,
					    name,
					    (unsigned long long)(off + i),
					    e->buf[i], want[off + i]);
		}
	}
	h2_vol_close(v);
}

static bool exists(struct em *e, const char *name)
{
	struct h2_vol_info vi;
	int r = h2_vol_info(e->st, name, &vi);

	cr_assert(r == 0 || r == -ENOENT, "info %s: %s", name,
		  h2_core_errmsg());
	return r == 0;
}

/* Everything is as acknowledged (allocations of the check not counted). */
static void verify_all(struct em *e, const char *when)
{
	struct h2_snap_info si;
	int r;

	mf_exempt(true);
	verify_vol(e, "v", e->m, e->size, when);
	r = h2_snap_info(e->st, "v", "s", &si);
	cr_assert_eq(r, e->have_s ? 0 : -ENOENT, "N=%llu %s: snapshot s",
		     (unsigned long long)em_n, when);
	if (e->have_s)
		verify_vol(e, "v@s", e->sm, e->ssize, when);
	cr_assert_eq(exists(e, "w"), e->have_w, "N=%llu %s: clone w",
		     (unsigned long long)em_n, when);
	if (e->have_w)
		verify_vol(e, "w", e->wm, e->ssize, when);
	cr_assert_eq(exists(e, "x"), e->have_x, "N=%llu %s: volume x",
		     (unsigned long long)em_n, when);
	if (e->have_x)
		verify_vol(e, "x", e->xm, e->xsize, when);
	mf_exempt(false);
}

/* Write seed k over [off, off + len) of the volume name (opened here). */
static int write_vol(struct em *e, const char *name, unsigned k, uint64_t off,
		     uint64_t len)
{
	struct h2_vol *v;
	int r = h2_vol_open(e->st, name, &v);

	if (r < 0)
		return r;
	mf_exempt(true);
	pat_fill(e->buf, k, off, len);
	mf_exempt(false);
	r = h2_vol_write(v, e->buf, off, len, 0);
	h2_vol_close(v);
	return r;
}

enum step {
	S_WRITE_BIG,
	S_WRITE_UNALIGNED,
	S_TXN_MANY,
	S_SYNC,
	S_SNAP,
	S_WRITE_SHARED,
	S_TRIM_MIXED,
	S_ZERO_EDGES,
	S_SHRINK,
	S_TXN_UNDO,
	S_CLONE,
	S_WRITE_CLONE,
	S_DELETE_CLONE,
	S_ROLLBACK,
	S_SNAP_DELETE,
	S_CREATE_X,
	S_WRITE_X,
	S_GROW_X,
	S_WRITE_X_TALL,
	S_DELETE_X,
	S_WRITE_FUA,
	S_END,
};

/* Run step k once: the engine's result; the model follows a success. */
static int step(struct em *e, enum step k)
{
	static struct h2_op ops[64];
	uint8_t *b = e->buf;
	int r = 0;

	switch (k) {
	case S_WRITE_BIG:
		mf_exempt(true);
		pat_fill(b, 1, 0, 128 << 10);
		mf_exempt(false);
		r = h2_vol_write(e->v, b, 0, 128 << 10, 0);
		if (r == 0)
			memcpy(e->m, b, 128 << 10);
		break;
	case S_WRITE_UNALIGNED: {
		uint64_t off = MiB + 100, len = (64 << 10) + 5000;

		mf_exempt(true);
		pat_fill(b, 2, off, len);
		mf_exempt(false);
		r = h2_vol_write(e->v, b, off, len, 0);
		if (r == 0)
			memcpy(e->m + off, b, len);
		break;
	}
	case S_TXN_MANY:
		/* Scattered writes and trims, and a zeroed run. */
		mf_exempt(true);
		pat_fill(b, 3, 0, 32 * 4096);
		for (int i = 0; i < 31; i++) {
			ops[i].off = (uint64_t)i * 65536 + 4096 * (i & 1);
			ops[i].len = i & 1 ? 8192 : 4096;
			ops[i].type = i & 1 ? H2_OP_TRIM : H2_OP_WRITE;
			ops[i].buf = b + i * 4096;
			ops[i].flags = 0;
		}
		ops[31] = (struct h2_op){.type = H2_OP_ZERO,
					 .off = VOL_SIZE - 200000,
					 .len = 100000,
					 .flags = H2_IO_NO_HOLE};
		mf_exempt(false);
		r = h2_vol_txn(e->v, ops, 32, 0, NULL);
		if (r == 0) {
			for (int i = 0; i < 31; i++) {
				if (ops[i].type == H2_OP_WRITE)
					memcpy(e->m + ops[i].off, ops[i].buf,
					       ops[i].len);
				else
					memset(e->m + ops[i].off, 0,
					       ops[i].len);
			}
			memset(e->m + VOL_SIZE - 200000, 0, 100000);
		}
		break;
	case S_SYNC:
		r = h2_store_sync(e->st, NULL);
		break;
	case S_SNAP:
		r = h2_snap_create(e->st, "v", "s", NULL);
		if (r == 0) {
			memcpy(e->sm, e->m, e->size);
			e->ssize = e->size;
			e->have_s = true;
		}
		break;
	case S_WRITE_SHARED:
		mf_exempt(true);
		pat_fill(b, 4, 512 << 10, 65536);
		mf_exempt(false);
		r = h2_vol_write(e->v, b, 512 << 10, 65536, 0);
		if (r == 0)
			memcpy(e->m + (512 << 10), b, 65536);
		break;
	case S_TRIM_MIXED:
		/* Whole level-1 blocks of this epoch, of the snapshot and
		 * of neither, and parts of two more. */
		r = h2_vol_trim(e->v, 200 << 10, MiB, 0);
		if (r == 0)
			memset(e->m + (200 << 10), 0, MiB);
		break;
	case S_ZERO_EDGES:
		r = h2_vol_write_zeroes(e->v, MiB + 300000, 300000, 0);
		if (r == 0)
			memset(e->m + MiB + 300000, 0, 300000);
		break;
	case S_SHRINK:
		r = h2_vol_resize(e->st, "v", VOL_SIZE - 300000);
		if (r == 0)
			e->size = VOL_SIZE - 300000;
		break;
	case S_TXN_UNDO:
		/* A write, a trim of all of it, zeroes over part of it. */
		mf_exempt(true);
		pat_fill(b, 6, 256 << 10, 64 << 10);
		mf_exempt(false);
		ops[0] = (struct h2_op){.type = H2_OP_WRITE, .off = 256 << 10,
					.len = 64 << 10, .buf = b};
		ops[1] = (struct h2_op){.type = H2_OP_TRIM, .off = 256 << 10,
					.len = 64 << 10};
		ops[2] = (struct h2_op){.type = H2_OP_ZERO,
					.off = (256 << 10) + 4096,
					.len = 10000,
					.flags = H2_IO_NO_HOLE};
		r = h2_vol_txn(e->v, ops, 3, 0, NULL);
		if (r == 0)
			memset(e->m + (256 << 10), 0, 64 << 10);
		break;
	case S_CLONE:
		r = h2_snap_clone(e->st, "v", "s", "w", NULL);
		if (r == 0) {
			memcpy(e->wm, e->sm, e->ssize);
			e->have_w = true;
		}
		break;
	case S_WRITE_CLONE:
		r = write_vol(e, "w", 7, 4096, 65536);
		if (r == 0)
			pat_fill(e->wm + 4096, 7, 4096, 65536);
		break;
	case S_DELETE_CLONE:
		r = h2_vol_delete(e->st, "w");
		if (r == 0)
			e->have_w = false;
		break;
	case S_ROLLBACK:
		r = h2_vol_rollback(e->st, "v", "s", H2_ROLLBACK_FORCE);
		if (r == 0) {
			memcpy(e->m, e->sm, e->ssize);
			e->size = e->ssize;
		}
		break;
	case S_SNAP_DELETE:
		r = h2_snap_delete(e->st, "v", "s");
		if (r == 0)
			e->have_s = false;
		break;
	case S_CREATE_X:
		r = h2_vol_create(e->st, "x", X_SIZE, NULL);
		if (r == 0) {
			memset(e->xm, 0, X_BIG);
			e->xsize = X_SIZE;
			e->have_x = true;
		}
		break;
	case S_WRITE_X:
		r = write_vol(e, "x", 8, 4096, 65536);
		if (r == 0)
			pat_fill(e->xm + 4096, 8, 4096, 65536);
		break;
	case S_GROW_X:
		/* The tree gets a level on top of what it holds. */
		r = h2_vol_resize(e->st, "x", X_BIG);
		if (r == 0)
			e->xsize = X_BIG;
		break;
	case S_WRITE_X_TALL:
		r = write_vol(e, "x", 5, X_BIG - 65536 - 100, 65536);
		if (r == 0)
			pat_fill(e->xm + X_BIG - 65536 - 100, 5,
				 X_BIG - 65536 - 100, 65536);
		break;
	case S_DELETE_X:
		r = h2_vol_delete(e->st, "x");
		if (r == 0)
			e->have_x = false;
		break;
	case S_WRITE_FUA:
		mf_exempt(true);
		pat_fill(b, 9, 4096, 8192);
		mf_exempt(false);
		r = h2_vol_write(e->v, b, 4096, 8192, H2_IO_FUA);
		if (r == 0)
			memcpy(e->m + 4096, b, 8192);
		break;
	case S_END:
		break;
	}
	return r;
}

/* Copy file src to dst, holes as holes. */
static void copy_sparse(const char *src, const char *dst)
{
	static uint8_t cbuf[1 << 20];
	int in = open(src, O_RDONLY), out;
	off_t end, data = 0, hole;

	cr_assert_geq(in, 0);
	out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	cr_assert_geq(out, 0);
	end = lseek(in, 0, SEEK_END);
	cr_assert_eq(ftruncate(out, end), 0);
	while ((data = lseek(in, data, SEEK_DATA)) >= 0 && data < end) {
		hole = lseek(in, data, SEEK_HOLE);
		while (data < hole) {
			size_t n = hole - data < (off_t)sizeof(cbuf)
				       ? (size_t)(hole - data)
				       : sizeof(cbuf);

			cr_assert_eq(pread(in, cbuf, n, data), (ssize_t)n);
			cr_assert_eq(pwrite(out, cbuf, n, data), (ssize_t)n);
			data += (off_t)n;
		}
	}
	close(in);
	close(out);
}

/* The base image: volume v written all over, durable. */
static void em_base_init(void)
{
	struct h2_store_opts so = {.no_flusher = true};
	uint8_t *m = malloc(VOL_SIZE);
	struct h2_store *st;
	struct h2_dev *dev;
	struct h2_vol *v;

	cr_assert_not_null(m);
	cr_assert_eq(h2_dev_create_file(em_base, DEV_SIZE, true, &dev), 0);
	cr_assert_eq(h2_store_format(dev, NULL), 0, "%s", h2_core_errmsg());
	cr_assert_eq(h2_store_open(dev, &so, &st), 0);
	cr_assert_eq(h2_vol_create(st, "v", VOL_SIZE, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	pat_fill(m, 0, 0, VOL_SIZE);
	cr_assert_eq(h2_vol_write(v, m, 0, VOL_SIZE, 0), 0);
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);
	free(m);
}

/* A run: the base image copied, the models as it is. */
static void em_start(struct em *e)
{
	struct h2_store_opts so = {.flush_interval_ms = 600000,
				   .dirty_max = 64 * MiB};
	struct h2_dev *dev;

	e->st = NULL;
	e->v = NULL;
	e->have_s = e->have_w = e->have_x = false;
	e->enomem = 0;
	copy_sparse(em_base, em_path);
	cr_assert_eq(h2_dev_open_file(em_path, 0, &dev), 0);
	cr_assert_eq(h2_store_open(dev, &so, &e->st), 0);
	cr_assert_eq(h2_vol_open(e->st, "v", &e->v), 0);
	e->size = VOL_SIZE;
	pat_fill(e->m, 0, 0, VOL_SIZE);
}

static void em_stop(struct em *e)
{
	struct h2_check_report *rep;
	struct h2_store_stats ss;
	struct h2_dev *dev;

	h2_store_stat(e->st, &ss);
	cr_assert_eq(ss.unreserved_allocs, 0,
		     "N=%llu: %llu allocations beyond a transaction's reserve",
		     (unsigned long long)em_n,
		     (unsigned long long)ss.unreserved_allocs);
	h2_vol_close(e->v);
	cr_assert_eq(h2_store_close(e->st), 0, "close: %s", h2_core_errmsg());
	cr_assert_eq(h2_dev_open_file(em_path, H2_DEV_RDONLY, &dev), 0);
	cr_assert_eq(h2_check(dev, &rep), 0);
	for (size_t i = 0; i < rep->nproblems; i++)
		fprintf(stderr, "check: %s: %s\n", rep->problems[i].where,
			rep->problems[i].what);
	cr_assert_eq(rep->status, H2_CHECK_CLEAN,
		     "N=%llu: the store does not check clean",
		     (unsigned long long)em_n);
	h2_check_report_free(rep);
	h2_dev_close(dev);
}

static void em_cleanup(void)
{
	unlink(em_base);
	unlink(em_path);
}

static uint64_t env_u64(const char *name, uint64_t dflt)
{
	const char *s = getenv(name);

	return s && *s ? strtoull(s, NULL, 0) : dflt;
}

/*
 * Walk N = 1, 1 + stride, ... with allocations N .. N + span - 1 failing,
 * until a run of the workload makes fewer than N.
 */
static void walk(const char *name, uint64_t span, uint64_t stride)
{
	uint64_t only = env_u64("EM_N", 0), n, runs = 0, enomem = 0;
	uint64_t points = 0;
	struct em e = {0};

	stride = env_u64("EM_STRIDE", stride);
	/* Each failed try takes at least one failing allocation. */
	em_tries = span + 2;
	e.m = malloc(VOL_SIZE);
	e.sm = malloc(VOL_SIZE);
	e.wm = malloc(VOL_SIZE);
	e.xm = malloc(X_BIG);
	e.buf = malloc(MiB);
	cr_assert(e.m && e.sm && e.wm && e.xm && e.buf);
	mf_init();
	snprintf(em_base, sizeof(em_base), "/dev/shm/h2-enomem-%d-base",
		 (int)getpid());
	snprintf(em_path, sizeof(em_path), "/dev/shm/h2-enomem-%d",
		 (int)getpid());
	atexit(em_cleanup);
	em_base_init();
	for (n = only ? only : 1;; n += stride) {
		uint64_t seen;

		em_n = n;
		em_start(&e);
		mf_arm(n, span);
		for (enum step k = 0; k < S_END; k++) {
			int tries = 0, r;

			while ((r = step(&e, k)) == -ENOMEM) {
				e.enomem++;
				verify_all(&e, "after -ENOMEM");
				cr_assert_lt(++tries, em_tries,
					     "N=%llu: step %d never got "
					     "through",
					     (unsigned long long)n, (int)k);
			}
			cr_assert_eq(r, 0, "N=%llu: step %d: %d %s",
				     (unsigned long long)n, (int)k, r,
				     h2_core_errmsg());
		}
		mf_disarm();
		seen = mf_seen();
		if (seen >= n)
			cr_assert_gt(mf_failed(), 0);
		verify_all(&e, "at the end");
		em_stop(&e);
		runs++;
		enomem += e.enomem;
		if (seen < n || only) {
			points = seen;
			break;
		}
	}
	fprintf(stderr,
		"enomem %s: %llu allocations in the workload, %llu runs "
		"(span %llu, stride %llu), %llu calls refused with -ENOMEM\n",
		name, (unsigned long long)points, (unsigned long long)runs,
		(unsigned long long)span, (unsigned long long)stride,
		(unsigned long long)enomem);
	free(e.m);
	free(e.sm);
	free(e.wm);
	free(e.xm);
	free(e.buf);
#ifdef __SANITIZE_ADDRESS__
	/* Here: a report at exit would not fail the test. */
	cr_assert_eq(__lsan_do_recoverable_leak_check(), 0,
		     "LeakSanitizer found leaks (reported above)");
#endif
}

static bool quick(void)
{
	return getenv("H2_TEST_QUICK") != NULL;
}

Test(enomem, failed_call_changes_nothing_once)
{
	walk("once", 1, quick() ? 2 : 1);
}

/*
 * Windows of SPAN overlap: every 4th N is enough for one to start near
 * each point.  H2_SOAK=1: spans of 4, 16 and 64, every N.
 */
Test(enomem, failed_call_changes_nothing_persistent)
{
	static const uint64_t soak[] = {4, SPAN, 64};

	if (!getenv("H2_SOAK")) {
		walk("persistent", SPAN, quick() ? 8 : 4);
		return;
	}
	for (size_t i = 0; i < 3; i++)
		walk("persistent", soak[i], 1);
}
