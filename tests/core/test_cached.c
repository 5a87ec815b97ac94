/*
 * h2_vol_read_cached: the read the NBD loop thread tries before handing a
 * read to a worker.  It must return exactly what h2_vol_read returns when
 * it succeeds, and -EAGAIN, never a wait, when an indirect block is not in
 * memory or the data is not in the page cache.  On a real file: the fault
 * device has no cached reads at all.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helpers.h"

static char dir[64];
static char path[128];

static int rm_entry(const char *p, const struct stat *sb, int flag,
		    struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(p);
}

static void setup(void)
{
	strcpy(dir, "/tmp/h2-test-cached-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/store.img", dir);
}

static void teardown(void)
{
	if (dir[0])
		nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
	dir[0] = 0;
}

static struct h2_store *open_store(bool create)
{
	struct h2_store_opts o = {.no_flusher = true};
	struct h2_store *st;
	struct h2_dev *dev;

	if (create) {
		cr_assert_eq(h2_dev_create_file(path, 64 * MiB, false, &dev),
			     0, "%s", h2_core_errmsg());
		cr_assert_eq(h2_store_format(dev, NULL), 0, "%s",
			     h2_core_errmsg());
	} else {
		cr_assert_eq(h2_dev_open_file(path, 0, &dev), 0, "%s",
			     h2_core_errmsg());
	}
	cr_assert_eq(h2_store_open(dev, &o, &st), 0, "%s", h2_core_errmsg());
	return st;
}

/* Drop the store file's pages from the page cache; false if the file
 * system keeps them anyway (tmpfs). */
static bool drop_cache(void)
{
	int fd = open(path, O_RDONLY);
	struct stat sb;
	unsigned char *vec;
	void *map;
	size_t pages, resident = 0;

	cr_assert_geq(fd, 0);
	cr_assert_eq(fstat(fd, &sb), 0);
	cr_assert_eq(fdatasync(fd), 0);
	cr_assert_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	pages = ((size_t)sb.st_size + 4095) / 4096;
	map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_SHARED, fd, 0);
	cr_assert_neq(map, MAP_FAILED);
	vec = malloc(pages);
	cr_assert_eq(mincore(map, (size_t)sb.st_size, vec), 0);
	for (size_t i = 0; i < pages; i++)
		resident += vec[i] & 1;
	free(vec);
	munmap(map, (size_t)sb.st_size);
	close(fd);
	return resident < pages / 2;
}

TestSuite(cached, .init = setup, .fini = teardown);

Test(cached, same_bytes_as_read_or_eagain_never_a_wait)
{
	const size_t len = 2 * MiB;
	uint8_t *want = malloc(len), *got = malloc(len);
	struct h2_store *st = open_store(true);
	struct h2_vol *v;

	cr_assert_eq(h2_vol_create(st, "v", 256 * MiB, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	t_fill(want, len, 7, 0);
	cr_assert_eq(h2_vol_write(v, want, 8 * MiB, len, 0), 0);
	cr_assert_eq(h2_store_sync(st, NULL), 0);

	/* Written through the page cache: all of it is there. */
	memset(got, 0xAA, len);
	cr_assert_eq(h2_vol_read_cached(v, got, 8 * MiB, len), 0, "%s",
		     h2_core_errmsg());
	cr_assert_eq(memcmp(got, want, len), 0);
	/* Unaligned edges, a hole and the volume's end. */
	cr_assert_eq(h2_vol_read_cached(v, got, 8 * MiB + 1000, 5000), 0);
	cr_assert_eq(memcmp(got, want + 1000, 5000), 0);
	cr_assert_eq(h2_vol_read_cached(v, got, 64 * MiB, 65536), 0);
	for (size_t i = 0; i < 65536; i++)
		cr_assert_eq(got[i], 0);
	cr_assert_eq(h2_vol_read_cached(v, got, 256 * MiB - 4096, 8192),
		     -ERANGE);
	/* Dirty data, still in memory only: read from the chains. */
	t_fill(want, 4096, 8, 0);
	cr_assert_eq(h2_vol_write(v, want, 8 * MiB, 4096, 0), 0);
	cr_assert_eq(h2_vol_read_cached(v, got, 8 * MiB, 4096), 0);
	cr_assert_eq(memcmp(got, want, 4096), 0);
	cr_assert_eq(h2_store_sync(st, NULL), 0);

	/* Out of the page cache: would wait for the disk. */
	if (drop_cache()) {
		cr_assert_eq(h2_vol_read_cached(v, got, 8 * MiB, len),
			     -EAGAIN);
		cr_assert_eq(h2_vol_read(v, got, 8 * MiB, len), 0);
		cr_assert_eq(h2_vol_read_cached(v, got, 8 * MiB, len), 0);
		t_fill(want, len, 7, 0);
		t_fill(want, 4096, 8, 0);
		cr_assert_eq(memcmp(got, want, len), 0);
	} else {
		cr_log_warn("%s keeps its pages cached: the page cache "
			    "case is not tested here",
			    dir);
	}
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);

	/* Reopened: the indirect blocks under the root are not in memory
	 * until a read that may wait loads them. */
	st = open_store(false);
	cr_assert_eq(h2_vol_open(st, "v", &v), 0);
	cr_assert_eq(h2_vol_read_cached(v, got, 8 * MiB, 4096), -EAGAIN);
	cr_assert_eq(h2_vol_read(v, got, 8 * MiB, 4096), 0);
	cr_assert_eq(h2_vol_read_cached(v, got, 8 * MiB, 4096), 0);
	/* A leaf 1 MiB on is under another indirect block. */
	cr_assert_eq(h2_vol_read_cached(v, got, 8 * MiB + MiB, 4096), -EAGAIN);
	cr_assert_eq(h2_vol_read(v, got, 8 * MiB, len), 0);
	cr_assert_eq(h2_vol_read_cached(v, got, 8 * MiB, len), 0);
	t_fill(want, len, 7, 0);
	t_fill(want, 4096, 8, 0);
	cr_assert_eq(memcmp(got, want, len), 0);
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);
	free(want);
	free(got);
}
