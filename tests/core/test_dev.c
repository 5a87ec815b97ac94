/*
 * The device layer: generic wrappers, the file backend and the
 * fault-injecting in-memory device.
 *
 * Short transfers and EINTR are forced on the file backend by interposing
 * pread and pwritev in this executable (the test binary links libh2core
 * statically, so its definitions win over libc's); the shim only touches
 * descriptors that refer to the file a test armed it for.
 */
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "dev.h"

/* ---------------------------------------------------------------------- */
/* pread/pwritev shim.                                                    */

static struct {
	bool on;
	dev_t dev;
	ino_t ino;
	size_t max;	  /* bytes per call at most */
	unsigned calls;	  /* every other call fails with EINTR */
	unsigned eintr;	  /* how many EINTRs were injected */
	size_t shortened; /* how many calls moved less than asked */
} shim;

/* True if the shim is armed and fd is the armed file. */
static bool shim_hit(int fd)
{
	struct stat st;

	if (!shim.on || fstat(fd, &st) < 0)
		return false;
	return st.st_dev == shim.dev && st.st_ino == shim.ino;
}

/* Arm the shim for path: at most max bytes per call, EINTR every 2nd. */
static void shim_arm(const char *path, size_t max)
{
	struct stat st;

	cr_assert_eq(stat(path, &st), 0);
	shim.dev = st.st_dev;
	shim.ino = st.st_ino;
	shim.max = max;
	shim.calls = 0;
	shim.eintr = 0;
	shim.shortened = 0;
	shim.on = true;
}

/* Interposed pread: short reads and EINTR on the armed file. */
ssize_t pread(int fd, void *buf, size_t count, off_t offset)
{
	static ssize_t (*real)(int, void *, size_t, off_t);

	if (!real)
		real = (ssize_t(*)(int, void *, size_t, off_t))dlsym(RTLD_NEXT,
								     "pread");
	if (shim_hit(fd)) {
		if (shim.calls++ % 2 == 0) {
			shim.eintr++;
			errno = EINTR;
			return -1;
		}
		if (count > shim.max) {
			count = shim.max;
			shim.shortened++;
		}
	}
	return real(fd, buf, count, offset);
}

/* Interposed pwritev: short writes (cut mid-segment) and EINTR. */
ssize_t pwritev(int fd, const struct iovec *iov, int iovcnt, off_t offset)
{
	static ssize_t (*real)(int, const struct iovec *, int, off_t);
	struct iovec cut[64];
	size_t left;
	int n = 0;

	if (!real)
		real = (ssize_t(*)(int, const struct iovec *, int, off_t))dlsym(
		    RTLD_NEXT, "pwritev");
	if (!shim_hit(fd))
		return real(fd, iov, iovcnt, offset);
	if (shim.calls++ % 2 == 0) {
		shim.eintr++;
		errno = EINTR;
		return -1;
	}
	left = shim.max;
	while (n < iovcnt && n < 64 && left > 0) {
		cut[n] = iov[n];
		if (cut[n].iov_len > left)
			cut[n].iov_len = left;
		left -= cut[n].iov_len;
		n++;
	}
	shim.shortened++;
	return real(fd, cut, n, offset);
}

/* ---------------------------------------------------------------------- */
/* Helpers.                                                               */

static char tmpdir[64];

/* Make a fresh temporary directory for one test. */
static void tmp_setup(void)
{
	strcpy(tmpdir, "/tmp/h2-test-dev-XXXXXX");
	cr_assert_not_null(mkdtemp(tmpdir));
}

