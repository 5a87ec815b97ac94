/*
 * Engine properties: concurrency, checksums, header rotation and damage,
 * O(1) open, space reuse and a full device.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>

#include "format.h"
#include "helpers.h"

/* --- many threads, shared and separate volumes ------------------------- */

#define NTHREAD 4
#define REGION (256 * 1024)

struct worker {
	struct h2_store *st;
	struct h2_vol *shared, *own;
	int id;
	uint8_t *model_shared, *model_own; /* REGION each */
	int err;
	char msg[256];
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	static _Thread_local uint8_t buf[20000], got[20000];
	uint64_t rs = 0x1234 + (uint64_t)w->id;

	for (int i = 0; i < 400 && !w->err; i++) {
		bool on_shared = t_rand(&rs) % 2;
		struct h2_vol *v = on_shared ? w->shared : w->own;
		uint8_t *model = on_shared ? w->model_shared : w->model_own;
		uint64_t base = on_shared ? (uint64_t)w->id * REGION : 0;
		uint64_t len = 1 + t_rand(&rs) % sizeof(buf);
		uint64_t off = t_rand(&rs) % (REGION - len);
		uint64_t roll = t_rand(&rs) % 10;

		if (roll < 6) {
			t_fill(buf, len, t_rand(&rs), off);
			w->err = h2_vol_write(v, buf, base + off, len, 0);
			memcpy(model + off, buf, len);
		} else if (roll < 7) {
			w->err = h2_vol_trim(v, base + off, len, 0);
			memset(model + off, 0, len);
		} else {
			w->err = h2_vol_read(v, got, base + off, len);
			if (!w->err && memcmp(got, model + off, len) != 0) {
				snprintf(w->msg, sizeof(w->msg),
					 "thread %d: read of %s at %" PRIu64
					 " differs from what it wrote",
					 w->id, on_shared ? "shared" : "own",
					 base + off);
				w->err = -1;
			}
		}
		if (w->err && !w->msg[0])
			snprintf(w->msg, sizeof(w->msg), "thread %d: %s", w->id,
				 h2_core_errmsg());
	}
	return NULL;
}

static void verify_region(struct h2_vol *v, uint64_t base,
			  const uint8_t *model)
{
	static uint8_t got[REGION];

	cr_assert_eq(h2_vol_read(v, got, base, REGION), 0);
	cr_assert_arr_eq(got, model, REGION);
}

Test(engine, concurrent_readers_and_writers_on_shared_and_separate_volumes,
     .timeout = 300)
{
	struct h2_fdev *fd = t_fdev(128 * MiB);
	struct h2_store_opts o = {.flush_interval_ms = 3,
				  .dirty_max = 512 * 1024};
	struct h2_store *st = t_open_opts(fd, &o);
	struct worker w[NTHREAD];
	pthread_t th[NTHREAD];
	struct h2_vol *shared;
	char name[32];

	cr_assert_eq(h2_vol_create(st, "shared", NTHREAD * REGION, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "shared", &shared), 0);
	for (int i = 0; i < NTHREAD; i++) {
		snprintf(name, sizeof(name), "own%d", i);
		cr_assert_eq(h2_vol_create(st, name, REGION, NULL), 0);
		w[i] = (struct worker){.st = st, .shared = shared, .id = i};
		cr_assert_eq(h2_vol_open(st, name, &w[i].own), 0);
		w[i].model_shared = calloc(1, REGION);
		w[i].model_own = calloc(1, REGION);
	}
	for (int i = 0; i < NTHREAD; i++)
		pthread_create(&th[i], NULL, worker_main, &w[i]);
	for (int i = 0; i < NTHREAD; i++) {
		pthread_join(th[i], NULL);
		cr_assert_eq(w[i].err, 0, "%s", w[i].msg);
	}
	for (int i = 0; i < NTHREAD; i++) {
		verify_region(shared, (uint64_t)i * REGION, w[i].model_shared);
		verify_region(w[i].own, 0, w[i].model_own);
		h2_vol_close(w[i].own);
	}
	h2_vol_close(shared);
	cr_assert_eq(h2_store_close(st), 0);

	/* Everything survives close and reopen. */
	st = t_open(fd, false);
	cr_assert_eq(h2_vol_open(st, "shared", &shared), 0);
	for (int i = 0; i < NTHREAD; i++) {
		snprintf(name, sizeof(name), "own%d", i);
		cr_assert_eq(h2_vol_open(st, name, &w[i].own), 0);
		verify_region(shared, (uint64_t)i * REGION, w[i].model_shared);
		verify_region(w[i].own, 0, w[i].model_own);
		h2_vol_close(w[i].own);
		free(w[i].model_shared);
		free(w[i].model_own);
	}
	h2_vol_close(shared);
	cr_assert_eq(h2_store_close(st), 0);
	h2_fdev_free(fd);
}

