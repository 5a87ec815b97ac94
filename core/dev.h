/*
 * dev.h - the device layer: where an h2 store's bytes live.
 *
 * A device is a flat byte range with positional reads and writes and a
 * durability barrier (flush).  Two backends:
 *
 *   file    a regular file or a block device, through pread/pwritev and
 *           fdatasync (dev.c);
 *   fault   an in-memory, sparse device for tests that records every write
 *           and every flush, fails on command, and builds "crash images":
 *           what a disk could hold after power loss at any point of the
 *           recorded history (dev_fault.c).
 *
 * The contract the engine relies on: after h2_dev_flush() returns 0, every
 * write that returned before the flush was called is durable.  A write not
 * followed by a successful flush may be lost, reordered against other such
 * writes, or torn at any 512-byte boundary.
 *
 * Thread-safety: all functions on one device may be called from several
 * threads at once (pread/pwritev/flush are positional and stateless);
 * h2_dev_close() must not race with anything else on that device.
 */
#ifndef H2_DEV_H
#define H2_DEV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct h2_dev;

struct h2_dev_ops {
	int (*pread)(struct h2_dev *dev, void *buf, size_t len, uint64_t off);
	int (*pwritev)(struct h2_dev *dev, const struct iovec *iov, int iovcnt,
		       uint64_t off);
	int (*flush)(struct h2_dev *dev);
	void (*close)(struct h2_dev *dev);
	/* Optional: start writing [off, off+len) back now (no durability
	 * promise; h2_dev_flush stays the barrier).  NULL: nothing. */
	void (*writeback)(struct h2_dev *dev, uint64_t off, uint64_t len);
	/* Optional: pread, but only if no waiting is needed (the bytes are
	 * in memory): 0, or -EAGAIN for anything else.  NULL: -EAGAIN. */
	int (*pread_cached)(struct h2_dev *dev, void *buf, size_t len,
			    uint64_t off);
};

/* Counters, updated atomically by the generic wrappers below. */
struct h2_dev_stats {
	uint64_t bytes_read;
	uint64_t bytes_written;
	uint64_t reads;
	uint64_t writes;
	uint64_t flushes;
};

/* Base object embedded first in every backend. */
struct h2_dev {
	const struct h2_dev_ops *ops;
	uint64_t size;	   /* bytes; I/O beyond it is -EINVAL */
	bool read_only;	   /* writes and flushes fail with -EROFS */
	char name[256];	   /* for messages: path or "fault:<n>" */
	struct h2_dev_stats stats; /* access with __atomic builtins */
};

enum h2_dev_open_flags {
	H2_DEV_RDONLY = 1u << 0,
};

/*
 * Open a regular file or block device.  Size comes from fstat, or from
 * BLKGETSIZE64 for block devices.  On success *out is a new device the
 * caller frees with h2_dev_close().  Errors: -errno from open/fstat/ioctl.
 */
int h2_dev_open_file(const char *path, unsigned flags, struct h2_dev **out);

/*
 * Create a sparse regular file of size bytes (O_EXCL unless overwrite is
 * true, in which case an existing file is truncated to size) and open it
 * read-write.  Errors: -EEXIST, -errno.
 */
int h2_dev_create_file(const char *path, uint64_t size, bool overwrite,
		       struct h2_dev **out);

/*
 * Read exactly len bytes at off.  Short reads and EINTR are retried; a
 * read past the end or an I/O error returns -EIO (or -EINVAL for a range
 * outside the device).  Thread-safe.
 */
int h2_dev_pread(struct h2_dev *dev, void *buf, size_t len, uint64_t off);

/*
 * h2_dev_pread if it can be done without waiting for the device (the
 * bytes are cached in memory), else -EAGAIN and buf's contents are
 * undefined.  Never sets the error message: errors show as -EAGAIN too,
 * and h2_dev_pread reports them.  Thread-safe.
 */
int h2_dev_pread_cached(struct h2_dev *dev, void *buf, size_t len,
			uint64_t off);

/* Write exactly the bytes of iov at off (retrying short writes). */
int h2_dev_pwritev(struct h2_dev *dev, const struct iovec *iov, int iovcnt,
		   uint64_t off);

/* Convenience: one buffer. */
int h2_dev_pwrite(struct h2_dev *dev, const void *buf, size_t len,
		  uint64_t off);

/* Durability barrier: fdatasync for files. */
int h2_dev_flush(struct h2_dev *dev);

/*
 * Hint that [off, off+len) was just written and will be flushed soon:
 * the file backend starts writeback so the device works while the
 * caller goes on computing.  Promises nothing; never fails.
 */
void h2_dev_writeback(struct h2_dev *dev, uint64_t off, uint64_t len);

/* Close and free; NULL is a no-op. */
void h2_dev_close(struct h2_dev *dev);

/* Snapshot of the counters. */
void h2_dev_get_stats(struct h2_dev *dev, struct h2_dev_stats *out);

/* ---------------------------------------------------------------------- */
/* Fault-injecting device (tests).                                        */

struct h2_fdev;

enum h2_fdev_op {
	H2_FDEV_WRITE = 1,
	H2_FDEV_FLUSH = 2,
	H2_FDEV_READ = 3, /* fault rules only: reads are never recorded */
};

/* One recorded event.  data is owned by the device (len bytes). */
struct h2_fdev_event {
	enum h2_fdev_op op;
	uint64_t off;
	uint64_t len;
	const uint8_t *data;
};

