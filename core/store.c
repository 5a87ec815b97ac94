/*
 * store.c - format, open and close a store; volume headers; the volume
 * table; space accounting.
 *
 * Opening reads the header copies, takes the valid one with the highest
 * tid, and loads the volume directory and each volume's root block: O(1)
 * in the data stored (O(volumes)), no log to replay, no scan.
 *
 * Space: used_blocks counts blocks allocated on disk (reserved zones
 * included) as the flusher maintains it; reserved_blocks counts blocks
 * promised to modified chains that the flusher has not allocated yet.  A
 * writer reserves its worst case before it changes anything, so the
 * flusher never finds the device full.  Trims may use the last
 * H2_SPACE_MARGIN blocks (they free space, but copy a few indirect blocks
 * to do it); the flusher's own directory blocks come from there too.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "internal.h"

#define H2_SPACE_MARGIN 1024 /* blocks kept for trims and the directory */

/* ---------------------------------------------------------------------- */
/* Layout and headers.                                                    */

/* Where the freemap zone goes on a device of dev_size bytes. */
static int layout(uint64_t dev_size, uint64_t *total_blocks,
		  uint32_t *fm_pages, uint64_t *fm_base)
{
	uint64_t blocks = dev_size / H2_BLOCK_SIZE;
	uint64_t pages = (blocks + H2_FM_BITS - 1) / H2_FM_BITS;
	uint64_t zone = pages * 2 * H2_BLOCK_SIZE;
	uint64_t first_gap_end = dev_size < H2_HDR_STRIDE ? dev_size
							  : H2_HDR_STRIDE;

	if (pages > H2_HDR_MAX_FM_PAGES)
		return -EFBIG;
	/* Between header copies 0 and 1 if it fits there (devices up to
	 * about 250 GiB), else after the last header copy. */
	if (H2_HDR_REGION + zone <= first_gap_end)
		*fm_base = H2_HDR_REGION;
	else
		*fm_base = (H2_HDR_COPIES - 1) * H2_HDR_STRIDE + (1u << 20);
	if (*fm_base + zone > dev_size)
		return -ENOSPC;
	*total_blocks = blocks;
	*fm_pages = (uint32_t)pages;
	return 0;
}

/*
 * Check one header image (len bytes from its region).  On failure *why
 * says what is wrong.
 */
int h2_hdr_validate(const void *buf, size_t len, uint64_t dev_size,
		    const char **why)
{
	struct h2_volhdr h;
	uint64_t total, base;
	uint32_t pages, crc;
	uint8_t *tmp;

	memcpy(&h, buf, sizeof(h));
	if (h.magic != H2_HDR_MAGIC) {
		*why = "no h2 magic";
		return -EINVAL;
	}
	if (h.version != H2_FORMAT_VERSION) {
		*why = "unsupported format version";
		return -EPROTO;
	}
	if (h.block_size != H2_BLOCK_SIZE || h.hdr_len % H2_BLOCK_SIZE ||
	    h.hdr_len > len || h.hdr_len < h2_hdr_len(h.fm_pages)) {
		*why = "header geometry is inconsistent";
		return -EBADMSG;
	}
	tmp = malloc(h.hdr_len);
	if (!tmp) {
		*why = "out of memory";
		return -ENOMEM;
	}
	memcpy(tmp, buf, h.hdr_len);
	memset(tmp + offsetof(struct h2_volhdr, crc), 0, sizeof(h.crc));
	crc = h2_crc32c(0, tmp, h.hdr_len);
	free(tmp);
	if (crc != h.crc) {
		*why = "CRC mismatch (torn or damaged)";
		return -EBADMSG;
	}
	if (h.dev_size > dev_size) {
		*why = "the device is smaller than the store it holds";
		return -EBADMSG;
	}
	if (layout(h.dev_size, &total, &pages, &base) < 0 ||
	    total != h.total_blocks || pages != h.fm_pages ||
	    base != h.fm_base) {
		*why = "device layout fields are inconsistent";
		return -EBADMSG;
	}
	if (h.used_blocks > h.total_blocks) {
		*why = "used block count exceeds the device";
		return -EBADMSG;
	}
	/* The next flush is tid + 1, and tids order everything (birth
	 * times, snapshots): a tid near the top would wrap. */
	if (h.tid == 0 || h.tid >= UINT64_MAX / 2) {
		*why = "transaction id is out of range";
		return -EBADMSG;
	}
	return 0;
}

/*
 * Read every header copy of dev and pick the valid one with the highest
 * tid, as h2_hdr_read_best() describes.  Copies that cannot be read are
 * skipped: *unreadable gets a bit for each and *read_err the last error.
 */
static int hdr_scan(struct h2_dev *dev, struct h2_volhdr *hdr, uint8_t **sel,
		    int *copy, unsigned *valid_mask, unsigned *unreadable,
		    int *read_err)
{
	unsigned n = h2_hdr_copies(dev->size);
	uint8_t *buf = malloc(H2_HDR_REGION);
	int best = -1, r = 0;

	if (!buf)
		return h2_err(-ENOMEM, "out of memory reading headers");
	*valid_mask = 0;
	*unreadable = 0;
	for (unsigned i = 0; i < n; i++) {
		struct h2_volhdr h;
		const char *why;
		int rr =
		    h2_dev_pread(dev, buf, H2_HDR_REGION, h2_hdr_offset(i));

		if (rr < 0) {
			*unreadable |= 1u << i;
			*read_err = rr;
			continue;
		}
		if (h2_hdr_validate(buf, H2_HDR_REGION, dev->size, &why) < 0)
			continue;
		memcpy(&h, buf, sizeof(h));
		if (h.copy_index != i)
			continue;
		*valid_mask |= 1u << i;
		if (best < 0 || h.tid > hdr->tid) {
			size_t selbytes = (h.fm_pages + 7) / 8;
			uint8_t *s = malloc(selbytes ? selbytes : 1);

			if (!s) {
				r = h2_err(-ENOMEM, "out of memory");
				goto out;
			}
			memcpy(s, buf + H2_HDR_FIXED, selbytes);
			if (best >= 0)
				free(*sel);
			*sel = s;
			*hdr = h;
			best = (int)i;
		}
	}
	if (best < 0)
		r = h2_err(-ENOENT,
			   "%s: no valid h2 volume header (checked %u "
			   "cop%s): not an h2 store, or every copy is damaged",
			   dev->name, n, n == 1 ? "y" : "ies");
	else
		*copy = best;
out:
	free(buf);
	return r;
}

/*
 * Read every header copy of dev and pick the valid one with the highest
 * tid.  *sel gets a malloc'd copy of its selector bits; *valid_mask has
 * bit i set for each valid copy.  -ENOENT if none is valid.
 *
 * A copy that cannot be read is not the same as a damaged one.  Flush t
 * writes copy t % n, so the copy after the newest valid one (tid T) is
 * the one flush T + 1 wrote: if it cannot be read, it may hold a newer
 * image than T, and opening at T would lose synced data and hand out
 * blocks that image uses.  That is an error (the read's), not a reason
 * to fall back.  Any other unreadable copy holds an older flush than T
 * (a newer one would have needed T + 1's copy first), so it is skipped.
 */
int h2_hdr_read_best(struct h2_dev *dev, struct h2_volhdr *hdr, uint8_t **sel,
		     int *copy, unsigned *valid_mask)
{
	unsigned n = h2_hdr_copies(dev->size), unreadable, next;
	int r, read_err = -EIO;

	r = hdr_scan(dev, hdr, sel, copy, valid_mask, &unreadable, &read_err);
	if (r < 0 && unreadable)
		return h2_err(read_err,
			      "%s: no readable valid h2 volume "
			      "header (%u of %u copies could not "
			      "be read)",
			      dev->name,
			      (unsigned)__builtin_popcount(unreadable), n);
	if (r < 0)
		return r;
	next = (unsigned)((hdr->tid + 1) % n);
	if (unreadable & (1u << next)) {
		free(*sel);
		*sel = NULL;
		return h2_err(read_err,
			      "%s: volume header copy %u could not "
			      "be read; it may hold a newer flush "
			      "than copy %d (tid %" PRIu64 "), so "
			      "the store is not opened at the "
			      "older one",
			      dev->name, next, *copy, hdr->tid);
	}
	return 0;
}

/* Any valid copy will do here: an unreadable one does not hide a store. */
bool h2_store_probe(struct h2_dev *dev)
{
	struct h2_volhdr h;
	uint8_t *sel = NULL;
	unsigned mask, unreadable;
	int copy, read_err;

	if (hdr_scan(dev, &h, &sel, &copy, &mask, &unreadable, &read_err) < 0)
		return false;
	free(sel);
	return true;
}

