/*
 * ctl_bench.c - "h2ctl bench": IOPS, throughput and latency of the native
 * protocol, like a small fio.
 *
 * qd requests of bs bytes are kept in flight through the asynchronous
 * interface: each completion records its latency and frees its slot, and
 * the main loop refills free slots until the time is up, then waits for
 * the last replies.  Callbacks never submit (they run inside
 * h2_aio_poll, which need not be re-entrant).
 *
 * Latencies go into a log-linear histogram (HIST_SUB buckets per power of
 * two, so percentiles are within 1% whatever the run length) rather than
 * a list that grows with the run.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"

#define BENCH_MAX_BS   (64ull << 20)
#define BENCH_MAX_QD   4096
#define BENCH_MAX_TIME 86400.0

/* Histogram: exact below 2*HIST_SUB ns, then HIST_SUB per octave. */
#define HIST_SUB_BITS 7
#define HIST_SUB      (1u << HIST_SUB_BITS)
#define HIST_BUCKETS  (2 * HIST_SUB + (64 - HIST_SUB_BITS - 1) * HIST_SUB)

struct bench_opts {
	const char *volume;
	bool seq;
	bool write;
	uint64_t bs;
	unsigned qd;
	double secs;
	uint64_t region; /* 0: the whole volume */
};

struct bench_slot {
	struct bench *b;
	uint8_t *buf;
	uint64_t off;
	struct timespec start;
};

struct bench {
	struct bench_slot *slot;
	unsigned *free_list; /* indexes of idle slots */
	unsigned nfree;
	uint64_t ops;
	int err;
	uint64_t err_off;
	char err_msg[256]; /* the library's sentence about err */
	uint64_t hist[HIST_BUCKETS];
	uint64_t lat_min, lat_max;
	double lat_sum;	      /* ns */
	struct timespec last; /* time of the last completion */
};

static volatile sig_atomic_t interrupted;

/* SIGINT: stop submitting and report what was measured so far. */
static void on_sigint(int sig)
{
	(void)sig;
	interrupted = 1;
}

/* Histogram bucket of a latency in ns. */
static unsigned hist_index(uint64_t ns)
{
	unsigned e;

	if (ns < 2 * HIST_SUB)
		return (unsigned)ns;
	e = 63u - (unsigned)__builtin_clzll(ns); /* >= HIST_SUB_BITS + 1 */
	return 2 * HIST_SUB + (e - HIST_SUB_BITS - 1) * HIST_SUB +
	       (unsigned)((ns >> (e - HIST_SUB_BITS)) - HIST_SUB);
}

/* Middle of bucket i in ns. */
static double hist_value(unsigned i)
{
	unsigned e, sub;
	double lo, width;

	if (i < 2 * HIST_SUB)
		return i;
	e = (i - 2 * HIST_SUB) / HIST_SUB + HIST_SUB_BITS + 1;
	sub = (i - 2 * HIST_SUB) % HIST_SUB;
	width = ldexp(1.0, (int)(e - HIST_SUB_BITS));
	lo = (double)(HIST_SUB + sub) * width;
	return lo + width / 2;
}

/* Latency (ns) below which a fraction q of the requests completed. */
static double percentile(const struct bench *b, double q)
{
	uint64_t want = (uint64_t)ceil(q * (double)b->ops), seen = 0;

	if (want == 0)
		want = 1;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += b->hist[i];
		if (seen >= want) {
			double v = hist_value(i);

			/* The bucket's middle may lie outside what we saw. */
			if (v > (double)b->lat_max)
				v = (double)b->lat_max;
			if (v < (double)b->lat_min)
				v = (double)b->lat_min;
			return v;
		}
	}
	return (double)b->lat_max;
}

/* xorshift64*: fast and good enough for offsets and write data. */
static uint64_t rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dull;
}

/* Record the first failure and the library's sentence about it. */
static void bench_error(struct bench *b, int err, uint64_t off)
{
	if (b->err == 0) {
		b->err = err;
		b->err_off = off;
		snprintf(b->err_msg, sizeof(b->err_msg), "%s",
			 ctl_h2_reason(err));
	}
}

/* Completion of one request: arg is its slot. */
static void bench_done(void *arg, int result)
{
	struct bench_slot *s = arg;
	struct bench *b = s->b;
	struct timespec now = ctl_now();
	uint64_t ns = (uint64_t)(now.tv_sec - s->start.tv_sec) * 1000000000u +
		      (uint64_t)(now.tv_nsec - s->start.tv_nsec);

	b->free_list[b->nfree++] = (unsigned)(s - b->slot);
	b->last = now;
	if (result < 0) {
		bench_error(b, result, s->off);
		return;
	}
	b->ops++;
	b->hist[hist_index(ns)]++;
	b->lat_sum += (double)ns;
	if (b->ops == 1 || ns < b->lat_min)
		b->lat_min = ns;
	if (ns > b->lat_max)
		b->lat_max = ns;
}

