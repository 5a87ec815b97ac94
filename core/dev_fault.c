/*
 * dev_fault.c - the fault-injecting in-memory device for crash tests.
 *
 * Contents are sparse: a two-level map from 4 KiB block number to block
 * buffer, where a missing leaf or block reads as zeros.  A 4 GiB device
 * costs a 16 KiB top-level array plus the blocks actually written.
 *
 *   struct fmap                 struct fleaf (2 MiB of device)
 *   +-------------+             +------+----------------------+
 *   | leaf[0]     |-----------> | refs | blk[0] .. blk[511]   |--> fblk
 *   | leaf[1]=NULL|  (zeros)    +------+----------------------+    refs
 *   | ...         |                                                data[4096]
 *   +-------------+
 *
 * Leaves and blocks are reference counted and shared copy-on-write between
 * maps: h2_fdev_record() makes the base image by sharing the live map's
 * leaves, and h2_fdev_crash_image() starts each image by sharing the base's
 * leaves, so thousands of images of one base cost only what their replayed
 * events touch.  A map may modify a leaf or block in place only while it
 * holds the sole reference; otherwise it copies it first (map_leaf_mut,
 * leaf_blk_mut).
 *
 * Invariants:
 *   - every fdev's maps and event log are protected by its own lock;
 *   - an object with refs == 1 is reachable from exactly one map, and only
 *     that map's owner (holding its lock) can take a new reference, so the
 *     "sole owner" test cannot race; objects with refs > 1 are never
 *     written, only released, which is why refs use __atomic builtins
 *     (images and their parent drop shared objects under different locks);
 *   - the base map exists only while recording, and then the event log
 *     holds, in order, every successful write (with an owned copy of its
 *     data) and every successful flush since h2_fdev_record();
 *   - a failed write changes neither the contents nor the log, except
 *     for the prefix of a short write (a fault rule), which is applied
 *     and logged as a write of that length;
 *   - the fault rule counts every request of its kind that reaches the
 *     device, before the older write/flush/read failure settings are
 *     looked at (a request that one of those fails is still counted).
 */
#include "dev.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define FDEV_BLK_SHIFT	  12
#define FDEV_BLK_SIZE	  (1u << FDEV_BLK_SHIFT)
#define FDEV_LEAF_SHIFT	  9
#define FDEV_LEAF_ENTRIES (1u << FDEV_LEAF_SHIFT)
#define FDEV_SECTOR_SIZE  512u
#define FDEV_LOG_MIN	  64

/* One 4 KiB block of contents, shared by every map that references it. */
struct fblk {
	unsigned refs;
	uint8_t data[FDEV_BLK_SIZE];
};

/* FDEV_LEAF_ENTRIES block pointers; NULL = a block of zeros. */
struct fleaf {
	unsigned refs;
	struct fblk *blk[FDEV_LEAF_ENTRIES];
};

/* Whole-device map; NULL leaf = FDEV_LEAF_ENTRIES blocks of zeros. */
struct fmap {
	size_t nleaves;
	struct fleaf **leaf;
};

/* One recorded event with its data stored right behind it. */
struct fevent {
	struct h2_fdev_event ev;
	uint8_t data[];
};

/*
 * The fault device.  Lock order: one fdev lock at a time; the crash image
 * under construction is private and is not locked.
 */
struct h2_fdev {
	struct h2_dev dev;    /* first: the dev ops cast back to the fdev */
	pthread_mutex_t lock; /* protects everything below */
	struct fmap live;     /* what reads see */
	struct fmap base;     /* contents at h2_fdev_record(); if recording */
	bool recording;
	struct fevent **log; /* events since h2_fdev_record() */
	size_t nlog, caplog;
	uint64_t writes_left;  /* successful writes before -EIO; MAX = off */
	uint64_t flushes_left; /* same for flushes */
	uint64_t rfail_off;    /* reads overlapping this range fail */
	uint64_t rfail_len;    /* 0 = no read failures */
	bool rule_on;	       /* rule below is set */
	struct h2_fdev_fault rule;
	struct h2_fdev_fault_stats rule_stats;
};

