/*
 * dev.c - the generic device wrappers and the file backend.
 *
 * The wrappers are the only entry points the engine uses.  They refuse
 * writes and flushes on read-only devices, check every range against the
 * device size without overflowing, and keep the counters.  A backend
 * therefore only ever sees requests that lie inside the device and never
 * repeats those checks.
 *
 * The file backend turns "exactly len bytes" into loops around pread and
 * pwritev: the kernel may transfer less than asked (a signal, a request
 * larger than it moves at once) without that being an error, so short
 * transfers and EINTR are retried.  A read that returns 0 before len bytes
 * means the file shrank under us and is reported as -EIO.  The caller's
 * iovec array is never modified: partial progress is tracked in a copy.
 *
 * Invariants:
 *   - dev->size <= INT64_MAX, so any offset inside the device, plus any
 *     length that passed the range check, fits in an off_t;
 *   - the counters count only requests that succeeded, and are touched
 *     only with __atomic builtins, so concurrent callers never lose an
 *     update.
 */
#include "dev.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "util.h"

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

/* Largest single pread we issue; Linux moves at most ~2 GiB per call. */
#define FILE_IO_CHUNK (1u << 30)

/* Segments per pwritev, copied on the stack (4 KiB): a flusher's
 * coalesced write (WQ_MAX, flush.c) goes in one call. */
#define FILE_IOV_STACK 256

/* A regular file or block device. */
struct file_dev {
	struct h2_dev dev; /* first: the wrappers hand backends &dev */
	int fd;		   /* O_CLOEXEC, closed by file_close() */
	bool no_nowait;	   /* RWF_NOWAIT is not supported here */
};

/* Return true if [off, off + len) is not inside a device of size bytes. */
static bool dev_out_of_range(const struct h2_dev *dev, uint64_t len,
			     uint64_t off)
{
	return off > dev->size || len > dev->size - off;
}

/* Add n to one counter; relaxed is enough, nobody orders on them. */
static void dev_count(uint64_t *counter, uint64_t n)
{
	__atomic_fetch_add(counter, n, __ATOMIC_RELAXED);
}

/* Read exactly len bytes at off, or fail without partial success. */
int h2_dev_pread(struct h2_dev *dev, void *buf, size_t len, uint64_t off)
{
	int err;

	if (!dev || (!buf && len))
		return -EINVAL;
	if (dev_out_of_range(dev, len, off))
		return -EINVAL;
	if (len == 0)
		return 0;
	err = dev->ops->pread(dev, buf, len, off);
	if (err)
		return err;
	dev_count(&dev->stats.reads, 1);
	dev_count(&dev->stats.bytes_read, len);
	return 0;
}

int h2_dev_pread_cached(struct h2_dev *dev, void *buf, size_t len,
			uint64_t off)
{
	int err;

	if (!dev || !buf || len == 0 || dev_out_of_range(dev, len, off) ||
	    !dev->ops->pread_cached)
		return -EAGAIN;
	err = dev->ops->pread_cached(dev, buf, len, off);
	if (err)
		return -EAGAIN;
	dev_count(&dev->stats.reads, 1);
	dev_count(&dev->stats.bytes_read, len);
	return 0;
}

/* Write exactly the bytes of iov at off. */
int h2_dev_pwritev(struct h2_dev *dev, const struct iovec *iov, int iovcnt,
		   uint64_t off)
{
	uint64_t total = 0;
	int err;

	if (!dev || iovcnt < 0 || (!iov && iovcnt))
		return -EINVAL;
	if (dev->read_only)
		return -EROFS;
	/* The sum of the segment lengths may itself wrap around. */
	for (int i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len > UINT64_MAX - total)
			return -EINVAL;
		total += iov[i].iov_len;
	}
	if (dev_out_of_range(dev, total, off))
		return -EINVAL;
	if (total == 0)
		return 0;
	err = dev->ops->pwritev(dev, iov, iovcnt, off);
	if (err)
		return err;
	dev_count(&dev->stats.writes, 1);
	dev_count(&dev->stats.bytes_written, total);
	return 0;
}

