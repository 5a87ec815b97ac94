/*
 * bench_report.c - medians, ratios and goals of an engine benchmark run,
 * printed as a table or as JSON.
 *
 * Medians are taken over the rounds of one pattern and side.  A ratio
 * engine/raw is the median of the per-round ratios, so each ratio compares
 * two runs made next to each other in time (the machines are noisy and
 * drift).  A goal is only printed as met or missed; nothing here decides
 * an exit status.
 */
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

const char *const bench_sys_name[NSYS] = {"engine", "raw"};
const char *const bench_pat_key[NPAT] = {"rand_write_4k", "seq_write_1m",
					 "rand_read_4k"};
const char *const bench_pat_name[NPAT] = {
    "4 KiB random write", "1 MiB seq write", "4 KiB random read"};

/* Field at byte offset off of res[pat][sys][0..rounds). */
static int field(const struct bench_report *b, enum pat pat, enum sys sys,
		 size_t off, double *v)
{
	for (int i = 0; i < b->rounds; i++)
		v[i] =
		    *(const double *)((const char *)&b->res[pat][sys][i] + off);
	return b->rounds;
}

static double med(const struct bench_report *b, enum pat pat, enum sys sys,
		  size_t off)
{
	double v[MAX_ROUNDS];

	return bench_median(v, field(b, pat, sys, off, v));
}

/* Per-round ratios engine/raw of a field, and their median. */
static double ratio(const struct bench_report *b, enum pat pat, size_t off,
		    double *v)
{
	double e[MAX_ROUNDS], r[MAX_ROUNDS];

	field(b, pat, SYS_ENGINE, off, e);
	field(b, pat, SYS_RAW, off, r);
	for (int i = 0; i < b->rounds; i++)
		v[i] = r[i] > 0 ? e[i] / r[i] : -1;
	return bench_median(v, b->rounds);
}

/* Median of the defined per-round p99 ratios (-1: none defined). */
static double p99_ratio(const struct bench_report *b, enum pat pat,
			enum sys sys, double *v, int *n)
{
	*n = 0;
	for (int i = 0; i < b->rounds; i++)
		if (b->res[pat][sys][i].p99_ratio >= 0)
			v[(*n)++] = b->res[pat][sys][i].p99_ratio;
	return bench_median(v, *n);
}

#define OFF(f) offsetof(struct result, f)

/* v with prec decimals, or "n/a" for the -1 of an undefined figure. */
static const char *num(char *buf, size_t len, double v, int prec)
{
	if (v < 0)
		snprintf(buf, len, "n/a");
	else
		snprintf(buf, len, "%.*f", prec, v);
	return buf;
}

static const char *verdict(double v, double goal, bool at_least)
{
	if (v < 0)
		return "n/a";
	return (at_least ? v >= goal : v <= goal) ? "met" : "MISSED";
}

/* The per-round values as "a b c" into buf. */
static const char *rounds_str(char *buf, size_t len, const double *v, int n)
{
	size_t k = 0;

	buf[0] = 0;
	for (int i = 0; i < n && k < len; i++)
		k += (size_t)snprintf(buf + k, len - k, "%s%.2f", i ? " " : "",
				      v[i]);
	return buf;
}

static void print_lat_rows(const struct bench_report *b, enum pat pat,
			   enum sys sys, const char *quiet, const char *busy)
{
	static const enum lat order[] = {LAT_FLUSH, LAT_QUIET, LAT_ALL};
	const char *label[NLAT];

	label[LAT_QUIET] = quiet;
	label[LAT_FLUSH] = busy;
	label[LAT_ALL] = "all writes";
	printf("  %-26s %10s %7s %9s %9s %9s %10s\n", "", "writes", "share",
	       "p50", "p99", "p99.9", "max");
	for (int k = 0; k < 3; k++) {
		enum lat l = order[k];
		double n = med(b, pat, sys, OFF(n[l]));
		double all = med(b, pat, sys, OFF(n[LAT_ALL]));

		printf("  %-26s %10.0f %6.1f%% %9.1f %9.1f %9.1f %10.1f\n",
		       label[l], n, all > 0 ? 100.0 * n / all : 0.0,
		       med(b, pat, sys, OFF(p50[l])),
		       med(b, pat, sys, OFF(p99[l])),
		       med(b, pat, sys, OFF(p999[l])),
		       med(b, pat, sys, OFF(max[l])));
	}
}

