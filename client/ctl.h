/*
 * ctl.h - declarations shared by the h2ctl modules.
 *
 * h2ctl.c parses the global flags, resolves the server address and TLS
 * files, and dispatches to one subcommand of the table it owns.  Each
 * subcommand group lives in its own file (ctl_volume.c: volume, sync;
 * ctl_stat.c: stat; ctl_snapshot.c: snapshot, clone, rollback; ctl_io.c:
 * read, write, import, export; ctl_bench.c: bench) and every command has
 * the same shape: parse and check its arguments first, so that a usage
 * error exits 2 without touching the network, then ctl_connect(), then
 * do the work.  ctl_out.c holds the output helpers (tables, JSON,
 * progress bar, error messages).
 *
 * Exit codes: CTL_EXIT_OK, CTL_EXIT_FAIL (the operation failed; a message
 * on stderr names what failed), CTL_EXIT_USAGE (bad command line; a
 * message and the command's short usage on stderr).
 *
 * Single-threaded: h2ctl drives the client library from the main thread
 * only, so the library's asynchronous interface is always polled here.
 */
#ifndef H2CTL_CTL_H
#define H2CTL_CTL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "h2client.h"

enum ctl_exit {
	CTL_EXIT_OK = 0,
	CTL_EXIT_FAIL = 1,
	CTL_EXIT_USAGE = 2,
};

#define CTL_DEFAULT_SERVER "127.0.0.1:7410"
/* Where "h2d serve --dev" writes its certificates, relative to its cwd. */
#define CTL_DEV_TLS_DIR "./var/h2/tls"

struct ctl;

/* One row of the dispatch table (h2ctl.c). */
struct ctl_cmd {
	const char *group; /* "volume", or NULL for a top-level command */
	const char *name;  /* "create", "sync", ... */
	int (*run)(struct ctl *ctl, int argc, char **argv);
	const char *args;    /* synopsis of the arguments: "NAME SIZE" */
	const char *summary; /* one line for the command list */
	const char *help;    /* the rest of "h2ctl COMMAND --help", or NULL */
};

/* Everything a command needs to know about the invocation. */
struct ctl {
	const char *server;    /* HOST:PORT, never NULL */
	const char *ca_file;   /* NULL when not configured */
	const char *cert_file; /* NULL when not configured */
	const char *key_file;  /* NULL when not configured */
	const char *tls_dir;   /* folder that supplied files not given as
				  flags ("H2_TLS_DIR=..."), or NULL */
	bool flagged[3];       /* ca, cert, key came from --ca, --cert, --key */
	bool json;	       /* --json: machine-readable stdout */
	const struct ctl_cmd *cmd; /* the running command */
	h2_client *client;	   /* set by ctl_connect, freed by main */
};

/*
 * Connect to ctl->server with the configured TLS files (once; later
 * calls return at once).  Returns CTL_EXIT_OK, or CTL_EXIT_FAIL after a
 * message on stderr that names the address and suggests a fix.
 */
int ctl_connect(struct ctl *ctl);

/*
 * Split a command's arguments into positional ones, accepting between
 * min and max of them and no options ("--" ends options; "-" alone is
 * positional).  The positional arguments are compacted to the front of
 * argv and their count stored in *npos.  Returns CTL_EXIT_OK or the
 * result of ctl_usage().
 */
int ctl_positional(struct ctl *ctl, int argc, char **argv, int min, int max,
		   int *npos);

/*
 * Take every flag (an exact word, "--force") out of a command's
 * arguments before "--", shifting the rest down and lowering *argc;
 * returns whether there was one.
 */
bool ctl_take_flag(int *argc, char **argv, const char *flag);

/*
 * Parse a size or offset with suffixes K, M, G, T.  what names the
 * argument in the error message ("SIZE").  Returns CTL_EXIT_OK and *out,
 * or the result of ctl_usage().
 */
int ctl_parse_size(struct ctl *ctl, const char *what, const char *s,
		   uint64_t *out);

/* Subcommands (ctl_volume.c). */
int ctl_volume_create(struct ctl *ctl, int argc, char **argv);
int ctl_volume_list(struct ctl *ctl, int argc, char **argv);
int ctl_volume_info(struct ctl *ctl, int argc, char **argv);
int ctl_volume_delete(struct ctl *ctl, int argc, char **argv);
int ctl_volume_resize(struct ctl *ctl, int argc, char **argv);
int ctl_sync(struct ctl *ctl, int argc, char **argv);

/* Subcommands (ctl_stat.c). */
int ctl_stat(struct ctl *ctl, int argc, char **argv);

/* Subcommands (ctl_snapshot.c). */
int ctl_snapshot_create(struct ctl *ctl, int argc, char **argv);
int ctl_snapshot_list(struct ctl *ctl, int argc, char **argv);
int ctl_snapshot_delete(struct ctl *ctl, int argc, char **argv);
int ctl_clone(struct ctl *ctl, int argc, char **argv);
int ctl_rollback(struct ctl *ctl, int argc, char **argv);

