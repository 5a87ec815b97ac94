/*
 * snap_bench.c - what snapshots cost the h2 engine (issue 4, "Speed").
 *
 * Three sections, each on stores on device files under --dir:
 *
 *   create   h2_snap_create latency on a volume with --small (1 GiB)
 *            written and one with --big (64 GiB, scaled down to what the
 *            file system can hold) written, side by side with the ratio:
 *            the issue wants create O(1) in the volume's size and the data
 *            written.  A create returns once the snapshot is durable, so
 *            its time includes a flush.  --creates creates of the idle
 *            volume, then half as many right after --dirty bytes of random
 *            4 KiB writes inside the first --small bytes of the volume
 *            (the same dirty data on both sides: the create's flush carries
 *            it), then the idle snapshots but the oldest are deleted:
 *            they hold nothing alone, so their delete is the fixed cost.
 *            Both stores stay open and the steps alternate between them,
 *            so the machine's noise falls on both alike; the flush hook
 *            splits off the device's share of each create (from the
 *            flush's WRITTEN stage on: fdatasync, header, fdatasync).
 *
 *   write    4 KiB random overwrites of a fully written --size (4 GiB)
 *            volume with 0, 1 and --snaps (100) snapshots held.  Three
 *            stores, one per configuration, are aged the same way: fill,
 *            then --snaps steps of size/256 of random 4 KiB overwrites,
 *            each step starting with a sync; the snapshots are taken at
 *            the starts of the last 0, 1 or --snaps steps, so each holds
 *            different blocks and the newest is a step old.  Then
 *            --threads writers overwrite random blocks, --seconds per
 *            store cut into --slices slices that alternate between the
 *            stores (each slice ends in a timed h2_store_sync), so a noisy
 *            neighbour slows all configurations alike.  IOPS, its ratio
 *            to 0 snapshots (median of per-round ratios), write
 *            amplification (device bytes / client bytes), latency, flush
 *            stages.  The issue's aim: no more than 10% slower with
 *            snapshots held.
 *
 *   delete   h2_snap_delete time of a snapshot holding E bytes alone: a
 *            fully written --size volume, a snapshot, E bytes overwritten
 *            (sequentially in 1 MiB writes, or as E / 4 KiB distinct
 *            blocks spread over the volume), synced, then the delete
 *            (durable on return, so timed with its flush).  E = 0,
 *            size/64, size/16, size/4, size (64 MiB ... 4 GiB): the time
 *            should follow E, not the volume.  Before each delete a sample
 *            of blocks is read from the snapshot and the volume and their
 *            stamps checked, so the snapshot really held the old data.
 *
 * Every 4 KiB block written carries a stamp (magic, offset, generation);
 * wrong data read back fails the run.  Figures are printed, never judged
 * by the exit status: 0 unless something failed (I/O error, wrong data,
 * a stall).  Registered with ctest only as the --smoke runs, which check
 * that every section runs and prints, not how fast.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "h2core.h"
#include "snap_bench.h"

#define BLK	      4096u
#define SEQ_IO	      (1u << 20)
#define STAMP_MAGIC   0x50414e5348324842ull
#define MAX_THREADS   64
#define STALL_SECONDS 120
#define VOL	      "v"

/*
 * Flush stages seen by the flush hook.  written_ns: when the last flush
 * reached WRITTEN (its blocks and freemap are on the device file; what
 * remains is device flush, header, device flush and waking the waiters),
 * so a durable call that returns at t spent t - written_ns on the
 * device's part, not the engine's.  The sums split every flush into
 * FROZEN..WRITTEN (the engine writes its blocks) and WRITTEN..DONE (the
 * device syncs; DONE comes after the waiters are woken and the cache is
 * trimmed).
 */
struct devsync {
	atomic_uint_fast64_t written_ns;
	uint64_t t_frozen, t_written; /* flusher thread only */
	atomic_uint_fast64_t n, write_ns, sync_ns;
};

/* A store kept open across steps: a create-section volume, or one
 * configuration of the write section. */
struct side {
	struct h2_store *st;
	struct h2_dev *dev; /* the store's; valid while st is open */
	struct h2_vol *v;
	char path[PATH_MAX];
	struct devsync ds;
};

struct sb {
	struct snap_report r; /* options and figures */
	bool json, smoke, keep;
	int held; /* --held: the one write configuration to run, or -1 */
	int stall_s;
	struct side crs[NCR]; /* create section */
	struct side ws[NCFG]; /* write section */

	/* state */
	char path[PATH_MAX]; /* current device file, "" if none */
	struct h2_store *st;
	struct h2_dev *dev; /* st's device */
	atomic_uint_fast64_t progress;
	_Atomic(const char *) doing; /* static strings only */
	struct bench_dog dog;
	uint16_t *gen; /* delete section: generation of each block */
};

/* ---------------------------------------------------------------------- */
/* Stamps: each 4 KiB block starts with (magic, offset, generation).      */

static void stamp(uint8_t *blk, uint64_t off, uint64_t gen)
{
	uint64_t hdr[3] = {STAMP_MAGIC, off, gen};

	memcpy(blk, hdr, sizeof(hdr));
}

/* 0 if blk carries the stamp of (off, gen); else -EBADMSG, said why. */
static int stamp_check(const uint8_t *blk, uint64_t off, uint64_t gen,
		       const char *what)
{
	uint64_t hdr[3];

	memcpy(hdr, blk, sizeof(hdr));
	if (hdr[0] == STAMP_MAGIC && hdr[1] == off && hdr[2] == gen)
		return 0;
	fprintf(stderr,
		"h2_snap_bench: %s at %" PRIu64 ": wrong data (magic %#" PRIx64
		", offset %" PRIu64 ", generation %" PRIu64
		"; want generation %" PRIu64 ")\n",
		what, off, hdr[0], hdr[1], hdr[2], gen);
	return -EBADMSG;
}

static int fail(int r, const char *what)
{
	fprintf(stderr, "h2_snap_bench: %s: %s (%s)\n", what, strerror(-r),
		h2_core_errmsg());
	return r;
}

/* ---------------------------------------------------------------------- */
/* Watchdog: a hang is reported with what was running, files kept.       */

static void dog_report(void *arg, int stall_s)
{
	struct sb *b = arg;
	const char *what = atomic_load(&b->doing);

	fprintf(stderr,
		"h2_snap_bench: STALL: no progress for %d s during %s; file "
		"left in place: %s\n",
		stall_s, what ? what : "?", b->path);
}

