/*
 * h2core.h - the h2 storage engine (libh2core).
 *
 * A store holds volumes: virtual disks with a byte size, thin provisioned
 * (holes read as zeros).  Every modifying call is a *normal transaction*:
 * after any crash it is wholly present or wholly absent.  A background
 * flusher writes the dirty tree bottom-up and syncs a volume header every
 * flush_interval_ms or when dirty data passes dirty_max; h2_store_sync() returns
 * once everything acknowledged before it is durable (concurrent syncs
 * share one flush).
 *
 * Errors are negative errno values:
 *   -EINVAL     bad argument (zero length, bad name, bad flags)
 *   -ERANGE     offset/length outside the volume (or overflowing)
 *   -EFBIG      request larger than H2_MAX_IO, or volume over the maximum
 *   -ENOENT     no such volume          -EEXIST   name already in use
 *   -ENOSPC     the store is full       -EROFS    store opened read-only
 *   -EIO        device error            -EBADMSG  checksum mismatch
 *   -EBUSY      volume is open          -ENOMEM   out of memory
 *   -ESHUTDOWN  the store failed an earlier flush and refuses writes
 * h2_core_errmsg() gives a human sentence for the last error of the
 * calling thread (which volume, which offset, what to do).
 *
 * Thread-safety: every function is thread-safe unless it says otherwise.
 * Writers of one volume are serialized by that volume's lock; readers of a
 * volume run in parallel; different volumes are independent; the flusher
 * runs concurrently with all of them.
 */
#ifndef H2_CORE_H
#define H2_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dev.h"

#define H2_CORE_VERSION "0.1.0"

/* Largest single read/write/trim payload and largest transaction. */
#define H2_MAX_IO (32u << 20)
#define H2_MAX_TXN_OPS 1024
#define H2_MAX_TXN_BYTES (64u << 20)

struct h2_store;
struct h2_vol;

struct h2_format_opts {
	bool force; /* overwrite an existing h2 store */
};

/*
 * Write a fresh, empty store onto dev (which must be at least
 * H2_DEV_MIN_SIZE bytes).  Without opts->force, a device that already
 * holds a valid h2 header is refused with -EEXIST.  Borrows dev.
 */
int h2_store_format(struct h2_dev *dev, const struct h2_format_opts *opts);

/* True if dev holds at least one valid h2 volume header. */
bool h2_store_probe(struct h2_dev *dev);

/* Points in a flush where a test hook runs (on the flushing thread). */
enum h2_flush_stage {
	H2_FLUSH_STAGE_FROZEN = 1,  /* cut taken, new transactions running */
	H2_FLUSH_STAGE_WRITTEN = 2, /* blocks and freemap written, no header */
	H2_FLUSH_STAGE_DONE = 3,    /* header durable (or flush failed) */
};

struct h2_store_opts {
	uint32_t flush_interval_ms; /* 0: default 1000 */
	uint64_t dirty_max;	    /* bytes; 0: default 256 MiB */
	uint64_t dirty_hard;	    /* writers wait above; 0: 2 * dirty_max */
	uint64_t cache_max;	    /* clean metadata kept in memory, bytes;
				       0: default 512 MiB */
	bool read_only;		    /* no flusher, all writes -EROFS */
	bool no_flusher;	    /* tests: flush only on h2_store_sync/close */
	void (*flush_hook)(void *arg, enum h2_flush_stage stage); /* tests */
	void *flush_hook_arg;
};

/*
 * Open the store on dev.  Takes ownership of dev (closed by
 * h2_store_close, or on failure).  O(1) in the data stored: reads the
 * header copies and the volume directory only.  Starts the flusher.
 */
int h2_store_open(struct h2_dev *dev, const struct h2_store_opts *opts,
		  struct h2_store **out);

/*
 * Final flush, stop the flusher, free everything, close the device.
 * Returns the final flush's result (the store is freed either way).
 * All volume handles must have been closed.
 */
int h2_store_close(struct h2_store *st);

/*
 * Make everything acknowledged before this call durable.  On success and
 * if tid is not NULL, *tid is the durable flush number that covers it.
 */
int h2_store_sync(struct h2_store *st, uint64_t *tid);

/* ---------------------------------------------------------------------- */
/* Volumes.                                                               */

