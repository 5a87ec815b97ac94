/*
 * engine_bench.c - the h2 engine against plain pwrite + periodic fdatasync.
 *
 * One run, one machine, one file system: a store on a device file and a
 * plain file of the working-set size, both under --dir, get the same
 * access patterns:
 *
 *   rand_write   4 KiB writes, aligned, uniformly random over the set
 *   seq_write    1 MiB sequential writes (thread i owns slice i)
 *   rand_read    4 KiB random reads of the data written; nothing is
 *                dropped, so both sides read through a warm page cache
 *
 * Both files are written in full before anything is timed: the raw file
 * by the fill, the device file by zero-filling it (unless --sparse), so
 * neither side allocates file system blocks while measured.  The volume
 * is the working set; dirty_max defaults to volume / 16 so that a flush,
 * which carries at most dirty_hard = 2 x dirty_max, is at most 1/8 of the
 * volume, as the issue's write amplification goals assume.
 *
 * The plain file ("raw") is synced by a thread that follows the engine
 * flusher's own rules (flush.c): fdatasync once flush_ms have passed
 * since the last one ended, or as soon as dirty_max bytes of the file
 * were dirtied since the last one began; and a writer that finds more
 * than dirty_hard bytes dirty or being synced waits for the sync that
 * covers the newest dirty data, as h2_epoch_begin makes the engine's
 * writers wait.  "Dirtied" counts distinct 4 KiB pages per sync
 * generation, as the engine counts distinct dirty chains.  So both sides
 * make the same data durable at the same cadence (the table prints both
 * sides' sync counts and dirty data per sync).  With a timer alone
 * (--raw-sync interval) the comparison is unfair to the engine: between
 * two syncs raw's writes land in the page cache at memcpy speed and
 * overwrites of the working set cost nothing, while the engine must
 * write and sync every dirty_max.
 *
 * Every write phase ends with a final sync (h2_store_sync or fdatasync)
 * that counts in the phase's time, so both sides report durable
 * throughput.  Each phase runs for --seconds; the engine/raw pair runs
 * --rounds times, alternating which goes first (A/B, B/A, ...), and the
 * table shows medians (ratios are medians of the per-round ratios, so
 * each ratio compares two neighbouring runs on a noisy machine).
 *
 * Engine figures besides throughput: write amplification per write
 * pattern (device bytes written / client bytes written, final
 * h2_store_sync included), each flush's dirty data and stage times, and
 * the write latency split by whether a flush overlapped the write.  The
 * flush hook marks FROZEN..DONE; a write counts as "during a flush" if
 * the mark was set at its start or end or a flush stage passed while it
 * ran.  (A writer stalled while the flusher takes its cut, and finished
 * before the FROZEN hook runs, counts as "no flush".)  Raw's writes are
 * split the same way by its fdatasync calls.
 *
 * Every 4 KiB block written carries a stamp (magic, its own offset) and
 * reads check it, so wrong data is an error, not a figure.  Exit status is
 * 0 unless something failed (I/O error, wrong data, a stall of
 * STALL_SECONDS); goals are printed next to the figures and never fail a
 * run.  Not registered with ctest except as the --quick smoke test.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "h2core.h"

#define BLK	      4096u	 /* random I/O size */
#define SEQ_IO	      (1u << 20) /* sequential I/O size */
#define STAMP_MAGIC   0x4b4c424843454e42ull
#define MAX_THREADS   64
#define STALL_SECONDS 60 /* --quick: 10, so ctest reports a hang itself */

/* ---------------------------------------------------------------------- */
/* State.                                                                 */

struct worker {
	struct bench *b;
	enum sys sys;
	enum pat pat;
	int idx;
	uint64_t rng;
	uint8_t *buf;
	uint64_t ops, bytes, bad, last_end_ns;
	int err;
	char msg[512];
	struct bench_hist h[2]; /* LAT_QUIET, LAT_FLUSH */
	pthread_t tid;
};

/*
 * Flush tracking, per side: mark is 1 between FROZEN and DONE (raw: while
 * fdatasync runs); gen counts every change of mark.
 */
struct flushmark {
	atomic_uint mark;
	atomic_uint_fast64_t gen;
};

struct bench {
	struct bench_report r; /* options and figures */
	bool json, quick, keep;
	int only_pat, only_sys; /* --only, --side: -1 = all */
	int stall_s;

	char dev_path[PATH_MAX], raw_path[PATH_MAX];
	struct h2_store *st;
	struct h2_vol *vol;
	int raw_fd;
	char disk_stat[PATH_MAX]; /* sysfs stat file of dir's disk, or "" */
	struct flushmark fm[NSYS];
	uint64_t deadline_ns;

	/* raw fdatasync thread; lock protects the fields below it */
	pthread_t sync_tid;
	pthread_mutex_t lock;
	pthread_cond_t cv;
	pthread_cond_t done_cv; /* a raw fdatasync finished */
	bool sync_stop;
	unsigned raw_target; /* writers wait until this generation... */
	unsigned raw_synced; /* ...is covered by a finished fdatasync */
	uint64_t raw_syncs, raw_sync_ns, raw_sync_pages, raw_sync_pages_max;
	uint64_t raw_waits;
	int sync_err;

	/*
	 * Raw's dirty data: raw_page_gen[page] is the sync generation that
	 * last dirtied the page (relaxed: a lost race only counts a page
	 * twice); raw_dirty counts the pages first dirtied in raw_gen.
	 */
	_Atomic uint32_t *raw_page_gen;
	atomic_uint raw_gen;
	atomic_uint_fast64_t raw_dirty;
	atomic_uint_fast64_t raw_inflight; /* pages the running sync writes */
	uint64_t raw_dirty_max, raw_dirty_hard; /* pages */

	/* Engine flushes of the current phase: dirty bytes at FROZEN, time
	 * FROZEN..WRITTEN (blocks written) and WRITTEN..DONE (syncs and
	 * header); t_* are the flusher thread's own. */
	_Atomic(struct h2_store *) hook_st; /* NULL: do not sample */
	atomic_uint_fast64_t fz_n, fz_sum, fz_max;
	atomic_uint_fast64_t fz_write_ns, fz_sync_ns, fz_staged;
	uint64_t t_frozen, t_written;

