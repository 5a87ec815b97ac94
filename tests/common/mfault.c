/*
 * mfault.c - allocation failure injection (see mfault.h).
 *
 * The wrappers are on every allocation path of the test binary, so they
 * must be cheap when disarmed (one relaxed load) and must not allocate
 * themselves.
 */
#include "mfault.h"

#include <errno.h>
#include <execinfo.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);

void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);

static bool mf_armed;		/* __atomic */
static uint64_t mf_count;	/* __atomic: allocations since mf_arm */
static uint64_t mf_nfailed;	/* __atomic */
static uint64_t mf_first, mf_span; /* set while disarmed */
static bool mf_trace;
static _Thread_local bool mf_exempt_thread;

/* Whether this allocation fails (and count it). */
static bool mf_fail(void)
{
	uint64_t n;

	if (!__atomic_load_n(&mf_armed, __ATOMIC_ACQUIRE) || mf_exempt_thread)
		return false;
	n = __atomic_add_fetch(&mf_count, 1, __ATOMIC_SEQ_CST);
	if (!mf_first || n < mf_first || n - mf_first >= mf_span)
		return false;
	__atomic_add_fetch(&mf_nfailed, 1, __ATOMIC_SEQ_CST);
	if (mf_trace) {
		void *bt[32];
		int k = backtrace(bt, 32);
		char line[64];
		int len = snprintf(line, sizeof(line),
				   "mfault: allocation %llu fails:\n",
				   (unsigned long long)n);

		if (write(2, line, (size_t)len) < 0)
			return true;
		backtrace_symbols_fd(bt, k, 2);
	}
	errno = ENOMEM;
	return true;
}

void *__wrap_malloc(size_t n)
{
	return mf_fail() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
	return mf_fail() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n)
{
	return mf_fail() ? NULL : __real_realloc(p, n);
}

char *__wrap_strdup(const char *s)
{
	return mf_fail() ? NULL : __real_strdup(s);
}

char *__wrap_strndup(const char *s, size_t n)
{
	return mf_fail() ? NULL : __real_strndup(s, n);
}

void mf_init(void)
{
	void *bt[1];

	mf_trace = getenv("MF_TRACE") && *getenv("MF_TRACE") == '1';
	/* The first backtrace() loads libgcc, which allocates: not while
	 * an allocation is failing. */
	backtrace(bt, 1);
}

void mf_arm(uint64_t nth, uint64_t span)
{
	__atomic_store_n(&mf_armed, false, __ATOMIC_SEQ_CST);
	mf_first = nth;
	mf_span = span ? span : 1;
	__atomic_store_n(&mf_count, 0, __ATOMIC_SEQ_CST);
	__atomic_store_n(&mf_nfailed, 0, __ATOMIC_SEQ_CST);
	__atomic_store_n(&mf_armed, true, __ATOMIC_SEQ_CST);
}

void mf_disarm(void)
{
	__atomic_store_n(&mf_armed, false, __ATOMIC_SEQ_CST);
}

uint64_t mf_seen(void)
{
	return __atomic_load_n(&mf_count, __ATOMIC_SEQ_CST);
}

uint64_t mf_failed(void)
{
	return __atomic_load_n(&mf_nfailed, __ATOMIC_SEQ_CST);
}

void mf_exempt(bool on)
{
	mf_exempt_thread = on;
}