static void doing(struct sb *b, const char *what)
{
	atomic_store(&b->doing, what);
	atomic_fetch_add(&b->progress, 1);
}

/* ---------------------------------------------------------------------- */
/* Stores.                                                                */

/* Make b->path a sparse device file of dev_size bytes named after tag. */
static int devfile_create(struct sb *b, const char *tag, uint64_t dev_size)
{
	struct h2_dev *dev;
	int r;

	snprintf(b->path, sizeof(b->path), "%s/h2snapbench.%ld.%s", b->r.dir,
		 (long)getpid(), tag);
	doing(b, "device file creation");
	r = h2_dev_create_file(b->path, dev_size, false, &dev);
	if (r == 0)
		h2_dev_close(dev);
	if (r < 0) {
		fprintf(stderr, "h2_snap_bench: %s: %s\n", b->path,
			strerror(-r));
		b->path[0] = 0;
	}
	return r;
}

static void devfile_remove(struct sb *b)
{
	if (b->path[0] && !b->keep)
		unlink(b->path);
	b->path[0] = 0;
}

/* The hook of struct devsync, on the flusher thread. */
static void devsync_hook(void *arg, enum h2_flush_stage stage)
{
	struct devsync *d = arg;

	uint64_t now = bench_now_ns();

	if (stage == H2_FLUSH_STAGE_FROZEN) {
		d->t_frozen = now;
		d->t_written = 0;
	} else if (stage == H2_FLUSH_STAGE_WRITTEN) {
		d->t_written = now;
		atomic_store(&d->written_ns, now);
	} else if (stage == H2_FLUSH_STAGE_DONE && d->t_frozen &&
		   d->t_written >= d->t_frozen) {
		atomic_fetch_add(&d->write_ns, d->t_written - d->t_frozen);
		atomic_fetch_add(&d->sync_ns, now - d->t_written);
		atomic_fetch_add(&d->n, 1);
		d->t_frozen = 0;
	}
}

/*
 * Format b->path afresh and open it as b->st, with a volume of vsize;
 * ds (may be NULL) gets the device's share of every flush.
 */
static int store_fresh(struct sb *b, uint64_t dirty_max, uint64_t vsize,
		       struct devsync *ds)
{
	struct h2_format_opts fo = {.force = true};
	struct h2_store_opts so = {.dirty_max = dirty_max,
				   .flush_hook = ds ? devsync_hook : NULL,
				   .flush_hook_arg = ds};
	struct h2_dev *dev;
	int r;

	doing(b, "h2_store_format");
	r = h2_dev_open_file(b->path, 0, &dev);
	if (r < 0) {
		fprintf(stderr, "h2_snap_bench: %s: %s\n", b->path,
			strerror(-r));
		return r;
	}
	r = h2_store_format(dev, &fo);
	if (r < 0) {
		h2_dev_close(dev);
		return fail(r, "format");
	}
	r = h2_store_open(dev, &so, &b->st);
	if (r < 0)
		return fail(r, "open");
	/* The store owns dev now; its counters stay readable while the
	 * store is open (dev.h: atomics). */
	b->dev = dev;
	r = h2_vol_create(b->st, VOL, vsize, NULL);
	return r < 0 ? fail(r, "volume create") : 0;
}

static int store_close(struct sb *b)
{
	int r = 0;

	if (b->st) {
		doing(b, "h2_store_close");
		r = h2_store_close(b->st);
		b->st = NULL;
		if (r < 0)
			fail(r, "close");
	}
	return r;
}

/* ---------------------------------------------------------------------- */
/* Writing.                                                               */

/* Write [0, len) in 1 MiB writes, stamped gen, then sync.  Seconds taken
 * into *secs. */
static int fill_seq(struct sb *b, struct h2_vol *v, uint64_t len, uint64_t gen,
		    double *secs)
{
	uint64_t t0 = bench_now_ns();
	uint8_t *buf = malloc(SEQ_IO);
	int r = 0;

	if (!buf)
		return -ENOMEM;
	bench_fill_random(buf, SEQ_IO, 0x5eed ^ gen);
	for (uint64_t off = 0; off < len && r == 0; off += SEQ_IO) {
		uint64_t n = len - off < SEQ_IO ? len - off : SEQ_IO;

		for (uint64_t i = 0; i < n; i += BLK)
			stamp(buf + i, off + i, gen);
		r = h2_vol_write(v, buf, off, n, 0);
		if (r < 0)
			fail(r, "fill write");
		if (b->gen)
			for (uint64_t i = 0; i < n; i += BLK)
				b->gen[(off + i) / BLK] = (uint16_t)gen;
		atomic_fetch_add(&b->progress, 1);
	}
	if (r == 0 && (r = h2_store_sync(b->st, NULL)) < 0)
		fail(r, "sync after fill");
	if (secs)
		*secs = (double)(bench_now_ns() - t0) / 1e9;
	free(buf);
	return r;
}

/* count random 4 KiB writes in [0, region), stamped gen, from one thread. */
static int rand_writes(struct sb *b, struct h2_vol *v, uint64_t region,
		       uint64_t count, uint64_t gen, uint64_t *rng)
{
	uint8_t buf[BLK];
	uint64_t nblk = region / BLK;
	int r = 0;

	bench_fill_random(buf, BLK, *rng);
	for (uint64_t i = 0; i < count && r == 0; i++) {
		uint64_t off = bench_rnd(rng) % nblk * BLK;

		stamp(buf, off, gen);
		r = h2_vol_write(v, buf, off, BLK, 0);
		if (r < 0)
			fail(r, "random write");
		atomic_fetch_add_explicit(&b->progress, 1,
					  memory_order_relaxed);
	}
	return r;
}

/* ---------------------------------------------------------------------- */
/* Section 1: create latency against data written.                        */

static int snap_name(char *buf, size_t len, const char *kind, int i)
{
	return snprintf(buf, len, "%s%04d", kind, i);
}

/*
 * Create and time one snapshot: latency in ms into *ms and, if ds is
 * not NULL, the device's share of it (from its flush's WRITTEN stage to
 * the return) into *dev_ms.
 */
static int timed_create(struct sb *b, const char *name, double *ms,
			struct devsync *ds, double *dev_ms)
{
	struct h2_snap_info si;
	uint64_t t0 = bench_now_ns(), t1, tw;
	int r = h2_snap_create(b->st, VOL, name, &si);

