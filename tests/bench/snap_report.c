/*
 * snap_report.c - the snapshot benchmark's figures as tables or JSON.
 *
 * Medians are taken over rounds; a ratio to the 0-snapshot case is the
 * median of per-round ratios, so each compares runs made next to each
 * other on a noisy machine.  Aims are printed as met or missed, never
 * turned into an exit status.
 */
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "snap_bench.h"

const char *const snap_pattern_key[NPATTERN] = {"seq_1m", "rand_4k"};
const char *const snap_pattern_name[NPATTERN] = {"sequential 1 MiB",
						 "scattered 4 KiB"};

/* Per-round field of the write section for configuration c. */
static int wfield(const struct snap_report *b, int c, size_t off, double *v)
{
	for (int i = 0; i < b->rounds; i++)
		v[i] = *(const double *)((const char *)&b->w[c][i] + off);
	return b->rounds;
}

static double wmed(const struct snap_report *b, int c, size_t off)
{
	double v[MAX_ROUNDS] = {0};

	return bench_median(v, wfield(b, c, off, v));
}

/* Per-round IOPS ratio of configuration c to 0 snapshots (-1 where 0
 * snapshots did not run); median. */
static double wratio(const struct snap_report *b, int c, double *v)
{
	for (int i = 0; i < b->rounds; i++)
		v[i] = b->w[0][i].iops > 0 ? b->w[c][i].iops / b->w[0][i].iops
					   : -1;
	return bench_median(v, b->rounds);
}

static int dfield(const struct snap_report *b, int p, int e, size_t off,
		  double *v)
{
	for (int i = 0; i < b->rounds; i++)
		v[i] = *(const double *)((const char *)&b->d[p][e][i] + off);
	return b->rounds;
}

static double dmed(const struct snap_report *b, int p, int e, size_t off)
{
	double v[MAX_ROUNDS] = {0};

	return bench_median(v, dfield(b, p, e, off, v));
}

#define WOFF(f) offsetof(struct wres, f)
#define DOFF(f) offsetof(struct dres, f)

static const char *verdict(double v, double aim, bool at_least)
{
	if (v < 0)
		return "n/a";
	return (at_least ? v >= aim : v <= aim) ? "met" : "MISSED";
}

static const char *size_str(char *buf, size_t len, uint64_t v)
{
	if (v >= GiB && v % GiB == 0)
		snprintf(buf, len, "%" PRIu64 " GiB", v / GiB);
	else if (v >= MiB)
		snprintf(buf, len, "%.0f MiB", (double)v / MiB);
	else
		snprintf(buf, len, "%" PRIu64 " KiB", v >> 10);
	return buf;
}

static void print_cr_row(const char *what, const double *a, int na,
			 const double *c, int nc, double q)
{
	double x = bench_quantile(a, na, q), y = bench_quantile(c, nc, q);

	printf("  %-34s %14.2f %14.2f %9.2f\n", what, x, y, x > 0 ? y / x : 0);
}

