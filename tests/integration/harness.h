/*
 * harness.h - start a real h2d for integration tests.
 *
 * Each server runs `h2d serve --dev --listen 127.0.0.1:0 --ready-file ...`
 * in its own temporary directory, so the development store and
 * certificates land in DIR/var/h2/.  The NBD frontend is off unless extra
 * holds "--nbd-listen", "127.0.0.1:0" (its address is then in nbd), and
 * so is the metrics endpoint ("--metrics-listen", "127.0.0.1:0": metrics).
 * The harness waits for the ready file (polling its existence, bounded,
 * and failing at once if h2d died), so no test depends on timing.  h2d's log
 * goes to DIR/h2d.log and is printed when something goes wrong.
 */
#ifndef H2_TEST_HARNESS_H
#define H2_TEST_HARNESS_H

#include <stdbool.h>
#include <sys/types.h>

#include "h2client.h"

struct h2t_srv {
	char dir[64];	 /* temporary directory, h2d's cwd */
	char addr[64];	 /* "127.0.0.1:PORT" once ready */
	char nbd[64];	 /* NBD "127.0.0.1:PORT" once ready; "" if off */
	char metrics[64]; /* GET /metrics "127.0.0.1:PORT"; "" if off */
	char tls[128];	 /* DIR/var/h2/tls */
	pid_t pid;	 /* 0 when not running */
	const char *extra[16]; /* extra h2d serve arguments */
};

/* Make a new temporary directory and start h2d in it.  extra: NULL or a
 * NULL-terminated list of further serve arguments (kept for restarts). */
void h2t_start(struct h2t_srv *s, const char *const *extra);

/* Start h2d again in the same directory (same store), on a new port. */
void h2t_restart(struct h2t_srv *s);

/* The same on the port it had, so that clients can reconnect. */
void h2t_restart_same_port(struct h2t_srv *s);

/* Send sig and wait: the exit status (or 128 + signal). */
int h2t_stop(struct h2t_srv *s, int sig);

/* Stop if running (SIGKILL) and remove the directory; fails the test if
 * h2d's log holds a sanitizer's report (a sanitizer build's h2d). */
void h2t_cleanup(struct h2t_srv *s);

/* A path inside the server's directory (rotating static buffers). */
const char *h2t_path(const struct h2t_srv *s, const char *name);

/* Connect with the development admin certificate, asserting success. */
h2_client *h2t_connect(const struct h2t_srv *s);

/* Connect with other client files (NULL cert/key: none); returns the
 * error code (0 on success with *out set). */
int h2t_connect_with(const struct h2t_srv *s, const char *cert,
		     const char *key, h2_client **out);

/*
 * Issue a client certificate for identity signed by the server's dev CA
 * (or, when other_ca, by a fresh unrelated CA), valid for days (negative:
 * expired).  Writes DIR/<name>.crt and DIR/<name>.key.
 */
void h2t_issue_client(const struct h2t_srv *s, const char *name,
		      const char *identity, int days, bool other_ca);

/*
 * HTTP method on path of the server's metrics endpoint with curl (the
 * test is skipped if curl is missing): the body (caller frees), the
 * status in *code.
 */
char *h2t_scrape(const struct h2t_srv *s, const char *method,
		 const char *path, int *code);

/* Assert that text is valid Prometheus exposition format (the reference
 * client's parser, Debian's python3-prometheus-client) and that every
 * histogram's buckets rise to its _count. */
void h2t_check_exposition(const struct h2t_srv *s, const char *text);

/* The value of the sample "name{labels}" exactly as written, or -1 when
 * the scrape has no such series. */
long long h2t_metric(const char *text, const char *series);

/* Lines of h2d's log (h2d.log) that contain text. */
int h2t_log_count(const struct h2t_srv *s, const char *text);

/* Wait (at most timeout_ms) until count lines of the log contain text;
 * false (and the log printed) if they do not. */
bool h2t_wait_log(const struct h2t_srv *s, const char *text, int count,
		  int timeout_ms);

/* Fill buf with a pattern derived from seed. */
void h2t_pattern(void *buf, size_t len, uint64_t seed);

#endif
