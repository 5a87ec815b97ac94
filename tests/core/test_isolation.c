/*
 * Isolation: data freed by one volume never shows through another.
 *
 * A secret pattern is written, then made unreachable three ways: its
 * volume is deleted, the only snapshot holding it is deleted, or its
 * range is trimmed.  After two syncs its blocks are free for reuse (the
 * first makes the freeing durable, the second allocates from them).
 * Then a new volume, and the trimmed range itself, get unaligned partial
 * writes all over (every one a read-modify-write of a leaf that was a
 * hole), with reads of never-written regions, of the neighbourhood of
 * each write and of everything, before and after a reopen.  Every read
 * must match a model of zeros plus what was written, and the secret's
 * marker must appear nowhere: not from a reused device block, nor from
 * a reused heap buffer that once held it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "helpers.h"

#define BS   4096u
#define DEV  (40 * MiB)
#define SIZE (2 * MiB)
#define MARK "H2SECRET"

/* Every 16 bytes: the marker, then the position (distinct blocks). */
static void secret_fill(uint8_t *buf, uint64_t len, uint64_t pos)
{
	for (uint64_t i = 0; i < len; i += 16) {
		uint64_t at = pos + i;

		memcpy(buf + i, MARK, 8);
		memcpy(buf + i + 8, &at, 8);
	}
}

static void no_secret(const uint8_t *buf, uint64_t len, const char *what)
{
	const void *p = memmem(buf, len, MARK, 8);

	cr_assert_null(p, "%s: the deleted secret shows at byte %td", what,
		       (const uint8_t *)p - buf);
}

/* Write the secret over [off, off + len) of name, in 64 KiB pieces. */
static void put_secret(struct h2_store *st, const char *name, uint64_t off,
		       uint64_t len)
{
	uint8_t *buf = malloc(64 * 1024);
	struct h2_vol *v;

	cr_assert_eq(h2_vol_open(st, name, &v), 0);
	for (uint64_t at = off; at < off + len; at += 64 * 1024) {
		uint64_t n =
		    off + len - at < 64 * 1024 ? off + len - at : 64 * 1024;

		secret_fill(buf, n, at);
		cr_assert_eq(h2_vol_write(v, buf, at, n, 0), 0);
	}
	h2_vol_close(v);
	free(buf);
}

struct probe {
	struct h2_store *st;
	struct h2_fdev *fd;
	const char *name;
	uint8_t *model; /* what name must read as */
	uint8_t *got;
	uint64_t lo, hi; /* where the partial writes go */
	uint64_t rs;
	unsigned writes, reads;
	uint64_t before; /* device blocks holding the secret at the start */
};

/* Read [off, off + len) and hold it against the model. */
static void probe_read(struct probe *p, struct h2_vol *v, uint64_t off,
		       uint64_t len, const char *what)
{
	cr_assert_eq(h2_vol_read(v, p->got, off, len), 0, "%s",
		     h2_core_errmsg());
	no_secret(p->got, len, what);
	for (uint64_t i = 0; i < len; i++)
		if (p->got[i] != p->model[off + i])
			cr_assert_fail("%s: %s byte %" PRIu64 " is %u, want %u",
				       what, p->name, off + i, p->got[i],
				       p->model[off + i]);
	p->reads++;
}

/* Extent callback: a range reported as a hole must be all zeros. */
static int hole_cb(void *arg, uint64_t off, uint64_t len, bool hole)
{
	struct probe *p = arg;

	if (hole)
		for (uint64_t i = 0; i < len; i++)
			cr_assert_eq(p->model[off + i], 0,
				     "%s: hole reported at %" PRIu64
				     " over written data",
				     p->name, off + i);
	return 0;
}

/*
 * Unaligned partial writes all over [lo, hi) of name, each followed by a
 * read of its neighbourhood and of a random never-written stretch; a
 * sync and a reopen half-way, so later partial writes read their leaves
 * from the device.
 */