/* Value of an option: "--name=VALUE" or "--name VALUE". */
static int opt_value(struct ctl *ctl, int argc, char **argv, int *i,
		     const char *name, const char **out)
{
	const char *a = argv[*i];
	size_t n = strlen(name);

	if (strncmp(a, name, n) != 0 || (a[n] && a[n] != '='))
		return -1;
	if (a[n] == '=')
		*out = a + n + 1;
	else if (*i + 1 < argc)
		*out = argv[++*i];
	else
		return ctl_usage(ctl, "%s needs a value", name);
	return CTL_EXIT_OK;
}

/* Parse bench's arguments into o.  CTL_EXIT_OK or a usage error. */
static int bench_parse(struct ctl *ctl, int argc, char **argv,
		       struct bench_opts *o)
{
	bool options = true;

	*o = (struct bench_opts){.bs = 4096, .qd = 32, .secs = 10};
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i], *v = NULL;
		char *end;
		int r;

		if (!options || a[0] != '-' || !a[1]) {
			if (o->volume)
				return ctl_usage(ctl, "too many arguments "
						      "(expected one VOLUME)");
			o->volume = a;
			continue;
		}
		if (!strcmp(a, "--")) {
			options = false;
		} else if ((r = opt_value(ctl, argc, argv, &i, "--pattern",
					  &v)) >= 0) {
			if (r)
				return r;
			if (strcmp(v, "rand") && strcmp(v, "seq"))
				return ctl_usage(ctl,
						 "--pattern must be rand "
						 "or seq, not \"%s\"",
						 v);
			o->seq = !strcmp(v, "seq");
		} else if ((r = opt_value(ctl, argc, argv, &i, "--rw", &v)) >=
			   0) {
			if (r)
				return r;
			if (strcmp(v, "read") && strcmp(v, "write"))
				return ctl_usage(ctl,
						 "--rw must be read or "
						 "write, not \"%s\"",
						 v);
			o->write = !strcmp(v, "write");
		} else if ((r = opt_value(ctl, argc, argv, &i, "--bs", &v)) >=
			   0) {
			if (r || (r = ctl_parse_size(ctl, "--bs", v, &o->bs)))
				return r;
			if (o->bs == 0 || o->bs > BENCH_MAX_BS)
				return ctl_usage(ctl, "--bs must be between 1 "
						      "and 64M");
		} else if ((r = opt_value(ctl, argc, argv, &i, "--qd", &v)) >=
			   0) {
			unsigned long qd;

			if (r)
				return r;
			errno = 0;
			qd = strtoul(v, &end, 10);
			if (v[0] < '0' || v[0] > '9' || *end || errno ||
			    qd < 1 || qd > BENCH_MAX_QD)
				return ctl_usage(ctl,
						 "--qd must be a number "
						 "from 1 to %d, not "
						 "\"%s\"",
						 BENCH_MAX_QD, v);
			o->qd = (unsigned)qd;
		} else if ((r = opt_value(ctl, argc, argv, &i, "--time", &v)) >=
			   0) {
			if (r)
				return r;
			errno = 0;
			o->secs = strtod(v, &end);
			if (v[0] < '0' || v[0] > '9' || *end || errno ||
			    !(o->secs > 0) || o->secs > BENCH_MAX_TIME)
				return ctl_usage(ctl,
						 "--time must be a number "
						 "of seconds above 0, "
						 "not \"%s\"",
						 v);
		} else if ((r = opt_value(ctl, argc, argv, &i, "--size", &v)) >=
			   0) {
			if (r ||
			    (r = ctl_parse_size(ctl, "--size", v, &o->region)))
				return r;
			if (o->region == 0)
				return ctl_usage(ctl, "--size must not be 0");
		} else {
			return ctl_usage(ctl, "unknown option \"%s\"", a);
		}
	}
	if (!o->volume)
		return ctl_usage(ctl, "missing arguments (expected VOLUME)");
	return CTL_EXIT_OK;
}

/* Allocate the slots and their buffers (write data is random). */
static int bench_init(struct bench *b, const struct bench_opts *o,
		      uint64_t *seed)
{
	memset(b, 0, sizeof(*b));
	b->slot = calloc(o->qd, sizeof(*b->slot));
	b->free_list = calloc(o->qd, sizeof(*b->free_list));
	if (!b->slot || !b->free_list)
		return ctl_fail("out of memory");
	for (unsigned i = 0; i < o->qd; i++) {
		struct bench_slot *s = &b->slot[i];

		s->b = b;
		if (posix_memalign((void **)&s->buf, 4096, o->bs))
			return ctl_fail(
			    "out of memory for %u buffers of %" PRIu64 " bytes",
			    o->qd, o->bs);
		for (uint64_t k = 0; o->write && k < o->bs; k += 8) {
			uint64_t x = rnd(seed);

			memcpy(s->buf + k, &x, o->bs - k < 8 ? o->bs - k : 8);
		}
		b->free_list[b->nfree++] = i;
	}
	return CTL_EXIT_OK;
}

