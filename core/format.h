/*
 * format.h - the on-disk format of an h2 store.
 *
 * Everything here is little-endian on disk and fixed-width; every
 * structure has a size check.  The store is a copy-on-write tree of
 * blockrefs in the spirit of HAMMER2: a block is never overwritten while
 * the newest durable volume header can reach it, so after any crash the
 * store opens at the last completed flush, whole.
 *
 * Device layout (B = 4 KiB block, all offsets in bytes):
 *
 *   0          16 MiB       32 MiB       48 MiB
 *   +--------+ ... +--------+ ... +--------+ ... +--------+ ...
 *   | hdr 0  |     | hdr 1  |     | hdr 2  |     | hdr 3  |
 *   +--------+     +--------+     +--------+     +--------+
 *   |<-64KiB>|
 *
 *   Volume header copy i lives at i * H2_HDR_STRIDE and owns a 64 KiB
 *   region.  Copies whose region does not fit on the device do not exist
 *   (every device >= 64 MiB has all four).  Flush number t writes copy
 *   t % copies, so a torn header write only ever damages one copy and
 *   never the newest durable one.
 *
 *   The freemap zone starts at hdr.fm_base: two 4 KiB slots per freemap
 *   page (page p at fm_base + (2p + s) * B, s = 0 or 1).  A flush writes
 *   a dirty page into the slot that the current header does not select
 *   and flips the page's selector bit in the next header, so the
 *   committed copy of a page is never overwritten (shadow paging with
 *   fixed locations: no allocation recursion for the allocator's own
 *   metadata).
 *
 *   All other blocks are allocated from the freemap: data blocks,
 *   indirect blocks and directory blocks, 4 KiB each.
 *
 * Trees:
 *
 *   header.dir_root --> INDIRECT (level 2) --> INDIRECT (level 1) --> DIR
 *   A DIR block holds 8 volume records; record r lives in leaf r / 8.
 *   Records are volumes, snapshots (flag SNAPSHOT, parent_id = the
 *   volume's id) and clones (volumes with origin_id = a snapshot's id).
 *
 *   record.root --> INDIRECT (level L) --> ... --> INDIRECT (level 1)
 *                                                  --> DATA (level 0)
 *   A volume's leaf key is its logical block number (byte offset / 4 KiB).
 *   An indirect block at level n holds 64 blockrefs and covers
 *   64^n leaves; slot i covers keys [key + i * 64^(n-1), ...).
 *   An EMPTY blockref is a hole: it reads as zeros and owns no block.
 */
#ifndef H2_FORMAT_H
#define H2_FORMAT_H

#include <stdint.h>

#define H2_FORMAT_VERSION 2

#define H2_BLOCK_RADIX 12
#define H2_BLOCK_SIZE (1u << H2_BLOCK_RADIX) /* 4 KiB */

#define H2_FANOUT_RADIX 6
#define H2_FANOUT (1u << H2_FANOUT_RADIX) /* blockrefs per indirect block */
#define H2_MAX_LEVELS 8			  /* 64^8 * 4 KiB = 2^60 bytes */

/* Largest volume: 1 PiB (the issue asks for at least 16 TiB). */
#define H2_VOLUME_MAX_SIZE (1ull << 50)

/* Volume headers. */
#define H2_HDR_MAGIC 0x45524f5453324848ull /* "HH2STORE" little-endian */
#define H2_HDR_COPIES 4
#define H2_HDR_STRIDE (16ull << 20)
#define H2_HDR_REGION (64u << 10)
#define H2_HDR_FIXED 512 /* fixed part; selector bits follow */
#define H2_HDR_MAX_FM_PAGES ((H2_HDR_REGION - H2_HDR_FIXED) * 8u)

/*
 * Smallest device we format: two header copies (so a torn header write is
 * always survivable), the freemap and some data.
 */
#define H2_DEV_MIN_SIZE (32ull << 20)

