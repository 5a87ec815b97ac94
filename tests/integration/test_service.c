/*
 * h2d end to end: a real server process, driven through libh2client.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define KiB 1024ull
#define MiB (1024ull * 1024)

static struct h2t_srv srv;

static void stop_server(void)
{
	h2t_cleanup(&srv);
}

static h2_volume *open_vol(h2_client *c, const char *name, unsigned flags)
{
	h2_volume *v = NULL;
	int r = h2_volume_open(c, name, flags, &v);

	cr_assert_eq(r, 0, "open %s: %s (%s)", name, h2_strerror(r),
		     h2_last_error());
	return v;
}

static void create(h2_client *c, const char *name, uint64_t size)
{
	int r = h2_volume_create(c, name, size);

	cr_assert_eq(r, 0, "create %s: %s (%s)", name, h2_strerror(r),
		     h2_last_error());
}

/* Writes at unaligned offsets and lengths, read back across a restart. */
Test(service, data_survives_restart_after_sync, .fini = stop_server)
{
	static const struct {
		uint64_t off, len;
	} w[] = {
		{0, 4096},	   {4096 * 3 + 17, 10000}, {1 * MiB - 5, 3 * MiB},
		{63 * MiB, 1 * MiB}, {7, 1},		   {20 * MiB, 2 * MiB + 3},
	};
	uint8_t *buf = malloc(4 * MiB), *got = malloc(4 * MiB);
	h2_client *c;
	h2_volume *v;

	h2t_start(&srv, NULL);
	c = h2t_connect(&srv);
	create(c, "vm1", 64 * MiB);
	v = open_vol(c, "vm1", H2_OPEN_RW);
	for (size_t i = 0; i < sizeof(w) / sizeof(w[0]); i++) {
		h2t_pattern(buf, w[i].len, i + 1);
		cr_assert_eq(h2_pwrite(v, buf, w[i].len, w[i].off, 0), 0,
			     "%s", h2_last_error());
	}
	cr_assert_eq(h2_flush(v), 0);
	cr_assert_eq(h2_volume_close(v), 0);
	h2_disconnect(c);
	cr_assert_eq(h2t_stop(&srv, SIGTERM), 0);

	h2t_restart(&srv);
	c = h2t_connect(&srv);
	v = open_vol(c, "vm1", H2_OPEN_RO);
	cr_assert_eq(h2_volume_size(v), 64 * MiB);
	for (size_t i = 0; i < sizeof(w) / sizeof(w[0]); i++) {
		/* Later writes may overlap earlier ones: check only the
		 * parts no later write covered. */
		h2t_pattern(buf, w[i].len, i + 1);
		cr_assert_eq(h2_pread(v, got, w[i].len, w[i].off), 0);
		for (uint64_t b = 0; b < w[i].len; b++) {
			uint64_t at = w[i].off + b;
			bool later = false;

			for (size_t k = i + 1; k < sizeof(w) / sizeof(w[0]);
			     k++)
				later |= at >= w[k].off &&
					 at < w[k].off + w[k].len;
			if (!later && got[b] != buf[b])
				cr_assert_fail("write %zu byte %" PRIu64
					 " differs after restart",
					 i, b);
		}
	}
	/* A hole reads as zeros. */
	cr_assert_eq(h2_pread(v, got, 4096, 40 * MiB), 0);
	for (int i = 0; i < 4096; i++)
		cr_assert_eq(got[i], 0);
	h2_volume_close(v);
	h2_disconnect(c);
	free(buf);
	free(got);
}

Test(service, volume_admin_operations, .fini = stop_server)
{
	h2_volume_info *list = NULL, info;
	size_t n = 0;
	h2_client *c;

	h2t_start(&srv, NULL);
	c = h2t_connect(&srv);
	cr_assert_str_eq(h2_client_identity(c), "admin");
	create(c, "a", 1 * MiB);
	create(c, "b", 16 * 1024 * 1024 * MiB); /* 16 TiB, thin */
	cr_assert_eq(h2_volume_create(c, "a", MiB), H2_EEXIST);
	cr_assert_eq(h2_volume_create(c, "bad/name", MiB), H2_EINVAL);
	cr_assert_eq(h2_volume_list(c, &list, &n), 0);
	cr_assert_eq(n, 2);
	free(list);
	cr_assert_eq(h2_volume_resize(c, "a", 8 * MiB), 0);
	cr_assert_eq(h2_volume_info_get(c, "a", &info), 0);
	cr_assert_eq(info.size, 8 * MiB);
	cr_assert(info.can_admin && info.can_write && info.can_read);
	cr_assert_eq(h2_volume_info_get(c, "nope", &info), H2_ENOENT);
	cr_assert_eq(h2_volume_delete(c, "a"), 0);
	cr_assert_eq(h2_volume_delete(c, "a"), H2_ENOENT);
	h2_disconnect(c);
}