	/* watchdog */
	struct bench_dog dog;
	atomic_uint_fast64_t progress;
	_Atomic(const char *) doing;		      /* static strings only */
	atomic_int doing_round, doing_pat, doing_sys; /* doing == "phase" */
};

/* Mark every 4 KiB block of buf (written at off) with its offset. */
static void stamp(uint8_t *buf, uint64_t off, uint64_t len)
{
	for (uint64_t i = 0; i < len; i += BLK) {
		uint64_t hdr[2] = {STAMP_MAGIC, off + i};

		memcpy(buf + i, hdr, sizeof(hdr));
	}
}

static bool stamp_ok(const uint8_t *buf, uint64_t off)
{
	uint64_t hdr[2];

	memcpy(hdr, buf, sizeof(hdr));
	return hdr[0] == STAMP_MAGIC && hdr[1] == off;
}

static int raw_pread(int fd, void *buf, size_t len, uint64_t off)
{
	char *p = buf;

	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static void mark_set(struct flushmark *m, unsigned v)
{
	atomic_store(&m->mark, v);
	atomic_fetch_add(&m->gen, 1);
}

/*
 * Engine flush hook, on the flusher thread.  At FROZEN the dirty count is
 * the frozen epoch's chains (none written yet) plus whatever the new
 * epoch dirtied in the microseconds since: one flush's dirty data.  The
 * flusher holds only its run_lock here, so h2_store_stat's locks are safe.
 */
static void engine_hook(void *arg, enum h2_flush_stage stage)
{
	struct bench *b = arg;
	struct h2_store *st;

	if (stage == H2_FLUSH_STAGE_FROZEN) {
		b->t_frozen = bench_now_ns();
		b->t_written = 0;
		mark_set(&b->fm[SYS_ENGINE], 1);
		st = atomic_load(&b->hook_st);
		if (st) {
			struct h2_store_stats s;
			uint_fast64_t max = atomic_load(&b->fz_max);

			h2_store_stat(st, &s);
			atomic_fetch_add(&b->fz_n, 1);
			atomic_fetch_add(&b->fz_sum, s.dirty_bytes);
			while (s.dirty_bytes > max &&
			       !atomic_compare_exchange_weak(&b->fz_max, &max,
							     s.dirty_bytes))
				;
		}
	} else if (stage == H2_FLUSH_STAGE_WRITTEN) {
		b->t_written = bench_now_ns();
	} else if (stage == H2_FLUSH_STAGE_DONE) {
		mark_set(&b->fm[SYS_ENGINE], 0);
		if (b->t_written >= b->t_frozen && b->t_frozen) {
			atomic_fetch_add(&b->fz_write_ns,
					 b->t_written - b->t_frozen);
			atomic_fetch_add(&b->fz_sync_ns,
					 bench_now_ns() - b->t_written);
			atomic_fetch_add(&b->fz_staged, 1);
		}
	}
}

/* Wake the raw syncer (it re-checks its conditions). */
static void rawsync_kick(struct bench *b)
{
	pthread_mutex_lock(&b->lock);
	pthread_cond_signal(&b->cv);
	pthread_mutex_unlock(&b->lock);
}

/*
 * Count the pages of [off, off+len) of the raw file that this sync
 * generation had not dirtied yet, and wake the syncer when the count
 * reaches dirty_max, as h2_epoch_end kicks the engine's flusher.
 */
static void raw_dirtied(struct bench *b, uint64_t off, uint64_t len)
{
	unsigned g = atomic_load_explicit(&b->raw_gen, memory_order_relaxed);
	uint64_t added = 0, old;

	for (uint64_t p = off / BLK; p < (off + len + BLK - 1) / BLK; p++) {
		if (atomic_load_explicit(&b->raw_page_gen[p],
					 memory_order_relaxed) == g)
			continue;
		atomic_store_explicit(&b->raw_page_gen[p], g,
				      memory_order_relaxed);
		added++;
	}
	if (!added)
		return;
	old = atomic_fetch_add(&b->raw_dirty, added);
	if (!b->r.raw_interval_only && old < b->raw_dirty_max &&
	    old + added >= b->raw_dirty_max)
		rawsync_kick(b);
}

/*
 * Raw's backpressure, h2_epoch_begin's rule: above dirty_hard (pages
 * dirty plus pages being synced), wait for the sync of the newest dirty
 * generation: the current one if it dirtied anything, else the one being
 * synced.
 */
static void raw_throttle(struct bench *b)
{
	unsigned target;

	if (b->r.raw_interval_only ||
	    atomic_load(&b->raw_dirty) + atomic_load(&b->raw_inflight) <=
		b->raw_dirty_hard)
		return;
	pthread_mutex_lock(&b->lock);
	target =
	    atomic_load(&b->raw_gen) - (atomic_load(&b->raw_dirty) ? 0 : 1);
	if (target > b->raw_synced) {
		b->raw_waits++;
		if (b->raw_target < target)
			b->raw_target = target;
		pthread_cond_signal(&b->cv);
		while (b->raw_synced < target && !b->sync_stop)
			pthread_cond_wait(&b->done_cv, &b->lock);
	}
	pthread_mutex_unlock(&b->lock);
}

/* ---------------------------------------------------------------------- */
/* Workers.                                                               */

/* One I/O on side w->sys; writes and reads use w->buf. */
static int do_io(struct worker *w, bool write, uint64_t off, uint64_t len)
{
	struct bench *b = w->b;
	int r;

	if (w->sys == SYS_ENGINE) {
		r = write ? h2_vol_write(b->vol, w->buf, off, len, 0)
			  : h2_vol_read(b->vol, w->buf, off, len);
		if (r < 0)
			snprintf(w->msg, sizeof(w->msg),
				 "engine %s at %" PRIu64 " len %" PRIu64
				 ": %s (%s)",
				 write ? "write" : "read", off, len,
				 strerror(-r), h2_core_errmsg());
	} else {
		if (write)
			raw_throttle(b);
		r = write ? bench_pwrite_all(b->raw_fd, w->buf, len, off)
			  : raw_pread(b->raw_fd, w->buf, len, off);
		if (r == 0 && write)
			raw_dirtied(b, off, len);
		if (r < 0)
			snprintf(w->msg, sizeof(w->msg),
				 "raw %s at %" PRIu64 " len %" PRIu64 ": %s",
				 write ? "pwrite" : "pread", off, len,
				 strerror(-r));
	}
	return r;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct bench *b = w->b;
	struct flushmark *fm = &b->fm[w->sys];
	uint64_t nblk = b->r.size / BLK;
	uint64_t slice = b->r.size / SEQ_IO / (uint64_t)b->r.threads * SEQ_IO;
	uint64_t base = slice * (uint64_t)w->idx, pos = 0;
	bool write = w->pat != PAT_RAND_READ;

	for (;;) {
		uint64_t off, len, g0, g1, t0, t1;
		unsigned m0, m1;
		int r;

		if (w->pat == PAT_SEQ_WRITE) {
			off = base + pos;
			len = SEQ_IO;
			pos = pos + SEQ_IO < slice ? pos + SEQ_IO : 0;
		} else {
			off = bench_rnd(&w->rng) % nblk * BLK;
			len = BLK;
		}
		if (write)
			stamp(w->buf, off, len);
		m0 = atomic_load(&fm->mark);
		g0 = atomic_load(&fm->gen);
		t0 = bench_now_ns();
		r = do_io(w, write, off, len);
		t1 = bench_now_ns();
		m1 = atomic_load(&fm->mark);
		g1 = atomic_load(&fm->gen);
		if (r < 0) {
			w->err = r;
			break;
		}
		if (!write && !stamp_ok(w->buf, off)) {
			if (w->bad++ == 0) {
				uint64_t hdr[2];

				memcpy(hdr, w->buf, sizeof(hdr));
				snprintf(w->msg, sizeof(w->msg),
					 "%s read at %" PRIu64 " returned a "
					 "block stamped magic %#" PRIx64
					 " offset %" PRIu64,
					 bench_sys_name[w->sys], off, hdr[0],
					 hdr[1]);
			}
		}
		bench_hist_add(
		    &w->h[(m0 || m1 || g0 != g1) ? LAT_FLUSH : LAT_QUIET],
		    t1 - t0);
		w->ops++;
		w->bytes += len;
		w->last_end_ns = t1;
		atomic_fetch_add_explicit(&b->progress, 1,
					  memory_order_relaxed);
		if (t1 >= b->deadline_ns)
			break;
	}
	return NULL;
}

/* ---------------------------------------------------------------------- */
/* The raw side's periodic fdatasync, and the watchdog.                   */

static void deadline_after(struct timespec *ts, unsigned ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

static bool past(const struct timespec *ts)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec > ts->tv_sec ||
	       (now.tv_sec == ts->tv_sec && now.tv_nsec >= ts->tv_nsec);
}

/*
 * The raw side's flusher: the engine flusher's loop (flush.c,
 * flusher_main) with fdatasync for the flush.  Nothing dirtied and no
 * writer waiting means nothing to sync, as a flush of an empty epoch
 * writes nothing and is not counted.
 */
static void *rawsync_main(void *arg)
{
	struct bench *b = arg;
	struct timespec deadline;

	deadline_after(&deadline, b->r.flush_ms);
	pthread_mutex_lock(&b->lock);
	while (!b->sync_stop) {
		bool waited_for = b->raw_target > b->raw_synced;
		uint64_t t0, pages = atomic_load(&b->raw_dirty);
		unsigned g;
		int r;

		if (!waited_for &&
		    (b->r.raw_interval_only || pages < b->raw_dirty_max) &&
		    !past(&deadline)) {
			pthread_cond_timedwait(&b->cv, &b->lock, &deadline);
			continue;
		}
		if (!waited_for && pages == 0) {
			deadline_after(&deadline, b->r.flush_ms);
			continue;
		}
		pthread_mutex_unlock(&b->lock);
		/* A new generation first, so pages dirtied from now on count
		 * towards the next sync. */
		g = atomic_fetch_add(&b->raw_gen, 1);
		pages = atomic_exchange(&b->raw_dirty, 0);
		atomic_store(&b->raw_inflight, pages);
		t0 = bench_now_ns();
		mark_set(&b->fm[SYS_RAW], 1);
		r = fdatasync(b->raw_fd) < 0 ? -errno : 0;
		mark_set(&b->fm[SYS_RAW], 0);
		atomic_store(&b->raw_inflight, 0);
		atomic_fetch_add(&b->progress, 1);
		pthread_mutex_lock(&b->lock);
		b->raw_synced = g;
		pthread_cond_broadcast(&b->done_cv);
		if (pages) {
			b->raw_syncs++;
			b->raw_sync_ns += bench_now_ns() - t0;
			b->raw_sync_pages += pages;
			if (pages > b->raw_sync_pages_max)
				b->raw_sync_pages_max = pages;
		}
		if (r < 0 && !b->sync_err)
			b->sync_err = r;
		deadline_after(&deadline, b->r.flush_ms);
	}
	pthread_mutex_unlock(&b->lock);
	return NULL;
}

/*
 * A hang is worth a precise report: if nothing progresses for
 * STALL_SECONDS, print what was running and the engine's counters, and
 * exit without cleaning up (the files stay for a post-mortem).
 */
static void dog_report(void *arg, int stall_s)
{
	struct bench *b = arg;
	const char *what = atomic_load(&b->doing);

	fprintf(stderr,
		"h2_engine_bench: STALL: no progress for %d s during %s",
		stall_s, what ? what : "?");
	if (what && strcmp(what, "phase") == 0)
		fprintf(stderr, " round %d, %s on %s",
			atomic_load(&b->doing_round) + 1,
			bench_pat_name[atomic_load(&b->doing_pat)],
			bench_sys_name[atomic_load(&b->doing_sys)]);
	fprintf(stderr, "\n");
	if (b->st && what && strcmp(what, "phase") == 0) {
		struct h2_store_stats s;

		h2_store_stat(b->st, &s);
		fprintf(stderr,
			"  engine: dirty %" PRIu64 " B, flushes %" PRIu64
			", durable tid %" PRIu64 ", writer waits %" PRIu64
			", dev written %" PRIu64 " B, dev flushes %" PRIu64
			", flush mark %u\n",
			s.dirty_bytes, s.flushes, s.durable_tid, s.write_waits,
			s.dev_bytes_written, s.dev_flushes,
			atomic_load(&b->fm[SYS_ENGINE].mark));
	}
	fprintf(stderr, "  files left in place: %s %s\n", b->dev_path,
		b->raw_path);
}

/* ---------------------------------------------------------------------- */
/* Bytes sent to storage, as the kernel counts them.                      */

/* write_bytes of /proc/self/io, or -1. */
static double proc_write_bytes(void)
{
	FILE *f = fopen("/proc/self/io", "r");
	char line[128];
	double v = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long x;

		if (sscanf(line, "write_bytes: %llu", &x) == 1)
			v = (double)x;
	}
	fclose(f);
	return v;
}

