/*
 * harness.c - run a real h2d for integration tests (see harness.h).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "tls.h"

#ifndef H2D_PATH
#error "H2D_PATH must name the h2d binary"
#endif

#define READY_WAIT_MS 60000

const char *h2t_path(const struct h2t_srv *s, const char *name)
{
	static __thread char p[8][256];
	static __thread int k;

	k = (k + 1) % 8;
	snprintf(p[k], sizeof(p[k]), "%s/%s", s->dir, name);
	return p[k];
}

/* Print h2d's log (for a failing test's output). */
static void dump_log(const struct h2t_srv *s)
{
	char buf[4096];
	FILE *f = fopen(h2t_path(s, "h2d.log"), "r");
	size_t n;

	if (!f)
		return;
	fprintf(stderr, "---- h2d.log ----\n");
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		fwrite(buf, 1, n, stderr);
	fprintf(stderr, "-----------------\n");
	fclose(f);
}

/* Copy the string value of "key" in a one-line JSON object into out. */
static bool json_str(const char *buf, const char *key, char *out,
		     size_t outlen)
{
	char pat[64];
	const char *p, *q;

	snprintf(pat, sizeof(pat), "\"%s\":\"", key);
	p = strstr(buf, pat);
	if (!p)
		return false;
	p += strlen(pat);
	q = strchr(p, '"');
	if (!q || (size_t)(q - p) >= outlen)
		return false;
	memcpy(out, p, (size_t)(q - p));
	out[q - p] = 0;
	return true;
}

/* Read "listen" (and "nbd_listen", "metrics_listen", if there) out of
 * the ready file. */
static bool read_ready(struct h2t_srv *s)
{
	char buf[512];
	FILE *f = fopen(h2t_path(s, "ready.json"), "r");
	size_t n;

	if (!f)
		return false;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	if (!json_str(buf, "listen", s->addr, sizeof(s->addr)))
		return false;
	if (!json_str(buf, "nbd_listen", s->nbd, sizeof(s->nbd)))
		s->nbd[0] = 0;
	if (!json_str(buf, "metrics_listen", s->metrics, sizeof(s->metrics)))
		s->metrics[0] = 0;
	return true;
}