	t1 = bench_now_ns();
	*ms = (double)(t1 - t0) / 1e6;
	if (ds) {
		tw = atomic_load(&ds->written_ns);
		*dev_ms = tw > t0 && tw < t1 ? (double)(t1 - tw) / 1e6 : 0;
	}
	atomic_fetch_add(&b->progress, 1);
	return r < 0 ? fail(r, "h2_snap_create") : 0;
}

/*
 * A create-section store: the data and its tree (1/64 of it, twice for
 * slack), the freemap, and what the snapshots taken after writes keep:
 * the data those writes replaced and the tree blocks above it (at most
 * as much again).
 */
static uint64_t create_dev_size(const struct sb *b, uint64_t written)
{
	uint64_t ndirty = (uint64_t)(b->r.creates + 1) / 2;

	return written + written / 32 + ndirty * 2 * b->r.dirty + GiB / 2;
}

/* Make side's store current (b->st, b->path). */
static void use_side(struct sb *b, const struct side *side)
{
	b->st = side->st;
	snprintf(b->path, sizeof(b->path), "%s", side->path);
}

/* Side k's device file, store and filled volume; the store stays open. */
static int side_setup(struct sb *b, int k, const char *tag)
{
	struct cr_side *c = &b->r.cr[k];
	struct side *cs = &b->crs[k];
	int r;

	/* The file stays sparse: the fill is untimed. */
	r = devfile_create(b, tag, create_dev_size(b, c->written));
	if (r < 0)
		return r;
	snprintf(cs->path, sizeof(cs->path), "%s", b->path);
	r = store_fresh(b, 0, c->written, &cs->ds);
	cs->st = b->st;
	cs->dev = b->dev;
	if (r == 0 && (r = h2_vol_open(cs->st, VOL, &cs->v)) < 0)
		fail(r, "open volume");
	if (r == 0) {
		struct h2_store_stats s;

		fprintf(stderr, "create: filling %" PRIu64 " MiB...\n",
			c->written / MiB);
		doing(b, "create section: fill");
		r = fill_seq(b, cs->v, c->written, 1, &c->fill_s);
		h2_store_stat(cs->st, &s);
		c->used_mib = (double)s.used_bytes / MiB;
	}
	return r;
}

static int side_close(struct sb *b, int k)
{
	struct side *cs = &b->crs[k];
	int r;

	use_side(b, &b->crs[k]);
	if (cs->v)
		h2_vol_close(cs->v);
	cs->v = NULL;
	r = store_close(b);
	cs->st = NULL;
	devfile_remove(b);
	cs->path[0] = 0;
	return r;
}

/* Delete idle snapshot i of side k, timed. */
static int timed_idle_delete(struct sb *b, int k, int i)
{
	struct cr_side *c = &b->r.cr[k];
	struct h2_snap_info si;
	char name[32];
	uint64_t t0;
	int r;

	snap_name(name, sizeof(name), "idle", i);
	r = h2_snap_info(b->crs[k].st, VOL, name, &si);
	if (r < 0)
		return fail(r, "h2_snap_info");
	if (si.excl_bytes > c->delete_excl_max)
		c->delete_excl_max = si.excl_bytes;
	t0 = bench_now_ns();
	r = h2_snap_delete(b->crs[k].st, VOL, name);
	c->delete_ms[c->ndelete++] = (double)(bench_now_ns() - t0) / 1e6;
	atomic_fetch_add(&b->progress, 1);
	return r < 0 ? fail(r, "h2_snap_delete") : 0;
}

/*
 * Both volumes stay open and every step alternates between them (small,
 * big, small, ...), so the machine's noise falls on both sides alike.
 */
static int create_steps(struct sb *b)
{
	uint64_t rng = 0xc0ffee, dirty_n = b->r.dirty / BLK;
	char name[32];
	int r = 0;

	doing(b, "create section: idle creates");
	for (int i = 0; i < b->r.creates && r == 0; i++) {
		for (int k = 0; k < NCR && r == 0; k++) {
			struct cr_side *c = &b->r.cr[k];

			use_side(b, &b->crs[k]);
			snap_name(name, sizeof(name), "idle", i);
			r = timed_create(b, name, &c->create_ms[c->ncreate],
					 &b->crs[k].ds,
					 &c->create_dev_ms[c->ncreate]);
			c->ncreate += r == 0;
		}
	}
	/* The same dirty data on both sides: random writes inside the first
	 * --small bytes, whatever the volume's size. */
	doing(b, "create section: creates after writes");
	for (int i = 0; i < (b->r.creates + 1) / 2 && r == 0; i++) {
		for (int k = 0; k < NCR && r == 0; k++) {
			struct cr_side *c = &b->r.cr[k];

			use_side(b, &b->crs[k]);
			r = rand_writes(b, b->crs[k].v, b->r.small, dirty_n,
					2 + (uint64_t)i, &rng);
			snap_name(name, sizeof(name), "dirty", i);
			if (r == 0)
				r = timed_create(
				    b, name, &c->dirty_ms[c->ndirty],
				    &b->crs[k].ds, &c->dirty_dev_ms[c->ndirty]);
			c->ndirty += r == 0;
		}
	}
	/* Idle snapshots share every block with their neighbours; the
	 * oldest stays, since whichever is oldest holds alone what the
	 * writes above replaced. */
	doing(b, "create section: deletes");
	for (int i = 1; i < b->r.creates && r == 0; i++)
		for (int k = 0; k < NCR && r == 0; k++)
			r = timed_idle_delete(b, k, i);
	return r;
}

/*
 * Free space on --dir minus what is left for everyone else (5% of the
 * file system, at least 4 GiB outside --smoke); 0 if unknown.
 */
static uint64_t space_for_us(const struct sb *b, uint64_t *avail,
			     uint64_t *reserve)
{
	struct statvfs sv;

	*avail = *reserve = 0;
	if (statvfs(b->r.dir, &sv) < 0)
		return UINT64_MAX;
	*avail = (uint64_t)sv.f_bavail * sv.f_frsize;
	*reserve = (uint64_t)sv.f_blocks * sv.f_frsize / 20;
	if (*reserve < 4 * GiB && !b->smoke)
		*reserve = 4 * GiB;
	return *avail > *reserve ? *avail - *reserve : 0;
}

/*
 * The big volume must fit the file system with room to spare for
 * everyone else: halve it until it does, and say so.  Both stores exist
 * at once.
 */