static void print_create(const struct snap_report *b)
{
	const struct cr_side *s = &b->cr[CR_SMALL], *g = &b->cr[CR_BIG];
	char h1[48], h2[48], d[32];
	double ratio;

	printf("1. Snapshot create latency vs data written (h2_snap_create "
	       "returns once durable:\n   every time includes a flush; \"its "
	       "device syncs\": from the flush's WRITTEN\n   stage to the "
	       "return: device flush, header, device flush).  Steps alternate\n"
	       "   between the two volumes.\n");
	if (b->big_scaled)
		printf("   NOTE: %s\n", b->big_note);
	snprintf(h1, sizeof(h1), "%s written",
		 size_str(d, sizeof(d), s->written));
	snprintf(h2, sizeof(h2), "%s written",
		 size_str(d, sizeof(d), g->written));
	printf("  %-34s %14s %14s %9s\n", "volume (size = data written)", h1,
	       h2, "big/small");
	printf("  %-34s %14.1f %14.1f\n", "fill, 1 MiB sequential, s",
	       s->fill_s, g->fill_s);
	printf("  %-34s %14.1f %14.1f\n", "store space used, MiB", s->used_mib,
	       g->used_mib);
	printf("  idle volume, %d creates, ms\n", s->ncreate);
	print_cr_row("  median", s->create_ms, s->ncreate, g->create_ms,
		     g->ncreate, 0.5);
	print_cr_row("  p99", s->create_ms, s->ncreate, g->create_ms,
		     g->ncreate, 0.99);
	print_cr_row("  median of its device syncs", s->create_dev_ms,
		     s->ncreate, g->create_dev_ms, g->ncreate, 0.5);
	printf("  right after %s of random 4 KiB writes in the first %s, "
	       "%d creates, ms\n",
	       size_str(h1, sizeof(h1), b->dirty),
	       size_str(h2, sizeof(h2), b->small), s->ndirty);
	print_cr_row("  median", s->dirty_ms, s->ndirty, g->dirty_ms, g->ndirty,
		     0.5);
	print_cr_row("  p99", s->dirty_ms, s->ndirty, g->dirty_ms, g->ndirty,
		     0.99);
	print_cr_row("  median of its device syncs", s->dirty_dev_ms, s->ndirty,
		     g->dirty_dev_ms, g->ndirty, 0.5);
	printf("  delete of the idle snapshots but the oldest (at most "
	       "%.0f / %.0f KiB exclusive), ms\n",
	       (double)s->delete_excl_max / 1024,
	       (double)g->delete_excl_max / 1024);
	print_cr_row("  median", s->delete_ms, s->ndelete, g->delete_ms,
		     g->ndelete, 0.5);
	print_cr_row("  p99", s->delete_ms, s->ndelete, g->delete_ms,
		     g->ndelete, 0.99);
	ratio = bench_median(s->create_ms, s->ncreate) > 0
		    ? bench_median(g->create_ms, g->ncreate) /
			  bench_median(s->create_ms, s->ncreate)
		    : -1;
	printf("  AIM create O(1): idle median big/small %.2f (%.0fx the "
	       "data), <= %.1f: %s\n\n",
	       ratio, (double)g->written / (double)s->written, AIM_CREATE_RATIO,
	       verdict(ratio, AIM_CREATE_RATIO, false));
}