struct worker {
	const struct h2t_srv *s;
	const char *vol;
	uint64_t base, len;
	int seed;
	int err;
};

/* Write a region in 64 KiB pieces, then verify all of it. */
static void *worker_main(void *arg)
{
	struct worker *w = arg;
	h2_client *c = h2t_connect(w->s);
	uint8_t *buf = malloc(w->len), *got = malloc(w->len);
	h2_volume *v = open_vol(c, w->vol, H2_OPEN_RW);

	h2t_pattern(buf, w->len, (uint64_t)w->seed);
	for (uint64_t o = 0; o < w->len && !w->err; o += 64 * KiB)
		w->err = h2_pwrite(v, buf + o, 64 * KiB, w->base + o, 0);
	if (!w->err)
		w->err = h2_pread(v, got, w->len, w->base);
	if (!w->err && memcmp(buf, got, w->len) != 0)
		w->err = -1000;
	h2_volume_close(v);
	h2_disconnect(c);
	free(buf);
	free(got);
	return NULL;
}

Test(service, concurrent_clients_on_shared_and_separate_volumes,
     .fini = stop_server)
{
	struct worker w[6];
	pthread_t t[6];
	h2_client *c;

	h2t_start(&srv, NULL);
	c = h2t_connect(&srv);
	create(c, "shared", 32 * MiB);
	create(c, "own1", 8 * MiB);
	create(c, "own2", 8 * MiB);
	for (int i = 0; i < 6; i++) {
		w[i] = (struct worker){&srv, "shared", (uint64_t)i * 4 * MiB,
				       4 * MiB, i + 1, 0};
		if (i >= 4) {
			w[i].vol = i == 4 ? "own1" : "own2";
			w[i].base = 0;
		}
		cr_assert_eq(pthread_create(&t[i], NULL, worker_main, &w[i]),
			     0);
	}
	for (int i = 0; i < 6; i++) {
		pthread_join(t[i], NULL);
		cr_expect_eq(w[i].err, 0, "worker %d: %d", i, w[i].err);
	}
	h2_disconnect(c);
}

struct aio_rec {
	int result;
	int order;
	bool done;
};

static int aio_seq;

static void aio_cb(void *arg, int result)
{
	struct aio_rec *r = arg;

	r->result = result;
	r->order = aio_seq++;
	r->done = true;
}

/* 64 writes and 64 reads in flight from one thread; a flush issued before
 * a read of clean data completes after it (out of order). */
Test(service, aio_pipelines_and_completes_out_of_order, .fini = stop_server)
{
	enum { N = 64, BS = 16 * 1024 };
	static struct aio_rec wr[N], rd[N], fl, late;
	uint8_t *data = malloc(N * BS), *got = calloc(N, BS);
	uint8_t *big = malloc(8 * MiB), small[4096];
	h2_client *c;
	h2_volume *v;

	h2t_start(&srv, NULL);
	c = h2t_connect(&srv);
	create(c, "q", 128 * MiB);
	v = open_vol(c, "q", H2_OPEN_RW);
	h2t_pattern(data, N * BS, 42);
	for (int i = 0; i < N; i++)
		cr_assert_eq(h2_aio_pwrite(v, data + i * BS, BS,
					   (uint64_t)i * BS, 0, aio_cb,
					   &wr[i]),
			     0);
	cr_assert_geq(h2_aio_inflight(c), 1);
	while (h2_aio_inflight(c) > 0)
		cr_assert_geq(h2_aio_poll(c, -1), 0);
	for (int i = 0; i < N; i++)
		cr_assert(wr[i].done && wr[i].result == 0);
	for (int i = 0; i < N; i++)
		cr_assert_eq(h2_aio_pread(v, got + i * BS, BS,
					  (uint64_t)i * BS, aio_cb, &rd[i]),
			     0);
	while (h2_aio_inflight(c) > 0)
		cr_assert_geq(h2_aio_poll(c, -1), 0);
	for (int i = 0; i < N; i++)
		cr_assert(rd[i].done && rd[i].result == 0);
	cr_assert_eq(memcmp(data, got, N * BS), 0);

	/* Dirty 64 MiB, then flush (slow: writes it all) and a small read
	 * queued behind it on the same connection. */
	for (int i = 0; i < 8; i++) {
		h2t_pattern(big, 8 * MiB, 100 + (uint64_t)i);
		cr_assert_eq(h2_pwrite(v, big, 8 * MiB, 64 * MiB + i * 8 * MiB,
				       0),
			     0);
	}
	cr_assert_eq(h2_aio_flush(v, aio_cb, &fl), 0);
	cr_assert_eq(h2_aio_pread(v, small, sizeof(small), 0, aio_cb, &late),
		     0);
	while (h2_aio_inflight(c) > 0)
		cr_assert_geq(h2_aio_poll(c, -1), 0);
	cr_assert(fl.done && fl.result == 0 && late.done && late.result == 0);
	cr_assert_lt(late.order, fl.order,
		     "the read should overtake the flush");
	cr_assert_eq(memcmp(small, data, sizeof(small)), 0);
	h2_volume_close(v);
	h2_disconnect(c);
	free(data);
	free(got);
	free(big);
}

