/* Store lifecycle, volumes and basic I/O through the engine API. */
#include <errno.h>

#include "format.h"
#include "helpers.h"

Test(store, format_refuses_existing_store_without_force)
{
	struct h2_fdev *fd = t_fdev(64 * MiB);
	struct h2_format_opts force = {.force = true};

	cr_assert_eq(h2_store_format(h2_fdev_dev(fd), NULL), -EEXIST);
	cr_assert(strstr(h2_core_errmsg(), "--force"));
	cr_assert_eq(h2_store_format(h2_fdev_dev(fd), &force), 0);
	h2_fdev_free(fd);
}

Test(store, format_refuses_tiny_device)
{
	struct h2_fdev *fd;

	cr_assert_eq(h2_fdev_create(4 * MiB, &fd), 0);
	cr_assert_eq(h2_store_format(h2_fdev_dev(fd), NULL), -ENOSPC);
	h2_fdev_free(fd);
}

Test(store, open_fails_on_unformatted_device)
{
	struct h2_fdev *fd;
	struct h2_store *st;

	cr_assert_eq(h2_fdev_create(64 * MiB, &fd), 0);
	cr_assert_eq(h2_store_open(h2_fdev_dev(fd), NULL, &st), -ENOENT);
	cr_assert(strstr(h2_core_errmsg(), "no valid h2 volume header"));
	h2_fdev_free(fd);
}

Test(store, write_read_survives_reopen)
{
	struct h2_fdev *fd = t_fdev(64 * MiB);
	struct h2_store *st = t_open(fd, false);
	struct h2_vol *v;
	static uint8_t w[300000], r[300000];

	cr_assert_eq(h2_vol_create(st, "vm1", 10 * MiB, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "vm1", &v), 0);
	t_fill(w, sizeof(w), 1, 0);
	/* Unaligned start and end. */
	cr_assert_eq(h2_vol_write(v, w, 12345, sizeof(w), 0), 0, "%s",
		     h2_core_errmsg());
	cr_assert_eq(h2_vol_read(v, r, 12345, sizeof(r)), 0);
	cr_assert_arr_eq(r, w, sizeof(w));
	/* Bytes around the write are still zero. */
	cr_assert_eq(h2_vol_read(v, r, 0, 12345), 0);
	for (int i = 0; i < 12345; i++)
		cr_assert_eq(r[i], 0);
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);

	st = t_open(fd, false);
	cr_assert_eq(h2_vol_open(st, "vm1", &v), 0);
	memset(r, 0, sizeof(r));
	cr_assert_eq(h2_vol_read(v, r, 12345, sizeof(r)), 0, "%s",
		     h2_core_errmsg());
	cr_assert_arr_eq(r, w, sizeof(w));
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);
	h2_fdev_free(fd);
}

Test(store, holes_read_as_zero_and_trim_makes_holes)
{
	struct h2_fdev *fd = t_fdev(64 * MiB);
	struct h2_store *st = t_open(fd, false);
	struct h2_vol *v;
	static uint8_t w[65536], r[65536], z[65536];

	cr_assert_eq(h2_vol_create(st, "v", 1ull << 40, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	cr_assert_eq(h2_vol_read(v, r, (1ull << 40) - 65536, 65536), 0);
	cr_assert_arr_eq(r, z, sizeof(z));
	t_fill(w, sizeof(w), 7, 0);
	cr_assert_eq(h2_vol_write(v, w, 1ull << 39, sizeof(w), 0), 0);
	cr_assert_eq(h2_store_sync(st, NULL), 0);
	/* Trim the middle, unaligned: edges are zeroed, blocks removed. */
	cr_assert_eq(h2_vol_trim(v, (1ull << 39) + 1000, 40000, 0), 0);
	cr_assert_eq(h2_vol_read(v, r, 1ull << 39, sizeof(r)), 0);
	memset(w + 1000, 0, 40000);
	cr_assert_arr_eq(r, w, sizeof(w));
	cr_assert_eq(h2_store_sync(st, NULL), 0);
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);
	st = t_open(fd, false);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	cr_assert_eq(h2_vol_read(v, r, 1ull << 39, sizeof(r)), 0);
	cr_assert_arr_eq(r, w, sizeof(w));
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);
	h2_fdev_free(fd);
}

