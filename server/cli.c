/*
 * cli.c - command-line helpers for h2d: sizes with binary suffixes.
 *
 * The size parser accepts exactly what cli.h documents and nothing more:
 * it never skips spaces or accepts a sign the way strtoull does, so
 * "-1" is an error rather than 18 EiB.
 */
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* Shift for suffix ch (K=10 ... P=50), or -1 if ch is not a suffix. */
static int suffix_shift(char ch)
{
	switch (ch) {
	case 'k':
	case 'K':
		return 10;
	case 'm':
	case 'M':
		return 20;
	case 'g':
	case 'G':
		return 30;
	case 't':
	case 'T':
		return 40;
	case 'p':
	case 'P':
		return 50;
	default:
		return -1;
	}
}

int h2d_parse_size(const char *s, uint64_t *out)
{
	uint64_t v = 0;
	const char *p = s;
	int shift = 0;

	if (!s || !out)
		return -EINVAL;
	if (*p < '0' || *p > '9')
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		unsigned d = (unsigned)(*p - '0');

		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	if (*p) {
		shift = suffix_shift(*p);
		if (shift < 0)
			return -EINVAL;
		p++;
		if (strcmp(p, "") != 0 && strcmp(p, "B") != 0 &&
		    strcmp(p, "iB") != 0)
			return -EINVAL;
	}
	if (shift && v > (UINT64_MAX >> shift))
		return -ERANGE;
	*out = v << shift;
	return 0;
}

char *h2d_format_size(uint64_t bytes, char *buf, size_t n)
{
	static const char *const units[] = {"B",   "KiB", "MiB", "GiB",
					    "TiB", "PiB", "EiB"};
	unsigned u = 0;

	while (u + 1 < sizeof(units) / sizeof(units[0]) &&
	       bytes >= (1ull << (10 * (u + 1))))
		u++;
	if (u == 0 || bytes % (1ull << (10 * u)) == 0)
		snprintf(buf, n, "%" PRIu64 " %s", bytes >> (10 * u), units[u]);
	else
		snprintf(buf, n, "%.1f %s",
			 (double)bytes / (double)(1ull << (10 * u)), units[u]);
	return buf;
}