Test(service, transactions_are_atomic, .fini = stop_server)
{
	uint8_t a[8192], b[4096], got[3 * 4096];
	h2_client *c;
	h2_volume *v;
	h2_txn *t;

	h2t_start(&srv, NULL);
	c = h2t_connect(&srv);
	create(c, "t", 1 * MiB);
	v = open_vol(c, "t", H2_OPEN_RW);
	memset(a, 0xaa, sizeof(a));
	memset(b, 0xbb, sizeof(b));
	cr_assert_eq(h2_pwrite(v, a, sizeof(a), 8192, 0), 0);

	cr_assert_eq(h2_txn_begin(v, &t), 0);
	cr_assert_eq(h2_txn_write(t, a, 4096, 0), 0);
	cr_assert_eq(h2_txn_trim(t, 8192, 4096), 0);
	cr_assert_eq(h2_txn_write(t, b, 4096, 4096), 0);
	cr_assert_eq(h2_txn_commit(t, H2_FUA), 0);
	cr_assert_eq(h2_pread(v, got, sizeof(got), 0), 0);
	for (int i = 0; i < 4096; i++) {
		cr_assert_eq(got[i], 0xaa);
		cr_assert_eq(got[4096 + i], 0xbb);
		cr_assert_eq(got[8192 + i], 0);
	}

	/* One op out of range: nothing of the batch is applied. */
	cr_assert_eq(h2_txn_begin(v, &t), 0);
	cr_assert_eq(h2_txn_write(t, b, 4096, 0), 0);
	h2_txn_write(t, b, 4096, 1 * MiB);
	cr_assert_lt(h2_txn_commit(t, 0), 0);
	cr_assert_eq(h2_pread(v, got, 4096, 0), 0);
	cr_assert_eq(got[0], 0xaa);

	/* Abort sends nothing. */
	cr_assert_eq(h2_txn_begin(v, &t), 0);
	cr_assert_eq(h2_txn_write(t, b, 4096, 0), 0);
	h2_txn_abort(t);
	cr_assert_eq(h2_pread(v, got, 4096, 0), 0);
	cr_assert_eq(got[0], 0xaa);
	h2_volume_close(v);
	h2_disconnect(c);
}