/* Subcommands (ctl_io.c). */
int ctl_write(struct ctl *ctl, int argc, char **argv);
int ctl_read(struct ctl *ctl, int argc, char **argv);
int ctl_import(struct ctl *ctl, int argc, char **argv);
int ctl_export(struct ctl *ctl, int argc, char **argv);

/* Subcommands (ctl_bench.c). */
int ctl_bench(struct ctl *ctl, int argc, char **argv);

/*
 * Messages (ctl_out.c).  All go to stderr prefixed "h2ctl: " and return
 * the exit code to use, so that a command can "return ctl_fail(...)".
 */

/* Print the running command's short usage ("usage: h2ctl ...") to f. */
void ctl_cmd_usage(const struct ctl *ctl, FILE *f);
/* A usage error: message, short usage; returns CTL_EXIT_USAGE. */
int ctl_usage(const struct ctl *ctl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* An operation failed: message; returns CTL_EXIT_FAIL. */
int ctl_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/*
 * A library call failed with err: "h2ctl: <message>: <reason>" plus a
 * hint for the common errors; returns CTL_EXIT_FAIL.  Call it right after
 * the failed call: the reason is the library's sentence for this thread's
 * last error when there is one.
 */
int ctl_fail_h2(const struct ctl *ctl, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The library's sentence for the last error, or h2_strerror(err). */
const char *ctl_h2_reason(int err);
/*
 * What to try next after err, as " (sentence)" in buf or a constant;
 * "" when there is nothing useful to say.
 */
const char *ctl_h2_hint(const struct ctl *ctl, int err, char *buf, size_t n);

/* Output helpers (ctl_out.c). */

/* Human size ("1.5 GiB") into buf. */
const char *ctl_size(uint64_t bytes, char *buf, size_t n);
/* Local time of a nanosecond timestamp ("2024-11-24 20:55:02"); "-" if 0. */
const char *ctl_time(uint64_t ns, char *buf, size_t n);
/* UTC ISO 8601 of a nanosecond timestamp ("2024-11-24T20:55:02Z"). */
const char *ctl_time_iso(uint64_t ns, char *buf, size_t n);
/* Seconds between two CLOCK_MONOTONIC readings. */
double ctl_elapsed(const struct timespec *from, const struct timespec *to);
/* CLOCK_MONOTONIC now. */
struct timespec ctl_now(void);

/*
 * Add an unsigned 64-bit number to a JSON object, exactly: cJSON keeps
 * numbers as doubles, which lose precision above 2^53 (timestamps in ns
 * already are above it), so the digits are inserted as raw JSON.
 * Returns false on allocation failure.
 */
bool ctl_json_u64(cJSON *obj, const char *key, uint64_t v);
/*
 * Print a JSON document on stdout (one line per value, indented) and
 * free it.  Returns CTL_EXIT_OK, or CTL_EXIT_FAIL if root is NULL (an
 * allocation failed while building it) or stdout cannot be written.
 */
int ctl_json_print(cJSON *root);
/* Flush stdout; CTL_EXIT_FAIL with a message if it fails. */
int ctl_stdout_done(void);

enum ctl_align {
	CTL_LEFT = 0,
	CTL_RIGHT = 1,
};

/*
 * An aligned text table: columns as wide as their widest cell, separated
 * by two spaces.  Cells are copied.  A table with headers == NULL has no
 * header line (a key/value list).
 */
struct ctl_table;

/* New table of ncols columns; NULL on allocation failure. */
struct ctl_table *ctl_table_new(unsigned ncols, const char *const *headers,
				const enum ctl_align *align);
/* Append a row of ncols cells (NULL prints as "-"); false on ENOMEM. */
bool ctl_table_add(struct ctl_table *t, const char *const *cells);
/* Append a row from ncols string arguments. */
bool ctl_table_addv(struct ctl_table *t, ...);
/* Print the table to f. */
void ctl_table_print(const struct ctl_table *t, FILE *f);
/* Free a table; NULL is a no-op. */
void ctl_table_free(struct ctl_table *t);

/*
 * A progress bar on stderr, drawn only when stderr is a terminal and
 * redrawn at most ten times a second:
 *   import vm1  [#######.......]  48%  490 MiB / 1 GiB  210 MiB/s  ETA 3s
 */
struct ctl_progress {
	bool on;
	const char *label;
	uint64_t total;
	uint64_t done;
	struct timespec start;
	struct timespec last;
	int drawn; /* width of the last line drawn, to erase it */
};

/* Start a progress bar for total bytes (on only if stderr is a tty). */
void ctl_progress_start(struct ctl_progress *p, const char *label,
			uint64_t total);
/* Record that done bytes (of total) are finished; redraws if due. */
void ctl_progress_update(struct ctl_progress *p, uint64_t done);
/* Draw the final state (if ok) or erase the bar, and end the line. */
void ctl_progress_end(struct ctl_progress *p, bool ok);

#endif /* H2CTL_CTL_H */