/* Bytes written to the disk under dir (sysfs stat, field 7), or -1. */
static double disk_write_bytes(const struct bench *b)
{
	unsigned long long f[7];
	FILE *fp;
	int n;

	if (!b->disk_stat[0] || !(fp = fopen(b->disk_stat, "r")))
		return -1;
	n = fscanf(fp, "%llu %llu %llu %llu %llu %llu %llu", &f[0], &f[1],
		   &f[2], &f[3], &f[4], &f[5], &f[6]);
	fclose(fp);
	return n == 7 ? (double)f[6] * 512.0 : -1;
}

/* Find the sysfs stat file of the block device holding dir. */
static void find_disk(struct bench *b)
{
	char link[64], target[PATH_MAX];
	struct stat sb;
	ssize_t n;

	b->disk_stat[0] = 0;
	b->r.disk[0] = 0;
	if (stat(b->r.dir, &sb) < 0)
		return;
	snprintf(link, sizeof(link), "/sys/dev/block/%u:%u", major(sb.st_dev),
		 minor(sb.st_dev));
	snprintf(b->disk_stat, sizeof(b->disk_stat), "%s/stat", link);
	if (access(b->disk_stat, R_OK) < 0) {
		b->disk_stat[0] = 0;
		return;
	}
	n = readlink(link, target, sizeof(target) - 1);
	if (n > 0) {
		target[n] = 0;
		snprintf(b->r.disk, sizeof(b->r.disk), "%.63s",
			 strrchr(target, '/') ? strrchr(target, '/') + 1
					      : target);
	}
}

