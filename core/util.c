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

/*
 * Tables for the reflected Castagnoli polynomial, built on first use:
 * crc_table[0] is the byte-at-a-time table; crc_table[k][b] is the CRC of
 * byte b followed by k zero bytes, so that eight bytes are folded at once
 * ("slicing by 8").  Headers are checked over up to 64 KiB on every open;
 * x86 processors with SSE4.2 have an instruction for it, used instead.
 */
static uint32_t crc_table[8][256];
static int crc_table_ready;

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
		crc_table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int k = 1; k < 8; k++)
			crc_table[k][i] =
			    (crc_table[k - 1][i] >> 8) ^
			    crc_table[0][crc_table[k - 1][i] & 0xff];
	__atomic_store_n(&crc_table_ready, 1, __ATOMIC_RELEASE);
}

/* Four bytes at p, little-endian, whatever the host. */
static uint32_t crc_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

uint32_t h2_crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	/* Racing initialisers compute identical tables, so this is benign. */
	if (!__atomic_load_n(&crc_table_ready, __ATOMIC_ACQUIRE))
		crc_init();
	crc = ~crc;
	for (; len >= 8; len -= 8, p += 8) {
		uint32_t lo = crc ^ crc_le32(p), hi = crc_le32(p + 4);

		crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
		      crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^
		      crc_table[3][hi & 0xff] ^ crc_table[2][(hi >> 8) & 0xff] ^
		      crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
	}
	while (len--)
		crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

#if defined(__x86_64__) && defined(__GNUC__)
/* SSE4.2's crc32 instruction computes exactly CRC-32C. */
__attribute__((target("sse4.2"))) static uint32_t
crc_sse42(uint32_t crc, const uint8_t *p, size_t len)
{
	uint64_t c = ~crc;

	for (; len >= 8; len -= 8, p += 8) {
		uint64_t x;

		memcpy(&x, p, sizeof(x)); /* x86 is little-endian */
		c = __builtin_ia32_crc32di(c, x);
	}
	crc = (uint32_t)c;
	while (len--)
		crc = __builtin_ia32_crc32qi(crc, *p++);
	return ~crc;
}

uint32_t h2_crc32c(uint32_t crc, const void *buf, size_t len)
{
	static int have; /* 0 unknown, 1 yes, -1 no; racing is benign */
	int h = __atomic_load_n(&have, __ATOMIC_RELAXED);

	if (!h) {
		__builtin_cpu_init();
		h = __builtin_cpu_supports("sse4.2") ? 1 : -1;
		__atomic_store_n(&have, h, __ATOMIC_RELAXED);
	}
	return h > 0 ? crc_sse42(crc, buf, len) : h2_crc32c_sw(crc, buf, len);
}
#else
uint32_t h2_crc32c(uint32_t crc, const void *buf, size_t len)
{
	return h2_crc32c_sw(crc, buf, len);
}
#endif

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