/* Write one buffer: a pwritev with a single segment. */
int h2_dev_pwrite(struct h2_dev *dev, const void *buf, size_t len, uint64_t off)
{
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};

	if (!buf && len)
		return -EINVAL;
	return h2_dev_pwritev(dev, &iov, 1, off);
}

void h2_dev_writeback(struct h2_dev *dev, uint64_t off, uint64_t len)
{
	if (dev && !dev->read_only && dev->ops->writeback && len &&
	    !dev_out_of_range(dev, len, off))
		dev->ops->writeback(dev, off, len);
}

/* Make every write that returned before this call durable. */
int h2_dev_flush(struct h2_dev *dev)
{
	int err;

	if (!dev)
		return -EINVAL;
	if (dev->read_only)
		return -EROFS;
	err = dev->ops->flush(dev);
	if (err)
		return err;
	dev_count(&dev->stats.flushes, 1);
	return 0;
}

/* Close and free the device; a fault device lives until h2_fdev_free(). */
void h2_dev_close(struct h2_dev *dev)
{
	if (!dev)
		return;
	dev->ops->close(dev);
}

/* Copy the counters; each one is read atomically on its own. */
void h2_dev_get_stats(struct h2_dev *dev, struct h2_dev_stats *out)
{
	if (!dev || !out)
		return;
	out->bytes_read =
	    __atomic_load_n(&dev->stats.bytes_read, __ATOMIC_RELAXED);
	out->bytes_written =
	    __atomic_load_n(&dev->stats.bytes_written, __ATOMIC_RELAXED);
	out->reads = __atomic_load_n(&dev->stats.reads, __ATOMIC_RELAXED);
	out->writes = __atomic_load_n(&dev->stats.writes, __ATOMIC_RELAXED);
	out->flushes = __atomic_load_n(&dev->stats.flushes, __ATOMIC_RELAXED);
}

/* ---------------------------------------------------------------------- */
/* File backend.                                                          */

/* pread until len bytes arrived; EOF before that is -EIO. */
static int file_pread(struct h2_dev *dev, void *buf, size_t len, uint64_t off)
{
	struct file_dev *f = (struct file_dev *)dev;
	uint8_t *p = buf;
	size_t done = 0;

	while (done < len) {
		size_t want = len - done;
		ssize_t r;

		if (want > FILE_IO_CHUNK)
			want = FILE_IO_CHUNK;
		r = pread(f->fd, p + done, want, (off_t)(off + done));
		if (r < 0) {
			int err = -errno;

			if (err == -EINTR)
				continue;
			return h2_err(err, "%s: read of %zu bytes at %llu: %s",
				      dev->name, len, (unsigned long long)off,
				      strerror(-err));
		}
		if (r == 0)
			return h2_err(-EIO,
				      "%s: read at %llu hit end of file "
				      "(file shorter than the device size?)",
				      dev->name,
				      (unsigned long long)(off + done));
		done += (size_t)r;
	}
	return 0;
}

/* Skip the first n bytes of the segments v[*idx..cnt), dropping used ones. */
static void iov_advance(struct iovec *v, int cnt, int *idx, size_t n)
{
	while (n > 0 && *idx < cnt) {
		if (n >= v[*idx].iov_len) {
			n -= v[*idx].iov_len;
			(*idx)++;
		} else {
			v[*idx].iov_base = (uint8_t *)v[*idx].iov_base + n;
			v[*idx].iov_len -= n;
			n = 0;
		}
	}
	/* Zero-length segments would make pwritev return 0: step over them. */
	while (*idx < cnt && v[*idx].iov_len == 0)
		(*idx)++;
}

/*
 * pwritev until every byte of up to FILE_IOV_STACK segments is written,
 * on a private copy of iov.
 */