/* Freemap pages. */
#define H2_FM_MAGIC 0x50414d4645524632ull /* "2FREFMAP" */
#define H2_FM_HDR 64
#define H2_FM_BITS ((H2_BLOCK_SIZE - H2_FM_HDR) * 8u) /* 32256 blocks/page */

/* Directory. */
#define H2_VOLREC_SIZE 512
#define H2_VOLREC_PER_BLOCK (H2_BLOCK_SIZE / H2_VOLREC_SIZE) /* 8 */
#define H2_DIR_LEVELS 2
#define H2_DIR_MAX_RECORDS (H2_FANOUT * H2_FANOUT * H2_VOLREC_PER_BLOCK)
#define H2_NAME_MAX 127 /* bytes, not counting the terminating NUL */

enum h2_bref_type {
	H2_BREF_EMPTY = 0,    /* hole: no block */
	H2_BREF_DATA = 1,     /* 4 KiB of volume data (level 0) */
	H2_BREF_INDIRECT = 2, /* 64 blockrefs (level >= 1) */
	H2_BREF_DIR = 3,      /* 16 volume records (level 0) */
};

/*
 * A blockref: 64 bytes.
 *
 * data_off is the device byte offset of the block, 4 KiB aligned; its low
 * six bits hold the size radix (always H2_BLOCK_RADIX in version 1), as
 * HAMMER2 does.  check is XXH3-64 of the block's bytes, seeded with 0.
 * birth_tid is the flush (header tid) that wrote the block; a parent is
 * never older than its children.  blocks counts the blocks of the subtree
 * the blockref heads, itself included (1 for a leaf), so the space a
 * whole subtree holds is known without walking it.
 *
 * Sharing (snapshots and clones): trees of one volume's lineage share
 * subtrees by blockref.  A block is in snapshot S of its volume iff it was
 * born at or before S's tid and was still referenced then; so a block
 * the volume stops referencing is free at once iff it was born after the
 * volume's newest snapshot (and after its clone origin), and otherwise is
 * left to the snapshots.
 */
struct h2_blockref {
	uint8_t type;
	uint8_t level;
	uint8_t keybits; /* covers keys [key, key + 2^keybits) */
	uint8_t flags;
	uint32_t reserved0;
	uint64_t key;
	uint64_t data_off;
	uint64_t birth_tid;
	uint64_t check;
	uint64_t blocks;
	uint64_t reserved[2];
};
_Static_assert(sizeof(struct h2_blockref) == 64, "blockref is 64 bytes");
_Static_assert(H2_FANOUT * sizeof(struct h2_blockref) == H2_BLOCK_SIZE,
	       "an indirect block is exactly 64 blockrefs");

#define H2_OFF_RADIX_MASK 0x3full
#define H2_BREF_OFFSET(b) ((b)->data_off & ~H2_OFF_RADIX_MASK)
#define H2_BREF_RADIX(b) ((unsigned)((b)->data_off & H2_OFF_RADIX_MASK))

enum h2_volrec_flags {
	H2_VOLREC_USED = 1u << 0,     /* slot holds a record */
	H2_VOLREC_SNAPSHOT = 1u << 1, /* a read-only snapshot */
};

/*
 * A directory record: 512 bytes, 8 per DIR block.  Space, in blocks:
 *   used_blocks  blocks its tree references (shared ones included)
 *   excl_blocks  snapshot: referenced by no other tree of its volume's
 *                lineage (freed by deleting it; clones may share them)
 *   snap_blocks  volume: held by its snapshots and not by the volume
 */
