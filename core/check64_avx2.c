/*
 * check64_avx2.c - XXH3-64 built for AVX2, chosen at run time by
 * h2_check64 (util.c) on CPUs that have it.
 *
 * Debian's libxxhash is built for the x86-64 baseline (SSE2): about
 * 9 GB/s for 4 KiB blocks here, against 22 GB/s with AVX2.  Every block
 * written is checksummed by the flusher and every block read is
 * verified, so at 1 MiB requests this was 8-12% of h2d's CPU.  The same
 * header, inlined and compiled with -mavx2 (this file only); XXH3's
 * result does not depend on the vector unit used.
 */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "util.h"

uint64_t h2_check64_avx2(const void *buf, size_t len)
{
	return XXH3_64bits(buf, len);
}