/*
 * Create an empty (all zeros), sparse in-memory device of size bytes.
 * Recording starts off; the device itself is h2_fdev_dev(fd), which the
 * caller must not h2_dev_close() while the fdev is alive: h2_fdev_free()
 * frees both.  (h2_dev_close() on it only marks it closed.)
 */
int h2_fdev_create(uint64_t size, struct h2_fdev **out);
struct h2_dev *h2_fdev_dev(struct h2_fdev *fd);
void h2_fdev_free(struct h2_fdev *fd);

/*
 * Start recording: the current contents become the "base" image of crash
 * images, and the event log is cleared.  Writes keep being applied to the
 * live contents as well.
 */
void h2_fdev_record(struct h2_fdev *fd);
size_t h2_fdev_event_count(struct h2_fdev *fd);
const struct h2_fdev_event *h2_fdev_event(struct h2_fdev *fd, size_t i);

/*
 * Fault injection: after `writes` more successful writes (or `flushes`
 * more successful flushes), every later write (flush) fails with -EIO.
 * Pass UINT64_MAX to disable.  read_fail_off: reads overlapping
 * [off, off+len) fail with -EIO (len 0 disables).
 */
void h2_fdev_fail_writes_after(struct h2_fdev *fd, uint64_t writes);
void h2_fdev_fail_flushes_after(struct h2_fdev *fd, uint64_t flushes);
void h2_fdev_fail_reads(struct h2_fdev *fd, uint64_t off, uint64_t len);

/*
 * General fault rule: one per device, independent of the three calls
 * above.  It counts the requests of one kind (reads, writes or flushes)
 * that reach the device from the moment it is set, and fails the nth of
 * them (1 = the very next one) with err; if persistent, every later one of
 * that kind fails too until the rule is cleared, else it clears itself
 * after failing once.
 *
 * A short write (writes only) is the way a real device fails half-way:
 * the first short_len bytes reach the contents (and the event log, as a
 * write of that length) and the request then fails with err.  The device
 * API has no partial success, so callers see the same error either way
 * and must assume any prefix of a failed write may be on the disk.
 * short_len 0 means half the request, rounded down to 512-byte sectors;
 * a short_len of the whole request or more is cut to one byte less.
 *
 * A failed request (other than the short write's prefix) changes neither
 * the contents nor the event log.
 */
struct h2_fdev_fault {
	enum h2_fdev_op op; /* kind of request counted */
	uint64_t nth;	    /* fail the nth one; 0 or UINT64_MAX: never
			       (the rule only counts) */
	int err;	    /* negative errno to fail with; 0 = -EIO */
	bool persistent;    /* then every later one too, until cleared */
	bool short_write;   /* H2_FDEV_WRITE only: apply a prefix first */
	uint64_t short_len; /* bytes of that prefix; 0 = half, sectors */
};

/* What the rule has seen since it was set. */
struct h2_fdev_fault_stats {
	uint64_t seen;	    /* requests of its kind, failed ones included */
	uint64_t failed;    /* of them, failed by the rule */
	size_t first_event; /* event count when it first failed one (with
			       recording on: events at or after this index
			       happened after the failure) */
};

/* Set (replace) the rule; counting starts now.  Thread-safe. */
void h2_fdev_fault_set(struct h2_fdev *fd, const struct h2_fdev_fault *f);
/* Remove the rule: nothing fails any more (its stats are kept). */
void h2_fdev_fault_clear(struct h2_fdev *fd);
/* The rule's counters (zeros if none was ever set). */
void h2_fdev_fault_stats(struct h2_fdev *fd, struct h2_fdev_fault_stats *out);

/* Change bytes of the live contents without recording (simulated rot). */
int h2_fdev_poke(struct h2_fdev *fd, uint64_t off, const void *buf,
		 size_t len);

/* How one recorded write appears in a crash image. */
enum h2_crash_write {
	H2_CRASH_APPLY = 0,   /* written whole */
	H2_CRASH_DROP = 1,    /* never reached the disk */
	H2_CRASH_TORN = 2,    /* only the first torn_sectors 512-byte sectors */
	H2_CRASH_GARBAGE = 3, /* the range holds pseudo-random bytes */
};

struct h2_crash_spec {
	size_t upto;		 /* events [0, upto) happened */
	const uint8_t *fate;	 /* per event index, enum h2_crash_write;
				    NULL = all applied; flush events ignore */
	const size_t *order;	 /* optional order of application of the
				    events in [0, upto) (a permutation);
				    NULL = recorded order */
	uint32_t torn_sectors;	 /* for H2_CRASH_TORN */
	uint64_t garbage_seed;	 /* for H2_CRASH_GARBAGE */
};

/*
 * Build a new fault device holding base + the events the spec lets
 * through, as a disk could after power loss.  The new device is not
 * recording and shares nothing mutable with fd (copy-on-write sharing of
 * unchanged blocks is fine).  Caller frees with h2_fdev_free().
 */
int h2_fdev_crash_image(struct h2_fdev *fd, const struct h2_crash_spec *spec,
			struct h2_fdev **out);

/* Index of the last FLUSH event in [0, upto), or -1 if there is none. */
long h2_fdev_last_flush(struct h2_fdev *fd, size_t upto);

#endif /* H2_DEV_H */
