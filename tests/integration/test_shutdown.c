/*
 * h2d's clean disconnect on SIGTERM, seen by clients without
 * H2_RECONNECT: what was running finishes, what arrives afterwards is
 * refused and says so (native UNAVAILABLE, NBD ESHUTDOWN), the
 * connection then ends with close_notify, and nobody hangs.
 *
 * To have a request arrive while h2d is stopping, the stop must take a
 * while: 256 MiB of dirty data (the flusher is held off with a long
 * interval and a high dirty_max) make its final sync write 256 MiB, and
 * the late request is sent once h2d has logged that it is stopping.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define KiB   1024ull
#define MiB   (1024ull * 1024)
#define DIRTY (256 * MiB)

static struct h2t_srv srv;

static void stop_server(void)
{
	h2t_cleanup(&srv);
}

TestSuite(shutdown, .fini = stop_server, .timeout = 300);

static const char *const slow_flush[] = {
    "--flush-interval", "3600000", "--dirty-max", "1G",
    "--dirty-hard",	"2G",	   NULL};

static h2_volume *open_vol(h2_client *c, const char *name)
{
	h2_volume *v = NULL;
	int r = h2_volume_open(c, name, H2_OPEN_RW, &v);

	cr_assert_eq(r, 0, "open %s: %s (%s)", name, h2_strerror(r),
		     h2_last_error());
	return v;
}

/* Dirty DIRTY bytes of v with data that is not zeros. */
static void dirty(h2_volume *v)
{
	uint8_t *buf = malloc(8 * MiB);

	memset(buf, 0x5a, 8 * MiB);
	for (uint64_t off = 0; off < DIRTY; off += 8 * MiB)
		cr_assert_eq(h2_pwrite(v, buf, 8 * MiB, off, 0), 0, "%s",
			     h2_last_error());
	free(buf);
}

struct rec {
	bool done;
	int result;
	char msg[256];
};

static void rec_cb(void *arg, int result)
{
	struct rec *r = arg;

	r->done = true;
	r->result = result;
	snprintf(r->msg, sizeof(r->msg), "%s", h2_last_error());
}

Test(shutdown, a_request_arriving_while_h2d_stops_is_refused_unavailable)
{
	static struct rec rd;
	uint8_t small[4096];
	h2_client *c;
	h2_volume *v;
	int r;

	h2t_start(&srv, slow_flush);
	c = h2t_connect(&srv);
	cr_assert_eq(h2_volume_create(c, "big", 2 * DIRTY), 0);
	v = open_vol(c, "big");
	dirty(v);
	kill(srv.pid, SIGTERM);
	cr_assert(h2t_wait_log(&srv, "shutting down", 1, 60000));
	/* h2d is syncing those 256 MiB before it closes anything. */
	cr_assert_eq(h2_aio_pread(v, small, sizeof(small), 0, rec_cb, &rd), 0);
	while (h2_aio_inflight(c) > 0)
		cr_assert_geq(h2_aio_poll(c, -1), 0, "%s", h2_last_error());
	cr_assert_eq(rd.result, H2_EUNAVAILABLE, "read: %s (%s)",
		     h2_strerror(rd.result), rd.msg);
	cr_assert(strstr(rd.msg, "not executed"), "%s", rd.msg);
	cr_assert_eq(h2t_log_count(&srv, "final sync done"), 0,
		     "the read came after the final sync");
	/* Then h2d closes, cleanly: calls fail at once, and say so. */
	while ((r = h2_pread(v, small, sizeof(small), 0)) == H2_EUNAVAILABLE)
		;
	cr_assert_eq(r, H2_ECLOSED, "%s (%s)", h2_strerror(r), h2_last_error());
	cr_assert(strstr(h2_last_error(), "the server closed the connection"),
		  "%s", h2_last_error());
	h2_disconnect(c);
	cr_assert_eq(h2t_stop(&srv, 0), 0, "h2d did not exit cleanly");
	cr_assert_eq(h2t_log_count(&srv, "final sync done"), 1);

	/* Every acknowledged write is there. */
	h2t_restart(&srv);
	c = h2t_connect(&srv);
	v = open_vol(c, "big");
	cr_assert_eq(h2_pread(v, small, sizeof(small), DIRTY - sizeof(small)),
		     0);
	for (size_t i = 0; i < sizeof(small); i++)
		cr_assert_eq(small[i], 0x5a);
	h2_disconnect(c);
}

