/* Checksums and error messages. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

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

Test(util, check64_changes_with_one_bit)
{
	uint8_t a[H2_BLOCK_SIZE] = {0}, b[H2_BLOCK_SIZE] = {0};

	b[4095] = 1;
	cr_assert_neq(h2_check64(a, sizeof(a)), h2_check64(b, sizeof(b)));
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
