/*
 * prom.h - h2d's counters in the Prometheus text exposition format,
 * version 0.0.4 (what GET /metrics answers, metrics_http.c).
 *
 * Every family has "# HELP" and "# TYPE" lines.  Counters end in _total;
 * latency is a Prometheus histogram (_bucket{le=...}, _sum, _count) whose
 * "le" bounds are the powers of two from 2^10 to 2^37 ns of metrics.h's
 * buckets (so each count is exact), in seconds.  Server-wide families
 * (h2_requests_total{proto,op}, ...) and per-volume ones
 * (h2_volume_requests_total{volume,proto,op}, ...) are separate, so
 * summing a family never counts a request twice; per-volume series appear
 * for the operations a volume has seen.  Error series appear once an
 * error of that code happened.  Label values are escaped as the format
 * says (backslash, double quote, newline).
 *
 * No event loop here: the unit tests render into memory.
 */
#ifndef H2D_PROM_H
#define H2D_PROM_H

#include <stddef.h>
#include <stdio.h>

#include "h2core.h"
#include "metrics.h"

/* The Content-Type of the output. */
#define H2_PROM_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* What a scrape shows; everything borrowed. */
struct h2_prom_input {
	struct h2_metrics *m;
	const struct h2_store_stats *st; /* the engine's numbers */
	const struct h2_vol_info *vols;	 /* every volume of the store */
	size_t nvols;
	const char *version; /* h2d's, for h2_build_info */
};

/*
 * Write the whole exposition to f.  0, -ENOMEM (a snapshot could not be
 * allocated) or -EIO (f reported an error).  Thread-safe (reads counters
 * only).
 */
int h2_prom_write(FILE *f, const struct h2_prom_input *in);

/* Write s as the inside of a quoted label value: \ " and newline escaped.
 * Pure but for f. */
void h2_prom_label_value(FILE *f, const char *s);

#endif