Test(service, access_rules_limit_and_hide_volumes, .fini = stop_server)
{
	static const char *const extra[] = {"--access", "reader=read:pub-*",
					    "--access", "writer=write:pub-rw",
					    NULL};
	h2_volume_info *list = NULL, info;
	h2_client *admin, *rd, *wr, *nobody;
	uint8_t buf[4096] = {1};
	h2_volume *v;
	size_t n = 0;

	h2t_start(&srv, extra);
	admin = h2t_connect(&srv);
	create(admin, "pub-ro", MiB);
	create(admin, "pub-rw", MiB);
	create(admin, "secret", MiB);
	h2t_issue_client(&srv, "reader", "reader", 30, false);
	h2t_issue_client(&srv, "writer", "writer", 30, false);
	h2t_issue_client(&srv, "nobody", "nobody", 30, false);
	cr_assert_eq(h2t_connect_with(&srv, h2t_path(&srv, "reader.crt"),
				      h2t_path(&srv, "reader.key"), &rd),
		     0, "%s", h2_last_error());
	cr_assert_eq(h2t_connect_with(&srv, h2t_path(&srv, "writer.crt"),
				      h2t_path(&srv, "writer.key"), &wr),
		     0);
	cr_assert_eq(h2t_connect_with(&srv, h2t_path(&srv, "nobody.crt"),
				      h2t_path(&srv, "nobody.key"), &nobody),
		     0);

	/* The reader sees only what it may read, and cannot write it. */
	cr_assert_eq(h2_volume_list(rd, &list, &n), 0);
	cr_assert_eq(n, 2);
	for (size_t i = 0; i < n; i++) {
		cr_assert_str_neq(list[i].name, "secret");
		cr_assert(list[i].can_read && !list[i].can_write);
	}
	free(list);
	cr_assert_eq(h2_volume_info_get(rd, "secret", &info), H2_ENOENT);
	cr_assert_eq(h2_volume_open(rd, "secret", H2_OPEN_RO, &v), H2_ENOENT);
	cr_assert_eq(h2_volume_open(rd, "pub-ro", H2_OPEN_RW, &v), H2_EPERM);
	v = open_vol(rd, "pub-ro", H2_OPEN_RO);
	cr_assert_eq(h2_pwrite(v, buf, sizeof(buf), 0, 0), H2_EROFS);
	cr_assert_eq(h2_pread(v, buf, sizeof(buf), 0), 0);
	h2_volume_close(v);
	cr_assert_eq(h2_volume_create(rd, "pub-new", MiB), H2_EPERM);
	cr_assert_eq(h2_volume_delete(rd, "pub-ro"), H2_EPERM);

	/* The writer may write its volume but not administer it. */
	v = open_vol(wr, "pub-rw", H2_OPEN_RW);
	cr_assert_eq(h2_pwrite(v, buf, sizeof(buf), 0, 0), 0);
	h2_volume_close(v);
	cr_assert_eq(h2_volume_resize(wr, "pub-rw", 2 * MiB), H2_EPERM);

	/* An identity without rules sees nothing at all. */
	cr_assert_eq(h2_volume_list(nobody, &list, &n), 0);
	cr_assert_eq(n, 0);
	free(list);
	cr_assert_eq(h2_volume_open(nobody, "pub-ro", H2_OPEN_RO, &v),
		     H2_ENOENT);
	h2_disconnect(rd);
	h2_disconnect(wr);
	h2_disconnect(nobody);
	h2_disconnect(admin);
}

Test(service, bad_certificates_are_refused_at_the_handshake,
     .fini = stop_server)
{
	h2_client *c = NULL;
	int r;

	h2t_start(&srv, NULL);
	h2t_issue_client(&srv, "stranger", "admin", 30, true);
	h2t_issue_client(&srv, "expired", "admin", -1, false);
	r = h2t_connect_with(&srv, h2t_path(&srv, "stranger.crt"),
			     h2t_path(&srv, "stranger.key"), &c);
	cr_assert_eq(r, H2_ETLS, "other CA: %s", h2_strerror(r));
	r = h2t_connect_with(&srv, h2t_path(&srv, "expired.crt"),
			     h2t_path(&srv, "expired.key"), &c);
	cr_assert_eq(r, H2_ETLS, "expired: %s", h2_strerror(r));
	r = h2t_connect_with(&srv, NULL, NULL, &c);
	cr_assert_eq(r, H2_ETLS, "no certificate: %s", h2_strerror(r));
	/* The server still serves a good client. */
	c = h2t_connect(&srv);
	cr_assert_eq(h2_volume_create(c, "ok", MiB), 0);
	h2_disconnect(c);
}

struct slot {
	int result; /* 1: not answered */
	atomic_uint *acked;
};

static void slot_cb(void *arg, int result)
{
	struct slot *sl = arg;

	sl->result = result;
	if (result == 0)
		atomic_fetch_add(sl->acked, 1);
}

/* SIGTERM while writes are in flight: every acknowledged write is there
 * after a restart. */