/* --- checksums --------------------------------------------------------- */

/* Device offset of the first 4 KiB block equal to want, or UINT64_MAX. */
static uint64_t find_block(struct h2_fdev *fd, const uint8_t *want)
{
	struct h2_dev *d = h2_fdev_dev(fd);
	static uint8_t b[H2_BLOCK_SIZE];

	for (uint64_t off = 0; off < d->size; off += H2_BLOCK_SIZE) {
		cr_assert_eq(h2_dev_pread(d, b, sizeof(b), off), 0);
		if (memcmp(b, want, sizeof(b)) == 0)
			return off;
	}
	return UINT64_MAX;
}

Test(engine, damaged_block_is_a_checksum_error_naming_volume_and_offset)
{
	struct h2_fdev *fd = t_fdev(64 * MiB);
	struct h2_store *st = t_open(fd, false);
	static uint8_t w[3 * 4096], r[3 * 4096];
	struct h2_vol *v;
	uint64_t at;
	uint8_t x = 0xff;

	cr_assert_eq(h2_vol_create(st, "disk0", 1 * MiB, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "disk0", &v), 0);
	t_fill(w, sizeof(w), 42, 0);
	cr_assert_eq(h2_vol_write(v, w, 40960, sizeof(w), 0), 0);
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);

	at = find_block(fd, w + 4096); /* the middle block, volume 45056 */
	cr_assert_neq(at, UINT64_MAX);
	cr_assert_eq(h2_fdev_poke(fd, at + 100, &x, 1), 0);

	st = t_open(fd, false);
	cr_assert_eq(h2_vol_open(st, "disk0", &v), 0);
	cr_assert_eq(h2_vol_read(v, r, 40960, sizeof(r)), -EBADMSG);
	cr_assert(strstr(h2_core_errmsg(), "disk0"), "%s", h2_core_errmsg());
	cr_assert(strstr(h2_core_errmsg(), "45056"), "%s", h2_core_errmsg());
	/* Neighbours are fine; the damaged block is never returned. */
	cr_assert_eq(h2_vol_read(v, r, 40960, 4096), 0);
	cr_assert_arr_eq(r, w, 4096);
	cr_assert_eq(h2_vol_read(v, r, 45056 + 200, 10), -EBADMSG);
	/* A partial overwrite needs the old block: refused, nothing
	 * changes; a whole overwrite replaces it. */
	cr_assert_eq(h2_vol_write(v, w, 45056 + 5, 10, 0), -EBADMSG);
	cr_assert_eq(h2_vol_write(v, w + 4096, 45056, 4096, 0), 0);
	cr_assert_eq(h2_vol_read(v, r, 40960, sizeof(r)), 0);
	cr_assert_arr_eq(r, w, sizeof(r));
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);
	h2_fdev_free(fd);
}

/* --- volume headers ---------------------------------------------------- */

static uint64_t header_tid(struct h2_fdev *fd, unsigned i, bool *valid)
{
	struct h2_volhdr h;

	cr_assert_eq(h2_dev_pread(h2_fdev_dev(fd), &h, sizeof(h),
				  h2_hdr_offset(i)),
		     0);
	*valid = h.magic == H2_HDR_MAGIC;
	return h.tid;
}