/* Free what bench_init allocated (nothing may be in flight). */
static void bench_free(struct bench *b, unsigned qd)
{
	for (unsigned i = 0; b->slot && i < qd; i++)
		free(b->slot[i].buf);
	free(b->slot);
	free(b->free_list);
}

/* Print the results, human or JSON. */
static int bench_report(const struct ctl *ctl, const struct bench_opts *o,
			const struct bench *b, uint64_t region, double secs)
{
	double iops = secs > 0 ? (double)b->ops / secs : 0;
	double mbs = iops * (double)o->bs / 1e6;
	double mean = b->ops ? b->lat_sum / (double)b->ops : 0;
	double p50 = b->ops ? percentile(b, 0.50) : 0;
	double p99 = b->ops ? percentile(b, 0.99) : 0;
	double p999 = b->ops ? percentile(b, 0.999) : 0;
	const char *pattern = o->seq ? "seq" : "rand";
	const char *rw = o->write ? "write" : "read";

	if (ctl->json) {
		cJSON *root = cJSON_CreateObject(), *lat = NULL;
		bool ok = root != NULL;

		ok = ok && cJSON_AddStringToObject(root, "volume", o->volume) &&
		     cJSON_AddStringToObject(root, "pattern", pattern) &&
		     cJSON_AddStringToObject(root, "rw", rw) &&
		     ctl_json_u64(root, "bs", o->bs) &&
		     ctl_json_u64(root, "qd", o->qd) &&
		     ctl_json_u64(root, "region", region) &&
		     cJSON_AddNumberToObject(root, "time_s", o->secs) &&
		     cJSON_AddNumberToObject(root, "elapsed_s", secs) &&
		     ctl_json_u64(root, "ops", b->ops) &&
		     ctl_json_u64(root, "bytes", b->ops * o->bs) &&
		     cJSON_AddNumberToObject(root, "iops", round(iops)) &&
		     cJSON_AddNumberToObject(root, "mb_s",
					     round(mbs * 100) / 100) &&
		     (lat = cJSON_AddObjectToObject(root, "latency_us"));
		ok = ok &&
		     cJSON_AddNumberToObject(
			 lat, "min", round((double)b->lat_min / 100) / 10) &&
		     cJSON_AddNumberToObject(lat, "mean",
					     round(mean / 100) / 10) &&
		     cJSON_AddNumberToObject(lat, "p50",
					     round(p50 / 100) / 10) &&
		     cJSON_AddNumberToObject(lat, "p99",
					     round(p99 / 100) / 10) &&
		     cJSON_AddNumberToObject(lat, "p999",
					     round(p999 / 100) / 10) &&
		     cJSON_AddNumberToObject(
			 lat, "max", round((double)b->lat_max / 100) / 10);
		if (!ok) {
			cJSON_Delete(root);
			root = NULL;
		}
		return ctl_json_print(root);
	} else {
		char hb[32], hr[32], what[160], t[32], ops[32], io[32], mb[32],
		    lat[200];
		struct ctl_table *tab = ctl_table_new(2, NULL, NULL);
		bool ok;

		if (!tab)
			return ctl_fail("out of memory");
		snprintf(what, sizeof(what),
			 "%s (%s %s, bs %s, qd %u, "
			 "region %s)",
			 o->volume, pattern, rw,
			 ctl_size(o->bs, hb, sizeof(hb)), o->qd,
			 ctl_size(region, hr, sizeof(hr)));
		snprintf(t, sizeof(t), "%.2f s", secs);
		snprintf(ops, sizeof(ops), "%" PRIu64, b->ops);
		snprintf(io, sizeof(io), "%.0f", iops);
		snprintf(mb, sizeof(mb), "%.1f", mbs);
		snprintf(lat, sizeof(lat),
			 "min %.1f, avg %.1f, p50 %.1f, p99 %.1f, p999 %.1f, "
			 "max %.1f",
			 (double)b->lat_min / 1e3, mean / 1e3, p50 / 1e3,
			 p99 / 1e3, p999 / 1e3, (double)b->lat_max / 1e3);
		ok = ctl_table_addv(tab, "volume", what) &&
		     ctl_table_addv(tab, "time", t) &&
		     ctl_table_addv(tab, "ops", ops) &&
		     ctl_table_addv(tab, "IOPS", io) &&
		     ctl_table_addv(tab, "MB/s", mb) &&
		     ctl_table_addv(tab, "latency µs", lat);
		if (ok)
			ctl_table_print(tab, stdout);
		ctl_table_free(tab);
		return ok ? ctl_stdout_done() : ctl_fail("out of memory");
	}
}

