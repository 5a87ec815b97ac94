/*
 * Snapshots, clones, rollback and space reclamation in the engine.
 *
 * Space is checked two ways: the store's used count (exact block
 * arithmetic against a baseline) and h2_check, which walks every tree,
 * finds leaks and blocks both free and referenced, and recomputes each
 * snapshot's exclusive space and each volume's snapshot space from the
 * trees.  The crash test replays every flush point of a workload of
 * snapshot creates, deletes, clones and rollbacks.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

#include "check.h"
#include "helpers.h"

#define BS 4096u

static uint64_t t_used(struct h2_store *st)
{
	struct h2_store_stats s;

	/* Frees become space once the freeing flush is durable; a second
	 * sync makes sure nothing is left in flight. */
	cr_assert_eq(h2_store_sync(st, NULL), 0);
	h2_store_stat(st, &s);
	return s.used_bytes / BS;
}

static void t_write(struct h2_vol *v, uint64_t off, uint64_t len,
		    uint64_t seed)
{
	uint8_t *buf = malloc(len);

	t_fill(buf, len, seed, off);
	cr_assert_eq(h2_vol_write(v, buf, off, len, 0), 0, "%s",
		     h2_core_errmsg());
	free(buf);
}

static void t_expect(struct h2_store *st, const char *name, const uint8_t *img,
		     uint64_t len)
{
	struct h2_vol *v;
	uint8_t *got = malloc(len);

	cr_assert_eq(h2_vol_open(st, name, &v), 0, "%s: %s", name,
		     h2_core_errmsg());
	cr_assert_eq(h2_vol_read(v, got, 0, len), 0, "%s", h2_core_errmsg());
	for (uint64_t i = 0; i < len; i++)
		if (got[i] != img[i])
			cr_assert_fail("%s: byte %" PRIu64 " is %u, want %u",
				       name, i, got[i], img[i]);
	h2_vol_close(v);
	free(got);
}

static void model_write(uint8_t *img, uint64_t off, uint64_t len,
			uint64_t seed)
{
	t_fill(img + off, len, seed, off);
}