/* ---------------------------------------------------------------------- */
/* Phases.                                                                */

static void fill_lat(struct result *res, enum lat l, const struct bench_hist *h)
{
	res->n[l] = (double)h->n;
	res->p50[l] = (double)bench_hist_pct(h, 0.50) / 1000.0;
	res->p99[l] = (double)bench_hist_pct(h, 0.99) / 1000.0;
	res->p999[l] = (double)bench_hist_pct(h, 0.999) / 1000.0;
	res->max[l] = (double)h->max / 1000.0;
}

/* Run pattern pat on side sys for seconds; figures into *res. */
static int run_phase(struct bench *b, enum sys sys, enum pat pat,
		     double seconds, struct result *res)
{
	struct worker *w[MAX_THREADS] = {0};
	struct bench_hist *all = calloc(3, sizeof(struct bench_hist));
	struct h2_store_stats s0, s1;
	bool write = pat != PAT_RAND_READ, syncer = false;
	uint64_t t0, t_ack = 0, t_sync, t1;
	double proc0 = proc_write_bytes(), disk0 = disk_write_bytes(b);
	int r = 0, n = 0;

	memset(res, 0, sizeof(*res));
	if (!all)
		return -ENOMEM;
	if (sys == SYS_ENGINE) {
		atomic_store(&b->fz_n, 0);
		atomic_store(&b->fz_sum, 0);
		atomic_store(&b->fz_max, 0);
		atomic_store(&b->fz_write_ns, 0);
		atomic_store(&b->fz_sync_ns, 0);
		atomic_store(&b->fz_staged, 0);
		h2_store_stat(b->st, &s0);
	}
	if (sys == SYS_RAW && write) {
		/* The file is clean: the last raw write phase (or the fill)
		 * ended with fdatasync. */
		b->raw_synced = atomic_fetch_add(&b->raw_gen, 1);
		b->raw_target = b->raw_synced;
		atomic_store(&b->raw_dirty, 0);
		atomic_store(&b->raw_inflight, 0);
		b->sync_stop = false;
		b->raw_syncs = b->raw_sync_ns = b->raw_waits = 0;
		b->raw_sync_pages = b->raw_sync_pages_max = 0;
		if (pthread_create(&b->sync_tid, NULL, rawsync_main, b) != 0) {
			r = -EAGAIN;
			goto out;
		}
		syncer = true;
	}
	t0 = bench_now_ns();
	b->deadline_ns = t0 + (uint64_t)(seconds * 1e9);
	for (n = 0; n < b->r.threads; n++) {
		w[n] = calloc(1, sizeof(*w[n]));
		if (!w[n] ||
		    posix_memalign((void **)&w[n]->buf, 4096, SEQ_IO) != 0) {
			r = -ENOMEM;
			break;
		}
		w[n]->b = b;
		w[n]->sys = sys;
		w[n]->pat = pat;
		w[n]->idx = n;
		w[n]->rng =
		    (t0 ^ (0x9E3779B97F4A7C15ull * (uint64_t)(n + 1))) | 1;
		bench_fill_random(w[n]->buf, SEQ_IO, w[n]->rng);
		if (pthread_create(&w[n]->tid, NULL, worker_main, w[n]) != 0) {
			r = -EAGAIN;
			break;
		}
	}
	for (int i = 0; i < n; i++)
		pthread_join(w[i]->tid, NULL);
	for (int i = 0; i < n; i++)
		if (w[i]->last_end_ns > t_ack)
			t_ack = w[i]->last_end_ns;
	if (t_ack == 0)
		t_ack = bench_now_ns();
	if (syncer) {
		pthread_mutex_lock(&b->lock);
		b->sync_stop = true;
		pthread_cond_signal(&b->cv);
		pthread_mutex_unlock(&b->lock);
		pthread_join(b->sync_tid, NULL);
		syncer = false;
	}
	/* The final sync makes the phase's data durable and is timed. */
	t_sync = bench_now_ns();
	if (write && sys == SYS_ENGINE) {
		int rs = h2_store_sync(b->st, NULL);

		if (rs < 0 && r == 0) {
			fprintf(stderr,
				"h2_engine_bench: h2_store_sync: %s (%s)\n",
				strerror(-rs), h2_core_errmsg());
			r = rs;
		}
	} else if (write) {
		/* Counted like the engine's final flush (h2_stats counts
		 * that one): a sync with something to write. */
		uint64_t pages = atomic_exchange(&b->raw_dirty, 0);

		if (fdatasync(b->raw_fd) < 0 && r == 0) {
			r = -errno;
			fprintf(stderr, "h2_engine_bench: fdatasync: %s\n",
				strerror(errno));
		}
		if (pages) {
			b->raw_syncs++;
			b->raw_sync_ns += bench_now_ns() - t_sync;
			b->raw_sync_pages += pages;
			if (pages > b->raw_sync_pages_max)
				b->raw_sync_pages_max = pages;
		}
		if (b->sync_err && r == 0) {
			r = b->sync_err;
			fprintf(stderr,
				"h2_engine_bench: periodic fdatasync: %s\n",
				strerror(-r));
		}
	}
	t1 = bench_now_ns();
	atomic_fetch_add(&b->progress, 1);
	res->proc_written = proc0 >= 0 ? proc_write_bytes() - proc0 : -1;
	res->disk_written = disk0 >= 0 ? disk_write_bytes(b) - disk0 : -1;

	for (int i = 0; i < n; i++) {
		res->ops += (double)w[i]->ops;
		res->bytes += (double)w[i]->bytes;
		bench_hist_merge(&all[LAT_QUIET], &w[i]->h[LAT_QUIET]);
		bench_hist_merge(&all[LAT_FLUSH], &w[i]->h[LAT_FLUSH]);
		if (w[i]->err && r == 0)
			r = w[i]->err;
		if (w[i]->err || w[i]->bad)
			fprintf(stderr, "h2_engine_bench: %s%s\n", w[i]->msg,
				w[i]->bad ? " (wrong data)" : "");
		if (w[i]->bad) {
			fprintf(stderr,
				"h2_engine_bench: %s: %" PRIu64 " of %" PRIu64
				" reads returned wrong data\n",
				bench_sys_name[sys], w[i]->bad, w[i]->ops);
			if (r == 0)
				r = -EBADMSG;
		}
	}
	bench_hist_merge(&all[LAT_ALL], &all[LAT_QUIET]);
	bench_hist_merge(&all[LAT_ALL], &all[LAT_FLUSH]);
	for (int l = 0; l < NLAT; l++)
		fill_lat(res, l, &all[l]);
	res->p99_ratio = res->n[LAT_QUIET] > 0 && res->n[LAT_FLUSH] > 0
			     ? res->p99[LAT_FLUSH] / res->p99[LAT_QUIET]
			     : -1;
	res->proc_wa = write && res->proc_written >= 0 && res->bytes > 0
			   ? res->proc_written / res->bytes
			   : -1;
	res->disk_wa = write && res->disk_written >= 0 && res->bytes > 0
			   ? res->disk_written / res->bytes
			   : -1;
	res->secs = (double)(t1 - t0) / 1e9;
	res->ack_secs = (double)(t_ack - t0) / 1e9;
	res->sync_secs = (double)(t1 - t_sync) / 1e9;
	res->iops = res->ops / res->secs;
	res->mbps = res->bytes / res->secs / 1e6;
	res->ack_iops = res->ops / res->ack_secs;
	res->ack_mbps = res->bytes / res->ack_secs / 1e6;
	res->wa = -1;
	if (sys == SYS_ENGINE) {
		h2_store_stat(b->st, &s1);
		res->dev_written =
		    (double)(s1.dev_bytes_written - s0.dev_bytes_written);
		res->dev_read = (double)(s1.dev_bytes_read - s0.dev_bytes_read);
		res->client_written =
		    (double)(s1.client_bytes_written - s0.client_bytes_written);
		if (res->client_written > 0)
			res->wa = res->dev_written / res->client_written;
		res->flushes = (double)(s1.flushes - s0.flushes);
		if (res->flushes > 0) {
			res->flush_ms_avg =
			    (double)(s1.flush_ns_total - s0.flush_ns_total) /
			    1e6 / res->flushes;
			res->client_mib_per_flush =
			    res->client_written / res->flushes / MiB;
		}
		res->write_waits = (double)(s1.write_waits - s0.write_waits);
		if (atomic_load(&b->fz_n)) {
			res->dirty_mib_avg = (double)atomic_load(&b->fz_sum) /
					     (double)atomic_load(&b->fz_n) /
					     MiB;
			res->dirty_mib_max =
			    (double)atomic_load(&b->fz_max) / MiB;
		}
		if (atomic_load(&b->fz_staged)) {
			double k = (double)atomic_load(&b->fz_staged) * 1e6;

			res->flush_write_ms =
			    (double)atomic_load(&b->fz_write_ns) / k;
			res->flush_sync_ms =
			    (double)atomic_load(&b->fz_sync_ns) / k;
		}
		if (write && res->client_written != res->bytes)
			fprintf(stderr,
				"h2_engine_bench: note: engine counted %.0f "
				"client bytes written, the benchmark wrote "
				"%.0f\n",
				res->client_written, res->bytes);
	} else if (write) {
		res->flushes = (double)b->raw_syncs;
		res->write_waits = (double)b->raw_waits;
		if (b->raw_syncs) {
			res->flush_ms_avg =
			    (double)b->raw_sync_ns / 1e6 / res->flushes;
			res->flush_sync_ms = res->flush_ms_avg;
			res->client_mib_per_flush =
			    res->bytes / res->flushes / MiB;
			res->dirty_mib_avg = (double)b->raw_sync_pages * BLK /
					     res->flushes / MiB;
			res->dirty_mib_max =
			    (double)b->raw_sync_pages_max * BLK / MiB;
		}
	}
out:
	if (syncer) {
		pthread_mutex_lock(&b->lock);
		b->sync_stop = true;
		pthread_cond_signal(&b->cv);
		pthread_mutex_unlock(&b->lock);
		pthread_join(b->sync_tid, NULL);
	}
	for (int i = 0; i < b->r.threads; i++) {
		if (w[i])
			free(w[i]->buf);
		free(w[i]);
	}
	free(all);
	return r;
}