/* The goals, one row each, before the details. */
static void print_goals(const struct bench_report *b)
{
	static const struct {
		const char *what;
		enum pat pat;
		size_t off; /* ratio engine/raw of this field, or ... */
		bool wa, p99;
		double goal;
		bool at_least;
	} g[] = {
	    {"4 KiB random write, engine/raw IOPS", PAT_RAND_WRITE, OFF(iops),
	     false, false, GOAL_RAND_RATIO, true},
	    {"1 MiB seq write, engine/raw MB/s", PAT_SEQ_WRITE, OFF(mbps),
	     false, false, GOAL_SEQ_RATIO, true},
	    {"write amplification, 4 KiB random", PAT_RAND_WRITE, 0, true,
	     false, GOAL_WA_RAND, false},
	    {"write amplification, 1 MiB seq", PAT_SEQ_WRITE, 0, true, false,
	     GOAL_WA_SEQ, false},
	    {"p99 flush / no flush, 4 KiB random", PAT_RAND_WRITE, 0, false,
	     true, GOAL_P99_RATIO, false},
	    {"p99 flush / no flush, 1 MiB seq", PAT_SEQ_WRITE, 0, false, true,
	     GOAL_P99_RATIO, false},
	};
	double v[MAX_ROUNDS], x;
	char nb[32], gb[32];
	int n;

	printf("%-38s %8s %9s  %s\n", "GOALS (medians of rounds)", "value",
	       "GOAL", "result");
	for (size_t i = 0; i < sizeof(g) / sizeof(g[0]); i++) {
		if (g[i].wa)
			x = med(b, g[i].pat, SYS_ENGINE, OFF(wa));
		else if (g[i].p99)
			x = p99_ratio(b, g[i].pat, SYS_ENGINE, v, &n);
		else
			x = ratio(b, g[i].pat, g[i].off, v);
		snprintf(gb, sizeof(gb), "%s %.2f",
			 g[i].at_least ? ">=" : "<=", g[i].goal);
		printf("%-38s %8s %9s  %s", g[i].what,
		       num(nb, sizeof(nb), x, 2), gb,
		       verdict(x, g[i].goal, g[i].at_least));
		/* A writer that outruns the device waits on both sides;
		 * raw's figure says how much of that is inherent. */
		if (g[i].p99)
			printf("%*s(raw: %s)",
			       8 - (int)strlen(
				       verdict(x, g[i].goal, g[i].at_least)),
			       "",
			       num(nb, sizeof(nb),
				   p99_ratio(b, g[i].pat, SYS_RAW, v, &n), 2));
		printf("\n");
	}
}

