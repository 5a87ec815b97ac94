/*
 * bench.h - what the engine benchmark measured, and how it is printed.
 *
 * engine_bench.c runs the phases and fills a struct bench_report;
 * bench_report.c turns it into medians, ratios against the goals, a human
 * table or JSON.  Every figure of a run is a double so the report can take
 * medians of any field by its offset.
 */
#ifndef H2_BENCH_H
#define H2_BENCH_H

#include <stdbool.h>
#include <stdint.h>

#define MiB	   ((uint64_t)1 << 20)
#define MAX_ROUNDS 15

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

#endif