static void print_write(const struct snap_report *b)
{
	char sz[32], st[32], rb[256];
	double v[MAX_ROUNDS] = {0};

	printf("2. 4 KiB random overwrites with snapshots held (durable: "
	       "each slice ends in a timed\n   h2_store_sync).  Three "
	       "stores of %d x the volume, each a %s volume written in\n"
	       "   full, then %d steps of %s random overwrites each starting "
	       "with a sync;\n   snapshots at the starts of the last 0 / 1 / "
	       "%d steps.\n   Measured in %d slices of %.1f s per store, "
	       "interleaved; %d writer threads,\n   %d round%s, medians "
	       "(ratios: of "
	       "per-round ratios)\n",
	       b->dev_factor, size_str(sz, sizeof(sz), b->size), b->snaps,
	       size_str(st, sizeof(st), b->size / 256), b->snaps, b->slices,
	       b->seconds / b->slices, b->threads, b->rounds,
	       b->rounds > 1 ? "s" : "");
	if (b->size_scaled)
		printf("   NOTE: %s\n", b->size_note);
	printf("  %9s %9s %6s %5s %6s %6s %8s %7s %19s\n", "", "", "", "", "",
	       "", "", "", "----- flush ms ----");
	printf("  %9s %9s %6s %5s %6s %6s %8s %7s %6s %6s %5s %8s  %s\n",
	       "snapshots", "IOPS", "vs 0", "WA", "p50 us", "p99 us",
	       "p99.9 us", "flushes", "all", "write", "sync", "snap MiB",
	       "vs 0 per round");
	for (int c = 0; c < NCFG; c++) {
		double ratio = wratio(b, c, v);
		size_t k = 0;

		if (!b->cfg_ran[c])
			continue;
		rb[0] = 0;
		for (int i = 0; i < b->rounds && k < sizeof(rb); i++)
			k += (size_t)snprintf(rb + k, sizeof(rb) - k, "%s%.2f",
					      i ? " " : "", v[i]);
		printf("  %9d %9.0f %6.2f %5.2f %6.1f %6.1f %8.1f %7.0f %6.0f "
		       "%6.0f %5.0f %8.1f  %s\n",
		       b->ncfg_snaps[c], wmed(b, c, WOFF(iops)), ratio,
		       wmed(b, c, WOFF(wa)), wmed(b, c, WOFF(p50_us)),
		       wmed(b, c, WOFF(p99_us)), wmed(b, c, WOFF(p999_us)),
		       wmed(b, c, WOFF(flushes)), wmed(b, c, WOFF(flush_ms)),
		       wmed(b, c, WOFF(flush_write_ms)),
		       wmed(b, c, WOFF(flush_sync_ms)),
		       wmed(b, c, WOFF(snap_mib)), rb);
	}
	printf("  %9s %14s %12s %12s %9s %8s\n", "snapshots", "store used %",
	       "KiB/pwritev", "writer waits", "aging s", "fill s");
	for (int c = 0; c < NCFG; c++) {
		if (!b->cfg_ran[c])
			continue;
		printf("  %9d %6.1f -> %4.1f %12.1f %12.0f %9.1f %8.1f\n",
		       b->ncfg_snaps[c], wmed(b, c, WOFF(used_start_pct)),
		       wmed(b, c, WOFF(used_end_pct)),
		       wmed(b, c, WOFF(kib_per_dev_write)),
		       wmed(b, c, WOFF(write_waits)), wmed(b, c, WOFF(age_s)),
		       wmed(b, c, WOFF(fill_s)));
	}
	printf("  (flush ms: average flush, its FROZEN..WRITTEN stage (blocks "
	       "written to the device\n  file) and WRITTEN..DONE (device "
	       "flush, header, device flush); snap MiB: space held\n  only "
	       "by snapshots when measuring starts; store used %%: of its "
	       "space, before the\n  first slice and after the last; "
	       "KiB/pwritev: how contiguous its device writes are)\n");
	for (int c = 1; c < NCFG; c++) {
		double ratio = wratio(b, c, v);

		if (!b->cfg_ran[c] || !b->cfg_ran[0])
			continue;
		printf("  AIM with %d snapshot%s held, IOPS >= %.2f x none: "
		       "%.2f %s\n",
		       b->ncfg_snaps[c], b->ncfg_snaps[c] == 1 ? "" : "s",
		       AIM_WRITE_RATIO, ratio,
		       verdict(ratio, AIM_WRITE_RATIO, true));
	}
	printf("\n");
}

static void print_delete(const struct snap_report *b)
{
	char sz[32];

	printf("3. Snapshot delete time vs exclusively held data (volume %s "
	       "written in full; a\n   snapshot, then E overwritten and "
	       "synced; h2_snap_delete returns once durable)\n",
	       size_str(sz, sizeof(sz), b->size));
	printf("  %-17s %9s %13s %10s %10s %11s %10s\n", "overwrites", "E",
	       "exclusive MiB", "freed MiB", "delete ms", "MB/s freed",
	       "ms per GiB");
	for (int p = 0; p < NPATTERN; p++) {
		/* E = 0 overwrites nothing: the same for both patterns. */
		for (int e = p ? 1 : 0; e < NDEL; e++) {
			double ms = dmed(b, p, e, DOFF(ms));
			double x = dmed(b, p, e, DOFF(excl_mib));
			char per[32] = "-";

			if (x >= 1)
				snprintf(per, sizeof(per), "%.1f",
					 ms / (x / 1024));
			printf("  %-17s %9s %13.1f %10.1f %10.2f %11.1f "
			       "%10s\n",
			       e ? snap_pattern_name[p] : "none",
			       size_str(sz, sizeof(sz), b->del_bytes[e]), x,
			       dmed(b, p, e, DOFF(freed_mib)), ms,
			       dmed(b, p, e, DOFF(mbps)), per);
		}
	}
	printf("  (exclusive includes the metadata only the snapshot "
	       "references; freed: store used space\n   before the delete "
	       "minus after it; E = 0 is a delete on a %s volume holding "
	       "nothing alone)\n",
	       size_str(sz, sizeof(sz), b->size));
}