static void size_big(struct sb *b)
{
	uint64_t avail, reserve, room = space_for_us(b, &avail, &reserve);
	uint64_t small = create_dev_size(b, b->r.small);

	if (create_dev_size(b, b->r.big) + small <= room)
		return;
	while (b->r.big > b->r.small &&
	       create_dev_size(b, b->r.big) + small > room)
		b->r.big /= 2;
	b->r.big_scaled = true;
	snprintf(b->r.big_note, sizeof(b->r.big_note),
		 "--big %" PRIu64 " GiB needs ~%" PRIu64 " GiB free on %s "
		 "(data, metadata, %" PRIu64 " GiB left for others); %" PRIu64
		 " GiB free: scaled down to %" PRIu64 " MiB",
		 b->r.big_asked / GiB,
		 (create_dev_size(b, b->r.big_asked) + small + reserve) / GiB +
		     1,
		 b->r.dir, reserve / GiB, avail / GiB, b->r.big / MiB);
}

static int section_create(struct sb *b)
{
	int r;

	size_big(b);
	if (b->r.big_scaled)
		fprintf(stderr, "create: %s\n", b->r.big_note);
	b->r.cr[CR_SMALL].written = b->r.small;
	b->r.cr[CR_BIG].written = b->r.big;
	r = side_setup(b, CR_BIG, "big");
	if (r == 0)
		r = side_setup(b, CR_SMALL, "small");
	if (r == 0)
		r = create_steps(b);
	for (int k = 0; k < NCR; k++) {
		/* On failure the files stay for a post-mortem. */
		if (r < 0) {
			b->keep = true;
			if (b->crs[k].path[0])
				fprintf(stderr,
					"h2_snap_bench: file left in "
					"place: %s\n",
					b->crs[k].path);
		}
		if (side_close(b, k) < 0 && r == 0)
			r = -EIO;
	}
	return r;
}

/* ---------------------------------------------------------------------- */
/* Section 2: random overwrites with snapshots held.                      */

/*
 * A write-section store: the volume, what the aging leaves with the
 * snapshots (the data it replaced and the tree copies above it, about
 * as much again), the measured overwrites' copies held by the newest
 * snapshot (up to the volume again) and dirty data: --dev-factor (3) x
 * the volume.  With 3, the fill and aging take about two thirds of it,
 * so the allocation cursor wraps once the measured overwrites have
 * written about a volume's worth: from then on they run in the steady
 * state of a used store, whose free space is what earlier flushes freed
 * (KiB/pwritev in the report shows which regime ran).  A larger factor
 * keeps the cursor in never-used space.
 *
 * The file is sparse: allocation is next-fit from a cursor (alloc.c),
 * so every configuration writes fresh file blocks at the same pace
 * until the cursor wraps, and the file system's cost of allocating them
 * falls on all alike.
 */
static uint64_t write_dev_size(const struct sb *b)
{
	return (uint64_t)b->r.dev_factor * b->r.size;
}

/*
 * The write section keeps three such stores, the delete section one:
 * halve --size until they fit the file system, and say so.
 */
static void size_work(struct sb *b)
{
	uint64_t avail, reserve, room = space_for_us(b, &avail, &reserve);
	uint64_t n = b->r.run_write ? NCFG : 1, asked = b->r.size, asked_dev;

	if (n * write_dev_size(b) <= room)
		return;
	asked_dev = write_dev_size(b);
	while (b->r.size > 16 * MiB && n * write_dev_size(b) > room)
		b->r.size /= 2;
	b->r.size_scaled = true;
	snprintf(b->r.size_note, sizeof(b->r.size_note),
		 "--size %" PRIu64 " MiB needs ~%" PRIu64 " GiB free on %s "
		 "(%" PRIu64 " store%s of %d x size, %" PRIu64
		 " GiB left for others); %" PRIu64
		 " GiB free: scaled down to %" PRIu64 " MiB",
		 asked / MiB, (n * asked_dev + reserve) / GiB + 1, b->r.dir, n,
		 n > 1 ? "s" : "", b->r.dev_factor, reserve / GiB, avail / GiB,
		 b->r.size / MiB);
}

struct writer {
	struct sb *b;
	struct h2_vol *v;
	uint64_t rng, ops, gen;
	uint64_t deadline_ns;
	int err;
	struct bench_hist *h; /* borrowed: the configuration's */
	pthread_t tid;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	struct sb *b = w->b;
	uint64_t nblk = b->r.size / BLK;
	uint8_t buf[BLK];

	bench_fill_random(buf, BLK, w->rng);
	for (;;) {
		uint64_t off = bench_rnd(&w->rng) % nblk * BLK, t0, t1;
		int r;

		stamp(buf, off, w->gen);
		t0 = bench_now_ns();
		r = h2_vol_write(w->v, buf, off, BLK, 0);
		t1 = bench_now_ns();
		if (r < 0) {
			w->err = fail(r, "overwrite");
			break;
		}
		bench_hist_add(w->h, t1 - t0);
		w->ops++;
		atomic_fetch_add_explicit(&b->progress, 1,
					  memory_order_relaxed);
		if (t1 >= w->deadline_ns)
			break;
	}
	return NULL;
}

/* What one configuration's slices of a round add up to. */
struct wacc {
	uint64_t ops, ns, sync_ns;
	uint64_t dev_written, client_written, flushes, flush_ns, waits;
	uint64_t fl_n, fl_write_ns, fl_sync_ns;
	uint64_t dev_writes; /* pwritev calls */
	double used_end;     /* store used / total after the last slice */
	struct bench_hist h[MAX_THREADS]; /* one per writer thread */
};

/*
 * One slice: --threads writers on side's volume for secs, then
 * h2_store_sync (timed: the slice's writes are durable at its end).
 */