Test(engine, flushes_rotate_headers_and_one_damaged_copy_is_survived)
{
	struct h2_fdev *fd = t_fdev(64 * MiB);
	struct h2_store *st = t_open(fd, false);
	struct h2_dev_stats before, after;
	uint64_t tids[4], newest = 0, tid;
	unsigned newest_copy = 0;
	uint8_t b[4096] = {1}, junk[512];
	struct h2_store *st2;
	struct h2_vol *v;
	bool valid;

	cr_assert_eq(h2_vol_create(st, "v", 1 * MiB, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	for (int i = 0; i < 6; i++) {
		b[0] = (uint8_t)i;
		cr_assert_eq(h2_vol_write(v, b, 0, sizeof(b), 0), 0);
		cr_assert_eq(h2_store_sync(st, &tid), 0);
	}
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);
	/* Four copies, four different (consecutive) flushes. */
	for (unsigned i = 0; i < 4; i++) {
		tids[i] = header_tid(fd, i, &valid);
		cr_assert(valid);
		cr_assert_eq(tids[i] % 4, i);
		if (tids[i] > newest) {
			newest = tids[i];
			newest_copy = i;
		}
	}
	cr_assert_eq(newest, tid);

	/* Damage the newest copy: the store opens at the one before, with
	 * that flush's contents. */
	memset(junk, 0xa5, sizeof(junk));
	cr_assert_eq(h2_fdev_poke(fd, h2_hdr_offset(newest_copy) + 64, junk,
				  sizeof(junk)),
		     0);
	st = t_open(fd, false);
	{
		struct h2_store_stats s;

		h2_store_stat(st, &s);
		cr_assert_eq(s.durable_tid, newest - 1);
	}
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	cr_assert_eq(h2_vol_read(v, b, 0, sizeof(b)), 0);
	cr_assert_eq(b[0], 4, "expected the contents of the previous flush");
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);

	/* Damage every copy: open fails clearly and writes nothing. */
	for (unsigned i = 0; i < 4; i++)
		cr_assert_eq(h2_fdev_poke(fd, h2_hdr_offset(i) + 64, junk,
					  sizeof(junk)),
			     0);
	h2_dev_get_stats(h2_fdev_dev(fd), &before);
	cr_assert_eq(h2_store_open(h2_fdev_dev(fd), NULL, &st2), -ENOENT);
	cr_assert(strstr(h2_core_errmsg(), "no valid h2 volume header"));
	h2_dev_get_stats(h2_fdev_dev(fd), &after);
	cr_assert_eq(after.bytes_written, before.bytes_written,
		     "a failed open must never write (no reformat)");
	h2_fdev_free(fd);
}

/* --- open is O(1) in data stored --------------------------------------- */

static uint64_t open_read_bytes(struct h2_fdev *fd)
{
	struct h2_dev_stats a, b;
	struct h2_store_opts o = {.read_only = true};
	struct h2_store *st;

	h2_dev_get_stats(h2_fdev_dev(fd), &a);
	cr_assert_eq(h2_store_open(h2_fdev_dev(fd), &o, &st), 0);
	h2_dev_get_stats(h2_fdev_dev(fd), &b);
	h2_store_close(st);
	return b.bytes_read - a.bytes_read;
}

/* A write given in pieces (the NBD server's payload chains) lands like
 * the same bytes in one buffer; malformed pieces are refused. */