/* Serialize and write the header for flush tid into copy tid % copies. */
static int hdr_write_copy(struct h2_store *st, uint64_t tid, unsigned copy,
			  const uint8_t *sel,
			  const struct h2_blockref *dir_root)
{
	uint32_t len = h2_hdr_len(st->fm_pages);
	/* The flusher's (and format's): it waits for memory (flush.c). */
	uint8_t *buf = h2_xcalloc(1, len);
	struct h2_volhdr h = {0};
	int r;

	h.magic = H2_HDR_MAGIC;
	h.version = H2_FORMAT_VERSION;
	h.hdr_len = len;
	h.tid = tid;
	h.dev_size = st->dev_size;
	h.block_size = H2_BLOCK_SIZE;
	h.copy_index = copy;
	h.fm_base = st->fm_base;
	h.fm_pages = st->fm_pages;
	h.total_blocks = st->total_blocks;
	pthread_mutex_lock(&st->space_lock);
	h.used_blocks = st->used_blocks;
	pthread_mutex_unlock(&st->space_lock);
	pthread_mutex_lock(&st->dir_lock);
	h.next_vol_id = st->next_vol_id;
	pthread_mutex_unlock(&st->dir_lock);
	h.format_time_ns = st->format_time_ns;
	memcpy(h.uuid, st->uuid, sizeof(h.uuid));
	h.flush_count = st->lifetime_flushes + 1;
	{
		struct h2_dev_stats ds;

		h2_dev_get_stats(st->dev, &ds);
		h.bytes_written = st->written_base + ds.bytes_written + len;
	}
	h.dir_root = *dir_root;
	memcpy(buf, &h, sizeof(h));
	memcpy(buf + H2_HDR_FIXED, sel, (st->fm_pages + 7) / 8);
	h.crc = h2_crc32c(0, buf, len);
	memcpy(buf + offsetof(struct h2_volhdr, crc), &h.crc, sizeof(h.crc));
	r = h2_dev_pwrite(st->dev, buf, len, h2_hdr_offset(copy));
	free(buf);
	if (r < 0)
		return h2_err(r, "writing volume header copy %u failed", copy);
	return 0;
}

int h2_hdr_write(struct h2_store *st, uint64_t tid, const uint8_t *sel,
		 const struct h2_blockref *dir_root)
{
	return hdr_write_copy(st, tid, (unsigned)(tid % st->hdr_copies), sel,
			      dir_root);
}

/* ---------------------------------------------------------------------- */
/* Space.                                                                 */

int h2_space_reserve(struct h2_store *st, uint64_t blocks, bool is_trim)
{
	uint64_t margin = is_trim ? 0 : H2_SPACE_MARGIN;
	uint64_t busy;
	int r = 0;

	pthread_mutex_lock(&st->space_lock);
	busy = st->used_blocks + st->reserved_blocks;
	if (busy > st->total_blocks || st->total_blocks - busy < blocks + margin)
		r = -ENOSPC;
	else
		st->reserved_blocks += blocks;
	pthread_mutex_unlock(&st->space_lock);
	return r;
}

void h2_space_unreserve(struct h2_store *st, uint64_t blocks)
{
	pthread_mutex_lock(&st->space_lock);
	st->reserved_blocks -= blocks < st->reserved_blocks
				       ? blocks
				       : st->reserved_blocks;
	pthread_mutex_unlock(&st->space_lock);
}

/* ---------------------------------------------------------------------- */
/* Format.                                                                */

/* Fill the fields of st that derive from the device and header. */
static void st_geometry(struct h2_store *st, uint64_t dev_size,
			uint64_t total, uint32_t pages, uint64_t base)
{
	st->dev_size = dev_size;
	st->total_blocks = total;
	st->fm_pages = pages;
	st->fm_base = base;
	st->hdr_copies = h2_hdr_copies(dev_size);
}

int h2_store_format(struct h2_dev *dev, const struct h2_format_opts *opts)
{
	struct h2_store st = {0};
	struct h2_blockref empty = {0};
	uint64_t total, base, used = 0;
	uint32_t pages;
	uint8_t *sel = NULL;
	int r;

	if (dev->read_only)
		return h2_err(-EROFS, "%s is read-only", dev->name);
	if (dev->size < H2_DEV_MIN_SIZE)
		return h2_err(-ENOSPC,
			      "%s is %" PRIu64 " bytes; an h2 store needs at "
			      "least %llu MiB",
			      dev->name, dev->size, H2_DEV_MIN_SIZE >> 20);
	if (!(opts && opts->force) && h2_store_probe(dev))
		return h2_err(-EEXIST,
			      "%s already holds an h2 store; use --force to "
			      "destroy it and format anyway",
			      dev->name);
	r = layout(dev->size, &total, &pages, &base);
	if (r < 0)
		return h2_err(r, "%s: %" PRIu64 " bytes is too large for one "
				 "store (the freemap selectors do not fit)",
			      dev->name, dev->size);
	st.dev = dev;
	st_geometry(&st, dev->size, total, pages, base);
	pthread_mutex_init(&st.space_lock, NULL);
	pthread_mutex_init(&st.dir_lock, NULL);
	if (getrandom(st.uuid, sizeof(st.uuid), 0) != sizeof(st.uuid))
		memset(st.uuid, 0x5a, sizeof(st.uuid));
	st.format_time_ns = h2_wall_ns();
	st.next_vol_id = 1;
	r = h2_fm_init(&st, NULL);
	if (r < 0)
		goto out;
	for (uint32_t p = 0; p < pages; p++) {
		r = h2_fm_fresh_page(&st, p);
		if (r < 0)
			goto out;
	}
	/* Mark what can never be allocated: headers, freemap zone, tail. */
	for (uint64_t b = 0; b < (uint64_t)pages * H2_FM_BITS; b++) {
		if (b < total && !h2_block_reserved(&st, b))
			continue;
		h2_fm_set(&st, b, true);
		if (b < total)
			used++;
	}
	st.used_blocks = used;
	sel = calloc(1, (pages + 7) / 8 + 1);
	if (!sel) {
		r = h2_err(-ENOMEM, "out of memory");
		goto out;
	}
	r = h2_fm_write_dirty(&st, 1, sel);
	if (r < 0)
		goto out;
	r = h2_dev_flush(dev);
	if (r < 0)
		goto out;
	/* Every copy holds flush 1, so one damaged copy is survivable from
	 * the first moment. */
	for (unsigned i = 0; i < st.hdr_copies; i++) {
		r = hdr_write_copy(&st, 1, i, sel, &empty);
		if (r < 0)
			goto out;
	}
	r = h2_dev_flush(dev);
	if (r < 0)
		r = h2_err(r, "%s: flushing the new store failed", dev->name);
out:
	free(sel);
	h2_fm_destroy(&st);
	pthread_mutex_destroy(&st.space_lock);
	pthread_mutex_destroy(&st.dir_lock);
	return r;
}

/* ---------------------------------------------------------------------- */
/* Volumes in memory.                                                     */

void h2_vol_ref(struct h2_vol *v)
{
	__atomic_add_fetch(&v->refs, 1, __ATOMIC_RELAXED);
}