Test(store, volume_management)
{
	struct h2_fdev *fd = t_fdev(64 * MiB);
	struct h2_store *st = t_open(fd, false);
	struct h2_vol_info info, *list;
	struct h2_vol *v;
	size_t n;

	cr_assert_eq(h2_vol_create(st, "a", 4096, &info), 0);
	cr_assert_eq(info.size, 4096);
	cr_assert_eq(h2_vol_create(st, "a", 4096, NULL), -EEXIST);
	cr_assert_eq(h2_vol_create(st, "bad/name", 4096, NULL), -EINVAL);
	cr_assert_eq(h2_vol_create(st, "z", 0, NULL), -EINVAL);
	cr_assert_eq(h2_vol_create(st, "z", H2_VOLUME_MAX_SIZE + 1, NULL),
		     -EFBIG);
	cr_assert_eq(h2_vol_create(st, "b", 16ull << 40, NULL), 0);
	cr_assert_eq(h2_vol_list(st, &list, &n), 0);
	cr_assert_eq(n, 2);
	free(list);
	cr_assert_eq(h2_vol_info(st, "nope", &info), -ENOENT);
	cr_assert_eq(h2_vol_open(st, "a", &v), 0);
	cr_assert_eq(h2_vol_delete(st, "a"), -EBUSY);
	h2_vol_close(v);
	cr_assert_eq(h2_vol_resize(st, "a", 8192), 0);
	cr_assert_eq(h2_vol_info(st, "a", &info), 0);
	cr_assert_eq(info.size, 8192);
	cr_assert_eq(h2_vol_delete(st, "a"), 0);
	cr_assert_eq(h2_vol_info(st, "a", &info), -ENOENT);
	cr_assert_eq(h2_store_close(st), 0);

	st = t_open(fd, false);
	cr_assert_eq(h2_vol_list(st, &list, &n), 0);
	cr_assert_eq(n, 1);
	cr_assert_str_eq(list[0].name, "b");
	cr_assert_eq(list[0].size, 16ull << 40);
	free(list);
	cr_assert_eq(h2_store_close(st), 0);
	h2_fdev_free(fd);
}

/* Volumes of volume_table_grows_with_the_volumes deleted (no snapshot). */
static bool t_gone(int i)
{
	return i < 40 && i % 3 == 0 && i % 10 != 9;
}

/*
 * The volume table starts small and grows with the slots in use: 300
 * volumes and snapshots cross several of its sizes, with flushes in
 * between (the flusher's copy of the directory grows too), slots freed
 * in the middle and reused, and a reopen that must load them all.
 */
Test(store, volume_table_grows_with_the_volumes)
{
	enum { NVOL = 300 };
	struct h2_fdev *fd = t_fdev(64 * MiB);
	struct h2_store *st = t_open(fd, false);
	struct h2_vol_info *list;
	struct h2_snap_info *snaps;
	uint8_t w[512], r[512];
	struct h2_vol *v;
	char name[32];
	size_t n;

	for (int i = 0; i < NVOL; i++) {
		snprintf(name, sizeof(name), "v%03d", i);
		cr_assert_eq(h2_vol_create(st, name, 1 * MiB, NULL), 0, "%s",
			     h2_core_errmsg());
		cr_assert_eq(h2_vol_open(st, name, &v), 0);
		t_fill(w, sizeof(w), (uint64_t)i, 0);
		cr_assert_eq(
		    h2_vol_write(v, w, 4096 * (uint64_t)(i % 7), sizeof(w), 0),
		    0);
		h2_vol_close(v);
		if (i % 10 == 9)
			cr_assert_eq(h2_snap_create(st, name, "s", NULL), 0);
		if (i % 50 == 49)
			cr_assert_eq(h2_store_sync(st, NULL), 0);
	}
	/* Free slots low in the table; new volumes take them. */
	for (int i = 0; i < NVOL; i++) {
		if (!t_gone(i))
			continue;
		snprintf(name, sizeof(name), "v%03d", i);
		cr_assert_eq(h2_vol_delete(st, name), 0, "%s",
			     h2_core_errmsg());
	}
	cr_assert_eq(h2_store_sync(st, NULL), 0);
	for (int i = 0; i < NVOL; i++) {
		if (!t_gone(i))
			continue;
		snprintf(name, sizeof(name), "n%03d", i);
		cr_assert_eq(h2_vol_create(st, name, 4096, NULL), 0);
	}
	cr_assert_eq(h2_store_close(st), 0);
	t_check_clean(fd, "after 300 volumes");

	st = t_open(fd, false);
	cr_assert_eq(h2_vol_list(st, &list, &n), 0);
	cr_assert_eq(n, NVOL, "%zu volumes", n);
	free(list);
	cr_assert_eq(h2_snap_list(st, NULL, &snaps, &n), 0);
	cr_assert_eq(n, NVOL / 10);
	free(snaps);
	for (int i = 0; i < NVOL; i++) {
		if (t_gone(i))
			continue;
		snprintf(name, sizeof(name), "v%03d", i);
		cr_assert_eq(h2_vol_open(st, name, &v), 0, "%s", name);
		t_fill(w, sizeof(w), (uint64_t)i, 0);
		cr_assert_eq(
		    h2_vol_read(v, r, 4096 * (uint64_t)(i % 7), sizeof(r)), 0);
		cr_assert_arr_eq(r, w, sizeof(w), "%s", name);
		h2_vol_close(v);
	}
	cr_assert_eq(h2_store_close(st), 0);
	h2_fdev_free(fd);
}

