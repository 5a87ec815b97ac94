/*
 * util.h - small helpers shared by the engine: checksums, error messages,
 * little-endian access, time.
 */
#ifndef H2_UTIL_H
#define H2_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* CRC32C (Castagnoli), as used for volume headers. */
uint32_t h2_crc32c(uint32_t crc, const void *buf, size_t len);
/* The same without the processor's CRC instruction (for tests). */
uint32_t h2_crc32c_sw(uint32_t crc, const void *buf, size_t len);

/* XXH3-64 of a block, the check code in blockrefs. */
uint64_t h2_check64(const void *buf, size_t len);
/* The same, built for AVX2 (check64_avx2.c; only on CPUs with AVX2). */
uint64_t h2_check64_avx2(const void *buf, size_t len);

/*
 * Record a human message for the calling thread's last error and return
 * err unchanged, so call sites read: return h2_err(-EIO, "...", ...).
 */
int h2_err(int err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/*
 * Allocation for the engine's phases that cannot fail (the flusher's
 * work; an install phase only if its reserve fell short, which its
 * bounds rule out): these run after the point of no return, where
 * undoing half a change is not possible, so they wait for memory
 * (retrying, with a message on stderr now and then) instead of failing.
 * Never abort.  Everything a request allocates is allocated earlier,
 * fallibly, and fails only that request (io.c, chain.c "Allocation").
 */
void *h2_xmalloc(size_t n);
/* The wait between two attempts (from 1) of such an allocation of n
 * bytes, for callers whose allocation is deeper down. */
void h2_mem_wait(unsigned attempt, size_t n);
void *h2_xcalloc(size_t n, size_t size);
void *h2_xrealloc(void *p, size_t n);

/* Monotonic and wall-clock time in nanoseconds. */
uint64_t h2_now_ns(void);
uint64_t h2_wall_ns(void);

#endif /* H2_UTIL_H */
