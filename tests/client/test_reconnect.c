/*
 * libh2client with H2_RECONNECT against the in-process fake h2d
 * (fake_server.c): a connection lost with requests in flight, the new
 * connection, volumes opened again under new handles, what is sent again
 * and what fails, the durability report (H2_EUNSYNCED), a server that
 * stops cleanly, and giving up after the deadline.
 *
 * The fake numbers its connections 1, 2, ...; connection k hands out
 * handle FAKE_CONN_HANDLE(k) for vm1 and says instance k (a new server
 * process each time) unless same_instance is set.  Nothing here waits
 * by sleeping: tests wait for replies, callbacks or the fake's condition
 * variable.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fake_fixture.h"
#include "h2client.h"

TestSuite(reconnect, .init = fixture_setup, .fini = fixture_teardown,
	  .timeout = 60);

/* Connect with H2_RECONNECT and the given deadline (0: default). */
static h2_client *connect_rc(unsigned reconnect_ms)
{
	h2_client_opts o = {
	    .server = server_addr,
	    .ca_file = tpath("ca.crt"),
	    .cert_file = tpath("client.crt"),
	    .key_file = tpath("client.key"),
	    .client_name = "reconnect-test",
	    .flags = H2_RECONNECT,
	    .reconnect_timeout_ms = reconnect_ms,
	};
	h2_client *c = NULL;
	int rc = h2_connect(&o, &c);

	cr_assert_eq(rc, 0, "h2_connect: %s: %s", h2_strerror(rc),
		     h2_last_error());
	return c;
}

static h2_volume *open_vm1(h2_client *c)
{
	h2_volume *v = NULL;
	int rc = h2_volume_open(c, "vm1", H2_OPEN_RW, &v);

	cr_assert_eq(rc, 0, "open: %s", h2_last_error());
	return v;
}

