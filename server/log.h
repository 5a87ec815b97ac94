/*
 * log.h - one line per event: time, level, component, message, key=value.
 *
 *   2026-11-24T20:31:07.123Z info  serve listening addr=127.0.0.1:7410
 *
 * Lines go to stderr (journald captures it under systemd).  Never log
 * secrets: keys, certificate contents, payload bytes.  Control characters
 * in the message are written as \xNN, so a client-chosen string cannot
 * forge a line.  The level starts at H2_LOG_INFO.
 * Thread-safe: each line is written with one write(2).
 */
#ifndef H2D_LOG_H
#define H2D_LOG_H

enum h2_log_level {
	H2_LOG_ERROR = 0,
	H2_LOG_WARN = 1,
	H2_LOG_INFO = 2,
	H2_LOG_DEBUG = 3,
};

void h2_log_set_level(enum h2_log_level level);
/* "error", "warn", "info", "debug"; -1 if unknown. */
int h2_log_level_parse(const char *s);
void h2_log(enum h2_log_level level, const char *component, const char *fmt,
	    ...) __attribute__((format(printf, 3, 4)));

#define h2_log_error(c, ...) h2_log(H2_LOG_ERROR, c, __VA_ARGS__)
#define h2_log_warn(c, ...) h2_log(H2_LOG_WARN, c, __VA_ARGS__)
#define h2_log_info(c, ...) h2_log(H2_LOG_INFO, c, __VA_ARGS__)
#define h2_log_debug(c, ...) h2_log(H2_LOG_DEBUG, c, __VA_ARGS__)

#endif
