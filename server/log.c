/*
 * log.c - leveled logging to stderr, one line per event.
 *
 *   2026-11-24T20:31:07.123Z info  serve listening addr=127.0.0.1:7410
 *   \______________________/ \___/ \___/ \__________________________/
 *    UTC, millisecond        level  comp  message (printf format)
 *
 * Invariants: a line is built whole in memory and handed to the kernel
 * with a single write(2), so lines from different threads never
 * interleave (stderr is unbuffered stdio, which would split them).  The
 * message may carry strings a client chose (a certificate CN, a volume
 * name), so control characters are escaped as \xNN: nobody can forge a
 * second log line or move the terminal cursor.  Logging never fails the
 * caller: out of memory truncates the line, a failed write drops it.
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Lines up to this size are built on the stack; longer ones are heaped. */
#define LOG_STACK_LINE 1024
/* A message longer than this is cut (and ends with "..."). */
#define LOG_MAX_LINE (64u << 10)

static const char *const log_names[] = {"error", "warn", "info", "debug"};

/* Read and written with relaxed atomics: any thread may log or set it. */
static int log_level = H2_LOG_INFO;

void h2_log_set_level(enum h2_log_level level)
{
	if ((int)level < H2_LOG_ERROR)
		level = H2_LOG_ERROR;
	if (level > H2_LOG_DEBUG)
		level = H2_LOG_DEBUG;
	__atomic_store_n(&log_level, (int)level, __ATOMIC_RELAXED);
}

int h2_log_level_parse(const char *s)
{
	if (!s)
		return -1;
	for (int i = 0; i < (int)(sizeof(log_names) / sizeof(log_names[0]));
	     i++)
		if (strcmp(s, log_names[i]) == 0)
			return i;
	return -1;
}

/* Write all of buf to stderr, retrying EINTR; a short write is finished. */
static void log_write(const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(STDERR_FILENO, buf, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		buf += n;
		len -= (size_t)n;
	}
}

/*
 * Copy msg into out (room bytes, at least 5) escaping control characters;
 * returns the bytes written (no NUL).  Cuts with "..." when it is full.
 */
static size_t log_escape(char *out, size_t room, const char *msg)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	for (const unsigned char *p = (const unsigned char *)msg; *p; p++) {
		size_t need = (*p < 0x20 || *p == 0x7f) ? 4 : 1;

		if (o + need > room - 3) {
			memcpy(out + o, "...", 3);
			return o + 3;
		}
		if (need == 1) {
			out[o++] = (char)*p;
		} else {
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[*p >> 4];
			out[o++] = hex[*p & 15];
		}
	}
	return o;
}

void h2_log(enum h2_log_level level, const char *component, const char *fmt,
	    ...)
{
	char stack_msg[LOG_STACK_LINE], stack_line[LOG_STACK_LINE + 128];
	char *msg = stack_msg, *line = stack_line;
	size_t line_room = sizeof(stack_line), o;
	struct timespec ts;
	struct tm tm;
	va_list ap;
	int n;

	if ((int)level > __atomic_load_n(&log_level, __ATOMIC_RELAXED))
		return;
	if ((int)level < H2_LOG_ERROR || level > H2_LOG_DEBUG)
		level = H2_LOG_ERROR;

	va_start(ap, fmt);
	n = vsnprintf(stack_msg, sizeof(stack_msg), fmt, ap);
	va_end(ap);
	if (n < 0) {
		snprintf(stack_msg, sizeof(stack_msg), "(bad log format)");
		n = 0;
	} else if ((size_t)n >= sizeof(stack_msg)) {
		/* Too long for the stack: format again into the heap. */
		size_t len =
		    (size_t)n < LOG_MAX_LINE ? (size_t)n : LOG_MAX_LINE;
		char *big = malloc(len + 1);
		char *bigline = big ? malloc(4 * len + 128) : NULL;

		if (big && bigline) {
			va_start(ap, fmt);
			vsnprintf(big, len + 1, fmt, ap);
			va_end(ap);
			msg = big;
			line = bigline;
			line_room = 4 * len + 128;
		} else {
			free(big);
			free(bigline);
		}
	}

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	o = strftime(line, line_room, "%Y-%m-%dT%H:%M:%S", &tm);
	o += (size_t)snprintf(line + o, line_room - o, ".%03ldZ %-5s %.32s ",
			      ts.tv_nsec / 1000000L, log_names[level],
			      component ? component : "-");
	/* The prefix is short; line_room always leaves room for the message. */
	o += log_escape(line + o, line_room - o - 1, msg);
	line[o++] = '\n';
	log_write(line, o);

	if (msg != stack_msg)
		free(msg);
	if (line != stack_line)
		free(line);
}
