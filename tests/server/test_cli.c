/* h2d's command-line helpers: the size parser and formatter. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <stdint.h>

#include "cli.h"

struct size_case {
	char in[32]; /* inline: workers are separate processes */
	int ret;
	uint64_t want;
};

ParameterizedTestParameters(cli, parse_size_table)
{
	static struct size_case cases[] = {
	    {"0", 0, 0},
	    {"4096", 0, 4096},
	    {"1K", 0, 1024},
	    {"1k", 0, 1024},
	    {"64M", 0, 64ull << 20},
	    {"64MiB", 0, 64ull << 20},
	    {"64MB", 0, 64ull << 20},
	    {"2G", 0, 2ull << 30},
	    {"3t", 0, 3ull << 40},
	    {"1P", 0, 1ull << 50},
	    {"16383P", 0, 16383ull << 50},
	    {"18446744073709551615", 0, UINT64_MAX},
	    {"18446744073709551616", -ERANGE, 0},
	    {"16384P", -ERANGE, 0},
	    {"17179869184G", -ERANGE, 0},
	    {"", -EINVAL, 0},
	    {"M", -EINVAL, 0},
	    {"-1", -EINVAL, 0},
	    {"+1", -EINVAL, 0},
	    {" 1", -EINVAL, 0},
	    {"1 ", -EINVAL, 0},
	    {"1.5G", -EINVAL, 0},
	    {"12Q", -EINVAL, 0},
	    {"1Mi", -EINVAL, 0},
	    {"1MiBs", -EINVAL, 0},
	    {"1GG", -EINVAL, 0},
	    {"0x10", -EINVAL, 0},
	};

	return cr_make_param_array(struct size_case, cases,
				   sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct size_case *c, cli, parse_size_table)
{
	uint64_t v = 12345;

	cr_assert_eq(h2d_parse_size(c->in, &v), c->ret, "\"%s\"", c->in);
	if (c->ret == 0)
		cr_assert_eq(v, c->want, "\"%s\"", c->in);
	else
		cr_assert_eq(v, 12345, "\"%s\": out written on error", c->in);
}

Test(cli, parse_size_rejects_null)
{
	uint64_t v;

	cr_assert_eq(h2d_parse_size(NULL, &v), -EINVAL);
	cr_assert_eq(h2d_parse_size("1", NULL), -EINVAL);
}

Test(cli, format_size_picks_the_largest_whole_unit)
{
	char b[32];

	cr_assert_str_eq(h2d_format_size(0, b, sizeof(b)), "0 B");
	cr_assert_str_eq(h2d_format_size(512, b, sizeof(b)), "512 B");
	cr_assert_str_eq(h2d_format_size(64ull << 20, b, sizeof(b)), "64 MiB");
	cr_assert_str_eq(h2d_format_size(3ull << 29, b, sizeof(b)), "1.5 GiB");
	cr_assert_str_eq(h2d_format_size(UINT64_MAX, b, sizeof(b)), "16.0 EiB");
}