void bench_print_human(const struct bench_report *b)
{
	double v[MAX_ROUNDS], rr;
	char rbuf[256], nb[32], nb2[32], nb3[32];
	int n;

	if (b->raw_interval_only)
		printf("h2 engine vs pwrite + fdatasync every %u ms (timer "
		       "only: raw's overwrites stay in the page cache)\n",
		       b->flush_ms);
	else
		printf("h2 engine vs pwrite + fdatasync by the engine's flush "
		       "rules: every %u ms or at dirty_max\n"
		       "dirtied, writers wait above 2 x dirty_max\n",
		       b->flush_ms);
	printf("  dir %s (%s); device file %" PRIu64 " MiB (%s); raw file "
	       "%" PRIu64 " MiB\n",
	       b->dir, b->fs, b->dev_size / MiB,
	       b->prealloc ? "zero-filled" : "sparse", b->size / MiB);
	printf("  working set = volume = %" PRIu64 " MiB = %.1f x dirty_max "
	       "(%" PRIu64 " MiB) = %.1f x dirty_hard;\n  flush interval "
	       "%u ms\n",
	       b->size / MiB, (double)b->size / (double)b->dirty_max,
	       b->dirty_max / MiB, (double)b->size / (double)b->dirty_max / 2,
	       b->flush_ms);
	printf("  %d thread%s, %.1f s per phase, %d round%s alternating "
	       "engine/raw order; medians of rounds\n",
	       b->threads, b->threads > 1 ? "s" : "", b->seconds, b->rounds,
	       b->rounds > 1 ? "s" : "");
	printf("store: format %.1f ms, open (empty) %.2f ms, close after run "
	       "%.1f ms, reopen after run %.2f ms (%" PRIu64
	       " stamps checked)\n",
	       b->format_ms, b->open_ms, b->close_ms, b->reopen_ms,
	       b->reopen_checked);
	printf("fill (1 MiB sequential, synced, not in the table): engine "
	       "%.2f s (WA %.2f), raw %.2f s\n\n",
	       b->fill_s[SYS_ENGINE], b->fill_wa, b->fill_s[SYS_RAW]);

	print_goals(b);

	printf("\nThroughput, durable: each write phase's time includes its "
	       "final h2_store_sync / fdatasync\n");
	printf("%-20s %-5s %11s %11s %10s %9s %-7s %s\n", "pattern", "unit",
	       "engine", "raw", "engine/raw", "GOAL", "", "ratio per round");
	for (int p = 0; p < NPAT; p++) {
		bool seq = p == PAT_SEQ_WRITE;
		size_t f1 = seq ? OFF(mbps) : OFF(iops);
		size_t f2 = seq ? OFF(iops) : OFF(mbps);
		double goal =
		    p == PAT_RAND_WRITE ? GOAL_RAND_RATIO : GOAL_SEQ_RATIO;
		char goalbuf[16] = "none";

		rr = ratio(b, p, f1, v);
		if (p != PAT_RAND_READ)
			snprintf(goalbuf, sizeof(goalbuf), ">= %.2f", goal);
		printf("%-20s %-5s %11.1f %11.1f %10s %9s %-7s %s\n",
		       bench_pat_name[p], seq ? "MB/s" : "IOPS",
		       med(b, p, SYS_ENGINE, f1), med(b, p, SYS_RAW, f1),
		       num(nb, sizeof(nb), rr, 2), goalbuf,
		       p != PAT_RAND_READ ? verdict(rr, goal, true) : "",
		       rounds_str(rbuf, sizeof(rbuf), v, b->rounds));
		printf("%-20s %-5s %11.1f %11.1f\n", "", seq ? "IOPS" : "MB/s",
		       med(b, p, SYS_ENGINE, f2), med(b, p, SYS_RAW, f2));
	}
	printf("ack-only (time to the last write's return, no final sync):\n");
	for (int p = 0; p < PAT_RAND_READ; p++)
		printf("%-20s %-5s %11.1f %11.1f %11.2f   final sync: engine "
		       "%.3f s, raw %.3f s\n",
		       bench_pat_name[p], "MB/s",
		       med(b, p, SYS_ENGINE, OFF(ack_mbps)),
		       med(b, p, SYS_RAW, OFF(ack_mbps)),
		       ratio(b, p, OFF(ack_mbps), v),
		       med(b, p, SYS_ENGINE, OFF(sync_secs)),
		       med(b, p, SYS_RAW, OFF(sync_secs)));

	printf("\nEngine write amplification = device bytes written / client "
	       "bytes written (final h2_store_sync included)\n");
	for (int p = 0; p < PAT_RAND_READ; p++) {
		double goal = p == PAT_SEQ_WRITE ? GOAL_WA_SEQ : GOAL_WA_RAND;

		n = field(b, p, SYS_ENGINE, OFF(wa), v);
		rr = bench_median(v, n);
		printf("%-20s WA %6s   GOAL <= %.1f %-7s per round %s\n",
		       bench_pat_name[p], num(nb, sizeof(nb), rr, 2), goal,
		       verdict(rr, goal, false),
		       rounds_str(rbuf, sizeof(rbuf), v, n));
	}

	printf("\nBytes sent to storage per client byte written: h2 device "
	       "file (h2_stats), this process's\nwrite_bytes (/proc/self/io: "
	       "pages dirtied; with large folios a 4 KiB write may count a\n"
	       "whole folio) and the host disk %s (sectors written: "
	       "everything on the machine,\njournal included)\n",
	       b->disk[0] ? b->disk : "(not found)");
	printf("%-20s %-6s %12s %14s %12s\n", "pattern", "side", "h2 dev file",
	       "write_bytes", "disk");
	for (int p = 0; p < PAT_RAND_READ; p++)
		for (int s = 0; s < NSYS; s++)
			printf(
			    "%-20s %-6s %12s %14s %12s\n",
			    s ? "" : bench_pat_name[p], bench_sys_name[s],
			    s ? "-"
			      : num(nb, sizeof(nb), med(b, p, s, OFF(wa)), 2),
			    num(nb2, sizeof(nb2), med(b, p, s, OFF(proc_wa)),
				2),
			    num(nb3, sizeof(nb3), med(b, p, s, OFF(disk_wa)),
				2));

	printf("\nEngine flushes in the write phases and raw's fdatasyncs "
	       "(final sync included), medians\nper run.  ms: whole flush, "
	       "then its stages FROZEN..WRITTEN (tree and freemap blocks\n"
	       "written to the device file) and WRITTEN..DONE (device flush, "
	       "header, device flush);\nraw: fdatasync.  Dirty per flush: "
	       "engine dirty_bytes at FROZEN (data and tree blocks),\nraw "
	       "distinct pages dirtied since the last fdatasync.  Writer "
	       "waits: writes that waited\nfor a flush (sync) because more "
	       "than dirty_hard = %" PRIu64 " MiB was dirty\n",
	       2 * b->dirty_max / MiB);
	printf("%-18s %-6s %7s %6s %6s %6s %6s %7s %7s %7s %7s %6s\n", "", "",
	       "", "", "", "write", "sync", "dirty", "dirty", "volume/",
	       "volume/", "writer");
	printf("%-18s %-6s %7s %6s %6s %6s %6s %7s %7s %7s %7s %6s\n",
	       "pattern", "side", "flushes", "per s", "ms", "ms", "ms",
	       "MiB/fl", "max MiB", "avg", "max", "waits");
	for (int p = 0; p < PAT_RAND_READ; p++) {
		for (int s = 0; s < NSYS; s++) {
			double fl = med(b, p, s, OFF(flushes));
			double secs = med(b, p, s, OFF(secs));
			double d = med(b, p, s, OFF(dirty_mib_avg));
			double dm = med(b, p, s, OFF(dirty_mib_max));

			printf("%-18s %-6s %7.0f %6.2f %6.1f %6s %6.1f %7.1f "
			       "%7.1f %7s %7s ",
			       s ? "" : bench_pat_name[p], bench_sys_name[s],
			       fl, secs > 0 ? fl / secs : 0,
			       med(b, p, s, OFF(flush_ms_avg)),
			       s == SYS_ENGINE
				   ? num(nb3, sizeof(nb3),
					 med(b, p, s, OFF(flush_write_ms)), 1)
				   : "-",
			       med(b, p, s, OFF(flush_sync_ms)), d, dm,
			       num(nb, sizeof(nb),
				   d > 0 ? (double)b->size / MiB / d : -1, 1),
			       num(nb2, sizeof(nb2),
				   dm > 0 ? (double)b->size / MiB / dm : -1,
				   1));
			if (s == SYS_ENGINE || !b->raw_interval_only)
				printf("%6.0f\n",
				       med(b, p, s, OFF(write_waits)));
			else
				printf("%6s\n", "-");
		}
	}
	printf("The WA goals assume a volume 8 x one flush's dirty data: "
	       "volume/avg should be >= 8.\nA flush carries more than "
	       "dirty_max when writers outrun the flusher, up to dirty_hard\n"
	       "= 2 x dirty_max plus one request, hence volume/max just "
	       "under 8 with the default\ndirty_max = volume / 16.\n");

	printf("\nWrite latency, us.  A write is \"during a flush\" if the "
	       "engine's FROZEN..DONE (raw: an\nfdatasync) overlapped it; "
	       "each cell is a median of rounds, so the shares need not add "
	       "up.\n");
	for (int p = 0; p < PAT_RAND_READ; p++) {
		printf("%s, engine\n", bench_pat_name[p]);
		print_lat_rows(b, p, SYS_ENGINE, "no flush running",
			       "while a flush runs");
		rr = p99_ratio(b, p, SYS_ENGINE, v, &n);
		printf("  p99(flush) / p99(no flush) %s   GOAL <= %.1f %-7s "
		       "per round %s\n",
		       num(nb, sizeof(nb), rr, 2), GOAL_P99_RATIO,
		       verdict(rr, GOAL_P99_RATIO, false),
		       rounds_str(rbuf, sizeof(rbuf), v, n));
		printf("%s, raw (for reference)\n", bench_pat_name[p]);
		print_lat_rows(b, p, SYS_RAW, "no fdatasync running",
			       "while fdatasync runs");
		rr = p99_ratio(b, p, SYS_RAW, v, &n);
		printf("  p99(fdatasync) / p99(none) %s   per round %s\n",
		       num(nb, sizeof(nb), rr, 2),
		       rounds_str(rbuf, sizeof(rbuf), v, n));
	}
	printf("4 KiB random read latency, us: engine p50 %.1f p99 %.1f, raw "
	       "p50 %.1f p99 %.1f\n",
	       med(b, PAT_RAND_READ, SYS_ENGINE, OFF(p50[LAT_ALL])),
	       med(b, PAT_RAND_READ, SYS_ENGINE, OFF(p99[LAT_ALL])),
	       med(b, PAT_RAND_READ, SYS_RAW, OFF(p50[LAT_ALL])),
	       med(b, PAT_RAND_READ, SYS_RAW, OFF(p99[LAT_ALL])));
	rr = med(b, PAT_RAND_READ, SYS_ENGINE, OFF(bytes));
	printf("  the engine read %.2f device bytes per client byte read "
	       "(h2_stats dev_bytes_read)\n",
	       rr > 0 ? med(b, PAT_RAND_READ, SYS_ENGINE, OFF(dev_read)) / rr
		      : 0.0);
	printf("Note: nothing is dropped from the page cache, so both sides "
	       "read from RAM when the files fit\n(this machine's page cache "
	       "holds both); the read figures compare CPU paths, not the "
	       "disk.\n");
}

