/*
 * nbd_loadgen.c - an NBD load generator on libnbd's asynchronous API, with
 * fio-like job options and output, for the NBD benchmark (nbd_bench.sh).
 *
 * Why not fio: fio's nbd engine hands libnbd a URI and nothing else, and
 * libnbd refuses URIs that name local files (tls-certificates=DIR) unless
 * the program allows it, so fio cannot present a client certificate from
 * a directory of our choice.  This program can, and otherwise behaves
 * like "fio --ioengine=nbd" with one job: --iodepth requests in flight
 * per connection, uniformly random (aligned) or sequential offsets, for
 * --runtime seconds after --ramp seconds of warm-up.
 *
 * Loop: one thread polls every connection's socket and lets libnbd's
 * state machine read and write (nbd_aio_notify_read/write).  A command's
 * completion callback only notes the finished slot (libnbd forbids
 * calling it back from a callback); the loop then records the latency,
 * checks the result and issues the slot's next request.  Each slot owns
 * its buffer, so no request ever shares memory with another in flight.
 *
 * Correctness: every completion's error is checked and counted; any
 * error (or a connection failure) makes the exit status 1.  Writes stamp
 * every 512-byte sector with its own offset; with --verify, reads check
 * the stamps, so a server that returns wrong data fails the run.  (The
 * benchmark fills the region with stamped writes before reading it.)
 *
 * Latency is measured from the request's submission to its completion
 * callback, into a log-linear histogram (64 buckets per power of two,
 * so a percentile is within 1.6%).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libnbd.h>

#define LG_MAX_CONNS 64
#define LG_MAX_DEPTH 1024
#define LG_SECTOR    512u
#define LG_MAGIC     0x6832626e64736563ull /* "h2bndsec" */
#define LG_SUB_BITS  6u			   /* 64 buckets per power of two */
#define LG_BUCKETS   ((64u - LG_SUB_BITS + 1u) << LG_SUB_BITS)

enum lg_rw { LG_RANDREAD, LG_RANDWRITE, LG_READ, LG_WRITE };

static const char *const lg_rw_names[] = {"randread", "randwrite", "read",
					  "write"};

struct lg_opts {
	const char *uri;
	const char *tls_dir; /* NULL: from the URI, or none */
	const char *name;
	enum lg_rw rw;
	uint64_t bs;
	unsigned iodepth;
	unsigned conns;
	double runtime, ramp;
	uint64_t size; /* 0: the export's */
	uint64_t offset;
	bool once; /* sequential: stop after one pass over the region */
	bool json;
	bool verify;
};

struct lg_conn {
	struct nbd_handle *h;
	unsigned inflight;
};

struct lg_slot {
	struct lg *lg;
	struct lg_conn *conn;
	uint8_t *buf;
	uint64_t off;
	uint64_t t0, t1; /* ns: issued, completed */
	int err;	 /* the completion's error (errno) */
	struct lg_slot *next_done;
};

