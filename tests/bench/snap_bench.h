/*
 * snap_bench.h - what the snapshot benchmark measured, and how it is
 * printed.
 *
 * snap_bench.c runs the three sections (create, write, delete) and fills
 * a struct snap_report; snap_report.c prints it as tables or JSON, with
 * medians of rounds and the aims.  Per-round figures are doubles
 * so the report can take medians of any field by its offset.
 */
#ifndef H2_SNAP_BENCH_H
#define H2_SNAP_BENCH_H

#include <stdbool.h>
#include <stdint.h>

#include "bench.h"

#define GiB	    ((uint64_t)1 << 30)
#define MAX_CREATES 1000
#define NCFG	    3 /* write: 0, 1 and --snaps snapshots held */
#define NDEL	    5 /* delete: exclusive 0, size/64, /16, /4, size */
#define NPATTERN    2 /* delete: sequential or scattered overwrites */

/* The aims, printed next to the figures, never enforced. */
#define AIM_WRITE_RATIO 0.90 /* IOPS with snapshots / without */
/* Create is O(1) if the big/small ratio of median latencies stays near 1;
 * anything proportional to the data would show 32-64x.  1.5 leaves room
 * for a shared machine's noise. */
#define AIM_CREATE_RATIO 1.5

enum { CR_SMALL, CR_BIG, NCR };
enum { PATTERN_SEQ, PATTERN_RAND };

extern const char *const snap_pattern_key[NPATTERN];  /* JSON */
extern const char *const snap_pattern_name[NPATTERN]; /* tables */

/* One volume of the create section; latencies in ms. */
struct cr_side {
	uint64_t written; /* bytes written = volume size */
	double fill_s;
	double used_mib; /* store space after the fill */
	/* each create's latency and the device's share of it: from its
	 * flush's WRITTEN stage to the return */
	double create_ms[MAX_CREATES], create_dev_ms[MAX_CREATES];
	double dirty_ms[MAX_CREATES], dirty_dev_ms[MAX_CREATES];
	double delete_ms[MAX_CREATES];
	int ncreate, ndirty, ndelete;
	uint64_t delete_excl_max; /* largest excl_bytes of those deleted */
};

/* One measured overwrite phase of the write section. */
struct wres {
	double iops, mbps, secs, sync_s, wa;
	double p50_us, p99_us, p999_us;
	double flushes, flush_ms, write_waits;
	/* average flush stages: FROZEN..WRITTEN (blocks written to the
	 * device file) and WRITTEN..DONE (device flush, header, device
	 * flush, wake-ups, cache trim) */
	double flush_write_ms, flush_sync_ms;
	double kib_per_dev_write; /* device bytes written / pwritev calls */
	double used_start_pct, used_end_pct; /* store space used */
	double snap_mib; /* held only by snapshots, at the start */
	double age_s;	 /* the aging before it (not in iops) */
	double fill_s;
};

/* One delete of the delete section. */
struct dres {
	double excl_bytes;  /* h2_snap_info excl_bytes before the delete */
	double freed_bytes; /* store used space before - after */
	double excl_mib, freed_mib;
	double ms;
	double mbps; /* excl bytes / delete time, MB = 10^6 bytes */
};

struct snap_report {
	/* configuration */
	const char *dir;
	char fs[32];
	uint64_t small, big, big_asked, size, dirty;
	bool big_scaled; /* big < big_asked: big_note says why */
	char big_note[256];
	bool size_scaled; /* size was halved to fit: size_note says why */
	char size_note[256];
	int snaps, threads, rounds, creates, slices;
	int dev_factor; /* write and delete stores: device = this x size */
	double seconds;
	bool run_create, run_write, run_delete;

	/* figures */
	struct cr_side cr[NCR];
	int ncfg_snaps[NCFG];
	bool cfg_ran[NCFG]; /* false: left out by --held */
	struct wres w[NCFG][MAX_ROUNDS];
	uint64_t del_bytes[NDEL];
	struct dres d[NPATTERN][NDEL][MAX_ROUNDS];
};

/* The tables on stdout. */
void snap_print_human(const struct snap_report *r);

/* One JSON object on stdout (per-round values included). */
void snap_print_json(const struct snap_report *r);

#endif