void h2_vol_drop(struct h2_vol *v)
{
	if (!v || __atomic_sub_fetch(&v->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	h2_chain_drop(v->tree.root);
	pthread_rwlock_destroy(&v->lock);
	free(v);
}

/* A volume object for record rec in slot; loads its root block. */
static struct h2_vol *vol_new(struct h2_store *st, uint32_t slot,
			      const struct h2_volrec *rec)
{
	struct h2_vol *v = calloc(1, sizeof(*v));

	if (!v)
		return NULL;
	pthread_rwlock_init(&v->lock, NULL);
	v->st = st;
	v->slot = slot;
	v->rec = *rec;
	v->refs = 1;
	v->tree.root_bref = rec->root;
	v->tree.levels = rec->levels;
	v->tree.leaf_type = H2_BREF_DATA;
	v->tree.vol_id = rec->id;
	v->used_blocks = rec->used_blocks;
	v->excl_blocks = rec->excl_blocks;
	v->snap_blocks = rec->snap_blocks;
	v->snap = rec->flags & H2_VOLREC_SNAPSHOT;
	snprintf(v->full, sizeof(v->full), "%s", rec->name);
	v->root_err = h2_tree_load_root(st, &v->tree);
	if (v->root_err == 0)
		memset(&v->tree.root_bref, 0, sizeof(v->tree.root_bref));
	return v;
}

/*
 * Read v's root again if the last attempt failed for any reason but
 * damage (a checksum mismatch stays one): a device error while the store
 * opened must not disable the volume until it is reopened.  Caller holds
 * v->lock exclusively; the root and its blockref change under dir_lock
 * as well, where the flusher's freeze reads them.  Returns root_err.
 */
int h2_vol_root_retry(struct h2_vol *v)
{
	struct h2_tree t = v->tree;
	int r;

	if (v->root_err == 0 || v->root_err == -EBADMSG)
		return v->root_err;
	t.root = NULL;
	r = h2_tree_load_root(v->st, &t);
	pthread_mutex_lock(&v->st->dir_lock);
	if (r == 0) {
		v->tree.root = t.root;
		memset(&v->tree.root_bref, 0, sizeof(v->tree.root_bref));
	}
	v->root_err = r;
	pthread_mutex_unlock(&v->st->dir_lock);
	return r;
}

/* Why v's root is not usable, for messages (root_err is set). */
const char *h2_vol_root_why(const struct h2_vol *v)
{
	return v->root_err == -EBADMSG
		   ? "its root block is damaged; run h2d check"
		   : "its root block could not be read (device error)";
}

/*
 * The volume table and the flusher's copy of the directory are sized to
 * the slots in use, not to the H2_DIR_MAX_RECORDS the directory can
 * hold (16 MiB of pointers and 1 GiB of records): a store with a few
 * volumes opens without either.  Both grow by doubling.
 */
#define H2_VOLS_MIN 64u

/* Capacity for slot + 1 slots, a power of two; slot < H2_DIR_MAX_RECORDS. */
static uint32_t dir_cap_for(uint32_t have, uint32_t slots)
{
	uint32_t cap = have ? have : H2_VOLS_MIN;

	while (cap < slots)
		cap *= 2;
	return cap < H2_DIR_MAX_RECORDS ? cap : H2_DIR_MAX_RECORDS;
}

/*
 * Make room in st->vols for slot (dir_lock held, or the store not yet
 * shared).  Returns 0 or -ENOMEM; the table is unchanged on failure.
 */
static int vols_reserve(struct h2_store *st, uint32_t slot)
{
	uint32_t cap;
	struct h2_vol **p;

	if (slot < st->vols_cap)
		return 0;
	cap = dir_cap_for(st->vols_cap, slot + 1);
	p = realloc(st->vols, (size_t)cap * sizeof(*p));
	if (!p)
		return -ENOMEM;
	memset(p + st->vols_cap, 0, (size_t)(cap - st->vols_cap) * sizeof(*p));
	st->vols = p;
	st->vols_cap = cap;
	return 0;
}

/*
 * Make st->dir_disk cover slots [0, slots), zeros where nothing was
 * written (flusher-private, or open while single-threaded).  Aborts when
 * out of memory, as the flusher's other bookkeeping does.
 */
void h2_dir_disk_reserve(struct h2_store *st, uint32_t slots)
{
	uint32_t cap;

	if (slots <= st->dir_disk_n)
		return;
	cap = dir_cap_for(st->dir_disk_n, slots);
	st->dir_disk =
	    h2_xrealloc(st->dir_disk, (size_t)cap * sizeof(*st->dir_disk));
	memset(st->dir_disk + st->dir_disk_n, 0,
	       (size_t)(cap - st->dir_disk_n) * sizeof(*st->dir_disk));
	st->dir_disk_n = cap;
}

/* Directory loading: each DIR leaf's records become volumes. */
struct dirload {
	struct h2_store *st;
	int err;
};

static int dir_leaf(void *arg, uint64_t key, uint64_t count,
		    struct h2_chain *c, const struct h2_blockref *b)
{
	struct dirload *dl = arg;
	struct h2_store *st = dl->st;
	uint8_t buf[H2_BLOCK_SIZE];
	const uint8_t *data;
	int r;

	if (!c && b->type == H2_BREF_EMPTY)
		return 0;
	(void)count;
	if (c) {
		data = c->data;
	} else {
		r = h2_chain_read_block(st, b, buf, "volume directory");
		if (r < 0)
			return r;
		data = buf;
	}
	h2_dir_disk_reserve(st, (uint32_t)(key + 1) * H2_VOLREC_PER_BLOCK);
	for (unsigned i = 0; i < H2_VOLREC_PER_BLOCK; i++) {
		struct h2_volrec rec;
		uint32_t slot = (uint32_t)(key * H2_VOLREC_PER_BLOCK + i);
		struct h2_vol *v;

		memcpy(&rec, data + i * H2_VOLREC_SIZE, sizeof(rec));
		st->dir_disk[slot] = rec;
		if (!(rec.flags & H2_VOLREC_USED))
			continue;
		if (rec.name_len == 0 || rec.name_len > H2_NAME_MAX ||
		    rec.name[rec.name_len] != '\0' || rec.levels < 1 ||
		    rec.levels > H2_MAX_LEVELS || rec.size > H2_VOLUME_MAX_SIZE)
			return h2_err(-EBADMSG,
				      "volume directory record %u is damaged",
				      slot);
		if (vols_reserve(st, slot) < 0)
			return h2_err(-ENOMEM, "out of memory");
		v = vol_new(st, slot, &rec);
		if (!v)
			return h2_err(-ENOMEM, "out of memory");
		st->vols[slot] = v;
		if (slot >= st->nslots)
			st->nslots = slot + 1;
	}
	return 0;
}

static struct h2_vol *find_id_locked(struct h2_store *st, uint64_t id)
{
	for (uint32_t i = 0; i < st->nslots; i++)
		if (st->vols[i] && st->vols[i]->rec.id == id)
			return st->vols[i];
	return NULL;
}

/* Snapshots are named "volume@snapshot" in messages. */
static void set_full_name(struct h2_vol *v, const struct h2_vol *head)
{
	if (v->snap && head)
		snprintf(v->full, sizeof(v->full), "%s@%s", head->rec.name,
			 v->rec.name);
	else
		snprintf(v->full, sizeof(v->full), "%s", v->rec.name);
}

static int vol_id_cmp(const void *a, const void *b);
static struct h2_vol *vol_bsearch(struct h2_vol **vols, size_t n,
				  uint64_t id);

/* After loading: every snapshot belongs to a volume of the store. */
static int dir_link(struct h2_store *st)
{
	struct h2_vol **byid = calloc(st->nslots + 1, sizeof(*byid));
	size_t n = 0;
	int r = 0;

	if (!byid)
		return h2_err(-ENOMEM, "out of memory");
	for (uint32_t i = 0; i < st->nslots; i++)
		if (st->vols[i])
			byid[n++] = st->vols[i];
	qsort(byid, n, sizeof(*byid), vol_id_cmp);
	for (uint32_t i = 0; i < st->nslots && r == 0; i++) {
		struct h2_vol *v = st->vols[i], *h;

		if (!v || !v->snap)
			continue;
		h = vol_bsearch(byid, n, v->rec.parent_id);
		if (!h || h->snap)
			r = h2_err(-EBADMSG,
				   "snapshot record %u (\"%s\") names volume "
				   "id %" PRIu64 ", which does not exist: the "
				   "directory is damaged",
				   i, v->rec.name, v->rec.parent_id);
		else
			set_full_name(v, h);
	}
	free(byid);
	return r;
}

static int dir_load(struct h2_store *st, const struct h2_blockref *root)
{
	struct dirload dl = {.st = st};
	int r;

	st->dir_tree.root_bref = *root;
	st->dir_tree.levels = H2_DIR_LEVELS;
	st->dir_tree.leaf_type = H2_BREF_DIR;
	st->dir_tree.vol_id = 0;
	r = h2_tree_load_root(st, &st->dir_tree);
	if (r < 0)
		return r;
	memset(&st->dir_tree.root_bref, 0, sizeof(st->dir_tree.root_bref));
	r = h2_tree_walk(st, &st->dir_tree, 0,
			 H2_DIR_MAX_RECORDS / H2_VOLREC_PER_BLOCK - 1,
			 dir_leaf, &dl);
	if (r == 0)
		r = dir_link(st);
	return r;
}

/* ---------------------------------------------------------------------- */
/* Open and close.                                                        */

static void store_free(struct h2_store *st)
{
	if (st->vols) {
		for (uint32_t i = 0; i < st->vols_cap; i++)
			h2_vol_drop(st->vols[i]);
		free(st->vols);
	}
	h2_chain_drop(st->dir_tree.root);
	h2_freelist_clear(&st->frees);
	h2_chain_spares_free(st);
	free(st->dir_disk);
	h2_fm_destroy(st);
	pthread_mutex_destroy(&st->dir_lock);
	pthread_mutex_destroy(&st->txn_lock);
	pthread_cond_destroy(&st->txn_cv);
	pthread_mutex_destroy(&st->free_lock);
	pthread_mutex_destroy(&st->spare_lock);
	pthread_mutex_destroy(&st->space_lock);
	pthread_mutex_destroy(&st->flush_lock);
	pthread_mutex_destroy(&st->run_lock);
	pthread_cond_destroy(&st->flush_cv);
	pthread_cond_destroy(&st->done_cv);
	h2_dev_close(st->dev);
	free(st);
}

int h2_store_open(struct h2_dev *dev, const struct h2_store_opts *opts,
		  struct h2_store **out)
{
	struct h2_store *st = calloc(1, sizeof(*st));
	struct h2_volhdr h;
	uint8_t *sel = NULL;
	unsigned mask;
	int copy, r;

	if (!st) {
		h2_dev_close(dev);
		return h2_err(-ENOMEM, "out of memory");
	}
	st->dev = dev;
	pthread_mutex_init(&st->dir_lock, NULL);
	pthread_mutex_init(&st->txn_lock, NULL);
	pthread_cond_init(&st->txn_cv, NULL);
	pthread_mutex_init(&st->free_lock, NULL);
	pthread_mutex_init(&st->spare_lock, NULL);
	pthread_mutex_init(&st->space_lock, NULL);
	pthread_mutex_init(&st->flush_lock, NULL);
	pthread_mutex_init(&st->run_lock, NULL);
	pthread_cond_init(&st->flush_cv, NULL);
	pthread_cond_init(&st->done_cv, NULL);
	if (opts)
		st->opts = *opts;
	if (!st->opts.flush_interval_ms)
		st->opts.flush_interval_ms = 1000;
	if (!st->opts.dirty_max)
		st->opts.dirty_max = 256ull << 20;
	if (!st->opts.dirty_hard)
		st->opts.dirty_hard = 2 * st->opts.dirty_max;
	if (!st->opts.cache_max)
		st->opts.cache_max = 512ull << 20;
	st->read_only = st->opts.read_only || dev->read_only;

	r = h2_hdr_read_best(dev, &h, &sel, &copy, &mask);
	if (r < 0)
		goto fail;
	st_geometry(st, h.dev_size, h.total_blocks, h.fm_pages, h.fm_base);
	memcpy(st->uuid, h.uuid, sizeof(st->uuid));
	st->format_time_ns = h.format_time_ns;
	st->next_vol_id = h.next_vol_id;
	st->used_blocks = h.used_blocks;
	st->hdr_tid = h.tid;
	st->durable_epoch = h.tid;
	st->cur_epoch = h.tid + 1;
	st->lifetime_flushes = h.flush_count;
	st->written_base = h.bytes_written;
	st->valid_hdr_mask = mask;
	r = h2_fm_init(st, sel);
	if (r < 0)
		goto fail;
	r = dir_load(st, &h.dir_root);
	if (r < 0)
		goto fail;
	if (!st->read_only) {
		r = h2_flush_start(st);
		if (r < 0)
			goto fail;
	}
	free(sel);
	*out = st;
	return 0;
fail:
	free(sel);
	store_free(st);
	return r;
}

int h2_store_close(struct h2_store *st)
{
	int r = 0;

	if (!st)
		return 0;
	if (!st->read_only) {
		h2_flush_stop(st);
		r = st->failed;
		if (r == 0)
			r = h2_flush_run_once(st);
		if (r == 1)
			r = 0;
	}
	store_free(st);
	return r;
}

/* ---------------------------------------------------------------------- */
/* The volume table.                                                      */

bool h2_vol_name_valid(const char *name)
{
	size_t n = 0;

	if (!name || !name[0] || name[0] == '.' || name[0] == '-')
		return false;
	for (const char *p = name; *p; p++, n++) {
		char ch = *p;

		if (n >= H2_NAME_MAX)
			return false;
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' ||
		      ch == '-'))
			return false;
	}
	return true;
}