Test(engine, write_in_pieces_equals_one_buffer)
{
	struct h2_fdev *fd = t_fdev(64 * MiB);
	struct h2_store *st = t_open(fd, false);
	static uint8_t want[10000], got[16384];
	struct iovec iov[4] = {
	    {want, 1000}, {want + 1000, 0}, {want + 1000, 6805},
	    {want + 7805, 2195}};
	struct h2_op op = {.type = H2_OP_WRITE, .off = 4096 * 3 - 77,
			   .len = sizeof(want), .iov = iov, .iovcnt = 4};
	struct h2_vol *v;

	t_fill(want, sizeof(want), 5, 0);
	cr_assert_eq(h2_vol_create(st, "v", 16 * MiB, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	cr_assert_eq(h2_vol_txn(v, &op, 1, 0, NULL), 0, "%s",
		     h2_core_errmsg());
	cr_assert_eq(h2_vol_read(v, got, op.off, sizeof(want)), 0);
	cr_assert_eq(memcmp(got, want, sizeof(want)), 0);
	/* The bytes around it are still zero. */
	cr_assert_eq(h2_vol_read(v, got, 8192, 4096), 0);
	for (int i = 0; i < 4096 - 77; i++)
		cr_assert_eq(got[i], 0);

	op.len = sizeof(want) - 1; /* the pieces hold one more */
	cr_assert_eq(h2_vol_txn(v, &op, 1, 0, NULL), -EINVAL);
	op.len = sizeof(want);
	op.buf = want; /* both */
	cr_assert_eq(h2_vol_txn(v, &op, 1, 0, NULL), -EINVAL);
	op.buf = NULL;
	op.iovcnt = 0;
	cr_assert_eq(h2_vol_txn(v, &op, 1, 0, NULL), -EINVAL);
	op.iovcnt = 4;
	iov[1].iov_base = NULL;
	iov[1].iov_len = 1;
	cr_assert_eq(h2_vol_txn(v, &op, 1, 0, NULL), -EINVAL);
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);
	t_check_clean(fd, "after writes in pieces");
	h2_fdev_free(fd);
}

Test(engine, open_reads_the_same_bytes_whatever_the_data_stored)
{
	struct h2_fdev *fd = t_fdev(256 * MiB);
	struct h2_store *st = t_open(fd, false);
	static uint8_t b[1 << 20];
	struct h2_vol *v;
	uint64_t small, large;

	cr_assert_eq(h2_vol_create(st, "v", 1ull << 40, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	cr_assert_eq(h2_vol_write(v, b, 0, 4096, 0), 0);
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);
	small = open_read_bytes(fd);

	st = t_open(fd, false);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	for (int i = 0; i < 150; i++) {
		b[0] = (uint8_t)i;
		/* Spread over the volume: many indirect blocks. */
		cr_assert_eq(h2_vol_write(v, b, (uint64_t)i * (3ull << 30), sizeof(b),
				      0),
			     0);
	}
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);
	large = open_read_bytes(fd);
	cr_assert_eq(small, large,
		     "open read %" PRIu64 " bytes with 4 KiB stored but %" PRIu64
		     " with 150 MiB",
		     small, large);
	h2_fdev_free(fd);
}

/* --- space ------------------------------------------------------------- */

Test(space, random_overwrites_reuse_freed_blocks)
{
	struct h2_fdev *fd = t_fdev(64 * MiB);
	struct h2_store_opts o = {.flush_interval_ms = 60000};
	struct h2_store *st = t_open_opts(fd, &o);
	const uint64_t vsize = 4 * MiB;
	struct h2_store_stats s0, s;
	struct h2_vol *v;
	uint64_t rs = 77;
	uint8_t b[4096];

	h2_store_stat(st, &s0);
	cr_assert_eq(h2_vol_create(st, "v", vsize, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	/* 10x the volume in random 4 KiB overwrites, syncing now and then;
	 * without reuse this needs 40 MiB of a 64 MiB device. */
	for (uint64_t i = 0; i < 10 * vsize / 4096; i++) {
		uint64_t off = (t_rand(&rs) % (vsize / 4096)) * 4096;

		t_fill(b, sizeof(b), i, 0);
		cr_assert_eq(h2_vol_write(v, b, off, sizeof(b), 0), 0, "%s",
			     h2_core_errmsg());
		if (i % 256 == 255)
			cr_assert_eq(h2_store_sync(st, NULL), 0);
	}
	cr_assert_eq(h2_store_sync(st, NULL), 0);
	cr_assert_eq(h2_store_sync(st, NULL), 0);
	h2_store_stat(st, &s);
	/* Live data plus its indirect blocks (1/64) plus slack. */
	cr_assert_leq(s.used_bytes - s0.used_bytes, vsize + vsize / 32 + 64 * 1024,
		      "store grew by %" PRIu64 " bytes for a %" PRIu64
		      "-byte volume",
		      s.used_bytes - s0.used_bytes, vsize);
	{
		struct h2_vol_info info;

		cr_assert_eq(h2_vol_info(st, "v", &info), 0);
		cr_assert_leq(info.used_bytes, vsize + vsize / 32);
		cr_assert_geq(info.used_bytes, vsize * 9 / 10);
	}
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);
	h2_fdev_free(fd);
}

Test(space, full_device_gives_enospc_and_loses_nothing)
{
	struct h2_fdev *fd = t_fdev(48 * MiB);
	struct h2_store_opts o = {.flush_interval_ms = 60000};
	struct h2_store *st = t_open_opts(fd, &o);
	static uint8_t b[256 * 1024], r[256 * 1024];
	struct h2_vol *v;
	uint64_t n = 0;
	int err = 0;

	cr_assert_eq(h2_vol_create(st, "big", 1ull << 30, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "big", &v), 0);
	while (n < 1000) {
		t_fill(b, sizeof(b), n, 0);
		err = h2_vol_write(v, b, n * sizeof(b), sizeof(b), 0);
		if (err)
			break;
		n++;
	}
	cr_assert_eq(err, -ENOSPC, "%d %s", err, h2_core_errmsg());
	cr_assert(strstr(h2_core_errmsg(), "no space"));
	cr_assert_gt(n, 100);
	/* Everything acknowledged is there, before and after a sync. */
	cr_assert_eq(h2_store_sync(st, NULL), 0);
	for (uint64_t i = 0; i < n; i++) {
		t_fill(b, sizeof(b), i, 0);
		cr_assert_eq(h2_vol_read(v, r, i * sizeof(b), sizeof(r)), 0);
		cr_assert_arr_eq(r, b, sizeof(r));
	}
	/* Trimming gives space back once flushed. */
	cr_assert_eq(h2_vol_trim(v, 0, 10 * sizeof(b), 0), 0);
	cr_assert_eq(h2_store_sync(st, NULL), 0);
	t_fill(b, sizeof(b), 999, 0);
	cr_assert_eq(h2_vol_write(v, b, n * sizeof(b), sizeof(b), 0), 0, "%s",
		     h2_core_errmsg());
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);

	st = t_open(fd, false);
	cr_assert_eq(h2_vol_open(st, "big", &v), 0);
	cr_assert_eq(h2_vol_read(v, r, n * sizeof(b), sizeof(r)), 0);
	cr_assert_arr_eq(r, b, sizeof(r));
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);
	h2_fdev_free(fd);
}

