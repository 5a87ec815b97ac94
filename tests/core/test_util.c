/* Checksums and error messages. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>
#include <xxhash.h>

#include "format.h"
#include "h2core.h"
#include "util.h"

Test(util, crc32c_matches_published_check_value)
{
	/* The CRC-32C check value from the Castagnoli catalogue. */
	cr_assert_eq(h2_crc32c(0, "123456789", 9), 0xe3069283u);
	cr_assert_eq(h2_crc32c(0, "", 0), 0u);
}

Test(util, crc32c_is_incremental)
{
	uint32_t whole = h2_crc32c(0, "hello, world", 12);
	uint32_t part = h2_crc32c(h2_crc32c(0, "hello", 5), ", world", 7);

	cr_assert_eq(whole, part);
}

/* CRC-32C one bit at a time: the definition, to test the tables by. */
static uint32_t t_crc_bitwise(uint32_t crc, const uint8_t *p, size_t len)
{
	crc = ~crc;
	while (len--) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = (crc & 1) ? (crc >> 1) ^ 0x82f63b78u : crc >> 1;
	}
	return ~crc;
}

Test(util, crc32c_agrees_with_the_bitwise_definition)
{
	static uint8_t buf[4096 + 16];
	uint64_t x = 0x9e3779b97f4a7c15ull;

	for (size_t i = 0; i < sizeof(buf); i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (uint8_t)x;
	}
	/* Every alignment and length around the 8-byte steps, and
	 * a split anywhere must give the same as the whole. */
	for (size_t off = 0; off < 9; off++)
		for (size_t len = 0; len < 80; len++) {
			uint32_t want = t_crc_bitwise(7, buf + off, len);

			cr_assert_eq(h2_crc32c(7, buf + off, len), want,
				     "off %zu len %zu", off, len);
			cr_assert_eq(h2_crc32c_sw(7, buf + off, len), want,
				     "tables: off %zu len %zu", off, len);
		}
	for (size_t cut = 0; cut <= 4096; cut += 509) {
		uint32_t want = t_crc_bitwise(0, buf + 3, 4096);

		cr_assert_eq(h2_crc32c(h2_crc32c(0, buf + 3, cut),
				       buf + 3 + cut, 4096 - cut),
			     want);
		cr_assert_eq(h2_crc32c_sw(h2_crc32c_sw(0, buf + 3, cut),
					  buf + 3 + cut, 4096 - cut),
			     want);
	}
}

Test(util, check64_changes_with_one_bit)
{
	uint8_t a[H2_BLOCK_SIZE] = {0}, b[H2_BLOCK_SIZE] = {0};

	b[4095] = 1;
	cr_assert_neq(h2_check64(a, sizeof(a)), h2_check64(b, sizeof(b)));
}

/* The on-disk check code is XXH3-64 (seed 0) whichever implementation
 * the CPU gets: libxxhash's, or the AVX2 build. */
Test(util, check64_is_xxh3_on_every_path)
{
	static uint8_t buf[3 * H2_BLOCK_SIZE + 7];
	static const size_t lens[] = {0,   1,    3,    16,	 17,   128, 129,
				      240, 241,  1023, 1024, 4095, 4096,
				      4097, 8192, sizeof(buf)};

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 167 + (i >> 8));
	/* XXH3_64bits("", 0), from the reference implementation. */
	cr_assert_eq(h2_check64("", 0), 0x2D06800538D394C2ull);
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++)
		cr_assert_eq(h2_check64(buf, lens[i]), XXH3_64bits(buf, lens[i]),
			     "length %zu", lens[i]);
#ifdef __x86_64__
	if (__builtin_cpu_supports("avx2"))
		for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++)
			cr_assert_eq(h2_check64_avx2(buf, lens[i]),
				     XXH3_64bits(buf, lens[i]), "length %zu",
				     lens[i]);
#endif
}

Test(util, errmsg_is_kept_per_call)
{
	int r = h2_err(-ENOENT, "volume %s not found", "vm1");

	cr_assert_eq(r, -ENOENT);
	cr_assert_str_eq(h2_core_errmsg(), "volume vm1 not found");
}

Test(format, header_copies_follow_device_size)
{
	cr_assert_eq(h2_hdr_copies(4ull << 20), 1);
	cr_assert_eq(h2_hdr_copies(32ull << 20), 2);
	cr_assert_eq(h2_hdr_copies((48ull << 20) + H2_HDR_REGION), 4);
	cr_assert_eq(h2_hdr_copies(64ull << 20), 4);
	cr_assert_eq(h2_hdr_copies(1ull << 40), 4);
}

Test(format, header_length_covers_selector_bits)
{
	cr_assert_eq(h2_hdr_len(1), 4096);
	cr_assert_eq(h2_hdr_len((4096 - H2_HDR_FIXED) * 8), 4096);
	cr_assert_eq(h2_hdr_len((4096 - H2_HDR_FIXED) * 8 + 1), 8192);
	cr_assert_leq(h2_hdr_len(H2_HDR_MAX_FM_PAGES), H2_HDR_REGION);
}
