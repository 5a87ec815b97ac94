/*
 * H2_RECONNECT against a real h2d that is restarted under the client's
 * feet: cleanly (SIGTERM, as "systemctl restart h2d" does) while several
 * threads write, flush and read through one client, and uncleanly
 * (SIGKILL), where acknowledged writes not yet flushed may be lost and
 * the next flush must say so.  h2d comes back on the same port
 * (h2t_restart_same_port), as a restarted service does.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"

#define KiB 1024ull
#define MiB (1024ull * 1024)

static struct h2t_srv srv;

static void stop_server(void)
{
	h2t_cleanup(&srv);
}

TestSuite(reconnect, .fini = stop_server, .timeout = 300);

/* A client with H2_RECONNECT: the given certificate (NULL: the
 * development admin's). */
static h2_client *connect_as(const char *crt_path, const char *key_path)
{
	char ca[200], crt[200], key[200];
	h2_client_opts o = {0};
	h2_client *c = NULL;
	int r;

	snprintf(ca, sizeof(ca), "%s/ca.crt", srv.tls);
	snprintf(crt, sizeof(crt), "%s/client.crt", srv.tls);
	snprintf(key, sizeof(key), "%s/client.key", srv.tls);
	o.server = srv.addr;
	o.ca_file = ca;
	o.cert_file = crt_path ? crt_path : crt;
	o.key_file = key_path ? key_path : key;
	o.client_name = "reconnect test";
	o.flags = H2_RECONNECT;
	o.reconnect_timeout_ms = 120000; /* slow sanitizer builds */
	r = h2_connect(&o, &c);
	cr_assert_eq(r, 0, "connect: %s (%s)", h2_strerror(r), h2_last_error());
	return c;
}

static h2_client *connect_reconnecting(void)
{
	return connect_as(NULL, NULL);
}

static h2_volume *open_vol(h2_client *c, const char *name)
{
	h2_volume *v = NULL;
	int r = h2_volume_open(c, name, H2_OPEN_RW, &v);

	cr_assert_eq(r, 0, "open %s: %s (%s)", name, h2_strerror(r),
		     h2_last_error());
	return v;
}

/*
 * Restart under load.  Each thread owns a region of BLOCKS blocks and
 * writes them round and round, each write a new generation with its own
 * pattern; it remembers the generation last acknowledged per block,
 * flushes (or syncs the store) every FLUSH_EVERY writes and then reads a
 * block back.  Nothing may fail: a clean restart is invisible but for the
 * pause.  At the end every block must hold its last acknowledged
 * generation, before and after one more restart.
 */
enum { THREADS = 4, BLOCKS = 64, BS = 4096, FLUSH_EVERY = 8 };

struct load {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t ops; /* writes, flushes and reads done (mu) */
	bool stop;    /* (mu) */
	bool failed;  /* (mu) */
};

struct loader {
	struct load *L;
	h2_client *c;
	h2_volume *v;
	int id;
	uint32_t acked[BLOCKS]; /* generation, 0: never written */
	uint64_t longest_ms;	/* the longest write: a restart's pause */
	int err;
	char why[400];
};

static uint64_t block_off(int id, int k)
{
	return (uint64_t)id * 16 * MiB + (uint64_t)k * BS;
}

