/*
 * ctl_out.c - h2ctl's output: error messages, aligned tables, JSON and
 * the progress bar.
 *
 * stdout carries only results (a table, a JSON document, or the data of
 * "h2ctl read"); every message and the progress bar go to stderr, so a
 * script can always parse stdout.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "cli.h"
#include "ctl.h"

/* Redraw the progress bar at most this often. */
#define PROGRESS_INTERVAL 0.1

void ctl_cmd_usage(const struct ctl *ctl, FILE *f)
{
	const struct ctl_cmd *c = ctl->cmd;

	if (!c) {
		fprintf(f, "usage: h2ctl [OPTIONS] COMMAND [ARGS]\n"
			   "Run \"h2ctl --help\" for the list of commands.\n");
		return;
	}
	fprintf(f, "usage: h2ctl %s%s%s%s%s\n", c->group ? c->group : "",
		c->group ? " " : "", c->name, c->args[0] ? " " : "", c->args);
	fprintf(f, "Run \"h2ctl %s%s%s --help\" for details.\n",
		c->group ? c->group : "", c->group ? " " : "", c->name);
}

int ctl_usage(const struct ctl *ctl, const char *fmt, ...)
{
	va_list ap;

	fputs("h2ctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	ctl_cmd_usage(ctl, stderr);
	return CTL_EXIT_USAGE;
}

int ctl_fail(const char *fmt, ...)
{
	va_list ap;

	fputs("h2ctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return CTL_EXIT_FAIL;
}

const char *ctl_h2_reason(int err)
{
	const char *s = h2_last_error();

	return s && *s ? s : h2_strerror(err);
}

/* Whether the running command is "[group ]name". */
static bool is_cmd(const struct ctl *ctl, const char *group, const char *name)
{
	const struct ctl_cmd *c = ctl ? ctl->cmd : NULL;

	return c && !strcmp(c->name, name) &&
	       (group ? c->group && !strcmp(c->group, group) : !c->group);
}

const char *ctl_h2_hint(const struct ctl *ctl, int err, char *buf, size_t n)
{
	switch (err) {
	case H2_ENOENT:
		/* A snapshot command can miss the snapshot, not the volume. */
		if (ctl && ctl->cmd && !is_cmd(ctl, "snapshot", "list") &&
		    ((ctl->cmd->group &&
		      !strcmp(ctl->cmd->group, "snapshot")) ||
		     is_cmd(ctl, NULL, "clone") ||
		     is_cmd(ctl, NULL, "rollback")))
			return " (see \"h2ctl snapshot list\")";
		return " (see \"h2ctl volume list\")";
	case H2_EDEPENDENTS:
		/* The server's sentence says what depends on what. */
		if (is_cmd(ctl, "volume", "delete"))
			return " (--recursive deletes them too)";
		return "";
	case H2_EBUSY:
		if (is_cmd(ctl, NULL, "rollback"))
			return " (--force rolls back anyway)";
		return "";
	case H2_EPERM:
		if (ctl && ctl->client && h2_client_identity(ctl->client)) {
			snprintf(buf, n,
				 " (the server knows you as \"%s\"; ask an "
				 "administrator for the right)",
				 h2_client_identity(ctl->client));
			return buf;
		}
		return "";
	case H2_ENOSPC:
		return " (see \"h2ctl stat\" for free space)";
	case H2_ETLS:
		return " (check --ca, --cert and --key, or H2_TLS_DIR)";
	case H2_ECLOSED:
	case H2_EUNAVAILABLE:
		return " (is h2d restarting? try again)";
	case H2_EUNSUPPORTED:
		return " (the server is older than this h2ctl)";
	default:
		return "";
	}
}

int ctl_fail_h2(const struct ctl *ctl, int err, const char *fmt, ...)
{
	/* Copy the reason before anything else can call the library. */
	const char *reason = ctl_h2_reason(err);
	char rbuf[512], hbuf[256];
	va_list ap;

	snprintf(rbuf, sizeof(rbuf), "%s", reason);
	fputs("h2ctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, ": %s%s\n", rbuf,
		ctl_h2_hint(ctl, err, hbuf, sizeof(hbuf)));
	return CTL_EXIT_FAIL;
}

const char *ctl_size(uint64_t bytes, char *buf, size_t n)
{
	return h2d_format_size(bytes, buf, n);
}

/* strftime of a nanosecond timestamp, local or UTC. */
static const char *fmt_time(uint64_t ns, bool utc, const char *fmt, char *buf,
			    size_t n)
{
	time_t t = (time_t)(ns / 1000000000u);
	struct tm tm;

	if (ns == 0 || !(utc ? gmtime_r(&t, &tm) : localtime_r(&t, &tm)) ||
	    strftime(buf, n, fmt, &tm) == 0)
		snprintf(buf, n, "-");
	return buf;
}

const char *ctl_time(uint64_t ns, char *buf, size_t n)
{
	return fmt_time(ns, false, "%Y-%m-%d %H:%M:%S", buf, n);
}

const char *ctl_time_iso(uint64_t ns, char *buf, size_t n)
{
	return fmt_time(ns, true, "%Y-%m-%dT%H:%M:%SZ", buf, n);
}

struct timespec ctl_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts;
}

double ctl_elapsed(const struct timespec *from, const struct timespec *to)
{
	return (double)(to->tv_sec - from->tv_sec) +
	       (double)(to->tv_nsec - from->tv_nsec) / 1e9;
}

bool ctl_json_u64(cJSON *obj, const char *key, uint64_t v)
{
	char digits[24];

	snprintf(digits, sizeof(digits), "%" PRIu64, v);
	return cJSON_AddRawToObject(obj, key, digits) != NULL;
}

int ctl_stdout_done(void)
{
	if (fflush(stdout) == 0 && !ferror(stdout))
		return CTL_EXIT_OK;
	/* A reader that went away (| head) is not worth a message. */
	if (errno == EPIPE)
		return CTL_EXIT_FAIL;
	return ctl_fail("cannot write to standard output: %s", strerror(errno));
}

int ctl_json_print(cJSON *root)
{
	char *s;

	if (!root)
		return ctl_fail("out of memory building the JSON output");
	s = cJSON_Print(root);
	cJSON_Delete(root);
	if (!s)
		return ctl_fail("out of memory printing the JSON output");
	fputs(s, stdout);
	fputc('\n', stdout);
	cJSON_free(s);
	return ctl_stdout_done();
}

struct ctl_table {
	unsigned ncols;
	bool header;
	enum ctl_align *align;
	size_t *width;
	char **cells; /* rows * ncols, row-major; the header is row 0 */
	size_t rows;
	size_t cap;
};

/* Display width of s: UTF-8 continuation bytes take no column. */
static size_t text_width(const char *s)
{
	size_t w = 0;

	for (; *s; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			w++;
	return w;
}

struct ctl_table *ctl_table_new(unsigned ncols, const char *const *headers,
				const enum ctl_align *align)
{
	struct ctl_table *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->ncols = ncols;
	t->align = calloc(ncols, sizeof(*t->align));
	t->width = calloc(ncols, sizeof(*t->width));
	if (!t->align || !t->width)
		goto fail;
	if (align)
		memcpy(t->align, align, ncols * sizeof(*t->align));
	if (headers) {
		if (!ctl_table_add(t, headers))
			goto fail;
		t->header = true;
	}
	return t;
fail:
	ctl_table_free(t);
	return NULL;
}

bool ctl_table_add(struct ctl_table *t, const char *const *cells)
{
	if (t->rows == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 16;
		char **c = reallocarray(t->cells, cap * t->ncols, sizeof(*c));

		if (!c)
			return false;
		t->cells = c;
		t->cap = cap;
	}
	for (unsigned i = 0; i < t->ncols; i++) {
		char *s = strdup(cells[i] ? cells[i] : "-");

		if (!s) {
			while (i--)
				free(t->cells[t->rows * t->ncols + i]);
			return false;
		}
		t->cells[t->rows * t->ncols + i] = s;
		if (text_width(s) > t->width[i])
			t->width[i] = text_width(s);
	}
	t->rows++;
	return true;
}

bool ctl_table_addv(struct ctl_table *t, ...)
{
	const char *cells[16];
	unsigned n = t->ncols < 16 ? t->ncols : 16;
	va_list ap;

	va_start(ap, t);
	for (unsigned i = 0; i < n; i++)
		cells[i] = va_arg(ap, const char *);
	va_end(ap);
	return n == t->ncols && ctl_table_add(t, cells);
}

void ctl_table_print(const struct ctl_table *t, FILE *f)
{
	for (size_t r = 0; r < t->rows; r++) {
		for (unsigned i = 0; i < t->ncols; i++) {
			const char *s = t->cells[r * t->ncols + i];
			int pad = (int)(t->width[i] - text_width(s));
			bool last = i + 1 == t->ncols;

			if (i)
				fputs("  ", f);
			/* Headers line up with their column's alignment. */
			if (t->align[i] == CTL_RIGHT)
				fprintf(f, "%*s%s", pad, "", s);
			else if (last)
				fputs(s, f);
			else
				fprintf(f, "%s%*s", s, pad, "");
		}
		fputc('\n', f);
	}
}

void ctl_table_free(struct ctl_table *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->rows * t->ncols; i++)
		free(t->cells[i]);
	free(t->cells);
	free(t->align);
	free(t->width);
	free(t);
}

/* Columns of the terminal on stderr (80 if unknown). */
static int term_cols(void)
{
	struct winsize ws;

	if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
		return ws.ws_col;
	return 80;
}

/* Draw the bar for p->done now. */
static void progress_draw(struct ctl_progress *p, bool final)
{
	struct timespec now = ctl_now();
	double secs = ctl_elapsed(&p->start, &now);
	double frac = p->total ? (double)p->done / (double)p->total : 1.0;
	double rate = secs > 0 ? (double)p->done / secs : 0;
	char done[32], total[32], speed[32], eta[32], tail[160], line[512];
	int cols = term_cols(), barw, len, fill;

	if (frac > 1)
		frac = 1;
	ctl_size(p->done, done, sizeof(done));
	ctl_size(p->total, total, sizeof(total));
	ctl_size((uint64_t)rate, speed, sizeof(speed));
	if (final)
		snprintf(eta, sizeof(eta), "%.1fs", secs);
	else if (rate > 0 && p->total > p->done)
		snprintf(eta, sizeof(eta), "ETA %.0fs",
			 (double)(p->total - p->done) / rate);
	else
		snprintf(eta, sizeof(eta), "ETA -");
	snprintf(tail, sizeof(tail), "%3d%%  %s / %s  %s/s  %s",
		 (int)(frac * 100), done, total, speed, eta);
	barw = cols - 1 - (int)strlen(p->label) - 6 - (int)strlen(tail);
	if (barw > 40)
		barw = 40;
	if (barw < 10) {
		len = snprintf(line, sizeof(line), "%s  %s", p->label, tail);
	} else {
		char bar[41];

		fill = (int)(frac * barw);
		memset(bar, '#', (size_t)fill);
		memset(bar + fill, '.', (size_t)(barw - fill));
		bar[barw] = '\0';
		len = snprintf(line, sizeof(line), "%s  [%s]  %s", p->label,
			       bar, tail);
	}
	if (len >= (int)sizeof(line))
		len = (int)sizeof(line) - 1;
	/* Pad with spaces to erase a longer previous line. */
	fprintf(stderr, "\r%s%*s", line, p->drawn > len ? p->drawn - len : 0,
		"");
	p->drawn = len;
	p->last = now;
}

void ctl_progress_start(struct ctl_progress *p, const char *label,
			uint64_t total)
{
	memset(p, 0, sizeof(*p));
	p->on = isatty(STDERR_FILENO) == 1;
	p->label = label;
	p->total = total;
	p->start = ctl_now();
	p->last = p->start;
	if (p->on)
		progress_draw(p, false);
}

void ctl_progress_update(struct ctl_progress *p, uint64_t done)
{
	struct timespec now;

	p->done = done;
	if (!p->on)
		return;
	now = ctl_now();
	if (ctl_elapsed(&p->last, &now) >= PROGRESS_INTERVAL)
		progress_draw(p, false);
}

void ctl_progress_end(struct ctl_progress *p, bool ok)
{
	if (!p->on)
		return;
	if (ok) {
		progress_draw(p, true);
		fputc('\n', stderr);
	} else if (p->drawn) {
		/* Leave the line clean for the error message. */
		fprintf(stderr, "\r%*s\r", p->drawn, "");
	}
	p->on = false;
}