/* Start h2d listening on listen ("127.0.0.1:0": any free port). */
static void spawn(struct h2t_srv *s, const char *listen)
{
	/* NBD is off unless extra turns it on (the last flag wins); its
	 * default port, 10809, would collide between parallel tests. */
	const char *argv[34] = {H2D_PATH,     "serve",	  "--dev",
				"--listen",   listen,	  "--ready-file",
				"ready.json", "--log-level", "info",
				"--nbd-listen", ""};
	int argc = 11, ws;

	for (int i = 0; s->extra[i] && argc < 33; i++)
		argv[argc++] = s->extra[i];
	argv[argc] = NULL;
	unlink(h2t_path(s, "ready.json"));
	s->pid = fork();
	cr_assert_geq(s->pid, 0);
	if (s->pid == 0) {
		int fd;

		if (chdir(s->dir) != 0)
			_exit(126);
		fd = open("h2d.log", O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (fd < 0)
			_exit(126);
		dup2(fd, 2);
		dup2(fd, 1);
		execv(H2D_PATH, (char *const *)argv);
		_exit(127);
	}
	/* Wait for the ready file: a bounded wait on a condition, failing at
	 * once if h2d exits. */
	for (int waited = 0; waited < READY_WAIT_MS; waited += 5) {
		struct timespec ts = {0, 5 * 1000 * 1000};

		if (read_ready(s)) {
			snprintf(s->tls, sizeof(s->tls), "%s/var/h2/tls",
				 s->dir);
			return;
		}
		if (waitpid(s->pid, &ws, WNOHANG) == s->pid) {
			s->pid = 0;
			dump_log(s);
			cr_assert_fail("h2d exited before it was ready (status %d)",
				 WIFEXITED(ws) ? WEXITSTATUS(ws) : -1);
		}
		nanosleep(&ts, NULL);
	}
	dump_log(s);
	cr_assert_fail("h2d was not ready within %d ms", READY_WAIT_MS);
}

void h2t_start(struct h2t_srv *s, const char *const *extra)
{
	memset(s, 0, sizeof(*s));
	snprintf(s->dir, sizeof(s->dir), "/tmp/h2-it-XXXXXX");
	cr_assert_not_null(mkdtemp(s->dir));
	for (int i = 0; extra && extra[i] && i < 15; i++)
		s->extra[i] = extra[i];
	spawn(s, "127.0.0.1:0");
}

void h2t_restart(struct h2t_srv *s)
{
	cr_assert_eq(s->pid, 0, "restart of a running h2d");
	spawn(s, "127.0.0.1:0");
}

void h2t_restart_same_port(struct h2t_srv *s)
{
	char addr[64];

	cr_assert_eq(s->pid, 0, "restart of a running h2d");
	/* h2d binds with SO_REUSEADDR, so the port its predecessor left
	 * (with connections in TIME_WAIT) is free at once. */
	snprintf(addr, sizeof(addr), "%s", s->addr);
	spawn(s, addr);
	cr_assert_str_eq(s->addr, addr, "h2d came back on another port");
}

int h2t_stop(struct h2t_srv *s, int sig)
{
	int ws;

	if (!s->pid)
		return -1;
	kill(s->pid, sig);
	while (waitpid(s->pid, &ws, 0) < 0)
		cr_assert_eq(errno, EINTR);
	s->pid = 0;
	if (WIFEXITED(ws)) {
		if (WEXITSTATUS(ws) != 0)
			dump_log(s);
		return WEXITSTATUS(ws);
	}
	return 128 + WTERMSIG(ws);
}

/* Reports of a sanitizer in h2d's log: every sanitizer ends a report with
 * a line "SUMMARY: <Name>Sanitizer: ...". */
static int sanitizer_reports(const struct h2t_srv *s)
{
	FILE *f = fopen(h2t_path(s, "h2d.log"), "r");
	char *buf = NULL;
	size_t cap = 0;
	int count = 0;

	if (!f)
		return 0;
	while (getline(&buf, &cap, f) > 0)
		count += strncmp(buf, "SUMMARY: ", 9) == 0 &&
			 strstr(buf, "Sanitizer") != NULL;
	free(buf);
	fclose(f);
	return count;
}

void h2t_cleanup(struct h2t_srv *s)
{
	char cmd[128];
	int reports;

	if (s->pid)
		h2t_stop(s, SIGKILL);
	if (!s->dir[0])
		return;
	/* A sanitizer build's h2d reports a race, a memory error or
	 * undefined behaviour in its log: whatever the test saw, that
	 * fails it. */
	reports = sanitizer_reports(s);
	if (reports > 0)
		dump_log(s);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", s->dir);
	s->dir[0] = 0;
	cr_assert_eq(reports, 0, "h2d's log holds %d sanitizer report(s)",
		     reports);
}

int h2t_connect_with(const struct h2t_srv *s, const char *cert,
		     const char *key, h2_client **out)
{
	char ca[200];
	h2_client_opts o = {0};

	snprintf(ca, sizeof(ca), "%s/ca.crt", s->tls);
	o.server = s->addr;
	o.ca_file = ca;
	o.cert_file = cert;
	o.key_file = key;
	o.client_name = "h2 integration test";
	return h2_connect(&o, out);
}

h2_client *h2t_connect(const struct h2t_srv *s)
{
	char crt[200], key[200];
	h2_client *c = NULL;
	int r;

	snprintf(crt, sizeof(crt), "%s/client.crt", s->tls);
	snprintf(key, sizeof(key), "%s/client.key", s->tls);
	r = h2t_connect_with(s, crt, key, &c);
	if (r < 0)
		dump_log(s);
	cr_assert_eq(r, 0, "connect to %s: %s (%s)", s->addr, h2_strerror(r),
		     h2_last_error());
	return c;
}

void h2t_issue_client(const struct h2t_srv *s, const char *name,
		      const char *identity, int days, bool other_ca)
{
	char cadir[200], cacrt[256], cakey[256], crt[256], key[256];
	char err[512];

	if (other_ca) {
		snprintf(cadir, sizeof(cadir), "%s/other-ca-%s", s->dir, name);
		cr_assert_eq(h2_tls_dev_certs(cadir, identity, err,
					      sizeof(err)),
			     0, "%s", err);
	} else {
		snprintf(cadir, sizeof(cadir), "%s", s->tls);
	}
	snprintf(cacrt, sizeof(cacrt), "%s/ca.crt", cadir);
	snprintf(cakey, sizeof(cakey), "%s/ca.key", cadir);
	snprintf(crt, sizeof(crt), "%s/%s.crt", s->dir, name);
	snprintf(key, sizeof(key), "%s/%s.key", s->dir, name);
	cr_assert_eq(h2_tls_issue(cacrt, cakey, identity, NULL, days, crt, key,
				  err, sizeof(err)),
		     0, "%s", err);
}

void h2t_pattern(void *buf, size_t len, uint64_t seed)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
	uint8_t *p = buf;

	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (uint8_t)x;
	}
}

/* A Python check of a scrape: the reference client's parser must accept
 * it, and every histogram's buckets must rise to _count at +Inf. */