Test(engine, metadata_cache_stays_within_cache_max)
{
	struct h2_fdev *fd = t_fdev(128 * MiB);
	struct h2_store_opts o = {.no_flusher = true, .cache_max = 256 * 1024};
	struct h2_store *st = t_open_opts(fd, &o);
	static uint8_t b[4096], r[4096];
	struct h2_store_stats s;
	struct h2_vol *v;

	cr_assert_eq(h2_vol_create(st, "v", 1ull << 40, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	/* 2000 blocks 1 MiB apart: about 2000 indirect blocks. */
	for (uint64_t i = 0; i < 2000; i++) {
		memcpy(b, &i, sizeof(i));
		cr_assert_eq(h2_vol_write(v, b, i << 20, sizeof(b), 0), 0);
		if (i % 500 == 499)
			cr_assert_eq(h2_store_sync(st, NULL), 0);
	}
	cr_assert_eq(h2_store_sync(st, NULL), 0);
	h2_store_stat(st, &s);
	cr_assert_leq(s.cached_bytes, 256 * 1024, "cached %" PRIu64,
		      s.cached_bytes);
	for (uint64_t i = 0; i < 2000; i += 7) {
		uint64_t got;

		cr_assert_eq(h2_vol_read(v, r, i << 20, sizeof(r)), 0);
		memcpy(&got, r, sizeof(got));
		cr_assert_eq(got, i);
	}
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);
	h2_fdev_free(fd);
}
