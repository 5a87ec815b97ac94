/*
 * I/O fault injection: regressions, each on its own.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

#include "check.h"
#include "helpers.h"

#define DEV_SIZE (40 * MiB)
#define VMAX (512 * 1024)

static uint8_t pat[1][VMAX];

/* ---------------------------------------------------------------------- */
/* Regressions found by the sweeps, each on its own.                      */

/* A volume with a snapshot that alone holds all of its first image. */
static struct h2_fdev *snapshot_holding_everything(uint8_t *img, uint64_t size)
{
	struct h2_fdev *fd = t_fdev(DEV_SIZE);
	struct h2_store *st = t_open(fd, false);
	struct h2_vol *v;

	cr_assert_eq(h2_vol_create(st, "v", size, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	t_fill(img, size, 1, 0);
	cr_assert_eq(h2_vol_write(v, img, 0, size, 0), 0);
	cr_assert_eq(h2_snap_create(st, "v", "s", NULL), 0);
	t_fill(pat[0], size, 2, 0);
	cr_assert_eq(h2_vol_write(v, pat[0], 0, size, 0), 0);
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);
	return fd;
}

/*
 * A flush must not write into blocks it frees: until its header is
 * durable the previous image still uses them.  Deleting a snapshot frees
 * its blocks and rewrites the directory in the same flush; a freshly
 * opened store allocates from the start of the device, where the freed
 * blocks are.  The flush's device flush fails, so the store stays at the
 * previous image, which must still read back whole.
 */
Test(faults, a_flush_never_writes_into_blocks_it_frees)
{
	uint64_t size = 256 * 1024;
	uint8_t *img = malloc(size), *got = malloc(size);
	struct h2_fdev *fd = snapshot_holding_everything(img, size);
	struct h2_fdev_fault f = {.op = H2_FDEV_FLUSH, .nth = 1};
	struct h2_store *st = t_open(fd, false);
	struct h2_vol *s;

	h2_fdev_fault_set(fd, &f);
	cr_assert_lt(h2_snap_delete(st, "v", "s"), 0);
	h2_store_close(st);
	h2_fdev_fault_clear(fd);
	t_check_clean(fd, "after the failed snapshot deletion");
	st = t_open(fd, false);
	cr_assert_eq(h2_vol_open(st, "v@s", &s), 0);
	cr_assert_eq(h2_vol_read(s, got, 0, size), 0, "%s", h2_core_errmsg());
	cr_assert(memcmp(got, img, size) == 0);
	h2_vol_close(s);
	cr_assert_eq(h2_snap_delete(st, "v", "s"), 0);
	cr_assert_eq(h2_store_close(st), 0);
	t_check_clean(fd, "after the snapshot deletion");
	free(img);
	free(got);
	h2_fdev_free(fd);
}