/* nftw callback: remove one entry. */
static int rm_entry(const char *path, const struct stat *st, int flag,
		    struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Remove the temporary directory and everything in it. */
static void tmp_teardown(void)
{
	shim.on = false;
	if (tmpdir[0])
		nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	tmpdir[0] = 0;
}

/* Path of name inside the test's directory (static buffer). */
static const char *tmp_path(const char *name)
{
	static char path[128];

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	return path;
}

/* Deterministic, position-dependent pattern so misplaced bytes show. */
static void fill(uint8_t *buf, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(seed * 131 + i * 7 + (i >> 9) + 1);
}

/* True if every byte of buf equals c. */
static bool all_eq(const uint8_t *buf, size_t len, uint8_t c)
{
	for (size_t i = 0; i < len; i++)
		if (buf[i] != c)
			return false;
	return true;
}

/* Write len bytes of value c at off through the wrapper. */
static void put(struct h2_dev *dev, uint64_t off, size_t len, uint8_t c)
{
	uint8_t *buf = malloc(len);

	cr_assert_not_null(buf);
	memset(buf, c, len);
	cr_assert_eq(h2_dev_pwrite(dev, buf, len, off), 0);
	free(buf);
}

/* Read len bytes at off into a new buffer the caller frees. */
static uint8_t *get(struct h2_dev *dev, uint64_t off, size_t len)
{
	uint8_t *buf = malloc(len ? len : 1);

	cr_assert_not_null(buf);
	cr_assert_eq(h2_dev_pread(dev, buf, len, off), 0);
	return buf;
}

/* True if [off, off + len) of dev is all c. */
static bool range_is(struct h2_dev *dev, uint64_t off, size_t len, uint8_t c)
{
	uint8_t *buf = get(dev, off, len);
	bool r = all_eq(buf, len, c);

	free(buf);
	return r;
}

/* New fault device of size bytes. */
static struct h2_fdev *mkfdev(uint64_t size)
{
	struct h2_fdev *fd = NULL;

	cr_assert_eq(h2_fdev_create(size, &fd), 0);
	cr_assert_not_null(fd);
	return fd;
}

/* Crash image of fd for spec; asserts success. */
static struct h2_fdev *image(struct h2_fdev *fd,
			     const struct h2_crash_spec *spec)
{
	struct h2_fdev *img = NULL;

	cr_assert_eq(h2_fdev_crash_image(fd, spec, &img), 0);
	cr_assert_not_null(img);
	return img;
}

/* ---------------------------------------------------------------------- */
/* File backend and wrappers.                                             */

TestSuite(dev, .init = tmp_setup, .fini = tmp_teardown);

Test(dev, file_round_trip_at_unaligned_offsets)
{
	struct h2_dev *dev = NULL;
	uint8_t a[10007], b[3001], back[10007];
	struct iovec iov[3];

	cr_assert_eq(h2_dev_create_file(tmp_path("d"), 1 << 20, false, &dev),
		     0);
	cr_assert_eq(dev->size, 1u << 20);
	cr_assert_not(dev->read_only);
	cr_assert_str_eq(dev->name, tmp_path("d"));
	fill(a, sizeof(a), 1);
	fill(b, sizeof(b), 2);
	cr_assert_eq(h2_dev_pwrite(dev, a, sizeof(a), 12345), 0);
	/* Three segments, the middle one empty, straddling the first write. */
	iov[0] = (struct iovec){b, 1000};
	iov[1] = (struct iovec){b, 0};
	iov[2] = (struct iovec){b + 1000, 2001};
	cr_assert_eq(h2_dev_pwritev(dev, iov, 3, 12345 + 9000), 0);
	cr_assert_eq(h2_dev_flush(dev), 0);
	h2_dev_close(dev);

	/* Reopen: the bytes went to the file, not only to a cache of ours. */
	cr_assert_eq(h2_dev_open_file(tmp_path("d"), 0, &dev), 0);
	cr_assert_eq(dev->size, 1u << 20);
	cr_assert_eq(h2_dev_pread(dev, back, 9000, 12345), 0);
	cr_assert_arr_eq(back, a, 9000);
	cr_assert_eq(h2_dev_pread(dev, back, sizeof(b), 12345 + 9000), 0);
	cr_assert_arr_eq(back, b, sizeof(b));
	cr_assert_eq(h2_dev_pread(dev, back, 7, 12338), 0);
	cr_assert(all_eq(back, 7, 0), "bytes before the write stay zero");
	cr_assert_eq(h2_dev_pread(dev, back, 1, (1 << 20) - 1), 0);
	cr_assert_eq(back[0], 0);
	h2_dev_close(dev);
}

Test(dev, create_makes_a_sparse_file_of_the_size)
{
	struct h2_dev *dev = NULL;
	struct stat st;

	cr_assert_eq(h2_dev_create_file(tmp_path("s"), 8ull << 30, false, &dev),
		     0);
	cr_assert_eq(stat(tmp_path("s"), &st), 0);
	cr_assert_eq((uint64_t)st.st_size, 8ull << 30);
	cr_assert_lt((uint64_t)st.st_blocks * 512, 1u << 20,
		     "an 8 GiB device must not allocate its space");
	cr_assert(range_is(dev, (8ull << 30) - 4096, 4096, 0));
	h2_dev_close(dev);
}

Test(dev, create_refuses_existing_file_without_overwrite)
{
	struct h2_dev *dev = NULL;
	uint8_t buf[4096];

	cr_assert_eq(h2_dev_create_file(tmp_path("e"), 8192, false, &dev), 0);
	put(dev, 0, 8192, 0x5a);
	h2_dev_close(dev);

	dev = NULL;
	cr_assert_eq(h2_dev_create_file(tmp_path("e"), 4096, false, &dev),
		     -EEXIST);
	cr_assert_null(dev);
	/* The failed create left the existing file alone. */
	cr_assert_eq(h2_dev_open_file(tmp_path("e"), H2_DEV_RDONLY, &dev), 0);
	cr_assert_eq(dev->size, 8192);
	cr_assert_eq(h2_dev_pread(dev, buf, sizeof(buf), 4096), 0);
	cr_assert(all_eq(buf, sizeof(buf), 0x5a));
	h2_dev_close(dev);
}

Test(dev, create_with_overwrite_gives_fresh_zeros)
{
	struct h2_dev *dev = NULL;

	cr_assert_eq(h2_dev_create_file(tmp_path("o"), 8192, false, &dev), 0);
	put(dev, 0, 8192, 0x5a);
	h2_dev_close(dev);
	cr_assert_eq(h2_dev_create_file(tmp_path("o"), 16384, true, &dev), 0);
	cr_assert_eq(dev->size, 16384);
	cr_assert(range_is(dev, 0, 16384, 0));
	h2_dev_close(dev);
}

Test(dev, open_errors_come_from_the_system)
{
	struct h2_dev *dev = NULL;

	cr_assert_eq(h2_dev_open_file(tmp_path("missing"), 0, &dev), -ENOENT);
	cr_assert_eq(h2_dev_open_file(tmpdir, H2_DEV_RDONLY, &dev), -EINVAL,
		     "a directory is not a device");
	cr_assert_eq(h2_dev_open_file(tmpdir, 0x80, &dev), -EINVAL,
		     "unknown flags are refused");
	cr_assert_null(dev);
	h2_dev_close(NULL);
}

Test(dev, ranges_outside_or_overflowing_are_einval)
{
	struct h2_dev *dev = NULL;
	uint8_t buf[16] = {0};
	struct iovec wrap[2] = {{buf, SIZE_MAX}, {buf, 2}};
	struct iovec ok[2] = {{buf, 8}, {buf, 8}};

	cr_assert_eq(h2_dev_create_file(tmp_path("r"), 4096, false, &dev), 0);
	cr_assert_eq(h2_dev_pread(dev, buf, 16, 4096 - 16), 0);
	cr_assert_eq(h2_dev_pread(dev, buf, 0, 4096), 0, "empty at the end");
	cr_assert_eq(h2_dev_pread(dev, buf, 16, 4096 - 15), -EINVAL);
	cr_assert_eq(h2_dev_pread(dev, buf, 0, 4097), -EINVAL);
	cr_assert_eq(h2_dev_pread(dev, buf, 16, UINT64_MAX - 8), -EINVAL,
		     "off + len wraps around");
	cr_assert_eq(h2_dev_pread(dev, buf, SIZE_MAX, 16), -EINVAL);
	cr_assert_eq(h2_dev_pwrite(dev, buf, 16, 4096 - 15), -EINVAL);
	cr_assert_eq(h2_dev_pwrite(dev, buf, 16, UINT64_MAX - 8), -EINVAL);
	cr_assert_eq(h2_dev_pwritev(dev, wrap, 2, 0), -EINVAL,
		     "segment lengths whose sum wraps around");
	cr_assert_eq(h2_dev_pwritev(dev, ok, 2, 4096 - 15), -EINVAL);
	cr_assert_eq(h2_dev_pwritev(dev, ok, -1, 0), -EINVAL);
	cr_assert_eq(h2_dev_pwritev(dev, ok, 2, 4096 - 16), 0);
	h2_dev_close(dev);
}

Test(dev, read_only_refuses_writes_and_flushes)
{
	struct h2_dev *dev = NULL;
	struct h2_dev_stats st;
	uint8_t buf[512];

	cr_assert_eq(h2_dev_create_file(tmp_path("ro"), 4096, false, &dev), 0);
	put(dev, 0, 512, 0x77);
	h2_dev_close(dev);
	cr_assert_eq(h2_dev_open_file(tmp_path("ro"), H2_DEV_RDONLY, &dev), 0);
	cr_assert(dev->read_only);
	cr_assert_eq(h2_dev_pwrite(dev, buf, 512, 0), -EROFS);
	cr_assert_eq(h2_dev_pwrite(dev, buf, 0, 0), -EROFS);
	cr_assert_eq(h2_dev_flush(dev), -EROFS);
	cr_assert_eq(h2_dev_pread(dev, buf, 512, 0), 0);
	cr_assert(all_eq(buf, 512, 0x77));
	h2_dev_get_stats(dev, &st);
	cr_assert_eq(st.writes, 0);
	cr_assert_eq(st.flushes, 0);
	cr_assert_eq(st.reads, 1);
	h2_dev_close(dev);
}

Test(dev, counters_count_successful_requests)
{
	struct h2_dev *dev = NULL;
	struct h2_dev_stats st;
	uint8_t buf[1000] = {0};
	struct iovec iov[2] = {{buf, 300}, {buf, 200}};

	cr_assert_eq(h2_dev_create_file(tmp_path("c"), 65536, false, &dev), 0);
	cr_assert_eq(h2_dev_pwrite(dev, buf, 1000, 10), 0);
	cr_assert_eq(h2_dev_pwritev(dev, iov, 2, 5000), 0);
	cr_assert_eq(h2_dev_pread(dev, buf, 123, 7), 0);
	cr_assert_eq(h2_dev_pread(dev, buf, 1000, 64000), 0);
	cr_assert_eq(h2_dev_pread(dev, buf, 1000, 65000), -EINVAL);
	cr_assert_eq(h2_dev_flush(dev), 0);
	cr_assert_eq(h2_dev_flush(dev), 0);
	h2_dev_get_stats(dev, &st);
	cr_assert_eq(st.writes, 2);
	cr_assert_eq(st.bytes_written, 1500);
	cr_assert_eq(st.reads, 2);
	cr_assert_eq(st.bytes_read, 1123);
	cr_assert_eq(st.flushes, 2);
	h2_dev_close(dev);
}

Test(dev, short_reads_and_eintr_are_retried)
{
	struct h2_dev *dev = NULL;
	uint8_t data[10000], back[10000];

	cr_assert_eq(h2_dev_create_file(tmp_path("sr"), 65536, false, &dev), 0);
	fill(data, sizeof(data), 3);
	cr_assert_eq(h2_dev_pwrite(dev, data, sizeof(data), 777), 0);
	shim_arm(tmp_path("sr"), 7);
	cr_assert_eq(h2_dev_pread(dev, back, sizeof(back), 777), 0);
	shim.on = false;
	cr_assert_arr_eq(back, data, sizeof(data));
	cr_assert_gt(shim.eintr, 100, "the shim really interfered");
	cr_assert_gt(shim.shortened, 100);
	h2_dev_close(dev);
}

Test(dev, short_writes_advance_the_segments_correctly)
{
	enum { NSEG = 3000 };
	static struct iovec iov[NSEG], saved[NSEG];
	static uint8_t data[NSEG * 7], back[NSEG * 7];
	struct h2_dev *dev = NULL;
	size_t total = 0;

	fill(data, sizeof(data), 4);
	/* Lengths 0..6: empty segments and cuts that land mid-segment. */
	for (int i = 0; i < NSEG; i++) {
		iov[i].iov_base = data + total;
		iov[i].iov_len = (size_t)(i % 7);
		total += iov[i].iov_len;
	}
	memcpy(saved, iov, sizeof(iov));
	cr_assert_eq(h2_dev_create_file(tmp_path("sw"), 65536, false, &dev), 0);
	shim_arm(tmp_path("sw"), 10);
	cr_assert_eq(h2_dev_pwritev(dev, iov, NSEG, 333), 0);
	shim.on = false;
	cr_assert_gt(shim.shortened, 100, "the shim really interfered");
	cr_assert_arr_eq(iov, saved, sizeof(iov), "caller's iovec changed");
	cr_assert_eq(h2_dev_pread(dev, back, total, 333), 0);
	cr_assert_arr_eq(back, data, total);
	cr_assert(range_is(dev, 333 + total, 100, 0), "nothing written past");

	/* More segments than IOV_MAX, without the shim. */
	memset(back, 0, sizeof(back));
	cr_assert_eq(h2_dev_pwritev(dev, iov, NSEG, 40000), 0);
	cr_assert_eq(h2_dev_pread(dev, back, total, 40000), 0);
	cr_assert_arr_eq(back, data, total);
	h2_dev_close(dev);
}

Test(dev, read_beyond_a_shrunken_file_is_eio, .timeout = 10)
{
	struct h2_dev *dev = NULL;
	uint8_t buf[4096];

	cr_assert_eq(h2_dev_create_file(tmp_path("t"), 16384, false, &dev), 0);
	/* Someone truncates the file under the open device. */
	cr_assert_eq(truncate(tmp_path("t"), 10000), 0);
	cr_assert_eq(h2_dev_pread(dev, buf, 4096, 4096), 0);
	cr_assert_eq(h2_dev_pread(dev, buf, 4096, 8192), -EIO,
		     "EOF before len bytes");
	cr_assert_eq(h2_dev_pread(dev, buf, 4096, 12288), -EIO);
	h2_dev_close(dev);
}

/* ---------------------------------------------------------------------- */
/* Fault device.                                                          */

Test(dev_fault, starts_as_zeros_and_stays_sparse)
{
	/* 16 GiB: a flat block array alone would cost 32 MiB. */
	struct h2_fdev *fd = mkfdev(16ull << 30);
	struct h2_dev *dev = h2_fdev_dev(fd);

	cr_assert_eq(dev->size, 16ull << 30);
	cr_assert_eq(strncmp(dev->name, "fault:", 6), 0);
	cr_assert(range_is(dev, 0, 8192, 0));
	cr_assert(range_is(dev, (16ull << 30) - 5000, 5000, 0));
	put(dev, (16ull << 30) - 1, 1, 0xee);
	cr_assert(range_is(dev, (16ull << 30) - 1, 1, 0xee));
	cr_assert(range_is(dev, (16ull << 30) - 4097, 4096, 0));
	h2_fdev_free(fd);
	h2_fdev_free(NULL);
}

Test(dev_fault, odd_sized_device_ends_exactly)
{
	struct h2_fdev *fd = mkfdev(10000);
	struct h2_dev *dev = h2_fdev_dev(fd);
	uint8_t buf[16];

	put(dev, 9990, 10, 0x11);
	cr_assert(range_is(dev, 9990, 10, 0x11));
	cr_assert_eq(h2_dev_pread(dev, buf, 11, 9990), -EINVAL);
	cr_assert_eq(h2_dev_pwrite(dev, buf, 11, 9990), -EINVAL);
	cr_assert_eq(h2_dev_pwrite(dev, buf, 2, UINT64_MAX - 1), -EINVAL);
	h2_fdev_free(fd);
}

Test(dev_fault, writes_are_applied_across_blocks)
{
	struct h2_fdev *fd = mkfdev(8 << 20);
	struct h2_dev *dev = h2_fdev_dev(fd);
	static uint8_t data[3 << 20], back[3 << 20];
	struct iovec iov[3];
	struct h2_dev_stats st;

	fill(data, sizeof(data), 5);
	/* Unaligned, crossing 4 KiB blocks and a 2 MiB leaf boundary. */
	iov[0] = (struct iovec){data, 1};
	iov[1] = (struct iovec){data + 1, 5000};
	iov[2] = (struct iovec){data + 5001, sizeof(data) - 5001};
	cr_assert_eq(h2_dev_pwritev(dev, iov, 3, (1 << 20) + 4095), 0);
	cr_assert_eq(h2_dev_pread(dev, back, sizeof(back), (1 << 20) + 4095),
		     0);
	cr_assert_arr_eq(back, data, sizeof(data));
	cr_assert(range_is(dev, (1 << 20), 4095, 0));
	cr_assert(range_is(dev, (1 << 20) + 4095 + sizeof(data), 4096, 0));
	/* A partial overwrite keeps the rest of the block. */
	put(dev, (1 << 20) + 4096 + 100, 10, 0xcc);
	cr_assert_eq(h2_dev_pread(dev, back, 4096, (1 << 20) + 4096), 0);
	cr_assert_arr_eq(back, data + 1, 100);
	cr_assert(all_eq(back + 100, 10, 0xcc));
	cr_assert_arr_eq(back + 110, data + 111, 4096 - 110);
	cr_assert_eq(h2_dev_flush(dev), 0);
	h2_dev_get_stats(dev, &st);
	cr_assert_eq(st.writes, 2);
	cr_assert_eq(st.bytes_written, sizeof(data) + 10);
	cr_assert_eq(st.flushes, 1);
	h2_fdev_free(fd);
}

Test(dev_fault, recording_logs_writes_and_flushes_with_data)
{
	struct h2_fdev *fd = mkfdev(1 << 20);
	struct h2_dev *dev = h2_fdev_dev(fd);
	const struct h2_fdev_event *ev;
	uint8_t a[100], b[50];
	struct iovec iov[2] = {{a, 30}, {b, 50}};

	put(dev, 0, 4096, 1);
	cr_assert_eq(h2_fdev_event_count(fd), 0, "not recording yet");
	h2_fdev_record(fd);
	cr_assert_eq(h2_fdev_event_count(fd), 0);
	fill(a, sizeof(a), 6);
	fill(b, sizeof(b), 7);
	cr_assert_eq(h2_dev_pwrite(dev, a, sizeof(a), 4097), 0);
	cr_assert_eq(h2_dev_flush(dev), 0);
	cr_assert_eq(h2_dev_pwritev(dev, iov, 2, 9000), 0);
	/* The log owns its copy: scribbling on the source changes nothing. */
	memset(a, 0, sizeof(a));
	memset(b, 0, sizeof(b));
	cr_assert_eq(h2_fdev_event_count(fd), 3);

	ev = h2_fdev_event(fd, 0);
	cr_assert_eq(ev->op, H2_FDEV_WRITE);
	cr_assert_eq(ev->off, 4097);
	cr_assert_eq(ev->len, 100);
	fill(a, sizeof(a), 6);
	cr_assert_arr_eq(ev->data, a, 100);
	ev = h2_fdev_event(fd, 1);
	cr_assert_eq(ev->op, H2_FDEV_FLUSH);
	ev = h2_fdev_event(fd, 2);
	cr_assert_eq(ev->op, H2_FDEV_WRITE);
	cr_assert_eq(ev->off, 9000);
	cr_assert_eq(ev->len, 80, "one event for the whole pwritev");
	fill(b, sizeof(b), 7);
	cr_assert_arr_eq(ev->data, a, 30);
	cr_assert_arr_eq(ev->data + 30, b, 50);
	cr_assert_null(h2_fdev_event(fd, 3));

	/* Writes are applied live while recording. */
	cr_assert(range_is(dev, 0, 4096, 1));
	cr_assert_eq(h2_dev_pread(dev, a, 30, 9000), 0);
	cr_assert_arr_eq(a, h2_fdev_event(fd, 2)->data, 30);

	/* Recording again starts a new log. */
	h2_fdev_record(fd);
	cr_assert_eq(h2_fdev_event_count(fd), 0);
	h2_fdev_free(fd);
}

Test(dev_fault, event_pointers_survive_later_writes)
{
	struct h2_fdev *fd = mkfdev(1 << 20);
	struct h2_dev *dev = h2_fdev_dev(fd);
	const struct h2_fdev_event *first;

	h2_fdev_record(fd);
	put(dev, 512, 512, 0x42);
	first = h2_fdev_event(fd, 0);
	for (int i = 0; i < 1000; i++)
		put(dev, 0, 16, (uint8_t)i);
	cr_assert_eq(h2_fdev_event(fd, 0), first);
	cr_assert_eq(first->off, 512);
	cr_assert(all_eq(first->data, 512, 0x42));
	h2_fdev_free(fd);
}

Test(dev_fault, crash_image_starts_from_the_recorded_base)
{
	struct h2_fdev *fd = mkfdev(1 << 20);
	struct h2_dev *dev = h2_fdev_dev(fd);
	struct h2_crash_spec spec = {.upto = 0};
	struct h2_fdev *img;

	put(dev, 0, 8192, 0x11);
	h2_fdev_record(fd);
	put(dev, 4096, 4096, 0x22);
	img = image(fd, &spec);
	cr_assert(range_is(h2_fdev_dev(img), 0, 8192, 0x11));
	cr_assert_eq(h2_fdev_event_count(img), 0);
	h2_fdev_free(img);

	spec.upto = 1;
	img = image(fd, &spec);
	cr_assert(range_is(h2_fdev_dev(img), 0, 4096, 0x11));
	cr_assert(range_is(h2_fdev_dev(img), 4096, 4096, 0x22));
	h2_fdev_free(img);
	h2_fdev_free(fd);
}

Test(dev_fault, crash_image_without_recording_copies_live)
{
	struct h2_fdev *fd = mkfdev(1 << 20);
	struct h2_crash_spec spec = {.upto = 0};
	struct h2_fdev *img;

	put(h2_fdev_dev(fd), 100, 200, 0x31);
	img = image(fd, &spec);
	cr_assert(range_is(h2_fdev_dev(img), 100, 200, 0x31));
	cr_assert(range_is(h2_fdev_dev(img), 0, 100, 0));
	h2_fdev_free(img);
	spec.upto = 1;
	cr_assert_eq(h2_fdev_crash_image(fd, &spec, &img), -EINVAL);
	h2_fdev_free(fd);
}

Test(dev_fault, crash_image_applies_exactly_the_prefix)
{
	struct h2_fdev *fd = mkfdev(1 << 20);
	struct h2_dev *dev = h2_fdev_dev(fd);

	h2_fdev_record(fd);
	for (int i = 0; i < 8; i++)
		put(dev, (uint64_t)i * 4096, 4096, (uint8_t)(i + 1));
	for (size_t upto = 0; upto <= 8; upto++) {
		struct h2_crash_spec spec = {.upto = upto};
		struct h2_fdev *img = image(fd, &spec);

		for (size_t i = 0; i < 8; i++)
			cr_assert(range_is(h2_fdev_dev(img), i * 4096, 4096,
					   i < upto ? (uint8_t)(i + 1) : 0),
				  "upto %zu block %zu", upto, i);
		h2_fdev_free(img);
	}
	h2_fdev_free(fd);
}

Test(dev_fault, crash_image_drops_writes_by_fate)
{
	struct h2_fdev *fd = mkfdev(1 << 20);
	struct h2_dev *dev = h2_fdev_dev(fd);
	uint8_t fate[4] = {H2_CRASH_APPLY, H2_CRASH_DROP, 0xff, H2_CRASH_APPLY};
	struct h2_crash_spec spec = {.upto = 4, .fate = fate};
	struct h2_fdev *img;

	put(dev, 0, 3 * 4096, 0x10);
	h2_fdev_record(fd);
	put(dev, 0, 4096, 0xa0);
	put(dev, 4096, 4096, 0xa1);
	cr_assert_eq(h2_dev_flush(dev), 0); /* its fate is ignored */
	put(dev, 8192, 4096, 0xa3);
	img = image(fd, &spec);
	cr_assert(range_is(h2_fdev_dev(img), 0, 4096, 0xa0));
	cr_assert(range_is(h2_fdev_dev(img), 4096, 4096, 0x10),
		  "dropped write keeps the base");
	cr_assert(range_is(h2_fdev_dev(img), 8192, 4096, 0xa3));
	h2_fdev_free(img);
	h2_fdev_free(fd);
}

Test(dev_fault, torn_write_changes_exactly_the_first_sectors)
{
	struct h2_fdev *fd = mkfdev(1 << 20);
	struct h2_dev *dev = h2_fdev_dev(fd);
	uint8_t fate[1] = {H2_CRASH_TORN};
	struct h2_crash_spec spec = {.upto = 1, .fate = fate};
	uint8_t data[8192], *back;

	put(dev, 0, 4 * 4096, 0x10);
	h2_fdev_record(fd);
	fill(data, sizeof(data), 8);
	cr_assert_eq(h2_dev_pwrite(dev, data, sizeof(data), 4096), 0);
	for (uint32_t torn = 0; torn <= 17; torn++) {
		struct h2_fdev *img;
		size_t n =
		    torn * 512 < sizeof(data) ? torn * 512 : sizeof(data);

		spec.torn_sectors = torn;
		img = image(fd, &spec);
		back = get(h2_fdev_dev(img), 0, 4 * 4096);
		cr_assert(all_eq(back, 4096, 0x10));
		cr_assert_arr_eq(back + 4096, data, n, "torn %u", torn);
		cr_assert(all_eq(back + 4096 + n, sizeof(data) - n, 0x10),
			  "torn %u: the rest keeps what was there", torn);
		cr_assert(all_eq(back + 3 * 4096, 4096, 0x10));
		free(back);
		h2_fdev_free(img);
	}
	h2_fdev_free(fd);
}

Test(dev_fault, garbage_write_is_changed_and_deterministic)
{
	struct h2_fdev *fd = mkfdev(1 << 20);
	struct h2_dev *dev = h2_fdev_dev(fd);
	uint8_t fate[2] = {H2_CRASH_APPLY, H2_CRASH_GARBAGE};
	struct h2_crash_spec spec = {
	    .upto = 2, .fate = fate, .garbage_seed = 1};
	struct h2_fdev *i1, *i2, *i3;
	uint8_t *g1, *g2, *g3;
	size_t same_as_data = 0, zeros = 0;

	h2_fdev_record(fd);
	put(dev, 0, 4096, 0x55);
	put(dev, 1000, 6000, 0xaa);
	i1 = image(fd, &spec);
	i2 = image(fd, &spec);
	spec.garbage_seed = 2;
	i3 = image(fd, &spec);
	g1 = get(h2_fdev_dev(i1), 1000, 6000);
	g2 = get(h2_fdev_dev(i2), 1000, 6000);
	g3 = get(h2_fdev_dev(i3), 1000, 6000);
	cr_assert_arr_eq(g1, g2, 6000, "same seed, same garbage");
	cr_assert_neq(memcmp(g1, g3, 6000), 0, "seed changes garbage");
	for (size_t i = 0; i < 6000; i++) {
		same_as_data += g1[i] == 0xaa || g1[i] == 0x55;
		zeros += g1[i] == 0;
	}
	cr_assert_lt(same_as_data, 200, "garbage differs from the data");
	cr_assert_lt(zeros, 100, "garbage is not zeros");
	cr_assert(range_is(h2_fdev_dev(i1), 0, 1000, 0x55),
		  "bytes before the range untouched");
	cr_assert(range_is(h2_fdev_dev(i1), 7000, 4096, 0),
		  "bytes after the range untouched");
	free(g1);
	free(g2);
	free(g3);
	h2_fdev_free(i1);
	h2_fdev_free(i2);
	h2_fdev_free(i3);
	h2_fdev_free(fd);
}

Test(dev_fault, order_decides_which_overlapping_write_wins)
{
	struct h2_fdev *fd = mkfdev(1 << 20);
	struct h2_dev *dev = h2_fdev_dev(fd);
	size_t rev[3] = {2, 1, 0};
	size_t mid[3] = {0, 2, 1};
	struct h2_crash_spec spec = {.upto = 3};
	struct h2_fdev *img;

	h2_fdev_record(fd);
	put(dev, 0, 4096, 0xa0);
	put(dev, 0, 4096, 0xb0);
	put(dev, 2048, 4096, 0xc0);

	img = image(fd, &spec);
	cr_assert(range_is(h2_fdev_dev(img), 0, 2048, 0xb0));
	cr_assert(range_is(h2_fdev_dev(img), 2048, 4096, 0xc0));
	h2_fdev_free(img);

	spec.order = rev;
	img = image(fd, &spec);
	cr_assert(range_is(h2_fdev_dev(img), 0, 4096, 0xa0));
	cr_assert(range_is(h2_fdev_dev(img), 4096, 2048, 0xc0));
	h2_fdev_free(img);

	spec.order = mid;
	img = image(fd, &spec);
	cr_assert(range_is(h2_fdev_dev(img), 0, 4096, 0xb0));
	cr_assert(range_is(h2_fdev_dev(img), 4096, 2048, 0xc0));
	h2_fdev_free(img);

	/* Garbage depends on the event, not its position in the order. */
	{
		uint8_t fate[3] = {H2_CRASH_GARBAGE, H2_CRASH_DROP,
				   H2_CRASH_DROP};
		struct h2_fdev *other;

		spec.fate = fate;
		spec.order = rev;
		img = image(fd, &spec);
		spec.order = NULL;
		other = image(fd, &spec);
		uint8_t *x = get(h2_fdev_dev(img), 0, 4096);
		uint8_t *y = get(h2_fdev_dev(other), 0, 4096);

		cr_assert_arr_eq(x, y, 4096);
		free(x);
		free(y);
		h2_fdev_free(other);
		h2_fdev_free(img);
	}
	h2_fdev_free(fd);
}

Test(dev_fault, bad_crash_specs_are_einval)
{
	struct h2_fdev *fd = mkfdev(1 << 20);
	struct h2_dev *dev = h2_fdev_dev(fd);
	size_t dup[2] = {0, 0}, big[2] = {0, 2};
	uint8_t fate[2] = {H2_CRASH_APPLY, 7};
	struct h2_crash_spec spec = {.upto = 3};
	struct h2_fdev *img = NULL;

	h2_fdev_record(fd);
	put(dev, 0, 512, 1);
	put(dev, 512, 512, 2);
	cr_assert_eq(h2_fdev_crash_image(fd, &spec, &img), -EINVAL,
		     "upto beyond the log");
	spec.upto = 2;
	spec.order = dup;
	cr_assert_eq(h2_fdev_crash_image(fd, &spec, &img), -EINVAL);
	spec.order = big;
	cr_assert_eq(h2_fdev_crash_image(fd, &spec, &img), -EINVAL);
	spec.order = NULL;
	spec.fate = fate;
	cr_assert_eq(h2_fdev_crash_image(fd, &spec, &img), -EINVAL);
	cr_assert_eq(h2_fdev_crash_image(fd, NULL, &img), -EINVAL);
	cr_assert_null(img);
	h2_fdev_free(fd);
}

Test(dev_fault, images_and_parent_share_nothing_mutable)
{
	struct h2_fdev *fd = mkfdev(4 << 20);
	struct h2_dev *dev = h2_fdev_dev(fd);
	struct h2_crash_spec spec = {.upto = 1};
	struct h2_fdev *a, *b, *c;

	put(dev, 0, 8192, 0x11);
	h2_fdev_record(fd);
	put(dev, 8192, 4096, 0x22);
	a = image(fd, &spec);
	b = image(fd, &spec);
	put(h2_fdev_dev(a), 0, 100, 0xaa);
	put(h2_fdev_dev(a), 8192, 100, 0xab);
	put(dev, 4096, 100, 0x33);
	cr_assert(range_is(h2_fdev_dev(b), 0, 8192, 0x11), "sibling image");
	cr_assert(range_is(h2_fdev_dev(b), 8192, 4096, 0x22));
	cr_assert(range_is(dev, 0, 4096, 0x11), "parent live");
	cr_assert(range_is(dev, 8192, 4096, 0x22));
	cr_assert(range_is(h2_fdev_dev(a), 4096, 4096, 0x11),
		  "later parent write");
	/* The base too: a fresh image sees none of the above. */
	spec.upto = 0;
	c = image(fd, &spec);
	cr_assert(range_is(h2_fdev_dev(c), 0, 8192, 0x11));
	cr_assert(range_is(h2_fdev_dev(c), 8192, 4096, 0));
	/* Images outlive their parent. */
	h2_fdev_free(fd);
	cr_assert(range_is(h2_fdev_dev(b), 8192, 4096, 0x22));
	cr_assert(range_is(h2_fdev_dev(a), 0, 100, 0xaa));
	h2_fdev_free(a);
	h2_fdev_free(b);
	h2_fdev_free(c);
}

Test(dev_fault, thousands_of_images_are_cheap, .timeout = 60)
{
	struct h2_fdev *fd = mkfdev(64 << 20);
	struct h2_dev *dev = h2_fdev_dev(fd);
	uint8_t buf[4096];

	/* 4 MiB of base spread over the device, then 200 recorded writes. */
	for (uint64_t i = 0; i < 1024; i++)
		put(dev, i * 16 * 4096, 4096, (uint8_t)i);
	h2_fdev_record(fd);
	for (uint64_t i = 0; i < 200; i++) {
		put(dev, (i * 37 % 16384) * 4096, 4096, 0xf0);
		if (i % 10 == 9)
			cr_assert_eq(h2_dev_flush(dev), 0);
	}
	for (size_t n = 0; n < 3000; n++) {
		struct h2_crash_spec spec = {.upto = n % 221};
		struct h2_fdev *img = image(fd, &spec);

		cr_assert_eq(
		    h2_dev_pread(h2_fdev_dev(img), buf, 4096, 16 * 4096), 0);
		cr_assert(all_eq(buf, 4096, 1));
		h2_fdev_free(img);
	}
	h2_fdev_free(fd);
}

Test(dev_fault, writes_fail_after_n)
{
	struct h2_fdev *fd = mkfdev(1 << 20);
	struct h2_dev *dev = h2_fdev_dev(fd);
	uint8_t buf[512];
	struct h2_dev_stats st;

	memset(buf, 0x99, sizeof(buf));
	h2_fdev_record(fd);
	h2_fdev_fail_writes_after(fd, 2);
	cr_assert_eq(h2_dev_pwrite(dev, buf, 512, 0), 0);
	cr_assert_eq(h2_dev_pwrite(dev, buf, 512, 512), 0);
	cr_assert_eq(h2_dev_pwrite(dev, buf, 512, 1024), -EIO);
	cr_assert_eq(h2_dev_pwrite(dev, buf, 512, 1536), -EIO);
	cr_assert_eq(h2_dev_flush(dev), 0, "flushes still work");
	cr_assert(range_is(dev, 1024, 1024, 0), "failed writes not applied");
	cr_assert_eq(h2_fdev_event_count(fd), 3, "failed writes not logged");
	h2_dev_get_stats(dev, &st);
	cr_assert_eq(st.writes, 2);
	h2_fdev_fail_writes_after(fd, UINT64_MAX);
	cr_assert_eq(h2_dev_pwrite(dev, buf, 512, 1024), 0);
	h2_fdev_fail_writes_after(fd, 0);
	cr_assert_eq(h2_dev_pwrite(dev, buf, 512, 1024), -EIO);
	h2_fdev_free(fd);
}

Test(dev_fault, flushes_fail_after_n)
{
	struct h2_fdev *fd = mkfdev(1 << 20);
	struct h2_dev *dev = h2_fdev_dev(fd);

	h2_fdev_record(fd);
	h2_fdev_fail_flushes_after(fd, 1);
	cr_assert_eq(h2_dev_flush(dev), 0);
	cr_assert_eq(h2_dev_flush(dev), -EIO);
	cr_assert_eq(h2_dev_flush(dev), -EIO);
	put(dev, 0, 512, 1);
	cr_assert_eq(h2_fdev_event_count(fd), 2);
	cr_assert_eq(h2_fdev_last_flush(fd, 2), 0);
	h2_fdev_fail_flushes_after(fd, UINT64_MAX);
	cr_assert_eq(h2_dev_flush(dev), 0);
	h2_fdev_free(fd);
}

Test(dev_fault, reads_fail_in_the_range)
{
	struct h2_fdev *fd = mkfdev(1 << 20);
	struct h2_dev *dev = h2_fdev_dev(fd);
	uint8_t buf[8192];

	h2_fdev_fail_reads(fd, 8192, 4096);
	cr_assert_eq(h2_dev_pread(dev, buf, 8192, 0), 0, "ends at the range");
	cr_assert_eq(h2_dev_pread(dev, buf, 2, 8191), -EIO);
	cr_assert_eq(h2_dev_pread(dev, buf, 1, 12287), -EIO);
	cr_assert_eq(h2_dev_pread(dev, buf, 8192, 6000), -EIO, "covers it");
	cr_assert_eq(h2_dev_pread(dev, buf, 100, 12288), 0, "starts after");
	put(dev, 8192, 16, 1);			 /* writes are unaffected */
	h2_fdev_fail_reads(fd, 100, UINT64_MAX); /* end would wrap */
	cr_assert_eq(h2_dev_pread(dev, buf, 100, 0), 0);
	cr_assert_eq(h2_dev_pread(dev, buf, 101, 0), -EIO);
	cr_assert_eq(h2_dev_pread(dev, buf, 1, (1 << 20) - 1), -EIO);
	h2_fdev_fail_reads(fd, 0, 0);
	cr_assert_eq(h2_dev_pread(dev, buf, 8192, 8192), 0);
	h2_fdev_free(fd);
}

/* ---------------------------------------------------------------------- */
/* The general fault rule.                                                */

Test(dev_fault, rule_fails_exactly_the_nth_write_once)
{
	struct h2_fdev *fd = mkfdev(1 << 20);
	struct h2_dev *dev = h2_fdev_dev(fd);
	struct h2_fdev_fault f = {.op = H2_FDEV_WRITE, .nth = 3};
	struct h2_fdev_fault_stats fs;
	uint8_t buf[512];

	memset(buf, 0x31, sizeof(buf));
	h2_fdev_record(fd);
	put(dev, 0, 512, 0x30); /* before the rule: not counted */
	h2_fdev_fault_set(fd, &f);
	cr_assert_eq(h2_dev_pwrite(dev, buf, 512, 512), 0);
	cr_assert_eq(h2_dev_flush(dev), 0, "other kinds are not counted");
	cr_assert_eq(h2_dev_pwrite(dev, buf, 512, 1024), 0);
	cr_assert_eq(h2_dev_pwrite(dev, buf, 512, 1536), -EIO);
	cr_assert(range_is(dev, 1536, 512, 0), "nothing of it applied");
	cr_assert_eq(h2_dev_pwrite(dev, buf, 512, 1536), 0, "once: cleared");
	cr_assert_eq(h2_dev_pwrite(dev, buf, 512, 2048), 0);
	h2_fdev_fault_stats(fd, &fs);
	cr_assert_eq(fs.seen, 5);
	cr_assert_eq(fs.failed, 1);
	/* The log: write, write, flush, write, (failed), write, write. */
	cr_assert_eq(fs.first_event, 4);
	cr_assert_eq(h2_fdev_event_count(fd), 6, "the failure is not logged");
	h2_fdev_free(fd);
}

Test(dev_fault, rule_persistent_fails_until_cleared_with_the_chosen_error)
{
	struct h2_fdev *fd = mkfdev(1 << 20);
	struct h2_dev *dev = h2_fdev_dev(fd);
	struct h2_fdev_fault f = {
	    .op = H2_FDEV_WRITE, .nth = 2, .err = -ENOSPC, .persistent = true};
	struct h2_fdev_fault_stats fs;
	struct h2_dev_stats ds;
	uint8_t buf[512] = {0};

	h2_fdev_fault_set(fd, &f);
	cr_assert_eq(h2_dev_pwrite(dev, buf, 512, 0), 0);
	for (int i = 0; i < 5; i++)
		cr_assert_eq(h2_dev_pwrite(dev, buf, 512, 0), -ENOSPC);
	cr_assert_eq(h2_dev_flush(dev), 0);
	h2_fdev_fault_clear(fd);
	cr_assert_eq(h2_dev_pwrite(dev, buf, 512, 0), 0);
	h2_fdev_fault_stats(fd, &fs);
	cr_assert_eq(fs.seen, 6, "counting stops with the rule");
	cr_assert_eq(fs.failed, 5);
	h2_dev_get_stats(dev, &ds);
	cr_assert_eq(ds.writes, 2, "failed writes are not counted as done");
	h2_fdev_free(fd);
}

Test(dev_fault, rule_short_write_applies_and_logs_a_prefix)
{
	struct h2_fdev *fd = mkfdev(1 << 20);
	struct h2_dev *dev = h2_fdev_dev(fd);
	struct h2_fdev_fault f = {
	    .op = H2_FDEV_WRITE, .nth = 1, .short_write = true};
	const struct h2_fdev_event *ev;
	uint8_t a[3000], b[3000];
	struct iovec iov[2] = {{a, sizeof(a)}, {b, sizeof(b)}};
	struct h2_crash_spec spec = {.upto = 1};
	struct h2_fdev *img;

	memset(a, 0xaa, sizeof(a));
	memset(b, 0xbb, sizeof(b));
	h2_fdev_record(fd);
	h2_fdev_fault_set(fd, &f);
	/* 6000 bytes: half is 3000, rounded down to sectors 2560. */
	cr_assert_eq(h2_dev_pwritev(dev, iov, 2, 4096), -EIO);
	cr_assert(range_is(dev, 4096, 2560, 0xaa));
	cr_assert(range_is(dev, 4096 + 2560, 6000 - 2560, 0));
	cr_assert_eq(h2_fdev_event_count(fd), 1);
	ev = h2_fdev_event(fd, 0);
	cr_assert_eq(ev->op, H2_FDEV_WRITE);
	cr_assert_eq(ev->off, 4096);
	cr_assert_eq(ev->len, 2560);
	img = image(fd, &spec);
	cr_assert(range_is(h2_fdev_dev(img), 4096, 2560, 0xaa));
	cr_assert(range_is(h2_fdev_dev(img), 4096 + 2560, 100, 0));
	h2_fdev_free(img);

	/* An explicit prefix crossing into the second segment. */
	f.short_len = 3500;
	f.err = -ENOSPC;
	h2_fdev_fault_set(fd, &f);
	cr_assert_eq(h2_dev_pwritev(dev, iov, 2, 65536), -ENOSPC);
	cr_assert(range_is(dev, 65536, 3000, 0xaa));
	cr_assert(range_is(dev, 65536 + 3000, 500, 0xbb));
	cr_assert(range_is(dev, 65536 + 3500, 2500, 0));
	cr_assert_eq(h2_fdev_event(fd, 1)->len, 3500);

	/* Never the whole request, even when asked for more. */
	f.short_len = 1 << 20;
	h2_fdev_fault_set(fd, &f);
	cr_assert_eq(h2_dev_pwrite(dev, a, 512, 0), -ENOSPC);
	cr_assert(range_is(dev, 0, 511, 0xaa));
	cr_assert(range_is(dev, 511, 1, 0));

	/* Not recording: the prefix still lands. */
	h2_fdev_free(fd);
	fd = mkfdev(1 << 20);
	dev = h2_fdev_dev(fd);
	f.short_len = 100;
	h2_fdev_fault_set(fd, &f);
	cr_assert_eq(h2_dev_pwritev(dev, iov, 2, 0), -ENOSPC);
	cr_assert(range_is(dev, 0, 100, 0xaa));
	cr_assert(range_is(dev, 100, 5900, 0));
	cr_assert_eq(h2_dev_pwritev(dev, iov, 2, 0), 0, "once");
	h2_fdev_free(fd);
}

Test(dev_fault, rule_fails_flushes_and_reads)
{
	struct h2_fdev *fd = mkfdev(1 << 20);
	struct h2_dev *dev = h2_fdev_dev(fd);
	struct h2_fdev_fault f = {.op = H2_FDEV_FLUSH, .nth = 2};
	struct h2_fdev_fault_stats fs;
	uint8_t buf[4096];

	h2_fdev_record(fd);
	h2_fdev_fault_set(fd, &f);
	put(dev, 0, 4096, 0x11);
	cr_assert_eq(h2_dev_flush(dev), 0);
	put(dev, 0, 4096, 0x12);
	cr_assert_eq(h2_dev_flush(dev), -EIO);
	cr_assert_eq(h2_dev_flush(dev), 0);
	h2_fdev_fault_stats(fd, &fs);
	cr_assert_eq(fs.first_event, 3, "after write, flush, write");
	cr_assert_eq(h2_fdev_event_count(fd), 4,
		     "the failed flush is not logged");
	cr_assert_eq(h2_fdev_last_flush(fd, 4), 3);

	f = (struct h2_fdev_fault){
	    .op = H2_FDEV_READ, .nth = 2, .persistent = true};
	h2_fdev_fault_set(fd, &f);
	cr_assert_eq(h2_dev_pread(dev, buf, 4096, 0), 0);
	cr_assert(all_eq(buf, 4096, 0x12));
	cr_assert_eq(h2_dev_pread(dev, buf, 1, 0), -EIO);
	cr_assert_eq(h2_dev_pread(dev, buf, 1, 8192), -EIO);
	put(dev, 0, 16, 0x13); /* writes unaffected */
	cr_assert_eq(h2_dev_flush(dev), 0);
	h2_fdev_fault_clear(fd);
	cr_assert_eq(h2_dev_pread(dev, buf, 16, 0), 0);
	cr_assert(all_eq(buf, 16, 0x13));
	h2_fdev_fault_stats(fd, &fs);
	cr_assert_eq(fs.seen, 3);
	cr_assert_eq(fs.failed, 2);
	h2_fdev_free(fd);
}

Test(dev_fault, rule_that_never_fires_counts_and_keeps_old_settings)
{
	struct h2_fdev *fd = mkfdev(1 << 20);
	struct h2_dev *dev = h2_fdev_dev(fd);
	struct h2_fdev_fault f = {.op = H2_FDEV_WRITE, .nth = 0};
	struct h2_fdev_fault_stats fs;
	uint8_t buf[512] = {0};

	h2_fdev_fault_stats(fd, &fs);
	cr_assert_eq(fs.seen, 0);
	h2_fdev_fault_set(fd, &f);
	h2_fdev_fail_writes_after(fd, 1);
	cr_assert_eq(h2_dev_pwrite(dev, buf, 512, 0), 0);
	cr_assert_eq(h2_dev_pwrite(dev, buf, 512, 0), -EIO,
		     "the older setting still applies");
	h2_fdev_fault_stats(fd, &fs);
	cr_assert_eq(fs.seen, 2);
	cr_assert_eq(fs.failed, 0);
	h2_fdev_free(fd);
}

Test(dev_fault, poke_changes_live_contents_without_recording)
{
	struct h2_fdev *fd = mkfdev(1 << 20);
	struct h2_dev *dev = h2_fdev_dev(fd);
	struct h2_crash_spec spec = {.upto = 1};
	struct h2_dev_stats st;
	struct h2_fdev *img;
	uint8_t rot[3] = {7, 7, 7};

	h2_fdev_record(fd);
	put(dev, 0, 4096, 0x44);
	cr_assert_eq(h2_fdev_poke(fd, 10, rot, 3), 0);
	cr_assert(range_is(dev, 10, 3, 7));
	cr_assert(range_is(dev, 13, 100, 0x44));
	cr_assert_eq(h2_fdev_event_count(fd), 1);
	h2_dev_get_stats(dev, &st);
	cr_assert_eq(st.writes, 1);
	img = image(fd, &spec);
	cr_assert(range_is(h2_fdev_dev(img), 0, 4096, 0x44));
	h2_fdev_free(img);
	cr_assert_eq(h2_fdev_poke(fd, (1 << 20) - 2, rot, 3), -EINVAL);
	cr_assert_eq(h2_fdev_poke(fd, UINT64_MAX, rot, 3), -EINVAL);
	h2_fdev_free(fd);
}

Test(dev_fault, last_flush_finds_the_latest_barrier)
{
	struct h2_fdev *fd = mkfdev(1 << 20);
	struct h2_dev *dev = h2_fdev_dev(fd);

	cr_assert_eq(h2_fdev_last_flush(fd, 0), -1);
	h2_fdev_record(fd);
	put(dev, 0, 1, 1);		    /* 0 */
	cr_assert_eq(h2_dev_flush(dev), 0); /* 1 */
	put(dev, 0, 1, 2);		    /* 2 */
	put(dev, 0, 1, 3);		    /* 3 */
	cr_assert_eq(h2_dev_flush(dev), 0); /* 4 */
	put(dev, 0, 1, 4);		    /* 5 */
	cr_assert_eq(h2_fdev_last_flush(fd, 0), -1);
	cr_assert_eq(h2_fdev_last_flush(fd, 1), -1);
	cr_assert_eq(h2_fdev_last_flush(fd, 2), 1);
	cr_assert_eq(h2_fdev_last_flush(fd, 4), 1);
	cr_assert_eq(h2_fdev_last_flush(fd, 5), 4);
	cr_assert_eq(h2_fdev_last_flush(fd, 6), 4);
	cr_assert_eq(h2_fdev_last_flush(fd, 1000), 4);
	h2_fdev_free(fd);
}

Test(dev_fault, dev_close_does_not_free_the_device)
{
	struct h2_fdev *fd = mkfdev(1 << 20);
	struct h2_dev *dev = h2_fdev_dev(fd);

	put(dev, 0, 4096, 0x61);
	h2_dev_close(dev);
	/* Still there (AddressSanitizer would flag a use after free). */
	cr_assert(range_is(dev, 0, 4096, 0x61));
	put(dev, 4096, 4096, 0x62);
	cr_assert(range_is(dev, 4096, 4096, 0x62));
	h2_dev_close(dev);
	h2_fdev_free(fd);
}

struct worker {
	struct h2_dev *dev;
	int id;
	int bad;
};

/* Write and read back a private 64 KiB region, 200 times. */
static void *worker_run(void *arg)
{
	struct worker *w = arg;
	uint8_t buf[8192], back[8192];

	for (int i = 0; i < 200; i++) {
		uint64_t off =
		    (uint64_t)w->id * 65536 + (uint64_t)(i % 8) * 8192;

		fill(buf, sizeof(buf), (unsigned)(w->id * 1000 + i));
		if (h2_dev_pwrite(w->dev, buf, sizeof(buf), off) ||
		    h2_dev_pread(w->dev, back, sizeof(back), off) ||
		    memcmp(buf, back, sizeof(buf)) != 0)
			w->bad++;
		if (i % 50 == 0 && h2_dev_flush(w->dev))
			w->bad++;
	}
	return NULL;
}

Test(dev_fault, concurrent_writers_and_readers_are_safe)
{
	struct h2_fdev *fd = mkfdev(1 << 20);
	struct worker w[4];
	pthread_t t[4];
	struct h2_dev_stats st;
	struct h2_crash_spec spec;
	struct h2_fdev *img;

	h2_fdev_record(fd);
	for (int i = 0; i < 4; i++) {
		w[i] = (struct worker){h2_fdev_dev(fd), i, 0};
		cr_assert_eq(pthread_create(&t[i], NULL, worker_run, &w[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		cr_assert_eq(w[i].bad, 0);
	}
	h2_dev_get_stats(h2_fdev_dev(fd), &st);
	cr_assert_eq(st.writes, 800);
	cr_assert_eq(st.reads, 800);
	cr_assert_eq(st.flushes, 16);
	cr_assert_eq(h2_fdev_event_count(fd), 816);
	/* Replaying the whole log gives the live contents. */
	spec = (struct h2_crash_spec){.upto = 816};
	img = image(fd, &spec);
	{
		uint8_t *x = get(h2_fdev_dev(fd), 0, 4 * 65536);
		uint8_t *y = get(h2_fdev_dev(img), 0, 4 * 65536);

		cr_assert_arr_eq(x, y, 4 * 65536);
		free(x);
		free(y);
	}
	h2_fdev_free(img);
	h2_fdev_free(fd);
}