Test(service, sigterm_keeps_every_acknowledged_write, .fini = stop_server)
{
	enum { BS = 4096, SLOTS = 4096 };
	static uint8_t blocks[SLOTS][BS], got[BS];
	static struct slot slots[SLOTS];
	atomic_uint acked = 0;
	unsigned sent = 0, nacked = 0;
	bool killed = false;
	h2_client *c;
	h2_volume *v;
	int status;

	h2t_start(&srv, NULL);
	c = h2t_connect(&srv);
	create(c, "s", SLOTS * BS);
	v = open_vol(c, "s", H2_OPEN_RW);
	for (unsigned i = 0; i < SLOTS; i++) {
		h2t_pattern(blocks[i], BS, i + 7);
		slots[i] = (struct slot){1, &acked};
	}
	/* Keep 32 writes in flight; SIGTERM after 1000 acknowledgements. */
	while (sent < SLOTS) {
		while (sent < SLOTS && h2_aio_inflight(c) < 32) {
			if (h2_aio_pwrite(v, blocks[sent], BS,
					  (uint64_t)sent * BS, 0, slot_cb,
					  &slots[sent]) < 0)
				goto drained;
			sent++;
		}
		if (h2_aio_poll(c, -1) < 0)
			break;
		if (!killed && atomic_load(&acked) >= 1000) {
			kill(srv.pid, SIGTERM);
			killed = true;
		}
	}
drained:
	while (h2_aio_inflight(c) > 0 && h2_aio_poll(c, -1) >= 0)
		;
	h2_disconnect(c);
	cr_assert(killed);
	status = h2t_stop(&srv, 0);
	cr_assert_eq(status, 0, "h2d exit status %d", status);

	h2t_restart(&srv);
	c = h2t_connect(&srv);
	v = open_vol(c, "s", H2_OPEN_RO);
	for (unsigned i = 0; i < SLOTS; i++) {
		if (slots[i].result != 0)
			continue;
		nacked++;
		cr_assert_eq(h2_pread(v, got, BS, (uint64_t)i * BS), 0);
		cr_assert_eq(memcmp(got, blocks[i], BS), 0,
			     "acknowledged write %u is missing", i);
	}
	cr_assert_geq(nacked, 1000);
	h2_volume_close(v);
	h2_disconnect(c);
}

struct ext_count {
	uint64_t n, covered, data;
	uint64_t next;
	bool ordered;
};

static int count_ext(void *arg, uint64_t off, uint64_t len, bool hole)
{
	struct ext_count *e = arg;

	e->ordered &= off == e->next;
	e->next = off + len;
	e->n++;
	e->covered += len;
	if (!hole)
		e->data += len;
	return 0;
}

static void ignore_cb(void *arg, int result)
{
	int *bad = arg;

	if (result != 0)
		(*bad)++;
}

/* A map of thousands of extents comes back whole: the server splits it
 * over replies that each fit a frame, and the client asks again.  Far
 * into a large thin volume, with 1 GiB holes, so each extent costs many
 * bytes on the wire (8-byte offsets, 5-byte hole lengths). */
Test(service, block_status_of_a_fragmented_volume, .fini = stop_server)
{
	enum { DATA = 4096 };
	const uint64_t base = 1ull << 49, stride = 1ull << 30;
	static uint8_t blk[4096];
	struct ext_count e = {.ordered = true};
	h2_client *c;
	h2_volume *v;
	int bad = 0;

	h2t_start(&srv, NULL);
	c = h2t_connect(&srv);
	create(c, "frag", base + DATA * stride);
	v = open_vol(c, "frag", H2_OPEN_RW);
	memset(blk, 0x5a, sizeof(blk));
	for (uint64_t i = 0; i < DATA; i++) {
		while (h2_aio_inflight(c) >= 32)
			cr_assert_geq(h2_aio_poll(c, -1), 0);
		cr_assert_eq(h2_aio_pwrite(v, blk, sizeof(blk),
					   base + i * stride, 0, ignore_cb,
					   &bad),
			     0);
	}
	while (h2_aio_inflight(c) > 0)
		cr_assert_geq(h2_aio_poll(c, -1), 0);
	cr_assert_eq(bad, 0);
	e.next = base;
	cr_assert_eq(h2_block_status(v, base, DATA * stride, count_ext, &e), 0,
		     "%s", h2_last_error());
	cr_assert(e.ordered);
	cr_assert_eq(e.n, 2 * DATA);
	cr_assert_eq(e.covered, DATA * stride);
	cr_assert_eq(e.data, (uint64_t)DATA * 4096);
	h2_volume_close(v);
	h2_disconnect(c);
}