/* ---------------------------------------------------------------------- */
/* Setup, fill, teardown.                                                 */

/* A device file of b->r.dev_size bytes of written zeros (--prealloc). */
static int create_prealloc(struct bench *b, struct h2_dev **out)
{
	int r = bench_create_zeroed(b->dev_path, b->r.dev_size, &b->progress);

	return r < 0 ? r : h2_dev_open_file(b->dev_path, 0, out);
}

static int setup(struct bench *b)
{
	struct h2_store_opts so = {
	    .flush_interval_ms = b->r.flush_ms,
	    .dirty_max = b->r.dirty_max,
	    .flush_hook = engine_hook,
	    .flush_hook_arg = b,
	};
	struct h2_dev *dev = NULL;
	uint64_t t0;
	int r;

	bench_fs_describe(b->r.dir, b->r.fs, sizeof(b->r.fs));
	find_disk(b);
	snprintf(b->dev_path, sizeof(b->dev_path), "%s/h2bench.%ld.dev",
		 b->r.dir, (long)getpid());
	snprintf(b->raw_path, sizeof(b->raw_path), "%s/h2bench.%ld.raw",
		 b->r.dir, (long)getpid());

	atomic_store(&b->doing, "device file creation");
	r = b->r.prealloc
		? create_prealloc(b, &dev)
		: h2_dev_create_file(b->dev_path, b->r.dev_size, false, &dev);
	if (r < 0) {
		fprintf(stderr, "h2_engine_bench: %s: %s\n", b->dev_path,
			strerror(-r));
		return r;
	}
	atomic_store(&b->doing, "h2_store_format");
	t0 = bench_now_ns();
	r = h2_store_format(dev, NULL);
	b->r.format_ms = (double)(bench_now_ns() - t0) / 1e6;
	if (r < 0) {
		fprintf(stderr, "h2_engine_bench: format: %s (%s)\n",
			strerror(-r), h2_core_errmsg());
		h2_dev_close(dev);
		return r;
	}
	atomic_store(&b->doing, "h2_store_open");
	t0 = bench_now_ns();
	r = h2_store_open(dev, &so, &b->st);
	b->r.open_ms = (double)(bench_now_ns() - t0) / 1e6;
	if (r < 0) {
		fprintf(stderr, "h2_engine_bench: open: %s (%s)\n",
			strerror(-r), h2_core_errmsg());
		return r;
	}
	atomic_store(&b->hook_st, b->st);
	r = h2_vol_create(b->st, "bench", b->r.size, NULL);
	if (r == 0)
		r = h2_vol_open(b->st, "bench", &b->vol);
	if (r < 0) {
		fprintf(stderr, "h2_engine_bench: volume: %s (%s)\n",
			strerror(-r), h2_core_errmsg());
		return r;
	}
	b->raw_fd = open(b->raw_path, O_RDWR | O_CREAT | O_EXCL, 0600);
	if (b->raw_fd < 0) {
		r = -errno;
		fprintf(stderr, "h2_engine_bench: %s: %s\n", b->raw_path,
			strerror(errno));
		return r;
	}
	b->raw_page_gen = calloc(b->r.size / BLK, sizeof(*b->raw_page_gen));
	if (!b->raw_page_gen)
		return -ENOMEM;
	atomic_store(&b->raw_gen, 1);
	b->raw_dirty_max = b->r.dirty_max / BLK ? b->r.dirty_max / BLK : 1;
	b->raw_dirty_hard = 2 * b->raw_dirty_max;
	return 0;
}