Test(snap, read_only_image_of_the_moment)
{
	struct h2_fdev *fd = t_fdev(64 * MiB);
	struct h2_store *st = t_open(fd, true);
	uint64_t size = 1 * MiB;
	uint8_t *a = calloc(1, size), *b;
	struct h2_snap_info si;
	struct h2_vol *v, *s;

	cr_assert_eq(h2_vol_create(st, "v", size, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	t_write(v, 0, size, 1);
	model_write(a, 0, size, 1);
	cr_assert_eq(h2_snap_create(st, "v", "s1", &si), 0, "%s",
		     h2_core_errmsg());
	cr_assert_str_eq(si.volume, "v");
	cr_assert_str_eq(si.name, "s1");
	cr_assert_gt(si.tid, 0);
	cr_assert_eq(si.size, size);
	cr_assert_eq(si.excl_bytes, 0);
	b = malloc(size);
	memcpy(b, a, size);
	t_write(v, 8192, 3 * BS + 100, 2);
	model_write(b, 8192, 3 * BS + 100, 2);
	t_expect(st, "v@s1", a, size);
	t_expect(st, "v", b, size);

	/* Read-only, and named as such. */
	cr_assert_eq(h2_vol_open(st, "v@s1", &s), 0);
	cr_assert(h2_vol_read_only(s));
	cr_assert(!h2_vol_read_only(v));
	cr_assert_str_eq(h2_vol_name(s), "v@s1");
	cr_assert_eq(h2_vol_write(s, a, 0, BS, 0), -EROFS);
	cr_assert_eq(h2_vol_trim(s, 0, BS, 0), -EROFS);
	cr_assert_eq(h2_vol_resize(st, "v@s1", 2 * size), -EROFS);
	cr_assert_eq(h2_snap_delete(st, "v", "s1"), -EBUSY);
	h2_vol_close(s);

	/* Names. */
	cr_assert_eq(h2_snap_create(st, "v", "s1", NULL), -EEXIST);
	cr_assert_eq(h2_snap_create(st, "nope", "s1", NULL), -ENOENT);
	cr_assert_eq(h2_snap_create(st, "v", "a@b", NULL), -EINVAL);
	cr_assert_eq(h2_vol_open(st, "v@nope", &s), -ENOENT);
	cr_assert_eq(h2_vol_create(st, "s1", size, NULL), 0,
		     "snapshot names do not clash with volume names");
	h2_vol_close(v);

	/* Survives a reopen. */
	cr_assert_eq(h2_store_close(st), 0);
	st = t_open(fd, true);
	t_expect(st, "v@s1", a, size);
	t_expect(st, "v", b, size);
	cr_assert_eq(h2_snap_info(st, "v", "s1", &si), 0);
	cr_assert_gt(si.excl_bytes, 0, "overwritten blocks are its alone");
	cr_assert_eq(h2_store_close(st), 0);
	t_check_clean(fd, "after reopen");
	free(a);
	free(b);
	h2_fdev_free(fd);
}

Test(snap, create_copies_nothing_and_blocks_are_shared_until_overwritten)
{
	struct h2_fdev *fd = t_fdev(64 * MiB);
	struct h2_store *st = t_open(fd, true);
	struct h2_store_stats s0, s1;
	struct h2_vol_info vi;
	struct h2_snap_info si;
	uint64_t used0, used1, used2;
	struct h2_vol *v;

	cr_assert_eq(h2_vol_create(st, "v", 8 * MiB, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	t_write(v, 0, 8 * MiB, 3);
	used0 = t_used(st);
	h2_store_stat(st, &s0);
	cr_assert_eq(h2_snap_create(st, "v", "s", NULL), 0);
	used1 = t_used(st);
	h2_store_stat(st, &s1);
	/* No data copied: the device saw the directory, freemap and header
	 * writes of one flush, nothing in proportion to the 8 MiB. */
	cr_assert_lt(s1.dev_bytes_written - s0.dev_bytes_written, 256 * 1024,
		     "create wrote %" PRIu64 " bytes",
		     s1.dev_bytes_written - s0.dev_bytes_written);
	cr_assert_eq(used1, used0, "create changed used blocks %" PRIu64
		     " -> %" PRIu64, used0, used1);
	cr_assert_eq(h2_snap_info(st, "v", "s", &si), 0);
	cr_assert_eq(h2_vol_info(st, "v", &vi), 0);
	cr_assert_eq(si.refer_bytes, vi.used_bytes);
	cr_assert_eq(si.excl_bytes, 0);
	cr_assert_eq(vi.snap_bytes, 0);
	cr_assert_eq(vi.snapshots, 1);

	/* One overwritten block: the old one stays with the snapshot. */
	t_write(v, 5 * BS, BS, 4);
	used2 = t_used(st);
	cr_assert_eq(h2_snap_info(st, "v", "s", &si), 0);
	cr_assert_eq(h2_vol_info(st, "v", &vi), 0);
	/* The new leaf plus its copied path (levels) are new; the old leaf
	 * and the old path stay with the snapshot. */
	cr_assert_gt(used2, used1);
	cr_assert_eq(si.excl_bytes / BS, used2 - used1,
		     "snapshot alone holds %" PRIu64 " blocks, store grew "
		     "by %" PRIu64, si.excl_bytes / BS, used2 - used1);
	cr_assert_eq(vi.snap_bytes, si.excl_bytes);
	/* Overwriting it again frees the copy at once (born after the
	 * snapshot), so nothing more is held. */
	for (int i = 0; i < 20; i++)
		t_write(v, 5 * BS, BS, 10 + (uint64_t)i);
	cr_assert_eq(t_used(st), used2);
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);
	t_check_clean(fd, "shared");
	h2_fdev_free(fd);
}

Test(snap, delete_frees_exactly_what_only_it_held)
{
	struct h2_fdev *fd = t_fdev(64 * MiB);
	struct h2_store *st = t_open(fd, true);
	uint64_t size = 4 * MiB, base, vused0;
	struct h2_vol_info vi;
	struct h2_snap_info si;
	struct h2_vol *v;

	cr_assert_eq(h2_vol_create(st, "v", size, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	t_write(v, 0, size, 5);
	base = t_used(st);
	cr_assert_eq(h2_vol_info(st, "v", &vi), 0);
	vused0 = vi.used_bytes / BS;
	cr_assert_eq(h2_snap_create(st, "v", "a", NULL), 0);
	t_write(v, 0, MiB, 6);		/* a holds the first MiB alone */
	cr_assert_eq(h2_snap_create(st, "v", "b", NULL), 0);
	t_write(v, 0, 2 * MiB, 7);	/* b holds its first MiB alone; the
					   second MiB is a's and b's */
	cr_assert_eq(h2_vol_trim(v, 3 * MiB, MiB, 0), 0);
	t_used(st);
	{
		struct h2_snap_info *l;
		size_t n;

		cr_assert_eq(h2_snap_list(st, "v", &l, &n), 0);
		cr_assert_eq(n, 2);
		cr_assert_str_eq(l[0].name, "a");
		cr_assert_str_eq(l[1].name, "b");
		cr_assert_lt(l[0].tid, l[1].tid);
		/* 256 leaves and 4 level-1 blocks (of 64 leaves) per MiB. */
		cr_assert_geq(l[0].excl_bytes / BS, 256);
		cr_assert_geq(l[1].excl_bytes / BS, 256);
		free(l);
	}
	cr_assert_eq(h2_snap_delete(st, "v", "a"), 0);
	cr_assert_eq(h2_snap_info(st, "v", "b", &si), 0);
	/* The second MiB and the trimmed one were b's and a's: now b's. */
	cr_assert_geq(si.excl_bytes / BS, 3 * 256);
	cr_assert_eq(h2_snap_delete(st, "v", "b"), 0);
	cr_assert_eq(h2_vol_info(st, "v", &vi), 0);
	cr_assert_eq(vi.snap_bytes, 0);
	cr_assert_eq(vi.snapshots, 0);
	/* Back to the live volume alone. */
	cr_assert_eq(t_used(st) - vi.used_bytes / BS, base - vused0);
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);
	t_check_clean(fd, "after deletes");
	h2_fdev_free(fd);
}

Test(snap, hundred_snapshots_then_random_deletion, .timeout = 300)
{
	enum { N = 100 };
	struct h2_fdev *fd = t_fdev(128 * MiB);
	struct h2_store *st = t_open(fd, true);
	uint64_t size = 2 * MiB, base, vused0, rs = 0xabc;
	uint8_t *img = calloc(1, size), *snaps[N];
	struct h2_vol_info vi;
	int order[N];
	struct h2_vol *v;
	char name[32];

	cr_assert_eq(h2_vol_create(st, "v", size, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	t_write(v, 0, size, 1);
	model_write(img, 0, size, 1);
	base = t_used(st);
	cr_assert_eq(h2_vol_info(st, "v", &vi), 0);
	vused0 = vi.used_bytes / BS;
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "s%03d", i);
		cr_assert_eq(h2_snap_create(st, "v", name, NULL), 0, "%s",
			     h2_core_errmsg());
		snaps[i] = malloc(size);
		memcpy(snaps[i], img, size);
		for (int k = 0; k < 6; k++) {
			uint64_t off = t_rand(&rs) % (size - 3 * BS);
			uint64_t len = 1 + t_rand(&rs) % (3 * BS);

			t_write(v, off, len, (uint64_t)(i * 16 + k));
			model_write(img, off, len, (uint64_t)(i * 16 + k));
		}
		if (i % 10 == 9) {
			uint64_t off = (t_rand(&rs) % (size / BS - 8)) * BS;

			cr_assert_eq(h2_vol_trim(v, off, 8 * BS, 0), 0);
			memset(img + off, 0, 8 * BS);
		}
		order[i] = i;
	}
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "v@s%03d", i);
		t_expect(st, name, snaps[i], size);
	}
	t_expect(st, "v", img, size);
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);
	t_check_clean(fd, "100 snapshots");
	st = t_open(fd, true);
	for (int i = N - 1; i > 0; i--) {
		int j = (int)(t_rand(&rs) % (uint64_t)(i + 1)), x = order[i];

		order[i] = order[j];
		order[j] = x;
	}
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "s%03d", order[i]);
		cr_assert_eq(h2_snap_delete(st, "v", name), 0, "%s",
			     h2_core_errmsg());
		free(snaps[order[i]]);
		snaps[order[i]] = NULL;
		if (i % 25 == 24) {
			/* The survivors still read as they were. */
			for (int k = 0; k < N; k++) {
				if (!snaps[k])
					continue;
				snprintf(name, sizeof(name), "v@s%03d", k);
				t_expect(st, name, snaps[k], size);
				break;
			}
			cr_assert_eq(h2_store_close(st), 0);
			t_check_clean(fd, "during deletion");
			st = t_open(fd, true);
		}
	}
	t_expect(st, "v", img, size);
	cr_assert_eq(h2_vol_info(st, "v", &vi), 0);
	cr_assert_eq(vi.snap_bytes, 0);
	cr_assert_eq(t_used(st) - vi.used_bytes / BS, base - vused0,
		     "the store holds more than the live volume");
	cr_assert_eq(h2_store_close(st), 0);
	t_check_clean(fd, "all deleted");
	free(img);
	h2_fdev_free(fd);
}