struct lg {
	struct lg_opts o;
	struct lg_conn conn[LG_MAX_CONNS];
	struct lg_slot *slots;
	struct lg_slot *done; /* completed, not yet handled */
	uint64_t seq_next;    /* next sequential offset, relative */
	uint64_t pass_left;   /* --once: bytes not yet issued */
	uint64_t rng;
	bool measuring, stopping;
	/* figures of the measured period */
	uint64_t ios, bytes, errors, bad_data;
	uint64_t t_start, t_last;
	uint64_t lat_sum, lat_max;
	uint64_t hist[LG_BUCKETS];
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* xorshift64*: fast, and good enough for offsets. */
static uint64_t rnd(struct lg *lg)
{
	lg->rng ^= lg->rng >> 12;
	lg->rng ^= lg->rng << 25;
	lg->rng ^= lg->rng >> 27;
	return lg->rng * 0x2545f4914f6cdd1dull;
}

/* ---------------------------------------------------------------------- */
/* Latency histogram.                                                     */

static unsigned hist_bucket(uint64_t v)
{
	unsigned b, shift;

	if (v < (2u << LG_SUB_BITS))
		return (unsigned)v;
	b = 63u - (unsigned)__builtin_clzll(v);
	shift = b - LG_SUB_BITS;
	return ((shift + 1) << LG_SUB_BITS) +
	       (unsigned)((v >> shift) - (1u << LG_SUB_BITS));
}

/* The middle of bucket i's range of values. */
static double hist_value(unsigned i)
{
	unsigned shift, sub;

	if (i < (2u << LG_SUB_BITS))
		return i;
	shift = (i >> LG_SUB_BITS) - 1;
	sub = (i & ((1u << LG_SUB_BITS) - 1)) + (1u << LG_SUB_BITS);
	return ((double)sub + 0.5) * (double)(1ull << shift);
}

/* The p-th percentile (0 < p <= 100) in ns. */
static double hist_pct(const struct lg *lg, double p)
{
	uint64_t want, seen = 0;

	if (!lg->ios)
		return 0;
	want = (uint64_t)((double)lg->ios * p / 100.0 + 0.5);
	if (want == 0)
		want = 1;
	for (unsigned i = 0; i < LG_BUCKETS; i++) {
		seen += lg->hist[i];
		if (seen >= want)
			return hist_value(i);
	}
	return (double)lg->lat_max;
}

/* ---------------------------------------------------------------------- */
/* Data stamps.                                                           */

static bool is_write(const struct lg *lg)
{
	return lg->o.rw == LG_RANDWRITE || lg->o.rw == LG_WRITE;
}

static void stamp(uint8_t *buf, uint64_t off, uint64_t len)
{
	for (uint64_t s = 0; s + 16 <= len; s += LG_SECTOR) {
		uint64_t a = off + s, b = (off + s) ^ LG_MAGIC;

		memcpy(buf + s, &a, 8);
		memcpy(buf + s + 8, &b, 8);
	}
}

/* Sectors of a read that do not carry their own offset's stamp. */
static uint64_t check_stamps(const uint8_t *buf, uint64_t off, uint64_t len)
{
	uint64_t bad = 0;

	for (uint64_t s = 0; s + 16 <= len; s += LG_SECTOR) {
		uint64_t a, b;

		memcpy(&a, buf + s, 8);
		memcpy(&b, buf + s + 8, 8);
		if (a != off + s || b != ((off + s) ^ LG_MAGIC))
			bad++;
	}
	return bad;
}

/* ---------------------------------------------------------------------- */
/* Requests.                                                              */

/* libnbd calls this with its handle lock held: only note the slot. */
static int on_complete(void *arg, int *error)
{
	struct lg_slot *s = arg;

	s->t1 = now_ns();
	s->err = *error;
	s->next_done = s->lg->done;
	s->lg->done = s;
	return 1; /* retire the command */
}

/* The next offset, or false when --once has covered the region. */
static bool next_offset(struct lg *lg, uint64_t *off)
{
	uint64_t blocks = lg->o.size / lg->o.bs;

	if (lg->o.rw == LG_RANDREAD || lg->o.rw == LG_RANDWRITE) {
		*off = lg->o.offset + (rnd(lg) % blocks) * lg->o.bs;
		return true;
	}
	if (lg->o.once) {
		if (lg->pass_left == 0)
			return false;
		lg->pass_left -= lg->o.bs;
	}
	if (lg->seq_next + lg->o.bs > lg->o.size)
		lg->seq_next = 0;
	*off = lg->o.offset + lg->seq_next;
	lg->seq_next += lg->o.bs;
	return true;
}

/* Issue slot s's next request; false if there is none to issue. */
static int submit(struct lg *lg, struct lg_slot *s)
{
	nbd_completion_callback cb = {.callback = on_complete, .user_data = s};
	int64_t r;

	if (lg->stopping || !next_offset(lg, &s->off))
		return 0;
	s->err = 0;
	s->t0 = now_ns();
	if (is_write(lg)) {
		stamp(s->buf, s->off, lg->o.bs);
		r = nbd_aio_pwrite(s->conn->h, s->buf, lg->o.bs, s->off, cb, 0);
	} else {
		r = nbd_aio_pread(s->conn->h, s->buf, lg->o.bs, s->off, cb, 0);
	}
	if (r < 0) {
		fprintf(stderr, "nbd_loadgen: cannot issue a request: %s\n",
			nbd_get_error());
		return -1;
	}
	s->conn->inflight++;
	return 1;
}

/* A completed slot: account for it, then reissue it. */
static int handle_done(struct lg *lg, struct lg_slot *s)
{
	uint64_t lat = s->t1 - s->t0;

	s->conn->inflight--;
	if (s->err) {
		lg->errors++;
		if (lg->errors <= 10)
			fprintf(stderr,
				"nbd_loadgen: %s of %" PRIu64
				" bytes at %" PRIu64 " failed: %s\n",
				is_write(lg) ? "write" : "read", lg->o.bs,
				s->off, strerror(s->err));
	} else if (lg->o.verify && !is_write(lg)) {
		uint64_t bad = check_stamps(s->buf, s->off, lg->o.bs);

		if (bad) {
			lg->bad_data++;
			if (lg->bad_data <= 10)
				fprintf(stderr,
					"nbd_loadgen: read at %" PRIu64
					": %" PRIu64 " sectors hold wrong "
					"data\n",
					s->off, bad);
		}
	}
	if (lg->measuring) {
		lg->ios++;
		lg->bytes += lg->o.bs;
		lg->lat_sum += lat;
		if (lat > lg->lat_max)
			lg->lat_max = lat;
		lg->hist[hist_bucket(lat)]++;
		lg->t_last = s->t1;
	}
	return submit(lg, s) < 0 ? -1 : 0;
}

/* ---------------------------------------------------------------------- */
/* The loop.                                                              */

static int run(struct lg *lg)
{
	uint64_t t0 = now_ns(), ramp_end, end;
	unsigned n = lg->o.conns;
	struct pollfd pfd[LG_MAX_CONNS];

	ramp_end = t0 + (uint64_t)(lg->o.ramp * 1e9);
	end = ramp_end + (uint64_t)(lg->o.runtime * 1e9);
	lg->measuring = lg->o.ramp <= 0;
	lg->t_start = lg->t_last = t0;
	for (unsigned i = 0; i < n * lg->o.iodepth; i++)
		if (submit(lg, &lg->slots[i]) < 0)
			return -1;
	for (;;) {
		unsigned busy = 0;
		uint64_t t;
		int r;

		for (unsigned i = 0; i < n; i++) {
			unsigned dir = nbd_aio_get_direction(lg->conn[i].h);

			busy += lg->conn[i].inflight;
			pfd[i].fd = nbd_aio_get_fd(lg->conn[i].h);
			pfd[i].events = 0;
			pfd[i].revents = 0;
			if (dir & LIBNBD_AIO_DIRECTION_READ)
				pfd[i].events |= POLLIN;
			if (dir & LIBNBD_AIO_DIRECTION_WRITE)
				pfd[i].events |= POLLOUT;
		}
		if (busy == 0)
			break;
		r = poll(pfd, n, 1000);
		if (r < 0 && errno != EINTR) {
			perror("nbd_loadgen: poll");
			return -1;
		}
		for (unsigned i = 0; i < n && r > 0; i++) {
			struct nbd_handle *h = lg->conn[i].h;
			short ev = pfd[i].revents;

			if ((ev & (POLLIN | POLLHUP | POLLERR)) &&
			    nbd_aio_notify_read(h) < 0)
				goto conn_failed;
			if ((ev & POLLOUT) && nbd_aio_notify_write(h) < 0)
				goto conn_failed;
		}
		t = now_ns();
		if (!lg->measuring && t >= ramp_end) {
			lg->measuring = true;
			lg->t_start = lg->t_last = t;
		}
		if (t >= end)
			lg->stopping = true;
		while (lg->done) {
			struct lg_slot *s = lg->done;

			lg->done = s->next_done;
			if (handle_done(lg, s) < 0)
				return -1;
		}
	}
	return 0;
conn_failed:
	fprintf(stderr, "nbd_loadgen: connection failed: %s\n",
		nbd_get_error());
	return -1;
}

/* ---------------------------------------------------------------------- */
/* Setup and report.                                                      */

static struct nbd_handle *lg_connect(const struct lg_opts *o, uint64_t *size)
{
	struct nbd_handle *h = nbd_create();
	int64_t sz;