static unsigned long fdev_seq;

/* Drop one reference to a block; NULL is a no-op. */
static void blk_put(struct fblk *b)
{
	if (b && __atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) == 0)
		free(b);
}

/* Drop one reference to a leaf, and its blocks' with the last one. */
static void leaf_put(struct fleaf *l)
{
	if (!l || __atomic_sub_fetch(&l->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	for (size_t i = 0; i < FDEV_LEAF_ENTRIES; i++)
		blk_put(l->blk[i]);
	free(l);
}

/* Take a reference on an object that the caller's map already holds. */
static void ref_get(unsigned *refs)
{
	__atomic_add_fetch(refs, 1, __ATOMIC_RELAXED);
}

/* True if the caller's map holds the only reference. */
static bool ref_sole(unsigned *refs)
{
	return __atomic_load_n(refs, __ATOMIC_ACQUIRE) == 1;
}

/* Make an all-zero map covering size bytes. */
static int map_init(struct fmap *m, uint64_t size)
{
	uint64_t blocks =
	    (size >> FDEV_BLK_SHIFT) + ((size & (FDEV_BLK_SIZE - 1)) != 0);
	uint64_t leaves = (blocks >> FDEV_LEAF_SHIFT) +
			  ((blocks & (FDEV_LEAF_ENTRIES - 1)) != 0);

	if (leaves > SIZE_MAX / sizeof(*m->leaf))
		return -ENOMEM;
	m->nleaves = (size_t)leaves;
	m->leaf = calloc(m->nleaves ? m->nleaves : 1, sizeof(*m->leaf));
	return m->leaf ? 0 : -ENOMEM;
}

/* Make dst share every leaf of src (dst must be uninitialised). */
static int map_clone(struct fmap *dst, const struct fmap *src)
{
	dst->nleaves = src->nleaves;
	dst->leaf = calloc(src->nleaves ? src->nleaves : 1, sizeof(*dst->leaf));
	if (!dst->leaf)
		return -ENOMEM;
	for (size_t i = 0; i < src->nleaves; i++) {
		if (src->leaf[i])
			ref_get(&src->leaf[i]->refs);
		dst->leaf[i] = src->leaf[i];
	}
	return 0;
}

/* Drop every reference the map holds; the map is empty afterwards. */
static void map_release(struct fmap *m)
{
	if (m->leaf) {
		for (size_t i = 0; i < m->nleaves; i++)
			leaf_put(m->leaf[i]);
		free(m->leaf);
	}
	m->leaf = NULL;
	m->nleaves = 0;
}

/* Leaf li made private to m (allocated or copied as needed). */
static struct fleaf *map_leaf_mut(struct fmap *m, size_t li)
{
	struct fleaf *l = m->leaf[li], *c;

	if (l && ref_sole(&l->refs))
		return l;
	c = l ? malloc(sizeof(*c)) : calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->refs = 1;
	if (l) {
		for (size_t i = 0; i < FDEV_LEAF_ENTRIES; i++) {
			c->blk[i] = l->blk[i];
			if (c->blk[i])
				ref_get(&c->blk[i]->refs);
		}
		leaf_put(l);
	}
	m->leaf[li] = c;
	return c;
}

/* Block bi of a private leaf made private too (allocated or copied). */
static struct fblk *leaf_blk_mut(struct fleaf *l, size_t bi)
{
	struct fblk *b = l->blk[bi], *c;

	if (b && ref_sole(&b->refs))
		return b;
	c = b ? malloc(sizeof(*c)) : calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->refs = 1;
	if (b) {
		memcpy(c->data, b->data, FDEV_BLK_SIZE);
		blk_put(b);
	}
	l->blk[bi] = c;
	return c;
}

/* Copy [off, off + len) of the map into buf; the range is inside. */
static void map_read(const struct fmap *m, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;

	while (len > 0) {
		uint64_t bn = off >> FDEV_BLK_SHIFT;
		size_t in = (size_t)(off & (FDEV_BLK_SIZE - 1));
		size_t n = FDEV_BLK_SIZE - in;
		const struct fleaf *l = m->leaf[bn >> FDEV_LEAF_SHIFT];
		const struct fblk *b;

		if (n > len)
			n = len;
		b = l ? l->blk[bn & (FDEV_LEAF_ENTRIES - 1)] : NULL;
		if (b)
			memcpy(p, b->data + in, n);
		else
			memset(p, 0, n);
		p += n;
		off += n;
		len -= n;
	}
}

/*
 * Copy buf into [off, off + len) of the map; the range is inside.  On
 * -ENOMEM a prefix of the range may already hold the new bytes, as after
 * a failing disk write.
 */
static int map_write(struct fmap *m, const void *buf, size_t len, uint64_t off)
{
	const uint8_t *p = buf;

	while (len > 0) {
		uint64_t bn = off >> FDEV_BLK_SHIFT;
		size_t in = (size_t)(off & (FDEV_BLK_SIZE - 1));
		size_t n = FDEV_BLK_SIZE - in;
		struct fleaf *l;
		struct fblk *b;

		if (n > len)
			n = len;
		l = map_leaf_mut(m, (size_t)(bn >> FDEV_LEAF_SHIFT));
		if (!l)
			return -ENOMEM;
		b = leaf_blk_mut(l, (size_t)(bn & (FDEV_LEAF_ENTRIES - 1)));
		if (!b)
			return -ENOMEM;
		memcpy(b->data + in, p, n);
		p += n;
		off += n;
		len -= n;
	}
	return 0;
}

/* splitmix64 finaliser: a cheap, well-mixed 64-bit hash. */
static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/*
 * Fill [off, off + len) with garbage.  Byte k of the range is byte k % 8
 * of mix64(key + k / 8), key derived from seed and event index, so the
 * garbage depends on nothing else (not on application order).
 */
static int map_garbage(struct fmap *m, uint64_t len, uint64_t off,
		       uint64_t seed, size_t idx)
{
	uint64_t key = mix64(seed ^ mix64((uint64_t)idx));
	uint8_t chunk[FDEV_BLK_SIZE];
	uint64_t k = 0;
	int err;

	while (k < len) {
		size_t n = sizeof(chunk);

		if (n > len - k)
			n = (size_t)(len - k);
		for (size_t j = 0; j < n; j++) {
			uint64_t w = mix64(key + (k + j) / 8);

			chunk[j] = (uint8_t)(w >> (8 * ((k + j) % 8)));
		}
		err = map_write(m, chunk, n, off + k);
		if (err)
			return err;
		k += n;
	}
	return 0;
}

/* Free every recorded event and empty the log. */
static void log_clear_locked(struct h2_fdev *fd)
{
	for (size_t i = 0; i < fd->nlog; i++)
		free(fd->log[i]);
	free(fd->log);
	fd->log = NULL;
	fd->nlog = 0;
	fd->caplog = 0;
}

/* Make room for one more event, so appending afterwards cannot fail. */
static int log_reserve_locked(struct h2_fdev *fd)
{
	struct fevent **nl;
	size_t cap;

	if (fd->nlog < fd->caplog)
		return 0;
	cap = fd->caplog ? fd->caplog * 2 : FDEV_LOG_MIN;
	if (cap > SIZE_MAX / sizeof(*nl))
		return -ENOMEM;
	nl = realloc(fd->log, cap * sizeof(*nl));
	if (!nl)
		return -ENOMEM;
	fd->log = nl;
	fd->caplog = cap;
	return 0;
}

/* New event with room for len bytes of data (NULL data if len is 0). */
static struct fevent *event_new(enum h2_fdev_op op, uint64_t off, size_t len)
{
	struct fevent *e;

	if (len > SIZE_MAX - sizeof(*e))
		return NULL;
	e = malloc(sizeof(*e) + len);
	if (!e)
		return NULL;
	e->ev.op = op;
	e->ev.off = off;
	e->ev.len = len;
	e->ev.data = len ? e->data : NULL;
	return e;
}

/* True if [off, off + len) and the read-failure range overlap. */
static bool read_fails_locked(const struct h2_fdev *fd, uint64_t len,
			      uint64_t off)
{
	uint64_t fo = fd->rfail_off, fl = fd->rfail_len;

	if (fl == 0 || len == 0)
		return false;
	/* Compare distances, never end offsets, which could wrap. */
	return off < fo ? fo - off < len : off - fo < fl;
}

/*
 * Count one request of kind op against the fault rule: 0 if it may go
 * on, or the error the rule fails it with.
 */
static int rule_hit_locked(struct h2_fdev *fd, enum h2_fdev_op op)
{
	const struct h2_fdev_fault *f = &fd->rule;
	struct h2_fdev_fault_stats *s = &fd->rule_stats;

	if (!fd->rule_on || f->op != op)
		return 0;
	s->seen++;
	if (f->nth == 0 || f->nth == UINT64_MAX || s->seen < f->nth ||
	    (s->seen > f->nth && !f->persistent))
		return 0;
	if (s->failed == 0)
		s->first_event = fd->nlog;
	s->failed++;
	return f->err ? f->err : -EIO;
}

/* Bytes of a total-byte write that a short write lets through. */
static size_t rule_short_len_locked(const struct h2_fdev *fd, size_t total)
{
	uint64_t n = fd->rule.short_len;

	if (!fd->rule.short_write || fd->rule.op != H2_FDEV_WRITE || total == 0)
		return 0;
	if (n == 0)
		n = (total / 2) & ~(uint64_t)(FDEV_SECTOR_SIZE - 1);
	if (n >= total)
		n = total - 1;
	return (size_t)n;
}

/* Copy the first len bytes of the segments into dst. */
static void iov_gather(uint8_t *dst, const struct iovec *iov, int iovcnt,
		       size_t len)
{
	for (int i = 0; i < iovcnt && len > 0; i++) {
		size_t n = iov[i].iov_len < len ? iov[i].iov_len : len;

		if (n)
			memcpy(dst, iov[i].iov_base, n);
		dst += n;
		len -= n;
	}
}

/* dev op: read from the live map unless the range is set to fail. */
static int fdev_pread(struct h2_dev *dev, void *buf, size_t len, uint64_t off)
{
	struct h2_fdev *fd = (struct h2_fdev *)dev;
	int err = 0;

	pthread_mutex_lock(&fd->lock);
	err = rule_hit_locked(fd, H2_FDEV_READ);
	if (err) {
		err = h2_err(err, "%s: injected read failure at %llu",
			     dev->name, (unsigned long long)off);
		goto out;
	}
	if (read_fails_locked(fd, len, off)) {
		err = h2_err(-EIO, "%s: injected read failure at %llu",
			     dev->name, (unsigned long long)off);
		goto out;
	}
	map_read(&fd->live, buf, len, off);
out:
	pthread_mutex_unlock(&fd->lock);
	return err;
}

/*
 * dev op: apply a write to the live map and log it when recording.  A
 * short write (fault rule) applies and logs only its prefix, then fails.
 */
static int fdev_pwritev(struct h2_dev *dev, const struct iovec *iov, int iovcnt,
			uint64_t off)
{
	struct h2_fdev *fd = (struct h2_fdev *)dev;
	struct fevent *e = NULL;
	size_t total = 0, apply;
	uint64_t pos;
	int err = 0, fail;

	/* The wrapper checked that the sum fits inside the device. */
	for (int i = 0; i < iovcnt; i++)
		total += iov[i].iov_len;

	pthread_mutex_lock(&fd->lock);
	fail = rule_hit_locked(fd, H2_FDEV_WRITE);
	if (fail) {
		fail = h2_err(fail, "%s: injected %swrite failure at %llu",
			      dev->name, fd->rule.short_write ? "short " : "",
			      (unsigned long long)off);
		apply = rule_short_len_locked(fd, total);
		if (apply == 0) {
			err = fail;
			goto out;
		}
		total = apply;
	}
	if (fd->writes_left == 0) {
		err = h2_err(-EIO, "%s: injected write failure at %llu",
			     dev->name, (unsigned long long)off);
		goto out;
	}
	if (fd->recording) {
		/* Everything that can fail happens before the map changes. */
		err = log_reserve_locked(fd);
		if (err)
			goto out;
		e = event_new(H2_FDEV_WRITE, off, total);
		if (!e) {
			err = -ENOMEM;
			goto out;
		}
		iov_gather(e->data, iov, iovcnt, total);
		err = map_write(&fd->live, e->data, total, off);
		if (err)
			goto out;
		fd->log[fd->nlog++] = e;
		e = NULL;
	} else {
		pos = off;
		for (int i = 0; i < iovcnt && pos - off < total; i++) {
			size_t n = iov[i].iov_len;

			if (n > total - (pos - off))
				n = total - (size_t)(pos - off);
			err = map_write(&fd->live, iov[i].iov_base, n, pos);
			if (err)
				goto out;
			pos += n;
		}
	}
	if (fail) {
		err = fail;
		goto out;
	}
	if (fd->writes_left != UINT64_MAX)
		fd->writes_left--;
out:
	pthread_mutex_unlock(&fd->lock);
	free(e);
	return err;
}

/* dev op: a flush only matters as an event in the log. */
static int fdev_flush(struct h2_dev *dev)
{
	struct h2_fdev *fd = (struct h2_fdev *)dev;
	struct fevent *e;
	int err = 0;

	pthread_mutex_lock(&fd->lock);
	err = rule_hit_locked(fd, H2_FDEV_FLUSH);
	if (err) {
		err = h2_err(err, "%s: injected flush failure", dev->name);
		goto out;
	}
	if (fd->flushes_left == 0) {
		err = h2_err(-EIO, "%s: injected flush failure", dev->name);
		goto out;
	}
	if (fd->recording) {
		err = log_reserve_locked(fd);
		if (err)
			goto out;
		e = event_new(H2_FDEV_FLUSH, 0, 0);
		if (!e) {
			err = -ENOMEM;
			goto out;
		}
		fd->log[fd->nlog++] = e;
	}
	if (fd->flushes_left != UINT64_MAX)
		fd->flushes_left--;
out:
	pthread_mutex_unlock(&fd->lock);
	return err;
}

/*
 * dev op: nothing to do.  The fdev owns the memory (h2_fdev_free), and the
 * device stays usable after a close, like a disk that outlives the program
 * that had it open: a test may open a store on it again.
 */
static void fdev_close(struct h2_dev *dev)
{
	(void)dev;
}

static const struct h2_dev_ops fdev_ops = {
    .pread = fdev_pread,
    .pwritev = fdev_pwritev,
    .flush = fdev_flush,
    .close = fdev_close,
};

/* An fdev with no live map yet, not recording, no faults armed. */
static struct h2_fdev *fdev_alloc(uint64_t size)
{
	struct h2_fdev *fd;
	unsigned long n;

	fd = calloc(1, sizeof(*fd));
	if (!fd)
		return NULL;
	if (pthread_mutex_init(&fd->lock, NULL) != 0) {
		free(fd);
		return NULL;
	}
	n = __atomic_add_fetch(&fdev_seq, 1, __ATOMIC_RELAXED);
	fd->dev.ops = &fdev_ops;
	fd->dev.size = size;
	snprintf(fd->dev.name, sizeof(fd->dev.name), "fault:%lu", n);
	fd->writes_left = UINT64_MAX;
	fd->flushes_left = UINT64_MAX;
	return fd;
}

/* Create an all-zero sparse device of size bytes. */
int h2_fdev_create(uint64_t size, struct h2_fdev **out)
{
	struct h2_fdev *fd;
	int err;

	if (!out)
		return -EINVAL;
	fd = fdev_alloc(size);
	if (!fd)
		return -ENOMEM;
	err = map_init(&fd->live, size);
	if (err) {
		h2_fdev_free(fd);
		return err;
	}
	*out = fd;
	return 0;
}

/* The embedded device, for the engine; owned by fd. */
struct h2_dev *h2_fdev_dev(struct h2_fdev *fd)
{
	return fd ? &fd->dev : NULL;
}

/* Free the device, its contents, base and log; NULL is a no-op. */
void h2_fdev_free(struct h2_fdev *fd)
{
	if (!fd)
		return;
	map_release(&fd->live);
	map_release(&fd->base);
	log_clear_locked(fd);
	pthread_mutex_destroy(&fd->lock);
	free(fd);
}

/*
 * Start (or restart) recording: the base becomes a copy-on-write share of
 * the live contents and the log is emptied.  If the base cannot be
 * allocated, recording is left off and the log stays empty, so later crash
 * images fail loudly (upto beyond the log) rather than lie.
 */
void h2_fdev_record(struct h2_fdev *fd)
{
	if (!fd)
		return;
	pthread_mutex_lock(&fd->lock);
	map_release(&fd->base);
	log_clear_locked(fd);
	fd->recording = map_clone(&fd->base, &fd->live) == 0;
	pthread_mutex_unlock(&fd->lock);
}

/* Number of events recorded since h2_fdev_record(). */
size_t h2_fdev_event_count(struct h2_fdev *fd)
{
	size_t n;

	if (!fd)
		return 0;
	pthread_mutex_lock(&fd->lock);
	n = fd->nlog;
	pthread_mutex_unlock(&fd->lock);
	return n;
}

/*
 * Event i, or NULL if there is none.  The event stays valid until the next
 * h2_fdev_record() or h2_fdev_free(): later writes do not move it.
 */
const struct h2_fdev_event *h2_fdev_event(struct h2_fdev *fd, size_t i)
{
	const struct h2_fdev_event *ev = NULL;

	if (!fd)
		return NULL;
	pthread_mutex_lock(&fd->lock);
	if (i < fd->nlog)
		ev = &fd->log[i]->ev;
	pthread_mutex_unlock(&fd->lock);
	return ev;
}

/* Let `writes` more writes succeed, then fail all with -EIO. */
void h2_fdev_fail_writes_after(struct h2_fdev *fd, uint64_t writes)
{
	pthread_mutex_lock(&fd->lock);
	fd->writes_left = writes;
	pthread_mutex_unlock(&fd->lock);
}

/* Let `flushes` more flushes succeed, then fail all with -EIO. */
void h2_fdev_fail_flushes_after(struct h2_fdev *fd, uint64_t flushes)
{
	pthread_mutex_lock(&fd->lock);
	fd->flushes_left = flushes;
	pthread_mutex_unlock(&fd->lock);
}

/* Fail reads overlapping [off, off + len); len 0 stops failing reads. */
void h2_fdev_fail_reads(struct h2_fdev *fd, uint64_t off, uint64_t len)
{
	pthread_mutex_lock(&fd->lock);
	fd->rfail_off = off;
	fd->rfail_len = len;
	pthread_mutex_unlock(&fd->lock);
}

/* Set the fault rule; its counters start from zero. */
void h2_fdev_fault_set(struct h2_fdev *fd, const struct h2_fdev_fault *f)
{
	pthread_mutex_lock(&fd->lock);
	fd->rule = *f;
	fd->rule_on = true;
	memset(&fd->rule_stats, 0, sizeof(fd->rule_stats));
	pthread_mutex_unlock(&fd->lock);
}

/* Stop failing; the counters stay readable. */
void h2_fdev_fault_clear(struct h2_fdev *fd)
{
	pthread_mutex_lock(&fd->lock);
	fd->rule_on = false;
	pthread_mutex_unlock(&fd->lock);
}

void h2_fdev_fault_stats(struct h2_fdev *fd, struct h2_fdev_fault_stats *out)
{
	pthread_mutex_lock(&fd->lock);
	*out = fd->rule_stats;
	pthread_mutex_unlock(&fd->lock);
}

/* Overwrite live bytes behind the log's back (bit rot, not a write). */
int h2_fdev_poke(struct h2_fdev *fd, uint64_t off, const void *buf, size_t len)
{
	int err;

	if (!fd || (!buf && len))
		return -EINVAL;
	if (off > fd->dev.size || len > fd->dev.size - off)
		return -EINVAL;
	pthread_mutex_lock(&fd->lock);
	err = map_write(&fd->live, buf, len, off);
	pthread_mutex_unlock(&fd->lock);
	return err;
}

/* Check a crash spec against the log: -EINVAL if it cannot be applied. */
static int crash_spec_check_locked(const struct h2_fdev *fd,
				   const struct h2_crash_spec *spec)
{
	bool *seen;
	int err = 0;

	if (spec->upto > fd->nlog)
		return h2_err(-EINVAL, "%s: crash spec upto %zu > %zu events",
			      fd->dev.name, spec->upto, fd->nlog);
	if (spec->fate) {
		for (size_t i = 0; i < spec->upto; i++)
			if (fd->log[i]->ev.op == H2_FDEV_WRITE &&
			    spec->fate[i] > H2_CRASH_GARBAGE)
				return h2_err(-EINVAL,
					      "%s: bad fate %u for event %zu",
					      fd->dev.name, spec->fate[i], i);
	}
	if (!spec->order)
		return 0;
	seen = calloc(spec->upto ? spec->upto : 1, sizeof(*seen));
	if (!seen)
		return -ENOMEM;
	for (size_t k = 0; k < spec->upto; k++) {
		size_t i = spec->order[k];

		if (i >= spec->upto || seen[i]) {
			err = h2_err(-EINVAL,
				     "%s: crash order is not a permutation "
				     "of [0, %zu)",
				     fd->dev.name, spec->upto);
			goto out;
		}
		seen[i] = true;
	}
out:
	free(seen);
	return err;
}

/* Apply one recorded write to img according to its fate. */
static int crash_apply(struct h2_fdev *img, const struct h2_fdev_event *ev,
		       size_t idx, const struct h2_crash_spec *spec)
{
	uint8_t fate = spec->fate ? spec->fate[idx] : H2_CRASH_APPLY;
	uint64_t n;

	switch (fate) {
	case H2_CRASH_DROP:
		return 0;
	case H2_CRASH_TORN:
		n = (uint64_t)spec->torn_sectors * FDEV_SECTOR_SIZE;
		if (n > ev->len)
			n = ev->len;
		return map_write(&img->live, ev->data, (size_t)n, ev->off);
	case H2_CRASH_GARBAGE:
		return map_garbage(&img->live, ev->len, ev->off,
				   spec->garbage_seed, idx);
	default:
		return map_write(&img->live, ev->data, (size_t)ev->len,
				 ev->off);
	}
}

/*
 * Build base + the spec's events as a new device.  Without recording there
 * is no base and no log: the image is then a copy of the live contents
 * (and upto must be 0).
 */
int h2_fdev_crash_image(struct h2_fdev *fd, const struct h2_crash_spec *spec,
			struct h2_fdev **out)
{
	struct h2_fdev *img = NULL;
	int err;

	if (!fd || !spec || !out)
		return -EINVAL;
	pthread_mutex_lock(&fd->lock);
	err = crash_spec_check_locked(fd, spec);
	if (err)
		goto out;
	img = fdev_alloc(fd->dev.size);
	if (!img) {
		err = -ENOMEM;
		goto out;
	}
	err = map_clone(&img->live, fd->recording ? &fd->base : &fd->live);
	if (err)
		goto out;
	for (size_t k = 0; k < spec->upto; k++) {
		size_t i = spec->order ? spec->order[k] : k;
		const struct h2_fdev_event *ev = &fd->log[i]->ev;

		if (ev->op != H2_FDEV_WRITE)
			continue;
		err = crash_apply(img, ev, i, spec);
		if (err)
			goto out;
	}
	*out = img;
	img = NULL;
out:
	pthread_mutex_unlock(&fd->lock);
	h2_fdev_free(img);
	return err;
}

/* Index of the last flush among events [0, upto), or -1. */
long h2_fdev_last_flush(struct h2_fdev *fd, size_t upto)
{
	long last = -1;

	if (!fd)
		return -1;
	pthread_mutex_lock(&fd->lock);
	if (upto > fd->nlog)
		upto = fd->nlog;
	for (size_t i = upto; i > 0; i--) {
		if (fd->log[i - 1]->ev.op == H2_FDEV_FLUSH) {
			last = (long)(i - 1);
			break;
		}
	}
	pthread_mutex_unlock(&fd->lock);
	return last;
}
