/*
 * check.h - offline consistency check of an h2 store (h2d check).
 *
 * Reads the device only (never writes).  Verifies every header copy, the
 * directory, every reachable block's check code, the tree invariants
 * (types, levels, keys ordered and inside the parent's range), and the
 * freemap against the blocks the trees reference: no block both free and
 * referenced, no block referenced twice, no allocated block that nothing
 * references (a leak), reserved zones allocated, per-volume used counts.
 */
#ifndef H2_CHECK_H
#define H2_CHECK_H

#include <stddef.h>
#include <stdint.h>

#include "dev.h"

enum h2_check_status {
	H2_CHECK_CLEAN = 0,	 /* consistent */
	H2_CHECK_PROBLEMS = 1,	 /* opened, but problems found */
	H2_CHECK_UNOPENABLE = 2, /* no valid header, or directory unreadable */
};

struct h2_check_problem {
	char where[160]; /* "header copy 2 (offset 33554432)", "volume vm1 block
			    at device offset 123 (key 7, level 1)", ... */
	char what[256];	 /* "CRC mismatch", "checksum mismatch", ... */
};

struct h2_check_report {
	enum h2_check_status status;
	unsigned header_copies;	 /* copies that fit on the device */
	unsigned headers_valid;
	uint64_t tid;		 /* of the header used */
	uint64_t volumes;
	uint64_t blocks_total;	 /* device blocks */
	uint64_t blocks_used;	 /* set in the freemap (reserved included) */
	uint64_t blocks_reserved;
	uint64_t blocks_referenced; /* by trees and the directory */
	uint64_t blocks_verified;   /* read and checksum-verified */
	uint64_t leaked_blocks;	    /* allocated, unreferenced */
	uint64_t free_referenced;   /* referenced but free in the freemap */
	size_t nproblems;
	struct h2_check_problem *problems;
};

/*
 * Check the store on dev (borrowed, read only).  Returns 0 and a report
 * (whose status says what was found; caller frees it with
 * h2_check_report_free), or -ENOMEM.
 */
int h2_check(struct h2_dev *dev, struct h2_check_report **out);
void h2_check_report_free(struct h2_check_report *rep);

#endif /* H2_CHECK_H */