/* Find a live volume (not a snapshot) by name (dir_lock held). */
static struct h2_vol *find_locked(struct h2_store *st, const char *name)
{
	for (uint32_t i = 0; i < st->nslots; i++) {
		struct h2_vol *v = st->vols[i];

		if (v && !v->snap && strcmp(v->rec.name, name) == 0)
			return v;
	}
	return NULL;
}

/* Find a snapshot of volume h by name, pending ones too (dir_lock). */
static struct h2_vol *find_snap_locked(struct h2_store *st,
				       const struct h2_vol *h,
				       const char *name)
{
	for (uint32_t i = 0; i < st->nslots; i++) {
		struct h2_vol *v = st->vols[i];

		if (v && v->snap && v->rec.parent_id == h->rec.id &&
		    strcmp(v->rec.name, name) == 0)
			return v;
	}
	return NULL;
}

/* The durable snapshot vol@snap (dir_lock held), or an error. */
static int snap_locked(struct h2_store *st, const char *vol, const char *snap,
		       struct h2_vol **hp, struct h2_vol **sp)
{
	struct h2_vol *h = find_locked(st, vol), *s;

	if (!h)
		return h2_err(-ENOENT, "no volume named \"%s\"", vol);
	s = find_snap_locked(st, h, snap);
	if (!s || s->pending)
		return h2_err(-ENOENT, "volume \"%s\" has no snapshot "
				       "named \"%s\"",
			      vol, snap);
	*hp = h;
	*sp = s;
	return 0;
}

static int check_names(const char *vol, const char *snap)
{
	if (!h2_vol_name_valid(vol))
		return h2_err(-EINVAL, "invalid volume name \"%s\"",
			      vol ? vol : "(null)");
	if (snap && !h2_vol_name_valid(snap))
		return h2_err(-EINVAL,
			      "invalid snapshot name \"%s\": use 1-127 of "
			      "A-Z a-z 0-9 . _ - (not starting with . or -)",
			      snap);
	return 0;
}

/*
 * Find and reference a volume by name, or a durable snapshot by
 * "volume@snapshot", or set the error message.
 */
static int lookup(struct h2_store *st, const char *name, struct h2_vol **out)
{
	char vol[H2_NAME_MAX + 1];
	const char *at = name ? strchr(name, '@') : NULL;
	struct h2_vol *v = NULL, *h;
	int r = 0;

	if (at) {
		size_t n = (size_t)(at - name);

		if (n > H2_NAME_MAX)
			return h2_err(-EINVAL, "invalid volume name in \"%s\"",
				      name);
		memcpy(vol, name, n);
		vol[n] = '\0';
		r = check_names(vol, at + 1);
		if (r < 0)
			return r;
		pthread_mutex_lock(&st->dir_lock);
		r = snap_locked(st, vol, at + 1, &h, &v);
		if (r == 0)
			h2_vol_ref(v);
		pthread_mutex_unlock(&st->dir_lock);
		if (r < 0)
			return r;
		*out = v;
		return 0;
	}
	if (!h2_vol_name_valid(name))
		return h2_err(-EINVAL, "invalid volume name \"%s\"",
			      name ? name : "(null)");
	pthread_mutex_lock(&st->dir_lock);
	v = find_locked(st, name);
	if (v)
		h2_vol_ref(v);
	pthread_mutex_unlock(&st->dir_lock);
	if (!v)
		return h2_err(-ENOENT, "no volume named \"%s\"", name);
	*out = v;
	return 0;
}

/* h2_vol_root_retry() on a volume or snapshot by name, if it exists. */
static void root_retry_name(struct h2_store *st, const char *name)
{
	struct h2_vol *v;

	if (lookup(st, name, &v) < 0)
		return;
	pthread_rwlock_wrlock(&v->lock);
	h2_vol_root_retry(v);
	pthread_rwlock_unlock(&v->lock);
	h2_vol_drop(v);
}

/* Fill an info struct (the caller keeps v stable). */
static void fill_basic(struct h2_vol *v, struct h2_vol_info *info)
{
	memset(info, 0, sizeof(*info));
	info->id = v->rec.id;
	snprintf(info->name, sizeof(info->name), "%s", v->full);
	info->size = v->rec.size;
	info->ctime_ns = v->rec.ctime_ns;
	info->create_tid = v->rec.create_tid;
	info->used_bytes = v->used_blocks * H2_BLOCK_SIZE;
	info->snap_bytes = v->snap_blocks * H2_BLOCK_SIZE;
}