/* Write the whole working set once on side sys, sequentially, synced. */
static int fill(struct bench *b, enum sys sys)
{
	uint8_t *buf;
	struct h2_store_stats s0, s1;
	uint64_t t0 = bench_now_ns();
	int r = 0;

	if (posix_memalign((void **)&buf, 4096, SEQ_IO) != 0)
		return -ENOMEM;
	bench_fill_random(buf, SEQ_IO, 0x5eed + (uint64_t)sys);
	if (sys == SYS_ENGINE)
		h2_store_stat(b->st, &s0);
	for (uint64_t off = 0; off < b->r.size && r == 0; off += SEQ_IO) {
		stamp(buf, off, SEQ_IO);
		if (sys == SYS_ENGINE) {
			r = h2_vol_write(b->vol, buf, off, SEQ_IO, 0);
			if (r < 0)
				fprintf(stderr,
					"h2_engine_bench: fill: engine "
					"write at %" PRIu64 ": %s (%s)\n",
					off, strerror(-r), h2_core_errmsg());
		} else {
			r = bench_pwrite_all(b->raw_fd, buf, SEQ_IO, off);
			if (r < 0)
				fprintf(stderr,
					"h2_engine_bench: fill: raw "
					"pwrite at %" PRIu64 ": %s\n",
					off, strerror(-r));
		}
		atomic_fetch_add(&b->progress, 1);
	}
	if (r == 0 && sys == SYS_ENGINE) {
		r = h2_store_sync(b->st, NULL);
		if (r < 0)
			fprintf(stderr,
				"h2_engine_bench: fill: h2_store_sync: %s "
				"(%s)\n",
				strerror(-r), h2_core_errmsg());
		h2_store_stat(b->st, &s1);
		if (s1.client_bytes_written > s0.client_bytes_written)
			b->r.fill_wa = (double)(s1.dev_bytes_written -
						s0.dev_bytes_written) /
				       (double)(s1.client_bytes_written -
						s0.client_bytes_written);
	} else if (r == 0 && fdatasync(b->raw_fd) < 0) {
		r = -errno;
		fprintf(stderr, "h2_engine_bench: fill: fdatasync: %s\n",
			strerror(errno));
	}
	b->r.fill_s[sys] = (double)(bench_now_ns() - t0) / 1e9;
	free(buf);
	return r;
}

/*
 * Close the store (timed: the final flush), reopen it (timed: the issue
 * wants open O(1) in the data stored) and check a sample of stamps, so
 * the data written is known to survive a close.
 */