Test(store, bad_ranges_get_clear_errors)
{
	struct h2_fdev *fd = t_fdev(64 * MiB);
	struct h2_store *st = t_open(fd, false);
	struct h2_vol *v;
	uint8_t b[16] = {0};

	cr_assert_eq(h2_vol_create(st, "v", 1 * MiB, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	cr_assert_eq(h2_vol_write(v, b, 0, 0, 0), -EINVAL);
	cr_assert_eq(h2_vol_write(v, b, 1 * MiB - 8, 16, 0), -ERANGE);
	cr_assert(strstr(h2_core_errmsg(), "beyond its end"));
	cr_assert_eq(h2_vol_write(v, b, UINT64_MAX - 4, 16, 0), -ERANGE);
	cr_assert_eq(h2_vol_read(v, b, UINT64_MAX - 4, 16), -ERANGE);
	cr_assert_eq(h2_vol_read(v, b, 0, (uint64_t)H2_MAX_IO + 1), -EFBIG);
	cr_assert_eq(h2_vol_trim(v, 2 * MiB, 4096, 0), -ERANGE);
	cr_assert_eq(h2_vol_write(v, NULL, 0, 16, 0), -EINVAL);
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);
	h2_fdev_free(fd);
}

Test(store, resize_shrink_discards_tail)
{
	struct h2_fdev *fd = t_fdev(64 * MiB);
	struct h2_store *st = t_open(fd, false);
	struct h2_vol *v;
	static uint8_t w[3 * 4096], r[3 * 4096];

	cr_assert_eq(h2_vol_create(st, "v", 3 * 4096, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	t_fill(w, sizeof(w), 3, 0);
	cr_assert_eq(h2_vol_write(v, w, 0, sizeof(w), 0), 0);
	h2_vol_close(v);
	cr_assert_eq(h2_vol_resize(st, "v", 5000), 0);
	cr_assert_eq(h2_vol_resize(st, "v", 1ull << 42), 0);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	cr_assert_eq(h2_vol_read(v, r, 0, sizeof(r)), 0);
	memset(w + 5000, 0, sizeof(w) - 5000);
	cr_assert_arr_eq(r, w, sizeof(w));
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);
	h2_fdev_free(fd);
}

Test(store, sync_with_flusher_thread_is_durable)
{
	struct h2_fdev *fd = t_fdev(64 * MiB);
	struct h2_store *st;
	struct h2_vol *v;
	struct h2_store_stats s;
	uint64_t tid = 0;
	uint8_t w[4096], r[4096];

	h2_fdev_record(fd);
	st = t_open(fd, true);
	cr_assert_eq(h2_vol_create(st, "v", 1 * MiB, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	t_fill(w, sizeof(w), 9, 0);
	cr_assert_eq(h2_vol_write(v, w, 8192, sizeof(w), H2_IO_FUA), 0);
	cr_assert_eq(h2_store_sync(st, &tid), 0);
	cr_assert_gt(tid, 1);
	h2_store_stat(st, &s);
	cr_assert_geq(s.flushes, 1);
	cr_assert_eq(s.dirty_bytes, 0);
	cr_assert_eq(s.durable_tid, tid);
	h2_vol_close(v);
	/* A crash image at this point (everything recorded so far) holds
	 * the data: open the live contents without closing the store. */
	{
		struct h2_crash_spec spec = {.upto = h2_fdev_event_count(fd)};
		struct h2_fdev *img;
		struct h2_store *st2;

		cr_assert_eq(h2_fdev_crash_image(fd, &spec, &img), 0);
		st2 = t_open(img, false);
		cr_assert_eq(h2_vol_open(st2, "v", &v), 0);
		cr_assert_eq(h2_vol_read(v, r, 8192, sizeof(r)), 0);
		cr_assert_arr_eq(r, w, sizeof(w));
		h2_vol_close(v);
		h2_store_close(st2);
		h2_fdev_free(img);
	}
	cr_assert_eq(h2_store_close(st), 0);
	h2_fdev_free(fd);
}

Test(store, bad_transactions_are_refused_whole)
{
	struct h2_fdev *fd = t_fdev(64 * MiB);
	struct h2_store *st = t_open(fd, false);
	uint8_t a[4096], r[4096];
	struct h2_vol *v;
	uint64_t epoch = 0;

	cr_assert_eq(h2_vol_create(st, "v", 1 * MiB, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	memset(a, 'a', sizeof(a));
	{
		/* The second op is out of range: the first must not apply. */
		struct h2_op ops[2] = {
			{.type = H2_OP_WRITE, .off = 0, .len = 4096, .buf = a},
			{.type = H2_OP_TRIM, .off = 1 * MiB, .len = 1},
		};

		cr_assert_eq(h2_vol_txn(v, ops, 2, 0, &epoch), -ERANGE);
		cr_assert_eq(h2_vol_read(v, r, 0, sizeof(r)), 0);
		cr_assert_eq(r[0], 0);
	}
	{
		struct h2_op bad_type = {.type = 99, .len = 1};
		struct h2_op bad_flags = {.type = H2_OP_TRIM, .len = 1,
					  .flags = 0x80};
		struct h2_op overflow = {.type = H2_OP_TRIM, .off = UINT64_MAX,
					 .len = 2};
		struct h2_op huge = {.type = H2_OP_WRITE, .len = 1ull << 40,
				     .buf = a};
		struct h2_op ops[H2_MAX_TXN_OPS + 1];

		cr_assert_eq(h2_vol_txn(v, &bad_type, 1, 0, NULL), -EINVAL);
		cr_assert_eq(h2_vol_txn(v, &bad_flags, 1, 0, NULL), -EINVAL);
		cr_assert_eq(h2_vol_txn(v, &overflow, 1, 0, NULL), -ERANGE);
		cr_assert_eq(h2_vol_txn(v, &huge, 1, 0, NULL), -EFBIG);
		cr_assert_eq(h2_vol_txn(v, NULL, 0, 0, NULL), -EINVAL);
		for (size_t i = 0; i <= H2_MAX_TXN_OPS; i++)
			ops[i] = (struct h2_op){.type = H2_OP_TRIM, .len = 1};
		cr_assert_eq(h2_vol_txn(v, ops, H2_MAX_TXN_OPS + 1, 0, NULL),
			     -EFBIG);
		cr_assert_eq(h2_vol_txn(v, ops, 1, 0x40, NULL), -EINVAL);
	}
	{
		/* A good batch applies all of it in one epoch. */
		struct h2_op ops[3] = {
			{.type = H2_OP_WRITE, .off = 100, .len = 4096, .buf = a},
			{.type = H2_OP_ZERO, .off = 1000, .len = 10},
			{.type = H2_OP_ZERO, .off = 8192, .len = 8192,
			 .flags = H2_IO_NO_HOLE},
		};

		cr_assert_eq(h2_vol_txn(v, ops, 3, 0, &epoch), 0);
		cr_assert_gt(epoch, 0);
		cr_assert_eq(h2_vol_read(v, r, 0, sizeof(r)), 0);
		cr_assert_eq(r[99], 0);
		cr_assert_eq(r[100], 'a');
		cr_assert_eq(r[1000], 0);
		cr_assert_eq(r[1010], 'a');
	}
	cr_assert_eq(h2_vol_open(st, "missing", &v), -ENOENT);
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);
	h2_fdev_free(fd);
}

static int count_extent(void *arg, uint64_t off, uint64_t len, bool hole)
{
	uint64_t *n = arg;

	(void)off;
	if (!hole)
		n[0] += len;
	else
		n[1] += len;
	return 0;
}

Test(store, block_status_reports_holes_from_the_tree)
{
	struct h2_fdev *fd = t_fdev(64 * MiB);
	struct h2_store *st = t_open(fd, false);
	uint8_t a[8192] = {1};
	uint64_t n[2] = {0, 0};
	struct h2_vol *v;

	cr_assert_eq(h2_vol_create(st, "v", 1ull << 36, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	cr_assert_eq(h2_vol_write(v, a, 1ull << 30, sizeof(a), 0), 0);
	cr_assert_eq(h2_vol_write_zeroes(v, 1ull << 31, 4096, H2_IO_NO_HOLE), 0);
	cr_assert_eq(h2_vol_block_status(v, 0, 1ull << 36, count_extent, n), 0);
	cr_assert_eq(n[0], 8192 + 4096);
	cr_assert_eq(n[0] + n[1], 1ull << 36);
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);
	h2_fdev_free(fd);
}

/* Extents as block status reports them (up to 16). */
struct t_exts {
	uint64_t off[16], len[16];
	bool hole[16];
	unsigned n;
};

static int t_ext(void *arg, uint64_t off, uint64_t len, bool hole)
{
	struct t_exts *e = arg;

	cr_assert_lt(e->n, 16);
	e->off[e->n] = off;
	e->len[e->n] = len;
	e->hole[e->n] = hole;
	e->n++;
	return 0;
}

/*
 * Holes between leaves of one level-1 block, at its ends and around a
 * partial range: exact extents from chains in memory, from blockrefs on
 * disk after a reopen, and from both (one leaf rewritten in memory).
 */
Test(store, block_status_extents_are_exact_within_a_leaf_block)
{
	static const uint64_t want_off[] = {0, 3, 4, 9, 10, 12, 13};
	static const bool want_hole[] = {true, false, true, false,
					 true, false, true};
	struct h2_fdev *fd = t_fdev(64 * MiB);
	struct h2_store *st = t_open(fd, false);
	uint8_t a[4096] = {7};
	struct h2_vol *v;

	cr_assert_eq(h2_vol_create(st, "v", 64 * MiB, NULL), 0);
	for (int round = 0; round < 3; round++) {
		struct t_exts e = {0};

		cr_assert_eq(h2_vol_open(st, "v", &v), 0);
		if (round == 0) {
			cr_assert_eq(h2_vol_write(v, a, 3 * 4096, 4096, 0), 0);
			cr_assert_eq(h2_vol_write(v, a, 9 * 4096, 4096, 0), 0);
			cr_assert_eq(h2_vol_write(v, a, 12 * 4096, 4096, 0), 0);
		}
		if (round == 2)
			cr_assert_eq(h2_vol_write(v, a, 9 * 4096, 4096, 0), 0);
		/* From the middle of leaf 1 to the middle of leaf 20. */
		cr_assert_eq(h2_vol_block_status(v, 4096 + 100, 20 * 4096 - 100,
						 t_ext, &e),
			     0);
		cr_assert_eq(e.n, 7, "round %d: %u extents", round, e.n);
		for (unsigned k = 0; k < e.n; k++) {
			uint64_t lo = k ? want_off[k] * 4096 : 4096 + 100;
			uint64_t hi =
			    k + 1 < e.n ? want_off[k + 1] * 4096 : 21 * 4096;

			cr_assert_eq(e.off[k], lo, "round %d extent %u", round,
				     k);
			cr_assert_eq(e.len[k], hi - lo, "round %d extent %u",
				     round, k);
			cr_assert_eq(e.hole[k], want_hole[k]);
		}
		h2_vol_close(v);
		if (round == 0) {
			cr_assert_eq(h2_store_close(st), 0);
			st = t_open(fd, false);
		}
	}
	cr_assert_eq(h2_store_close(st), 0);
	h2_fdev_free(fd);
}

/*
 * The same a level up: holes of whole level-1 blocks (2 MiB each) between
 * and around two written ones in a 3-level volume, one extent each way.
 */
Test(store, block_status_extents_are_exact_across_leaf_blocks)
{
	struct h2_fdev *fd = t_fdev(64 * MiB);
	struct h2_store *st = t_open(fd, false);
	uint8_t a[4096] = {7};
	struct h2_vol *v;

	cr_assert_eq(h2_vol_create(st, "v", 1ull << 32, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	cr_assert_eq(h2_vol_write(v, a, 10 * MiB, 4096, 0), 0);
	cr_assert_eq(h2_vol_write(v, a, 30 * MiB, 4096, 0), 0);
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);
	st = t_open(fd, false);
	for (int round = 0; round < 2; round++) {
		struct t_exts e = {0};

		cr_assert_eq(h2_vol_open(st, "v", &v), 0);
		if (round == 1)
			cr_assert_eq(h2_vol_write(v, a, 30 * MiB, 4096, 0), 0);
		cr_assert_eq(
		    h2_vol_block_status(v, 1 * MiB, 2047 * MiB, t_ext, &e), 0);
		cr_assert_eq(e.n, 5, "round %d: %u extents", round, e.n);
		cr_assert(e.hole[0] && e.off[0] == 1 * MiB &&
			  e.len[0] == 9 * MiB);
		cr_assert(!e.hole[1] && e.off[1] == 10 * MiB &&
			  e.len[1] == 4096);
		cr_assert(e.hole[2] && e.off[2] == 10 * MiB + 4096 &&
			  e.len[2] == 20 * MiB - 4096);
		cr_assert(!e.hole[3] && e.off[3] == 30 * MiB &&
			  e.len[3] == 4096);
		cr_assert(e.hole[4] && e.off[4] == 30 * MiB + 4096 &&
			  e.len[4] == 2048 * MiB - 30 * MiB - 4096);
		h2_vol_close(v);
	}
	cr_assert_eq(h2_store_close(st), 0);
	h2_fdev_free(fd);
}

/* Extents of many_extents: each must follow the last, alternating. */
struct t_alt {
	uint64_t next;
	unsigned n;
};

static int t_alt_ext(void *arg, uint64_t off, uint64_t len, bool hole)
{
	struct t_alt *a = arg;

	cr_assert_eq(off, a->next, "extent %u", a->n);
	cr_assert_eq(len, 4096, "extent %u", a->n);
	cr_assert_eq(hole, (off / 4096) % 2 == 1, "extent %u", a->n);
	a->next = off + len;
	a->n++;
	return 0;
}

/*
 * Every other block written: one extent per block, more than a block
 * status call collects (4096), so the answer stops at that many and the
 * caller asks again from where it ended.
 */
Test(store, block_status_many_extents_stop_at_the_limit)
{
	enum { N = 5000 };
	struct h2_fdev *fd = t_fdev(64 * MiB);
	struct h2_store *st = t_open(fd, false);
	uint8_t a[4096] = {7};
	struct t_alt alt = {0};
	struct h2_vol *v;

	cr_assert_eq(h2_vol_create(st, "v", N * 4096ull, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	for (uint64_t k = 0; k < N; k += 2)
		cr_assert_eq(h2_vol_write(v, a, k * 4096, 4096, 0), 0);
	cr_assert_eq(h2_vol_block_status(v, 0, N * 4096ull, t_alt_ext, &alt),
		     0);
	cr_assert_eq(alt.n, 4096);
	cr_assert_eq(h2_vol_block_status(v, alt.next, N * 4096ull - alt.next,
					 t_alt_ext, &alt),
		     0);
	cr_assert_eq(alt.n, N);
	cr_assert_eq(alt.next, N * 4096ull);
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);
	h2_fdev_free(fd);
}