void snap_print_human(const struct snap_report *b)
{
	printf("h2 snapshot benchmark: dir %s (%s)\n\n", b->dir, b->fs);
	if (b->run_create)
		print_create(b);
	if (b->run_write)
		print_write(b);
	if (b->run_delete)
		print_delete(b);
}

static void json_arr(const char *key, const double *v, int n, bool comma)
{
	printf("\"%s\": [", key);
	for (int i = 0; i < n; i++)
		printf("%s%.6g", i ? ", " : "", v[i]);
	printf("]%s", comma ? ", " : "");
}

static void json_lat(const char *key, const double *v, int n, bool comma)
{
	printf("\"%s\": {\"median\": %.6g, \"p99\": %.6g, \"max\": %.6g, ", key,
	       bench_quantile(v, n, 0.5), bench_quantile(v, n, 0.99),
	       bench_quantile(v, n, 1.0));
	json_arr("all", v, n, false);
	printf("}%s", comma ? ", " : "");
}

/* s as a JSON string body (quotes, backslashes, controls escaped). */
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

static void json_wfield(const struct snap_report *b, int c, const char *key,
			size_t off, bool comma)
{
	double v[MAX_ROUNDS] = {0};
	int n = wfield(b, c, off, v);

	printf("\"%s\": %.6g, ", key, bench_median(v, n));
	printf("\"%s_rounds\": [", key);
	for (int i = 0; i < n; i++)
		printf("%s%.6g", i ? ", " : "", v[i]);
	printf("]%s", comma ? ", " : "");
}