/* A free directory slot (dir_lock held), or an error. */
static int free_slot_locked(struct h2_store *st, uint32_t *slot)
{
	uint32_t i;

	/* Slots past nslots are all free. */
	for (i = 0; i < st->nslots && st->vols[i]; i++)
		;
	if (i == H2_DIR_MAX_RECORDS)
		return h2_err(-ENOSPC,
			      "the volume directory is full (%u "
			      "volumes and snapshots)",
			      H2_DIR_MAX_RECORDS);
	if (vols_reserve(st, i) < 0)
		return h2_err(-ENOMEM, "out of memory");
	*slot = i;
	return 0;
}

/* Fill an info struct (dir_lock held; the caller keeps v stable). */
static void fill_info(struct h2_vol *v, struct h2_vol_info *info)
{
	fill_basic(v, info);
	for (uint32_t i = 0; i < v->st->nslots; i++) {
		struct h2_vol *s = v->st->vols[i];

		if (s && s->snap && !s->pending &&
		    s->rec.parent_id == v->rec.id)
			info->snapshots++;
		if (s && s->snap && v->rec.origin_id == s->rec.id)
			snprintf(info->origin, sizeof(info->origin), "%s",
				 s->full);
	}
}

int h2_vol_create(struct h2_store *st, const char *name, uint64_t size,
		     struct h2_vol_info *out)
{
	struct h2_volrec rec = {0};
	struct h2_vol *v;
	uint64_t epoch;
	uint32_t slot;
	int r;

	if (!h2_vol_name_valid(name))
		return h2_err(-EINVAL,
			      "invalid volume name \"%s\": use 1-127 of "
			      "A-Z a-z 0-9 . _ - (not starting with . or -)",
			      name ? name : "(null)");
	if (size == 0 || size > H2_VOLUME_MAX_SIZE)
		return h2_err(size ? -EFBIG : -EINVAL,
			      "volume size %" PRIu64 " is out of range "
			      "(1 byte to %llu TiB)",
			      size, H2_VOLUME_MAX_SIZE >> 40);
	r = h2_epoch_begin(st, &epoch);
	if (r < 0)
		return r;
	pthread_mutex_lock(&st->dir_lock);
	if (find_locked(st, name)) {
		r = h2_err(-EEXIST, "a volume named \"%s\" already exists",
			   name);
		goto unlock;
	}
	r = free_slot_locked(st, &slot);
	if (r < 0)
		goto unlock;
	rec.id = st->next_vol_id++;
	rec.size = size;
	rec.ctime_ns = h2_wall_ns();
	rec.create_tid = epoch;
	rec.flags = H2_VOLREC_USED;
	rec.levels = h2_levels_for((size + H2_BLOCK_SIZE - 1) / H2_BLOCK_SIZE);
	rec.name_len = (uint8_t)strlen(name);
	memcpy(rec.name, name, rec.name_len);
	v = vol_new(st, slot, &rec);
	if (!v) {
		r = h2_err(-ENOMEM, "out of memory");
		goto unlock;
	}
	st->vols[slot] = v;
	if (slot >= st->nslots)
		st->nslots = slot + 1;
	if (out)
		fill_info(v, out);
unlock:
	pthread_mutex_unlock(&st->dir_lock);
	h2_epoch_end(st, r == 0);
	return r;
}

static int vol_id_cmp(const void *a, const void *b)
{
	const struct h2_vol *x = *(struct h2_vol *const *)a;
	const struct h2_vol *y = *(struct h2_vol *const *)b;

	return x->rec.id < y->rec.id ? -1 : x->rec.id > y->rec.id;
}

static int info_id_cmp(const void *a, const void *b)
{
	const struct h2_vol_info *x = a, *y = b;

	return x->id < y->id ? -1 : x->id > y->id;
}