Test(snap, clones_share_and_pin_their_origin)
{
	struct h2_fdev *fd = t_fdev(64 * MiB);
	struct h2_store *st = t_open(fd, true);
	uint64_t size = 2 * MiB, base, used_clone;
	uint8_t *a = calloc(1, size), *c = malloc(size), *l = malloc(size);
	struct h2_vol_info vi;
	struct h2_vol *v, *cv;

	/* (Keeps the directory from emptying, which frees its blocks.) */
	cr_assert_eq(h2_vol_create(st, "keep", size, NULL), 0);
	cr_assert_eq(h2_vol_create(st, "v", size, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	t_write(v, 0, size, 1);
	model_write(a, 0, size, 1);
	base = t_used(st);
	cr_assert_eq(h2_snap_create(st, "v", "s", NULL), 0);
	cr_assert_eq(h2_snap_clone(st, "v", "s", "c", &vi), 0, "%s",
		     h2_core_errmsg());
	cr_assert_str_eq(vi.name, "c");
	cr_assert_str_eq(vi.origin, "v@s");
	cr_assert_eq(vi.size, size);
	used_clone = t_used(st);
	cr_assert_eq(used_clone, base, "a clone copies nothing");
	{
		struct h2_vol_info *vl;
		size_t n, seen = 0;

		cr_assert_eq(h2_vol_list(st, &vl, &n), 0);
		cr_assert_eq(n, 3, "keep, v and c; snapshots are not listed");
		for (size_t i = 0; i < n; i++) {
			if (strcmp(vl[i].name, "v") == 0) {
				cr_assert_eq(vl[i].snapshots, 1);
				cr_assert_str_empty(vl[i].origin);
				seen++;
			} else if (strcmp(vl[i].name, "c") == 0) {
				cr_assert_eq(vl[i].snapshots, 0);
				cr_assert_str_eq(vl[i].origin, "v@s");
				seen++;
			}
			if (i)
				cr_assert_lt(vl[i - 1].id, vl[i].id);
		}
		cr_assert_eq(seen, 2);
		free(vl);
	}
	cr_assert_eq(h2_snap_clone(st, "v", "s", "c", NULL), -EEXIST);
	cr_assert_eq(h2_snap_clone(st, "v", "x", "c2", NULL), -ENOENT);

	memcpy(c, a, size);
	memcpy(l, a, size);
	cr_assert_eq(h2_vol_open(st, "c", &cv), 0);
	t_write(cv, 100, 3 * BS, 2);
	model_write(c, 100, 3 * BS, 2);
	t_write(v, MiB, 2 * BS, 3);
	model_write(l, MiB, 2 * BS, 3);
	t_expect(st, "c", c, size);
	t_expect(st, "v", l, size);
	t_expect(st, "v@s", a, size);

	/* The snapshot cannot go while the clone needs it; the volume
	 * neither, unless everything goes. */
	cr_assert_eq(h2_snap_delete(st, "v", "s"), -ENOTEMPTY);
	h2_vol_close(v);
	cr_assert_eq(h2_vol_delete(st, "v"), -ENOTEMPTY);
	/* A clone's snapshots are its own. */
	cr_assert_eq(h2_snap_create(st, "c", "cs", NULL), 0);
	t_write(cv, 0, MiB, 4);
	model_write(c, 0, MiB, 4);
	t_expect(st, "c", c, size);
	h2_vol_close(cv);
	cr_assert_eq(h2_store_close(st), 0);
	t_check_clean(fd, "clone");
	st = t_open(fd, true);
	cr_assert_eq(h2_vol_delete_flags(st, "v", H2_DEL_RECURSIVE), 0, "%s",
		     h2_core_errmsg());
	cr_assert_eq(h2_vol_open(st, "c", &cv), -ENOENT);
	cr_assert_eq(h2_vol_info(st, "v", &vi), -ENOENT);
	uint64_t after = t_used(st);

	cr_assert_eq(after, base - (size / BS) - 1 - (size / BS / 64),
		     "%" PRIu64 " blocks used, %" PRIu64 " before the volume "
		     "went", after, base);
	cr_assert_eq(after, base - (size / BS) - 1 - (size / BS / 64),
		     "everything returned (the volume's %" PRIu64 " leaves, "
		     "its level-1 blocks and its root)", size / BS);
	cr_assert_eq(h2_store_close(st), 0);
	t_check_clean(fd, "recursive delete");
	free(a);
	free(c);
	free(l);
	h2_fdev_free(fd);
}

Test(snap, clone_deleted_then_origin)
{
	struct h2_fdev *fd = t_fdev(64 * MiB);
	struct h2_store *st = t_open(fd, true);
	uint64_t size = MiB, base;
	struct h2_vol_info vi;
	struct h2_vol *v, *cv;

	cr_assert_eq(h2_vol_create(st, "v", size, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	t_write(v, 0, size, 1);
	base = t_used(st);
	cr_assert_eq(h2_vol_info(st, "v", &vi), 0);
	cr_assert_eq(h2_snap_create(st, "v", "s", NULL), 0);
	t_write(v, 0, size / 2, 2);
	cr_assert_eq(h2_snap_clone(st, "v", "s", "c", NULL), 0);
	cr_assert_eq(h2_vol_open(st, "c", &cv), 0);
	t_write(cv, size / 4, size / 2, 3);
	h2_vol_close(cv);
	/* Deleted in one go: the snapshot's deletion waits for the
	 * clone's frees to settle. */
	cr_assert_eq(h2_vol_delete(st, "c"), 0);
	cr_assert_eq(h2_snap_delete(st, "v", "s"), 0);
	h2_vol_close(v);
	cr_assert_eq(h2_vol_info(st, "v", &vi), 0);
	cr_assert_eq(t_used(st), base, "only the live volume remains");
	cr_assert_eq(h2_store_close(st), 0);
	t_check_clean(fd, "clone then origin");
	h2_fdev_free(fd);
}

Test(snap, rollback_to_the_newest_snapshot)
{
	struct h2_fdev *fd = t_fdev(64 * MiB);
	struct h2_store *st = t_open(fd, true);
	uint64_t size = 2 * MiB, base;
	uint8_t *a = calloc(1, size), *b;
	struct h2_vol_info vi;
	struct h2_snap_info si;
	struct h2_vol *v;

	cr_assert_eq(h2_vol_create(st, "v", size, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	t_write(v, 0, size, 1);
	cr_assert_eq(h2_snap_create(st, "v", "old", NULL), 0);
	t_write(v, 0, MiB, 2);
	model_write(a, 0, size, 1);
	model_write(a, 0, MiB, 2);
	cr_assert_eq(h2_snap_create(st, "v", "new", NULL), 0);
	base = t_used(st);
	b = malloc(size);
	memcpy(b, a, size);
	t_write(v, 4096, MiB, 3);
	cr_assert_eq(h2_vol_trim(v, MiB + 8192, 64 * BS, 0), 0);
	cr_assert_eq(h2_vol_resize(st, "v", 3 * MiB), 0);
	t_write(v, 2 * MiB, MiB, 4);

	cr_assert_eq(h2_vol_rollback(st, "v", "old", 0), -ENOTEMPTY);
	cr_assert_eq(h2_vol_rollback(st, "v", "new", 0), -EBUSY);
	cr_assert_eq(h2_vol_rollback(st, "v", "new", H2_ROLLBACK_FORCE), 0, "%s",
		     h2_core_errmsg());
	/* The open handle reads the snapshot's data and size now. */
	cr_assert_eq(h2_vol_size(v), size);
	t_expect(st, "v", b, size);
	cr_assert_eq(h2_snap_info(st, "v", "new", &si), 0);
	cr_assert_eq(si.excl_bytes, 0);
	cr_assert_eq(t_used(st), base, "rollback freed what came after");
	/* Writing on after a rollback works as before. */
	t_write(v, 0, BS, 5);
	model_write(b, 0, BS, 5);
	t_expect(st, "v", b, size);
	t_expect(st, "v@new", a, size);
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);
	t_check_clean(fd, "rollback");
	st = t_open(fd, true);
	t_expect(st, "v", b, size);
	cr_assert_eq(h2_vol_info(st, "v", &vi), 0);
	cr_assert_eq(vi.size, size);
	cr_assert_eq(h2_snap_delete(st, "v", "new"), 0);
	cr_assert_eq(h2_vol_rollback(st, "v", "old", 0), 0);
	cr_assert_eq(h2_store_close(st), 0);
	t_check_clean(fd, "rollback to old");
	free(a);
	free(b);
	h2_fdev_free(fd);
}

Test(snap, delete_refusals_and_recursive)
{
	struct h2_fdev *fd = t_fdev(64 * MiB);
	struct h2_store *st = t_open(fd, true);
	struct h2_snap_info *l;
	struct h2_store_stats ss;
	size_t n;

	cr_assert_eq(h2_vol_create(st, "v", MiB, NULL), 0);
	cr_assert_eq(h2_vol_create(st, "w", MiB, NULL), 0);
	cr_assert_eq(h2_snap_create(st, "v", "s1", NULL), 0);
	cr_assert_eq(h2_snap_create(st, "v", "s2", NULL), 0);
	cr_assert_eq(h2_snap_create(st, "w", "s1", NULL), 0);
	cr_assert_eq(h2_vol_delete(st, "v"), -ENOTEMPTY);
	cr_assert(strstr(h2_core_errmsg(), "s1, s2"), "%s",
		  h2_core_errmsg());
	cr_assert_eq(h2_snap_list(st, NULL, &l, &n), 0);
	cr_assert_eq(n, 3);
	cr_assert_str_eq(l[0].volume, "v");
	cr_assert_str_eq(l[2].volume, "w");
	free(l);
	h2_store_stat(st, &ss);
	cr_assert_eq(ss.volumes, 2);
	cr_assert_eq(ss.snapshots, 3);
	cr_assert_eq(h2_vol_delete_flags(st, "v", H2_DEL_RECURSIVE), 0);
	cr_assert_eq(h2_snap_list(st, "v", &l, &n), -ENOENT);
	cr_assert_eq(h2_snap_list(st, "w", &l, &n), 0);
	cr_assert_eq(n, 1);
	free(l);
	cr_assert_eq(h2_snap_delete(st, "w", "nope"), -ENOENT);
	cr_assert_eq(h2_store_close(st), 0);
	t_check_clean(fd, "recursive");
	h2_fdev_free(fd);
}

/* ---------------------------------------------------------------------- */
/* Crash states.                                                          */

#define CSIZE (512 * 1024)
#define CMAX 64

struct csnap {
	char name[24];
	uint8_t *img;
	bool deleted;	/* delete started */
	size_t done_ev; /* event count when create returned */
};

static struct csnap cs[CMAX];
static int ncs;

static void crash_workload(struct h2_fdev *fd, uint64_t seed, int steps)
{
	struct h2_store *st = t_open(fd, true);
	uint8_t *img = calloc(1, CSIZE);
	struct h2_vol *v;
	uint64_t rs = seed;
	int clones = 0;

	cr_assert_eq(h2_vol_create(st, "v", CSIZE, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	for (int i = 0; i < steps; i++) {
		uint64_t roll = t_rand(&rs) % 100;

		if (roll < 55) {
			uint64_t off = t_rand(&rs) % (CSIZE - 4 * BS);
			uint64_t len = 1 + t_rand(&rs) % (4 * BS);

			t_write(v, off, len, (uint64_t)i);
			model_write(img, off, len, (uint64_t)i);
		} else if (roll < 62) {
			uint64_t off = (t_rand(&rs) % (CSIZE / BS - 16)) * BS;

			cr_assert_eq(h2_vol_trim(v, off, 16 * BS, 0), 0);
			memset(img + off, 0, 16 * BS);
		} else if (roll < 75 && ncs < CMAX) {
			struct csnap *s = &cs[ncs++];

			snprintf(s->name, sizeof(s->name), "s%d", ncs);
			cr_assert_eq(h2_snap_create(st, "v", s->name, NULL), 0,
				     "%s", h2_core_errmsg());
			s->img = malloc(CSIZE);
			memcpy(s->img, img, CSIZE);
			s->done_ev = h2_fdev_event_count(fd);
		} else if (roll < 85) {
			int k = (int)(t_rand(&rs) % (uint64_t)(ncs ? ncs : 1));

			if (ncs && !cs[k].deleted) {
				int r = h2_snap_delete(st, "v", cs[k].name);

				cr_assert(r == 0 || r == -ENOTEMPTY, "%d %s", r,
					  h2_core_errmsg());
				cs[k].deleted = r == 0;
			}
		} else if (roll < 90 && ncs && !cs[ncs - 1].deleted) {
			char cname[16];
			struct h2_vol *c;

			snprintf(cname, sizeof(cname), "c%d", clones++);
			cr_assert_eq(h2_snap_clone(st, "v", cs[ncs - 1].name, cname,
					      NULL), 0);
			cr_assert_eq(h2_vol_open(st, cname, &c), 0);
			t_write(c, 0, 2 * BS, 99);
			h2_vol_close(c);
			if (clones % 2 == 0)
				cr_assert_eq(h2_vol_delete(st, cname), 0);
		} else if (roll < 94 && ncs && !cs[ncs - 1].deleted) {
			cr_assert_eq(h2_vol_rollback(st, "v", cs[ncs - 1].name,
						 H2_ROLLBACK_FORCE), 0, "%s",
				     h2_core_errmsg());
			memcpy(img, cs[ncs - 1].img, CSIZE);
		} else {
			cr_assert_eq(h2_store_sync(st, NULL), 0);
		}
	}
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);
	free(img);
}

static uint64_t crash_checked;

static void crash_verify(struct h2_fdev *img, size_t upto, const char *what)
{
	struct h2_check_report *rep;
	struct h2_store_opts o = {.no_flusher = true, .read_only = true};
	struct h2_store *st;
	uint8_t *got = malloc(CSIZE);
	char name[64];

	cr_assert_eq(h2_check(h2_fdev_dev(img), &rep), 0);
	if (rep->status != H2_CHECK_CLEAN && !t_torn_next_header_only(rep)) {
		for (size_t i = 0; i < rep->nproblems; i++)
			fprintf(stderr, "%s at event %zu: %s: %s\n", what, upto,
				rep->problems[i].where, rep->problems[i].what);
		cr_assert_fail("%s at event %zu: check found problems", what,
			       upto);
	}
	h2_check_report_free(rep);
	cr_assert_eq(h2_store_open(h2_fdev_dev(img), &o, &st), 0, "%s",
		     h2_core_errmsg());
	for (int i = 0; i < ncs; i++) {
		struct h2_vol *v;
		int r;

		snprintf(name, sizeof(name), "v@%.20s", cs[i].name);
		r = h2_vol_open(st, name, &v);
		if (r == -ENOENT) {
			/* Absent only if never durable or being deleted. */
			cr_assert(cs[i].deleted || cs[i].done_ev > upto,
				  "%s: %s lost at event %zu (durable at %zu)",
				  what, name, upto, cs[i].done_ev);
			continue;
		}
		cr_assert_eq(r, 0, "%s", h2_core_errmsg());
		cr_assert_eq(h2_vol_read(v, got, 0, CSIZE), 0);
		cr_assert(memcmp(got, cs[i].img, CSIZE) == 0,
			  "%s: %s differs from its creation at event %zu",
			  what, name, upto);
		h2_vol_close(v);
	}
	cr_assert_eq(h2_store_close(st), 0);
	crash_checked++;
	free(got);
}

Test(snap, crash_at_every_flush_point, .timeout = 900)
{
	struct h2_fdev *fd = t_fdev(48 * MiB);
	size_t nev, flushes = 0, random = getenv("H2_TEST_QUICK") ? 60 : 300;
	uint64_t rs = 0x51a9;
	uint8_t *fate;

	h2_fdev_record(fd);
	crash_workload(fd, 0xfeed, getenv("H2_TEST_QUICK") ? 150 : 300);
	nev = h2_fdev_event_count(fd);
	for (size_t i = 0; i < nev; i++) {
		struct h2_crash_spec spec = {.upto = i + 1};
		struct h2_fdev *img;

		if (h2_fdev_event(fd, i)->op != H2_FDEV_FLUSH)
			continue;
		cr_assert_eq(h2_fdev_crash_image(fd, &spec, &img), 0);
		crash_verify(img, i + 1, "flush point");
		h2_fdev_free(img);
		flushes++;
	}
	fate = calloc(nev + 1, 1);
	for (size_t n = 0; n < random; n++) {
		size_t upto = 1 + t_rand(&rs) % nev;
		long last = h2_fdev_last_flush(fd, upto);
		struct h2_crash_spec spec = {.upto = upto, .fate = fate};
		struct h2_fdev *img;

		for (size_t i = 0; i < upto; i++) {
			uint64_t roll = t_rand(&rs) % 100;

			fate[i] = (long)i <= last ? H2_CRASH_APPLY
				  : roll < 50	  ? H2_CRASH_APPLY
				  : roll < 80	  ? H2_CRASH_DROP
						  : H2_CRASH_TORN;
		}
		spec.torn_sectors = 1 + (uint32_t)(t_rand(&rs) % 7);
		cr_assert_eq(h2_fdev_crash_image(fd, &spec, &img), 0);
		crash_verify(img, (size_t)(last + 1), "mangled tail");
		h2_fdev_free(img);
	}
	cr_assert_gt(ncs, 5, "the workload made only %d snapshots", ncs);
	fprintf(stderr, "snap crash: %zu events, %zu flush points, %" PRIu64
			" states verified, %d snapshots\n",
		nev, flushes, crash_checked, ncs);
	for (int i = 0; i < ncs; i++)
		free(cs[i].img);
	free(fate);
	h2_fdev_free(fd);
}