static void json_rounds(const char *key, const struct bench_report *b,
			enum pat p, enum sys s, size_t off, bool comma)
{
	double v[MAX_ROUNDS] = {0};
	int n = field(b, p, s, off, v);

	printf("\"%s\": %.15g, \"%s_rounds\": [", key, bench_median(v, n), key);
	for (int i = 0; i < n; i++)
		printf("%s%.15g", i ? ", " : "", v[i]);
	printf("]%s", comma ? ", " : "");
}

static void json_lat(const struct bench_report *b, enum pat p, enum sys s,
		     enum lat l, const char *key, bool comma)
{
	printf("\"%s\": {", key);
	json_rounds("n", b, p, s, OFF(n[l]), true);
	json_rounds("p50_us", b, p, s, OFF(p50[l]), true);
	json_rounds("p99_us", b, p, s, OFF(p99[l]), true);
	json_rounds("p999_us", b, p, s, OFF(p999[l]), true);
	json_rounds("max_us", b, p, s, OFF(max[l]), false);
	printf("}%s", comma ? ", " : "");
}

static void json_goal(const char *key, double v, double goal, bool at_least,
		      bool comma)
{
	printf("    \"%s\": {\"value\": %.15g, \"goal\": \"%s %.2f\", "
	       "\"met\": %s}%s\n",
	       key, v, at_least ? ">=" : "<=", goal,
	       v < 0 ? "null"
		     : ((at_least ? v >= goal : v <= goal) ? "true" : "false"),
	       comma ? "," : "");
}