void snap_print_json(const struct snap_report *b)
{
	double v[MAX_ROUNDS] = {0};

	printf("{\n  \"config\": {\"dir\": \"");
	json_str(b->dir);
	printf("\", \"fs\": \"%s\", \"rounds\": %d, \"threads\": %d, "
	       "\"seconds\": %g, \"size_bytes\": %" PRIu64 ", \"snaps\": %d, "
	       "\"creates\": %d, \"dirty_bytes\": %" PRIu64
	       ", \"slices\": %d, \"dev_factor\": %d, \"size_scaled\": %s, "
	       "\"size_note\": \"",
	       b->fs, b->rounds, b->threads, b->seconds, b->size, b->snaps,
	       b->creates, b->dirty, b->slices, b->dev_factor,
	       b->size_scaled ? "true" : "false");
	json_str(b->size_note);
	printf("\"}");
	if (b->run_create) {
		printf(",\n  \"create\": {\"big_requested_bytes\": %" PRIu64
		       ", \"big_scaled\": %s, \"note\": \"",
		       b->big_asked, b->big_scaled ? "true" : "false");
		json_str(b->big_note);
		printf("\",\n");
		for (int i = 0; i < NCR; i++) {
			const struct cr_side *c = &b->cr[i];

			printf("    \"%s\": {\"written_bytes\": %" PRIu64
			       ", \"fill_s\": %.6g, \"used_mib\": %.6g, "
			       "\"delete_excl_bytes_max\": %" PRIu64
			       ",\n      ",
			       i == CR_SMALL ? "small" : "big", c->written,
			       c->fill_s, c->used_mib, c->delete_excl_max);
			json_lat("create_idle_ms", c->create_ms, c->ncreate,
				 true);
			printf("\n      ");
			json_lat("create_idle_device_sync_ms", c->create_dev_ms,
				 c->ncreate, true);
			printf("\n      ");
			json_lat("create_after_writes_ms", c->dirty_ms,
				 c->ndirty, true);
			printf("\n      ");
			json_lat("create_after_writes_device_sync_ms",
				 c->dirty_dev_ms, c->ndirty, true);
			printf("\n      ");
			json_lat("delete_idle_ms", c->delete_ms, c->ndelete,
				 false);
			printf("},\n");
		}
		printf("    \"create_idle_median_ratio_big_small\": %.6g}",
		       bench_median(b->cr[CR_SMALL].create_ms,
				    b->cr[CR_SMALL].ncreate) > 0
			   ? bench_median(b->cr[CR_BIG].create_ms,
					  b->cr[CR_BIG].ncreate) /
				 bench_median(b->cr[CR_SMALL].create_ms,
					      b->cr[CR_SMALL].ncreate)
			   : -1);
	}
	if (b->run_write) {
		printf(",\n  \"write\": [\n");
		for (int c = 0; c < NCFG; c++) {
			double ratio = wratio(b, c, v);

			printf("    {\"snapshots\": %d, \"ran\": %s, ",
			       b->ncfg_snaps[c],
			       b->cfg_ran[c] ? "true" : "false");
			json_wfield(b, c, "iops", WOFF(iops), true);
			printf("\"ratio_vs_none\": %.6g, ", ratio);
			json_arr("ratio_vs_none_rounds", v, b->rounds, true);
			json_wfield(b, c, "mbps", WOFF(mbps), true);
			json_wfield(b, c, "wa", WOFF(wa), true);
			json_wfield(b, c, "p50_us", WOFF(p50_us), true);
			json_wfield(b, c, "p99_us", WOFF(p99_us), true);
			json_wfield(b, c, "p999_us", WOFF(p999_us), true);
			json_wfield(b, c, "flushes", WOFF(flushes), true);
			json_wfield(b, c, "flush_ms", WOFF(flush_ms), true);
			json_wfield(b, c, "flush_write_stage_ms",
				    WOFF(flush_write_ms), true);
			json_wfield(b, c, "flush_sync_stage_ms",
				    WOFF(flush_sync_ms), true);
			json_wfield(b, c, "write_waits", WOFF(write_waits),
				    true);
			json_wfield(b, c, "final_sync_s", WOFF(sync_s), true);
			json_wfield(b, c, "snapshot_mib", WOFF(snap_mib), true);
			json_wfield(b, c, "kib_per_pwritev",
				    WOFF(kib_per_dev_write), true);
			json_wfield(b, c, "used_start_pct",
				    WOFF(used_start_pct), true);
			json_wfield(b, c, "used_end_pct", WOFF(used_end_pct),
				    true);
			json_wfield(b, c, "fill_s", WOFF(fill_s), true);
			json_wfield(b, c, "aging_s", WOFF(age_s), false);
			printf("}%s\n", c + 1 < NCFG ? "," : "");
		}
		printf("  ]");
	}
	if (b->run_delete) {
		printf(",\n  \"delete\": [\n");
		for (int p = 0; p < NPATTERN; p++) {
			for (int e = 0; e < NDEL; e++) {
				printf("    {\"pattern\": \"%s\", "
				       "\"overwritten_bytes\": %" PRIu64 ", ",
				       snap_pattern_key[p], b->del_bytes[e]);
				dfield(b, p, e, DOFF(ms), v);
				printf("\"delete_ms\": %.6g, ",
				       bench_median(v, b->rounds));
				json_arr("delete_ms_rounds", v, b->rounds,
					 true);
				printf("\"excl_bytes\": %.15g, "
				       "\"freed_bytes\": %.15g, \"mbps\": "
				       "%.6g}%s\n",
				       dmed(b, p, e, DOFF(excl_bytes)),
				       dmed(b, p, e, DOFF(freed_bytes)),
				       dmed(b, p, e, DOFF(mbps)),
				       p + 1 < NPATTERN || e + 1 < NDEL ? ","
									: "");
			}
		}
		printf("  ]");
	}
	printf("\n}\n");
}