static void partial_writes(struct probe *p, int n)
{
	uint8_t *buf = malloc(8192);
	struct h2_vol *v;

	cr_assert_eq(h2_vol_open(p->st, p->name, &v), 0);
	for (int i = 0; i < n; i++) {
		uint64_t len = 1 + t_rand(&p->rs) % 6000;
		uint64_t off = p->lo + t_rand(&p->rs) % (p->hi - p->lo - len);
		uint64_t a, b;

		/* Never block-aligned at both ends: a read-modify-write. */
		if (off % BS == 0 && len % BS == 0)
			off++;
		t_fill(buf, len, (uint64_t)i + 100, off);
		cr_assert_eq(h2_vol_write(v, buf, off, len, 0), 0);
		memcpy(p->model + off, buf, len);
		p->writes++;
		a = off > BS ? off - BS : 0;
		b = off + len + BS < SIZE ? off + len + BS : SIZE;
		probe_read(p, v, a, b - a, "around a write");
		a = t_rand(&p->rs) % (SIZE - 8192);
		probe_read(p, v, a, 1 + t_rand(&p->rs) % 8191, "anywhere");
		if (i == n / 2) {
			h2_vol_close(v);
			cr_assert_eq(h2_store_sync(p->st, NULL), 0);
			cr_assert_eq(h2_store_close(p->st), 0);
			p->st = t_open(p->fd, false);
			cr_assert_eq(h2_vol_open(p->st, p->name, &v), 0);
		}
	}
	probe_read(p, v, 0, SIZE, "everything");
	cr_assert_eq(h2_vol_block_status(v, 0, SIZE, hole_cb, p), 0);
	h2_vol_close(v);
	cr_assert_eq(h2_store_sync(p->st, NULL), 0);
	free(buf);
}

/*
 * Two syncs: the frees become durable, then their blocks allocatable;
 * and a reopen, so that allocation starts again from the front of the
 * device, where the freed blocks are.
 */
static struct h2_store *settle(struct h2_fdev *fd, struct h2_store *st)
{
	cr_assert_eq(h2_store_sync(st, NULL), 0);
	cr_assert_eq(h2_store_sync(st, NULL), 0);
	cr_assert_eq(h2_store_close(st), 0);
	return t_open(fd, false);
}

/* Device blocks that still hold the secret (freed, not yet reused). */
static uint64_t secret_blocks(struct h2_fdev *fd)
{
	struct h2_dev *dev = h2_fdev_dev(fd);
	uint8_t buf[BS];
	uint64_t n = 0;

	for (uint64_t off = 0; off < dev->size; off += BS) {
		cr_assert_eq(h2_dev_pread(dev, buf, BS, off), 0);
		n += memmem(buf, BS, MARK, 8) != NULL;
	}
	return n;
}

static struct probe probe_new(struct h2_fdev *fd, struct h2_store *st,
			      const char *name, uint64_t seed)
{
	struct probe p = {
	    .st = st, .fd = fd, .name = name, .lo = 0, .hi = SIZE, .rs = seed};

	p.before = secret_blocks(fd);
	cr_assert_gt(p.before, 0);
	p.model = calloc(1, SIZE);
	p.got = malloc(SIZE);
	return p;
}

static void probe_free(struct probe *p)
{
	free(p->model);
	free(p->got);
}

/* Everything on the device: the whole store, volume by volume. */
static void whole_store_clean(struct probe *p)
{
	struct h2_vol_info *vi;
	size_t n;

	cr_assert_eq(h2_store_close(p->st), 0);
	t_check_clean(p->fd, p->name);
	p->st = t_open(p->fd, false);
	cr_assert_eq(h2_vol_list(p->st, &vi, &n), 0);
	for (size_t i = 0; i < n; i++) {
		struct h2_vol *v;
		uint64_t size;

		cr_assert_eq(h2_vol_open(p->st, vi[i].name, &v), 0);
		size = h2_vol_size(v);
		cr_assert_leq(size, SIZE);
		cr_assert_eq(h2_vol_read(v, p->got, 0, size), 0);
		no_secret(p->got, size, vi[i].name);
		h2_vol_close(v);
	}
	free(vi);
	/* The new data went into the freed blocks (else this proved
	 * nothing). */
	cr_assert_lt(secret_blocks(p->fd), p->before / 2,
		     "the secret's blocks were not reused");
}