/* s as a JSON string body: quotes, backslashes and controls escaped. */
static void json_str(const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
}

void bench_print_json(const struct bench_report *b)
{
	double v[MAX_ROUNDS];
	int n;

	printf("{\n  \"config\": {\"dir\": \"");
	json_str(b->dir);
	printf("\", \"fs\": \"%s\", \"disk\": \"%s\", "
	       "\"working_set_bytes\": %" PRIu64 ", \"device_bytes\": %" PRIu64
	       ", \"device_prealloc\": %s, \"dirty_max_bytes\": %" PRIu64
	       ", \"flush_interval_ms\": %u, \"raw_sync\": \"%s\", "
	       "\"threads\": %d, "
	       "\"seconds_per_phase\": %g, \"rounds\": %d},\n",
	       b->fs, b->disk, b->size, b->dev_size,
	       b->prealloc ? "true" : "false", b->dirty_max, b->flush_ms,
	       b->raw_interval_only ? "interval" : "engine", b->threads,
	       b->seconds, b->rounds);
	printf("  \"store\": {\"format_ms\": %.4g, \"open_empty_ms\": %.4g, "
	       "\"close_ms\": %.4g, \"reopen_ms\": %.4g, "
	       "\"reopen_blocks_checked\": %" PRIu64 "},\n",
	       b->format_ms, b->open_ms, b->close_ms, b->reopen_ms,
	       b->reopen_checked);
	printf("  \"fill\": {\"engine_s\": %.4g, \"engine_wa\": %.4g, "
	       "\"raw_s\": %.4g},\n",
	       b->fill_s[SYS_ENGINE], b->fill_wa, b->fill_s[SYS_RAW]);
	printf("  \"phases\": {\n");
	for (int p = 0; p < NPAT; p++) {
		printf("    \"%s\": {\n", bench_pat_key[p]);
		for (int s = 0; s < NSYS; s++) {
			printf("      \"%s\": {", bench_sys_name[s]);
			json_rounds("iops", b, p, s, OFF(iops), true);
			json_rounds("mbps", b, p, s, OFF(mbps), true);
			json_rounds("ack_iops", b, p, s, OFF(ack_iops), true);
			json_rounds("ack_mbps", b, p, s, OFF(ack_mbps), true);
			json_rounds("secs", b, p, s, OFF(secs), true);
			json_rounds("final_sync_s", b, p, s, OFF(sync_secs),
				    true);
			if (p != PAT_RAND_READ) {
				json_rounds("flushes", b, p, s, OFF(flushes),
					    true);
				json_rounds("flush_ms_avg", b, p, s,
					    OFF(flush_ms_avg), true);
				json_rounds("client_mib_per_flush", b, p, s,
					    OFF(client_mib_per_flush), true);
				json_rounds("dirty_mib_per_flush", b, p, s,
					    OFF(dirty_mib_avg), true);
				json_rounds("dirty_mib_per_flush_max", b, p, s,
					    OFF(dirty_mib_max), true);
				json_rounds("flush_write_stage_ms", b, p, s,
					    OFF(flush_write_ms), true);
				json_rounds("flush_sync_stage_ms", b, p, s,
					    OFF(flush_sync_ms), true);
				json_rounds("write_waits", b, p, s,
					    OFF(write_waits), true);
			}
			if (s == SYS_ENGINE && p != PAT_RAND_READ) {
				json_rounds("wa", b, p, s, OFF(wa), true);
				json_rounds("dev_bytes_written", b, p, s,
					    OFF(dev_written), true);
				json_rounds("client_bytes_written", b, p, s,
					    OFF(client_written), true);
			}
			if (s == SYS_ENGINE)
				json_rounds("dev_bytes_read", b, p, s,
					    OFF(dev_read), true);
			json_rounds("proc_write_bytes", b, p, s,
				    OFF(proc_written), true);
			json_rounds("disk_bytes_written", b, p, s,
				    OFF(disk_written), true);
			if (p != PAT_RAND_READ) {
				json_rounds("proc_write_bytes_per_client_byte",
					    b, p, s, OFF(proc_wa), true);
				json_rounds("disk_bytes_per_client_byte", b, p,
					    s, OFF(disk_wa), true);
			}
			printf("\"latency\": {");
			if (p != PAT_RAND_READ) {
				json_lat(b, p, s, LAT_FLUSH, "during_flush",
					 true);
				json_lat(b, p, s, LAT_QUIET, "no_flush", true);
			}
			json_lat(b, p, s, LAT_ALL, "all", false);
			printf("}");
			if (p != PAT_RAND_READ) {
				double r = p99_ratio(b, p, s, v, &n);

				printf(", \"p99_flush_over_no_flush\": %.15g",
				       r);
			}
			printf("}%s\n", s + 1 < NSYS ? "," : "");
		}
		printf("      , \"ratio_iops\": %.15g",
		       ratio(b, p, OFF(iops), v));
		printf(", \"ratio_iops_rounds\": [");
		for (int i = 0; i < b->rounds; i++)
			printf("%s%.15g", i ? ", " : "", v[i]);
		printf("]\n    }%s\n", p + 1 < NPAT ? "," : "");
	}
	printf("  },\n  \"goals\": {\n");
	json_goal("rand_write_4k_ratio", ratio(b, PAT_RAND_WRITE, OFF(iops), v),
		  GOAL_RAND_RATIO, true, true);
	json_goal("seq_write_1m_ratio", ratio(b, PAT_SEQ_WRITE, OFF(mbps), v),
		  GOAL_SEQ_RATIO, true, true);
	json_goal("wa_rand_write_4k",
		  med(b, PAT_RAND_WRITE, SYS_ENGINE, OFF(wa)), GOAL_WA_RAND,
		  false, true);
	json_goal("wa_seq_write_1m", med(b, PAT_SEQ_WRITE, SYS_ENGINE, OFF(wa)),
		  GOAL_WA_SEQ, false, true);
	json_goal("p99_flush_over_no_flush_rand_write_4k",
		  p99_ratio(b, PAT_RAND_WRITE, SYS_ENGINE, v, &n),
		  GOAL_P99_RATIO, false, true);
	json_goal("p99_flush_over_no_flush_seq_write_1m",
		  p99_ratio(b, PAT_SEQ_WRITE, SYS_ENGINE, v, &n),
		  GOAL_P99_RATIO, false, false);
	printf("  }\n}\n");
}
