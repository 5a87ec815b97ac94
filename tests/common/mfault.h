/*
 * mfault.h - allocation failure injection for tests.
 *
 * Counts the allocations made by h2's own code and by the libraries it
 * allocates through, and fails chosen ones, as running out of memory
 * would.  A test links it with h2_mfault() (tests/CMakeLists.txt).  What
 * is counted:
 *
 *   - h2's code (core/, proto/, server/): malloc, calloc, realloc,
 *     strdup and strndup, through the linker's --wrap (the test links
 *     with -Wl,--wrap=malloc,... so every call from an object linked into
 *     it goes to __wrap_malloc here, which calls __real_malloc: the C
 *     library's, or AddressSanitizer's in a sanitizer build; the test's
 *     own code is counted too, unless its thread is exempt);
 *   - libevent, which allocates through server/evglue.c's hooks
 *     (event_set_mem_functions), and those call malloc;
 *   - protobuf-c's unpacking of frame headers, which proto/frame.c does
 *     with its own allocator over malloc;
 *   - OpenSSL, if the test installs hooks over malloc
 *     (CRYPTO_set_mem_functions: tests/server/test_memfault.c does).
 *
 * Not counted: allocations inside the C library (qsort, stdio).
 *
 * Allocations are numbered from 1 from the moment mf_arm() is called, on
 * every thread (the loop, the workers, the flusher) except those marked
 * exempt (the test's own client code, which shares the loop's thread).
 * Thread-safe.
 */
#ifndef H2_TEST_MFAULT_H
#define H2_TEST_MFAULT_H

#include <stdbool.h>
#include <stdint.h>

/* Read MF_TRACE (below); call first. */
void mf_init(void);

/*
 * Start counting from zero; allocations nth .. nth + span - 1 fail
 * (nth 0: none does, the run only counts).
 */
void mf_arm(uint64_t nth, uint64_t span);

/* Stop counting and failing. */
void mf_disarm(void);

/* Allocations counted since mf_arm, and how many of them failed. */
uint64_t mf_seen(void);
uint64_t mf_failed(void);

/* This thread's allocations are not counted (true) or are (false). */
void mf_exempt(bool on);

/*
 * With MF_TRACE=1 in the environment, every failed allocation prints a
 * backtrace to stderr (to find where a failure led).
 */

#endif