struct h2_vol_info {
	uint64_t id;
	char name[256];	      /* "VOLUME" or, for a snapshot, "VOLUME@SNAP" */
	uint64_t size;	      /* bytes */
	uint64_t ctime_ns;
	uint64_t create_tid;
	uint64_t used_bytes;  /* blocks its tree references (data and
				 metadata, shared ones included), as of
				 the last flush */
	uint32_t snapshots;   /* snapshots of this volume */
	uint64_t snap_bytes;  /* held by its snapshots and not by it:
				 what deleting all of them would free */
	char origin[256];     /* a clone: "VOLUME@SNAP" it was cloned from,
				 else "" */
};

/* Names: 1..127 bytes of [A-Za-z0-9._-], not starting with '.' or '-'. */
bool h2_vol_name_valid(const char *name);

int h2_vol_create(struct h2_store *st, const char *name, uint64_t size,
		     struct h2_vol_info *out);
/* Caller frees *out with free(). */
int h2_vol_list(struct h2_store *st, struct h2_vol_info **out,
		   size_t *count);
int h2_vol_info(struct h2_store *st, const char *name,
		   struct h2_vol_info *out);
/* -EBUSY while any handle is open on it; -ENOTEMPTY if it has
 * snapshots (see h2_vol_delete_flags). */
int h2_vol_delete(struct h2_store *st, const char *name);
/* Shrinking discards the data beyond the new size.  Snapshots: -EROFS. */
int h2_vol_resize(struct h2_store *st, const char *name, uint64_t size);

/*
 * Delete a volume.  A volume with snapshots is refused with -ENOTEMPTY
 * unless flags has H2_DEL_RECURSIVE, which deletes its snapshots, the
 * clones made from them (recursively) and then the volume.  Returns once
 * the deletion is durable.
 */
enum h2_del_flags { H2_DEL_RECURSIVE = 1u << 0 };
int h2_vol_delete_flags(struct h2_store *st, const char *name,
			unsigned flags);

/*
 * Open a handle for I/O; close it with h2_vol_close().  name may be
 * "VOLUME@SNAP": a snapshot, opened read-only (writes fail with -EROFS).
 */
int h2_vol_open(struct h2_store *st, const char *name, struct h2_vol **out);
bool h2_vol_read_only(struct h2_vol *vol);
void h2_vol_close(struct h2_vol *vol);
uint64_t h2_vol_size(struct h2_vol *vol);
const char *h2_vol_name(struct h2_vol *vol);

/* ---------------------------------------------------------------------- */
/* I/O.  Any byte offset and length; unaligned edges are read-modify-write */
/* inside the same transaction.                                           */

enum h2_io_flags {
	H2_IO_FUA = 1u << 0,	 /* durable before returning */
	H2_IO_NO_HOLE = 1u << 1, /* write_zeroes: allocate zeros */
};

int h2_vol_read(struct h2_vol *vol, void *buf, uint64_t off, uint64_t len);
/* h2_vol_read without waiting (locks, device): -EAGAIN if it would. */
int h2_vol_read_cached(struct h2_vol *vol, void *buf, uint64_t off,
		       uint64_t len);
int h2_vol_write(struct h2_vol *vol, const void *buf, uint64_t off, uint64_t len,
	     unsigned flags);
int h2_vol_trim(struct h2_vol *vol, uint64_t off, uint64_t len, unsigned flags);
int h2_vol_write_zeroes(struct h2_vol *vol, uint64_t off, uint64_t len,
		    unsigned flags);

enum h2_op_type {
	H2_OP_WRITE = 1,
	H2_OP_TRIM = 2,
	H2_OP_ZERO = 3, /* write zeroes; flags may hold H2_IO_NO_HOLE */
};

struct h2_op {
	enum h2_op_type type;
	unsigned flags;
	uint64_t off;
	uint64_t len;
	const void *buf; /* H2_OP_WRITE only; borrowed */
	/* Or, instead of buf, the data in pieces (borrowed), their lengths
	 * adding up to len. */
	const struct iovec *iov;
	int iovcnt;
};

/*
 * Apply ops in order as one atomic transaction on vol.  On success, if
 * epoch is not NULL, *epoch is the flush number that will carry it (the
 * transaction is durable once a flush with that number is).  On error
 * nothing was applied.  flags may hold H2_IO_FUA.
 */
int h2_vol_txn(struct h2_vol *vol, const struct h2_op *ops, size_t n,
	   unsigned flags, uint64_t *epoch);

/*
 * Allocation map of [off, off+len): calls cb for consecutive extents,
 * hole = true for ranges that read as zeros because nothing is allocated.
 * Stops early if cb returns non-zero (that value is returned).
 */