static pthread_mutex_t wmu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wcv = PTHREAD_COND_INITIALIZER;
static unsigned warmed; /* writers with 20 writes acknowledged (wmu) */

struct writer {
	h2_volume *v;
	int id;
	unsigned acked;
	int err;
	char why[300];
};

/* Write 64 KiB blocks until a call fails: the end of the connection. */
static void *writer_main(void *arg)
{
	struct writer *w = arg;
	uint8_t *buf = malloc(64 * KiB);

	for (unsigned i = 0;; i++) {
		uint64_t off = ((uint64_t)w->id * 256 + i % 256) * 64 * KiB;
		int r;

		h2t_pattern(buf, 64 * KiB, (uint64_t)w->id << 32 | i);
		r = h2_pwrite(w->v, buf, 64 * KiB, off, 0);
		if (r != 0) {
			w->err = r;
			snprintf(w->why, sizeof(w->why), "%s", h2_last_error());
			break;
		}
		w->acked = i + 1;
		if (w->acked == 20) {
			pthread_mutex_lock(&wmu);
			warmed++;
			pthread_cond_broadcast(&wcv);
			pthread_mutex_unlock(&wmu);
		}
	}
	free(buf);
	return NULL;
}

/* Without H2_RECONNECT, threads blocked in calls get a clean error, not
 * a hang, and everything acknowledged is on the store afterwards. */
Test(shutdown, blocked_callers_get_a_clean_error_and_acked_writes_stay)
{
	enum { N = 3 };
	struct writer w[N];
	pthread_t th[N];
	uint8_t *got = malloc(64 * KiB), *want = malloc(64 * KiB);
	h2_client *c;
	h2_volume *v;

	h2t_start(&srv, NULL);
	c = h2t_connect(&srv);
	cr_assert_eq(h2_volume_create(c, "w", N * 256 * 64 * KiB), 0);
	v = open_vol(c, "w");
	for (int i = 0; i < N; i++) {
		w[i] = (struct writer){.v = v, .id = i};
		cr_assert_eq(pthread_create(&th[i], NULL, writer_main, &w[i]),
			     0);
	}
	/* Some acknowledged writes from each first. */
	pthread_mutex_lock(&wmu);
	while (warmed < N)
		pthread_cond_wait(&wcv, &wmu);
	pthread_mutex_unlock(&wmu);
	cr_assert_eq(h2t_stop(&srv, SIGTERM), 0);
	for (int i = 0; i < N; i++) {
		pthread_join(th[i], NULL);
		cr_assert(w[i].err == H2_EUNAVAILABLE || w[i].err == H2_ECLOSED,
			  "writer %d: %s (%s)", i, h2_strerror(w[i].err),
			  w[i].why);
	}
	h2_disconnect(c);

	h2t_restart(&srv);
	c = h2t_connect(&srv);
	v = open_vol(c, "w");
	for (int i = 0; i < N; i++)
		for (unsigned k = w[i].acked > 256 ? w[i].acked - 256 : 0;
		     k < w[i].acked; k++) {
			uint64_t off = ((uint64_t)i * 256 + k % 256) * 64 * KiB;

			h2t_pattern(want, 64 * KiB, (uint64_t)i << 32 | k);
			cr_assert_eq(h2_pread(v, got, 64 * KiB, off), 0);
			cr_assert_eq(memcmp(got, want, 64 * KiB), 0,
				     "writer %d: acknowledged write %u lost", i,
				     k);
		}
	h2_disconnect(c);
	free(got);
	free(want);
}

/*
 * NBD: commands that arrive after shutdown began get ESHUTDOWN (the
 * spec's word for it), and the client's soft disconnect is honoured.
 * Driven with nbdsh (libnbd's Python shell), which sends SIGTERM itself
 * after dirtying 256 MiB and reads once h2d's log says it is stopping.
 */

/* nbdsh runs "python3 -m nbd": Debian's python3, not another on PATH. */
#define NBDSH "env PATH=/usr/bin:/bin:$PATH nbdsh"