/* Submit the request of slot index i at the next offset. */
static int bench_submit(struct bench *b, h2_volume *v,
			const struct bench_opts *o, unsigned i,
			uint64_t nblocks, uint64_t *cursor, uint64_t *seed)
{
	struct bench_slot *s = &b->slot[i];
	uint64_t blk;

	if (o->seq) {
		blk = (*cursor)++;
		if (*cursor == nblocks)
			*cursor = 0;
	} else {
		blk = rnd(seed) % nblocks;
	}
	s->off = blk * o->bs;
	s->start = ctl_now();
	return o->write
		   ? h2_aio_pwrite(v, s->buf, o->bs, s->off, 0, bench_done, s)
		   : h2_aio_pread(v, s->buf, o->bs, s->off, bench_done, s);
}

int ctl_bench(struct ctl *ctl, int argc, char **argv)
{
	struct bench_opts o;
	struct bench *b = NULL;
	struct sigaction sa = {.sa_handler = on_sigint}, old;
	struct timespec t0, now;
	h2_volume *v = NULL;
	uint64_t vsize, region, nblocks, cursor = 0;
	uint64_t seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^
			0x9e3779b97f4a7c15ull;
	bool stopping = false;
	int rc, r;

	if ((rc = bench_parse(ctl, argc, argv, &o)) || (rc = ctl_connect(ctl)))
		return rc;
	r = h2_volume_open(ctl->client, o.volume,
			   o.write ? H2_OPEN_RW : H2_OPEN_RO, &v);
	if (r < 0)
		return ctl_fail_h2(ctl, r, "cannot open volume \"%s\"%s",
				   o.volume, o.write ? " for writing" : "");
	vsize = h2_volume_size(v);
	region = o.region ? o.region : vsize;
	if (region > vsize) {
		char hr[32], hv[32];

		rc = ctl_fail("--size %s is larger than volume \"%s\" (%s)",
			      ctl_size(region, hr, sizeof(hr)), o.volume,
			      ctl_size(vsize, hv, sizeof(hv)));
		goto out;
	}
	nblocks = region / o.bs;
	if (nblocks == 0) {
		char hb[32];

		rc = ctl_fail("volume \"%s\" (or --size) is smaller than one "
			      "block of %s",
			      o.volume, ctl_size(o.bs, hb, sizeof(hb)));
		goto out;
	}
	/* The histogram alone is 60 KB: keep it off the stack. */
	if (!(b = calloc(1, sizeof(*b)))) {
		rc = ctl_fail("out of memory");
		goto out;
	}
	if ((rc = bench_init(b, &o, &seed)))
		goto out;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, &old);
	t0 = ctl_now();
	b->last = t0;
	for (;;) {
		double left;

		now = ctl_now();
		left = o.secs - ctl_elapsed(&t0, &now);
		if (left <= 0 || interrupted || b->err)
			stopping = true;
		while (!stopping && b->nfree > 0) {
			unsigned i = b->free_list[--b->nfree];

			r = bench_submit(b, v, &o, i, nblocks, &cursor, &seed);
			if (r < 0) {
				b->free_list[b->nfree++] = i;
				bench_error(b, r, b->slot[i].off);
				stopping = true;
			}
		}
		if (h2_aio_inflight(ctl->client) == 0)
			break;
		/* Wake up for the deadline even if the server stalls. */
		r = h2_aio_poll(ctl->client, stopping ? -1
					     : left > 0.1
						 ? 100
						 : (int)(left * 1000) + 1);
		if (r < 0) {
			bench_error(b, r, 0);
			break;
		}
	}
	sigaction(SIGINT, &old, NULL);
	if (b->err) {
		char hint[256];

		rc = ctl_fail("bench: %s volume \"%s\" at offset %" PRIu64
			      " failed: %s%s",
			      o.write ? "writing" : "reading", o.volume,
			      b->err_off, b->err_msg,
			      ctl_h2_hint(ctl, b->err, hint, sizeof(hint)));
		goto out;
	}
	rc = bench_report(ctl, &o, b, region, ctl_elapsed(&t0, &b->last));
out:
	if (b) {
		/* After a failed poll the library has run every callback. */
		bench_free(b, o.qd);
		free(b);
	}
	r = h2_volume_close(v);
	if (r < 0 && rc == CTL_EXIT_OK)
		rc =
		    ctl_fail_h2(ctl, r, "cannot close volume \"%s\"", o.volume);
	return rc;
}