static int slice(struct sb *b, struct side *side, double secs, struct wacc *acc)
{
	struct writer w[MAX_THREADS];
	struct h2_store_stats s0, s1;
	uint64_t t0, t_sync, t1, fl_n, fl_w, fl_s, dw;
	int r = 0, n;

	h2_store_stat(side->st, &s0);
	dw = __atomic_load_n(&side->dev->stats.writes, __ATOMIC_RELAXED);
	fl_n = atomic_load(&side->ds.n);
	fl_w = atomic_load(&side->ds.write_ns);
	fl_s = atomic_load(&side->ds.sync_ns);
	t0 = bench_now_ns();
	for (n = 0; n < b->r.threads; n++) {
		w[n] = (struct writer){
		    .b = b,
		    .v = side->v,
		    .gen = 1000,
		    .deadline_ns = t0 + (uint64_t)(secs * 1e9),
		    .h = &acc->h[n],
		    .rng =
			(t0 ^ (0x9E3779B97F4A7C15ull * (uint64_t)(n + 1))) | 1,
		};
		if (pthread_create(&w[n].tid, NULL, writer_main, &w[n]) != 0) {
			r = -EAGAIN;
			break;
		}
	}
	for (int i = 0; i < n; i++) {
		pthread_join(w[i].tid, NULL);
		if (w[i].err && r == 0)
			r = w[i].err;
		acc->ops += w[i].ops;
	}
	t_sync = bench_now_ns();
	if (r == 0 && (r = h2_store_sync(side->st, NULL)) < 0)
		fail(r, "sync");
	t1 = bench_now_ns();
	h2_store_stat(side->st, &s1);
	acc->ns += t1 - t0;
	acc->sync_ns += t1 - t_sync;
	acc->dev_written += s1.dev_bytes_written - s0.dev_bytes_written;
	acc->client_written +=
	    s1.client_bytes_written - s0.client_bytes_written;
	acc->flushes += s1.flushes - s0.flushes;
	acc->flush_ns += s1.flush_ns_total - s0.flush_ns_total;
	acc->waits += s1.write_waits - s0.write_waits;
	acc->dev_writes +=
	    __atomic_load_n(&side->dev->stats.writes, __ATOMIC_RELAXED) - dw;
	acc->used_end = (double)s1.used_bytes / (double)s1.total_bytes;
	/* A flush's DONE hook runs after h2_store_sync has returned: wait
	 * (briefly) for it, so the stage sums cover every flush. */
	for (int i = 0; i < 1000 && atomic_load(&side->ds.n) - fl_n <
					s1.flushes - s0.flushes;
	     i++)
		usleep(1000);
	acc->fl_n += atomic_load(&side->ds.n) - fl_n;
	acc->fl_write_ns += atomic_load(&side->ds.write_ns) - fl_w;
	acc->fl_sync_ns += atomic_load(&side->ds.sync_ns) - fl_s;
	return r;
}

static void wres_fill(struct wres *res, struct wacc *acc, int threads)
{
	for (int i = 1; i < threads; i++)
		bench_hist_merge(&acc->h[0], &acc->h[i]);
	res->secs = (double)acc->ns / 1e9;
	res->sync_s = (double)acc->sync_ns / 1e9;
	res->iops = res->secs > 0 ? (double)acc->ops / res->secs : 0;
	res->mbps =
	    res->secs > 0 ? (double)acc->ops * BLK / res->secs / 1e6 : 0;
	res->wa = acc->client_written
		      ? (double)acc->dev_written / (double)acc->client_written
		      : -1;
	res->flushes = (double)acc->flushes;
	res->flush_ms = acc->flushes
			    ? (double)acc->flush_ns / 1e6 / (double)acc->flushes
			    : 0;
	res->write_waits = (double)acc->waits;
	res->kib_per_dev_write =
	    acc->dev_writes
		? (double)acc->dev_written / 1024 / (double)acc->dev_writes
		: 0;
	res->used_end_pct = 100 * acc->used_end;
	if (acc->fl_n) {
		res->flush_write_ms =
		    (double)acc->fl_write_ns / 1e6 / (double)acc->fl_n;
		res->flush_sync_ms =
		    (double)acc->fl_sync_ns / 1e6 / (double)acc->fl_n;
	}
	res->p50_us = (double)bench_hist_pct(&acc->h[0], 0.50) / 1e3;
	res->p99_us = (double)bench_hist_pct(&acc->h[0], 0.99) / 1e3;
	res->p999_us = (double)bench_hist_pct(&acc->h[0], 0.999) / 1e3;
}

/*
 * Configuration c's store for one round: a fresh device file, the fill,
 * and the aging with nsnaps snapshots taken at the last steps' starts.
 * The store stays open for the measured slices.
 */
static int write_setup(struct sb *b, int c, int rd, struct wres *res)
{
	int nsnaps = b->r.ncfg_snaps[c];
	uint64_t step = b->r.size / 256 / BLK, rng = 0xa6e ^ (uint64_t)rd;
	struct side *side = &b->ws[c];
	struct h2_store_stats s;
	char name[32], tag[16];
	uint64_t t0;
	double ms;
	int r;

	snprintf(tag, sizeof(tag), "write%d", c);
	r = devfile_create(b, tag, write_dev_size(b));
	if (r < 0)
		return r;
	snprintf(side->path, sizeof(side->path), "%s", b->path);
	r = store_fresh(b, b->r.size / 16 < 256 * MiB ? b->r.size / 16 : 0,
			b->r.size, &side->ds);
	side->st = b->st;
	side->dev = b->dev;
	if (r == 0 && (r = h2_vol_open(side->st, VOL, &side->v)) < 0)
		fail(r, "open volume");
	if (r == 0) {
		doing(b, "write section: fill");
		r = fill_seq(b, side->v, b->r.size, 1, &res->fill_s);
	}
	/* The same writes in every configuration (the generator's seed
	 * depends on the round only); only the snapshots differ. */
	doing(b, "write section: aging");
	t0 = bench_now_ns();
	for (int i = 0; i < b->r.snaps && r == 0; i++) {
		if ((r = h2_store_sync(side->st, NULL)) < 0) {
			fail(r, "sync");
			break;
		}
		if (i >= b->r.snaps - nsnaps) {
			snap_name(name, sizeof(name), "age", i);
			r = timed_create(b, name, &ms, NULL, NULL);
		}
		if (r == 0)
			r = rand_writes(b, side->v, b->r.size, step ? step : 1,
					2 + (uint64_t)i, &rng);
	}
	if (r == 0 && (r = h2_store_sync(side->st, NULL)) < 0)
		fail(r, "sync");
	res->age_s = (double)(bench_now_ns() - t0) / 1e9;
	h2_store_stat(side->st, &s);
	res->snap_mib = (double)s.snapshot_bytes / MiB;
	res->used_start_pct =
	    100 * (double)s.used_bytes / (double)s.total_bytes;
	return r;
}