struct h2_volrec {
	uint64_t id;	      /* unique, never reused; 0 = free slot */
	uint64_t size;	      /* bytes */
	uint64_t ctime_ns;    /* creation, CLOCK_REALTIME */
	uint64_t create_tid;  /* epoch the record was created in */
	uint64_t parent_id;   /* snapshot: the volume it belongs to */
	uint64_t snap_tid;    /* snapshot: the flush whose image it is */
	uint32_t flags;	      /* enum h2_volrec_flags */
	uint8_t levels;	      /* height of the data tree (root level) */
	uint8_t name_len;
	uint16_t reserved0;
	char name[H2_NAME_MAX + 1]; /* NUL padded; a snapshot's own name */
	struct h2_blockref root;    /* EMPTY: the volume is all holes */
	uint64_t used_blocks;
	uint64_t origin_id;   /* clone: the snapshot it was made from */
	uint64_t origin_tid;  /* clone: that snapshot's tid */
	uint64_t excl_blocks;
	uint64_t snap_blocks;
	uint8_t reserved[224];
};
_Static_assert(sizeof(struct h2_volrec) == H2_VOLREC_SIZE, "volrec is 256");

/*
 * The fixed part of a volume header: 512 bytes.  The selector bits for
 * fm_pages freemap pages follow it (bit p set: page p lives in slot 1).
 * crc is CRC32C over the first hdr_len bytes with the crc field zeroed.
 */
struct h2_volhdr {
	uint64_t magic;
	uint32_t version;
	uint32_t hdr_len;	/* bytes covered by crc, multiple of 4 KiB */
	uint64_t tid;		/* flush number that wrote this header */
	uint64_t dev_size;	/* bytes, as formatted */
	uint32_t block_size;	/* H2_BLOCK_SIZE */
	uint32_t copy_index;	/* which of the copies this is */
	uint64_t fm_base;	/* byte offset of the freemap zone */
	uint32_t fm_pages;	/* freemap pages */
	uint32_t crc;
	uint64_t total_blocks;	/* blocks on the device */
	uint64_t used_blocks;	/* allocated blocks, reserved zones included */
	uint64_t next_vol_id;
	uint64_t format_time_ns;
	uint8_t uuid[16];
	uint64_t flush_count;	/* lifetime flushes (statistics) */
	uint64_t bytes_written; /* lifetime device bytes written */
	struct h2_blockref dir_root;
	uint8_t reserved[512 - 184];
};
_Static_assert(sizeof(struct h2_volhdr) == H2_HDR_FIXED, "header fixed part");

/* A freemap page: 64-byte header + bitmap (bit set = block allocated). */
struct h2_fmpage_hdr {
	uint64_t magic;
	uint64_t tid;	  /* flush that wrote this copy */
	uint32_t page;	  /* page index */
	uint32_t used;	  /* bits set */
	uint64_t check;	  /* XXH3-64 of the page with this field zeroed */
	uint8_t reserved[32];
};
_Static_assert(sizeof(struct h2_fmpage_hdr) == H2_FM_HDR, "fm page header");

/* Byte offset of header copy i. */
static inline uint64_t h2_hdr_offset(unsigned i)
{
	return (uint64_t)i * H2_HDR_STRIDE;
}

/* Number of header copies that fit on a device of dev_size bytes. */
static inline unsigned h2_hdr_copies(uint64_t dev_size)
{
	unsigned n = 0;

	while (n < H2_HDR_COPIES && h2_hdr_offset(n) + H2_HDR_REGION <= dev_size)
		n++;
	return n;
}

/* Bytes of a header as written: fixed part plus selector bits, 4K-rounded. */
static inline uint32_t h2_hdr_len(uint32_t fm_pages)
{
	uint32_t len = H2_HDR_FIXED + (fm_pages + 7) / 8;

	return (len + H2_BLOCK_SIZE - 1) & ~(H2_BLOCK_SIZE - 1);
}

/* Device offset of slot s of freemap page p. */
static inline uint64_t h2_fm_slot_offset(uint64_t fm_base, uint32_t p,
					 unsigned s)
{
	return fm_base + ((uint64_t)p * 2 + s) * H2_BLOCK_SIZE;
}

#endif /* H2_FORMAT_H */