	if (!h) {
		fprintf(stderr, "nbd_loadgen: %s\n", nbd_get_error());
		return NULL;
	}
	/* A URI may name the certificate directory (tls-certificates=). */
	if (nbd_set_uri_allow_local_file(h, true) < 0 ||
	    (o->tls_dir && nbd_set_tls_certificates(h, o->tls_dir) < 0) ||
	    nbd_connect_uri(h, o->uri) < 0) {
		fprintf(stderr, "nbd_loadgen: cannot connect to %s: %s\n",
			o->uri, nbd_get_error());
		nbd_close(h);
		return NULL;
	}
	sz = nbd_get_size(h);
	if (sz < 0) {
		fprintf(stderr, "nbd_loadgen: %s\n", nbd_get_error());
		nbd_close(h);
		return NULL;
	}
	*size = (uint64_t)sz;
	return h;
}

static void report(const struct lg *lg, int tls)
{
	double secs = (double)(lg->t_last - lg->t_start) / 1e9;
	double iops = secs > 0 ? (double)lg->ios / secs : 0;
	double mbps = secs > 0 ? (double)lg->bytes / secs / 1e6 : 0;
	double mean = lg->ios ? (double)lg->lat_sum / (double)lg->ios : 0;
	const struct lg_opts *o = &lg->o;

	if (o->json) {
		printf("{\"name\": \"%s\", \"rw\": \"%s\", \"bs\": %" PRIu64
		       ", \"iodepth\": %u, \"connections\": %u, \"tls\": %s, "
		       "\"runtime_s\": %.3f, \"ios\": %" PRIu64
		       ", \"bytes\": %" PRIu64 ", \"errors\": %" PRIu64
		       ", \"bad_data\": %" PRIu64 ", \"iops\": %.1f, "
		       "\"mb_per_s\": %.2f, \"lat_us\": {\"mean\": %.1f, "
		       "\"p50\": %.1f, \"p99\": %.1f, \"p99.9\": %.1f, "
		       "\"max\": %.1f}}\n",
		       o->name, lg_rw_names[o->rw], o->bs, o->iodepth, o->conns,
		       tls ? "true" : "false", secs, lg->ios, lg->bytes,
		       lg->errors, lg->bad_data, iops, mbps, mean / 1e3,
		       hist_pct(lg, 50) / 1e3, hist_pct(lg, 99) / 1e3,
		       hist_pct(lg, 99.9) / 1e3, (double)lg->lat_max / 1e3);
		return;
	}
	printf("%s: rw=%s bs=%" PRIu64 " iodepth=%u connections=%u tls=%s\n",
	       o->name, lg_rw_names[o->rw], o->bs, o->iodepth, o->conns,
	       tls ? "yes" : "no");
	printf("  ios=%" PRIu64 " bytes=%" PRIu64
	       " runtime=%.2fs errors=%" PRIu64 " bad_data=%" PRIu64 "\n",
	       lg->ios, lg->bytes, secs, lg->errors, lg->bad_data);
	printf("  IOPS=%.0f  MB/s=%.1f\n", iops, mbps);
	printf("  lat (us): mean=%.1f p50=%.1f p99=%.1f p99.9=%.1f max=%.1f\n",
	       mean / 1e3, hist_pct(lg, 50) / 1e3, hist_pct(lg, 99) / 1e3,
	       hist_pct(lg, 99.9) / 1e3, (double)lg->lat_max / 1e3);
}

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: nbd_loadgen --uri URI [OPTIONS]\n"
	    "\n"
	    "  --uri URI               nbd://HOST:PORT/EXPORT or nbds://... "
	    "(may carry\n"
	    "                          ?tls-certificates=DIR)\n"
	    "  --tls-certificates DIR  libnbd's layout: ca-cert.pem, "
	    "client-cert.pem,\n"
	    "                          client-key.pem\n"
	    "  --rw MODE               randread, randwrite, read or write "
	    "(default randread)\n"
	    "  --bs SIZE               request size (default 4K)\n"
	    "  --iodepth N             requests in flight per connection "
	    "(default 32)\n"
	    "  --connections N         connections (default 1)\n"
	    "  --runtime SECONDS       measured time (default 10)\n"
	    "  --ramp SECONDS          unmeasured warm-up first (default 0)\n"
	    "  --size SIZE             region used (default: the export)\n"
	    "  --offset SIZE           where the region starts (default 0)\n"
	    "  --once                  read/write: one pass over the region, "
	    "no time limit\n"
	    "  --verify                reads check the stamps that writes "
	    "leave\n"
	    "  --name NAME             job name in the output\n"
	    "  --json                  one JSON object on stdout\n"
	    "\n"
	    "Exit status 0 only if every request succeeded (and verified).\n");
}