static void fill(uint8_t *buf, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(i * 31 + seed * 101 + (i >> 9));
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * Sent again.
 */

Test(reconnect, write_in_flight_is_sent_again_on_the_new_handle)
{
	uint8_t buf[8192], got[8192];
	const struct fake_rec *r;
	h2_client *c;
	h2_volume *v;
	int rc;

	F.mode = FAKE_CLOSE; /* the first write: read, unanswered, dropped */
	F.n = 1;
	F.once = true;
	start_fake();
	c = connect_rc(0);
	v = open_vm1(c);
	fill(buf, sizeof(buf), 1);
	rc = h2_pwrite(v, buf, sizeof(buf), 4096, 0);
	cr_assert_eq(rc, 0, "%s: %s", h2_strerror(rc), h2_last_error());

	/* Hello and the volume again, then the write, on connection 2. */
	cr_assert_eq(fake_count_op(&F, H2__REQUEST__OP_HELLO), 2);
	cr_assert_eq(fake_count_op(&F, H2__REQUEST__OP_VOLUME_OPEN), 2);
	r = fake_last(&F, H2__REQUEST__OP_VOLUME_OPEN);
	cr_assert_eq(r->conn, 2);
	cr_assert_str_eq(r->rq->volume_open->name, "vm1");
	cr_assert(r->rq->volume_open->write, "opened again read-only");
	cr_assert_eq(fake_count_op(&F, H2__REQUEST__OP_WRITE), 2);
	r = fake_last(&F, H2__REQUEST__OP_WRITE);
	cr_assert_eq(r->conn, 2);
	cr_assert_eq(r->rq->write->handle, FAKE_CONN_HANDLE(2));
	cr_assert_eq(r->rq->write->offset, 4096);
	cr_assert_eq(memcmp(r->payload, buf, sizeof(buf)), 0);

	/* The caller's handle keeps working, under the new number. */
	cr_assert_eq(h2_pread(v, got, sizeof(got), 4096), 0, "%s",
		     h2_last_error());
	cr_assert_eq(memcmp(got, buf, sizeof(got)), 0);
	cr_assert_eq(fake_last(&F, H2__REQUEST__OP_READ)->rq->read->handle,
		     FAKE_CONN_HANDLE(2));
	/* Nothing acknowledged was in doubt: the flush reports no loss. */
	cr_assert_eq(h2_flush(v), 0, "%s", h2_last_error());
	cr_assert_eq(fake_last(&F, H2__REQUEST__OP_FLUSH)->rq->flush->handle,
		     FAKE_CONN_HANDLE(2));
	cr_assert_eq(h2_volume_close(v), 0);
	cr_assert_eq(fake_last(&F, H2__REQUEST__OP_VOLUME_CLOSE)
			 ->rq->volume_close->handle,
		     FAKE_CONN_HANDLE(2));
	h2_disconnect(c);
	stop_fake();
}

Test(reconnect, txn_in_flight_is_sent_again_whole)
{
	uint8_t a[4096], got[3 * 4096];
	const struct fake_rec *r;
	h2_client *c;
	h2_volume *v;
	h2_txn *t;

	F.mode = FAKE_CLOSE;
	F.n = 1;
	F.once = true;
	start_fake();
	c = connect_rc(0);
	v = open_vm1(c);
	fill(a, sizeof(a), 7);
	cr_assert_eq(h2_txn_begin(v, &t), 0);
	cr_assert_eq(h2_txn_write(t, a, sizeof(a), 0), 0);
	cr_assert_eq(h2_txn_trim(t, 4096, 4096), 0);
	cr_assert_eq(h2_txn_write(t, a, sizeof(a), 8192), 0);
	cr_assert_eq(h2_txn_commit(t, 0), 0, "%s", h2_last_error());
	cr_assert_eq(fake_count_op(&F, H2__REQUEST__OP_TXN), 2);
	r = fake_last(&F, H2__REQUEST__OP_TXN);
	cr_assert_eq(r->conn, 2);
	cr_assert_eq(r->rq->txn->handle, FAKE_CONN_HANDLE(2));
	cr_assert_eq(r->rq->txn->n_ops, 3);
	cr_assert_eq(h2_pread(v, got, sizeof(got), 0), 0);
	cr_assert_eq(memcmp(got, a, 4096), 0);
	for (int i = 4096; i < 8192; i++)
		cr_assert_eq(got[i], 0);
	cr_assert_eq(memcmp(got + 8192, a, 4096), 0);
	h2_disconnect(c);
	stop_fake();
}

struct aio_state {
	int calls[32];
	int result[32];
};

struct aio_arg {
	struct aio_state *s;
	int i;
};

static void aio_done(void *arg, int result)
{
	struct aio_arg *a = arg;

	a->s->calls[a->i]++;
	a->s->result[a->i] = result;
}

Test(reconnect, aio_requests_in_flight_are_sent_again_and_called_back_once)
{
	enum { N = 16, LEN = 4096 };
	static struct aio_state s;
	static uint8_t bufs[N][LEN], got[N * LEN];
	struct aio_arg args[N + 1];
	h2_client *c;
	h2_volume *v;
	int i, n;

	/* Eight requests read and dropped on the first connection; the
	 * others were queued or sent behind them. */
	F.mode = FAKE_CLOSE;
	F.n = 8;
	F.once = true;
	F.max_inflight = 64;
	start_fake();
	c = connect_rc(0);
	v = open_vm1(c);
	for (i = 0; i < N; i++) {
		fill(bufs[i], LEN, (unsigned)i + 100);
		args[i] = (struct aio_arg){.s = &s, .i = i};
		cr_assert_eq(h2_aio_pwrite(v, bufs[i], LEN, (uint64_t)i * LEN,
					   0, aio_done, &args[i]),
			     0);
	}
	args[N] = (struct aio_arg){.s = &s, .i = N};
	cr_assert_eq(h2_aio_flush(v, aio_done, &args[N]), 0);
	while (h2_aio_inflight(c) > 0) {
		n = h2_aio_poll(c, -1);
		cr_assert_geq(n, 0, "%d: %s", n, h2_last_error());
	}
	for (i = 0; i <= N; i++) {
		cr_assert_eq(s.calls[i], 1, "callback %d ran %d times", i,
			     s.calls[i]);
		cr_assert_eq(s.result[i], 0, "request %d: %s", i,
			     h2_strerror(s.result[i]));
	}
	cr_assert_eq(h2_pread(v, got, sizeof(got), 0), 0);
	for (i = 0; i < N; i++)
		cr_assert_eq(memcmp(got + i * LEN, bufs[i], LEN), 0, "block %d",
			     i);
	cr_assert_eq(fake_count_op(&F, H2__REQUEST__OP_HELLO), 2);
	h2_disconnect(c);
	stop_fake();
}

/*
 * Not sent again.
 */

struct lost_case {
	H2__Request__OpCase op;
	const char *name;
};

ParameterizedTestParameters(reconnect,
			    volume_admin_lost_in_flight_fails_with_econnlost)
{
	static struct lost_case cases[] = {
	    {H2__REQUEST__OP_VOLUME_CREATE, "create"},
	    {H2__REQUEST__OP_VOLUME_DELETE, "delete"},
	    {H2__REQUEST__OP_VOLUME_RESIZE, "resize"},
	};

	return cr_make_param_array(struct lost_case, cases,
				   sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct lost_case *tc, reconnect,
		  volume_admin_lost_in_flight_fails_with_econnlost)
{
	h2_volume_info *list = NULL;
	size_t n = 0;
	h2_client *c;
	int rc;

	F.mode = FAKE_CLOSE;
	F.drop_op = tc->op;
	F.n = 1;
	F.once = true;
	start_fake();
	c = connect_rc(0);
	if (tc->op == H2__REQUEST__OP_VOLUME_CREATE)
		rc = h2_volume_create(c, "new", 1u << 20);
	else if (tc->op == H2__REQUEST__OP_VOLUME_DELETE)
		rc = h2_volume_delete(c, "old");
	else
		rc = h2_volume_resize(c, "vm1", 2u << 20);
	cr_assert_eq(rc, H2_ECONNLOST, "%s: %s (%s)", tc->name, h2_strerror(rc),
		     h2_last_error());
	cr_assert(strstr(h2_last_error(), "may or may not have been applied"),
		  "%s", h2_last_error());
	/* Not sent twice, and the client is alive on its new connection. */
	cr_assert_eq(fake_count_op(&F, tc->op), 1);
	cr_assert_eq(h2_volume_list(c, &list, &n), 0, "%s", h2_last_error());
	cr_assert_eq(n, 2);
	free(list);
	cr_assert_eq(fake_count_op(&F, H2__REQUEST__OP_HELLO), 2);
	h2_disconnect(c);
	stop_fake();
}

Test(reconnect, a_clean_stop_sends_even_volume_create_again_and_loses_nothing)
{
	uint8_t buf[4096];
	const struct fake_rec *r;
	h2_client *c;
	h2_volume *v;
	int rc;

	/* The fake plays h2d on SIGTERM: the create is answered "not
	 * executed", then close_notify. */
	F.mode = FAKE_STOP;
	F.drop_op = H2__REQUEST__OP_VOLUME_CREATE;
	F.n = 1;
	F.once = true;
	start_fake();
	c = connect_rc(0);
	v = open_vm1(c);
	fill(buf, sizeof(buf), 3);
	cr_assert_eq(h2_pwrite(v, buf, sizeof(buf), 0, 0), 0); /* unsynced */
	rc = h2_volume_create(c, "new", 1u << 20);
	cr_assert_eq(rc, 0, "%s: %s", h2_strerror(rc), h2_last_error());
	cr_assert_eq(fake_count_op(&F, H2__REQUEST__OP_VOLUME_CREATE), 2);
	r = fake_last(&F, H2__REQUEST__OP_VOLUME_CREATE);
	cr_assert_eq(r->conn, 2);
	cr_assert_str_eq(r->rq->volume_create->name, "new");
	/* close_notify said the acknowledged write is durable. */
	cr_assert_eq(h2_flush(v), 0, "%s: %s", h2_strerror(rc),
		     h2_last_error());
	cr_assert_eq(h2_sync(c), 0);
	cr_assert_eq(h2_pwrite(v, buf, sizeof(buf), 8192, 0), 0);
	cr_assert_eq(fake_last(&F, H2__REQUEST__OP_WRITE)->rq->write->handle,
		     FAKE_CONN_HANDLE(2));
	h2_disconnect(c);
	stop_fake();
}

Test(reconnect, a_server_that_says_unavailable_but_stays_open_is_left)
{
	uint64_t t0;
	h2_client *c;
	int rc;

	/* UNAVAILABLE promises a close; the library waits for it no longer
	 * than the reconnect deadline, then connects again. */
	F.mode = FAKE_STOP;
	F.drop_op = H2__REQUEST__OP_VOLUME_CREATE;
	F.n = 1;
	F.once = true;
	F.stop_stays_open = true;
	start_fake();
	c = connect_rc(700);
	t0 = now_ms();
	rc = h2_volume_create(c, "new", 1u << 20);
	cr_assert_eq(rc, 0, "%s: %s", h2_strerror(rc), h2_last_error());
	cr_assert_geq(now_ms() - t0, 700);
	cr_assert_eq(fake_count_op(&F, H2__REQUEST__OP_VOLUME_CREATE), 2);
	cr_assert_eq(fake_last(&F, H2__REQUEST__OP_VOLUME_CREATE)->conn, 2);
	h2_disconnect(c);
	stop_fake();
}

/*
 * Durability across the loss.
 */

/* Write at 0 (acknowledged, not flushed), then a read that the first
 * connection drops without close_notify. */
static void write_then_lose(h2_volume *v, unsigned flags)
{
	uint8_t buf[4096], got[4096];

	fill(buf, sizeof(buf), 9);
	cr_assert_eq(h2_pwrite(v, buf, sizeof(buf), 0, flags), 0);
	cr_assert_eq(h2_pread(v, got, sizeof(got), 0), 0, "%s",
		     h2_last_error());
	cr_assert_eq(fake_count_op(&F, H2__REQUEST__OP_HELLO), 2,
		     "the read did not cost a reconnect");
}

Test(reconnect, unsynced_writes_after_an_unclean_loss_are_reported_once)
{
	h2_client *c;
	h2_volume *v;
	int rc;

	F.mode = FAKE_CLOSE;
	F.drop_op = H2__REQUEST__OP_READ;
	F.n = 1;
	F.once = true;
	start_fake();
	c = connect_rc(0);
	v = open_vm1(c);
	write_then_lose(v, 0);
	/* The flush is done, and says what it cannot promise, once. */
	rc = h2_flush(v);
	cr_assert_eq(rc, H2_EUNSYNCED, "%s: %s", h2_strerror(rc),
		     h2_last_error());
	cr_assert(strstr(h2_last_error(), "may be lost"), "%s",
		  h2_last_error());
	cr_assert_eq(fake_last(&F, H2__REQUEST__OP_FLUSH)->conn, 2);
	cr_assert_eq(h2_flush(v), 0, "%s", h2_last_error());
	/* h2_sync keeps its own account of the same loss. */
	cr_assert_eq(h2_sync(c), H2_EUNSYNCED);
	cr_assert_eq(h2_sync(c), 0);
	h2_disconnect(c);
	stop_fake();
}

Test(reconnect, aio_flush_reports_the_loss_too)
{
	static struct aio_state s;
	struct aio_arg a = {.s = &s, .i = 0};
	h2_client *c;
	h2_volume *v;

	F.mode = FAKE_CLOSE;
	F.drop_op = H2__REQUEST__OP_READ;
	F.n = 1;
	F.once = true;
	start_fake();
	c = connect_rc(0);
	v = open_vm1(c);
	write_then_lose(v, 0);
	cr_assert_eq(h2_aio_flush(v, aio_done, &a), 0);
	cr_assert_eq(h2_aio_poll(c, -1), 1);
	cr_assert_eq(s.result[0], H2_EUNSYNCED);
	cr_assert_eq(h2_flush(v), 0);
	h2_disconnect(c);
	stop_fake();
}

struct noloss_case {
	const char *what;
	bool flush_first; /* the write was flushed before the loss */
	unsigned flags;	  /* of the write */
	bool same_instance;
};

ParameterizedTestParameters(reconnect,
			    no_loss_is_reported_when_none_is_possible)
{
	static struct noloss_case cases[] = {
	    {"flushed before the loss", true, 0, false},
	    {"written with H2_FUA", false, H2_FUA, false},
	    {"the same server process", false, 0, true},
	};

	return cr_make_param_array(struct noloss_case, cases,
				   sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct noloss_case *tc, reconnect,
		  no_loss_is_reported_when_none_is_possible)
{
	uint8_t buf[4096], got[4096];
	h2_client *c;
	h2_volume *v;

	F.mode = FAKE_CLOSE;
	F.drop_op = H2__REQUEST__OP_READ;
	F.n = 1;
	F.once = true;
	F.same_instance = tc->same_instance;
	start_fake();
	c = connect_rc(0);
	v = open_vm1(c);
	fill(buf, sizeof(buf), 5);
	cr_assert_eq(h2_pwrite(v, buf, sizeof(buf), 0, tc->flags), 0);
	if (tc->flush_first)
		cr_assert_eq(h2_flush(v), 0);
	cr_assert_eq(h2_pread(v, got, sizeof(got), 0), 0);
	cr_assert_eq(fake_count_op(&F, H2__REQUEST__OP_HELLO), 2);
	cr_assert_eq(h2_flush(v), 0, "%s: %s", tc->what, h2_last_error());
	cr_assert_eq(h2_sync(c), 0, "%s: %s", tc->what, h2_last_error());
	h2_disconnect(c);
	stop_fake();
}

/*
 * Volumes that cannot come back, and giving up.
 */

Test(reconnect, a_volume_that_cannot_be_opened_again_fails_its_calls)
{
	h2_volume_info info;
	uint8_t buf[512];
	h2_client *c;
	h2_volume *v;
	int rc;

	F.mode = FAKE_CLOSE;
	F.n = 1;
	F.once = true;
	F.reopen_fails = true;
	start_fake();
	c = connect_rc(0);
	v = open_vm1(c);
	rc = h2_pread(v, buf, sizeof(buf), 0);
	cr_assert_eq(rc, H2_ENOENT, "%s: %s", h2_strerror(rc), h2_last_error());
	cr_assert(strstr(h2_last_error(), "could not be opened again"), "%s",
		  h2_last_error());
	cr_assert_eq(h2_flush(v), H2_ENOENT);
	/* The client itself is fine, and the handle can still be freed. */
	cr_assert_eq(h2_volume_info_get(c, "vm1", &info), 0);
	cr_assert_eq(h2_volume_close(v), 0);
	cr_assert_eq(fake_count_op(&F, H2__REQUEST__OP_VOLUME_CLOSE), 0);
	h2_disconnect(c);
	stop_fake();
}

Test(reconnect, gives_up_after_its_deadline_backing_off)
{
	uint8_t buf[512];
	uint64_t t0, took;
	unsigned attempts;
	h2_client *c;
	h2_volume *v;
	int rc;

	/* After the first connection every attempt is accepted and closed
	 * at once: a tight loop would make hundreds within the deadline;
	 * backoff (50, 100, 200 ms ...) makes a handful. */
	F.mode = FAKE_CLOSE;
	F.n = 1;
	F.refuse_after = 1;
	start_fake();
	c = connect_rc(500);
	v = open_vm1(c);
	t0 = now_ms();
	rc = h2_pread(v, buf, sizeof(buf), 0);
	took = now_ms() - t0;
	cr_assert_eq(rc, H2_ECLOSED, "%s: %s", h2_strerror(rc),
		     h2_last_error());
	cr_assert(strstr(h2_last_error(), "no new connection within 500 ms"),
		  "%s", h2_last_error());
	cr_assert_geq(took, 500);
	cr_assert_lt(took, 10000);
	attempts = fake_refused(&F);
	cr_assert_geq(attempts, 3, "%u attempts", attempts);
	cr_assert_leq(attempts, 8, "%u attempts", attempts);
	/* Dead now, as without H2_RECONNECT. */
	cr_assert_eq(h2_pread(v, buf, sizeof(buf), 0), H2_ECLOSED);
	cr_assert_eq(h2_aio_poll(c, 0), H2_ECLOSED);
	h2_disconnect(c);
	stop_fake();
}

Test(reconnect, disconnect_while_reconnecting_returns_at_once)
{
	static struct aio_state s;
	struct aio_arg a = {.s = &s, .i = 0};
	uint8_t buf[512];
	uint64_t t0;
	h2_client *c;
	h2_volume *v;

	F.mode = FAKE_CLOSE;
	F.n = 1;
	F.refuse_after = 1;
	start_fake();
	c = connect_rc(60000);
	v = open_vm1(c);
	cr_assert_eq(h2_aio_pread(v, buf, sizeof(buf), 0, aio_done, &a), 0);
	cr_assert(fake_wait_refused(&F, 2, 20000), "no reconnect attempts");
	cr_assert_eq(s.calls[0], 0);
	t0 = now_ms();
	h2_disconnect(c);
	cr_assert_lt(now_ms() - t0, 3000);
	cr_assert_eq(s.calls[0], 1);
	cr_assert_eq(s.result[0], H2_ECLOSED);
	stop_fake();
}

Test(reconnect, unknown_flags_are_einval)
{
	h2_client_opts o = {.server = "127.0.0.1:1", .flags = 1u << 7};
	h2_client *c = NULL;

	cr_assert_eq(h2_connect(&o, &c), H2_EINVAL);
	cr_assert_null(c);
	cr_assert(strstr(h2_last_error(), "flags"), "%s", h2_last_error());
	cr_assert_str_neq(h2_strerror(H2_ECONNLOST), "unknown error");
	cr_assert_str_neq(h2_strerror(H2_EUNSYNCED), "unknown error");
}