static int write_teardown(struct sb *b, int c)
{
	struct side *side = &b->ws[c];
	int r;

	if (!side->path[0])
		return 0;
	use_side(b, side);
	if (side->v)
		h2_vol_close(side->v);
	side->v = NULL;
	r = store_close(b);
	side->st = NULL;
	devfile_remove(b);
	side->path[0] = 0;
	return r;
}

/*
 * One round: the three stores are set up (filled and aged alike), then
 * measured in --slices slices each, interleaved (0, 1, N, 1, N, 0, ...):
 * a noisy neighbour's burst slows every configuration alike instead of
 * the one that happened to run then.
 */
static int write_round(struct sb *b, int rd)
{
	struct wacc *acc = calloc(NCFG, sizeof(*acc));
	double secs = b->r.seconds / b->r.slices;
	int r = 0;

	if (!acc)
		return -ENOMEM;
	for (int c = 0; c < NCFG && r == 0; c++) {
		if (b->held >= 0 && b->r.ncfg_snaps[c] != b->held)
			continue;
		b->r.cfg_ran[c] = true;
		fprintf(stderr,
			"write: round %d/%d, %d snapshots: fill and aging...\n",
			rd + 1, b->r.rounds, b->r.ncfg_snaps[c]);
		r = write_setup(b, c, rd, &b->r.w[c][rd]);
	}
	doing(b, "write section: measured overwrites");
	for (int j = 0; j < b->r.slices && r == 0; j++)
		for (int k = 0; k < NCFG && r == 0; k++) {
			int c = (k + j + rd) % NCFG;

			if (b->r.cfg_ran[c])
				r = slice(b, &b->ws[c], secs, &acc[c]);
		}
	for (int c = 0; c < NCFG; c++) {
		struct wres *res = &b->r.w[c][rd];

		if (write_teardown(b, c) < 0 && r == 0)
			r = -EIO;
		if (r < 0 || !b->r.cfg_ran[c])
			continue;
		wres_fill(res, &acc[c], b->r.threads);
		fprintf(stderr,
			"write: round %d/%d, %3d snapshots: %8.0f IOPS, WA "
			"%.2f, p99 %.0f us\n",
			rd + 1, b->r.rounds, b->r.ncfg_snaps[c], res->iops,
			res->wa, res->p99_us);
	}
	free(acc);
	return r;
}

static int section_write(struct sb *b)
{
	int r = 0;

	b->r.ncfg_snaps[0] = 0;
	b->r.ncfg_snaps[1] = b->r.snaps >= 1 ? 1 : 0;
	b->r.ncfg_snaps[2] = b->r.snaps;
	for (int rd = 0; rd < b->r.rounds && r == 0; rd++)
		r = write_round(b, rd);
	return r;
}

/* ---------------------------------------------------------------------- */
/* Section 3: delete time against exclusive data.                         */

static uint64_t gcd(uint64_t a, uint64_t b)
{
	while (b) {
		uint64_t t = a % b;

		a = b;
		b = t;
	}
	return a;
}

/*
 * The i-th of a pattern's overwritten blocks: sequential from 0, or a
 * walk with a stride coprime to the block count, so n of them are
 * distinct and spread over the whole volume.
 */
struct walk {
	uint64_t nblk, start, stride;
	int pattern;
};

static uint64_t walk_blk(const struct walk *k, uint64_t i)
{
	if (k->pattern == PATTERN_SEQ)
		return i;
	return (k->start + (i % k->nblk) * k->stride) % k->nblk;
}

static int overwrite_walk(struct sb *b, struct h2_vol *v, const struct walk *k,
			  uint64_t n, uint64_t gen)
{
	uint8_t *buf = malloc(SEQ_IO);
	uint64_t per = k->pattern == PATTERN_SEQ ? SEQ_IO / BLK : 1;
	int r = 0;

	if (!buf)
		return -ENOMEM;
	bench_fill_random(buf, SEQ_IO, gen);
	for (uint64_t i = 0; i < n && r == 0; i += per) {
		uint64_t blk = walk_blk(k, i), cnt = n - i < per ? n - i : per;

		for (uint64_t j = 0; j < cnt; j++) {
			stamp(buf + j * BLK, (blk + j) * BLK, gen);
			b->gen[blk + j] = (uint16_t)gen;
		}
		r = h2_vol_write(v, buf, blk * BLK, cnt * BLK, 0);
		if (r < 0)
			fail(r, "overwrite");
		atomic_fetch_add_explicit(&b->progress, 1,
					  memory_order_relaxed);
	}
	free(buf);
	return r;
}

/*
 * Read up to 64 of the overwritten blocks from the snapshot (the
 * generation before, old[]) and the volume (b->gen now).
 */
static int verify_sample(struct sb *b, struct h2_vol *v, struct h2_vol *snap,
			 const struct walk *k, uint64_t n, const uint16_t *old)
{
	uint8_t buf[BLK];
	int r = 0;

	for (uint64_t s = 0; s < 64 && s < n && r == 0; s++) {
		uint64_t blk = walk_blk(k, s * n / (n < 64 ? n : 64));
		uint64_t off = blk * BLK;

		r = h2_vol_read(snap, buf, off, BLK);
		if (r < 0)
			return fail(r, "snapshot read");
		r = stamp_check(buf, off, old[s], "snapshot read");
		if (r < 0)
			break;
		r = h2_vol_read(v, buf, off, BLK);
		if (r < 0)
			return fail(r, "volume read");
		r = stamp_check(buf, off, b->gen[blk], "volume read");
	}
	return r;
}