static const char scrape_check_py[] =
    "import sys\n"
    "from prometheus_client.parser import text_string_to_metric_families\n"
    "fams = list(text_string_to_metric_families(open(sys.argv[1]).read()))\n"
    "for f in fams:\n"
    "    if f.type != 'histogram':\n"
    "        continue\n"
    "    series = {}\n"
    "    for s in f.samples:\n"
    "        key = tuple(sorted((k, v) for k, v in s.labels.items()\n"
    "                           if k != 'le'))\n"
    "        series.setdefault(key, {'b': [], 'count': None})\n"
    "        if s.name.endswith('_bucket'):\n"
    "            series[key]['b'].append((float(s.labels['le']), s.value))\n"
    "        elif s.name.endswith('_count'):\n"
    "            series[key]['count'] = s.value\n"
    "    for key, v in series.items():\n"
    "        b = v['b']\n"
    "        assert b and b[-1][0] == float('inf'), (f.name, key)\n"
    "        assert all(b[i][0] < b[i + 1][0] and b[i][1] <= b[i + 1][1]\n"
    "                   for i in range(len(b) - 1)), (f.name, key)\n"
    "        assert b[-1][1] == v['count'], (f.name, key)\n"
    "print('exposition ok: %d families' % len(fams))\n";

char *h2t_scrape(const struct h2t_srv *s, const char *method,
		 const char *path, int *code)
{
	char cmd[1024], out[256], *text;
	const char *file = h2t_path(s, "scrape.txt");
	FILE *f;
	long n;

	if (system("command -v curl >/dev/null 2>&1") != 0)
		cr_skip_test("curl is not installed (Debian package curl; "
			     "scripts/install-deps installs it)");
	cr_assert(s->metrics[0], "no \"metrics_listen\" in the ready file");
	snprintf(out, sizeof(out), "%s", file);
	snprintf(cmd, sizeof(cmd),
		 "curl -sS --max-time 60 -X %s -o '%s' -w '%%{http_code}' "
		 "'http://%s%s'",
		 method, out, s->metrics, path);
	f = popen(cmd, "r");
	cr_assert_not_null(f);
	cr_assert_eq(fscanf(f, "%d", code), 1, "curl printed no status");
	cr_assert_eq(pclose(f), 0, "curl failed: %s", cmd);
	f = fopen(out, "r");
	cr_assert_not_null(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	text = calloc(1, (size_t)n + 1);
	cr_assert_eq(fread(text, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	return text;
}

void h2t_check_exposition(const struct h2t_srv *s, const char *text)
{
	char cmd[1024];
	const char *py = h2t_path(s, "scrape_check.py");
	const char *file = h2t_path(s, "scrape_check.txt");
	char pyp[256], filep[256];
	FILE *f;

	/* Debian's python3, which has the parser; not another on PATH. */
	if (system("/usr/bin/python3 -c 'import prometheus_client' "
		   ">/dev/null 2>&1") != 0)
		cr_skip_test("the Prometheus parser is missing (Debian package "
			     "python3-prometheus-client; scripts/install-deps "
			     "installs it)");
	snprintf(pyp, sizeof(pyp), "%s", py);
	snprintf(filep, sizeof(filep), "%s", file);
	f = fopen(pyp, "w");
	cr_assert_not_null(f);
	fputs(scrape_check_py, f);
	cr_assert_eq(fclose(f), 0);
	f = fopen(filep, "w");
	cr_assert_not_null(f);
	fputs(text, f);
	cr_assert_eq(fclose(f), 0);
	snprintf(cmd, sizeof(cmd), "/usr/bin/python3 '%s' '%s' >&2", pyp,
		 filep);
	cr_assert_eq(system(cmd), 0, "the scrape is not valid exposition "
				     "format (see above)");
}

long long h2t_metric(const char *text, const char *series)
{
	size_t n = strlen(series);

	for (const char *p = text; p && *p;) {
		if (strncmp(p, series, n) == 0 && p[n] == ' ')
			return strtoll(p + n + 1, NULL, 10);
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return -1;
}

/* Occurrences of text in h2d's log so far. */
int h2t_log_count(const struct h2t_srv *s, const char *text)
{
	FILE *f = fopen(h2t_path(s, "h2d.log"), "r");
	char *buf = NULL;
	size_t cap = 0;
	ssize_t n;
	int count = 0;

	if (!f)
		return 0;
	while ((n = getline(&buf, &cap, f)) > 0)
		count += strstr(buf, text) != NULL;
	free(buf);
	fclose(f);
	return count;
}

bool h2t_wait_log(const struct h2t_srv *s, const char *text, int count,
		  int timeout_ms)
{
	/* h2d logs the event before anything a test would wait for after
	 * it; a bounded poll of the file, like the ready file's. */
	for (int waited = 0; waited <= timeout_ms; waited += 5) {
		struct timespec ts = {0, 5 * 1000 * 1000};

		if (h2t_log_count(s, text) >= count)
			return true;
		nanosleep(&ts, NULL);
	}
	dump_log(s);
	return false;
}