static int reopen_check(struct bench *b)
{
	struct h2_store_opts so = {.flush_interval_ms = b->r.flush_ms,
				   .dirty_max = b->r.dirty_max};
	struct h2_store *st;
	struct h2_dev *dev;
	uint8_t *buf;
	uint64_t t0, s = 0x1234567, nblk = b->r.size / BLK, bad = 0;
	int r;

	h2_vol_close(b->vol);
	b->vol = NULL;
	atomic_store(&b->hook_st, NULL);
	atomic_store(&b->doing, "h2_store_close");
	st = b->st;
	b->st = NULL;
	t0 = bench_now_ns();
	r = h2_store_close(st);
	b->r.close_ms = (double)(bench_now_ns() - t0) / 1e6;
	if (r < 0) {
		fprintf(stderr, "h2_engine_bench: close: %s (%s)\n",
			strerror(-r), h2_core_errmsg());
		return r;
	}
	r = h2_dev_open_file(b->dev_path, 0, &dev);
	if (r < 0) {
		fprintf(stderr, "h2_engine_bench: reopen %s: %s\n", b->dev_path,
			strerror(-r));
		return r;
	}
	atomic_store(&b->doing, "h2_store_open (reopen)");
	t0 = bench_now_ns();
	r = h2_store_open(dev, &so, &b->st);
	b->r.reopen_ms = (double)(bench_now_ns() - t0) / 1e6;
	if (r < 0) {
		fprintf(stderr, "h2_engine_bench: reopen: %s (%s)\n",
			strerror(-r), h2_core_errmsg());
		return r;
	}
	r = h2_vol_open(b->st, "bench", &b->vol);
	if (r < 0) {
		fprintf(stderr, "h2_engine_bench: reopen volume: %s (%s)\n",
			strerror(-r), h2_core_errmsg());
		return r;
	}
	if (posix_memalign((void **)&buf, 4096, BLK) != 0)
		return -ENOMEM;
	for (int i = 0; i < 4096 && r == 0; i++) {
		uint64_t off = bench_rnd(&s) % nblk * BLK;

		r = h2_vol_read(b->vol, buf, off, BLK);
		if (r < 0)
			fprintf(stderr,
				"h2_engine_bench: read after reopen at "
				"%" PRIu64 ": %s (%s)\n",
				off, strerror(-r), h2_core_errmsg());
		else if (!stamp_ok(buf, off) && bad++ == 0)
			fprintf(stderr,
				"h2_engine_bench: wrong data after "
				"reopen at %" PRIu64 "\n",
				off);
		b->r.reopen_checked++;
	}
	free(buf);
	if (r == 0 && bad) {
		fprintf(stderr,
			"h2_engine_bench: %" PRIu64 " of %" PRIu64
			" blocks wrong after reopen\n",
			bad, b->r.reopen_checked);
		r = -EBADMSG;
	}
	return r;
}

static void teardown(struct bench *b)
{
	atomic_store(&b->hook_st, NULL);
	if (b->vol)
		h2_vol_close(b->vol);
	if (b->st)
		h2_store_close(b->st);
	free(b->raw_page_gen);
	if (b->raw_fd >= 0)
		close(b->raw_fd);
	if (!b->keep) {
		unlink(b->dev_path);
		unlink(b->raw_path);
	}
}

/* ---------------------------------------------------------------------- */
/* Main.                                                                  */

static void usage(FILE *f)
{
	fprintf(
	    f, "usage: h2_engine_bench [options]\n"
	       "  --dir DIR         where the two files go ($TMPDIR or /tmp)\n"
	       "  --size N          working set = volume size (512M); K/M/G\n"
	       "  --dirty-max N     engine dirty_max (size / 16: flushes carry "
	       "at most\n"
	       "                    2 x dirty_max, so the volume is >= 8 x a "
	       "flush)\n"
	       "  --dev-size N      device file size (max(4 x size, 128M))\n"
	       "  --seconds S       per phase and side (10)\n"
	       "  --rounds N        engine/raw pairs per phase (5)\n"
	       "  --threads N       I/O threads per side (1)\n"
	       "  --flush-ms N      engine flush interval = raw fdatasync "
	       "interval (1000)\n"
	       "  --raw-sync MODE   engine: raw syncs by the flusher's rules "
	       "(interval,\n"
	       "                    dirty_max, writers wait above dirty_hard); "
	       "interval:\n"
	       "                    fdatasync every --flush-ms only (engine)\n"
	       "  --prealloc        zero-fill the device file (default "
	       "unless --quick)\n"
	       "  --sparse          leave the device file sparse (the raw "
	       "file is written\n"
	       "                    in full by the fill; the default zero-"
	       "fills the device\n"
	       "                    so neither side allocates file blocks "
	       "while timed)\n"
	       "  --only PATTERN    run one pattern only (rand_write_4k, "
	       "seq_write_1m,\n"
	       "                    rand_read_4k), e.g. under perf\n"
	       "  --side SIDE       run one side only (engine, raw)\n"
	       "  --quick           smoke run: 32M, 0.3 s per phase, 3 "
	       "rounds, sparse\n"
	       "  --json            JSON on stdout instead of the table\n"
	       "  --keep            keep the files\n");
}