/* One snapshot holding e bytes alone, verified, deleted and timed. */
static int delete_one(struct sb *b, struct h2_vol *v, int pattern, uint64_t e,
		      uint64_t gen, uint64_t *rng, struct dres *res)
{
	uint64_t nblk = b->r.size / BLK, n = e / BLK, used0, t0;
	struct walk k = {.nblk = nblk, .pattern = pattern};
	struct h2_store_stats s;
	struct h2_snap_info si;
	struct h2_vol *snap = NULL;
	uint16_t old[64];
	int r;

	k.start = bench_rnd(rng) % nblk;
	k.stride = (nblk / 2 + bench_rnd(rng) % (nblk / 4 + 1)) | 1;
	while (gcd(k.stride, nblk) != 1)
		k.stride += 2;
	r = h2_snap_create(b->st, VOL, "del", NULL);
	if (r < 0)
		return fail(r, "h2_snap_create");
	for (uint64_t i = 0; i < 64 && i < n; i++)
		old[i] = b->gen[walk_blk(&k, i * n / (n < 64 ? n : 64))];
	r = overwrite_walk(b, v, &k, n, gen);
	if (r == 0 && (r = h2_store_sync(b->st, NULL)) < 0)
		fail(r, "sync");
	if (r == 0 && (r = h2_vol_open(b->st, VOL "@del", &snap)) < 0)
		fail(r, "open snapshot");
	if (r == 0)
		r = verify_sample(b, v, snap, &k, n, old);
	if (snap)
		h2_vol_close(snap);
	if (r == 0 && (r = h2_snap_info(b->st, VOL, "del", &si)) < 0)
		fail(r, "h2_snap_info");
	if (r < 0)
		return r;
	h2_store_stat(b->st, &s);
	used0 = s.used_bytes;
	t0 = bench_now_ns();
	r = h2_snap_delete(b->st, VOL, "del");
	res->ms = (double)(bench_now_ns() - t0) / 1e6;
	if (r < 0)
		return fail(r, "h2_snap_delete");
	/* The space comes back with the delete's flush; a second sync makes
	 * sure the count has settled (untimed). */
	if ((r = h2_store_sync(b->st, NULL)) < 0)
		return fail(r, "sync");
	h2_store_stat(b->st, &s);
	res->excl_bytes = (double)si.excl_bytes;
	res->freed_bytes = (double)used0 - (double)s.used_bytes;
	res->excl_mib = res->excl_bytes / MiB;
	res->freed_mib = res->freed_bytes / MiB;
	res->mbps = res->ms > 0 ? (double)si.excl_bytes / res->ms / 1e3 : 0;
	return 0;
}

static int section_delete(struct sb *b)
{
	uint64_t gen = 1, rng = 0xde1e7e;
	int r = 0;

	b->r.del_bytes[0] = 0;
	b->r.del_bytes[1] = b->r.size / 64;
	b->r.del_bytes[2] = b->r.size / 16;
	b->r.del_bytes[3] = b->r.size / 4;
	b->r.del_bytes[4] = b->r.size;
	b->gen = calloc(b->r.size / BLK, sizeof(*b->gen));
	if (!b->gen)
		return -ENOMEM;
	/* Peak: the volume, a snapshot holding all of it, their trees. */
	r = devfile_create(b, "delete", write_dev_size(b));
	for (int rd = 0; rd < b->r.rounds && r == 0; rd++) {
		struct h2_vol *v = NULL;

		r = store_fresh(b,
				b->r.size / 16 < 256 * MiB ? b->r.size / 16 : 0,
				b->r.size, NULL);
		if (r == 0 && (r = h2_vol_open(b->st, VOL, &v)) < 0)
			fail(r, "open volume");
		doing(b, "delete section: fill");
		if (r == 0)
			r = fill_seq(b, v, b->r.size, gen, NULL);
		doing(b, "delete section: snapshots and deletes");
		for (int p = 0; p < NPATTERN && r == 0; p++) {
			for (int e = 0; e < NDEL && r == 0; e++) {
				struct dres *res = &b->r.d[p][e][rd];

				r = delete_one(b, v, p, b->r.del_bytes[e],
					       ++gen, &rng, res);
				if (r == 0)
					fprintf(stderr,
						"delete: round %d/%d, %s, "
						"%6.1f MiB exclusive: "
						"%8.2f ms\n",
						rd + 1, b->r.rounds,
						snap_pattern_name[p],
						res->excl_mib, res->ms);
			}
		}
		if (v)
			h2_vol_close(v);
		if (store_close(b) < 0 && r == 0)
			r = -EIO;
	}
	free(b->gen);
	b->gen = NULL;
	if (r == 0)
		devfile_remove(b);
	return r;
}

/* ---------------------------------------------------------------------- */
/* Main.                                                                  */

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: h2_snap_bench [options]\n"
	    "  --dir DIR        where the device files go ($TMPDIR or /tmp)\n"
	    "  --only SECTION   create, write or delete (repeatable; all)\n"
	    "create section:\n"
	    "  --small N        data written on the small volume (1G)\n"
	    "  --big N          data written on the big volume (64G; halved "
	    "until it fits\n"
	    "                   the file system with 5%% (>= 4 GiB) to "
	    "spare, and said so)\n"
	    "  --creates N      idle creates per volume (50); half as many "
	    "after writes\n"
	    "  --dirty N        random writes before each such create (64M)\n"
	    "write and delete sections:\n"
	    "  --size N         volume size, written in full (4G); deletes "
	    "hold 0, 1/64,\n"
	    "                   1/16, 1/4 and all of it alone\n"
	    "  --snaps N        snapshots of the many-snapshot case (100)\n"
	    "  --threads N      writer threads of the measured overwrites (2)\n"
	    "  --seconds S      measured overwrites per configuration (10)\n"
	    "  --rounds N       rounds of the write and delete sections (3)\n"
	    "  --held N         write section: only the configuration with N "
	    "(0, 1 or\n"
	    "                   --snaps) snapshots held, e.g. under perf\n"
	    "  --dev-factor N   device file = N x size, sparse (3: the "
	    "allocation cursor\n"
	    "                   wraps after about a volume's worth of "
	    "measured writes)\n"
	    "  --slices N       measured overwrites: N slices per "
	    "configuration, interleaved,\n"
	    "                   each --seconds / N long and ending in a sync "
	    "(10)\n"
	    "  --smoke          tiny sizes and times: checks that it runs\n"
	    "  --json           JSON on stdout instead of the tables\n"
	    "  --keep           keep the device files\n");
}