/* The record with this id among vols (sorted by id), or NULL. */
static struct h2_vol *vol_bsearch(struct h2_vol **vols, size_t n, uint64_t id)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (vols[mid]->rec.id == id)
			return vols[mid];
		if (vols[mid]->rec.id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/*
 * Every volume (not snapshots), sorted by id.  One pass over the table
 * and sorted lookups, not fill_info's scan per volume: Stat lists the
 * volumes on every call.
 */
int h2_vol_list(struct h2_store *st, struct h2_vol_info **out,
		   size_t *count)
{
	struct h2_vol_info *v = NULL, key;
	struct h2_vol **heads = NULL, **snaps = NULL;
	size_t n = 0, ns = 0;

	pthread_mutex_lock(&st->dir_lock);
	if (st->nslots) {
		v = calloc(st->nslots, sizeof(*v));
		heads = calloc(st->nslots, sizeof(*heads));
		snaps = calloc(st->nslots, sizeof(*snaps));
		if (!v || !heads || !snaps) {
			pthread_mutex_unlock(&st->dir_lock);
			free(v);
			free(heads);
			free(snaps);
			return h2_err(-ENOMEM, "out of memory");
		}
	}
	for (uint32_t i = 0; i < st->nslots; i++) {
		struct h2_vol *x = st->vols[i];

		if (x && x->snap)
			snaps[ns++] = x;
		else if (x)
			heads[n++] = x;
	}
	if (ns)
		qsort(snaps, ns, sizeof(*snaps), vol_id_cmp);
	if (n)
		qsort(heads, n, sizeof(*heads), vol_id_cmp);
	for (size_t i = 0; i < n; i++) {
		struct h2_vol *o = heads[i]->rec.origin_id
				       ? vol_bsearch(snaps, ns,
						     heads[i]->rec.origin_id)
				       : NULL;

		fill_basic(heads[i], &v[i]);
		if (o)
			snprintf(v[i].origin, sizeof(v[i].origin), "%s",
				 o->full);
	}
	for (size_t i = 0; i < ns; i++) {
		struct h2_vol_info *h;

		if (snaps[i]->pending)
			continue;
		key.id = snaps[i]->rec.parent_id;
		h = bsearch(&key, v, n, sizeof(*v), info_id_cmp);
		if (h)
			h->snapshots++;
	}
	pthread_mutex_unlock(&st->dir_lock);
	free(heads);
	free(snaps);
	*out = v;
	*count = n;
	return 0;
}

int h2_vol_info(struct h2_store *st, const char *name,
		   struct h2_vol_info *out)
{
	struct h2_vol *v;
	int r = lookup(st, name, &v);

	if (r < 0)
		return r;
	pthread_rwlock_rdlock(&v->lock);
	pthread_mutex_lock(&st->dir_lock);
	fill_info(v, out);
	pthread_mutex_unlock(&st->dir_lock);
	pthread_rwlock_unlock(&v->lock);
	h2_vol_drop(v);
	return 0;
}

/* Names of the snapshots of h (dir_lock held), for messages. */
static void snap_names(struct h2_store *st, const struct h2_vol *h, char *buf,
		       size_t len, unsigned *count)
{
	size_t at = 0;

	buf[0] = '\0';
	*count = 0;
	for (uint32_t i = 0; i < st->nslots; i++) {
		struct h2_vol *v = st->vols[i];

		if (!v || !v->snap || v->rec.parent_id != h->rec.id)
			continue;
		(*count)++;
		if (at + strlen(v->rec.name) + 8 < len)
			at += (size_t)snprintf(buf + at, len - at, "%s%s",
					       at ? ", " : "", v->rec.name);
	}
}

/* Volumes cloned from snapshot s (dir_lock held), for messages. */
static void clone_names(struct h2_store *st, const struct h2_vol *s, char *buf,
			size_t len, unsigned *count)
{
	size_t at = 0;

	buf[0] = '\0';
	*count = 0;
	for (uint32_t i = 0; i < st->nslots; i++) {
		struct h2_vol *v = st->vols[i];

		if (!v || v->snap || v->rec.origin_id != s->rec.id)
			continue;
		(*count)++;
		if (at + strlen(v->rec.name) + 8 < len)
			at += (size_t)snprintf(buf + at, len - at, "%s%s",
					       at ? ", " : "", v->rec.name);
	}
}

/*
 * Queue entry e on the current epoch's free list, in room set aside with
 * h2_frees_reserve(st, 1) (so this cannot fail).
 */
static void free_entry_add(struct h2_store *st, const struct h2_free *e)
{
	struct h2_freelist *fl = &st->frees;

	pthread_mutex_lock(&st->free_lock);
	if (st->frees_reserved)
		st->frees_reserved--;
	if (fl->n == fl->cap) {
		/* Not reserved after all: wait for memory (util.h). */
		__atomic_add_fetch(&st->unreserved_allocs, 1,
				   __ATOMIC_RELAXED);
		fl->cap = fl->cap ? 2 * fl->cap : 64;
		fl->v = h2_xrealloc(fl->v, fl->cap * sizeof(*fl->v));
	}
	fl->v[fl->n++] = *e;
	pthread_mutex_unlock(&st->free_lock);
}

/*
 * The frees of discarding v's tree: the epoch's list gets room for them
 * (and `extra` more, for free_entry_add) and *frees for them, or -ENOMEM.
 * v->lock held exclusively; *n says what to give back to
 * h2_frees_commit.
 */
static int discard_reserve(struct h2_store *st, struct h2_vol *v,
			   uint64_t epoch, size_t extra,
			   struct h2_freelist *frees, size_t *n)
{
	size_t want = h2_tree_discard_frees(&v->tree, epoch);
	int r = h2_freelist_reserve(frees, want);

	if (r == 0)
		r = h2_frees_reserve(st, want + extra);
	if (r < 0) {
		h2_freelist_clear(frees);
		return r;
	}
	*n = want;
	return 0;
}

/* Delete one volume that has no snapshots. */
static int delete_one(struct h2_store *st, const char *name)
{
	struct h2_txctx tx = {0};
	struct h2_freelist frees = {0};
	struct h2_vol *v, *o, *first;
	uint64_t epoch;
	size_t nfrees = 0;
	char names[256];
	unsigned n;
	int r;

	r = h2_epoch_begin(st, &epoch);
	if (r < 0)
		return r;
	/* Room for the frees first, under the volume's lock, which stays
	 * held until its tree is discarded: nothing fails after the
	 * volume left the table. */
	pthread_mutex_lock(&st->dir_lock);
	first = find_locked(st, name);
	if (first)
		h2_vol_ref(first);
	pthread_mutex_unlock(&st->dir_lock);
	if (first) {
		pthread_rwlock_wrlock(&first->lock);
		r = discard_reserve(st, first, epoch, 0, &frees, &nfrees);
		if (r < 0) {
			pthread_rwlock_unlock(&first->lock);
			h2_vol_drop(first);
			h2_epoch_end(st, false);
			return r;
		}
	}
	pthread_mutex_lock(&st->dir_lock);
	v = find_locked(st, name);
	if (v)
		snap_names(st, v, names, sizeof(names), &n);
	if (!v) {
		r = h2_err(-ENOENT, "no volume named \"%s\"", name);
	} else if (v != first) {
		r = h2_err(-EAGAIN, "volume \"%s\" was replaced meanwhile; "
				    "try again",
			   name);
	} else if (v->opens > 0) {
		r = h2_err(-EBUSY,
			   "volume \"%s\" is open (%d handle%s); close it "
			   "first",
			   name, v->opens, v->opens == 1 ? "" : "s");
	} else if (n) {
		r = h2_err(-ENOTEMPTY,
			   "volume \"%s\" has %u snapshot%s (%s); delete "
			   "them first, or delete recursively",
			   name, n, n == 1 ? "" : "s", names);
	} else {
		st->vols[v->slot] = NULL;
		v->deleted = true;
		/* The origin's blocks this clone held settle with this
		 * flush: deleting the origin waits for it. */
		o = v->rec.origin_id ? find_id_locked(st, v->rec.origin_id)
				     : NULL;
		if (o)
			o->barrier_epoch = epoch;
	}
	pthread_mutex_unlock(&st->dir_lock);
	if (r == 0) {
		tx.st = st;
		tx.epoch = epoch;
		tx.vol_id = v->rec.id;
		tx.origin_tid = v->rec.origin_tid;
		tx.frees = &frees;
		tx.reserved = true;
		/* A root that could not be read goes by its blockref. */
		h2_tree_discard(&tx, &v->tree);
		h2_vol_drop(v); /* the table's reference */
	}
	if (first) {
		pthread_rwlock_unlock(&first->lock);
		h2_vol_drop(first);
		/* The frees, or (refused) nothing and the room back. */
		h2_frees_commit(st, &frees, nfrees);
	}
	h2_epoch_end(st, r == 0);
	return r < 0 ? r : h2_flush_wait(st, epoch, NULL);
}

/*
 * Everything that depends on volume name, newest first: clones of its
 * snapshots (recursively), then its snapshots.  Loops because clients
 * may add more meanwhile; each step is an ordinary deletion.
 */
static int delete_dependents(struct h2_store *st, const char *name, int depth)
{
	char child[H2_NAME_MAX + 1], snap[H2_NAME_MAX + 1];
	int r;

	if (depth > 64)
		return h2_err(-ELOOP, "volume \"%s\": clones nest deeper than "
				      "64 levels",
			      name);
	for (;;) {
		struct h2_vol *h, *pick = NULL, *clone = NULL;

		child[0] = snap[0] = '\0';
		pthread_mutex_lock(&st->dir_lock);
		h = find_locked(st, name);
		for (uint32_t i = 0; h && i < st->nslots && !clone; i++) {
			struct h2_vol *s = st->vols[i];

			if (!s || !s->snap || s->rec.parent_id != h->rec.id)
				continue;
			for (uint32_t k = 0; k < st->nslots && !clone; k++) {
				struct h2_vol *c = st->vols[k];

				if (c && !c->snap && c->rec.origin_id == s->rec.id)
					clone = c;
			}
			if (!pick || s->rec.snap_tid > pick->rec.snap_tid)
				pick = s;
		}
		if (clone)
			snprintf(child, sizeof(child), "%s", clone->rec.name);
		else if (pick)
			snprintf(snap, sizeof(snap), "%s", pick->rec.name);
		pthread_mutex_unlock(&st->dir_lock);
		if (!h)
			return h2_err(-ENOENT, "no volume named \"%s\"", name);
		if (child[0]) {
			r = delete_dependents(st, child, depth + 1);
			if (r == 0)
				r = delete_one(st, child);
		} else if (snap[0]) {
			r = h2_snap_delete(st, name, snap);
			if (r == -EBUSY && !h2_store_sync(st, NULL))
				r = h2_snap_delete(st, name, snap);
		} else {
			return 0;
		}
		if (r < 0 && r != -ENOENT)
			return r;
	}
}

int h2_vol_delete_flags(struct h2_store *st, const char *name, unsigned flags)
{
	int r;

	if (st->read_only)
		return h2_err(-EROFS, "the store is open read-only");
	if (flags & ~(unsigned)H2_DEL_RECURSIVE)
		return h2_err(-EINVAL, "unknown delete flags 0x%x", flags);
	if (!h2_vol_name_valid(name))
		return h2_err(-EINVAL, "invalid volume name \"%s\"",
			      name ? name : "(null)");
	if (flags & H2_DEL_RECURSIVE) {
		r = delete_dependents(st, name, 0);
		if (r < 0)
			return r;
	}
	return delete_one(st, name);
}

int h2_vol_delete(struct h2_store *st, const char *name)
{
	return h2_vol_delete_flags(st, name, 0);
}

int h2_vol_open(struct h2_store *st, const char *name, struct h2_vol **out)
{
	struct h2_vol *v;
	int r = lookup(st, name, &v);

	if (r < 0)
		return r;
	pthread_mutex_lock(&st->dir_lock);
	if (v->deleted) {
		r = h2_err(-ENOENT, "no volume named \"%s\"", name);
	} else {
		v->opens++;
	}
	pthread_mutex_unlock(&st->dir_lock);
	if (r < 0) {
		h2_vol_drop(v);
		return r;
	}
	*out = v;
	return 0;
}

void h2_vol_close(struct h2_vol *v)
{
	if (!v)
		return;
	pthread_mutex_lock(&v->st->dir_lock);
	v->opens--;
	pthread_mutex_unlock(&v->st->dir_lock);
	h2_vol_drop(v);
}

bool h2_vol_read_only(struct h2_vol *v)
{
	return v->snap || v->st->read_only;
}

uint64_t h2_vol_size(struct h2_vol *v)
{
	uint64_t size;

	pthread_rwlock_rdlock(&v->lock);
	size = v->rec.size;
	pthread_rwlock_unlock(&v->lock);
	return size;
}

const char *h2_vol_name(struct h2_vol *v)
{
	return v->full;
}

/* ---------------------------------------------------------------------- */
/* Snapshots and clones (see "Shared blocks" in flush.c).                  */

static void insert_locked(struct h2_store *st, struct h2_vol *v)
{
	st->vols[v->slot] = v;
	if (v->slot >= st->nslots)
		st->nslots = v->slot + 1;
}

/* dir_lock held. */
static void fill_snap(struct h2_store *st, const struct h2_vol *s,
		      struct h2_snap_info *out)
{
	struct h2_vol *h = find_id_locked(st, s->rec.parent_id);

	memset(out, 0, sizeof(*out));
	out->id = s->rec.id;
	snprintf(out->volume, sizeof(out->volume), "%s",
		 h ? h->rec.name : "");
	snprintf(out->name, sizeof(out->name), "%s", s->rec.name);
	out->ctime_ns = s->rec.ctime_ns;
	out->tid = s->rec.snap_tid;
	out->size = s->rec.size;
	out->refer_bytes = s->used_blocks * H2_BLOCK_SIZE;
	out->excl_bytes = s->excl_blocks * H2_BLOCK_SIZE;
	for (uint32_t i = 0; i < st->nslots; i++) {
		struct h2_vol *c = st->vols[i];

		if (c && !c->snap && c->rec.origin_id == s->rec.id)
			out->clones++;
	}
}

int h2_snap_create(struct h2_store *st, const char *vol, const char *snap,
		   struct h2_snap_info *out)
{
	struct h2_volrec rec = {0};
	struct h2_vol *h, *v = NULL;
	uint64_t epoch;
	uint32_t slot = 0;
	int r = check_names(vol, snap);

	if (r < 0)
		return r;
	root_retry_name(st, vol);
	r = h2_epoch_begin(st, &epoch);
	if (r < 0)
		return r;
	pthread_mutex_lock(&st->dir_lock);
	h = find_locked(st, vol);
	if (!h) {
		r = h2_err(-ENOENT, "no volume named \"%s\"", vol);
	} else if (h->root_err) {
		r = h2_err(-EIO, "volume \"%s\": %s", vol, h2_vol_root_why(h));
	} else if (find_snap_locked(st, h, snap)) {
		r = h2_err(-EEXIST, "volume \"%s\" already has a snapshot "
				    "named \"%s\"",
			   vol, snap);
	} else {
		r = free_slot_locked(st, &slot);
	}
	if (r == 0) {
		rec.id = st->next_vol_id++;
		rec.ctime_ns = h2_wall_ns();
		rec.create_tid = epoch;
		rec.parent_id = h->rec.id;
		rec.flags = H2_VOLREC_USED | H2_VOLREC_SNAPSHOT;
		rec.levels = 1;
		rec.name_len = (uint8_t)strlen(snap);
		memcpy(rec.name, snap, rec.name_len);
		v = vol_new(st, slot, &rec);
		if (!v)
			r = h2_err(-ENOMEM, "out of memory");
	}
	if (r == 0) {
		/* The flush of this epoch gives it the volume's image. */
		v->pending = true;
		set_full_name(v, h);
		insert_locked(st, v);
		h2_vol_ref(v);
	}
	pthread_mutex_unlock(&st->dir_lock);
	h2_epoch_end(st, r == 0);
	if (r < 0)
		return r;
	r = h2_flush_wait(st, epoch, NULL);
	if (r == 0 && out) {
		pthread_mutex_lock(&st->dir_lock);
		fill_snap(st, v, out);
		pthread_mutex_unlock(&st->dir_lock);
	}
	h2_vol_drop(v);
	return r;
}

static int snap_info_cmp(const void *a, const void *b)
{
	const struct h2_snap_info *x = a, *y = b;
	int c = strcmp(x->volume, y->volume);

	if (c)
		return c;
	return x->tid < y->tid ? -1 : x->tid > y->tid;
}

int h2_snap_list(struct h2_store *st, const char *vol,
		 struct h2_snap_info **out, size_t *count)
{
	struct h2_snap_info *v = NULL;
	struct h2_vol *h = NULL;
	size_t n = 0;
	int r = vol ? check_names(vol, NULL) : 0;

	if (r < 0)
		return r;
	pthread_mutex_lock(&st->dir_lock);
	if (vol && !(h = find_locked(st, vol))) {
		pthread_mutex_unlock(&st->dir_lock);
		return h2_err(-ENOENT, "no volume named \"%s\"", vol);
	}
	v = calloc(st->nslots + 1, sizeof(*v));
	if (!v) {
		pthread_mutex_unlock(&st->dir_lock);
		return h2_err(-ENOMEM, "out of memory");
	}
	for (uint32_t i = 0; i < st->nslots; i++) {
		struct h2_vol *s = st->vols[i];

		if (s && s->snap && !s->pending &&
		    (!h || s->rec.parent_id == h->rec.id))
			fill_snap(st, s, &v[n++]);
	}
	pthread_mutex_unlock(&st->dir_lock);
	qsort(v, n, sizeof(*v), snap_info_cmp);
	*out = v;
	*count = n;
	return 0;
}

int h2_snap_info(struct h2_store *st, const char *vol, const char *snap,
		 struct h2_snap_info *out)
{
	struct h2_vol *h, *s;
	int r = check_names(vol, snap);

	if (r < 0)
		return r;
	pthread_mutex_lock(&st->dir_lock);
	r = snap_locked(st, vol, snap, &h, &s);
	if (r == 0)
		fill_snap(st, s, out);
	pthread_mutex_unlock(&st->dir_lock);
	return r;
}

int h2_snap_delete(struct h2_store *st, const char *vol, const char *snap)
{
	struct h2_free e = {0};
	struct h2_vol *h, *s;
	uint64_t epoch, need;
	char names[256];
	unsigned n;
	int r = check_names(vol, snap);

	if (r < 0)
		return r;
again:
	r = h2_epoch_begin(st, &epoch);
	if (r < 0)
		return r;
	/* Room for its free entry: nothing fails once it left the table. */
	r = h2_frees_reserve(st, 1);
	if (r < 0) {
		h2_epoch_end(st, false);
		return r;
	}
	pthread_mutex_lock(&st->dir_lock);
	h = find_locked(st, vol);
	s = h ? find_snap_locked(st, h, snap) : NULL;
	if (s)
		clone_names(st, s, names, sizeof(names), &n);
	if (!h) {
		r = h2_err(-ENOENT, "no volume named \"%s\"", vol);
	} else if (!s) {
		r = h2_err(-ENOENT, "volume \"%s\" has no snapshot named "
				    "\"%s\"",
			   vol, snap);
	} else if (s->pending) {
		r = h2_err(-EBUSY, "snapshot %s is still being created",
			   s->full);
	} else if (s->opens > 0) {
		r = h2_err(-EBUSY, "snapshot %s is open (%d handle%s); close "
				   "it first",
			   s->full, s->opens, s->opens == 1 ? "" : "s");
	} else if (n) {
		r = h2_err(-ENOTEMPTY,
			   "snapshot %s has %u clone%s (%s) that depend on "
			   "it; delete them first",
			   s->full, n, n == 1 ? "" : "s", names);
	}
	need = r == 0 ? (h->barrier_epoch > s->barrier_epoch
				 ? h->barrier_epoch
				 : s->barrier_epoch)
		      : 0;
	if (r == 0 && need >= epoch) {
		r = h2_err(-EBUSY, "snapshot %s: a rollback or clone deletion "
				   "in this very flush must settle first",
			   s->full);
	} else if (r == 0 &&
		   need > __atomic_load_n(&st->durable_epoch,
					  __ATOMIC_ACQUIRE)) {
		pthread_mutex_unlock(&st->dir_lock);
		h2_frees_commit(st, &(struct h2_freelist){0}, 1);
		h2_epoch_end(st, false);
		r = h2_flush_wait(st, need, NULL);
		if (r < 0)
			return r;
		goto again;
	}
	if (r == 0) {
		st->vols[s->slot] = NULL;
		s->deleted = true;
		e.kind = H2_FREE_SNAP;
		e.vol_id = h->rec.id;
		e.origin_tid = h->rec.origin_tid;
		e.bref = s->rec.root;
		e.snap_id = s->rec.id;
		e.snap_tid = s->rec.snap_tid;
		e.head_slot = h->slot;
		free_entry_add(st, &e);
	}
	pthread_mutex_unlock(&st->dir_lock);
	if (r < 0)
		h2_frees_commit(st, &(struct h2_freelist){0}, 1);
	h2_epoch_end(st, r == 0);
	if (r < 0)
		return r;
	h2_vol_drop(s);
	return h2_flush_wait(st, epoch, NULL);
}

int h2_snap_clone(struct h2_store *st, const char *vol, const char *snap,
	     const char *newvol, struct h2_vol_info *out)
{
	struct h2_volrec rec = {0};
	struct h2_vol *h, *s, *v = NULL;
	uint64_t epoch;
	uint32_t slot = 0;
	int r = check_names(vol, snap);

	if (r == 0 && !h2_vol_name_valid(newvol))
		r = h2_err(-EINVAL,
			   "invalid volume name \"%s\": use 1-127 of "
			   "A-Z a-z 0-9 . _ - (not starting with . or -)",
			   newvol ? newvol : "(null)");
	if (r < 0)
		return r;
	{
		char full[2 * H2_NAME_MAX + 2];

		snprintf(full, sizeof(full), "%s@%s", vol, snap);
		root_retry_name(st, full);
	}
	r = h2_epoch_begin(st, &epoch);
	if (r < 0)
		return r;
	pthread_mutex_lock(&st->dir_lock);
	r = snap_locked(st, vol, snap, &h, &s);
	if (r == 0 && find_locked(st, newvol))
		r = h2_err(-EEXIST, "a volume named \"%s\" already exists",
			   newvol);
	if (r == 0 && s->root_err)
		r = h2_err(-EIO, "snapshot %s: %s", s->full,
			   h2_vol_root_why(s));
	if (r == 0)
		r = free_slot_locked(st, &slot);
	if (r == 0) {
		rec.id = st->next_vol_id++;
		rec.size = s->rec.size;
		rec.ctime_ns = h2_wall_ns();
		rec.create_tid = epoch;
		rec.flags = H2_VOLREC_USED;
		rec.levels = s->rec.levels;
		rec.name_len = (uint8_t)strlen(newvol);
		memcpy(rec.name, newvol, rec.name_len);
		rec.root = s->rec.root;
		rec.used_blocks = s->used_blocks;
		rec.origin_id = s->rec.id;
		rec.origin_tid = s->rec.snap_tid;
		v = vol_new(st, slot, &rec);
		if (!v)
			r = h2_err(-ENOMEM, "out of memory");
	}
	if (r == 0 && v->root_err) {
		r = v->root_err;
		h2_vol_drop(v);
	} else if (r == 0) {
		insert_locked(st, v);
		if (out)
			fill_info(v, out);
	}
	pthread_mutex_unlock(&st->dir_lock);
	h2_epoch_end(st, r == 0);
	if (r < 0)
		return r;
	return h2_flush_wait(st, epoch, NULL);
}

int h2_vol_rollback(struct h2_store *st, const char *vol, const char *snap,
		unsigned flags)
{
	struct h2_freelist frees = {0};
	struct h2_txctx tx = {0};
	struct h2_free e = {0};
	struct h2_vol *h = NULL, *s = NULL;
	struct h2_volrec target = {0};
	uint64_t epoch, barrier = 0;
	size_t nfrees = 0;
	int r = check_names(vol, snap);

	if (r == 0 && (flags & ~(unsigned)H2_ROLLBACK_FORCE))
		r = h2_err(-EINVAL, "unknown rollback flags 0x%x", flags);
	if (r < 0)
		return r;
	r = h2_epoch_begin(st, &epoch);
	if (r < 0)
		return r;
	pthread_mutex_lock(&st->dir_lock);
	r = snap_locked(st, vol, snap, &h, &s);
	for (uint32_t i = 0; r == 0 && i < st->nslots; i++) {
		struct h2_vol *o = st->vols[i];

		if (!o || !o->snap || o->rec.parent_id != h->rec.id || o == s)
			continue;
		if (o->pending)
			r = h2_err(-EBUSY, "a snapshot of \"%s\" is being "
					   "created; try again",
				   vol);
		else if (o->rec.snap_tid > s->rec.snap_tid)
			r = h2_err(-ENOTEMPTY,
				   "snapshot %s is not the newest of \"%s\" "
				   "(%s is newer); delete the newer ones "
				   "first",
				   s->full, vol, o->full);
	}
	if (r == 0 && h->opens > 0 && !(flags & H2_ROLLBACK_FORCE))
		r = h2_err(-EBUSY, "volume \"%s\" is open (%d handle%s); close "
				   "it first or force the rollback",
			   vol, h->opens, h->opens == 1 ? "" : "s");
	if (r == 0) {
		target = s->rec;
		barrier = h->barrier_epoch;
		h->barrier_epoch = epoch;
		h2_vol_ref(h);
	}
	pthread_mutex_unlock(&st->dir_lock);
	if (r < 0) {
		h2_epoch_end(st, false);
		return r;
	}
	pthread_rwlock_wrlock(&h->lock);
	/* Room for the frees of its tree and the rollback's own entry:
	 * nothing fails once the tree is discarded. */
	r = discard_reserve(st, h, epoch, 1, &frees, &nfrees);
	if (r < 0) {
		pthread_rwlock_unlock(&h->lock);
		/* No rollback in this epoch to wait for. */
		pthread_mutex_lock(&st->dir_lock);
		if (h->barrier_epoch == epoch)
			h->barrier_epoch = barrier;
		pthread_mutex_unlock(&st->dir_lock);
		h2_vol_drop(h);
		h2_epoch_end(st, false);
		return r;
	}
	tx.st = st;
	tx.epoch = epoch;
	tx.vol_id = h->rec.id;
	tx.origin_tid = h->rec.origin_tid;
	tx.frees = &frees;
	tx.reserved = true;
	h2_tree_discard(&tx, &h->tree);
	h->tree.root_bref = target.root;
	h->tree.levels = target.levels;
	h->rec.size = target.size;
	h->root_err = h2_tree_load_root(st, &h->tree);
	if (h->root_err == 0)
		memset(&h->tree.root_bref, 0, sizeof(h->tree.root_bref));
	e.kind = H2_FREE_ROLLBACK;
	e.vol_id = h->rec.id;
	e.origin_tid = h->rec.origin_tid;
	e.snap_id = target.id;
	h2_frees_commit(st, &frees, nfrees);
	free_entry_add(st, &e);
	pthread_rwlock_unlock(&h->lock);
	h2_epoch_end(st, true);
	h2_vol_drop(h);
	return h2_flush_wait(st, epoch, NULL);
}

/* ---------------------------------------------------------------------- */
/* Statistics.                                                            */

void h2_store_stat(struct h2_store *st, struct h2_store_stats *out)
{
	struct h2_dev_stats ds;
	uint64_t used, reserved;

	memset(out, 0, sizeof(*out));
	h2_dev_get_stats(st->dev, &ds);
	pthread_mutex_lock(&st->space_lock);
	used = st->used_blocks;
	reserved = st->reserved_blocks;
	pthread_mutex_unlock(&st->space_lock);
	out->dev_size = st->dev_size;
	out->block_size = H2_BLOCK_SIZE;
	out->total_bytes = st->total_blocks * H2_BLOCK_SIZE;
	out->used_bytes = used * H2_BLOCK_SIZE;
	out->free_bytes = used + reserved < st->total_blocks
				  ? (st->total_blocks - used - reserved) *
					    H2_BLOCK_SIZE
				  : 0;
	out->dirty_bytes = __atomic_load_n(&st->dirty_chains,
					   __ATOMIC_RELAXED) *
			   H2_BLOCK_SIZE;
	pthread_mutex_lock(&st->dir_lock);
	for (uint32_t i = 0; i < st->nslots; i++) {
		struct h2_vol *v = st->vols[i];

		if (!v)
			continue;
		if (!v->snap)
			out->volumes++;
		else if (!v->pending)
			out->snapshots++;
		if (!v->snap)
			out->snapshot_bytes += v->snap_blocks * H2_BLOCK_SIZE;
	}
	pthread_mutex_unlock(&st->dir_lock);
	out->flushes = __atomic_load_n(&st->flushes, __ATOMIC_RELAXED);
	out->flush_ns_total =
		__atomic_load_n(&st->flush_ns_total, __ATOMIC_RELAXED);
	out->last_flush_ns =
		__atomic_load_n(&st->last_flush_ns, __ATOMIC_RELAXED);
	pthread_mutex_lock(&st->flush_lock);
	out->durable_tid = st->durable_epoch;
	pthread_mutex_unlock(&st->flush_lock);
	out->dev_bytes_written = ds.bytes_written;
	out->dev_bytes_read = ds.bytes_read;
	out->dev_flushes = ds.flushes;
	out->client_bytes_written =
		__atomic_load_n(&st->client_written, __ATOMIC_RELAXED);
	out->client_bytes_read =
		__atomic_load_n(&st->client_read, __ATOMIC_RELAXED);
	out->write_waits = __atomic_load_n(&st->write_waits, __ATOMIC_RELAXED);
	out->unreserved_allocs =
		__atomic_load_n(&st->unreserved_allocs, __ATOMIC_RELAXED);
	out->cached_bytes = __atomic_load_n(&st->chains, __ATOMIC_RELAXED) *
			    H2_BLOCK_SIZE;
}