static const char nbdsh_eshutdown[] =
    "import errno, os, signal, time\n"
    "h.set_uri_allow_local_file(True)\n"
    "h.connect_uri(os.environ['H2_URI'])\n"
    "buf = bytes([0x5a]) * (4 << 20)\n"
    "for i in range(64):\n"
    "    h.pwrite(buf, i * len(buf))\n"
    "os.kill(int(os.environ['H2_PID']), signal.SIGTERM)\n"
    "log = os.environ['H2_LOG']\n"
    "for i in range(6000):\n"
    "    if 'shutting down' in open(log).read():\n"
    "        break\n"
    "    time.sleep(0.01)\n"
    "try:\n"
    "    h.pread(4096, 0)\n"
    "    print('late read succeeded')\n"
    "except nbd.Error as e:\n"
    "    print('late read errno', e.errno)\n"
    "h.shutdown()\n" /* the soft disconnect ESHUTDOWN calls for */
    "print('disconnected')\n";

/* Run cmd; its output into *out (caller frees); the exit status. */
static int sh(char **out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int sh(char **out, const char *fmt, ...)
{
	char cmd[4096], buf[4096];
	size_t len = 0;
	char *s = calloc(1, 1);
	va_list ap;
	FILE *f;
	size_t n;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd) - 8, fmt, ap);
	va_end(ap);
	strcat(cmd, " 2>&1");
	f = popen(cmd, "r");
	cr_assert_not_null(f);
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
		s = realloc(s, len + n + 1);
		memcpy(s + len, buf, n);
		len += n;
		s[len] = 0;
	}
	st = pclose(f);
	*out = s;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* libnbd's certificate directory layout, for the dev admin. */
static const char *nbd_tls_dir(void)
{
	static char d[256];
	char *out;

	snprintf(d, sizeof(d), "%s/nbd-tls", srv.dir);
	cr_assert_eq(mkdir(d, 0700), 0);
	cr_assert_eq(sh(&out,
			"cp '%s/ca.crt' '%s/ca-cert.pem' && "
			"cp '%s/client.crt' '%s/client-cert.pem' && "
			"cp '%s/client.key' '%s/client-key.pem'",
			srv.tls, d, srv.tls, d, srv.tls, d),
		     0, "%s", out);
	free(out);
	return d;
}

Test(shutdown, nbd_commands_after_sigterm_get_eshutdown)
{
	const char *extra[] = {
	    "--nbd-listen", "127.0.0.1:0", "--flush-interval",
	    "3600000",	    "--dirty-max", "1G",
	    "--dirty-hard", "2G",	   NULL};
	char script[300], want[64], *out;
	h2_client *c;
	FILE *f;
	int r;

	if (system(NBDSH " -c pass >/dev/null 2>&1") != 0)
		cr_skip_test("nbdsh cannot run (Debian package "
			     "python3-libnbd)");
	h2t_start(&srv, extra);
	c = h2t_connect(&srv);
	cr_assert_eq(h2_volume_create(c, "nb", 2 * DIRTY), 0);
	h2_disconnect(c);
	snprintf(script, sizeof(script), "%s", h2t_path(&srv, "esd.py"));
	f = fopen(script, "w");
	cr_assert_not_null(f);
	fputs(nbdsh_eshutdown, f);
	cr_assert_eq(fclose(f), 0);
	r = sh(&out,
	       "H2_URI='nbds://%s/nb?tls-certificates=%s' H2_PID=%d "
	       "H2_LOG='%s' timeout 240 " NBDSH
	       " -c \"exec(open('%s').read())\"",
	       srv.nbd, nbd_tls_dir(), (int)srv.pid, h2t_path(&srv, "h2d.log"),
	       script);
	cr_assert_eq(r, 0, "nbdsh: %s", out);
	/* libnbd names the errno, or gives its number. */
	snprintf(want, sizeof(want), "late read errno %d", ESHUTDOWN);
	cr_assert(strstr(out, want) || strstr(out, "late read errno ESHUTDOWN"),
		  "%s", out);
	cr_assert(strstr(out, "disconnected"), "%s", out);
	free(out);
	cr_assert_eq(h2t_stop(&srv, 0), 0, "h2d did not exit cleanly");
	cr_assert_eq(h2t_log_count(&srv, "final sync done"), 1);
}