static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *s == '-')
		return -1;
	switch (*end) {
	case 'k':
	case 'K':
		shift = 10;
		end++;
		break;
	case 'm':
	case 'M':
		shift = 20;
		end++;
		break;
	case 'g':
	case 'G':
		shift = 30;
		end++;
		break;
	case 't':
	case 'T':
		shift = 40;
		end++;
		break;
	default:
		break;
	}
	if (*end == 'i' && end[1] == 'B')
		end += 2;
	else if (*end == 'B' && end[1] == 0)
		end++;
	if (*end || (shift && v > (UINT64_MAX >> shift)))
		return -1;
	*out = (uint64_t)v << shift;
	return 0;
}

static int parse_args(int argc, char **argv, struct lg_opts *o)
{
	static const struct option opts[] = {
	    {"uri", required_argument, NULL, 'u'},
	    {"tls-certificates", required_argument, NULL, 'c'},
	    {"rw", required_argument, NULL, 'w'},
	    {"bs", required_argument, NULL, 'b'},
	    {"iodepth", required_argument, NULL, 'q'},
	    {"connections", required_argument, NULL, 'n'},
	    {"runtime", required_argument, NULL, 't'},
	    {"ramp", required_argument, NULL, 'r'},
	    {"size", required_argument, NULL, 's'},
	    {"offset", required_argument, NULL, 'o'},
	    {"once", no_argument, NULL, '1'},
	    {"verify", no_argument, NULL, 'v'},
	    {"name", required_argument, NULL, 'N'},
	    {"json", no_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	uint64_t v;
	char *end;
	int ch;

	*o = (struct lg_opts){.rw = LG_RANDREAD,
			      .bs = 4096,
			      .iodepth = 32,
			      .conns = 1,
			      .runtime = 10,
			      .name = "job"};
	while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (ch) {
		case 'u':
			o->uri = optarg;
			break;
		case 'c':
			o->tls_dir = optarg;
			break;
		case 'w':
			for (v = 0; v < 4; v++)
				if (strcmp(optarg, lg_rw_names[v]) == 0)
					break;
			if (v == 4) {
				fprintf(stderr,
					"nbd_loadgen: --rw %s: use randread, "
					"randwrite, read or write\n",
					optarg);
				return -1;
			}
			o->rw = (enum lg_rw)v;
			break;
		case 'b':
			if (parse_size(optarg, &o->bs) < 0 || o->bs < 512 ||
			    o->bs > (64u << 20)) {
				fprintf(stderr,
					"nbd_loadgen: --bs %s: a size from "
					"512 to 64M\n",
					optarg);
				return -1;
			}
			break;
		case 'q':
		case 'n':
			v = strtoull(optarg, &end, 10);
			if (*end || v < 1 ||
			    v > (ch == 'q' ? LG_MAX_DEPTH : LG_MAX_CONNS)) {
				fprintf(
				    stderr,
				    "nbd_loadgen: %s %s: from 1 to %u\n",
				    ch == 'q' ? "--iodepth" : "--connections",
				    optarg,
				    ch == 'q' ? LG_MAX_DEPTH : LG_MAX_CONNS);
				return -1;
			}
			if (ch == 'q')
				o->iodepth = (unsigned)v;
			else
				o->conns = (unsigned)v;
			break;
		case 't':
		case 'r':
			errno = 0;
			{
				double d = strtod(optarg, &end);

				if (errno || *end || !(d >= 0) || d > 1e6) {
					fprintf(stderr,
						"nbd_loadgen: %s %s: seconds\n",
						ch == 't' ? "--runtime"
							  : "--ramp",
						optarg);
					return -1;
				}
				if (ch == 't')
					o->runtime = d;
				else
					o->ramp = d;
			}
			break;
		case 's':
		case 'o':
			if (parse_size(optarg,
				       ch == 's' ? &o->size : &o->offset) < 0) {
				fprintf(stderr, "nbd_loadgen: bad size %s\n",
					optarg);
				return -1;
			}
			break;
		case '1':
			o->once = true;
			break;
		case 'v':
			o->verify = true;
			break;
		case 'N':
			o->name = optarg;
			break;
		case 'j':
			o->json = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -1;
		}
	}
	if (optind < argc || !o->uri) {
		fprintf(stderr, "nbd_loadgen: %s\n",
			o->uri ? "unexpected argument" : "--uri is required");
		usage(stderr);
		return -1;
	}
	if (o->once && (o->rw == LG_RANDREAD || o->rw == LG_RANDWRITE)) {
		fprintf(stderr, "nbd_loadgen: --once is for read and write\n");
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct lg *lg = calloc(1, sizeof(*lg));
	uint64_t export_size = 0, sz;
	unsigned nslots;
	int rc = 1, tls = 0;

	if (!lg) {
		perror("nbd_loadgen");
		return 1;
	}
	if (parse_args(argc, argv, &lg->o) < 0) {
		free(lg);
		return 2;
	}
	lg->rng = (uint64_t)now_ns() | 1;
	for (unsigned i = 0; i < lg->o.conns; i++) {
		lg->conn[i].h = lg_connect(&lg->o, &sz);
		if (!lg->conn[i].h)
			goto out;
		export_size = sz;
	}
	tls = nbd_get_tls_negotiated(lg->conn[0].h);
	if (lg->o.offset > export_size ||
	    lg->o.size > export_size - lg->o.offset) {
		fprintf(stderr,
			"nbd_loadgen: the region goes beyond the export's "
			"%" PRIu64 " bytes\n",
			export_size);
		goto out;
	}
	if (!lg->o.size)
		lg->o.size = export_size - lg->o.offset;
	lg->o.size -= lg->o.size % lg->o.bs;
	if (lg->o.size == 0) {
		fprintf(stderr, "nbd_loadgen: the region holds no block of "
				"--bs bytes\n");
		goto out;
	}
	if (lg->o.once) {
		lg->pass_left = lg->o.size;
		lg->o.runtime = 1e6;
	}
	nslots = lg->o.conns * lg->o.iodepth;
	lg->slots = calloc(nslots, sizeof(*lg->slots));
	if (!lg->slots) {
		perror("nbd_loadgen");
		goto out;
	}
	for (unsigned i = 0; i < nslots; i++) {
		struct lg_slot *s = &lg->slots[i];

		s->lg = lg;
		s->conn = &lg->conn[i / lg->o.iodepth];
		if (posix_memalign((void **)&s->buf, 4096, lg->o.bs) != 0) {
			perror("nbd_loadgen");
			goto out;
		}
		/* Random bytes between the stamps: nothing compresses. */
		for (uint64_t k = 0; k < lg->o.bs; k += 8) {
			uint64_t x = rnd(lg);

			memcpy(s->buf + k, &x, 8);
		}
	}
	if (run(lg) < 0)
		goto out;
	report(lg, tls);
	rc = lg->errors || lg->bad_data ? 1 : 0;
	for (unsigned i = 0; i < lg->o.conns; i++)
		if (nbd_shutdown(lg->conn[i].h, 0) < 0) {
			fprintf(stderr, "nbd_loadgen: shutdown: %s\n",
				nbd_get_error());
			rc = 1;
		}
out:
	for (unsigned i = 0; i < lg->o.conns; i++)
		if (lg->conn[i].h)
			nbd_close(lg->conn[i].h);
	if (lg->slots)
		for (unsigned i = 0; i < lg->o.conns * lg->o.iodepth; i++)
			free(lg->slots[i].buf);
	free(lg->slots);
	free(lg);
	return rc;
}
