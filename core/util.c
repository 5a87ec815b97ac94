/*
 * util.c - checksums, per-thread error messages and time.
 *
 * The error message buffer is thread-local so that concurrent callers of
 * the engine each see the sentence for their own failure.
 */
#include "util.h"

#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xxhash.h>

#include "h2core.h"

#define OOM_SPINS 32 /* immediate retries of h2_xmalloc and friends */

static _Thread_local char errmsg[512];

/* Table for the reflected Castagnoli polynomial, built on first use. */
static uint32_t crc_table[256];
static int crc_table_ready;

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
		crc_table[i] = c;
	}
	__atomic_store_n(&crc_table_ready, 1, __ATOMIC_RELEASE);
}

uint32_t h2_crc32c(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	/* Racing initialisers compute identical tables, so this is benign. */
	if (!__atomic_load_n(&crc_table_ready, __ATOMIC_ACQUIRE))
		crc_init();
	crc = ~crc;
	while (len--)
		crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

uint64_t h2_check64(const void *buf, size_t len)
{
#ifdef H2_HAVE_CHECK64_AVX2
	if (__builtin_cpu_supports("avx2"))
		return h2_check64_avx2(buf, len);
#endif
	return XXH3_64bits(buf, len);
}

int h2_err(int err, const char *fmt, ...)
{
	char tmp[sizeof(errmsg)];
	va_list ap;

	/* Format aside first: callers may wrap the previous message. */
	va_start(ap, fmt);
	vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	memcpy(errmsg, tmp, sizeof(errmsg));
	return err;
}

const char *h2_core_errmsg(void)
{
	return errmsg[0] ? errmsg : "no error";
}

/*
 * Attempt `attempt` (from 1) of an allocation that must succeed failed:
 * retry at once a few times (another thread may just have freed), then
 * sleep, 1 ms doubling to 100 ms, saying so now and then.
 */
void h2_mem_wait(unsigned attempt, size_t n)
{
	struct timespec ts = {0};
	unsigned k;

	if (attempt <= OOM_SPINS) {
		sched_yield();
		return;
	}
	k = attempt - OOM_SPINS;
	if (k == 1 || k % 600 == 0)
		fprintf(stderr, "h2: out of memory allocating %zu bytes where "
				"failing is not an option (a flush); waiting "
				"for memory\n",
			n);
	ts.tv_nsec = (k < 8 ? 1L << (k - 1) : 100L) * 1000000L;
	nanosleep(&ts, NULL);
}

void *h2_xmalloc(size_t n)
{
	void *p;

	for (unsigned a = 1; !(p = malloc(n ? n : 1)); a++)
		h2_mem_wait(a, n);
	return p;
}

void *h2_xcalloc(size_t n, size_t size)
{
	void *p;

	for (unsigned a = 1; !(p = calloc(n ? n : 1, size ? size : 1)); a++)
		h2_mem_wait(a, n * size);
	return p;
}

void *h2_xrealloc(void *old, size_t n)
{
	void *p;

	for (unsigned a = 1; !(p = realloc(old, n ? n : 1)); a++)
		h2_mem_wait(a, n);
	return p;
}

uint64_t h2_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t h2_wall_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
