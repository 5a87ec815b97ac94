/* Shared helpers for engine tests: stores on in-memory fault devices. */
#ifndef H2_TEST_HELPERS_H
#define H2_TEST_HELPERS_H

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dev.h"
#include "h2core.h"

#define MiB (1ull << 20)

/* A formatted fault device of size bytes. */
static inline struct h2_fdev *t_fdev(uint64_t size)
{
	struct h2_fdev *fd;

	cr_assert_eq(h2_fdev_create(size, &fd), 0);
	cr_assert_eq(h2_store_format(h2_fdev_dev(fd), NULL), 0, "%s",
		     h2_core_errmsg());
	return fd;
}

/*
 * Open a store on fd.  The store gets its own device object that shares
 * fd's contents: a fault device's h2_dev is owned by the fdev, and
 * closing the store only marks it closed.
 */
static inline struct h2_store *t_open(struct h2_fdev *fd, bool flusher)
{
	struct h2_store_opts o = {.no_flusher = !flusher};
	struct h2_store *st;
	int r = h2_store_open(h2_fdev_dev(fd), &o, &st);

	cr_assert_eq(r, 0, "open: %d %s", r, h2_core_errmsg());
	return st;
}

static inline struct h2_store *t_open_opts(struct h2_fdev *fd,
					   const struct h2_store_opts *o)
{
	struct h2_store *st;
	int r = h2_store_open(h2_fdev_dev(fd), o, &st);

	cr_assert_eq(r, 0, "open: %d %s", r, h2_core_errmsg());
	return st;
}

/* Deterministic pattern: byte i of stream seed. */
static inline void t_fill(void *buf, size_t len, uint64_t seed, uint64_t pos)
{
	uint8_t *p = buf;

	for (size_t i = 0; i < len; i++) {
		uint64_t x = (pos + i) * 0x9E3779B97F4A7C15ull ^ seed;

		x ^= x >> 29;
		p[i] = (uint8_t)(x * 0xBF58476D1CE4E5B9ull >> 56);
	}
}

/* xorshift64* */
static inline uint64_t t_rand(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

/* h2_check must find nothing at all; else list the problems and fail. */
static inline void t_check_clean(struct h2_fdev *fd, const char *when)
{
	struct h2_check_report *rep;

	cr_assert_eq(h2_check(h2_fdev_dev(fd), &rep), 0);
	if (rep->status != H2_CHECK_CLEAN)
		for (size_t i = 0; i < rep->nproblems; i++)
			fprintf(stderr, "%s: %s: %s\n", when,
				rep->problems[i].where, rep->problems[i].what);
	cr_assert_eq(rep->status, H2_CHECK_CLEAN,
		     "%s: check found %zu problems", when, rep->nproblems);
	h2_check_report_free(rep);
}

/*
 * A crash in the middle of a header write leaves that copy torn: it is
 * the copy after the newest valid one, the next flush rewrites it, and
 * the checker rightly reports it.  Anything else is a failure.
 */
static inline bool t_torn_next_header_only(const struct h2_check_report *rep)
{
	char want[32];

	snprintf(want, sizeof(want), "header copy %u ",
		 (unsigned)((rep->tid + 1) % rep->header_copies));
	for (size_t i = 0; i < rep->nproblems; i++)
		if (strncmp(rep->problems[i].where, want, strlen(want)) != 0)
			return false;
	return rep->nproblems > 0 && rep->leaked_blocks == 0 &&
	       rep->free_referenced == 0;
}

#endif
