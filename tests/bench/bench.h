/*
 * bench.h - helpers shared by the engine benchmarks, and what the engine
 * benchmark measured and how it is printed.
 *
 * bench_util.c: a clock, a random generator, size arguments, a latency
 * histogram, medians, files written in full (engine_bench.c and
 * snap_bench.c both use them).
 *
 * engine_bench.c runs the phases and fills a struct bench_report;
 * bench_report.c turns it into medians, ratios against the goals, a human
 * table or JSON.  Every figure of a run is a double so the report can take
 * medians of any field by its offset.
 *
 * Thread-safety: the bench_hist functions work on one histogram, owned by
 * its caller (merge per-thread histograms at the end); everything else is
 * thread-safe.
 */
#ifndef H2_BENCH_H
#define H2_BENCH_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MiB	   ((uint64_t)1 << 20)
#define MAX_ROUNDS 15

/* ---------------------------------------------------------------------- */
/* Helpers (bench_util.c).                                                */

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t bench_now_ns(void);

/* xorshift64*: next value of the generator whose state is *s (not 0). */
uint64_t bench_rnd(uint64_t *s);

/* len bytes of buf (a multiple of 8 is filled) from seed. */
void bench_fill_random(uint8_t *buf, size_t len, uint64_t seed);

/* "512M", "4GiB", "64g", "4096": bytes, or -EINVAL. */
int bench_parse_size(const char *s, uint64_t *out);

/* A name for dir's file system ("ext2/3/4", "fs type 0x..."). */
void bench_fs_describe(const char *dir, char *buf, size_t len);

/* Median and q-quantile (0..1, linear between ranks) of v[0..n); -1 if
 * n == 0.  v is not changed. */
double bench_median(const double *v, int n);
double bench_quantile(const double *v, int n, double q);

/* pwrite all of buf (EINTR and short writes retried); 0 or -errno. */
int bench_pwrite_all(int fd, const void *buf, size_t len, uint64_t off);

/*
 * Create path (O_EXCL) with size bytes of written zeros and fsync it, so
 * a store on it never makes the file system allocate while timed.  Bumps
 * *progress (if not NULL) per MiB, for a watchdog.  Removes the file on
 * failure.
 */
int bench_create_zeroed(const char *path, uint64_t size,
			atomic_uint_fast64_t *progress);

/*
 * Latency histogram, log-linear: BENCH_HIST_SUB sub-buckets per power of
 * two (values below 2 x BENCH_HIST_SUB exact), so a percentile is within
 * 1/64 of the truth.  Zero-initialise before use.
 */
#define BENCH_HIST_SUB 64
#define BENCH_HIST_N   (2 * BENCH_HIST_SUB + 57 * BENCH_HIST_SUB)

struct bench_hist {
	uint64_t n;
	uint64_t max;
	uint64_t c[BENCH_HIST_N];
};

void bench_hist_add(struct bench_hist *h, uint64_t v);
void bench_hist_merge(struct bench_hist *dst, const struct bench_hist *src);
/* The value at fraction p in (0, 1]; 0 for an empty histogram. */
uint64_t bench_hist_pct(const struct bench_hist *h, double p);

/* ---------------------------------------------------------------------- */
/* The engine benchmark's report (engine_bench.c, bench_report.c).         */

/* Goals from the issue, printed next to the figures, never enforced. */
#define GOAL_RAND_RATIO 0.8 /* 4 KiB random write IOPS, engine / raw */
#define GOAL_SEQ_RATIO	0.9 /* 1 MiB sequential MB/s, engine / raw */
#define GOAL_WA_SEQ	1.3
#define GOAL_WA_RAND	3.0
#define GOAL_P99_RATIO	2.0 /* p99 during a flush / p99 outside */

enum sys { SYS_ENGINE, SYS_RAW, NSYS };
enum pat { PAT_RAND_WRITE, PAT_SEQ_WRITE, PAT_RAND_READ, NPAT };
enum lat { LAT_QUIET, LAT_FLUSH, LAT_ALL, NLAT };

extern const char *const bench_sys_name[NSYS]; /* "engine", "raw" */
extern const char *const bench_pat_key[NPAT];  /* JSON keys */
extern const char *const bench_pat_name[NPAT]; /* table labels */

/* Figures of one run of one pattern on one side; latencies in us. */
struct result {
	double secs, ack_secs, sync_secs; /* whole, to last ack, final sync */
	double ops, bytes;
	double iops, mbps, ack_iops, ack_mbps; /* MB = 10^6 bytes */
	/* engine: h2_stats deltas; raw: its fdatasync thread (flushes and
	 * flush_ms_avg only).  wa is -1 where it means nothing. */
	double wa, dev_written, client_written, dev_read;
	double flushes, flush_ms_avg, client_mib_per_flush, write_waits;
	/* one flush's dirty data: engine dirty_bytes at FROZEN, raw
	 * distinct 4 KiB pages dirtied since the previous fdatasync */
	double dirty_mib_avg, dirty_mib_max;
	/* engine: average FROZEN..WRITTEN (tree blocks and freemap written to
	 * the device file) and WRITTEN..DONE (device flush, header, device
	 * flush); raw: 0 and its fdatasync */
	double flush_write_ms, flush_sync_ms;
	/* bytes sent to storage: this process's write_bytes in
	 * /proc/self/io (pages dirtied; re-dirtying a dirty page is free) and
	 * the host disk's sectors written (everything on the machine, the
	 * file system journal included); -1 where unavailable */
	double proc_written, disk_written;
	double proc_wa, disk_wa; /* the same over client bytes written */
	double n[NLAT], p50[NLAT], p99[NLAT], p999[NLAT], max[NLAT];
	double p99_ratio; /* p99 flush / p99 quiet; -1 if undefined */
};

struct bench_report {
	/* configuration */
	const char *dir;
	char fs[32];
	uint64_t size, dev_size, dirty_max;
	double seconds;
	int rounds, threads;
	unsigned flush_ms;
	bool prealloc;
	bool raw_interval_only; /* raw: fdatasync on the timer only */
	/* store lifecycle and the untimed fill */
	double format_ms, open_ms, close_ms, reopen_ms;
	double fill_s[NSYS], fill_wa;
	uint64_t reopen_checked;
	char disk[64]; /* host block device of dir, "" if unknown */
	/* res[pattern][side][round] */
	struct result res[NPAT][NSYS][MAX_ROUNDS];
};

/* The human table on stdout. */
void bench_print_human(const struct bench_report *b);

/* One JSON object on stdout (same figures, per-round values included). */
void bench_print_json(const struct bench_report *b);

/*
 * A watchdog thread: if *progress does not move for stall_s seconds,
 * report(arg) prints what was running (the files stay for a
 * post-mortem) and the process exits with status 3.
 */
struct bench_dog {
	atomic_uint_fast64_t *progress;
	int stall_s;
	void (*report)(void *arg, int stall_s);
	void *arg;
	atomic_bool stop;
	pthread_t tid;
};

int bench_dog_start(struct bench_dog *d);
void bench_dog_stop(struct bench_dog *d);

#endif