typedef int (*h2_extent_cb)(void *arg, uint64_t off, uint64_t len, bool hole);
int h2_vol_block_status(struct h2_vol *vol, uint64_t off, uint64_t len,
		    h2_extent_cb cb, void *arg);

/* ---------------------------------------------------------------------- */
/* Snapshots and clones.                                                  */
/*                                                                        */
/* A snapshot is a read-only image of a volume at one flush: creating it  */
/* copies no data (the volume's root is shared) and returns once it is    */
/* durable, holding every transaction acknowledged before the call and    */
/* none by half.  A block is shared until one side overwrites it; then    */
/* the overwritten copy stays with the snapshot (it is freed when the     */
/* last snapshot holding it is deleted).  A clone is a writable volume    */
/* whose tree starts as a snapshot's.                                     */
/*                                                                        */
/* Snapshot names follow volume names (h2_vol_name_valid) and are unique  */
/* per volume; "VOLUME@SNAP" names one.  Errors beyond the above:         */
/*   -ENOTEMPTY  a clone depends on the snapshot, or newer snapshots      */
/*               exist (rollback)                                          */
/*   -EBUSY      open handles (or the snapshot is still being created)    */

struct h2_snap_info {
	uint64_t id;
	char volume[128];
	char name[128];
	uint64_t ctime_ns;
	uint64_t tid;		/* the flush whose image it is */
	uint64_t size;		/* volume size then, bytes */
	uint64_t refer_bytes;	/* blocks its tree references */
	uint64_t excl_bytes;	/* held by it alone: freed by deleting it
				   (blocks a clone of it shares count) */
	uint32_t clones;	/* volumes cloned from it */
};

int h2_snap_create(struct h2_store *st, const char *vol, const char *snap,
		   struct h2_snap_info *out);
/* vol NULL: every volume's.  Sorted by volume, then tid.  free(*out). */
int h2_snap_list(struct h2_store *st, const char *vol,
		 struct h2_snap_info **out, size_t *count);
int h2_snap_info(struct h2_store *st, const char *vol, const char *snap,
		 struct h2_snap_info *out);
/* Returns once durable; the space comes back after that flush. */
int h2_snap_delete(struct h2_store *st, const char *vol, const char *snap);
/* A new writable volume newvol sharing every block of vol@snap. */
int h2_snap_clone(struct h2_store *st, const char *vol, const char *snap,
	     const char *newvol, struct h2_vol_info *out);

/*
 * Make vol's contents snap's (its newest snapshot; older ones are
 * refused with -ENOTEMPTY: delete the newer ones first).  With open
 * handles on vol, -EBUSY unless flags has H2_ROLLBACK_FORCE (their
 * next reads see the snapshot's data).  Returns once durable.
 */
enum h2_rollback_flags { H2_ROLLBACK_FORCE = 1u << 0 };
int h2_vol_rollback(struct h2_store *st, const char *vol, const char *snap,
		unsigned flags);

/* ---------------------------------------------------------------------- */
/* Statistics.                                                            */

struct h2_store_stats {
	uint64_t dev_size;
	uint64_t block_size;
	uint64_t total_bytes;	  /* allocatable space */
	uint64_t used_bytes;	  /* allocated, as of the last flush */
	uint64_t free_bytes;	  /* total - used - reserved for dirty data */
	uint64_t dirty_bytes;	  /* modified, not yet flushed */
	uint64_t volumes;
	uint64_t snapshots;
	uint64_t snapshot_bytes;  /* held only by snapshots (all volumes) */
	uint64_t flushes;	  /* flushes that wrote a header */
	uint64_t flush_ns_total;  /* time spent in them */
	uint64_t last_flush_ns;
	uint64_t durable_tid;	  /* newest durable header */
	uint64_t dev_bytes_written;
	uint64_t dev_bytes_read;
	uint64_t dev_flushes;
	uint64_t client_bytes_written;
	uint64_t client_bytes_read;
	uint64_t write_waits;	  /* writers that waited on the hard limit */
	uint64_t cached_bytes;	  /* chains in memory (metadata and dirty) */
	/* Allocations an install phase made beyond what its transaction
	 * set aside (its bounds were short; it waited for memory instead
	 * of failing).  Always 0 unless the engine has a bug: tests check. */
	uint64_t unreserved_allocs;
};

void h2_store_stat(struct h2_store *st, struct h2_store_stats *out);

/* Human sentence about the calling thread's last error (never NULL). */
const char *h2_core_errmsg(void);

#endif /* H2_CORE_H */