static int parse_args(struct bench *b, int argc, char **argv)
{
	static const struct option lo[] = {
	    {"dir", required_argument, NULL, 'd'},
	    {"size", required_argument, NULL, 's'},
	    {"dirty-max", required_argument, NULL, 'D'},
	    {"dev-size", required_argument, NULL, 'S'},
	    {"seconds", required_argument, NULL, 't'},
	    {"rounds", required_argument, NULL, 'r'},
	    {"reps", required_argument, NULL, 'r'}, /* old name */
	    {"threads", required_argument, NULL, 'j'},
	    {"flush-ms", required_argument, NULL, 'f'},
	    {"prealloc", no_argument, NULL, 'P'},
	    {"sparse", no_argument, NULL, 'Z'},
	    {"raw-sync", required_argument, NULL, 'R'},
	    {"only", required_argument, NULL, 'O'},
	    {"side", required_argument, NULL, 'I'},
	    {"quick", no_argument, NULL, 'q'},
	    {"json", no_argument, NULL, 'J'},
	    {"keep", no_argument, NULL, 'k'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	bool have_size = false, have_secs = false, have_rounds = false;
	int prealloc = -1;
	const char *tmp = getenv("TMPDIR");
	int c;

	b->r.dir = tmp && *tmp ? tmp : "/tmp";
	b->only_pat = b->only_sys = -1;
	b->r.size = 512 * MiB;
	b->r.seconds = 10;
	b->r.rounds = 5;
	b->r.threads = 1;
	b->r.flush_ms = 1000;
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		char *end;

		switch (c) {
		case 'd':
			b->r.dir = optarg;
			break;
		case 's':
			if (bench_parse_size(optarg, &b->r.size) < 0)
				goto bad;
			have_size = true;
			break;
		case 'D':
			if (bench_parse_size(optarg, &b->r.dirty_max) < 0)
				goto bad;
			break;
		case 'S':
			if (bench_parse_size(optarg, &b->r.dev_size) < 0)
				goto bad;
			break;
		case 't':
			b->r.seconds = strtod(optarg, &end);
			if (*end || !(b->r.seconds > 0 && b->r.seconds <= 3600))
				goto bad;
			have_secs = true;
			break;
		case 'r':
			b->r.rounds = atoi(optarg);
			if (b->r.rounds < 1 || b->r.rounds > MAX_ROUNDS)
				goto bad;
			have_rounds = true;
			break;
		case 'j':
			b->r.threads = atoi(optarg);
			if (b->r.threads < 1 || b->r.threads > MAX_THREADS)
				goto bad;
			break;
		case 'f':
			b->r.flush_ms = (unsigned)atoi(optarg);
			if (b->r.flush_ms < 1 || b->r.flush_ms > 3600000)
				goto bad;
			break;
		case 'P':
			prealloc = 1;
			break;
		case 'Z':
			prealloc = 0;
			break;
		case 'O':
			b->only_pat = -1;
			for (int p = 0; p < NPAT; p++)
				if (strcmp(optarg, bench_pat_key[p]) == 0)
					b->only_pat = p;
			if (b->only_pat < 0)
				goto bad;
			break;
		case 'I':
			b->only_sys = -1;
			for (int k = 0; k < NSYS; k++)
				if (strcmp(optarg, bench_sys_name[k]) == 0)
					b->only_sys = k;
			if (b->only_sys < 0)
				goto bad;
			break;
		case 'R':
			if (strcmp(optarg, "engine") == 0)
				b->r.raw_interval_only = false;
			else if (strcmp(optarg, "interval") == 0)
				b->r.raw_interval_only = true;
			else
				goto bad;
			break;
		case 'q':
			b->quick = true;
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
	if (optind != argc)
		goto bad_arg;
	if (b->quick && !have_size)
		b->r.size = 32 * MiB;
	if (b->quick && !have_secs)
		b->r.seconds = 0.3;
	if (b->quick && !have_rounds)
		b->r.rounds = 3;
	b->r.prealloc = prealloc >= 0 ? prealloc : !b->quick;
	b->stall_s = b->quick ? 10 : STALL_SECONDS;
	if (b->r.size < 8 * MiB || b->r.size % SEQ_IO ||
	    b->r.size / SEQ_IO < (uint64_t)b->r.threads) {
		fprintf(stderr, "h2_engine_bench: --size must be a multiple of "
				"1 MiB, >= 8 MiB and >= threads MiB\n");
		return -EINVAL;
	}
	/* A flush carries at most dirty_hard = 2 x dirty_max (writers wait
	 * above it), so this keeps the volume >= 8 x one flush's dirty data
	 * even when writers outrun the flusher, as the WA goals assume. */
	if (!b->r.dirty_max)
		b->r.dirty_max = b->r.size / 16;
	if (!b->r.dev_size)
		b->r.dev_size =
		    4 * b->r.size > 128 * MiB ? 4 * b->r.size : 128 * MiB;
	return 0;
bad:
	fprintf(stderr, "h2_engine_bench: bad value for an option: %s\n",
		optarg);
	return -EINVAL;
bad_arg:
	usage(stderr);
	return -EINVAL;
}

int main(int argc, char **argv)
{
	static struct bench bench;
	struct bench *b = &bench;
	pthread_condattr_t ca;
	int r;

	b->raw_fd = -1;
	if (parse_args(b, argc, argv) < 0)
		return 2;
	pthread_mutex_init(&b->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&b->cv, &ca);
	pthread_cond_init(&b->done_cv, NULL);
	pthread_condattr_destroy(&ca);
	b->dog = (struct bench_dog){.progress = &b->progress,
				    .stall_s = b->stall_s,
				    .report = dog_report, .arg = b};
	if (bench_dog_start(&b->dog) < 0) {
		fprintf(stderr, "h2_engine_bench: cannot start a thread\n");
		return 1;
	}

	r = setup(b);
	if (r == 0) {
		fprintf(stderr, "fill: %" PRIu64 " MiB on both sides...\n",
			b->r.size / MiB);
		atomic_store(&b->doing, "fill (engine)");
		r = fill(b, SYS_ENGINE);
	}
	if (r == 0) {
		atomic_store(&b->doing, "fill (raw)");
		r = fill(b, SYS_RAW);
	}
	for (int rd = 0; rd < b->r.rounds && r == 0; rd++) {
		for (int p = 0; p < NPAT && r == 0; p++) {
			for (int k = 0; k < NSYS && r == 0; k++) {
				/* Even rounds run the engine first. */
				enum sys s = (enum sys)((k + rd) % NSYS);
				struct result *res = &b->r.res[p][s][rd];

				if ((b->only_pat >= 0 && p != b->only_pat) ||
				    (b->only_sys >= 0 && (int)s != b->only_sys))
					continue;

				atomic_store(&b->doing_round, rd);
				atomic_store(&b->doing_pat, p);
				atomic_store(&b->doing_sys, (int)s);
				atomic_store(&b->doing, "phase");
				r = run_phase(b, s, p, b->r.seconds, res);
				atomic_store(&b->doing, "between phases");
				if (r < 0)
					break;
				fprintf(stderr,
					"round %d/%d %-18s %-6s %10.0f IOPS "
					"%9.1f MB/s",
					rd + 1, b->r.rounds, bench_pat_name[p],
					bench_sys_name[s], res->iops,
					res->mbps);
				if (s == SYS_ENGINE && p != PAT_RAND_READ)
					fprintf(stderr,
						"  WA %.2f, %.0f "
						"flushes",
						res->wa, res->flushes);
				if (p != PAT_RAND_READ)
					fprintf(stderr, "  p99 %.1f us",
						res->p99[LAT_ALL]);
				fprintf(stderr, "\n");
			}
		}
	}
	if (r == 0)
		r = reopen_check(b);
	bench_dog_stop(&b->dog);
	teardown(b);
	if (r < 0) {
		fprintf(stderr, "h2_engine_bench: FAILED: %s\n", strerror(-r));
		return 1;
	}
	if (b->json)
		bench_print_json(&b->r);
	else
		bench_print_human(&b->r);
	return 0;
}