static int file_pwritev_part(struct file_dev *f, const struct iovec *iov,
			     int iovcnt, uint64_t off)
{
	struct h2_dev *dev = &f->dev;
	struct iovec v[FILE_IOV_STACK];
	uint64_t pos = off;
	int idx = 0, err = 0;

	memcpy(v, iov, (size_t)iovcnt * sizeof(*v));
	iov_advance(v, iovcnt, &idx, 0);

	while (idx < iovcnt) {
		int n = iovcnt - idx;
		ssize_t r;

		if (n > IOV_MAX)
			n = IOV_MAX;
		r = pwritev(f->fd, v + idx, n, (off_t)pos);
		if (r < 0) {
			err = -errno;
			if (err == -EINTR) {
				err = 0;
				continue;
			}
			err = h2_err(err, "%s: write at %llu: %s", dev->name,
				     (unsigned long long)pos, strerror(-err));
			goto out;
		}
		if (r == 0) {
			/* The kernel does not do this; never spin if it did. */
			err = h2_err(-EIO, "%s: write at %llu made no progress",
				     dev->name, (unsigned long long)pos);
			goto out;
		}
		pos += (uint64_t)r;
		iov_advance(v, iovcnt, &idx, (size_t)r);
	}
out:
	return err;
}

/*
 * pwritev until every byte is written, FILE_IOV_STACK segments at a time:
 * the flusher writes through here, and must not fail for want of memory
 * to copy a long iov into.
 */
static int file_pwritev(struct h2_dev *dev, const struct iovec *iov, int iovcnt,
			uint64_t off)
{
	struct file_dev *f = (struct file_dev *)dev;
	int err = 0;

	while (iovcnt > 0 && err == 0) {
		int n = iovcnt < FILE_IOV_STACK ? iovcnt : FILE_IOV_STACK;
		uint64_t len = 0;

		for (int i = 0; i < n; i++)
			len += iov[i].iov_len;
		err = file_pwritev_part(f, iov, n, off);
		iov += n;
		iovcnt -= n;
		off += len;
	}
	return err;
}

/*
 * fdatasync.  After a failed fdatasync Linux may already have dropped the
 * dirty pages, so retrying cannot make them durable: the error goes up
 * and the engine must treat the device as failed.
 */
static int file_flush(struct h2_dev *dev)
{
	struct file_dev *f = (struct file_dev *)dev;
	int r;

	do {
		r = fdatasync(f->fd);
	} while (r < 0 && errno == EINTR);
	if (r < 0) {
		int err = -errno;

		return h2_err(err, "%s: fdatasync: %s", dev->name,
			      strerror(-err));
	}
	return 0;
}

/* Close the descriptor and free the device. */
static void file_close(struct h2_dev *dev)
{
	struct file_dev *f = (struct file_dev *)dev;

	close(f->fd);
	free(f);
}

/*
 * Start writeback of a range the flusher just wrote.  Without it the
 * page cache holds a whole flush until the final fdatasync, so the
 * flusher computes (checksums, copies) and then waits on the disk,
 * never both at once; with it the disk works while the next blocks are
 * prepared.  SYNC_FILE_RANGE_WRITE promises no durability: fdatasync in
 * file_flush remains the barrier.  Errors surface there too.
 */
static void file_writeback(struct h2_dev *dev, uint64_t off, uint64_t len)
{
	struct file_dev *f = (struct file_dev *)dev;

	(void)sync_file_range(f->fd, (off_t)off, (off_t)len,
			      SYNC_FILE_RANGE_WRITE);
}

/* One preadv2(RWF_NOWAIT): the page cache has all of it, or -EAGAIN. */
static int file_pread_cached(struct h2_dev *dev, void *buf, size_t len,
			     uint64_t off)
{
	struct file_dev *f = (struct file_dev *)dev;
	struct iovec iov = {.iov_base = buf, .iov_len = len};
	ssize_t r;

	if (__atomic_load_n(&f->no_nowait, __ATOMIC_RELAXED))
		return -EAGAIN;
	r = preadv2(f->fd, &iov, 1, (off_t)off, RWF_NOWAIT);
	if (r < 0 && errno == EOPNOTSUPP)
		__atomic_store_n(&f->no_nowait, true, __ATOMIC_RELAXED);
	/* Short (part of it is not cached), failed or would block: the
	 * caller reads the ordinary way. */
	return r == (ssize_t)len ? 0 : -EAGAIN;
}

