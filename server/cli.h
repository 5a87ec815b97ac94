/*
 * cli.h - helpers shared by the h2d subcommands: size parsing and
 * formatting, error exit codes.
 *
 * Exit codes of every subcommand: H2D_EXIT_OK, H2D_EXIT_FAIL (the command
 * ran and failed, or found problems), H2D_EXIT_USAGE (bad command line;
 * h2d check also uses 2 for "store cannot be opened/checked").
 */
#ifndef H2D_CLI_H
#define H2D_CLI_H

#include <stddef.h>
#include <stdint.h>

enum h2d_exit {
	H2D_EXIT_OK = 0,
	H2D_EXIT_FAIL = 1,
	H2D_EXIT_USAGE = 2,
};

/*
 * Parse a byte count: decimal digits, optionally followed by one binary
 * suffix K, M, G, T, P (or k, m, g, t, p; each may be followed by "iB"
 * or "B"), e.g. "4096", "64M", "1GiB", "2t".  Returns 0 and *out, or
 * -EINVAL for anything else (empty, sign, spaces, junk, bad suffix) and
 * -ERANGE when the value does not fit in 64 bits.  *out is written only
 * on success.
 */
int h2d_parse_size(const char *s, uint64_t *out);

/*
 * Format bytes for humans: "64 MiB", "1.5 GiB", "512 B".  Writes at most
 * n bytes (NUL included) to buf and returns buf.
 */
char *h2d_format_size(uint64_t bytes, char *buf, size_t n);

#endif /* H2D_CLI_H */