static uint64_t block_seed(int id, int k, uint32_t gen)
{
	return ((uint64_t)id << 48) ^ ((uint64_t)k << 32) ^ gen;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Count one operation done; false once the test wants the threads out. */
static bool load_tick(struct load *L)
{
	bool go;

	pthread_mutex_lock(&L->mu);
	L->ops++;
	go = !L->stop;
	pthread_cond_broadcast(&L->cv);
	pthread_mutex_unlock(&L->mu);
	return go;
}

static void loader_fail(struct loader *w, int err, const char *what)
{
	w->err = err;
	snprintf(w->why, sizeof(w->why), "thread %d: %s: %s (%s)", w->id, what,
		 h2_strerror(err), h2_last_error());
	pthread_mutex_lock(&w->L->mu);
	w->L->failed = true;
	pthread_cond_broadcast(&w->L->cv);
	pthread_mutex_unlock(&w->L->mu);
}

static void *loader_main(void *arg)
{
	struct loader *w = arg;
	uint8_t buf[BS], want[BS];
	uint32_t gen = 0;
	uint64_t t0;
	unsigned n = 0;
	int r;

	for (;;) {
		int k = (int)(n % BLOCKS);

		if (k == 0)
			gen++;
		h2t_pattern(buf, BS, block_seed(w->id, k, gen));
		t0 = now_ms();
		r = h2_pwrite(w->v, buf, BS, block_off(w->id, k), 0);
		if (now_ms() - t0 > w->longest_ms)
			w->longest_ms = now_ms() - t0;
		if (r != 0) {
			loader_fail(w, r, "write");
			break;
		}
		w->acked[k] = gen;
		if (!load_tick(w->L))
			break;
		if (++n % FLUSH_EVERY)
			continue;
		/* Half the threads flush their volume, half the store. */
		r = w->id % 2 ? h2_flush(w->v) : h2_sync(w->c);
		if (r != 0) {
			loader_fail(w, r, w->id % 2 ? "flush" : "sync");
			break;
		}
		/* A block written a while ago reads back as acknowledged. */
		k = (int)((n / FLUSH_EVERY * 7) % BLOCKS);
		if (w->acked[k] == 0)
			continue;
		h2t_pattern(want, BS, block_seed(w->id, k, w->acked[k]));
		r = h2_pread(w->v, buf, BS, block_off(w->id, k));
		if (r != 0) {
			loader_fail(w, r, "read");
			break;
		}
		if (memcmp(buf, want, BS) != 0) {
			loader_fail(w, H2_EIO, "read back different data");
			break;
		}
		if (!load_tick(w->L))
			break;
	}
	return NULL;
}

/* Wait until the threads have done n more operations (or one failed). */
static void wait_progress(struct load *L, uint64_t n)
{
	struct timespec ts;
	uint64_t target;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 120;
	pthread_mutex_lock(&L->mu);
	target = L->ops + n;
	while (L->ops < target && !L->failed)
		if (pthread_cond_timedwait(&L->cv, &L->mu, &ts) != 0)
			break;
	cr_assert(L->ops >= target || L->failed,
		  "no progress: %" PRIu64 " of %" PRIu64 " operations", L->ops,
		  target);
	pthread_mutex_unlock(&L->mu);
}

/* Every block of every thread holds its last acknowledged generation. */
static void verify_blocks(h2_client *c, struct loader *w)
{
	uint8_t got[BS], want[BS];
	h2_volume *v = open_vol(c, "load");

	for (int t = 0; t < THREADS; t++)
		for (int k = 0; k < BLOCKS; k++) {
			cr_assert_eq(h2_pread(v, got, BS, block_off(t, k)), 0,
				     "%s", h2_last_error());
			if (w[t].acked[k])
				h2t_pattern(want, BS,
					    block_seed(t, k, w[t].acked[k]));
			else
				memset(want, 0, BS);
			cr_assert_eq(memcmp(got, want, BS), 0,
				     "thread %d block %d: not generation %u", t,
				     k, w[t].acked[k]);
		}
	h2_volume_close(v);
}

/* How many requests h2d refused (UNAVAILABLE) while stopping, in all:
 * those the client had to send again. */
static unsigned long refused_while_stopping(void)
{
	FILE *f = fopen(h2t_path(&srv, "h2d.log"), "r");
	char line[1024];
	unsigned long total = 0, n;
	const char *p;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if ((p = strstr(line, "final sync done")) &&
		    (p = strstr(p, ", ")) &&
		    sscanf(p, ", %lu request(s) refused", &n) == 1)
			total += n;
	fclose(f);
	return total;
}

Test(reconnect, clean_restarts_under_load_lose_nothing_and_fail_nothing)
{
	static struct loader w[THREADS];
	pthread_t th[THREADS];
	struct load L = {.mu = PTHREAD_MUTEX_INITIALIZER,
			 .cv = PTHREAD_COND_INITIALIZER};
	h2_client *c, *check;
	h2_volume *v;
	int status;

	h2t_start(&srv, NULL);
	c = connect_reconnecting();
	cr_assert_eq(h2_volume_create(c, "load", 64 * MiB), 0, "%s",
		     h2_last_error());
	v = open_vol(c, "load");
	for (int i = 0; i < THREADS; i++) {
		w[i] = (struct loader){.L = &L, .c = c, .v = v, .id = i};
		cr_assert_eq(pthread_create(&th[i], NULL, loader_main, &w[i]),
			     0);
	}
	for (int round = 1; round <= 3; round++) {
		wait_progress(&L, 200);
		status = h2t_stop(&srv, SIGTERM);
		cr_assert_eq(status, 0, "h2d exit status %d (round %d)", status,
			     round);
		cr_assert_eq(h2t_log_count(&srv, "final sync done"), round);
		/* The loaded client was connected when h2d stopped. */
		cr_assert_eq(h2t_log_count(&srv, "closing 1 connection(s)"),
			     round);
		h2t_restart_same_port(&srv);
	}
	/* Threads that got their reply as h2d began to stop sent the next
	 * request at once: refused (6 to 10 in three rounds here), and sent
	 * again by the library, which the threads must not have noticed. */
	cr_assert_gt(refused_while_stopping(), 0,
		     "no request met a stopping h2d");
	/* They go on after the last restart, too. */
	wait_progress(&L, 200);
	pthread_mutex_lock(&L.mu);
	L.stop = true;
	pthread_mutex_unlock(&L.mu);
	for (int i = 0; i < THREADS; i++) {
		pthread_join(th[i], NULL);
		cr_expect_eq(w[i].err, 0, "%s", w[i].why);
	}
	cr_assert_not(L.failed, "a thread saw an error");
	{
		uint64_t longest = 0;

		for (int i = 0; i < THREADS; i++)
			if (w[i].longest_ms > longest)
				longest = w[i].longest_ms;
		/* For the README's figure: what a restart costs a caller. */
		cr_log_info("longest write across the restarts: %" PRIu64 " ms",
			    longest);
	}
	cr_assert_eq(h2_sync(c), 0, "%s", h2_last_error());

	/* What the client was told is what the store holds, on a fresh
	 * connection, and again after one more clean restart. */
	check = h2t_connect(&srv);
	verify_blocks(check, w);
	h2_disconnect(check);
	cr_assert_eq(h2t_stop(&srv, SIGTERM), 0);
	h2t_restart_same_port(&srv);
	/* The loaded client got through that restart with its handle. */
	{
		uint8_t got[BS], want[BS];

		h2t_pattern(want, BS, block_seed(1, 0, w[1].acked[0]));
		cr_assert_eq(h2_pread(v, got, BS, block_off(1, 0)), 0, "%s",
			     h2_last_error());
		cr_assert_eq(memcmp(got, want, BS), 0);
	}
	check = h2t_connect(&srv);
	verify_blocks(check, w);
	h2_disconnect(check);
	h2_volume_close(v);
	h2_disconnect(c);
}

/*
 * Unclean restart: h2d is killed.  A write flushed before survives; a
 * write acknowledged but not flushed may not, and the first flush of the
 * volume (and the first sync of the client) after the reconnect says so,
 * once.  A clean restart afterwards reports nothing.
 */
Test(reconnect, a_killed_server_makes_the_next_flush_report_possible_loss)
{
	uint8_t a[BS], b[BS], got[BS];
	h2_client *c;
	h2_volume *v;
	int r;

	h2t_start(&srv, NULL);
	c = connect_reconnecting();
	cr_assert_eq(h2_volume_create(c, "k", 4 * MiB), 0);
	v = open_vol(c, "k");
	h2t_pattern(a, BS, 1);
	h2t_pattern(b, BS, 2);
	cr_assert_eq(h2_pwrite(v, a, BS, 0, 0), 0);
	cr_assert_eq(h2_flush(v), 0);
	cr_assert_eq(h2_pwrite(v, b, BS, BS, 0), 0); /* not flushed */
	cr_assert_eq(h2t_stop(&srv, SIGKILL), 128 + SIGKILL);
	h2t_restart_same_port(&srv);

	r = h2_flush(v);
	cr_assert_eq(r, H2_EUNSYNCED, "%s (%s)", h2_strerror(r),
		     h2_last_error());
	cr_assert_eq(h2_flush(v), 0, "%s", h2_last_error());
	cr_assert_eq(h2_sync(c), H2_EUNSYNCED);
	cr_assert_eq(h2_sync(c), 0);
	cr_assert_eq(h2_pread(v, got, BS, 0), 0);
	cr_assert_eq(memcmp(got, a, BS), 0, "a flushed write was lost");

	/* Now a clean restart: nothing to report. */
	cr_assert_eq(h2_pwrite(v, b, BS, 2 * BS, 0), 0);
	cr_assert_eq(h2t_stop(&srv, SIGTERM), 0);
	h2t_restart_same_port(&srv);
	cr_assert_eq(h2_flush(v), 0, "%s", h2_last_error());
	cr_assert_eq(h2_pread(v, got, BS, 2 * BS), 0);
	cr_assert_eq(memcmp(got, b, BS), 0);
	h2_volume_close(v);
	h2_disconnect(c);
}

/* A volume the client may no longer see after the restart (its rights
 * were withdrawn) fails its calls; the client itself goes on. */
Test(reconnect, a_volume_that_cannot_be_opened_again_fails_its_calls)
{
	static const char *const extra[] = {"--access", "bob=write:*", NULL};
	uint8_t buf[BS] = {1};
	h2_volume_info *list = NULL;
	size_t n = 0;
	h2_client *c, *admin;
	h2_volume *v;
	int r;

	h2t_start(&srv, extra);
	admin = h2t_connect(&srv);
	cr_assert_eq(h2_volume_create(admin, "vm-a", 4 * MiB), 0);
	cr_assert_eq(h2_volume_create(admin, "db-a", 4 * MiB), 0);
	h2_disconnect(admin);
	h2t_issue_client(&srv, "bob", "bob", 30, false);
	c = connect_as(h2t_path(&srv, "bob.crt"), h2t_path(&srv, "bob.key"));
	v = open_vol(c, "vm-a");
	cr_assert_eq(h2_pwrite(v, buf, BS, 0, 0), 0);
	cr_assert_eq(h2t_stop(&srv, SIGTERM), 0);
	srv.extra[1] = "bob=write:db-*"; /* kept for the restart */
	h2t_restart_same_port(&srv);
	r = h2_pread(v, buf, BS, 0);
	cr_assert_eq(r, H2_ENOENT, "%s (%s)", h2_strerror(r), h2_last_error());
	cr_assert(strstr(h2_last_error(), "could not be opened again"), "%s",
		  h2_last_error());
	cr_assert_eq(h2_volume_close(v), 0);
	cr_assert_eq(h2_volume_list(c, &list, &n), 0, "%s", h2_last_error());
	cr_assert_eq(n, 1);
	cr_assert_str_eq(list[0].name, "db-a");
	free(list);
	h2_disconnect(c);
}
