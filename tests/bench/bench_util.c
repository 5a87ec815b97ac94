/*
 * bench_util.c - helpers every engine benchmark uses: a clock, a fast
 * random generator, size arguments, a latency histogram, medians, and
 * files written in full.
 *
 * Nothing here knows about one benchmark's phases or reports; see bench.h
 * for the contract of each function.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

uint64_t bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* xorshift64*: a generator cheap enough not to show in the figures. */
uint64_t bench_rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

void bench_fill_random(uint8_t *buf, size_t len, uint64_t seed)
{
	uint64_t s = seed | 1;

	for (size_t i = 0; i + 8 <= len; i += 8) {
		uint64_t x = bench_rnd(&s);

		memcpy(buf + i, &x, 8);
	}
}

int bench_parse_size(const char *s, uint64_t *out)
{
	static const char units[] = "kmgt";
	const char *u;
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	errno = 0;
	if (*s == '-')
		return -EINVAL;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	if (*end && (u = strchr(units, *end | 0x20)) != NULL) {
		shift = 10 * (unsigned)(u - units + 1);
		end++;
		if (*end == 'i')
			end++;
		if (*end == 'B' || *end == 'b')
			end++;
	}
	if (*end || v > (UINT64_MAX >> shift))
		return -EINVAL;
	*out = (uint64_t)v << shift;
	return 0;
}

static const char *fs_name(long type)
{
	switch ((unsigned long)type) {
	case 0xEF53:
		return "ext2/3/4";
	case 0x58465342:
		return "xfs";
	case 0x9123683E:
		return "btrfs";
	case 0x01021994:
		return "tmpfs";
	case 0x794c7630:
		return "overlayfs";
	case 0x2fc12fc1:
		return "zfs";
	case 0xF2F52010:
		return "f2fs";
	default:
		return NULL;
	}
}

void bench_fs_describe(const char *dir, char *buf, size_t len)
{
	struct statfs sf;

	if (statfs(dir, &sf) < 0)
		snprintf(buf, len, "unknown");
	else if (fs_name(sf.f_type))
		snprintf(buf, len, "%s", fs_name(sf.f_type));
	else
		snprintf(buf, len, "fs type %#lx", (unsigned long)sf.f_type);
}

/* ---------------------------------------------------------------------- */
/* Latency histogram: log-linear, BENCH_HIST_SUB sub-buckets per power of  */
/* two, values below 2 x BENCH_HIST_SUB exact.                            */

static unsigned hist_idx(uint64_t v)
{
	unsigned e;

	if (v < 2 * BENCH_HIST_SUB)
		return (unsigned)v;
	e = 63u - (unsigned)__builtin_clzll(v);
	return 2 * BENCH_HIST_SUB + (e - 7) * BENCH_HIST_SUB +
	       (unsigned)((v >> (e - 6)) - BENCH_HIST_SUB);
}

/* Middle of bucket i. */
static uint64_t hist_val(unsigned i)
{
	unsigned e, m;

	if (i < 2 * BENCH_HIST_SUB)
		return i;
	e = 7 + (i - 2 * BENCH_HIST_SUB) / BENCH_HIST_SUB;
	m = BENCH_HIST_SUB + (i - 2 * BENCH_HIST_SUB) % BENCH_HIST_SUB;
	return ((uint64_t)m << (e - 6)) + ((1ull << (e - 6)) >> 1);
}

void bench_hist_add(struct bench_hist *h, uint64_t v)
{
	h->c[hist_idx(v)]++;
	h->n++;
	if (v > h->max)
		h->max = v;
}

void bench_hist_merge(struct bench_hist *dst, const struct bench_hist *src)
{
	for (unsigned i = 0; i < BENCH_HIST_N; i++)
		dst->c[i] += src->c[i];
	dst->n += src->n;
	if (src->max > dst->max)
		dst->max = src->max;
}

uint64_t bench_hist_pct(const struct bench_hist *h, double p)
{
	uint64_t want, seen = 0;

	if (h->n == 0)
		return 0;
	want = (uint64_t)(p * (double)h->n);
	if ((double)want < p * (double)h->n)
		want++;
	if (want == 0)
		want = 1;
	for (unsigned i = 0; i < BENCH_HIST_N; i++) {
		seen += h->c[i];
		if (seen >= want)
			return hist_val(i) < h->max ? hist_val(i) : h->max;
	}
	return h->max;
}

/* ---------------------------------------------------------------------- */
/* Order statistics and files.                                            */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

double bench_median(const double *v, int n)
{
	return bench_quantile(v, n, 0.5);
}

double bench_quantile(const double *v, int n, double q)
{
	double *tmp, x, pos;
	int i;

	if (n <= 0)
		return -1;
	tmp = malloc(sizeof(double) * (size_t)n);
	if (!tmp)
		return -1;
	memcpy(tmp, v, sizeof(double) * (size_t)n);
	qsort(tmp, (size_t)n, sizeof(double), cmp_double);
	/* Linear interpolation between closest ranks: the median of an
	 * even count is the mean of the middle two. */
	pos = q * (double)(n - 1);
	i = (int)pos;
	x = i + 1 < n ? tmp[i] + (pos - (double)i) * (tmp[i + 1] - tmp[i])
		      : tmp[i];
	free(tmp);
	return x;
}

int bench_pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
	const char *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

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

int bench_create_zeroed(const char *path, uint64_t size,
			atomic_uint_fast64_t *progress)
{
	const size_t chunk = 1u << 20;
	uint8_t *z = calloc(1, chunk);
	int fd, r = 0;

	if (!z)
		return -ENOMEM;
	fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
	if (fd < 0) {
		r = -errno;
		goto out;
	}
	for (uint64_t off = 0; off < size && r == 0; off += chunk) {
		size_t n = size - off < chunk ? (size_t)(size - off) : chunk;

		r = bench_pwrite_all(fd, z, n, off);
		if (progress)
			atomic_fetch_add(progress, 1);
	}
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	close(fd);
	if (r < 0)
		unlink(path);
out:
	free(z);
	return r;
}

static void *dog_main(void *arg)
{
	struct bench_dog *d = arg;
	uint64_t last = UINT64_MAX;
	int still = 0;

	while (!atomic_load(&d->stop)) {
		uint64_t p = atomic_load(d->progress);

		sleep(1);
		if (p != last) {
			last = p;
			still = 0;
			continue;
		}
		if (++still < d->stall_s)
			continue;
		d->report(d->arg, d->stall_s);
		_exit(3);
	}
	return NULL;
}

int bench_dog_start(struct bench_dog *d)
{
	atomic_store(&d->stop, false);
	return pthread_create(&d->tid, NULL, dog_main, d) == 0 ? 0 : -EAGAIN;
}

void bench_dog_stop(struct bench_dog *d)
{
	atomic_store(&d->stop, true);
	pthread_join(d->tid, NULL);
}