Test(isolation, a_deleted_volume_never_shows_through_a_new_one)
{
	struct h2_fdev *fd = t_fdev(DEV);
	struct h2_store *st = t_open(fd, false);
	struct probe p;

	cr_assert_eq(h2_vol_create(st, "a", SIZE, NULL), 0);
	put_secret(st, "a", 0, SIZE);
	cr_assert_eq(h2_store_sync(st, NULL), 0);
	cr_assert_eq(h2_vol_delete(st, "a"), 0);
	st = settle(fd, st);
	cr_assert_eq(h2_vol_create(st, "b", SIZE, NULL), 0);
	p = probe_new(fd, st, "b", 1);
	partial_writes(&p, 400);
	whole_store_clean(&p);
	cr_assert_eq(h2_store_close(p.st), 0);
	fprintf(stderr,
		"isolation: deleted volume: %u partial writes, %u "
		"reads\n",
		p.writes, p.reads);
	probe_free(&p);
	h2_fdev_free(fd);
}

Test(isolation, a_deleted_snapshot_never_shows_through)
{
	struct h2_fdev *fd = t_fdev(DEV);
	struct h2_store *st = t_open(fd, false);
	uint8_t *buf = malloc(SIZE);
	struct h2_vol *v;
	struct probe p;

	cr_assert_eq(h2_vol_create(st, "v", SIZE, NULL), 0);
	put_secret(st, "v", 0, SIZE);
	cr_assert_eq(h2_snap_create(st, "v", "s", NULL), 0);
	/* Now only the snapshot holds the secret. */
	t_fill(buf, SIZE, 7, 0);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	cr_assert_eq(h2_vol_write(v, buf, 0, SIZE, 0), 0);
	h2_vol_close(v);
	cr_assert_eq(h2_store_sync(st, NULL), 0);
	cr_assert_eq(h2_snap_delete(st, "v", "s"), 0);
	st = settle(fd, st);
	cr_assert_eq(h2_vol_create(st, "b", SIZE, NULL), 0);
	p = probe_new(fd, st, "b", 2);
	partial_writes(&p, 400);
	/* The volume itself: its own data, and partial writes too. */
	p.name = "v";
	memcpy(p.model, buf, SIZE);
	partial_writes(&p, 100);
	whole_store_clean(&p);
	cr_assert_eq(h2_store_close(p.st), 0);
	probe_free(&p);
	free(buf);
	h2_fdev_free(fd);
}

Test(isolation, a_trimmed_range_reads_zeros_and_never_the_old_data)
{
	struct h2_fdev *fd = t_fdev(DEV);
	struct h2_store *st = t_open(fd, false);
	struct h2_vol *v;
	struct probe p;

	cr_assert_eq(h2_vol_create(st, "v", SIZE, NULL), 0);
	put_secret(st, "v", 0, SIZE);
	cr_assert_eq(h2_store_sync(st, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	/* Unaligned edges: the partial blocks keep their secret bytes
	 * outside the range, zeros inside. */
	cr_assert_eq(h2_vol_trim(v, 1000, SIZE - 3000, 0), 0);
	cr_assert_eq(h2_vol_write_zeroes(v, 0, 1000, 0), 0);
	cr_assert_eq(h2_vol_write_zeroes(v, SIZE - 2000, 2000, H2_IO_NO_HOLE),
		     0);
	h2_vol_close(v);
	st = settle(fd, st);
	cr_assert_eq(h2_vol_create(st, "b", SIZE, NULL), 0);
	p = probe_new(fd, st, "v", 3);
	partial_writes(&p, 400);
	p.name = "b";
	memset(p.model, 0, SIZE);
	partial_writes(&p, 200);
	whole_store_clean(&p);
	cr_assert_eq(h2_store_close(p.st), 0);
	probe_free(&p);
	h2_fdev_free(fd);
}