static const struct h2_dev_ops file_ops = {
    .pread = file_pread,
    .pwritev = file_pwritev,
    .flush = file_flush,
    .close = file_close,
    .writeback = file_writeback,
    .pread_cached = file_pread_cached,
};

/* Wrap an open descriptor; takes ownership of fd only on success. */
static int file_dev_new(int fd, const char *path, uint64_t size, bool read_only,
			struct h2_dev **out)
{
	struct file_dev *f;

	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->dev.ops = &file_ops;
	f->dev.size = size;
	f->dev.read_only = read_only;
	snprintf(f->dev.name, sizeof(f->dev.name), "%s", path);
	f->fd = fd;
	*out = &f->dev;
	return 0;
}

/* Size of what fd refers to: a regular file or a block device. */
static int file_size(int fd, const char *path, uint64_t *size)
{
	struct stat st;
	uint64_t sz;
	int err;

	if (fstat(fd, &st) < 0) {
		err = -errno;
		return h2_err(err, "%s: fstat: %s", path, strerror(-err));
	}
	if (S_ISREG(st.st_mode)) {
		sz = (uint64_t)st.st_size;
	} else if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, &sz) < 0) {
			err = -errno;
			return h2_err(err, "%s: BLKGETSIZE64: %s", path,
				      strerror(-err));
		}
	} else {
		return h2_err(-EINVAL, "%s: not a regular file or block device",
			      path);
	}
	if (sz > INT64_MAX)
		return h2_err(-EFBIG, "%s: device too large", path);
	*size = sz;
	return 0;
}

/* Open a regular file or block device as a device. */
int h2_dev_open_file(const char *path, unsigned flags, struct h2_dev **out)
{
	bool ro = flags & H2_DEV_RDONLY;
	uint64_t size = 0;
	int fd, err;

	if (!path || !out || (flags & ~(unsigned)H2_DEV_RDONLY))
		return -EINVAL;
	fd = open(path, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (fd < 0) {
		err = -errno;
		return h2_err(err, "%s: open: %s", path, strerror(-err));
	}
	err = file_size(fd, path, &size);
	if (err)
		goto out;
	err = file_dev_new(fd, path, size, ro, out);
out:
	if (err)
		close(fd);
	return err;
}

/*
 * Create a sparse file of size bytes and open it read-write.  With
 * overwrite, an existing file is emptied first (O_TRUNC) and then extended,
 * so the new device reads as zeros like a freshly created one.  A file we
 * created ourselves is removed again if we fail after creating it.
 */
int h2_dev_create_file(const char *path, uint64_t size, bool overwrite,
		       struct h2_dev **out)
{
	int oflags = O_RDWR | O_CREAT | O_CLOEXEC;
	struct stat st;
	int fd, err;

	if (!path || !out)
		return -EINVAL;
	if (size > INT64_MAX)
		return h2_err(-EFBIG, "%s: size %llu too large", path,
			      (unsigned long long)size);
	oflags |= overwrite ? O_TRUNC : O_EXCL;
	fd = open(path, oflags, 0600);
	if (fd < 0) {
		err = -errno;
		return h2_err(err, "%s: create: %s", path, strerror(-err));
	}
	if (fstat(fd, &st) < 0) {
		err = -errno;
		h2_err(err, "%s: fstat: %s", path, strerror(-err));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		err = h2_err(-EINVAL, "%s: not a regular file", path);
		goto out;
	}
	if (ftruncate(fd, (off_t)size) < 0) {
		err = -errno;
		h2_err(err, "%s: ftruncate to %llu: %s", path,
		       (unsigned long long)size, strerror(-err));
		goto out;
	}
	err = file_dev_new(fd, path, size, false, out);
out:
	if (err) {
		close(fd);
		if (!overwrite)
			unlink(path);
	}
	return err;
}