static int parse_args(struct sb *b, int argc, char **argv)
{
	static const struct option lo[] = {
	    {"dir", required_argument, NULL, 'd'},
	    {"only", required_argument, NULL, 'O'},
	    {"small", required_argument, NULL, 'm'},
	    {"big", required_argument, NULL, 'B'},
	    {"creates", required_argument, NULL, 'c'},
	    {"dirty", required_argument, NULL, 'D'},
	    {"size", required_argument, NULL, 's'},
	    {"snaps", required_argument, NULL, 'n'},
	    {"threads", required_argument, NULL, 'j'},
	    {"seconds", required_argument, NULL, 't'},
	    {"rounds", required_argument, NULL, 'r'},
	    {"held", required_argument, NULL, 'H'},
	    {"slices", required_argument, NULL, 'S'},
	    {"dev-factor", required_argument, NULL, 'F'},
	    {"smoke", no_argument, NULL, 'q'},
	    {"json", no_argument, NULL, 'J'},
	    {"keep", no_argument, NULL, 'k'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *tmp = getenv("TMPDIR");
	bool have[128] = {false}, only = false;
	char *end;
	int c;

	b->r.dir = tmp && *tmp ? tmp : "/tmp";
	b->r.small = GiB;
	b->r.big = 64 * GiB;
	b->r.creates = 50;
	b->r.dirty = 64 * MiB;
	b->r.size = 4 * GiB;
	b->r.snaps = 100;
	b->r.threads = 2;
	b->r.seconds = 10;
	b->r.rounds = 3;
	b->r.slices = 10;
	b->r.dev_factor = 3;
	b->held = -1;
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		if (c > 0 && c < 128)
			have[c] = true;
		switch (c) {
		case 'd':
			b->r.dir = optarg;
			break;
		case 'O':
			only = true;
			if (strcmp(optarg, "create") == 0)
				b->r.run_create = true;
			else if (strcmp(optarg, "write") == 0)
				b->r.run_write = true;
			else if (strcmp(optarg, "delete") == 0)
				b->r.run_delete = true;
			else
				goto bad;
			break;
		case 'm':
			if (bench_parse_size(optarg, &b->r.small) < 0)
				goto bad;
			break;
		case 'B':
			if (bench_parse_size(optarg, &b->r.big) < 0)
				goto bad;
			break;
		case 'c':
			b->r.creates = atoi(optarg);
			if (b->r.creates < 2 || b->r.creates > MAX_CREATES)
				goto bad;
			break;
		case 'D':
			if (bench_parse_size(optarg, &b->r.dirty) < 0)
				goto bad;
			break;
		case 's':
			if (bench_parse_size(optarg, &b->r.size) < 0)
				goto bad;
			break;
		case 'n':
			b->r.snaps = atoi(optarg);
			if (b->r.snaps < 1 || b->r.snaps > 10000)
				goto bad;
			break;
		case 'j':
			b->r.threads = atoi(optarg);
			if (b->r.threads < 1 || b->r.threads > MAX_THREADS)
				goto bad;
			break;
		case 't':
			b->r.seconds = strtod(optarg, &end);
			if (*end || !(b->r.seconds > 0 && b->r.seconds <= 3600))
				goto bad;
			break;
		case 'r':
			b->r.rounds = atoi(optarg);
			if (b->r.rounds < 1 || b->r.rounds > MAX_ROUNDS)
				goto bad;
			break;
		case 'H':
			b->held = atoi(optarg);
			if (b->held < 0)
				goto bad;
			break;
		case 'F':
			b->r.dev_factor = atoi(optarg);
			if (b->r.dev_factor < 2 || b->r.dev_factor > 64)
				goto bad;
			break;
		case 'S':
			b->r.slices = atoi(optarg);
			if (b->r.slices < 1 || b->r.slices > 1000)
				goto bad;
			break;
		case 'q':
			b->smoke = true;
			break;
		case 'J':
			b->json = true;
			break;
		case 'k':
			b->keep = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return -EINVAL;
	}
	if (b->smoke) {
		/* Small enough for ctest on a busy machine, big enough
		 * that every path runs (several indirect levels, many
		 * snapshots, every delete size above a block). */
		if (!have['m'])
			b->r.small = 8 * MiB;
		if (!have['B'])
			b->r.big = 32 * MiB;
		if (!have['c'])
			b->r.creates = 6;
		if (!have['D'])
			b->r.dirty = 1 * MiB;
		if (!have['s'])
			b->r.size = 32 * MiB;
		if (!have['n'])
			b->r.snaps = 20;
		if (!have['t'])
			b->r.seconds = 0.2;
		if (!have['r'])
			b->r.rounds = 1;
		if (!have['S'])
			b->r.slices = 2;
	}
	if (!only)
		b->r.run_create = b->r.run_write = b->r.run_delete = true;
	b->stall_s = b->smoke ? 30 : STALL_SECONDS;
	b->r.big_asked = b->r.big;
	if (b->r.small < MiB || b->r.small % MiB || b->r.big % MiB ||
	    b->r.big < b->r.small || b->r.dirty < BLK) {
		fprintf(stderr, "h2_snap_bench: --small and --big must be "
				"multiples of 1 MiB, small <= big\n");
		return -EINVAL;
	}
	if (b->r.size < 16 * MiB || b->r.size % SEQ_IO ||
	    b->r.size / BLK > 1u << 31) {
		fprintf(stderr, "h2_snap_bench: --size must be a multiple of "
				"1 MiB, at least 16 MiB and at most 8 TiB\n");
		return -EINVAL;
	}
	return 0;
bad:
	fprintf(stderr, "h2_snap_bench: bad value for an option: %s\n", optarg);
	return -EINVAL;
}

int main(int argc, char **argv)
{
	static struct sb bench;
	struct sb *b = &bench;
	int r = 0;

	if (parse_args(b, argc, argv) < 0)
		return 2;
	bench_fs_describe(b->r.dir, b->r.fs, sizeof(b->r.fs));
	b->dog = (struct bench_dog){.progress = &b->progress,
				    .stall_s = b->stall_s,
				    .report = dog_report, .arg = b};
	if (bench_dog_start(&b->dog) < 0) {
		fprintf(stderr, "h2_snap_bench: cannot start a thread\n");
		return 1;
	}
	if (b->r.run_create)
		r = section_create(b);
	if (r == 0 && (b->r.run_write || b->r.run_delete)) {
		size_work(b);
		if (b->r.size_scaled)
			fprintf(stderr, "write/delete: %s\n", b->r.size_note);
	}
	if (r == 0 && b->r.run_write)
		r = section_write(b);
	if (r == 0 && b->r.run_delete)
		r = section_delete(b);
	/* On failure the stores stay open and the files in place: the
	 * data is what a post-mortem wants. */
	bench_dog_stop(&b->dog);
	if (r < 0) {
		if (b->path[0])
			fprintf(stderr,
				"h2_snap_bench: file left in place: "
				"%s\n",
				b->path);
		fprintf(stderr, "h2_snap_bench: FAILED: %s\n", strerror(-r));
		return 1;
	}
	if (b->json)
		snap_print_json(&b->r);
	else
		snap_print_human(&b->r);
	return 0;
}
